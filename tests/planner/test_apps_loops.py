"""The Deployment and ReplicaSet controllers on the control kit, against a
real embedded (SQLite) store, with the scheduler and heartbeating fake agents:

- a Deployment comes up: a ReplicaSet named after the pod-template-hash, its
  pods Ready, the Deployment's status and revision written;
- a template change rolls to a new ReplicaSet without ready pods dropping
  below replicas - maxUnavailable, and completes;
- a template whose pods never turn Ready stops the rollout, the old pods keep
  serving, and the progress deadline turns Progressing False
  (ProgressDeadlineExceeded) without any event;
- deleting the Deployment (as a prune does) removes its ReplicaSets and pods;
- a ReplicaSet of its own (declared in git) keeps its pods: replaces a
  deleted one, scales down.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gitkube.api.objects import (
    Container,
    Deployment,
    DeploymentSpec,
    LabelSelector,
    ObjectMeta,
    Pod,
    PodSpec,
    PodTemplateSpec,
    ReplicaSet,
)
from gitkube.api.rollout import POD_TEMPLATE_HASH, REVISION, TIMED_OUT, rollout_state
from gitkube.control import Cache
from gitkube.errors import Conflict
from gitkube.planner.deployment import compute_hash
from gitkube.planner.deployment_loop import DeploymentController
from gitkube.planner.replicaset_loop import ReplicaSetController, ReplicaSetControllerSettings
from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.planner.agents import FakeAgent, eventually


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def deployment(replicas: int = 3, image: str = "app:1", deadline: int | None = None) -> Deployment:
    return Deployment(
        metadata=ObjectMeta(name="web"),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(match_labels={"app": "web"}),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": "web"}),
                spec=PodSpec(containers=[Container(name="app", image=image)]),
            ),
            progress_deadline_seconds=deadline,
        ),
    )


class Plane:
    def __init__(self, objects: ObjectStore) -> None:
        self.objects = objects
        self.cache = Cache(objects.store)
        self.scheduler = SchedulerLoop(objects, SchedulerSettings(resync_seconds=0.5))
        self.replicasets = ReplicaSetController(
            objects, ReplicaSetControllerSettings(seed=1), cache=self.cache
        )
        self.deployments = DeploymentController(objects, cache=self.cache)
        self.stop = asyncio.Event()
        self.tasks: list[asyncio.Task[None]] = []
        self.agents: list[FakeAgent] = []

    async def start(self) -> None:
        for i in range(2):
            agent = FakeAgent(self.objects, f"node-{i}")
            await agent.start()
            self.agents.append(agent)
        self.tasks = [
            asyncio.create_task(self.cache.run(self.stop)),
            asyncio.create_task(self.scheduler.run(self.stop)),
            asyncio.create_task(self.replicasets.run(self.stop)),
            asyncio.create_task(self.deployments.run(self.stop)),
        ]

    async def close(self) -> None:
        self.stop.set()
        for agent in self.agents:
            await agent.kill()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def deployment(self) -> Deployment:
        found = await self.objects.get(Deployment, "default", "web")
        assert found is not None
        return found

    async def change(self, edit: Callable[[Deployment], None]) -> None:
        """Edit the Deployment as the sync would (compare-and-swap, retried)."""
        for _ in range(50):
            current = await self.deployment()
            edit(current)
            with contextlib.suppress(Conflict):
                await self.objects.update(current)
                return
            await asyncio.sleep(0.02)
        raise AssertionError("Deployment update kept conflicting")

    async def pods(self) -> list[Pod]:
        return (await self.objects.list(Pod))[0]

    async def replicasets_(self) -> list[ReplicaSet]:
        return (await self.objects.list(ReplicaSet))[0]

    async def complete(self) -> bool:
        d = await self.deployment()
        return rollout_state(d).done and d.status.observed_generation == d.metadata.generation


@pytest.fixture
async def plane(objects: ObjectStore) -> AsyncIterator[Plane]:
    p = Plane(objects)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


def ready(pods: list[Pod], image: str | None = None) -> int:
    return sum(
        1 for p in pods if p.is_ready() and (image is None or p.spec.containers[0].image == image)
    )


async def test_a_deployment_comes_up_and_rolls(plane: Plane) -> None:
    created = await plane.objects.create(deployment())
    await eventually(plane.complete, timeout=30)
    (rs,) = await plane.replicasets_()
    h = compute_hash(created.spec.template)
    assert rs.name == f"web-{h}" and rs.metadata.labels[POD_TEMPLATE_HASH] == h
    pods = await plane.pods()
    assert ready(pods) == 3 and all(p.metadata.labels[POD_TEMPLATE_HASH] == h for p in pods)
    d = await plane.deployment()
    assert d.metadata.annotations[REVISION] == "1"

    def to_v2(d: Deployment) -> None:
        d.spec.template.spec.containers[0].image = "app:2"

    await plane.change(to_v2)
    lowest = 3
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await plane.complete():
        lowest = min(lowest, ready(await plane.pods()))
        assert loop.time() < deadline, "the rollout did not complete"
        await asyncio.sleep(0.02)
    # default maxUnavailable 25% of 3 rounds down to 0
    assert lowest >= 3
    pods = await plane.pods()
    assert ready(pods, "app:2") == 3 and len(pods) == 3
    d = await plane.deployment()
    assert d.metadata.annotations[REVISION] == "2"
    assert sorted(rs.spec.replicas or 0 for rs in await plane.replicasets_()) == [0, 3]


async def test_a_broken_template_stops_and_the_deadline_is_reported(plane: Plane) -> None:
    await plane.objects.create(deployment(replicas=2, deadline=2))
    await eventually(plane.complete, timeout=30)

    def break_it(d: Deployment) -> None:
        d.spec.template.spec.containers[0].image = "broken"

    await plane.change(break_it)

    async def timed_out() -> bool:
        d = await plane.deployment()
        return rollout_state(d).failed

    await eventually(timed_out, timeout=30)
    d = await plane.deployment()
    progressing = next(c for c in d.status.conditions if c.type == "Progressing")
    assert (progressing.status, progressing.reason) == ("False", TIMED_OUT)
    pods = await plane.pods()
    assert ready(pods, "app:1") == 2  # the old pods keep serving
    assert ready(pods, "broken") == 0


async def test_deleting_the_deployment_removes_its_replicasets_and_pods(plane: Plane) -> None:
    await plane.objects.create(deployment(replicas=2))
    await eventually(plane.complete, timeout=30)
    await plane.objects.delete(await plane.deployment(), guarded=False)

    async def gone() -> bool:
        return not await plane.replicasets_() and not await plane.pods()

    await eventually(gone, timeout=30)


async def test_a_replicaset_of_its_own_keeps_its_pods(plane: Plane) -> None:
    from gitkube.api.objects import ReplicaSetSpec

    rs = await plane.objects.create(
        ReplicaSet(
            metadata=ObjectMeta(name="cache"),
            spec=ReplicaSetSpec(
                replicas=3,
                selector=LabelSelector(match_labels={"app": "cache"}),
                template=PodTemplateSpec(
                    metadata=ObjectMeta(labels={"app": "cache"}),
                    spec=PodSpec(containers=[Container(name="c", image="cache:1")]),
                ),
            ),
        )
    )

    async def status_is(replicas: int, ready: int) -> bool:
        found = await plane.objects.get(ReplicaSet, "default", "cache")
        pods = [p for p in await plane.pods() if p.metadata.labels.get("app") == "cache"]
        return (
            found is not None
            and (found.status.replicas, found.status.available_replicas) == (replicas, ready)
            and len(pods) == replicas
        )

    await eventually(lambda: status_is(3, 3), timeout=30)
    # a pod deleted behind its back is replaced
    victim = next(p for p in await plane.pods() if p.metadata.labels.get("app") == "cache")
    await plane.objects.delete(victim, guarded=False)
    await eventually(lambda: status_is(3, 3), timeout=30)
    assert victim.name not in {p.name for p in await plane.pods()}
    for _ in range(50):  # scale down as the sync would (compare-and-swap, retried)
        current = await plane.objects.get(ReplicaSet, "default", "cache")
        assert current is not None and current.metadata.uid == rs.metadata.uid
        current.spec.replicas = 1
        with contextlib.suppress(Conflict):
            await plane.objects.update(current)
            break
        await asyncio.sleep(0.02)
    await eventually(lambda: status_is(1, 1), timeout=30)
