"""What only the Docker runtime does, on the real engine:

- kubelet's labels and the node's name on the sandbox and the containers
- the pod's containers join the sandbox's network namespace (localhost is shared)
- a single-container pod has no pause container: its container owns the
  network and the published ports (and a listing finds that sandbox again)
- at most ``start_parallelism`` starts are in flight
- the engine's event stream names the pods whose containers start and end
- command/args/env/workingDir and cpu/memory limits map to the container config
- a missing image is ErrImagePull, quickly, and nothing is left behind
- the sandbox image is built locally when absent
- a leftover container of the same name (an interrupted start) is replaced
- Docker timestamps
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import docker
import pytest

from gitkube.api.objects import (
    Container,
    ContainerPort,
    EnvVar,
    ObjectMeta,
    Pod,
    PodSpec,
    ResourceRequirements,
)
from gitkube.nodes.runtime.base import (
    LABEL_ATTEMPT,
    LABEL_CONTAINER_NAME,
    LABEL_NODE,
    LABEL_POD_NAME,
    LABEL_POD_NAMESPACE,
    LABEL_POD_UID,
    LABEL_SANDBOX,
    LABEL_SANDBOX_ID,
    ContainerStartError,
)
from gitkube.nodes.runtime.docker import DockerRuntime, container_name, parse_docker_time


@pytest.fixture
async def runtime(
    docker_client: docker.DockerClient, test_image: str
) -> AsyncIterator[DockerRuntime]:
    rt = DockerRuntime.connect(node_name=f"test-{uuid.uuid4().hex[:8]}", pull_timeout=3)
    try:
        yield rt
    finally:
        for c in await rt.list_containers():
            await rt.remove_container(c.id)
        for s in await rt.list_sandboxes():
            await rt.remove_sandbox(s.id)
        await rt.close()


def make_pod(*containers: Container, name: str = "web", namespace: str = "prod") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, uid=uuid.uuid4().hex),
        spec=PodSpec(containers=list(containers)),
    )


async def test_labels_on_sandbox_and_containers(
    runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    pod = make_pod(
        Container(name="main", image=test_image, command=["sleep", "30"]),
        Container(name="side", image=test_image, command=["sleep", "30"]),
    )
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    started = await runtime.start_container(pod, sandbox, pod.spec.containers[0], attempt=2)
    identity = {
        LABEL_POD_NAME: "web",
        LABEL_POD_NAMESPACE: "prod",
        LABEL_POD_UID: pod.metadata.uid,
        LABEL_NODE: runtime.node_name,
    }
    sandbox_labels = docker_client.api.inspect_container(sandbox.id)["Config"]["Labels"]
    assert sandbox_labels.items() >= (identity | {LABEL_SANDBOX: "true"}).items()
    info = docker_client.api.inspect_container(started.id)
    assert (
        info["Config"]["Labels"].items()
        >= (
            identity
            | {LABEL_CONTAINER_NAME: "main", LABEL_ATTEMPT: "2", LABEL_SANDBOX_ID: sandbox.id}
        ).items()
    )
    assert info["HostConfig"]["NetworkMode"] == f"container:{sandbox.id}"
    assert info["Name"] == "/" + container_name(pod, "main", 2)


async def test_a_single_container_pod_runs_without_a_pause_container(
    runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    container = Container(
        name="web",
        image=test_image,
        command=["httpd", "-f", "-p", "8000", "-h", "/www"],
        ports=[ContainerPort(container_port=8000)],
    )
    pod = make_pod(container)
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    assert not sandbox.shared and sandbox.id == f"self:{pod.metadata.uid}"
    started = await runtime.start_container(pod, sandbox, container, attempt=0)
    # the start fills in the address and the port the engine chose
    assert sandbox.ip and sandbox.host_ports.keys() == {"web/8000/TCP"}
    host_port = sandbox.host_ports["web/8000/TCP"]
    info = docker_client.api.inspect_container(started.id)
    assert info["HostConfig"]["NetworkMode"] in ("default", "bridge")
    assert info["Config"]["Hostname"] == "web"
    assert info["HostConfig"]["PortBindings"]["8000/tcp"][0]["HostIp"] == "127.0.0.1"
    assert info["Config"]["Labels"][LABEL_SANDBOX_ID] == sandbox.id
    # one container on the engine for the pod: no pause
    label = f"{LABEL_POD_UID}={pod.metadata.uid}"
    assert len(docker_client.api.containers(all=True, filters={"label": label})) == 1
    # the server answers on the published port (reached as the proxy reaches it)
    deadline = time.monotonic() + 10
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
            writer.write(b"GET /index.html HTTP/1.0\r\n\r\n")
            answer = await reader.read()
            writer.close()
            if b"gitkube test image" in answer:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "no answer on the published port"
        await asyncio.sleep(0.1)
    # a listing (an agent that restarts) finds the same sandbox again
    sandboxes, containers = await runtime.list_pods()
    (found,) = sandboxes
    assert (found.id, found.shared, found.running) == (sandbox.id, False, True)
    assert (found.ip, found.host_ports, found.bind_address) == (
        sandbox.ip,
        sandbox.host_ports,
        "127.0.0.1",
    )
    assert [(c.id, c.sandbox_id) for c in containers] == [(started.id, sandbox.id)]
    # an ended attempt leaves the sandbox in place (it is a name), without address
    await runtime.stop_container(started.id, grace_seconds=0)
    (found,) = await runtime.list_sandboxes()
    assert (found.running, found.ip, found.host_ports) == (True, "", {})
    # removing the sandbox removes the pod's containers
    await runtime.remove_sandbox(sandbox.id)
    assert await runtime.list_pods() == ([], [])


async def test_a_pause_container_for_every_pod_when_asked(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    rt = DockerRuntime.connect(node_name=f"test-{uuid.uuid4().hex[:8]}", sandboxless=False)
    try:
        pod = make_pod(Container(name="main", image=test_image, command=["sleep", "30"]))
        sandbox = await rt.start_sandbox(pod, node_address="127.0.0.1")
        assert sandbox.shared
        labels = docker_client.api.inspect_container(sandbox.id)["Config"]["Labels"]
        assert labels[LABEL_SANDBOX] == "true"
    finally:
        for s in await rt.list_sandboxes():
            await rt.remove_sandbox(s.id)
        await rt.close()


async def test_starts_in_flight_are_bounded(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    rt = DockerRuntime.connect(node_name=f"test-{uuid.uuid4().hex[:8]}", start_parallelism=2)
    in_flight = peak = 0
    real = rt._call

    async def counting(fn: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        if getattr(fn, "__name__", "") != "create_and_start":
            return await real(fn, *args, **kwargs)
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await real(fn, *args, **kwargs)
        finally:
            in_flight -= 1

    rt._call = counting  # type: ignore[method-assign]
    try:
        pods = [
            make_pod(Container(name="c", image=test_image, command=["sleep", "30"]), name=f"p{i}")
            for i in range(6)
        ]

        async def start(pod: Pod) -> None:
            sandbox = await rt.start_sandbox(pod, node_address="127.0.0.1")
            await rt.start_container(pod, sandbox, pod.spec.containers[0], attempt=0)

        await asyncio.gather(*(start(p) for p in pods))
        assert peak == 2
        assert len(await rt.list_containers()) == 6
    finally:
        for c in await rt.list_containers():
            await rt.remove_container(c.id)
        await rt.close()


async def test_the_event_stream_names_pods_whose_containers_change(
    runtime: DockerRuntime, test_image: str
) -> None:
    """Exits and removals are reported, and starts by anyone else; the start
    of a container this runtime started is not (start_container reports it)."""
    stream = runtime.events()
    assert stream is not None
    assert await anext(stream) == ""  # open: from here on, changes are reported
    outside = ""
    try:
        own = make_pod(Container(name="own", image=test_image, command=["sleep", "3600"]))
        sandbox = await runtime.start_sandbox(own, node_address="127.0.0.1")
        started = await runtime.start_container(own, sandbox, own.spec.containers[0], attempt=0)
        # a container of this node that something else starts, after it: the
        # stream's next pod is this one, so the own start went unreported
        other = make_pod(Container(name="other", image=test_image, command=["true"]))

        def start_outside() -> str:
            cid = runtime.api.create_container(
                test_image, command=["sleep", "3600"], labels=runtime._labels(other)
            )["Id"]
            runtime.api.start(cid)
            return str(cid)

        outside = await asyncio.to_thread(start_outside)
        assert await asyncio.wait_for(anext(stream), 10) == other.metadata.uid
        # its own container's exit and removal are reported
        await runtime.stop_container(started.id, grace_seconds=0)
        assert await asyncio.wait_for(anext(stream), 10) == own.metadata.uid
        await runtime.remove_container(started.id)
        assert await asyncio.wait_for(anext(stream), 10) == own.metadata.uid
    finally:
        await stream.aclose()
        if outside:
            await asyncio.to_thread(runtime.api.remove_container, outside, force=True)


async def test_containers_of_a_pod_share_the_sandbox_network(
    runtime: DockerRuntime, test_image: str
) -> None:
    server = Container(
        name="server",
        image=test_image,
        command=["httpd", "-f", "-p", "127.0.0.1:8080", "-h", "/www"],
    )
    client = Container(
        name="client",
        image=test_image,
        command=[
            "sh",
            "-c",
            "for i in 1 2 3 4 5 6 7 8 9 10; do "
            "wget -q -O - http://127.0.0.1:8080/index.html && exit 0; sleep 0.2; done; exit 1",
        ],
    )
    pod = make_pod(server, client)
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    assert sandbox.ip  # the pod's own address on the bridge
    await runtime.start_container(pod, sandbox, server, attempt=0)
    fetched = await runtime.start_container(pod, sandbox, client, attempt=0)
    deadline = time.monotonic() + 10
    while True:
        (state,) = [c for c in await runtime.list_containers() if c.id == fetched.id]
        if state.state == "exited" or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.1)
    assert state.exit_code == 0
    output = b"".join([chunk async for chunk in runtime.logs(fetched.id)])
    assert output == b"gitkube test image\n"


async def test_spec_maps_to_the_container_config(
    runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    container = Container(
        name="mapped",
        image=test_image,
        command=["sh", "-c"],
        args=["echo $(WHO); sleep 30"],
        env=[EnvVar("WHO", "world")],
        working_dir="/tmp",
        resources=ResourceRequirements(
            limits={"cpu": "500m", "memory": "64Mi"}, requests={"cpu": "250m"}
        ),
        ports=[ContainerPort(container_port=8080)],
    )
    pod = make_pod(container)
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    started = await runtime.start_container(pod, sandbox, container, attempt=0)
    assert not sandbox.shared  # the container publishes the port itself
    info = docker_client.api.inspect_container(started.id)
    assert info["Config"]["Entrypoint"] == ["sh", "-c"]
    assert info["Config"]["Cmd"] == ["echo world; sleep 30"]
    assert "WHO=world" in info["Config"]["Env"]
    assert "PORT=8080" in info["Config"]["Env"]
    assert info["Config"]["WorkingDir"] == "/tmp"
    assert info["HostConfig"]["NanoCpus"] == 500_000_000
    assert info["HostConfig"]["Memory"] == 64 * 2**20
    assert info["HostConfig"]["CpuShares"] == 256
    assert info["HostConfig"]["PortBindings"]["8080/tcp"][0]["HostIp"] == "127.0.0.1"


async def test_missing_image_is_err_image_pull_quickly(runtime: DockerRuntime) -> None:
    pod = make_pod(Container(name="x", image="gitkube-test/does-not-exist:1", command=["true"]))
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    began = time.monotonic()
    with pytest.raises(ContainerStartError) as caught:
        await runtime.start_container(pod, sandbox, pod.spec.containers[0], attempt=0)
    assert time.monotonic() - began < runtime.pull_timeout + 2
    assert caught.value.reason == "ErrImagePull"
    assert "gitkube-test/does-not-exist:1" in caught.value.message
    assert await runtime.list_containers() == []


async def test_sandbox_image_is_built_when_absent(
    docker_client: docker.DockerClient, test_image: str
) -> None:
    image = f"gitkube-test/pause-{uuid.uuid4().hex[:8]}:latest"
    rt = DockerRuntime.connect(node_name=f"test-{uuid.uuid4().hex[:8]}")
    rt.sandbox_image = image  # built like the default, under a throwaway name
    try:
        pod = make_pod(
            Container(name="c", image=test_image, command=["true"]),
            Container(name="d", image=test_image, command=["true"]),
        )
        sandbox = await rt.start_sandbox(pod, node_address="127.0.0.1")
        assert docker_client.images.get(image)
        began = time.monotonic()
        await rt.remove_sandbox(sandbox.id)  # the pause exits on SIGTERM
        assert time.monotonic() - began < 5
    finally:
        for s in await rt.list_sandboxes():
            await rt.remove_sandbox(s.id)
        await rt.close()
        docker_client.images.remove(image, force=True)


async def test_a_leftover_of_the_same_name_is_replaced(
    runtime: DockerRuntime, docker_client: docker.DockerClient, test_image: str
) -> None:
    container = Container(name="again", image=test_image, command=["sleep", "30"])
    pod = make_pod(container)
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    first = await runtime.start_container(pod, sandbox, container, attempt=0)
    second = await runtime.start_container(pod, sandbox, container, attempt=0)
    assert first.id != second.id
    assert [c.id for c in await runtime.list_containers()] == [second.id]


def test_docker_times() -> None:
    assert parse_docker_time("0001-01-01T00:00:00Z") is None
    assert parse_docker_time("") is None
    assert parse_docker_time("2024-01-02T03:04:05.123456789Z") == pytest.approx(1704164645.123456)
    assert parse_docker_time("2024-01-02T04:04:05+01:00") == pytest.approx(1704164645)
