"""Services end to end: a ReplicationController's pods behind a Service,
reached through the proxy. Everything real: SQLite store, scheduler,
replication manager, agent with the process runtime (``python3 -m
http.server``) or Docker (busybox ``httpd``), endpoints controller, proxy.

- scaling the RC up brings the new pods into rotation
- deleting a pod moves traffic to the others, with no failed request once
  the Endpoints have dropped it
- a pod that turns unready leaves the rotation, and comes back when ready
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from gitkube.api.objects import (
    Container,
    ContainerPort,
    Endpoints,
    HTTPGetAction,
    ObjectMeta,
    Pod,
    PodSpec,
    PodTemplateSpec,
    Probe,
    ReplicationController,
    ReplicationControllerSpec,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.nodes.agent import Agent, AgentSettings
from gitkube.nodes.backoff import BackoffSettings
from gitkube.nodes.podstatus import split_container_id
from gitkube.nodes.registration import NodeSettings
from gitkube.nodes.runtime.base import Runtime
from gitkube.nodes.runtime.process import ProcessRuntime
from gitkube.planner import ReplicationManager, SchedulerLoop
from gitkube.services.controller import EndpointsController
from gitkube.services.endpoints import endpoint_targets
from gitkube.services.proxy import ServiceProxy
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.fixtures.docker import TEST_IMAGE
from tests.services.conftest import free_port, require_native

pytestmark = pytest.mark.slow

NODE = f"svc-{uuid.uuid4().hex[:8]}"
LABELS = {"app": "hello"}

#: each pod serves its own name at /id and is ready while the file "ready" exists
PROCESS_SERVE = (
    'printf %s "$HOSTNAME" > id && touch ready && '
    "exec python3 -m http.server $(PORT) --bind 127.0.0.1"
)
DOCKER_SERVE = (
    "mkdir -p /www && cd /www && hostname > id && touch ready && exec httpd -f -p $(PORT) -h /www"
)


@dataclass
class Cluster:
    kind: str
    objects: ObjectStore
    runtime: Runtime
    proxy: ServiceProxy
    port: int

    async def wait(
        self, check: Callable[[], Awaitable[bool]], *, timeout: float = 20.0, what: str = ""
    ) -> None:
        deadline = time.monotonic() + timeout
        while not await check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.05)

    async def ready_endpoints(self) -> list[tuple[str, int]]:
        return endpoint_targets(await self.objects.get(Endpoints, "default", "hello"), "http")

    async def wait_endpoints(self, count: int) -> None:
        async def check() -> bool:
            if len(await self.ready_endpoints()) != count:
                return False
            balancer = self.proxy.balancer("default", "hello", "http")
            return balancer is not None and len(balancer.targets) == count

        await self.wait(check, what=f"{count} ready endpoints in the proxy")

    async def pods(self) -> list[Pod]:
        pods, _ = await self.objects.list(Pod, "default")
        return [p for p in pods if not p.metadata.deletion_timestamp]

    async def scale(self, replicas: int) -> None:
        rc = await self.objects.get(ReplicationController, "default", "hello")
        assert rc is not None
        rc.spec.replicas = replicas
        await self.objects.update(rc)


async def fetch(port: int, path: str = "/id") -> str:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
        answer = await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    head, _, body = answer.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n")[0]:
        raise AssertionError(f"bad answer {head[:60]!r}")
    return body.decode().strip()


async def identity(pod: Pod) -> str:
    """What the pod answers at /id, asked directly at its published port."""
    return await fetch(pod.status.host_ports["srv/8080/TCP"])


def make_rc(kind: str, replicas: int) -> ReplicationController:
    probe = Probe(
        http_get=HTTPGetAction(path="/ready", port="http"),
        period_seconds=0.2,  # type: ignore[arg-type]
        timeout_seconds=2,
        failure_threshold=1,
    )
    return ReplicationController(
        metadata=ObjectMeta(name="hello"),
        spec=ReplicationControllerSpec(
            replicas=replicas,
            selector=dict(LABELS),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=dict(LABELS)),
                spec=PodSpec(
                    termination_grace_period_seconds=1,
                    containers=[
                        Container(
                            name="srv",
                            image=TEST_IMAGE,
                            command=[
                                "sh",
                                "-c",
                                PROCESS_SERVE if kind == "process" else DOCKER_SERVE,
                            ],
                            ports=[ContainerPort(container_port=8080, name="http")],
                            readiness_probe=probe,
                        )
                    ],
                ),
            ),
        ),
    )


async def wipe(runtime: Runtime) -> None:
    for rc in await runtime.list_containers():
        with contextlib.suppress(Exception):
            await runtime.stop_container(rc.id, grace_seconds=0)
        with contextlib.suppress(Exception):
            await runtime.remove_container(rc.id)
    for sandbox in await runtime.list_sandboxes():
        with contextlib.suppress(Exception):
            await runtime.remove_sandbox(sandbox.id)


@pytest.fixture(params=["process", "docker"])
async def cluster(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Cluster]:
    require_native()  # the proxy's default data path, the one users get
    kind = request.param
    if kind == "docker":
        request.getfixturevalue("test_image")
        from gitkube.nodes.runtime.docker import DockerRuntime

        runtime: Runtime = await asyncio.to_thread(
            DockerRuntime.connect, node_name=NODE, pull_timeout=3.0
        )
    else:
        runtime = ProcessRuntime(node_name=NODE, state_dir=tmp_path / "node")
    await wipe(runtime)
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    objects = ObjectStore(store)
    agent = Agent(
        objects,
        runtime,
        node=NodeSettings(name=NODE, address="127.0.0.1", runtime_name=runtime.name),
        settings=AgentSettings(
            relist_seconds=0.1,
            pass_wait_seconds=0.2,
            default_grace_seconds=1.0,
            backoff=BackoffSettings(initial=0.4, cap=1.6),
            heartbeat_ttl=5,
        ),
    )
    proxy = ServiceProxy(objects, node_name=NODE, connect_timeout=2.0, relay="native")
    stop = asyncio.Event()
    loops = [
        agent.run,
        SchedulerLoop(objects).run,
        ReplicationManager(objects).run,
        EndpointsController(objects).run,
        proxy.run,
    ]
    tasks = [asyncio.create_task(run(stop)) for run in loops]
    port = free_port()
    try:
        await objects.create(
            Service(
                metadata=ObjectMeta(name="hello"),
                spec=ServiceSpec(
                    selector=dict(LABELS),
                    ports=[ServicePort(name="http", port=port, target_port="http")],
                ),
            )
        )
        yield Cluster(kind, objects, runtime, proxy, port)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 30)
        await wipe(runtime)
        await runtime.close()
        await store.close()


async def test_scale_up_brings_new_pods_into_rotation(cluster: Cluster) -> None:
    await cluster.objects.create(make_rc(cluster.kind, 1))
    await cluster.wait_endpoints(1)
    (only,) = await cluster.pods()
    assert {await fetch(cluster.port) for _ in range(3)} == {await identity(only)}

    await cluster.scale(3)
    await cluster.wait_endpoints(3)
    pods = await cluster.pods()
    assert len(pods) == 3
    expected = {await identity(p) for p in pods}
    assert {await fetch(cluster.port) for _ in range(9)} == expected


async def test_deleted_pod_leaves_rotation_without_failed_requests(cluster: Cluster) -> None:
    await cluster.objects.create(make_rc(cluster.kind, 3))
    await cluster.wait_endpoints(3)
    victim = (await cluster.pods())[0]
    victim_id = await identity(victim)
    victim_target = ("127.0.0.1", victim.status.host_ports["srv/8080/TCP"])

    failures_after_update: list[str] = []
    served: list[str] = []
    updated = asyncio.Event()
    done = asyncio.Event()

    async def traffic() -> None:
        # stopped by ``done``, not by cancelling: on Python 3.11 a cancel that
        # meets asyncio.wait_for finishing can be lost, and the loop ran on
        while not done.is_set():
            dropped = updated.is_set()
            try:
                served.append(await fetch(cluster.port))
            except (OSError, AssertionError, asyncio.IncompleteReadError) as exc:
                if dropped:
                    failures_after_update.append(repr(exc))
            await asyncio.sleep(0)

    client = asyncio.create_task(traffic())
    try:
        await asyncio.sleep(0.3)
        await cluster.objects.delete(victim)

        async def victim_gone() -> bool:
            return victim_target not in await cluster.ready_endpoints()

        await cluster.wait(victim_gone, what="the deleted pod to leave the endpoints")
        balancer = cluster.proxy.balancer("default", "hello", "http")
        assert balancer is not None

        async def proxy_followed() -> bool:
            return victim_target not in balancer.targets

        await cluster.wait(proxy_followed, timeout=5, what="the proxy to drop the pod")
        updated.set()
        mark = len(served)
        await cluster.wait_endpoints(3)  # the RC replaced it
        await asyncio.sleep(0.5)
    finally:
        done.set()
        try:
            await asyncio.wait_for(client, 15)
        except TimeoutError:
            client.cancel()
    assert failures_after_update == []
    assert len(served) > mark + 10
    assert victim_id not in served[mark:]
    assert len(set(served[mark:])) >= 2


async def test_unready_pod_leaves_rotation_and_returns(cluster: Cluster) -> None:
    await cluster.objects.create(make_rc(cluster.kind, 3))
    await cluster.wait_endpoints(3)
    pods = await cluster.pods()
    sick = pods[0]
    sick_id = await identity(sick)
    _, container_id = split_container_id(sick.status.container_statuses[0].container_id)
    ready_file = "ready" if cluster.kind == "process" else "/www/ready"

    assert await cluster.runtime.exec(container_id, ["rm", "-f", ready_file], timeout=5) == 0
    await cluster.wait_endpoints(2)
    answers = [await fetch(cluster.port) for _ in range(8)]
    assert sick_id not in answers
    assert len(set(answers)) == 2

    assert await cluster.runtime.exec(container_id, ["touch", ready_file], timeout=5) == 0
    await cluster.wait_endpoints(3)
    assert sick_id in {await fetch(cluster.port) for _ in range(9)}
