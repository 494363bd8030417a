"""A deposed leader's controllers write nothing, on both stores (SQLite, a real etcd).

For the scheduler, the RC manager and node lifecycle: the loop reads and
plans while it leads; then, just before its transaction is sent (the
applier's ``on_txn``), another identity takes the leader key. The write
fails with LeadershipLost and nothing the loop wrote after that lands.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import pytest

from gitkube.api.keys import HEARTBEAT_PREFIX, LEADER_KEY
from gitkube.api.objects import Node, Pod, ReplicationController
from gitkube.control import Applier, Write
from gitkube.election import LeaderElection
from gitkube.errors import LeadershipLost
from gitkube.planner.nodelifecycle_loop import (
    NodeLifecycleController,
    NodeLifecycleControllerSettings,
)
from gitkube.planner.replication_loop import ReplicationManager, ReplicationManagerSettings
from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings
from gitkube.store.base import Store
from gitkube.store.objects import ObjectStore
from tests.planner.builders import node, pod, rc
from tests.store.conftest import store  # noqa: F401  (SQLite and etcd)


@pytest.fixture
def objects(store: Store) -> ObjectStore:  # noqa: F811
    return ObjectStore(store)


class Deposition:
    """Leads as "m1"; before transaction number ``at`` of the applier, "m2"
    takes the leader key (m1's lease lapsed), so that transaction and every
    later one carry a fence that no longer holds."""

    def __init__(self, objects: ObjectStore, *, at: int = 1) -> None:
        self.objects = objects
        self.at = at
        self.txns: list[list[str]] = []
        self.leader = LeaderElection(objects.store, "m1", ttl=5)
        self.revision_after = 0

    async def lead(self) -> None:
        assert await self.leader._campaign()

    def applier(self, *, batch: int = 64) -> Applier:
        return Applier(self.objects, fence=self.leader.fence, batch=batch, on_txn=self.on_txn)

    async def on_txn(self, writes: Sequence[Write]) -> None:
        self.txns.append([w.key for w in writes])
        if len(self.txns) == self.at:
            await self.objects.store.revoke_lease(self.leader.lease)
            assert await LeaderElection(self.objects.store, "m2", ttl=5)._campaign()
            self.revision_after = await self.objects.store.revision()

    async def nothing_written_since(self) -> None:
        assert self.revision_after, "the leader was never deposed"
        assert await self.objects.store.revision() == self.revision_after
        held = await self.objects.store.get(LEADER_KEY)
        assert held is not None and held.value == b"m2"


async def expect_lost(call: Callable[[], Awaitable[object]]) -> None:
    with pytest.raises(LeadershipLost, match="leadership was lost"):
        await call()


async def test_scheduler_deposed_between_two_binding_batches(objects: ObjectStore) -> None:
    for n in ("a", "b"):
        await objects.create(node(n))
    for i in range(4):
        await objects.create(pod(f"p{i}"))
    fencing = Deposition(objects, at=2)
    await fencing.lead()
    loop = SchedulerLoop(objects, SchedulerSettings(seed=0), applier=fencing.applier(batch=2))
    await expect_lost(loop.reconcile_once)
    await fencing.nothing_written_since()
    pods = {p.name: p for p in (await objects.list(Pod))[0]}
    bound = sorted(name for name, p in pods.items() if p.spec.node_name)
    # the first batch landed while m1 led; the second, planned then, did not
    assert len(bound) == 2 and len(fencing.txns) == 2
    assert sorted(k.rsplit("/", 1)[1] for k in fencing.txns[0]) == bound
    for name, p in pods.items():
        if name not in bound:
            assert p.status.condition("PodScheduled") is None


async def test_rc_manager_deposed_during_slow_start_creates(objects: ObjectStore) -> None:
    await objects.create(node("a"))
    await objects.create(rc("web", replicas=3))
    before = await objects.get(ReplicationController, "default", "web")
    assert before is not None
    fencing = Deposition(objects, at=2)  # the second slow-start batch (2 pods)
    await fencing.lead()
    manager = ReplicationManager(
        objects, ReplicationManagerSettings(seed=3), applier=fencing.applier()
    )
    await expect_lost(manager.reconcile_once)
    await fencing.nothing_written_since()
    pods, _ = await objects.list(Pod)
    assert [p.key for p in pods] == fencing.txns[0], "only the batch sent while leading"
    # nor the status (written in a finally, after the deposition)
    after = await objects.get(ReplicationController, "default", "web")
    assert after is not None and after.status == before.status
    assert after.metadata.resource_version == before.metadata.resource_version


async def test_node_lifecycle_deposed_before_its_evictions(objects: ObjectStore) -> None:
    for n in ("alive", "dead"):
        await objects.create(node(n))
    for i in range(3):
        await objects.create(pod(f"d{i}", node_name="dead"))
    now = [0.0]
    fencing = Deposition(objects, at=2)  # 1: dead turns Unknown; 2: the evictions
    await fencing.lead()
    controller = NodeLifecycleController(
        objects,
        NodeLifecycleControllerSettings(grace_period_seconds=1, eviction_timeout_seconds=1),
        applier=fencing.applier(),
        clock=lambda: now[0],
    )

    async def beat(name: str) -> None:
        await objects.store.put(HEARTBEAT_PREFIX + name, f"{now[0]}".encode())

    await beat("alive")
    await beat("dead")
    await controller.reconcile_once()  # both seen alive
    now[0] = 10.0
    await beat("alive")
    marked = await controller.reconcile_once()  # dead: Ready=Unknown, written while leading
    assert marked.updated == ["dead"] and not marked.evicted
    now[0] = 20.0
    await beat("alive")
    await expect_lost(controller.reconcile_once)
    await fencing.nothing_written_since()
    assert len(fencing.txns) == 2 and len(fencing.txns[1]) == 3
    left = sorted(p.name for p in (await objects.list(Pod))[0])
    assert left == ["d0", "d1", "d2"], "no eviction landed"
    dead = await objects.get(Node, "", "dead")
    assert dead is not None and dead.status.condition("Ready").status == "Unknown"  # type: ignore[union-attr]
