"""The planner loops against a real embedded (SQLite) store, with fake agents
that register and heartbeat for real (see ``tests.planner.agents``).

- scheduler loop: bindings by compare-and-swap, the Unschedulable condition
  with kube-scheduler's message, written once; retried when a node appears;
  latency recorded;
- a node killed under load: its heartbeat stops, it turns NotReady, and its
  pods are recreated on the other nodes;
- two nodes killed at once: the node lifecycle loop keeps its eviction rate
  limiter between passes, so the second node's pods go 1/rate after the
  first's (on the controller's clock, injected);
- a scale from 0 to 50 and back;
- a rolling update that completes without dropping ready pods, and one
  that stalls and is reported Degraded while the old pods keep serving;
- pods of a deleted RC are collected.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gitkube.api.annotations import PROGRESS_DEADLINE, TEMPLATE_HASH_LABEL
from gitkube.api.objects import Node, Pod, ReplicationController
from gitkube.errors import Conflict
from gitkube.planner.nodelifecycle_loop import (
    NodeLifecycleController,
    NodeLifecycleControllerSettings,
)
from gitkube.planner.replication import template_hash
from gitkube.planner.replication_loop import ReplicationManager, ReplicationManagerSettings
from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.planner.agents import FakeAgent, eventually
from tests.planner.builders import node, pod, rc


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


class ControlPlane:
    """The three loops running, with test-sized timings, and fake agents."""

    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.scheduler = SchedulerLoop(objects, SchedulerSettings(resync_seconds=0.5))
        self.replication = ReplicationManager(
            objects, ReplicationManagerSettings(resync_seconds=0.2, seed=1)
        )
        self.lifecycle = NodeLifecycleController(
            objects,
            NodeLifecycleControllerSettings(
                grace_period_seconds=1.0, eviction_timeout_seconds=1.0, monitor_period_seconds=0.1
            ),
        )
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.agents: dict[str, FakeAgent] = {}

    async def start(self, nodes: int, **agent_kw: int) -> None:
        for i in range(nodes):
            agent = FakeAgent(self.objects, f"node-{i}", **agent_kw)  # type: ignore[arg-type]
            await agent.start()
            self.agents[agent.name] = agent
        for loop in (self.scheduler, self.replication, self.lifecycle):
            self.tasks.append(asyncio.create_task(loop.run(self.stop)))

    async def close(self) -> None:
        self.stop.set()
        for agent in self.agents.values():
            await agent.kill()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def pods(self, name: str = "web") -> list[Pod]:
        pods, _ = await self.objects.list(Pod)
        return [p for p in pods if p.metadata.labels.get("app") == name]

    async def rc(self, name: str = "web") -> ReplicationController:
        found = await self.objects.get(ReplicationController, "default", name)
        assert found is not None
        return found

    async def change_rc(self, change: Callable[[ReplicationController], None]) -> None:
        """Edit the RC as the sync would (compare-and-swap, retried)."""
        for _ in range(50):
            current = await self.rc()
            change(current)
            with contextlib.suppress(Conflict):
                await self.objects.update(current)
                return
            await asyncio.sleep(0.02)
        raise AssertionError("RC update kept conflicting")


@pytest.fixture
async def plane(objects: ObjectStore) -> AsyncIterator[ControlPlane]:
    plane = ControlPlane(objects)
    try:
        yield plane
    finally:
        await plane.close()


def _ready_on(pods: list[Pod], nodes: set[str] | None = None) -> int:
    return sum(1 for p in pods if p.is_ready() and (nodes is None or p.spec.node_name in nodes))


# ---------------------------------------------------------------- scheduler loop


class TestSchedulerLoop:
    async def test_binds_reports_unschedulable_once_and_retries(self, objects: ObjectStore) -> None:
        for n in (node("a", cpu="1"), node("b", cpu="1")):
            await objects.create(n)
        for p in (pod("p1", cpu="500m"), pod("p2", cpu="500m"), pod("big", cpu="2")):
            await objects.create(p)
        seen: list[tuple[str, float]] = []
        loop = SchedulerLoop(
            objects, SchedulerSettings(seed=0), on_scheduled=lambda k, s: seen.append((k, s))
        )
        first = await loop.reconcile_once()
        assert first.bound == 2 and not first.conflicts
        assert first.unschedulable == {
            pod("big").key: "0/2 nodes are available: 2 Insufficient cpu."
        }
        stored = {p.name: p for p in (await objects.list(Pod))[0]}
        assert stored["p1"].spec.node_name in {"a", "b"}
        assert stored["p1"].status.condition("PodScheduled").status == "True"  # type: ignore[union-attr]
        cond = stored["big"].status.condition("PodScheduled")
        assert cond is not None and (cond.status, cond.reason) == ("False", "Unschedulable")
        assert cond.message == "0/2 nodes are available: 2 Insufficient cpu."
        assert sorted(k for k, _ in seen) == sorted([pod("p1").key, pod("p2").key])
        assert len(loop.latencies) == 2 and all(s >= 0 for s in loop.latencies)

        revision = await objects.store.revision()
        again = await loop.reconcile_once()
        assert not again.bound and await objects.store.revision() == revision

        await objects.create(node("c", cpu="4"))
        third = await loop.reconcile_once()
        assert third.bindings == {pod("big").key: "c"}
        big = await objects.get(Pod, "default", "big")
        assert big is not None and big.status.condition("PodScheduled").status == "True"  # type: ignore[union-attr]

    async def test_running_loop_binds_when_a_node_appears(self, objects: ObjectStore) -> None:
        stop = asyncio.Event()
        loop = SchedulerLoop(objects, SchedulerSettings(resync_seconds=30))
        task = asyncio.create_task(loop.run(stop))
        try:
            await objects.create(pod("waiting", memory="1Gi"))

            async def reason() -> str:
                p = await objects.get(Pod, "default", "waiting")
                cond = p.status.condition("PodScheduled") if p else None
                return cond.message if cond else ""

            assert await eventually(reason) == (
                "0/0 nodes are available: no nodes available to schedule pods."
            )
            await objects.create(node("late"))

            async def bound() -> str:
                p = await objects.get(Pod, "default", "waiting")
                return p.spec.node_name if p else ""

            assert await eventually(bound, timeout=5) == "late"
        finally:
            stop.set()
            await task


# ---------------------------------------------------------------- whole control plane


class TestNodeFailure:
    async def test_a_node_killed_under_load_has_its_pods_recreated_elsewhere(
        self, plane: ControlPlane
    ) -> None:
        await plane.start(3)
        await plane.objects.create(rc("web", replicas=12))
        await eventually(lambda: _count_ready(plane, 12))
        pods = await plane.pods()
        victim = max(plane.agents, key=lambda n: sum(p.spec.node_name == n for p in pods))
        doomed = {p.key for p in pods if p.spec.node_name == victim}
        assert doomed
        await plane.agents[victim].kill()

        async def not_ready() -> bool:
            n = await plane.objects.get(Node, "", victim)
            cond = n.status.condition("Ready") if n else None
            return cond is not None and cond.status == "Unknown"

        await eventually(not_ready, timeout=10)
        survivors = set(plane.agents) - {victim}

        async def recovered() -> bool:
            pods = await plane.pods()
            return (
                len(pods) == 12
                and _ready_on(pods, survivors) == 12
                and not doomed & {p.key for p in pods}
            )

        await eventually(recovered, timeout=15)
        status = (await plane.rc()).status
        assert status.replicas == 12
        await eventually(lambda: _status_ready(plane, 12))

    async def test_evictions_of_two_dead_nodes_are_spaced_by_the_rate(
        self, objects: ObjectStore
    ) -> None:
        agents = [FakeAgent(objects, f"node-{i}") for i in range(5)]
        for agent in agents:
            await agent.start()
        for agent in agents:
            await objects.create(pod(f"on-{agent.name}", node_name=agent.name))
        now = [0.0]
        controller = NodeLifecycleController(
            objects,
            NodeLifecycleControllerSettings(
                grace_period_seconds=1.0, eviction_timeout_seconds=1.0, eviction_rate=0.5
            ),
            clock=lambda: now[0],
        )
        try:
            await controller.reconcile_once()
            for agent in agents[:2]:
                await agent.kill()
            evicted_at: dict[str, float] = {}
            while now[0] < 10:
                await controller.cache.sync()
                seen = controller.heartbeats()

                async def live_beats_moved(seen: dict[str, int] = seen) -> bool:
                    await controller.cache.sync()
                    beats = controller.heartbeats()
                    return all(beats.get(a.name) != seen.get(a.name) for a in agents[2:])

                await eventually(live_beats_moved, timeout=10)
                now[0] += 0.5
                result = await controller.reconcile_once()
                assert set(result.not_ready) <= {"node-0", "node-1"}
                for key in result.evicted:
                    evicted_at[key.rsplit("/", 1)[1]] = now[0]
            first, second = sorted(evicted_at[f"on-node-{i}"] for i in (0, 1))
            assert second - first == 2.0, evicted_at  # 1 / 0.5 nodes per second
            assert set(evicted_at) == {"on-node-0", "on-node-1"}
        finally:
            for agent in agents:
                await agent.kill()


async def _count_ready(plane: ControlPlane, n: int) -> bool:
    pods = await plane.pods()
    return len(pods) == n and _ready_on(pods) == n


async def _status_ready(plane: ControlPlane, n: int) -> bool:
    status = (await plane.rc()).status
    return status.ready_replicas == n and status.replicas == n


class TestScaling:
    async def test_scale_from_0_to_50_and_back(self, plane: ControlPlane) -> None:
        await plane.start(2, max_pods=30)
        await plane.objects.create(rc("web", replicas=0))
        await eventually(lambda: _status_ready(plane, 0))
        await plane.change_rc(lambda r: setattr(r.spec, "replicas", 50))
        await eventually(lambda: _count_ready(plane, 50), timeout=30)
        await eventually(lambda: _status_ready(plane, 50))
        pods = await plane.pods()
        per_node = sorted(sum(p.spec.node_name == n for p in pods) for n in plane.agents)
        assert per_node == [25, 25]  # spread, and within max pods
        rc_now = await plane.rc()
        assert rc_now.status.observed_generation == rc_now.metadata.generation
        await plane.change_rc(lambda r: setattr(r.spec, "replicas", 0))

        async def empty() -> bool:
            return not await plane.pods() and await _status_ready(plane, 0)

        await eventually(empty, timeout=30)


def _set_image(image: str) -> Callable[[ReplicationController], None]:
    def change(r: ReplicationController) -> None:
        r.spec.template.spec.containers[0].image = image

    return change


class TestRollingUpdate:
    async def test_a_rolling_update_completes_without_dropping_ready_pods(
        self, plane: ControlPlane
    ) -> None:
        await plane.start(3)
        await plane.objects.create(rc("web", replicas=4))
        await eventually(lambda: _count_ready(plane, 4))
        lowest: list[int] = []
        sampling = asyncio.Event()

        async def sample() -> None:
            while not sampling.is_set():
                lowest.append(_ready_on(await plane.pods()))
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        await plane.change_rc(_set_image("nginx:2"))
        new_hash = template_hash(await plane.rc())

        async def rolled() -> bool:
            pods = await plane.pods()
            status = (await plane.rc()).status
            return (
                len(pods) == 4
                and all(p.metadata.labels[TEMPLATE_HASH_LABEL] == new_hash for p in pods)
                and _ready_on(pods) == 4
                and status.updated_replicas == 4
                and status.conditions[0].reason == "RolloutComplete"
            )

        await eventually(rolled, timeout=20)
        sampling.set()
        await sampler
        assert lowest and min(lowest) >= 4
        assert (await plane.rc()).status.conditions[0].message.startswith("updated 4 of 4")

    async def test_a_rollout_that_never_becomes_ready_stalls_and_is_degraded(
        self, plane: ControlPlane
    ) -> None:
        await plane.start(3)
        await plane.objects.create(rc("web", replicas=4, annotations={PROGRESS_DEADLINE: "1.5"}))
        await eventually(lambda: _count_ready(plane, 4))
        old_hash = template_hash(await plane.rc())
        await plane.change_rc(_set_image("broken"))

        async def degraded() -> str:
            conditions = {c.type: c for c in (await plane.rc()).status.conditions}
            cond = conditions.get("Degraded")
            return cond.message if cond is not None and cond.status == "True" else ""

        message = await eventually(degraded, timeout=15)
        assert "old pods keep serving" in str(message)
        pods = await plane.pods()
        old = [p for p in pods if p.metadata.labels[TEMPLATE_HASH_LABEL] == old_hash]
        assert len(old) == 4 and _ready_on(old) == 4
        assert len(pods) == 5  # one surge pod, not ready, and no more
        progressing = {c.type: c for c in (await plane.rc()).status.conditions}["Progressing"]
        assert (progressing.status, progressing.reason) == ("False", "ProgressDeadlineExceeded")


class TestGarbageCollection:
    async def test_pods_of_a_deleted_rc_are_collected(self, objects: ObjectStore) -> None:
        await objects.create(node("n1"))
        await objects.create(rc("web", replicas=3))
        manager = ReplicationManager(objects, ReplicationManagerSettings(seed=2))
        first = await manager.reconcile_once()
        assert len(first.created) == 3
        await manager.reconcile_once()
        assert not (await manager.reconcile_once()).changed
        controller = await objects.get(ReplicationController, "default", "web")
        assert controller is not None
        await objects.delete(controller)
        collected = await manager.reconcile_once()
        assert len(collected.collected) == 3
        assert not (await objects.list(Pod))[0]
