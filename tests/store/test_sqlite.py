"""What only the embedded SQLite store has to show.

- a watch wakes at once for a write of its own process (no polling);
- several processes share one file: a watch sees writes of another process,
  another process reads what this one wrote;
- two stores on one file (as two processes would be) see each other's
  writes, leases and lease expiry;
- history is bounded: auto-compaction keeps the last ``history`` revisions,
  and a watch left behind gets Compacted;
- a read at a revision whose replaced value was compacted away says so;
- a watch that reads a long backlog gets all of it, in order;
- the file survives a reopen with its revision, keys and leases.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gitkube.errors import Compacted
from gitkube.store.base import Put
from gitkube.store.factory import open_store
from gitkube.store.sqlite import SQLiteStore

from .conftest import eventually, take, watching

ROOT = Path(__file__).resolve().parents[2]


def run_python(code: str) -> str:
    """Run ``code`` in a fresh interpreter (another process on the same file)."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


async def run_python_async(code: str) -> str:
    return await asyncio.to_thread(run_python, code)


# ---------------------------------------------------------------- processes


async def test_a_watch_wakes_at_once_for_its_own_process(tmp_path: Path) -> None:
    # polling so slow that only the in-process notification can deliver in time
    store = await SQLiteStore.open(tmp_path / "state.db", poll_interval=30)
    try:
        start = await store.revision() + 1
        async with watching(store, "/n/", start_revision=start) as events:
            waiter = asyncio.ensure_future(take(events, 2, timeout=1))
            await asyncio.sleep(0.05)
            await store.put("/n/a", b"")
            await store.txn([], [Put("/n/b", b"")])
            assert [e.kv.key for e in await waiter] == ["/n/a", "/n/b"]
    finally:
        await store.close()


async def test_a_watch_sees_writes_of_another_process(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SQLiteStore.open(path)
    try:
        start = await store.revision() + 1
        async with watching(store, "/p/", start_revision=start) as events:
            writer = run_python_async(
                f"""
                import asyncio
                from gitkube.store.factory import open_store
                from gitkube.store.base import Put

                async def main():
                    store = await open_store("sqlite://{path}")
                    await store.put("/p/a", b"from-child")
                    await store.txn([], [Put("/p/b", b"1"), Put("/p/c", b"2")])
                    await store.delete("/p/a")
                    await store.close()

                asyncio.run(main())
                """
            )
            got, _ = await asyncio.gather(take(events, 4, timeout=20), writer)
        assert [(e.type, e.kv.key) for e in got] == [
            ("PUT", "/p/a"),
            ("PUT", "/p/b"),
            ("PUT", "/p/c"),
            ("DELETE", "/p/a"),
        ]
        assert got[0].kv.value == b"from-child"
        assert got[1].revision == got[2].revision
    finally:
        await store.close()


async def test_another_process_reads_and_writes_while_this_one_holds_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    store = await SQLiteStore.open(path)
    try:
        revision = await store.put("/p/mine", b"hello")
        out = await run_python_async(
            f"""
            import asyncio
            from gitkube.store.factory import open_store

            async def main():
                store = await open_store("sqlite://{path}")
                kv = await store.get("/p/mine")
                print(kv.value.decode(), kv.mod_revision, await store.revision())
                await store.put("/p/theirs", b"x")
                await store.close()

            asyncio.run(main())
            """
        )
        assert out.split() == ["hello", str(revision), str(revision)]
        theirs = await store.get("/p/theirs")
        assert theirs is not None and theirs.mod_revision == revision + 1
        assert await store.put("/p/next", b"") == revision + 2
    finally:
        await store.close()


async def test_two_stores_on_one_file_share_leases(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    one = await SQLiteStore.open(path)
    two = await SQLiteStore.open(path)
    try:
        lease = await one.grant_lease(1)
        start = await one.put("/hb/node-1", b"", lease=lease)
        assert await two.refresh_lease(lease) == 1
        # the store that granted the lease goes away: the other one expires it
        await one.close()
        async with watching(two, "/hb/", start_revision=start) as events:
            got = await take(events, 2, timeout=5)
        assert [e.type for e in got] == ["PUT", "DELETE"]
        assert await two.get("/hb/node-1") is None
    finally:
        await one.close()
        await two.close()


# ---------------------------------------------------------------- history


async def test_auto_compaction_bounds_the_history(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "state.db", history=20, poll_interval=0.01)
    try:
        first = await store.put("/h/k", b"0")
        for i in range(1, 60):
            await store.put("/h/k", str(i).encode())

        async def compacted() -> bool:
            events = store.watch("/h/", start_revision=first)
            try:
                await take(events, 1, timeout=1)
            except Compacted:
                return True
            finally:
                await events.aclose()  # type: ignore[attr-defined]
            return False

        await eventually(compacted, timeout=5)
        current = await store.revision()
        # the last ``history`` revisions are still there for a watch
        async with watching(store, "/h/", start_revision=current - 19) as events:
            got = await take(events, 20)
        assert [e.kv.value for e in got] == [str(i).encode() for i in range(40, 60)]
    finally:
        await store.close()


async def test_a_read_at_a_revision_needs_the_value_it_replaced(tmp_path: Path) -> None:
    """The log keeps no value from before the compaction: a key written before
    it and replaced after the revision read at cannot be read there (etcd
    keeps it), so the read says Compacted, and a paged list starts again."""
    store = await SQLiteStore.open(tmp_path / "state.db")
    try:
        await store.put("/h/old", b"1")
        at = await store.put("/h/other", b"2")
        await store.compact(at)
        assert (await store.range("/h/", revision=at))[0] == (await store.range("/h/"))[0]
        await store.put("/h/other", b"3")  # its last put before is kept: at == compaction
        assert [kv.value for kv in (await store.range("/h/", revision=at))[0]] == [b"1", b"2"]
        await store.put("/h/old", b"4")  # its last put before is compacted away
        with pytest.raises(Compacted):
            await store.range("/h/", revision=at)
    finally:
        await store.close()


async def test_a_watch_reads_a_long_backlog_in_order(tmp_path: Path) -> None:
    store = await SQLiteStore.open(tmp_path / "state.db")
    try:
        start = await store.revision() + 1
        for batch in range(25):
            await store.txn(
                [],
                [Put(f"/b/{batch:03}/{i:03}", b"v") for i in range(100)],
            )
        async with watching(store, "/b/", start_revision=start) as events:
            got = await take(events, 2500, timeout=20)
        assert [e.kv.key for e in got] == [
            f"/b/{b:03}/{i:03}" for b in range(25) for i in range(100)
        ]
    finally:
        await store.close()


async def test_the_file_survives_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await SQLiteStore.open(path)
    lease = await store.grant_lease(60)
    await store.put("/s/a", b"1", lease=lease)
    revision = await store.put("/s/b", b"2")
    await store.close()

    store = await SQLiteStore.open(path)
    try:
        assert await store.revision() == revision
        kvs, _ = await store.range("/s/")
        assert [(kv.key, kv.value) for kv in kvs] == [("/s/a", b"1"), ("/s/b", b"2")]
        assert await store.refresh_lease(lease) == 60
        assert await store.grant_lease(5) != lease
    finally:
        await store.close()


@pytest.mark.parametrize("history", [0, -1])
def test_history_must_be_positive(tmp_path: Path, history: int) -> None:
    with pytest.raises(ValueError, match="history"):
        SQLiteStore(tmp_path / "state.db", history=history)


async def test_first_opens_of_a_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    """The CLI and `gitkube run` may open a new state file at the same moment:
    switching it to WAL must wait, not fail with "database is locked"."""
    for i in range(10):
        url = f"sqlite:///{tmp_path}/race-{i}/state.db"
        stores = await asyncio.gather(*(open_store(url) for _ in range(3)))
        for store in stores:
            assert await store.revision() >= 0
            await store.close()
