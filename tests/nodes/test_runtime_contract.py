"""The Runtime contract, run against both runtimes: DockerRuntime on the real
engine with the local busybox image, ProcessRuntime with the host's /bin/sh.

- start: sandbox and container are listed with the pod's identity and attempt
- exit codes: zero and non-zero, reason and times; a command that cannot start
- stop: graceful on SIGTERM; SIGKILL after the grace period
- ports: a server in the container answers on 127.0.0.1:<host port>, allocated or hostPort
- env and workingDir, $(VAR) expansion, PORT variables
- logs: all, tail, follow until the container ends
- exec: exit code, the container's env and cwd, timeout
- adoption: an agent killed mid-flight; a new runtime instance lists the same
  ids and adds nothing
- cleanup: remove_container, remove_sandbox takes the pod's containers with it
- volumes: files written by the agent's atomic writer are read at the mount
  path; an update (the ..data swap) is seen by a running container; read-only
  mounts refuse writes; two pods mounting different files at one path each
  see their own (process runtime: private mount namespaces, nothing on the
  host's path); exec runs where the mounts are
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gitkube.api.objects import (
    Container,
    ContainerPort,
    EnvVar,
    ObjectMeta,
    Pod,
    PodSpec,
)
from gitkube.errors import RuntimeErrorBase
from gitkube.nodes.podconfig import VolumeFile
from gitkube.nodes.runtime import ProcessRuntime, make_runtime
from gitkube.nodes.runtime.base import (
    ContainerStartError,
    Mount,
    Runtime,
    RuntimeContainer,
    Sandbox,
    port_key,
)

ROOT = Path(__file__).resolve().parents[2]
INDEX = "gitkube test image\n"


@dataclass
class Flavor:
    """What differs between the runtimes: the image and how to serve HTTP."""

    kind: str
    runtime: Runtime
    image: str
    state_dir: Path
    www: str
    created: list[tuple[str, str]] = field(default_factory=list)

    def http_server(self) -> list[str]:
        if self.kind == "docker":
            return ["httpd", "-f", "-p", "$(PORT)", "-h", self.www]
        return [
            sys.executable,
            "-m",
            "http.server",
            "$(PORT)",
            "--bind",
            "127.0.0.1",
            "--directory",
            self.www,
        ]

    def new_runtime(self) -> Awaitable[Runtime]:
        return make_runtime(self.kind, node_name=self.runtime.node_name, state_dir=self.state_dir)


async def _cleanup(runtime: Runtime) -> None:
    for container in await runtime.list_containers():
        await runtime.remove_container(container.id)
    for sandbox in await runtime.list_sandboxes():
        await runtime.remove_sandbox(sandbox.id)


@pytest.fixture(params=["docker", "process"])
async def flavor(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Flavor]:
    node = f"test-{uuid.uuid4().hex[:8]}"
    state_dir = tmp_path / "node"
    if request.param == "docker":
        image = request.getfixturevalue("test_image")
        runtime = await make_runtime("docker", node_name=node, state_dir=state_dir)
        www = "/www"
    else:
        image = "recorded-not-used:1"
        runtime = await make_runtime("process", node_name=node, state_dir=state_dir)
        www_dir = tmp_path / "www"
        www_dir.mkdir()
        (www_dir / "index.html").write_text(INDEX)
        www = str(www_dir)
    flavor = Flavor(request.param, runtime, image, state_dir, www)
    try:
        yield flavor
    finally:
        await _cleanup(runtime)
        left = [c.id for c in await runtime.list_containers()]
        left += [s.id for s in await runtime.list_sandboxes()]
        await runtime.close()
        assert not left, f"left behind: {left}"


def make_pod(*containers: Container, name: str = "web") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default", uid=uuid.uuid4().hex),
        spec=PodSpec(containers=list(containers)),
    )


def sh(flavor: Flavor, name: str, script: str, **kwargs: Any) -> Container:
    return Container(name=name, image=flavor.image, command=["sh", "-c", script], **kwargs)


async def start_pod(
    flavor: Flavor, *containers: Container, name: str = "web"
) -> tuple[Pod, Sandbox, list[RuntimeContainer]]:
    pod = make_pod(*containers, name=name)
    sandbox = await flavor.runtime.start_sandbox(pod, node_address="127.0.0.1")
    started = [await flavor.runtime.start_container(pod, sandbox, c, attempt=0) for c in containers]
    return pod, sandbox, started


async def find(runtime: Runtime, container_id: str) -> RuntimeContainer:
    for container in await runtime.list_containers():
        if container.id == container_id:
            return container
    raise AssertionError(f"container {container_id} is not listed")


async def wait_until(
    check: Callable[[], Awaitable[bool]], *, timeout: float = 10.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def wait_exited(
    runtime: Runtime, container_id: str, timeout: float = 10.0
) -> RuntimeContainer:
    async def exited() -> bool:
        return (await find(runtime, container_id)).state == "exited"

    await wait_until(exited, timeout=timeout, what=f"container {container_id[:12]} to exit")
    return await find(runtime, container_id)


async def read_logs(runtime: Runtime, container_id: str, **kwargs: Any) -> str:
    chunks = [chunk async for chunk in runtime.logs(container_id, **kwargs)]
    return b"".join(chunks).decode()


def http_get(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=2) as response:
        return str(response.read().decode())


async def wait_http(port: int, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await asyncio.to_thread(http_get, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ---------------------------------------------------------------- start and list


async def test_started_container_is_listed_with_its_pod(flavor: Flavor) -> None:
    pod, sandbox, (started,) = await start_pod(flavor, sh(flavor, "main", "exec sleep 30"))
    assert started.state == "running"
    assert started.started_at is not None
    listed = await find(flavor.runtime, started.id)
    assert listed.state == "running"
    assert (listed.pod_uid, listed.pod_namespace, listed.pod_name) == (
        pod.metadata.uid,
        "default",
        "web",
    )
    assert (listed.name, listed.attempt, listed.image) == ("main", 0, flavor.image)
    assert listed.sandbox_id == sandbox.id
    sandboxes = await flavor.runtime.list_sandboxes()
    assert [(s.id, s.pod_uid, s.pod_name, s.running) for s in sandboxes] == [
        (sandbox.id, pod.metadata.uid, "web", True)
    ]


async def test_attempts_of_one_container_are_listed_apart(flavor: Flavor) -> None:
    container = sh(flavor, "once", "exit 0")
    pod, sandbox, (first,) = await start_pod(flavor, container)
    await wait_exited(flavor.runtime, first.id)
    second = await flavor.runtime.start_container(pod, sandbox, container, attempt=1)
    await wait_exited(flavor.runtime, second.id)
    listed = sorted(
        (c.attempt, c.id) for c in await flavor.runtime.list_containers() if c.name == "once"
    )
    assert listed == [(0, first.id), (1, second.id)]


# ---------------------------------------------------------------- exit codes


async def test_exit_codes_and_reasons(flavor: Flavor) -> None:
    _, _, (ok, failed) = await start_pod(
        flavor, sh(flavor, "ok", "exit 0"), sh(flavor, "failed", "echo oops; exit 3")
    )
    done = await wait_exited(flavor.runtime, ok.id)
    assert (done.exit_code, done.reason) == (0, "Completed")
    broken = await wait_exited(flavor.runtime, failed.id)
    assert (broken.exit_code, broken.reason) == (3, "Error")
    assert broken.started_at is not None and broken.finished_at is not None
    assert broken.finished_at >= broken.started_at - 1
    assert "oops" in await read_logs(flavor.runtime, failed.id)


async def test_a_command_that_cannot_run_is_a_start_error(flavor: Flavor) -> None:
    pod = make_pod(Container(name="x", image=flavor.image, command=["/no/such/command"]))
    sandbox = await flavor.runtime.start_sandbox(pod, node_address="127.0.0.1")
    with pytest.raises(ContainerStartError) as caught:
        await flavor.runtime.start_container(pod, sandbox, pod.spec.containers[0], attempt=0)
    assert caught.value.reason == "RunContainerError"
    assert "/no/such/command" in caught.value.message
    # the failed attempt is listed as one that ended (the agent backs off its
    # retry as a crash), never as one still to start
    (kept,) = [
        rc for rc in await flavor.runtime.list_containers() if rc.pod_uid == pod.metadata.uid
    ]
    assert kept.state == "exited"
    assert kept.attempt == 0
    assert kept.exit_code not in (None, 0)
    assert kept.finished_at is not None and abs(kept.finished_at - time.time()) < 60
    assert "/no/such/command" in kept.message


# ---------------------------------------------------------------- stop


async def test_stop_is_graceful_when_the_process_exits_on_sigterm(flavor: Flavor) -> None:
    script = "trap 'echo bye; exit 0' TERM; echo ready; while :; do sleep 0.1; done"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "polite", script))

    async def ready() -> bool:
        return "ready" in await read_logs(flavor.runtime, started.id)

    await wait_until(ready, what="the trap to be set")
    began = time.monotonic()
    await flavor.runtime.stop_container(started.id, grace_seconds=10)
    assert time.monotonic() - began < 5
    stopped = await find(flavor.runtime, started.id)
    assert (stopped.state, stopped.exit_code) == ("exited", 0)
    assert "bye" in await read_logs(flavor.runtime, started.id)


async def test_stop_kills_after_the_grace_period(flavor: Flavor) -> None:
    script = "trap '' TERM; echo ready; while :; do sleep 0.1; done"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "stubborn", script))

    async def ready() -> bool:
        return "ready" in await read_logs(flavor.runtime, started.id)

    await wait_until(ready, what="the trap to be set")
    began = time.monotonic()
    await flavor.runtime.stop_container(started.id, grace_seconds=1)
    took = time.monotonic() - began
    assert 0.9 <= took < 6
    stopped = await find(flavor.runtime, started.id)
    assert (stopped.state, stopped.exit_code) == ("exited", 137)


async def test_stopping_an_exited_container_is_harmless(flavor: Flavor) -> None:
    _, _, (started,) = await start_pod(flavor, sh(flavor, "done", "exit 5"))
    await wait_exited(flavor.runtime, started.id)
    await flavor.runtime.stop_container(started.id, grace_seconds=1)
    assert (await find(flavor.runtime, started.id)).exit_code == 5


# ---------------------------------------------------------------- ports


async def test_container_port_is_published_on_an_allocated_host_port(flavor: Flavor) -> None:
    server = Container(
        name="http",
        image=flavor.image,
        command=flavor.http_server(),
        ports=[ContainerPort(container_port=8080, name="web")],
    )
    _, sandbox, _ = await start_pod(flavor, server)
    host_port = sandbox.host_ports[port_key("http", 8080)]
    assert host_port > 0
    assert await wait_http(host_port) == INDEX
    (listed,) = await flavor.runtime.list_sandboxes()
    assert listed.host_ports == sandbox.host_ports


async def test_host_port_is_used_when_given(flavor: Flavor) -> None:
    wanted = free_port()
    server = Container(
        name="http",
        image=flavor.image,
        command=flavor.http_server(),
        ports=[ContainerPort(container_port=8080, host_port=wanted)],
    )
    _, sandbox, _ = await start_pod(flavor, server)
    assert sandbox.host_ports == {port_key("http", 8080): wanted}
    assert await wait_http(wanted) == INDEX


# ---------------------------------------------------------------- env, workingDir


async def test_env_working_dir_and_variable_expansion(flavor: Flavor) -> None:
    container = Container(
        name="env",
        image=flavor.image,
        command=["sh", "-c"],
        args=[
            'echo "greeting=$GREETING full=$FULL arg=$(GREETING) port=$PORT"'
            " 'lit=$$(GREETING)'; pwd"
        ],
        env=[EnvVar("GREETING", "hello"), EnvVar("FULL", "$(GREETING)-world")],
        working_dir="/tmp",
        ports=[ContainerPort(container_port=9000, name="metrics")],
    )
    _, sandbox, (started,) = await start_pod(flavor, container)
    await wait_exited(flavor.runtime, started.id)
    lines = (await read_logs(flavor.runtime, started.id)).splitlines()
    port = 9000 if flavor.kind == "docker" else sandbox.host_ports[port_key("env", 9000)]
    assert lines == [
        f"greeting=hello full=hello-world arg=hello port={port} lit=$(GREETING)",
        "/tmp",
    ]


async def test_named_ports_are_handed_over_as_port_variables(flavor: Flavor) -> None:
    container = sh(
        flavor,
        "ports",
        'echo "$PORT $PORT_HTTP_ALT $PORT_ADMIN"',
        ports=[
            ContainerPort(container_port=8080, name="http-alt"),
            ContainerPort(container_port=8081, name="admin"),
        ],
    )
    _, sandbox, (started,) = await start_pod(flavor, container)
    await wait_exited(flavor.runtime, started.id)
    if flavor.kind == "docker":
        expected = "8080 8080 8081"
    else:
        first = sandbox.host_ports[port_key("ports", 8080)]
        second = sandbox.host_ports[port_key("ports", 8081)]
        assert first != second
        expected = f"{first} {first} {second}"
    assert (await read_logs(flavor.runtime, started.id)).strip() == expected


# ---------------------------------------------------------------- logs


async def test_logs_all_and_tail(flavor: Flavor) -> None:
    script = "for i in 1 2 3 4 5; do echo line$i; done"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "talk", script))
    await wait_exited(flavor.runtime, started.id)
    assert await read_logs(flavor.runtime, started.id) == "".join(f"line{i}\n" for i in range(1, 6))
    assert await read_logs(flavor.runtime, started.id, tail=2) == "line4\nline5\n"
    assert await read_logs(flavor.runtime, started.id, tail=0) == ""


async def test_tail_of_a_log_being_written_is_that_many_lines(flavor: Flavor) -> None:
    """The last N lines as they were when asked (kubectl logs --tail), not
    with lines that arrive while they are read. (The last one may be a line
    still being written: the output reaches the log in chunks.)"""
    script = "i=0; while true; do i=$((i+1)); echo tick $i; done"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "busy", script))
    for _ in range(30):
        text = await read_logs(flavor.runtime, started.id, tail=2)
        lines = text.splitlines()
        assert len(lines) == 2 and lines[0].startswith("tick "), text
        assert "tick ".startswith(lines[1][:5]), text


async def test_logs_follow_until_the_container_ends(flavor: Flavor) -> None:
    script = "echo early; sleep 1; echo late; sleep 0.3"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "slow", script))
    seen: list[str] = []

    async def follow() -> None:
        async for chunk in flavor.runtime.logs(started.id, follow=True):
            seen.append(chunk.decode())

    await asyncio.wait_for(follow(), timeout=10)
    assert "".join(seen) == "early\nlate\n"


async def test_logs_with_timestamps(flavor: Flavor) -> None:
    """Each line starts with the RFC 3339 time it was written (kubectl logs
    --timestamps), in order; tail counts lines as without timestamps."""
    script = "echo early; sleep 1.2; echo late; echo later"
    _, _, (started,) = await start_pod(flavor, sh(flavor, "stamped", script))
    await wait_exited(flavor.runtime, started.id)
    chunks = [c async for c in flavor.runtime.logs(started.id, timestamps=True)]
    lines = b"".join(chunks).decode().splitlines()
    assert [line.split(" ", 1)[1] for line in lines] == ["early", "late", "later"]
    moments = [
        datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00")) for line in lines
    ]
    assert moments == sorted(moments)
    assert (moments[1] - moments[0]).total_seconds() >= 1.0  # the sleep shows
    assert abs((datetime.now(UTC) - moments[-1]).total_seconds()) < 60
    tail = [c async for c in flavor.runtime.logs(started.id, timestamps=True, tail=1)]
    assert b"".join(tail).decode().split(" ", 1)[1] == "later\n"


async def test_a_follow_can_be_abandoned(flavor: Flavor) -> None:
    _, _, (started,) = await start_pod(
        flavor, sh(flavor, "forever", "while :; do echo tick; sleep 0.1; done")
    )
    stream = flavor.runtime.logs(started.id, follow=True, tail=1)
    first = await asyncio.wait_for(anext(stream), timeout=10)
    assert first.startswith(b"tick")
    await stream.aclose()  # type: ignore[attr-defined]


# ---------------------------------------------------------------- exec


async def test_exec_returns_the_exit_code_in_the_container_context(flavor: Flavor) -> None:
    _, _, (started,) = await start_pod(
        flavor,
        sh(flavor, "main", "exec sleep 30", env=[EnvVar("MODE", "on")], working_dir="/tmp"),
    )
    runtime = flavor.runtime
    assert await runtime.exec(started.id, ["sh", "-c", "exit 4"], timeout=5) == 4
    assert await runtime.exec(started.id, ["sh", "-c", 'test "$MODE" = on'], timeout=5) == 0
    assert await runtime.exec(started.id, ["sh", "-c", 'test "$(pwd)" = /tmp'], timeout=5) == 0
    began = time.monotonic()
    with pytest.raises(TimeoutError):
        await runtime.exec(started.id, ["sleep", "10"], timeout=0.5)
    assert time.monotonic() - began < 4


async def test_exec_in_an_exited_container_fails(flavor: Flavor) -> None:
    _, _, (started,) = await start_pod(flavor, sh(flavor, "gone", "exit 0"))
    await wait_exited(flavor.runtime, started.id)
    with pytest.raises(RuntimeErrorBase):
        await flavor.runtime.exec(started.id, ["true"], timeout=2)


# ---------------------------------------------------------------- adoption

AGENT = """
import asyncio, json, sys
from pathlib import Path
from gitkube.api.objects import Pod
from gitkube.nodes.runtime import make_runtime

async def main():
    kind, node, state_dir, pod_json = sys.argv[1:5]
    runtime = await make_runtime(kind, node_name=node, state_dir=Path(state_dir))
    pod = Pod.from_dict(json.loads(pod_json))
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    ids = [(await runtime.start_container(pod, sandbox, c, attempt=0)).id
           for c in pod.spec.containers]
    print(json.dumps({"sandbox": sandbox.id, "containers": ids, "ports": sandbox.host_ports}),
          flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.mark.slow
async def test_a_new_agent_adopts_what_a_killed_agent_started(flavor: Flavor) -> None:
    pod = make_pod(
        Container(
            name="http",
            image=flavor.image,
            command=flavor.http_server(),
            ports=[ContainerPort(container_port=8080)],
        ),
        sh(flavor, "side", "exec sleep 60"),
        sh(flavor, "brief", "exit 7"),
        name="adopted",
    )
    agent = subprocess.Popen(
        [
            sys.executable,
            "-c",
            AGENT,
            flavor.kind,
            flavor.runtime.node_name,
            str(flavor.state_dir),
            json.dumps(pod.to_dict()),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert agent.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(agent.stdout.readline), timeout=30)
        started = json.loads(line)
    finally:
        agent.send_signal(signal.SIGKILL)
        agent.wait()
        if agent.stdout is not None:
            agent.stdout.close()
    port = started["ports"][port_key("http", 8080)]
    assert await wait_http(port) == INDEX

    adopter = await flavor.new_runtime()
    try:
        brief = started["containers"][2]
        await wait_exited(adopter, brief)
        before = await adopter.list_containers()
        assert sorted(c.id for c in before) == sorted(started["containers"])
        states = {c.name: (c.state, c.exit_code) for c in before}
        assert states == {
            "http": ("running", None),
            "side": ("running", None),
            "brief": ("exited", 7),
        }
        assert [(s.id, s.host_ports) for s in await adopter.list_sandboxes()] == [
            (started["sandbox"], started["ports"])
        ]
        assert await wait_http(port) == INDEX
        # listing again changes nothing, and the old instance sees the same
        assert sorted(c.id for c in await adopter.list_containers()) == sorted(
            started["containers"]
        )
        assert sorted(c.id for c in await flavor.runtime.list_containers()) == sorted(
            started["containers"]
        )
    finally:
        await adopter.close()


# ---------------------------------------------------------------- cleanup


async def test_remove_container_and_sandbox(flavor: Flavor) -> None:
    _, sandbox, (one, two) = await start_pod(
        flavor, sh(flavor, "one", "exec sleep 30"), sh(flavor, "two", "exec sleep 30")
    )
    await flavor.runtime.remove_container(one.id)
    assert [c.id for c in await flavor.runtime.list_containers()] == [two.id]
    await flavor.runtime.remove_container(one.id)  # twice is harmless
    await flavor.runtime.remove_sandbox(sandbox.id)
    assert await flavor.runtime.list_containers() == []
    assert await flavor.runtime.list_sandboxes() == []


# ---------------------------------------------------------------- volumes


def _volume(flavor: Flavor, uid: str, name: str, files: dict[str, bytes]) -> Path:
    from gitkube.nodes.volumes import volume_dir, write_volume

    target = volume_dir(flavor.runtime.pods_dir, uid, name)
    write_volume(target, tuple(VolumeFile(k, v, 0o644) for k, v in files.items()))
    return target


async def test_mounted_volume_files_are_read_and_updates_are_seen(
    flavor: Flavor, tmp_path: Path
) -> None:
    mount_path = str(tmp_path / "mnt" / "config")
    pod = make_pod(name="vol")
    source = _volume(flavor, pod.metadata.uid, "config", {"greeting": b"hello-1"})
    container = sh(
        flavor,
        "reader",
        f'while true; do echo "got=$(cat {mount_path}/greeting)"; sleep 0.1; done',
    )
    pod.spec.containers = [container]
    sandbox = await flavor.runtime.start_sandbox(pod, node_address="127.0.0.1")
    started = await flavor.runtime.start_container(
        pod, sandbox, container, attempt=0, mounts=[Mount(str(source), mount_path, True)]
    )

    async def logs_show(text: str) -> bool:
        return text in await read_logs(flavor.runtime, started.id)

    await wait_until(lambda: logs_show("got=hello-1"), what="the mounted file")
    _volume(flavor, pod.metadata.uid, "config", {"greeting": b"hello-2"})
    await wait_until(lambda: logs_show("got=hello-2"), what="the updated file")
    # read-only: the container cannot write into it; exec sees the files too
    code = await flavor.runtime.exec(
        started.id, ["sh", "-c", f"echo x > {mount_path}/new"], timeout=5
    )
    assert code != 0
    assert (
        await flavor.runtime.exec(
            started.id, ["sh", "-c", f"grep -q hello-2 {mount_path}/greeting"], timeout=5
        )
        == 0
    )


async def test_two_pods_mount_different_files_at_one_path(flavor: Flavor, tmp_path: Path) -> None:
    mount_path = str(tmp_path / "shared-path")
    outputs = []
    for value in (b"first", b"second"):
        pod = make_pod(name=f"vol-{value.decode()}")
        source = _volume(flavor, pod.metadata.uid, "data", {"value": value})
        container = sh(flavor, "reader", f"cat {mount_path}/value")
        pod.spec.containers = [container]
        sandbox = await flavor.runtime.start_sandbox(pod, node_address="127.0.0.1")
        started = await flavor.runtime.start_container(
            pod, sandbox, container, attempt=0, mounts=[Mount(str(source), mount_path, False)]
        )
        ended = await wait_exited(flavor.runtime, started.id)
        assert ended.exit_code == 0
        outputs.append(await read_logs(flavor.runtime, started.id))
    assert outputs == ["first", "second"]
    if flavor.kind == "process":
        # the host's path is a mount point inside the containers only
        assert not (Path(mount_path) / "value").exists()


async def test_process_runtime_refuses_mounts_without_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    runtime = ProcessRuntime(node_name="noroot", state_dir=tmp_path / "node")
    pod = make_pod(Container(name="c", command=["true"]))
    sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(ContainerStartError) as caught:
        await runtime.start_container(
            pod, sandbox, pod.spec.containers[0], attempt=0, mounts=[Mount("/tmp", "/mnt/x")]
        )
    assert caught.value.reason == "CreateContainerError"
    assert "root" in caught.value.message and "/mnt/x" in caught.value.message
    monkeypatch.undo()
    await runtime.remove_sandbox(sandbox.id)


# ---------------------------------------------------------------- factory


async def test_unknown_runtime_kind_is_a_config_error(tmp_path: Path) -> None:
    from gitkube.errors import ConfigError

    with pytest.raises(ConfigError, match="expected one of"):
        await make_runtime("rkt", node_name="n", state_dir=tmp_path)


async def test_process_runtime_by_name(tmp_path: Path) -> None:
    runtime = await make_runtime("process", node_name="n", state_dir=tmp_path)
    assert isinstance(runtime, ProcessRuntime)
    assert runtime.name == "process"
    assert isinstance(runtime, Runtime)


async def test_auto_picks_docker_when_an_engine_answers(tmp_path: Path, docker_client: Any) -> None:
    runtime = await make_runtime("auto", node_name="n", state_dir=tmp_path)
    try:
        assert runtime.name == "docker"
        assert isinstance(runtime, Runtime)
    finally:
        await runtime.close()


def test_docker_available_is_false_for_a_dead_socket(tmp_path: Path) -> None:
    from gitkube.nodes.runtime import docker_available

    assert docker_available(base_url=f"unix://{tmp_path}/none.sock", timeout=1) is False


async def test_run_as_is_for_the_process_runtime_only(tmp_path: Path, docker_client: Any) -> None:
    from gitkube.errors import ConfigError

    with pytest.raises(ConfigError, match="process runtime only"):
        await make_runtime("docker", node_name="n", state_dir=tmp_path, run_as="nobody")
    runtime = await make_runtime("auto", node_name="n", state_dir=tmp_path, run_as="nobody")
    await runtime.close()
