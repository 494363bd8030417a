"""The store contract, run against both backends (SQLite and a real etcd).

- revisions: a global revision; create/mod revision and version per key;
- reads: get, range by prefix in key order, now or at an earlier revision;
- writes: put, delete (a delete of nothing moves no revision);
- transactions: compares on mod_revision (0 = absent), success/failure
  branches, every write at one revision, all-or-nothing, etcd's limits;
- watch: history from a revision, live events, prefix filtering, DELETE
  events with the previous value, start at "now", compaction;
- leases: grant/refresh/revoke, keys vanish with their lease (with DELETE
  events), expiry after the TTL;
- random histories: after a seeded random run of puts, deletes and
  transactions, range equals a plain-dict model, and replaying the watch
  from the first revision rebuilds the same state.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from gitkube.errors import (
    Compacted,
    FutureRevision,
    NotFound,
    StoreError,
    StoreUnavailable,
    TxnTooLarge,
)
from gitkube.store.base import Compare, Delete, Get, KeyValue, Op, Put, Store

from .conftest import eventually, take, watching

# ---------------------------------------------------------------- keys and revisions


async def test_put_moves_the_revision_and_sets_key_revisions(store: Store) -> None:
    start = await store.revision()
    first = await store.put("/k/a", b"1")
    assert first == start + 1 == await store.revision()
    kv = await store.get("/k/a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"1", first, first, 1)

    second = await store.put("/k/a", b"2")
    assert second == first + 1
    kv = await store.get("/k/a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision, kv.version) == (b"2", first, second, 2)


async def test_get_of_a_missing_key_is_none(store: Store) -> None:
    assert await store.get("/k/missing") is None


async def test_values_are_bytes_kept_exactly(store: Store) -> None:
    value = bytes(range(256)) * 4
    await store.put("/k/bin", value)
    kv = await store.get("/k/bin")
    assert kv is not None and kv.value == value


async def test_delete_reports_whether_the_key_existed(store: Store) -> None:
    await store.put("/k/a", b"1")
    before = await store.revision()
    assert await store.delete("/k/a") is True
    assert await store.revision() == before + 1
    assert await store.get("/k/a") is None
    assert await store.delete("/k/a") is False
    assert await store.revision() == before + 1, "deleting nothing must not move the revision"


async def test_a_key_created_again_starts_a_new_life(store: Store) -> None:
    await store.put("/k/a", b"1")
    await store.put("/k/a", b"2")
    await store.delete("/k/a")
    again = await store.put("/k/a", b"3")
    kv = await store.get("/k/a")
    assert kv is not None
    assert (kv.create_revision, kv.version) == (again, 1)


# ---------------------------------------------------------------- range


async def test_range_returns_the_prefix_in_key_order_at_a_revision(store: Store) -> None:
    for key in ["/r/b", "/r/a/x", "/r/a", "/rx", "/r", "/r/c", "/q/a"]:
        await store.put(key, key.encode())
    kvs, revision = await store.range("/r/")
    assert [kv.key for kv in kvs] == ["/r/a", "/r/a/x", "/r/b", "/r/c"]
    assert [kv.value for kv in kvs] == [b"/r/a", b"/r/a/x", b"/r/b", b"/r/c"]
    assert revision == await store.revision()


async def test_range_orders_keys_bytewise(store: Store) -> None:
    keys = ["/u/Z", "/u/a", "/u/é", "/u/z", "/u/~", "/u/0"]
    for key in keys:
        await store.put(key, b"")
    kvs, _ = await store.range("/u/")
    assert [kv.key for kv in kvs] == sorted(keys, key=str.encode)


async def test_range_of_an_empty_prefix_is_everything(store: Store) -> None:
    await store.put("/a", b"")
    await store.put("/b/c", b"")
    kvs, _ = await store.range("")
    assert [kv.key for kv in kvs] == ["/a", "/b/c"]


async def test_range_of_nothing_is_empty(store: Store) -> None:
    kvs, revision = await store.range("/nothing/")
    assert kvs == [] and revision == await store.revision()


async def test_range_at_a_revision_reads_the_keys_as_they_were(store: Store) -> None:
    """What a paged list reads: every page at the first page's revision."""
    await store.put("/p/a", b"a1")
    await store.put("/p/b", b"b1")
    await store.put("/p/gone", b"g1")
    await store.put("/p/again", b"x1")
    then = await store.put("/q/other", b"")
    before, _ = await store.range("/p/")
    await store.put("/p/a", b"a2")  # changed
    await store.delete("/p/gone")  # deleted
    await store.put("/p/new", b"n1")  # created
    await store.delete("/p/again")
    await store.put("/p/again", b"x2")  # deleted and created again
    kvs, revision = await store.range("/p/", revision=then)
    assert revision == then
    assert kvs == before  # values, create and mod revisions, versions
    kvs, _ = await store.range("/p/b", revision=then)
    assert [kv.key for kv in kvs] == ["/p/b"]


async def test_range_before_compaction_or_in_the_future_is_refused(store: Store) -> None:
    first = await store.put("/p/a", b"1")
    second = await store.put("/p/a", b"2")
    await store.compact(second)
    with pytest.raises(Compacted):
        await store.range("/p/", revision=first)
    kvs, _ = await store.range("/p/", revision=second)
    assert [kv.value for kv in kvs] == [b"2"]
    with pytest.raises(FutureRevision):
        await store.range("/p/", revision=second + 100)


# ---------------------------------------------------------------- transactions


async def test_txn_success_writes_everything_at_one_revision(store: Store) -> None:
    rev = await store.put("/t/a", b"1")
    result = await store.txn(
        [Compare("/t/a", rev), Compare("/t/new", 0)],
        [Put("/t/a", b"2"), Put("/t/new", b"n"), Get("/t/a")],
        [Put("/t/failed", b"x")],
    )
    assert result.succeeded and result.revision == rev + 1
    a, new = await store.get("/t/a"), await store.get("/t/new")
    assert a is not None and new is not None
    assert a.mod_revision == new.mod_revision == result.revision
    assert await store.get("/t/failed") is None
    # a Get in the transaction sees the writes before it
    assert [kv.value if kv else None for kv in result.gets] == [b"2"]


async def test_txn_failure_runs_the_failure_branch(store: Store) -> None:
    rev = await store.put("/t/a", b"1")
    await store.put("/t/a", b"2")
    result = await store.txn([Compare("/t/a", rev)], [Put("/t/a", b"mine")], [Get("/t/a")])
    assert not result.succeeded
    assert result.revision == rev + 1, "a read-only branch must not move the revision"
    assert len(result.gets) == 1 and result.gets[0] is not None
    assert result.gets[0].value == b"2"
    kv = await store.get("/t/a")
    assert kv is not None and kv.value == b"2"


async def test_compare_on_zero_means_absent(store: Store) -> None:
    first = await store.txn([Compare("/t/once", 0)], [Put("/t/once", b"1")])
    second = await store.txn([Compare("/t/once", 0)], [Put("/t/once", b"2")])
    assert first.succeeded and not second.succeeded
    kv = await store.get("/t/once")
    assert kv is not None and kv.value == b"1"


async def test_get_of_a_missing_key_in_a_txn_is_none(store: Store) -> None:
    result = await store.txn([], [Get("/t/none")])
    assert result.succeeded and result.gets == [None]


async def test_txn_deletes_a_prefix_at_one_revision(store: Store) -> None:
    for key in ["/t/p/1", "/t/p/2", "/t/q"]:
        await store.put(key, b"")
    before = await store.revision()
    result = await store.txn([], [Delete("/t/p/", prefix=True)])
    assert result.revision == before + 1
    kvs, _ = await store.range("/t/")
    assert [kv.key for kv in kvs] == ["/t/q"]


async def test_txn_is_all_or_nothing(store: Store) -> None:
    before = await store.revision()
    with pytest.raises(NotFound):
        # the second put names a lease that does not exist: nothing may be applied
        await store.txn([], [Put("/t/x", b"1"), Put("/t/y", b"2", lease=987654321)])
    assert await store.get("/t/x") is None
    assert await store.revision() == before


async def test_txn_over_the_operation_limit_is_refused_not_split(store: Store) -> None:
    ops = [Put(f"/t/many/{i}", b"") for i in range(129)]
    with pytest.raises(TxnTooLarge, match="at most 128"):
        await store.txn([], ops)
    assert (await store.range("/t/many/"))[0] == []
    result = await store.txn([], ops[:128])
    assert result.succeeded
    assert len((await store.range("/t/many/"))[0]) == 128


async def test_txn_may_not_put_one_key_twice(store: Store) -> None:
    with pytest.raises(StoreError, match="twice"):
        await store.txn([], [Put("/t/d", b"1"), Put("/t/d", b"2")])


async def test_concurrent_writes_get_one_revision_each_and_fail_alone(store: Store) -> None:
    before = await store.revision()
    writes = [store.put(f"/t/c/{i}", b"v") for i in range(40)]
    writes.insert(20, store.put("/t/c/bad", b"", lease=55555))
    results = await asyncio.gather(*writes, return_exceptions=True)
    failed = results.pop(20)
    assert isinstance(failed, NotFound)
    assert sorted(results) == list(range(before + 1, before + 41))  # type: ignore[type-var]
    kvs, _ = await store.range("/t/c/")
    assert len(kvs) == 40 and await store.get("/t/c/bad") is None


async def test_empty_txn_moves_no_revision(store: Store) -> None:
    before = await store.revision()
    result = await store.txn([], [])
    assert result.succeeded and result.revision == before


# ---------------------------------------------------------------- watch


async def test_watch_replays_history_from_a_revision_in_order(store: Store) -> None:
    first = await store.put("/w/a", b"1")
    await store.put("/other", b"x")
    await store.put("/w/a", b"2")
    await store.txn([], [Put("/w/b", b"3"), Put("/w/c", b"4")])
    await store.delete("/w/a")
    async with watching(store, "/w/", start_revision=first) as events:
        got = await take(events, 5)
    assert [(e.type, e.kv.key, e.kv.value) for e in got] == [
        ("PUT", "/w/a", b"1"),
        ("PUT", "/w/a", b"2"),
        ("PUT", "/w/b", b"3"),
        ("PUT", "/w/c", b"4"),
        ("DELETE", "/w/a", b""),
    ]
    revisions = [e.revision for e in got]
    assert revisions == sorted(revisions) and revisions[2] == revisions[3]
    assert got[1].kv.version == 2 and got[1].kv.create_revision == first
    deleted = got[4]
    assert deleted.prev_kv is not None and deleted.prev_kv.value == b"2"


async def test_watch_from_a_later_revision_skips_earlier_events(store: Store) -> None:
    await store.put("/w/a", b"1")
    second = await store.put("/w/a", b"2")
    async with watching(store, "/w/", start_revision=second) as events:
        got = await take(events, 1)
        assert got[0].kv.value == b"2"
        await store.put("/w/a", b"3")
        assert (await take(events, 1))[0].kv.value == b"3"


async def test_watch_sees_live_writes_promptly(store: Store) -> None:
    start = await store.revision() + 1
    async with watching(store, "/w/", start_revision=start) as events:
        waiter = asyncio.ensure_future(take(events, 3, timeout=3))
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        began = loop.time()
        await store.put("/w/1", b"a")
        await store.put("/elsewhere", b"")
        await store.put("/w/2", b"b")
        await store.delete("/w/1")
        got = await waiter
        assert loop.time() - began < 1.0
    assert [(e.type, e.kv.key) for e in got] == [
        ("PUT", "/w/1"),
        ("PUT", "/w/2"),
        ("DELETE", "/w/1"),
    ]


async def test_watch_from_zero_starts_now(store: Store) -> None:
    await store.put("/w/old", b"")
    async with watching(store, "/w/", start_revision=0) as events:
        waiter = asyncio.ensure_future(take(events, 1))
        await asyncio.sleep(0.2)
        await store.put("/w/new", b"")
        got = await waiter
    assert got[0].kv.key == "/w/new"


async def test_two_watches_get_the_same_events(store: Store) -> None:
    start = await store.revision() + 1
    async with (
        watching(store, "/w/", start_revision=start) as one,
        watching(store, "/w/a", start_revision=start) as two,
    ):
        await store.put("/w/a", b"1")
        await store.put("/w/b", b"2")
        await store.put("/w/a", b"3")
        assert [e.kv.value for e in await take(one, 3)] == [b"1", b"2", b"3"]
        assert [e.kv.value for e in await take(two, 2)] == [b"1", b"3"]


async def test_watch_from_a_compacted_revision_raises_compacted(store: Store) -> None:
    first = await store.put("/w/a", b"1")
    await store.put("/w/a", b"2")
    third = await store.put("/w/a", b"3")
    await store.compact(third)
    with pytest.raises(Compacted) as caught:
        async with watching(store, "/w/", start_revision=first) as events:
            await take(events, 1)
    assert caught.value.compact_revision == third
    async with watching(store, "/w/", start_revision=third) as events:
        assert (await take(events, 1))[0].kv.value == b"3"


async def test_compact_again_is_harmless_and_the_future_is_refused(store: Store) -> None:
    rev = await store.put("/c/a", b"")
    await store.compact(rev)
    await store.compact(rev)
    await store.compact(rev - 1)
    with pytest.raises(StoreError):
        await store.compact(rev + 100)


async def test_compaction_keeps_current_values(store: Store) -> None:
    await store.put("/c/a", b"1")
    rev = await store.put("/c/b", b"2")
    await store.compact(rev)
    kvs, _ = await store.range("/c/")
    assert [(kv.key, kv.value) for kv in kvs] == [("/c/a", b"1"), ("/c/b", b"2")]


# ---------------------------------------------------------------- leases


async def test_keys_vanish_with_a_revoked_lease(store: Store) -> None:
    lease = await store.grant_lease(30)
    start = await store.put("/l/a", b"1", lease=lease)
    await store.txn([], [Put("/l/b", b"2", lease=lease)])
    await store.put("/l/keep", b"3")
    kv = await store.get("/l/a")
    assert kv is not None and kv.lease == lease
    assert await store.refresh_lease(lease) >= 29

    await store.revoke_lease(lease)
    kvs, _ = await store.range("/l/")
    assert [kv.key for kv in kvs] == ["/l/keep"]
    async with watching(store, "/l/", start_revision=start) as events:
        got = await take(events, 5)
    deletes = [e for e in got if e.type == "DELETE"]
    assert sorted(e.kv.key for e in deletes) == ["/l/a", "/l/b"]
    assert deletes[0].revision == deletes[1].revision
    with pytest.raises(NotFound):
        await store.refresh_lease(lease)
    await store.revoke_lease(lease)  # revoking again does nothing


async def test_put_with_an_unknown_lease_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.put("/l/a", b"", lease=123456789)
    with pytest.raises(NotFound):
        await store.refresh_lease(123456789)


async def test_a_lapsed_lease_deletes_its_keys(store: Store) -> None:
    lease = await store.grant_lease(1)
    start = await store.put("/l/hb", b"alive", lease=lease)
    async with watching(store, "/l/", start_revision=start) as events:
        got = await take(events, 2, timeout=6)
    assert [e.type for e in got] == ["PUT", "DELETE"]
    assert await store.get("/l/hb") is None
    with pytest.raises(NotFound):
        await store.refresh_lease(lease)


async def test_refreshing_keeps_a_lease_alive(store: Store) -> None:
    lease = await store.grant_lease(1)
    await store.put("/l/hb", b"alive", lease=lease)
    for _ in range(4):  # 1.6 s in all, longer than the TTL
        await asyncio.sleep(0.4)
        await store.refresh_lease(lease)
    assert await store.get("/l/hb") is not None
    await eventually(lambda: _absent(store, "/l/hb"), timeout=6)


async def _absent(store: Store, key: str) -> bool:
    return await store.get(key) is None


# ---------------------------------------------------------------- random histories


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_random_history_matches_a_model_and_its_watch_replay(
    store: Store, seed: int
) -> None:
    rng = random.Random(seed)
    keys = [f"/m/{a}/{b}" for a in "xyz" for b in range(4)]
    model: dict[str, tuple[bytes, int]] = {}  # key -> (value, mod_revision)
    start = await store.revision() + 1
    # what a range read after each step, by the revision it read at
    seen: dict[int, list[KeyValue]] = {}
    for step in range(60):
        choice = rng.random()
        value = f"{seed}-{step}".encode()
        if choice < 0.4:
            key = rng.choice(keys)
            model[key] = (value, await store.put(key, value))
        elif choice < 0.55:
            key = rng.choice(keys)
            existed = await store.delete(key)
            assert existed == (model.pop(key, None) is not None)
        else:
            # a guarded multi-key transaction; its compares hold or not per the model
            chosen = rng.sample(keys, 3)
            compares = [
                Compare(k, model[k][1] if k in model and rng.random() < 0.8 else 0) for k in chosen
            ]
            ops: list[Op] = [Put(chosen[0], value), Put(chosen[1], value + b"!")]
            if rng.random() < 0.3:
                # a prefix delete may not cover a key the same transaction puts
                doomed = "/m/" + chosen[2].split("/")[2] + "/"
                ops = [op for op in ops if not op.key.startswith(doomed)]
                ops.append(Delete(doomed, prefix=True))
            expected = all(
                (model[c.key][1] if c.key in model else 0) == c.mod_revision for c in compares
            )
            result = await store.txn(compares, ops)
            assert result.succeeded == expected
            if expected:
                for op in ops:
                    if isinstance(op, Put):
                        model[op.key] = (op.value, result.revision)
                    elif isinstance(op, Delete):
                        for k in [k for k in model if k.startswith(op.key)]:
                            del model[k]
        kvs, at = await store.range("/m/")
        seen[at] = kvs

    kvs, _ = await store.range("/m/")
    assert {kv.key: (kv.value, kv.mod_revision) for kv in kvs} == model
    # and a read at any of those revisions reads what was there then
    for at, then in seen.items():
        assert await store.range("/m/", revision=at) == (then, at)

    await store.put("/m/~end", b"")
    replayed: dict[str, tuple[bytes, int]] = {}
    async with asyncio.timeout(10), watching(store, "/m/", start_revision=start) as events:
        async for event in events:
            if event.kv.key == "/m/~end":
                break
            if event.type == "PUT":
                replayed[event.kv.key] = (event.kv.value, event.kv.mod_revision)
            else:
                replayed.pop(event.kv.key, None)
    assert replayed == model


# ---------------------------------------------------------------- closing


async def test_a_closed_store_is_unavailable(store: Store) -> None:
    await store.close()
    with pytest.raises(StoreUnavailable):
        await store.get("/k")
