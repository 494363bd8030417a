"""The plan applier against both stores.

- a batch of guarded writes lands in one transaction; more writes than a
  transaction holds are split within the store's 128-operation limit;
- one write that lost its compare-and-swap costs only itself; a delete of
  an object already gone is reported as gone, not as a conflict;
- ``atomic=True`` is all or nothing;
- the fence: a deposed leader's writes raise LeadershipLost and nothing of
  them lands, also when the leader is deposed between two batches;
- ``replan`` plans again on Conflict a bounded number of times, then Retry.
"""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from gitkube.api.keys import LEADER_KEY
from gitkube.api.objects import Container, ObjectMeta, Pod, PodSpec
from gitkube.control import Applier, Cache, Retry, Write, create, delete, replan, update
from gitkube.election import LeaderElection
from gitkube.errors import Conflict, LeadershipLost
from gitkube.store.objects import ObjectStore


def make_pod(name: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name),
        spec=PodSpec(containers=[Container(name="c", image="busybox")]),
    )


async def names(objects: ObjectStore) -> list[str]:
    return sorted(p.name for p in (await objects.list(Pod))[0])


async def test_batches_split_within_the_transaction_limit(objects: ObjectStore) -> None:
    applier = Applier(objects, batch=500)
    assert applier.batch == 127
    done = await applier.apply([create(make_pod(f"p{i:03}")) for i in range(300)])
    assert len(done.applied) == 300 and not done.conflicts
    assert applier.txns == 3
    assert len(await names(objects)) == 300
    assert done.revision == await objects.store.revision()


async def test_one_conflict_costs_only_its_own_write(objects: ObjectStore) -> None:
    pods = [await objects.create(make_pod(n)) for n in ("a", "b", "c")]
    stale = pods[1].copy()
    moved = pods[1].copy()
    moved.metadata.labels = {"changed": "elsewhere"}
    await objects.update(moved)  # b changes after it was read
    gone = pods[2]
    await objects.delete(gone)
    writes = []
    for pod in (pods[0], stale):
        new = pod.copy()
        new.spec.node_name = "n1"
        writes.append(update(new, pod))
    writes.append(delete(gone))
    done = await Applier(objects).apply(writes)
    assert [w.obj.name for w in done.applied] == ["a"]
    assert [w.obj.name for w in done.conflicts] == ["b"]
    assert [w.obj.name for w in done.gone] == ["c"]
    a = await objects.get(Pod, "default", "a")
    b = await objects.get(Pod, "default", "b")
    assert a is not None and a.spec.node_name == "n1"
    assert b is not None and not b.spec.node_name and b.metadata.labels == {"changed": "elsewhere"}


async def test_atomic_is_all_or_nothing(objects: ObjectStore) -> None:
    await objects.create(make_pod("taken"))
    with pytest.raises(Conflict):
        await Applier(objects).apply(
            [create(make_pod("new")), create(make_pod("taken"))], atomic=True
        )
    assert await names(objects) == ["taken"]


async def test_a_deposed_leader_writes_nothing(objects: ObjectStore) -> None:
    leader = LeaderElection(objects.store, "m1", ttl=5)
    assert await leader._campaign()
    applier = Applier(objects, fence=leader.fence)
    await applier.apply([create(make_pod("while-leading"))])
    # the term ends behind its back: the lease lapsed and another master won
    await objects.store.delete(LEADER_KEY)
    assert await LeaderElection(objects.store, "m2", ttl=5)._campaign()
    for atomic in (False, True):
        with pytest.raises(LeadershipLost, match="leadership was lost"):
            await applier.apply([create(make_pod("x")), create(make_pod("y"))], atomic=atomic)
    pod = await objects.get(Pod, "default", "while-leading")
    assert pod is not None
    with pytest.raises(LeadershipLost):
        await applier.apply([delete(pod)])
    with pytest.raises(LeadershipLost):  # a lone write that fails is checked too
        await applier.apply([create(make_pod("z"))])
    assert await names(objects) == ["while-leading"]


async def test_deposed_between_two_batches_the_second_does_not_land(
    objects: ObjectStore,
) -> None:
    leader = LeaderElection(objects.store, "m1", ttl=5)
    assert await leader._campaign()
    sent: list[int] = []

    async def depose_before_second(writes: Sequence[Write]) -> None:
        sent.append(len(writes))
        if len(sent) == 2:
            await objects.store.delete(LEADER_KEY)
            assert await LeaderElection(objects.store, "m2", ttl=5)._campaign()

    applier = Applier(objects, fence=leader.fence, batch=3, on_txn=depose_before_second)
    with pytest.raises(LeadershipLost, match=r"3 writes not applied \(3 applied before\)"):
        await applier.apply([create(make_pod(f"p{i}")) for i in range(6)])
    assert await names(objects) == ["p0", "p1", "p2"]


async def test_replan_is_bounded(objects: ObjectStore) -> None:
    cache = Cache(objects.store)
    attempts: list[int] = []

    async def always_loses() -> None:
        attempts.append(cache.revision)
        raise Conflict("lost")

    with pytest.raises(Retry, match="3 plans lost"):
        await replan(always_loses, what="test", cache=cache)
    assert len(attempts) == 3

    async def wins_second_time() -> str:
        attempts.append(0)
        if len(attempts) < 5:
            raise Conflict("lost")
        return "done"

    assert await replan(wins_second_time, what="test") == "done"

    async def deposed() -> None:
        raise LeadershipLost("gone")

    with pytest.raises(LeadershipLost):
        await replan(deposed, what="test")
