"""Control-plane scale benchmark: 10,000 pods on 1,000 hollow nodes.

    python bench/control.py [--nodes 1000 --pods 10000] [--store sqlite|etcd]
                            [--agent-procs 1] [--idle-seconds 10] [--changes 30]

The shape of Kubernetes' kubemark density test. Three kinds of processes
share one store (an SQLite file, or an etcd the bench starts):

- the **master**: the real scheduler, replication manager, node lifecycle
  controller and endpoints controller, as ``gitkube master`` runs them
  (the git sync is left out: nothing is pushed);
- **hollow agents** (``--agent-procs`` processes): the real ``Agent`` for
  each node (registration, heartbeat lease, pod workers, status writes) on
  a runtime that only records what it is asked to run (``HollowRuntime``
  below, kubemark's fake runtime; it exists for this benchmark only);
- **this process**, which writes ``pods / 100`` ReplicationControllers of
  100 replicas and a Service for each, watches every pod, and reads the
  other processes' CPU time and peak RSS from ``/proc``.

It prints:

1. pod startup latency at that scale, bind -> Running (each time as seen
   by this process's watch), p50 / p99 / max, and the ratio of p99 to
   Kubernetes' pod startup SLO (p99 <= 5 s; goal <= 1.0x);
2. control-plane CPU per second of wall time while nothing changes (the
   master, and the hollow agents; goal near zero: watch-driven loops do no
   work at rest, only heartbeats are written);
3. the reaction to one pod change: a Running pod is deleted, and the time
   until its replacement is created (the replication manager reacted),
   bound, and Running; p50 / p99 over ``--changes`` deletes, one at a time;
4. peak RSS of the master (and of each agents process).

Times are taken when this process's watch delivers an event. On SQLite a
watch sees other processes' writes when it polls the file's revision
(every 50 ms), so times below ~50 ms read as ~50 ms; on etcd they are
pushed. The hollow nodes run no service proxy (each would listen on every
Service port). When the control plane cannot bring every pod up within
``--timeout``, the bench says how far it got, prints what it measured, and
exits 1.

Measured on 2 CPUs shared with other work (load average 5-25), SQLite
store, one agents process, ``python bench/control.py --nodes N --pods P``.

BEFORE the control kit (4bcf4be: every loop and every agent lists the
store on each pass and on every watch event):

    nodes/pods  startup p99 (x SLO)  at rest, CPU-s/s:   peak RSS MiB:
                                     master   agents     master  agents
    10/100      0.20s  (0.04x)       0.012    0.072      36      41
    30/300      2.77s  (0.55x)       0.019    0.222      41      110
    100/1000    57-81s (11-16x)      0.05-.06 0.3-0.7 *  67      860-920
    1000/10000  not run: the agents' work grows with nodes x pods

    reaction to a pod deleted, p50 / p99:  replacement created   Running
    10/100                                 53ms / 121ms          255ms / 356ms
    30/300                                 211ms / 1.04s         2.77s / 13.5s
    100/1000                               none: every node NotReady by then

At 100 nodes the agents process cannot keep up: each of the 100 agents
lists all 1,000 pods every second and on every pod event, heartbeats come
later than their 15 s lease, the leases lapse, the node lifecycle
controller marks every node NotReady, and the replacement of a deleted pod
is never scheduled. (* starved: it got that much CPU and wanted more.)

AFTER (main at 032e08d: every loop on the control kit, one cache per
process; the master records Events as gitkube master does):

    nodes/pods  startup p99 (x SLO)  at rest, CPU-s/s:   peak RSS MiB:
                                     master   agents     master  agents
    10/100      0.10-0.41s (0.02-0.08x) 0.007-0.010 0.010   35-36   37-38
    30/300      1.04s  (0.21x)       0.009    0.016      39      42
    100/1000    2.05s  (0.41x)       0.009    0.044      49      60
    1000/10000  118s   (24x) **      0.198 ** 0.882 **   160     276
    1000/10000  270s   (54x) **      0.045    0.200 *    154     274   (load 25)

    reaction to a pod deleted, p50 / p99:  replacement created   Running
    30/300                                 51ms / 75ms           126ms / 161ms
    100/1000                               51ms / 108ms          102ms / 159ms
    1000/10000                             48ms / 362ms          304ms / 15.5s
    1000/10000 (load 25)                   300ms, not bound: every node NotReady **

** At full scale the hollow agents of 1,000 nodes share one process on 2
CPUs that the master, the bench and other work share too, so startup is
bound by CPU: at load 8.5, 10,000 pods started in 329 s (30 pods/s; the
agents process used 139 CPU-s, the master 81), some heartbeats came late,
115 nodes were still NotReady when the measure at rest began, and what was
"at rest" was the agents re-registering (297 writes/s, master 0.198
CPU-s/s). At load 25 the agents process got 0.24 of a core, 10,000 pods
took 522 s, heartbeats fell to 16 writes/s instead of 200 and every node
went NotReady. The same loops before Events were recorded (the kitports
branch, load 11) started them in 381 s, p99 149 s (30x), kept every node
Ready, and reacted to a deleted pod in p50 51ms / 312ms / 355ms (created /
bound / Running), p99 165ms / 1.2s / 2.1s; master at rest 0.040 CPU-s/s,
RSS 152 / 262 MiB. A second agents process (``--agent-procs 2``) made it
worse on SQLite: four processes contend for the file's write lock. When
the nodes are settled, the master's ~0.04 CPU-s/s at rest is the 200
heartbeats/s of 1,000 nodes arriving through its cache; no loop lists the
store.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitkube.api.objects import (  # noqa: E402
    Container,
    ContainerPort,
    ObjectMeta,
    Pod,
    PodSpec,
    PodTemplateSpec,
    ReplicationController,
    ReplicationControllerSpec,
    ResourceRequirements,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.nodes.runtime.base import RuntimeContainer, Sandbox  # noqa: E402
from gitkube.store.base import Compare, Delete  # noqa: E402
from gitkube.store.factory import open_store  # noqa: E402
from gitkube.store.objects import ObjectStore  # noqa: E402

#: Kubernetes' pod startup SLO: p99 of schedule-to-running <= 5 s (stateless pods)
STARTUP_SLO_SECONDS = 5.0
REPLICAS_PER_RC = 100
NAMESPACE = "bench"
POD_PREFIX = "/gitkube/pods/"
NODE_PREFIX = "/gitkube/nodes/"
NODE_CPU_MILLIS = 4000
NODE_MEMORY = 16 * 1024**3
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- hollow runtime


class HollowRuntime:
    """A ``Runtime`` that runs nothing: sandboxes and containers are records.

    Every container starts at once and runs until it is stopped; each pod
    gets its own address, as a Docker sandbox would. kubemark's hollow
    kubelet does the same with a fake container runtime."""

    name = "hollow"

    def __init__(self, node_name: str, subnet: int, *, pods_dir: Path) -> None:
        self.node_name = node_name
        #: where the agent writes pods' volumes (these pods have none)
        self.pods_dir = pods_dir
        self._subnet = subnet
        self._ids = itertools.count(1)
        self._sandboxes: dict[str, Sandbox] = {}
        self._containers: dict[str, RuntimeContainer] = {}

    async def start_sandbox(self, pod: Pod, *, node_address: str) -> Sandbox:
        n = next(self._ids)
        sandbox = Sandbox(
            id=f"{self.node_name}-sb{n}",
            pod_uid=pod.metadata.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            ip=f"10.{self._subnet // 256 % 256}.{self._subnet % 256}.{n % 250 + 2}",
        )
        self._sandboxes[sandbox.id] = sandbox
        return sandbox

    async def list_sandboxes(self) -> list[Sandbox]:
        return list(self._sandboxes.values())

    async def list_pods(self) -> tuple[list[Sandbox], list[RuntimeContainer]]:
        return await self.list_sandboxes(), await self.list_containers()

    def events(self) -> AsyncIterator[str] | None:
        return None

    async def remove_sandbox(self, sandbox_id: str) -> None:
        self._sandboxes.pop(sandbox_id, None)
        for cid in [c.id for c in self._containers.values() if c.sandbox_id == sandbox_id]:
            del self._containers[cid]

    async def start_container(
        self,
        pod: Pod,
        sandbox: Sandbox,
        container: Container,
        *,
        attempt: int,
        mounts: Sequence[Any] = (),
    ) -> RuntimeContainer:
        rc = RuntimeContainer(
            id=f"{self.node_name}-c{next(self._ids)}",
            pod_uid=pod.metadata.uid,
            pod_namespace=pod.namespace,
            pod_name=pod.name,
            name=container.name,
            attempt=attempt,
            state="running",
            image=container.image,
            started_at=time.time(),
            sandbox_id=sandbox.id,
        )
        self._containers[rc.id] = rc
        return rc

    async def list_containers(self) -> list[RuntimeContainer]:
        return list(self._containers.values())

    async def stop_container(self, container_id: str, *, grace_seconds: float) -> None:
        rc = self._containers.get(container_id)
        if rc is not None and rc.state == "running":
            rc.state, rc.exit_code, rc.reason = "exited", 0, "Completed"
            rc.finished_at = time.time()

    async def remove_container(self, container_id: str) -> None:
        self._containers.pop(container_id, None)

    async def exec(self, container_id: str, command: list[str], *, timeout: float) -> int:
        return 0

    async def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        return
        yield b""  # an async generator that yields nothing

    async def close(self) -> None:
        pass


# ---------------------------------------------------------------- child processes


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def _run_all(tasks: list[Callable[[asyncio.Event], Coroutine[Any, Any, object]]]) -> None:
    """Run ``task(stop)`` for each until SIGTERM; a task that fails ends the
    process (the bench then reports it) instead of leaving it half alive."""
    stop = asyncio.Event()
    _stop_on_signals(stop)
    running = [asyncio.create_task(task(stop)) for task in tasks]
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([stopping, *running], return_when=asyncio.FIRST_COMPLETED)
    stop.set()
    failed = [t for t in done if t is not stopping and not t.cancelled() and t.exception()]
    await asyncio.wait(running, timeout=10)
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
    if failed:
        raise RuntimeError("a task of this process failed") from failed[0].exception()


async def run_master(url: str) -> None:
    """The master's controllers, wired as ``gitkube master`` wires them
    (``Operator._controllers``): one shared cache, one applier carrying the
    leader's fence, each loop's writes recorded as Events, the controllers
    started once this process leads. The git sync is left out."""
    from gitkube.control import Applier, Cache
    from gitkube.control.events import COMPONENTS, recording
    from gitkube.election import LeaderElection
    from gitkube.planner import NodeLifecycleController, ReplicationManager, SchedulerLoop
    from gitkube.services.controller import EndpointsController
    from gitkube.services.loadbalancer import LoadBalancerStatusController
    from gitkube.store.events import EventRecorder

    store = await open_store(url)
    objects = ObjectStore(store)
    cache = Cache(store)
    election = LeaderElection(store, "bench-master")
    recorders: list[EventRecorder] = []

    async def lead(stop: asyncio.Event) -> None:
        await asyncio.wait(
            [asyncio.create_task(stop.wait()), asyncio.create_task(election.leading.wait())],
            return_when=asyncio.FIRST_COMPLETED,
        )
        if stop.is_set():
            return
        applier = Applier(objects, fence=election.fence)

        def observed(name: str) -> Applier:
            recorder = EventRecorder(objects, COMPONENTS[name])
            recorders.append(recorder)
            return applier.observed(recording(recorder))

        loops = [
            LoadBalancerStatusController(
                objects, cache=cache, applier=observed("load-balancers")
            ).run,
            SchedulerLoop(objects, cache=cache, applier=observed("scheduler")).run,
            ReplicationManager(objects, cache=cache, applier=observed("replication")).run,
            NodeLifecycleController(objects, cache=cache, applier=observed("node-lifecycle")).run,
            EndpointsController(objects, cache=cache, applier=applier).run,
        ]
        await asyncio.gather(*(loop(stop) for loop in loops))

    try:
        await _run_all([cache.run, election.run, lead])
    finally:
        for recorder in recorders:
            with contextlib.suppress(Exception):
                await recorder.close()
        await store.close()


async def run_agents(url: str, first: int, count: int, *, workdir: Path) -> None:
    """``count`` hollow agents, nodes ``first`` .. ``first + count - 1``, built
    as ``gitkube run`` builds its local agents (one shared cache per process
    once the agent is on the control kit), with a hollow runtime and no
    service proxy (it would listen on every Service port once per node)."""
    import inspect

    from gitkube.nodes.agent import Agent, AgentSettings
    from gitkube.nodes.registration import NodeSettings

    store = await open_store(url)
    objects = ObjectStore(store)
    tasks: list[Callable[[asyncio.Event], Coroutine[Any, Any, object]]] = []
    shared: dict[str, Any] = {}
    if "cache" in inspect.signature(Agent).parameters:
        from gitkube.control import Cache

        cache = Cache(store)
        shared["cache"] = cache
        tasks.append(cache.run)
    for i in range(first, first + count):
        name = f"hollow-{i:05d}"
        agent = Agent(
            objects,
            HollowRuntime(name, i, pods_dir=workdir / "pods" / name),
            node=NodeSettings(
                name=name,
                address=f"192.168.{i // 250 % 256}.{i % 250 + 1}",
                cpu=NODE_CPU_MILLIS,
                memory=NODE_MEMORY,
                runtime_name="hollow",
            ),
            settings=AgentSettings(),
            **shared,
        )
        tasks.append(agent.run)
    try:
        await _run_all(tasks)
    finally:
        await store.close()


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Child:
    role: str
    process: subprocess.Popen[bytes]
    log: Path
    agents: int = 0

    @property
    def pid(self) -> int:
        return self.process.pid

    def check(self) -> None:
        if self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(
                f"the {self.role} process ended ({self.process.returncode}):\n{tail}"
            )


def _die_with_parent() -> None:
    """In the child: SIGKILL when the bench process ends, however it ends
    (an overloaded child may not get to its SIGTERM handler)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def spawn(role_args: list[str], role: str, workdir: Path, *, agents: int = 0) -> Child:
    log = workdir / f"{role}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), *role_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
    return Child(role, process, log, agents)


def stop_children(children: list[Child]) -> None:
    for child in children:
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait()


# ---------------------------------------------------------------- watching pods


@dataclass
class PodTrack:
    app: str
    revision: int = 0
    created: float = 0.0
    bound: float | None = None
    running: float | None = None


@dataclass
class Tracker:
    """Every pod, from this process's watch: when it was first seen created,
    bound and Running."""

    store: Any
    pods: dict[str, PodTrack] = field(default_factory=dict)
    deleted: int = 0
    last_event: float = field(default_factory=time.monotonic)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, start_revision: int) -> None:
        async for event in self.store.watch(POD_PREFIX, start_revision=start_revision):
            now = time.monotonic()
            self.last_event = now
            key = event.kv.key
            if event.type == "DELETE":
                if self.pods.pop(key, None) is not None:
                    self.deleted += 1
                self.changed.set()
                continue
            data = json.loads(event.kv.value)
            track = self.pods.get(key)
            if track is None:
                labels = data.get("metadata", {}).get("labels", {})
                track = self.pods[key] = PodTrack(app=labels.get("app", ""), created=now)
            track.revision = event.kv.mod_revision
            if track.bound is None and data.get("spec", {}).get("nodeName"):
                track.bound = now
            if track.running is None and data.get("status", {}).get("phase") == "Running":
                track.running = now
            self.changed.set()

    def count_running(self) -> int:
        return sum(1 for t in self.pods.values() if t.running is not None)

    async def wait(
        self, check: Callable[[], bool], *, timeout: float, tick: Callable[[], None]
    ) -> bool:
        """Wait until ``check()``; False after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not check():
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=min(left, 1.0))
            tick()
        return True


# ---------------------------------------------------------------- the workload


def make_rc(index: int, replicas: int) -> ReplicationController:
    app = f"app-{index:04d}"
    return ReplicationController(
        metadata=ObjectMeta(name=app, namespace=NAMESPACE),
        spec=ReplicationControllerSpec(
            replicas=replicas,
            selector={"app": app},
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": app}),
                spec=PodSpec(
                    containers=[
                        Container(
                            name="main",
                            image="registry.k8s.io/pause:3.9",
                            ports=[ContainerPort(container_port=8080)],
                            resources=ResourceRequirements(
                                requests={"cpu": "100m", "memory": "64Mi"}
                            ),
                        )
                    ],
                ),
            ),
        ),
    )


def make_service(index: int) -> Service:
    app = f"app-{index:04d}"
    return Service(
        metadata=ObjectMeta(name=app, namespace=NAMESPACE),
        spec=ServiceSpec(
            selector={"app": app}, ports=[ServicePort(name="http", port=80, target_port=8080)]
        ),
    )


async def write_workload(objects: ObjectStore, pods: int) -> int:
    """RCs of up to 100 replicas adding up to ``pods``, and a Service for each."""
    sizes = [REPLICAS_PER_RC] * (pods // REPLICAS_PER_RC)
    if pods % REPLICAS_PER_RC:
        sizes.append(pods % REPLICAS_PER_RC)
    prepared: list[ReplicationController | Service] = []
    for index, size in enumerate(sizes):
        prepared += [objects.prepare_create(make_rc(index, size))]
        prepared += [objects.prepare_create(make_service(index))]
    for start in range(0, len(prepared), 64):
        ops = [objects.create_ops(obj) for obj in prepared[start : start + 64]]
        await objects.apply([c for c, _ in ops], [p for _, p in ops])
    return len(sizes)


async def ready_nodes(store: Any) -> int:
    kvs, _ = await store.range(NODE_PREFIX)
    ready = 0
    for kv in kvs:
        conditions = json.loads(kv.value).get("status", {}).get("conditions", [])
        if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions):
            ready += 1
    return ready


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f}s" if seconds >= 1 else f"{seconds * 1000:.0f}ms"


# ---------------------------------------------------------------- phases


@dataclass
class Results:
    lines: list[str] = field(default_factory=list)
    failed: bool = False

    def add(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)


async def measure(args: argparse.Namespace, url: str, workdir: Path, results: Results) -> None:
    store = await open_store(url)
    objects = ObjectStore(store)
    children: list[Child] = []
    tracker_task: asyncio.Task[None] | None = None
    try:
        per = -(-args.nodes // args.agent_procs)
        for p in range(args.agent_procs):
            first, count = p * per, min(per, args.nodes - p * per)
            if count > 0:
                children.append(
                    spawn(
                        [
                            "--role",
                            "agents",
                            "--store-url",
                            url,
                            "--first",
                            str(first),
                            "--count",
                            str(count),
                            "--workdir",
                            str(workdir),
                        ],
                        f"agents-{p}",
                        workdir,
                        agents=count,
                    )
                )
        master = spawn(["--role", "master", "--store-url", url], "master", workdir)
        children.append(master)

        def check() -> None:
            for child in children:
                child.check()

        started = time.monotonic()
        while (ready := await ready_nodes(store)) < args.nodes:
            check()
            if time.monotonic() - started > args.timeout:
                raise RuntimeError(f"only {ready}/{args.nodes} nodes Ready after {args.timeout}s")
            await asyncio.sleep(0.5)
        results.add(f"  {args.nodes} hollow nodes Ready after {time.monotonic() - started:.1f}s")

        # ---------------------------------------------------------- startup
        tracker = Tracker(store)
        tracker_task = asyncio.create_task(tracker.run(await store.revision() + 1))
        started = time.monotonic()
        rcs = await write_workload(objects, args.pods)
        ok = await tracker.wait(
            lambda: tracker.count_running() >= args.pods, timeout=args.timeout, tick=check
        )
        elapsed = time.monotonic() - started
        running = tracker.count_running()
        bound = sum(1 for t in tracker.pods.values() if t.bound is not None)
        if not ok:
            results.failed = True
            results.add(
                f"  startup: only {running}/{args.pods} pods Running ({bound} bound, "
                f"{len(tracker.pods)} created) after {args.timeout:.0f}s"
            )
        else:
            results.add(
                f"  startup: {rcs} RCs, {args.pods} pods Running after {elapsed:.1f}s "
                f"({args.pods / elapsed:.0f} pods/s)"
            )
        latencies = [
            t.running - t.bound
            for t in tracker.pods.values()
            if t.running is not None and t.bound is not None
        ]
        if latencies:
            p99 = quantile(latencies, 0.99)
            results.add(
                f"  pod startup bind -> Running ({len(latencies)} pods): "
                f"p50 {fmt_s(quantile(latencies, 0.5))}  p99 {fmt_s(p99)}  "
                f"max {fmt_s(max(latencies))}"
            )
            results.add(
                f"  ratio p99 / Kubernetes SLO ({STARTUP_SLO_SECONDS:.0f}s): "
                f"{p99 / STARTUP_SLO_SECONDS:.2f}x (goal <= 1.0x)"
            )
        if not ok:
            return

        # ---------------------------------------------------------- at rest
        await tracker.wait(
            lambda: time.monotonic() - tracker.last_event > args.quiet_seconds,
            timeout=args.timeout,
            tick=check,
        )
        agents = [c for c in children if c is not master]
        cpu0 = {c.pid: cpu_seconds(c.pid) for c in children}
        rev0, t0 = await store.revision(), time.monotonic()
        await asyncio.sleep(args.idle_seconds)
        check()
        wall = time.monotonic() - t0
        rev1 = await store.revision()
        cpu = {c.pid: (cpu_seconds(c.pid) - cpu0[c.pid]) / wall for c in children}
        agents_cpu = sum(cpu[c.pid] for c in agents)
        results.add(
            f"  at rest ({wall:.0f}s, {(rev1 - rev0) / wall:.0f} store writes/s, heartbeats; "
            f"{await ready_nodes(store)}/{args.nodes} nodes Ready):"
        )
        results.add(
            f"    master CPU:        {cpu[master.pid]:.3f} CPU-s/s "
            f"({cpu[master.pid] * 100:.1f}% of a core; goal near 0)"
        )
        results.add(
            f"    hollow agents CPU: {agents_cpu:.3f} CPU-s/s "
            f"({agents_cpu * 1000 / args.nodes:.2f} ms/s per node)"
        )

        # ---------------------------------------------------------- reaction
        rng = random.Random(args.seed)
        created: list[float] = []
        bound_l: list[float] = []
        running_l: list[float] = []
        for _ in range(args.changes):
            candidates = sorted(k for k, t in tracker.pods.items() if t.running is not None)
            victim = rng.choice(candidates)
            track = tracker.pods[victim]
            before = set(tracker.pods)
            t0 = time.monotonic()
            outcome = await store.txn([Compare(victim, track.revision)], [Delete(victim)])
            if not outcome.succeeded:
                continue  # it changed meanwhile; take another

            def replacement(before: set[str] = before, app: str = track.app) -> PodTrack | None:
                for key, t in tracker.pods.items():
                    if key not in before and t.app == app:
                        return t
                return None

            got = await tracker.wait(
                lambda: (r := replacement()) is not None and r.running is not None,
                timeout=args.change_timeout,
                tick=check,
            )
            new = replacement()
            if not got or new is None or new.bound is None or new.running is None:
                results.failed = True
                seen = "no replacement created"
                if new is not None:
                    seen = f"replacement created after {fmt_s(new.created - t0)}, " + (
                        f"bound after {fmt_s(new.bound - t0)}" if new.bound else "not bound"
                    )
                results.add(
                    f"  reaction: no Running replacement within {args.change_timeout:.0f}s "
                    f"({seen}; after {len(created)} changes; "
                    f"{await ready_nodes(store)}/{args.nodes} nodes Ready)"
                )
                break
            created.append(new.created - t0)
            bound_l.append(new.bound - t0)
            running_l.append(new.running - t0)
        if created:
            results.add(f"  reaction to one pod deleted ({len(created)} times, one at a time):")
            for label, values in (
                ("replacement created", created),
                ("replacement bound", bound_l),
                ("replacement Running", running_l),
            ):
                results.add(
                    f"    {label + ':':21s} p50 {fmt_s(quantile(values, 0.5)):>7s}  "
                    f"p99 {fmt_s(quantile(values, 0.99)):>7s}"
                )
    finally:
        for child in sorted(children, key=lambda c: c.role != "master"):
            with contextlib.suppress(OSError):
                rss = peak_rss_mib(child.pid)
                if child.role == "master":
                    results.add(
                        f"  peak RSS master: {rss:.0f} MiB "
                        f"({rss * 1024 / max(1, args.pods):.1f} KiB per pod)"
                    )
                else:
                    results.add(
                        f"  peak RSS {child.role} ({child.agents} hollow agents): {rss:.0f} MiB"
                    )
        with contextlib.suppress(OSError):
            spent = [f"{c.role} {cpu_seconds(c.pid):.0f}s" for c in children]
            own = resource.getrusage(resource.RUSAGE_SELF)
            spent.append(f"this process {own.ru_utime + own.ru_stime:.0f}s")
            results.add(f"  CPU over the whole run: {', '.join(spent)}")
        if tracker_task is not None:
            tracker_task.cancel()
            await asyncio.gather(tracker_task, return_exceptions=True)
        stop_children(children)
        await store.close()


async def main_async(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="gkbench-control-"))
    server = None
    try:
        if args.store == "etcd":
            from tests.fixtures.etcd import EtcdServer, etcd_binary

            binary = etcd_binary()
            if binary is None:
                print("etcd not found: install it or use --store sqlite", file=sys.stderr)
                return 1
            server = EtcdServer(binary, workdir / "etcd")
            server.start()
            url = server.url
        else:
            url = f"sqlite://{workdir}/state.db"
        print(
            f"control plane: {args.pods} pods on {args.nodes} hollow nodes, "
            f"{args.store} store, {args.agent_procs} agents process(es); "
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
            flush=True,
        )
        results = Results()
        try:
            await measure(args, url, workdir, results)
        except RuntimeError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 1 if results.failed else 0
    finally:
        if server is not None:
            server.stop()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--pods", type=int, default=10000)
    parser.add_argument("--store", choices=("sqlite", "etcd"), default="sqlite")
    parser.add_argument("--agent-procs", type=int, default=1)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument(
        "--quiet-seconds", type=float, default=3.0, help="no pod event for this long = at rest"
    )
    parser.add_argument("--changes", type=int, default=30)
    parser.add_argument("--timeout", type=float, default=600.0, help="for startup")
    parser.add_argument("--change-timeout", type=float, default=60.0, help="for each change")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work dir (store, logs)")
    # the child processes
    parser.add_argument("--role", choices=("bench", "master", "agents"), default="bench")
    parser.add_argument("--store-url", default="")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    if args.role == "master":
        asyncio.run(run_master(args.store_url))
        return 0
    if args.role == "agents":
        asyncio.run(run_agents(args.store_url, args.first, args.count, workdir=Path(args.workdir)))
        return 0
    if args.nodes < 1 or args.pods < 1 or args.agent_procs < 1:
        parser.error("--nodes, --pods and --agent-procs must be at least 1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up on a kill too
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
