"""The agent loop against a real SQLite store, on both runtimes (the process
runtime always; Docker with the local busybox image when an engine answers):

- a bound pod is started: phase Running, containerStatuses (running,
  containerID, image, restartCount, ready), hostIP, podIP, hostPorts and the
  four conditions; containers of many pods start; pods bound elsewhere are not;
- a pod deleted from the store is stopped (SIGTERM; SIGKILL after its grace
  period) and removed; a pod marked for deletion is stopped, then deleted;
  the pods of a deleted node are stopped;
- restart policy: Always restarts with back-off and shows CrashLoopBackOff
  with lastState; OnFailure stops at success (Succeeded); Never reports
  Failed with the exit code and restartCount 0;
- probes: a failing liveness probe restarts the container; readiness
  toggles the Ready condition in the store within a second; an httpGet
  readiness probe reaches the container through its published host port;
- an agent restart adopts what runs: same container ids, none added or
  replaced, no status rewritten;
- a missing image gives ErrImagePull, then ImagePullBackOff, never a crash
  (Docker); a command that cannot run gives RunContainerError, then
  CrashLoopBackOff, and Docker's create events show its retries backing off
  (doubling to the cap), not a hot loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest

from gitkube.api.objects import (
    Container,
    ContainerPort,
    ExecAction,
    HTTPGetAction,
    Node,
    ObjectMeta,
    Pod,
    PodSpec,
    Probe,
)
from gitkube.nodes.agent import Agent, AgentSettings
from gitkube.nodes.backoff import BackoffSettings
from gitkube.nodes.podstatus import split_container_id
from gitkube.nodes.registration import NodeSettings
from gitkube.nodes.runtime.base import Runtime
from gitkube.nodes.runtime.process import ProcessRuntime
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore, now_iso
from tests.fixtures.docker import TEST_IMAGE

IMAGE = TEST_IMAGE
#: unique per test process: two test runs on one Docker engine must not see each other
NODE = f"n1-{uuid.uuid4().hex[:8]}"
#: a container that runs until SIGTERM
SERVE = "trap 'exit 0' TERM; while true; do sleep 0.05; done"


def agent_settings() -> AgentSettings:
    return AgentSettings(
        relist_seconds=0.1,
        pass_wait_seconds=0.2,
        default_grace_seconds=1.0,
        backoff=BackoffSettings(initial=0.4, cap=1.6),
        heartbeat_ttl=5,
    )


async def make_runtime_of(kind: str, state_dir: Path) -> Runtime:
    if kind == "process":
        return ProcessRuntime(node_name=NODE, state_dir=state_dir)
    from gitkube.nodes.runtime.docker import DockerRuntime

    return await asyncio.to_thread(DockerRuntime.connect, node_name=NODE, pull_timeout=3.0)


async def wipe(runtime: Runtime) -> None:
    """Remove every sandbox and container the runtime has for this node."""

    async def remove(cid: str) -> None:
        with contextlib.suppress(Exception):
            await runtime.stop_container(cid, grace_seconds=0)
        with contextlib.suppress(Exception):
            await runtime.remove_container(cid)

    async def remove_sandbox(sid: str) -> None:
        with contextlib.suppress(Exception):
            await runtime.remove_sandbox(sid)

    await asyncio.gather(*(remove(rc.id) for rc in await runtime.list_containers()))
    await asyncio.gather(*(remove_sandbox(s.id) for s in await runtime.list_sandboxes()))


@dataclass
class Harness:
    kind: str
    objects: ObjectStore
    runtime: Runtime
    agent: Agent
    state_dir: Path
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.stop = asyncio.Event()
        self.task = asyncio.create_task(self.agent.run(self.stop))
        await self.wait(lambda: self.agent.heartbeat.beats > 0, what="agent registered")

    async def halt(self) -> None:
        if self.task is not None:
            self.stop.set()
            await self.task
            self.task = None

    async def restart(self) -> None:
        """Kill the agent (pods keep running) and start a new one with a new runtime client."""
        await self.halt()
        await self.runtime.close()
        self.runtime = await make_runtime_of(self.kind, self.state_dir)
        self.agent = Agent(
            self.objects, self.runtime, node=self.agent.node, settings=agent_settings()
        )
        await self.start()

    async def create(self, pod: Pod) -> Pod:
        return await self.objects.create(pod)

    async def get(self, name: str) -> Pod:
        pod = await self.objects.get(Pod, "default", name)
        assert pod is not None, f"pod {name} is gone"
        return pod

    async def wait(
        self, cond: Callable[[], bool], *, timeout: float = 10.0, what: str = "condition"
    ) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            await asyncio.sleep(0.02)

    async def wait_pod(
        self, name: str, cond: Callable[[Pod], bool], *, timeout: float = 10.0, what: str = ""
    ) -> Pod:
        deadline = time.monotonic() + timeout
        while True:
            pod = await self.objects.get(Pod, "default", name)
            if pod is not None and cond(pod):
                return pod
            if time.monotonic() > deadline:
                last = pod.to_dict().get("status") if pod else None
                raise AssertionError(f"timed out waiting for pod {name}: {what}; last: {last}")
            await asyncio.sleep(0.03)

    async def runtime_ids(self, name: str) -> list[str]:
        return sorted(rc.id for rc in await self.runtime.list_containers() if rc.pod_name == name)


@pytest.fixture(params=["process", "docker"])
async def harness(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Harness]:
    kind = request.param
    if kind == "docker":
        request.getfixturevalue("test_image")  # the engine and the local busybox image
    state_dir = tmp_path / "node"
    runtime = await make_runtime_of(kind, state_dir)
    await wipe(runtime)
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    objects = ObjectStore(store)
    node = NodeSettings(name=NODE, address="127.0.0.1", runtime_name=runtime.name)
    h = Harness(
        kind,
        objects,
        runtime,
        Agent(objects, runtime, node=node, settings=agent_settings()),
        state_dir,
        asyncio.Event(),
    )
    try:
        await h.start()
        yield h
    finally:
        await h.halt()
        await wipe(h.runtime)
        await h.runtime.close()
        await store.close()


def make_pod(
    name: str,
    script: str = SERVE,
    *,
    policy: str = "Always",
    node: str = NODE,
    grace: int = 1,
    containers: list[Container] | None = None,
    **container_fields: object,
) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace="default"),
        spec=PodSpec(
            containers=containers
            or [
                Container(
                    name="main",
                    image=IMAGE,
                    command=["sh", "-c", script],
                    **container_fields,  # type: ignore[arg-type]
                )
            ],
            restart_policy=policy,
            node_name=node,
            termination_grace_period_seconds=grace,
        ),
    )


def running(pod: Pod) -> bool:
    return pod.status.phase == "Running" and all(
        cs.state.running is not None for cs in pod.status.container_statuses
    )


def ready(pod: Pod) -> bool:
    return pod.is_ready()


def waiting_reason(pod: Pod) -> str:
    cs = pod.status.container_statuses
    return cs[0].state.waiting.reason if cs and cs[0].state.waiting else ""


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# ---------------------------------------------------------------- starting


class TestStart:
    async def test_pod_runs_and_status_is_filled(self, harness: Harness) -> None:
        pod = make_pod(
            "web",
            containers=[
                Container(
                    name="app",
                    image=IMAGE,
                    command=["sh", "-c", SERVE],
                    ports=[ContainerPort(container_port=8080, name="http")],
                ),
                Container(name="sidecar", image=IMAGE, command=["sh", "-c", SERVE]),
            ],
        )
        created = await harness.create(pod)
        got = await harness.wait_pod("web", lambda p: running(p) and ready(p), what="Running")
        status = got.status
        assert status.host_ip == "127.0.0.1"
        assert status.pod_ip
        assert status.start_time
        assert set(status.host_ports) == {"app/8080/TCP"}
        assert status.host_ports["app/8080/TCP"] > 0
        assert [cs.name for cs in status.container_statuses] == ["app", "sidecar"]
        ids = []
        for cs in status.container_statuses:
            runtime_name, cid = split_container_id(cs.container_id)
            assert runtime_name == harness.runtime.name
            ids.append(cid)
            assert cs.ready and cs.restart_count == 0
            assert cs.image
            assert cs.state.running is not None and cs.state.running.started_at
        assert sorted(ids) == await harness.runtime_ids("web")
        conditions = {c.type: c.status for c in status.conditions}
        assert conditions == {
            "PodScheduled": "True",
            "Initialized": "True",
            "ContainersReady": "True",
            "Ready": "True",
        }
        sandboxes = [s for s in await harness.runtime.list_sandboxes() if s.pod_name == "web"]
        assert [s.pod_uid for s in sandboxes] == [created.metadata.uid]

    async def test_many_pods_and_other_nodes(self, harness: Harness) -> None:
        for i in range(4):
            await harness.create(make_pod(f"p{i}"))
        await harness.create(make_pod("elsewhere", node="n2"))
        for i in range(4):
            await harness.wait_pod(f"p{i}", running, what="Running")
        assert await harness.runtime_ids("elsewhere") == []
        other = await harness.get("elsewhere")
        assert other.status.phase == "Pending" and not other.status.container_statuses

    async def test_environment_and_args(self, harness: Harness) -> None:
        from gitkube.api.objects import EnvVar

        pod = make_pod(
            "env",
            'echo "greeting=$GREETING $0"; sleep 0.3',
            policy="Never",
            args=["first"],
            env=[EnvVar(name="GREETING", value="hello")],
        )
        await harness.create(pod)
        await harness.wait_pod("env", lambda p: p.status.phase == "Succeeded", what="Succeeded")
        (cid,) = await harness.runtime_ids("env")
        out = b"".join([chunk async for chunk in harness.runtime.logs(cid)])
        assert b"greeting=hello first" in out


# ---------------------------------------------------------------- stopping


class TestStop:
    async def test_deleted_pod_is_stopped_and_removed(self, harness: Harness) -> None:
        pod = await harness.create(make_pod("gone"))
        await harness.wait_pod("gone", running, what="Running")
        assert len(await harness.runtime_ids("gone")) == 1
        await harness.objects.delete(await harness.get("gone"))
        deadline = time.monotonic() + 10
        while await harness.runtime_ids("gone") or any(
            s.pod_uid == pod.metadata.uid for s in await harness.runtime.list_sandboxes()
        ):
            assert time.monotonic() < deadline, "containers of the deleted pod still there"
            await asyncio.sleep(0.05)

    async def test_sigkill_after_the_grace_period(self, harness: Harness) -> None:
        stubborn = "trap '' TERM; while true; do sleep 0.05; done"
        await harness.create(make_pod("stubborn", stubborn, grace=1))
        await harness.wait_pod("stubborn", running, what="Running")
        started = time.monotonic()
        await harness.objects.delete(await harness.get("stubborn"))
        deadline = time.monotonic() + 10
        while await harness.runtime_ids("stubborn"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        assert 0.9 <= elapsed < 6, f"stopped after {elapsed:.2f}s; grace was 1 s"

    async def test_marked_for_deletion_is_stopped_then_deleted(self, harness: Harness) -> None:
        await harness.create(make_pod("marked"))
        pod = await harness.wait_pod("marked", running, what="Running")
        pod.metadata.deletion_timestamp = now_iso()
        await harness.objects.update(pod)
        deadline = time.monotonic() + 10
        while await harness.objects.get(Pod, "default", "marked") is not None:
            assert time.monotonic() < deadline, "pod object not deleted"
            await asyncio.sleep(0.05)
        assert await harness.runtime_ids("marked") == []

    async def test_pods_of_a_deleted_node_are_stopped(self, harness: Harness) -> None:
        await harness.create(make_pod("orphan"))
        await harness.wait_pod("orphan", running, what="Running")
        node = await harness.objects.get(Node, "", NODE)
        assert node is not None
        await harness.halt()  # the heartbeat must not bring it back meanwhile
        await harness.objects.delete(node)
        await harness.agent.reconcile_once()
        await harness.agent.settle()
        assert await harness.runtime_ids("orphan") == []


# ---------------------------------------------------------------- restarts


class TestRestartPolicy:
    async def test_always_restarts_with_back_off(self, harness: Harness) -> None:
        await harness.create(make_pod("crash", "echo boom; exit 3"))
        seen: set[str] = set()

        def crash_looping(p: Pod) -> bool:
            seen.add(waiting_reason(p))
            cs = p.status.container_statuses
            return bool(cs) and cs[0].restart_count >= 3

        pod = await harness.wait_pod("crash", crash_looping, timeout=15, what="3 restarts")
        assert "CrashLoopBackOff" in seen
        cs = pod.status.container_statuses[0]
        assert cs.last_state.terminated is not None
        assert cs.last_state.terminated.exit_code == 3
        assert pod.status.phase == "Running"
        # old attempts are cleaned up: the current one and the one before it
        assert len(await harness.runtime_ids("crash")) <= 2

    async def test_back_off_grows(self, harness: Harness) -> None:
        await harness.create(make_pod("slowcrash", "exit 1"))
        starts: dict[int, float] = {}

        def record(p: Pod) -> bool:
            cs = p.status.container_statuses
            if cs and cs[0].container_id:
                starts.setdefault(cs[0].restart_count, time.monotonic())
            return 3 in starts

        await harness.wait_pod("slowcrash", record, timeout=15, what="3 restarts")
        # first restart immediate, then 0.4 s, then 0.8 s
        assert starts[2] - starts[1] >= 0.3
        assert starts[3] - starts[2] >= 0.7

    async def test_on_failure_stops_at_success(self, harness: Harness) -> None:
        await harness.create(make_pod("job", "sleep 0.2; exit 0", policy="OnFailure"))
        pod = await harness.wait_pod(
            "job", lambda p: p.status.phase == "Succeeded", what="Succeeded"
        )
        cs = pod.status.container_statuses[0]
        assert cs.state.terminated is not None
        assert cs.state.terminated.exit_code == 0
        assert cs.state.terminated.reason == "Completed"
        assert cs.restart_count == 0
        assert pod.status.condition("Ready").status == "False"  # type: ignore[union-attr]

    async def test_on_failure_restarts_failures(self, harness: Harness) -> None:
        await harness.create(make_pod("flaky", "exit 2", policy="OnFailure"))
        await harness.wait_pod(
            "flaky",
            lambda p: (
                bool(p.status.container_statuses)
                and p.status.container_statuses[0].restart_count >= 1
            ),
            what="a restart",
        )

    async def test_never_reports_failed(self, harness: Harness) -> None:
        await harness.create(make_pod("once", "exit 7", policy="Never"))
        pod = await harness.wait_pod("once", lambda p: p.status.phase == "Failed", what="Failed")
        cs = pod.status.container_statuses[0]
        assert cs.state.terminated is not None
        assert cs.state.terminated.exit_code == 7
        assert cs.restart_count == 0
        await asyncio.sleep(0.5)
        assert len(await harness.runtime_ids("once")) == 1  # not restarted, kept for logs


# ---------------------------------------------------------------- probes


def fast_probe(**kw: object) -> Probe:
    probe = Probe(period_seconds=0.1, timeout_seconds=2, failure_threshold=1)  # type: ignore[arg-type]
    for key, value in kw.items():
        setattr(probe, key, value)
    return probe


class TestProbes:
    async def test_liveness_failure_restarts(self, harness: Harness) -> None:
        flag = f"/tmp/gk-alive-{uuid.uuid4().hex}"
        pod = make_pod(
            "sick",
            f"touch {flag}; {SERVE}",
            liveness_probe=fast_probe(
                exec=ExecAction(command=["test", "-f", flag]), initial_delay_seconds=0.5
            ),
        )
        await harness.create(pod)
        first = await harness.wait_pod("sick", running, what="Running")
        await asyncio.sleep(0.7)  # the probe passes while the flag is there
        now = await harness.get("sick")
        assert now.status.container_statuses[0].restart_count == 0
        _, cid = split_container_id(first.status.container_statuses[0].container_id)
        assert await harness.runtime.exec(cid, ["rm", "-f", flag], timeout=5) == 0
        restarted = await harness.wait_pod(
            "sick",
            lambda p: running(p) and p.status.container_statuses[0].restart_count >= 1,
            what="restarted after liveness failure",
        )
        cs = restarted.status.container_statuses[0]
        assert cs.container_id != first.status.container_statuses[0].container_id
        assert cs.last_state.terminated is not None
        if harness.kind == "process":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flag)

    async def test_readiness_toggles_within_a_second(self, harness: Harness) -> None:
        flag = f"/tmp/gk-ready-{uuid.uuid4().hex}"
        pod = make_pod(
            "gate",
            readiness_probe=fast_probe(exec=ExecAction(command=["test", "-f", flag])),
        )
        await harness.create(pod)
        await harness.wait_pod("gate", running, what="Running")
        await asyncio.sleep(0.3)
        assert not (await harness.get("gate")).is_ready()
        (cid,) = await harness.runtime_ids("gate")
        try:
            assert await harness.runtime.exec(cid, ["touch", flag], timeout=5) == 0
            flipped = time.monotonic()
            await harness.wait_pod("gate", ready, timeout=5, what="Ready")
            assert time.monotonic() - flipped < 1.0
            assert await harness.runtime.exec(cid, ["rm", "-f", flag], timeout=5) == 0
            flipped = time.monotonic()
            pod_now = await harness.wait_pod("gate", lambda p: not ready(p), timeout=5)
            assert time.monotonic() - flipped < 1.0
            assert pod_now.status.phase == "Running"
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(flag)

    async def test_http_readiness_through_the_published_port(self, harness: Harness) -> None:
        serve = (
            'mkdir -p www && echo ok > www/index.html && exec busybox httpd -f -p "$PORT" -h www'
        )
        if harness.kind == "docker":
            serve = "exec httpd -f -p 8080 -h /www"
        pod = make_pod(
            "http",
            serve,
            ports=[ContainerPort(container_port=8080, name="http")],
            readiness_probe=fast_probe(http_get=HTTPGetAction(path="/", port="http")),
        )
        await harness.create(pod)
        got = await harness.wait_pod("http", ready, what="Ready via httpGet")
        host_port = got.status.host_ports["main/8080/TCP"]
        reader, writer = await asyncio.open_connection("127.0.0.1", host_port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert answer.startswith(b"HTTP/1.")

    async def test_readiness_probe_starts_with_the_container(self, harness: Harness) -> None:
        """The probe of a container the agent starts runs at once, not from
        the next relist (none comes here: the agent is stopped, and a pass of
        ``reconcile_once`` lists the runtime once, before it starts)."""
        await harness.halt()
        pod = make_pod("quick", readiness_probe=fast_probe(exec=ExecAction(command=["true"])))
        await harness.create(pod)
        agent = harness.agent
        await agent.register()
        await agent.reconcile_once()
        await agent.settle(timeout=30)
        relists = agent.relists
        (cid,) = await harness.runtime_ids("quick")
        assert agent.probes.has(cid, "readiness")
        deadline = time.monotonic() + 10
        while not agent.probes.ready(cid):
            assert time.monotonic() < deadline, "the readiness probe did not pass"
            await asyncio.sleep(0.02)
        assert agent.relists == relists  # no relist was needed for it
        await agent.probes.close()


class TestSandboxes:
    async def test_a_pod_that_changes_from_one_container_to_two(self, harness: Harness) -> None:
        pod = await harness.create(make_pod("grow", ports=[ContainerPort(container_port=8080)]))
        got = await harness.wait_pod("grow", running, what="Running with one container")
        assert got.status.host_ports.keys() == {"main/8080/TCP"}
        (sandbox,) = [s for s in await harness.runtime.list_sandboxes() if s.pod_name == "grow"]
        # Docker runs a single-container pod without a pause container
        assert sandbox.shared == (harness.kind != "docker")
        grown = got.copy()
        grown.spec.containers.append(
            Container(name="side", image=IMAGE, command=["sh", "-c", SERVE])
        )
        await harness.objects.update(grown)
        got = await harness.wait_pod(
            "grow",
            lambda p: running(p) and ready(p) and len(p.status.container_statuses) == 2,
            what="Running with two containers",
        )
        assert got.status.host_ports.keys() == {"main/8080/TCP"}
        sandboxes = [s for s in await harness.runtime.list_sandboxes() if s.pod_name == "grow"]
        assert [(s.shared, s.running) for s in sandboxes] == [(True, True)]
        live = [
            rc
            for rc in await harness.runtime.list_containers()
            if rc.pod_uid == pod.metadata.uid and rc.state == "running"
        ]
        assert sorted(rc.name for rc in live) == ["main", "side"]  # no duplicate left
        assert {rc.sandbox_id for rc in live} == {sandboxes[0].id}

    async def test_an_exit_is_seen_from_docker_events_without_polling(
        self, harness: Harness
    ) -> None:
        if harness.kind != "docker":
            # processes have no event stream: their exits are found by the relist timer
            assert harness.runtime.events() is None and not harness.agent.evented
            return
        await harness.halt()
        # relists on a timer would come only after a minute
        harness.agent.settings.relist_seconds = 60.0
        harness.agent.settings.evented_relist_seconds = 60.0
        await harness.start()
        await harness.wait(lambda: harness.agent.evented, what="event stream open")
        await harness.create(make_pod("brief", "sleep 0.5; exit 3", policy="Never"))
        got = await harness.wait_pod(
            "brief", lambda p: p.status.phase == "Failed", what="Failed after its exit"
        )
        (cs,) = got.status.container_statuses
        assert cs.state.terminated is not None and cs.state.terminated.exit_code == 3

    async def test_starts_and_readiness_make_no_relist_when_the_engine_events_are_followed(
        self, harness: Harness
    ) -> None:
        """Starting pods costs create, start and one inspect each: the engine's
        start events for them, the agent's own status writes, the outcome of
        the starts and their readiness probes passing start no listing of the
        runtime (the agent knows what it started). Without an event stream
        (processes) each start is checked by a relist at once."""
        await harness.halt()
        harness.agent.settings.relist_seconds = 60.0
        harness.agent.settings.evented_relist_seconds = 60.0
        agent = harness.agent
        before = agent.relists  # of its first run
        await harness.start()
        evented = harness.kind == "docker"
        if evented:
            await harness.wait(lambda: harness.agent.evented, what="event stream open")
        # the relist the stream's opening asks for has run, none is pending and
        # none is in flight (the relist loop clears its trigger, then takes the
        # lock, with no wait between: a free lock and a clear trigger is quiet)
        await harness.wait(
            lambda: (
                agent.relists > before
                and not agent._relist_now.is_set()
                and not agent._relist_lock.locked()
            ),
            what="the relists of the start done",
        )
        relists = harness.agent.relists
        names = [f"quiet{i}" for i in range(3)]
        for name in names:
            await harness.create(
                make_pod(
                    name,
                    ports=[ContainerPort(container_port=8080)],
                    readiness_probe=fast_probe(exec=ExecAction(command=["true"])),
                )
            )
        for name in names:
            got = await harness.wait_pod(name, ready, what="Running and Ready")
            assert got.status.host_ports.keys() == {"main/8080/TCP"}
        await harness.agent.settle(timeout=10)
        if not evented:
            assert harness.agent.relists > relists
            return
        assert harness.agent.relists == relists
        # and an exit is still seen at once (from the engine's die event)
        (cid,) = await harness.runtime_ids("quiet0")
        await harness.runtime.stop_container(cid, grace_seconds=0)
        await harness.wait_pod(
            "quiet0",
            lambda p: p.status.container_statuses[0].restart_count >= 1 and running(p),
            what="restarted after its container was stopped",
        )


# ---------------------------------------------------------------- adoption


class TestAgentRestart:
    async def test_restarted_agent_adopts(self, harness: Harness) -> None:
        for name in ("keep1", "keep2"):
            await harness.create(make_pod(name))
        before = {}
        for name in ("keep1", "keep2"):
            before[name] = await harness.wait_pod(name, running, what="Running")
        ids = {name: await harness.runtime_ids(name) for name in before}
        sandboxes = sorted(s.id for s in await harness.runtime.list_sandboxes())
        await harness.restart()
        await asyncio.sleep(1.0)  # several passes of the new agent
        for name, pod in before.items():
            assert await harness.runtime_ids(name) == ids[name]
            now = await harness.get(name)
            assert now.metadata.resource_version == pod.metadata.resource_version, (
                "the new agent rewrote the status of an adopted pod"
            )
        assert sorted(s.id for s in await harness.runtime.list_sandboxes()) == sandboxes

    async def test_stopping_the_agent_leaves_pods_running(self, harness: Harness) -> None:
        await harness.create(make_pod("lasting"))
        await harness.wait_pod("lasting", running, what="Running")
        await harness.halt()
        await asyncio.sleep(0.3)
        states = [rc.state for rc in await harness.runtime.list_containers()]
        assert states == ["running"]


# ---------------------------------------------------------------- start failures


class TestStartFailures:
    @pytest.mark.parametrize("harness", ["docker"], indirect=True)  # images: Docker only
    async def test_missing_image(self, harness: Harness) -> None:
        pod = make_pod("noimage")
        pod.spec.containers[0].image = "gitkube-test/does-not-exist:1"
        start = await harness.objects.store.revision() + 1
        await harness.create(pod)
        seen: list[str] = []
        got: Pod | None = None

        async def watch() -> None:
            nonlocal got
            async for event in harness.objects.watch(["pods"], start_revision=start):
                if isinstance(event.object, Pod) and event.name == "noimage":
                    got = event.object
                    reason = waiting_reason(got)
                    if reason and (not seen or seen[-1] != reason):
                        seen.append(reason)
                    if "ImagePullBackOff" in seen:
                        return

        await asyncio.wait_for(watch(), timeout=20)
        assert seen[:2] == ["ErrImagePull", "ImagePullBackOff"], seen
        assert got is not None
        assert got.status.phase == "Pending"
        assert harness.task is not None and not harness.task.done()

    async def test_missing_command_is_a_clear_status(self, harness: Harness) -> None:
        pod = make_pod("nocmd")
        pod.spec.containers[0].command = ["/nonexistent/binary"]
        await harness.create(pod)
        got = await harness.wait_pod(
            "nocmd",
            lambda p: (
                waiting_reason(p) not in ("", "ContainerCreating")
                or (
                    bool(p.status.container_statuses)
                    and p.status.container_statuses[0].last_state.terminated is not None
                )
            ),
            what="a failure status",
        )
        assert got.status.phase in ("Pending", "Running")
        assert harness.task is not None and not harness.task.done()

    @pytest.mark.parametrize("harness", ["docker"], indirect=True)
    async def test_bad_command_backs_off_on_docker(
        self, harness: Harness, docker_client: docker.DockerClient
    ) -> None:
        """A command that cannot run is retried under the container back-off
        (0.4 s doubling to 1.6 s here; 10 s to 5 min by default), as on the
        process runtime: counted from the engine's own create events."""
        window = 8.0
        since = time.time()
        pod = make_pod("badcmd")
        pod.spec.containers[0].command = ["/nonexistent/binary"]
        start = await harness.objects.store.revision() + 1
        created = await harness.create(pod)
        reasons: list[str] = []

        async def watch() -> None:
            async for event in harness.objects.watch(["pods"], start_revision=start):
                if isinstance(event.object, Pod) and event.name == "badcmd":
                    reason = waiting_reason(event.object)
                    if reason and (not reasons or reasons[-1] != reason):
                        reasons.append(reason)

        def creates() -> list[float]:
            events = docker_client.api.events(
                since=since,
                until=since + window,
                filters={
                    "type": "container",
                    "event": "create",
                    "label": [
                        f"io.kubernetes.pod.uid={created.metadata.uid}",
                        "io.kubernetes.container.name=main",
                    ],
                },
                decode=True,
            )
            return [int(e["timeNano"]) / 1e9 for e in events]

        watcher = asyncio.create_task(watch())
        try:
            times = await asyncio.to_thread(creates)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        # 0, 0.4, 1.2, 2.8, 4.4, 6.0, 7.6 s at the quickest: 7 in the window
        # (before the back-off it was about 4 a second, 30 or more)
        assert 3 <= len(times) <= 7, times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        for i, gap in enumerate(gaps):
            assert gap >= min(0.4 * 2**i, 1.6) - 0.1, (i, gaps)
        assert reasons[:2] == ["RunContainerError", "CrashLoopBackOff"], reasons
        assert set(reasons) <= {"ContainerCreating", "RunContainerError", "CrashLoopBackOff"}
        got = await harness.get("badcmd")
        assert got.status.container_statuses[0].restart_count >= len(times) - 2
        assert harness.task is not None and not harness.task.done()
