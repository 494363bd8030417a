"""The endpoints controller against a real SQLite store, with pod status
written as an agent would write it.

- a pass writes Endpoints for Services with a selector, and only when changed
- readiness changes reach the Endpoints within a second when the loop runs
- Endpoints of deleted Services (and Services that lost their selector) go
- Endpoints written by hand are never touched
- a Service with no ready pods has empty Endpoints; headless ones get them too
- a deposed leader's controller writes nothing: another identity takes the
  leader key just before its write is sent, and no Endpoints land
- a running controller follows a Service's pods through the shared cache,
  one Service per key, without listing the store again
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import pytest

from gitkube.api.keys import LEADER_KEY
from gitkube.api.objects import (
    Container,
    ContainerPort,
    Endpoints,
    EndpointSubset,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.control import Applier, Cache, Write
from gitkube.election import LeaderElection
from gitkube.errors import LeadershipLost
from gitkube.services.controller import EndpointsController
from gitkube.services.endpoints import endpoint_targets, is_managed
from gitkube.store.objects import ObjectStore


def make_service(name: str = "web", *, headless: bool = False) -> Service:
    return Service(
        metadata=ObjectMeta(name=name),
        spec=ServiceSpec(
            selector={"app": name},
            ports=[ServicePort(name="http", port=80, target_port="http")],
            cluster_ip="None" if headless else "",
        ),
    )


def make_pod(name: str, host_port: int, *, app: str = "web", ready: bool = True) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels={"app": app}),
        spec=PodSpec(
            node_name="n1",
            containers=[Container(name="srv", ports=[ContainerPort(8000, name="http")])],
        ),
        status=_status(host_port, ready=ready),
    )


def _status(host_port: int, *, ready: bool) -> PodStatus:
    return PodStatus(
        phase="Running",
        host_ip="127.0.0.1",
        pod_ip="127.0.0.1",
        conditions=[PodCondition(type="Ready", status="True" if ready else "False")],
        host_ports={"srv/8000/TCP": host_port},
    )


async def set_ready(objects: ObjectStore, name: str, ready: bool) -> None:
    """What an agent does when a readiness probe flips."""
    pod = await objects.get(Pod, "default", name)
    assert pod is not None
    pod.status.conditions = [PodCondition(type="Ready", status="True" if ready else "False")]
    await objects.update(pod)


async def targets_of(objects: ObjectStore, name: str = "web") -> list[tuple[str, int]]:
    return endpoint_targets(await objects.get(Endpoints, "default", name), "http")


async def test_pass_writes_endpoints_once_and_then_only_on_change(objects: ObjectStore) -> None:
    await objects.create(make_service())
    await objects.create(make_pod("a", 30001))
    await objects.create(make_pod("b", 30002, ready=False))
    controller = EndpointsController(objects)
    first = await controller.reconcile_once()
    assert first.created == ["default/web"]
    endpoints = await objects.get(Endpoints, "default", "web")
    assert endpoints is not None and is_managed(endpoints)
    assert endpoint_targets(endpoints, "http") == [("127.0.0.1", 30001)]
    assert [
        a.target_ref.name for s in endpoints.subsets for a in s.not_ready_addresses if a.target_ref
    ] == ["b"]

    revision = await objects.store.revision()
    again = await controller.reconcile_once()
    assert not again.changed
    assert await objects.store.revision() == revision, "an unchanged pass writes nothing"

    await set_ready(objects, "b", True)
    third = await controller.reconcile_once()
    assert third.updated == ["default/web"]
    assert await targets_of(objects) == [("127.0.0.1", 30001), ("127.0.0.1", 30002)]


async def test_readiness_change_reaches_endpoints_within_a_second(objects: ObjectStore) -> None:
    await objects.create(make_service())
    await objects.create(make_pod("a", 30001))
    await objects.create(make_pod("b", 30002))
    controller = EndpointsController(objects, resync_seconds=60)
    stop = asyncio.Event()
    task = asyncio.create_task(controller.run(stop))
    try:
        await _wait_for(objects, [("127.0.0.1", 30001), ("127.0.0.1", 30002)], 5.0)
        for ready, want in (
            (False, [("127.0.0.1", 30001)]),
            (True, [("127.0.0.1", 30001), ("127.0.0.1", 30002)]),
        ):
            started = time.monotonic()
            await set_ready(objects, "b", ready)
            await _wait_for(objects, want, 1.0)
            assert time.monotonic() - started < 1.0
        # a new pod and a deleted pod are followed the same way
        await objects.create(make_pod("c", 30003))
        await _wait_for(
            objects, [("127.0.0.1", 30001), ("127.0.0.1", 30002), ("127.0.0.1", 30003)], 1.0
        )
        pod = await objects.get(Pod, "default", "a")
        assert pod is not None
        await objects.delete(pod)
        await _wait_for(objects, [("127.0.0.1", 30002), ("127.0.0.1", 30003)], 1.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def _wait_for(objects: ObjectStore, want: list[tuple[str, int]], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while (got := await targets_of(objects)) != want:
        assert time.monotonic() < deadline, f"endpoints {got}, expected {want}"
        await asyncio.sleep(0.01)


async def test_endpoints_of_deleted_or_selectorless_services_are_removed(
    objects: ObjectStore,
) -> None:
    web = await objects.create(make_service("web"))
    api = await objects.create(make_service("api"))
    controller = EndpointsController(objects)
    await controller.reconcile_once()
    assert await objects.get(Endpoints, "default", "web") is not None

    await objects.delete(web)
    api.spec.selector = {}
    await objects.update(api)
    result = await controller.reconcile_once()
    assert sorted(result.deleted) == ["default/api", "default/web"]
    assert await objects.get(Endpoints, "default", "web") is None
    assert await objects.get(Endpoints, "default", "api") is None


async def test_hand_written_endpoints_are_left_alone(objects: ObjectStore) -> None:
    manual = Service(
        metadata=ObjectMeta(name="external"),
        spec=ServiceSpec(ports=[ServicePort(port=5432)]),  # no selector
    )
    await objects.create(manual)
    await objects.create(
        Endpoints(metadata=ObjectMeta(name="external"), subsets=[EndpointSubset()])
    )
    # and one whose Service has a selector but whose Endpoints someone else wrote
    await objects.create(make_service("web"))
    await objects.create(Endpoints(metadata=ObjectMeta(name="web")))
    # and an orphan written by hand
    await objects.create(Endpoints(metadata=ObjectMeta(name="orphan")))
    result = await EndpointsController(objects).reconcile_once()
    assert result.unmanaged == ["default/web"]
    assert not result.changed
    for name in ("external", "web", "orphan"):
        assert await objects.get(Endpoints, "default", name) is not None


async def test_no_ready_pods_gives_empty_endpoints_and_headless_gets_them(
    objects: ObjectStore,
) -> None:
    await objects.create(make_service("web"))
    await objects.create(make_service("db", headless=True))
    await objects.create(make_pod("w", 30001, ready=False))
    await objects.create(make_pod("d", 30009, app="db"))
    await EndpointsController(objects).reconcile_once()
    assert await targets_of(objects, "web") == []
    assert await targets_of(objects, "db") == [("127.0.0.1", 30009)]


async def test_a_deposed_leader_writes_no_endpoints(objects: ObjectStore) -> None:
    await objects.create(make_service("web"))
    await objects.create(make_service("api"))
    await objects.create(make_pod("a", 30001))
    leader = LeaderElection(objects.store, "m1", ttl=5)
    assert await leader._campaign()
    deposed_at: list[int] = []

    async def depose(writes: Sequence[Write]) -> None:
        if not deposed_at:  # between the plan and the first write
            await objects.store.revoke_lease(leader.lease)
            assert await LeaderElection(objects.store, "m2", ttl=5)._campaign()
            deposed_at.append(await objects.store.revision())

    controller = EndpointsController(
        objects, applier=Applier(objects, fence=leader.fence, on_txn=depose)
    )
    with pytest.raises(LeadershipLost, match="leadership was lost"):
        await controller.reconcile_once()
    assert deposed_at and await objects.store.revision() == deposed_at[0]
    assert await objects.get(Endpoints, "default", "web") is None
    assert await objects.get(Endpoints, "default", "api") is None
    held = await objects.store.get(LEADER_KEY)
    assert held is not None and held.value == b"m2"


async def test_a_running_controller_works_from_the_shared_cache(objects: ObjectStore) -> None:
    cache = Cache(objects.store)
    controller = EndpointsController(objects, cache=cache)
    stop = asyncio.Event()
    cache_task = asyncio.create_task(cache.run(stop))
    task = asyncio.create_task(controller.run(stop))
    try:
        await objects.create(make_service("web"))
        await objects.create(make_service("other"))
        await objects.create(make_pod("a", 30001))
        await _wait_for(objects, [("127.0.0.1", 30001)], 5.0)
        await set_ready(objects, "a", False)
        await _wait_for(objects, [], 5.0)
        assert cache.lists == 1, "followed by the watch, not by listing again"
        other = await objects.get(Endpoints, "default", "other")
        assert other is not None and endpoint_targets(other, "http") == []
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(task, cache_task), 10)
