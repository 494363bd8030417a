"""What only the process runtime does:

- each container is a process group under a detached supervisor that
  outlives the runtime; the exit code of a container that ended while no
  runtime watched is known afterwards
- a supervisor that died without a record: the group is killed, the
  container reported as ContainerStatusUnknown (137), nothing orphaned
- a container whose state is deleted is ended by its supervisor
- a container's children die with it (the whole group is stopped)
- hostPort already in use is an error; allocated ports differ between pods
- run_as: the process runs as that user (root only)
- a workingDir that does not exist is a CreateContainerError
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import psutil
import pytest

from gitkube.api.objects import Container, ContainerPort, ObjectMeta, Pod, PodSpec
from gitkube.errors import ConfigError, RuntimeErrorBase
from gitkube.nodes.runtime import ProcessRuntime
from gitkube.nodes.runtime.base import ContainerStartError, RuntimeContainer, port_key


@pytest.fixture
async def runtime(tmp_path: Path) -> AsyncIterator[ProcessRuntime]:
    rt = ProcessRuntime(node_name="n1", state_dir=tmp_path / "node", poll_interval=0.02)
    try:
        yield rt
    finally:
        for c in await rt.list_containers():
            await rt.remove_container(c.id)
        for s in await rt.list_sandboxes():
            await rt.remove_sandbox(s.id)


def make_pod(*containers: Container, name: str = "p") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, uid=uuid.uuid4().hex),
        spec=PodSpec(containers=list(containers)),
    )


def sh(name: str, script: str, **kwargs: object) -> Container:
    return Container(name=name, image="img", command=["sh", "-c", script], **kwargs)  # type: ignore[arg-type]


async def run(rt: ProcessRuntime, *containers: Container) -> list[RuntimeContainer]:
    pod = make_pod(*containers)
    sandbox = await rt.start_sandbox(pod, node_address="127.0.0.1")
    return [await rt.start_container(pod, sandbox, c, attempt=0) for c in containers]


def read_state(rt: ProcessRuntime, container_id: str, name: str) -> dict[str, object]:
    data = json.loads((rt.state_dir / "containers" / container_id / name).read_text())
    assert isinstance(data, dict)
    return data


async def wait_gone(pid: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} is still alive")
        await asyncio.sleep(0.02)


async def test_the_supervisor_records_an_exit_nobody_watched(
    runtime: ProcessRuntime, tmp_path: Path
) -> None:
    (started,) = await run(runtime, sh("c", "sleep 0.3; exit 9"))
    record = runtime.state_dir / "containers" / started.id / "exit.json"
    deadline = time.monotonic() + 10
    while not record.exists():  # no runtime call while it ends
        assert time.monotonic() < deadline, "the supervisor recorded no exit"
        await asyncio.sleep(0.05)
    fresh = ProcessRuntime(node_name="n1", state_dir=tmp_path / "node")
    (listed,) = await fresh.list_containers()
    assert (listed.id, listed.state, listed.exit_code, listed.reason) == (
        started.id,
        "exited",
        9,
        "Error",
    )


async def test_a_lost_supervisor_is_settled_without_orphans(runtime: ProcessRuntime) -> None:
    (started,) = await run(runtime, sh("c", "sleep 60 & sleep 60; wait"))
    supervisor = int(read_state(runtime, started.id, "shim.json")["pid"])  # type: ignore[call-overload]
    child = int(read_state(runtime, started.id, "state.json")["pid"])  # type: ignore[call-overload]
    group = await wait_group(child, 3)  # sh and its two sleeps
    os.kill(supervisor, signal.SIGKILL)
    await wait_gone(supervisor)
    (listed,) = await runtime.list_containers()
    assert (listed.state, listed.exit_code, listed.reason) == (
        "exited",
        137,
        "ContainerStatusUnknown",
    )
    for pid in group:
        await wait_gone(pid)


async def test_stop_ends_the_whole_process_group(runtime: ProcessRuntime) -> None:
    (started,) = await run(runtime, sh("c", "sleep 60 & sleep 60 & wait"))
    child = int(read_state(runtime, started.id, "state.json")["pid"])  # type: ignore[call-overload]
    group = await wait_group(child, 3)
    await runtime.stop_container(started.id, grace_seconds=2)
    for pid in group:
        await wait_gone(pid)


async def test_children_left_behind_by_an_exited_command_are_killed(
    runtime: ProcessRuntime,
) -> None:
    (started,) = await run(runtime, sh("c", "sleep 60 & echo $! > bg.pid; exit 0"))
    deadline = time.monotonic() + 5
    while (await runtime.list_containers())[0].state != "exited":
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    work = runtime.state_dir / "sandboxes" / started.sandbox_id / "work"
    await wait_gone(int((work / "bg.pid").read_text()))


async def test_deleting_the_state_of_a_running_container_ends_it(
    runtime: ProcessRuntime,
) -> None:
    (started,) = await run(runtime, sh("c", "exec sleep 60"))
    supervisor = int(read_state(runtime, started.id, "shim.json")["pid"])  # type: ignore[call-overload]
    child = int(read_state(runtime, started.id, "state.json")["pid"])  # type: ignore[call-overload]
    shutil.rmtree(runtime.state_dir / "containers" / started.id)
    await wait_gone(child, timeout=6)
    await wait_gone(supervisor, timeout=6)


async def test_allocated_ports_differ_and_a_used_host_port_is_refused(
    runtime: ProcessRuntime,
) -> None:
    def pod() -> Pod:
        return make_pod(sh("c", "true", ports=[ContainerPort(container_port=80)]))

    first = await runtime.start_sandbox(pod(), node_address="127.0.0.1")
    second = await runtime.start_sandbox(pod(), node_address="127.0.0.1")
    key = port_key("c", 80)
    assert first.host_ports[key] != second.host_ports[key]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        clash = make_pod(sh("c", "true", ports=[ContainerPort(container_port=80, host_port=taken)]))
        with pytest.raises(RuntimeErrorBase, match=f"hostPort {taken}/TCP"):
            await runtime.start_sandbox(clash, node_address="127.0.0.1")
    again = make_pod(
        sh("c", "true", ports=[ContainerPort(container_port=80, host_port=first.host_ports[key])])
    )
    with pytest.raises(RuntimeErrorBase, match="used by another pod"):
        await runtime.start_sandbox(again, node_address="127.0.0.1")


async def test_missing_working_dir_is_a_create_error(runtime: ProcessRuntime) -> None:
    with pytest.raises(ContainerStartError) as caught:
        await run(runtime, sh("c", "true", working_dir="/no/such/dir"))
    assert caught.value.reason == "CreateContainerError"
    assert "/no/such/dir" in caught.value.message


async def test_a_container_needs_a_command(runtime: ProcessRuntime) -> None:
    with pytest.raises(ContainerStartError, match="needs a command"):
        await run(runtime, Container(name="c", image="nginx"))


@pytest.mark.skipif(os.geteuid() != 0, reason="run_as needs root")
async def test_run_as_starts_the_process_as_that_user(tmp_path: Path) -> None:
    user = pwd.getpwnam("nobody")
    rt = ProcessRuntime(node_name="n1", state_dir=tmp_path / "node", run_as="nobody")
    try:
        (started,) = await run(rt, sh("c", "id -u; pwd"))
        deadline = time.monotonic() + 5
        while (await rt.list_containers())[0].state != "exited":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        output = b"".join([c async for c in rt.logs(started.id)]).decode().split()
        home = user.pw_dir if Path(user.pw_dir).is_dir() else "/"
        assert output == [str(user.pw_uid), home]
    finally:
        for c in await rt.list_containers():
            await rt.remove_container(c.id)
        for s in await rt.list_sandboxes():
            await rt.remove_sandbox(s.id)


def test_run_as_an_unknown_user_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no user named"):
        ProcessRuntime(node_name="n1", state_dir=tmp_path, run_as="no-such-user-here")


async def wait_group(pgid: int, size: int, timeout: float = 10) -> list[int]:
    """The pids of process group ``pgid`` once it has ``size`` members."""
    deadline = time.monotonic() + timeout
    while True:
        group = [p.pid for p in psutil.process_iter() if _pgid(p.pid) == pgid]
        if len(group) >= size:
            return group
        assert time.monotonic() < deadline, f"group {pgid} has {len(group)} processes"
        await asyncio.sleep(0.05)


def _pgid(pid: int) -> int:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return -1
