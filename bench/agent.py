"""Agent benchmark: N single-container pods to Running through the Docker
runtime, against `docker-compose up -d` of the same containers and against
the engine's own limit, in the same run; and the process runtime's figures.

    python bench/agent.py [--pods 20,100] [--rounds 3] [--runtime docker,process]
                          [--variants all] [--probe] [--image gitkube-test/busybox:latest]

Each round, for each pod count, on the local Docker engine with the local
busybox image (the phases take turns at going first, so that drift on a
shared machine falls on all of them):

1. gitkube: an agent (embedded SQLite store) is running and idle; N pods
   bound to its node are written in one transaction; the clock runs until
   the agent has written every pod's status Running. Per pod, its *startup
   latency* is from that write (the bind) to the agent's write of its
   status Running (the store write itself: the moment any watcher can see
   it), for p50 and p99 (Kubernetes' SLO: p99 <= 5 s). The HTTP requests
   the runtime made of the engine until then are counted (per pod).
2. `docker-compose up -d` of a compose file with the same N services
   (Debian's docker-compose 1.29), timed until it returns.
3. The engine limit (``bench/engine.py``): the same N containers created
   and started through the Docker SDK with 4, 6 and 8 calls in flight, no
   gitkube; the fastest of them.

Ratios gitkube/compose (goal <= 0.6x for 20 pods) and gitkube/engine limit
(goal <= 1.3x) are per round (each against the peers measured beside it),
then their median.

``--variants`` measures the ways to the engine's speed one by one, each a
gitkube configuration run in every round:

- ``before``: a pause container per pod, starts unbounded (every pod worker
  at once), runtime changes found by relisting every second, probes started
  by the next relist;
- ``+sandboxless``: single-container pods without a pause container;
- ``+bounded``: at most ``start_parallelism`` create/start calls in flight;
- ``+events``: relists driven by the engine's event stream (one second
  polling otherwise);
- ``all``: everything, as gitkube runs by default: also readiness probes
  that run from the container's start rather than from the next relist
  (``--probe`` gives every pod an exec readiness probe and times bind ->
  Ready, where that shows).

The process runtime (``--runtime process``): the same pods as local
processes, push -> all Running and p50/p99 startup (no peer).

Every container is removed after each phase, and at the end even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.engine import engine_limit  # noqa: E402
from gitkube.api.objects import (  # noqa: E402
    Container,
    ExecAction,
    ObjectMeta,
    Pod,
    PodSpec,
    Probe,
)
from gitkube.nodes.agent import Agent, AgentSettings  # noqa: E402
from gitkube.nodes.registration import NodeSettings  # noqa: E402
from gitkube.nodes.runtime.base import Runtime  # noqa: E402
from gitkube.nodes.runtime.docker import DockerRuntime  # noqa: E402
from gitkube.nodes.runtime.process import ProcessRuntime  # noqa: E402
from gitkube.store.factory import open_store  # noqa: E402
from gitkube.store.objects import ObjectStore  # noqa: E402

NODE = "bench-node"
COMPOSE_PROJECT = "gkbench"
COMMAND = ["sleep", "3600"]
GOAL_COMPOSE = 0.6
GOAL_ENGINE = 1.3
SLO_P99 = 5.0
#: with --probe: a readiness probe that passes as soon as it runs
PROBE = Probe(exec=ExecAction(command=["true"]), period_seconds=1)

#: variant -> (DockerRuntime options, AgentSettings options, probes at start)
VARIANTS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "before": (
        {"sandboxless": False, "start_parallelism": 1000},
        {"runtime_events": False, "probe_on_start": False},
    ),
    "+sandboxless": (
        {"sandboxless": True, "start_parallelism": 1000},
        {"runtime_events": False, "probe_on_start": False},
    ),
    "+bounded": (
        {"sandboxless": True},
        {"runtime_events": False, "probe_on_start": False},
    ),
    "+events": ({"sandboxless": True}, {"runtime_events": True, "probe_on_start": False}),
    "all": ({}, {}),
}


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=600)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


# ---------------------------------------------------------------- gitkube


class RecordingStore(ObjectStore):
    """Notes when each pod's status is first written Running."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.running_at: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}

    async def update(self, obj: Any) -> Any:
        updated = await super().update(obj)
        self._note(updated)
        return updated

    async def update_status(self, current: Any, status: Any) -> Any:
        updated = await super().update_status(current, status)
        self._note(updated)
        return updated

    def _note(self, obj: Any) -> None:
        if isinstance(obj, Pod) and obj.status.phase == "Running":
            self.running_at.setdefault(obj.name, time.perf_counter())
            if obj.is_ready():
                self.ready_at.setdefault(obj.name, time.perf_counter())


@dataclass
class GitkubeRound:
    total: float
    startups: list[float]
    #: bind -> Ready per pod (with --probe)
    readies: list[float] = field(default_factory=list)
    api_calls: int = 0
    extra: dict[str, float] = field(default_factory=dict)


async def wipe(runtime: Runtime) -> None:
    containers = await runtime.list_containers()
    await asyncio.gather(
        *(runtime.stop_container(rc.id, grace_seconds=0) for rc in containers),
        return_exceptions=True,
    )
    await asyncio.gather(
        *(runtime.remove_container(rc.id) for rc in containers), return_exceptions=True
    )
    sandboxes = await runtime.list_sandboxes()
    await asyncio.gather(*(runtime.remove_sandbox(s.id) for s in sandboxes), return_exceptions=True)


async def bench_gitkube(
    pods: int,
    image: str,
    workdir: Path,
    tag: str,
    *,
    kind: str,
    variant: str,
    probe: bool = False,
) -> GitkubeRound:
    store = await open_store(f"sqlite:///{workdir}/state-{tag}.db")
    objects = RecordingStore(store)
    runtime_opts, agent_opts = VARIANTS[variant]
    agent_opts = dict(agent_opts)
    probe_on_start = agent_opts.pop("probe_on_start", True)
    runtime: Runtime
    sent: list[str] = []
    if kind == "docker":
        docker_rt = await asyncio.to_thread(DockerRuntime.connect, node_name=NODE, **runtime_opts)
        await docker_rt.ensure_sandbox_image()
        # the HTTP requests the runtime makes of the engine (the client is a
        # requests.Session: every call of the SDK is one or more of these)
        real_send = docker_rt.api.send

        def counting(request: Any, **kwargs: Any) -> Any:
            sent.append(request.path_url)
            return real_send(request, **kwargs)

        docker_rt.api.send = counting
        runtime = docker_rt
    else:
        runtime = ProcessRuntime(node_name=NODE, state_dir=workdir / f"proc-{tag}")
    await wipe(runtime)
    agent = Agent(
        objects,
        runtime,
        node=NodeSettings(name=NODE, address="127.0.0.1", runtime_name=runtime.name),
        settings=AgentSettings(relist_seconds=1.0, **agent_opts),
    )
    agent.probe_on_start = probe_on_start
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        while agent.heartbeat.beats == 0 or (
            agent.settings.runtime_events and kind == "docker" and not agent.evented
        ):  # registered and idle
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        batch = [
            objects.prepare_create(
                Pod(
                    metadata=ObjectMeta(name=f"bench-{i}"),
                    spec=PodSpec(
                        node_name=NODE,
                        termination_grace_period_seconds=0,
                        containers=[
                            Container(
                                name="main",
                                image=image,
                                command=COMMAND,
                                readiness_probe=PROBE if probe else None,
                            )
                        ],
                    ),
                )
            )
            for i in range(pods)
        ]
        ops = [objects.create_ops(p) for p in batch]
        sent.clear()
        await objects.apply([c for c, _ in ops], [p for _, p in ops])
        bound = time.perf_counter()
        while len(objects.running_at) < pods or (probe and len(objects.ready_at) < pods):
            if time.perf_counter() - bound > 300:
                raise RuntimeError(f"gitkube: {len(objects.running_at)}/{pods} Running after 300 s")
            await asyncio.sleep(0.02)
        startups = [t - bound for t in objects.running_at.values()]
        if os.environ.get("GKBENCH_REQUESTS"):
            kinds = collections.Counter(
                re.sub(r"/containers/[0-9a-f]{64}/", "/containers/ID/", path.split("?")[0])
                for path in sent
            )
            print(f"  [{variant}] engine requests: {dict(kinds)}", flush=True)
        readies = [t - bound for t in objects.ready_at.values()] if probe else []
        return GitkubeRound(max(startups), startups, readies, api_calls=len(sent))
    finally:
        stop.set()
        await task
        await wipe(runtime)
        await runtime.close()
        await store.close()


# ---------------------------------------------------------------- docker-compose


def compose_file(pods: int, image: str, workdir: Path) -> Path:
    lines = ['version: "3"', "services:"]
    for i in range(pods):
        lines += [f"  svc{i}:", f"    image: {image}", f"    command: {COMMAND!r}"]
    path = workdir / f"docker-compose-{pods}.yml"
    path.write_text("\n".join(lines).replace("'", '"') + "\n")
    return path


def compose(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("docker-compose", "-p", COMPOSE_PROJECT, "-f", str(path), *args, check=check)


def bench_compose(pods: int, image: str, workdir: Path) -> float:
    path = compose_file(pods, image, workdir)
    compose(path, "down", "-t", "0", "--remove-orphans", check=False)
    started = time.perf_counter()
    try:
        compose(path, "up", "-d")
        return time.perf_counter() - started
    finally:
        compose(path, "down", "-t", "0", "--remove-orphans", check=False)


# ---------------------------------------------------------------- main


def report_docker(pods: int, rounds: list[dict[str, Any]], variants: list[str]) -> None:
    print(f"\n{pods} pods through Docker, {len(rounds)} rounds (medians; ratios per round):")
    compose_t = statistics.median(r["compose"] for r in rounds)
    engine_t = statistics.median(r["engine"][0] for r in rounds)
    in_flight = statistics.mode(r["engine"][1] for r in rounds)
    print(f"  docker-compose up -d                       {compose_t:6.2f}s")
    print(f"  engine limit (SDK, best of 4/6/8 in flight) {engine_t:6.2f}s  (mostly {in_flight})")
    for variant in variants:
        results: list[GitkubeRound] = [r[variant] for r in rounds]
        total = statistics.median(g.total for g in results)
        startups = [s for g in results for s in g.startups]
        vs_compose = statistics.median(r[variant].total / r["compose"] for r in rounds)
        vs_engine = statistics.median(r[variant].total / r["engine"][0] for r in rounds)
        calls = statistics.median(g.api_calls for g in results) / pods
        print(
            f"  gitkube {variant:13s} bound -> all Running {total:6.2f}s  "
            f"startup p50 {pct(startups, 50):5.2f}s p99 {pct(startups, 99):5.2f}s  "
            f"{calls:4.1f} engine requests/pod"
        )
        readies = [s for g in results for s in g.readies]
        if readies:
            print(
                f"  {'':22s}bound -> Ready (exec readiness probe) "
                f"p50 {pct(readies, 50):5.2f}s p99 {pct(readies, 99):5.2f}s"
            )
        print(
            f"  {'':22s}ratio to compose {vs_compose:5.2f}x"
            + (f" (goal <= {GOAL_COMPOSE}x)" if pods <= 20 else "")
            + f", to the engine limit {vs_engine:5.2f}x (goal <= {GOAL_ENGINE}x)"
        )
        if variant == "all":
            if pods <= 20:
                met = vs_compose <= GOAL_COMPOSE and vs_engine <= GOAL_ENGINE
                print(f"  {'':22s}goals: {'met' if met else 'NOT met'}")
            p99 = pct(startups, 99)
            verdict = "within" if p99 <= SLO_P99 else "NOT within"
            print(f"  {'':22s}startup p99 {p99:.2f}s: {verdict} the SLO (p99 <= {SLO_P99:g} s)")


def report_process(pods: int, results: list[GitkubeRound]) -> None:
    total = statistics.median(g.total for g in results)
    startups = [s for g in results for s in g.startups]
    print(
        f"\n{pods} pods as processes, {len(results)} rounds: bound -> all Running "
        f"{total:6.2f}s (median); startup p50 {pct(startups, 50):5.2f}s "
        f"p99 {pct(startups, 99):5.2f}s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", default="20,100", help="pod counts, comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtime", default="docker,process")
    parser.add_argument(
        "--variants",
        default="all",
        help=f"gitkube configurations for Docker: {', '.join(VARIANTS)} (comma-separated)",
    )
    parser.add_argument("--image", default="gitkube-test/busybox:latest")
    parser.add_argument(
        "--probe",
        action="store_true",
        help="give each pod an exec readiness probe (true, every 1 s); time bound -> Ready",
    )
    args = parser.parse_args()
    counts = [int(n) for n in args.pods.split(",")]
    runtimes = args.runtime.split(",")
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        print(f"error: unknown variants {unknown}; known: {list(VARIANTS)}", file=sys.stderr)
        return 1
    if "docker" in runtimes:
        for tool in ("docker", "docker-compose"):
            if shutil.which(tool) is None:
                print(f"error: `{tool}` is not installed", file=sys.stderr)
                return 1
        if sh("docker", "image", "inspect", args.image, check=False).returncode != 0:
            print(
                f"error: image {args.image} is not present; run scripts/make-test-image.sh",
                file=sys.stderr,
            )
            return 1

    docker_rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in counts}
    process_rounds: dict[int, list[GitkubeRound]] = {n: [] for n in counts}
    workdir = Path(tempfile.mkdtemp(prefix="gkbench-"))
    try:
        for round_no in range(args.rounds):
            for pods in counts:
                tag = f"{round_no}-{pods}"
                if "docker" in runtimes:
                    result: dict[str, Any] = {}
                    phases: list[str] = [*variants, "compose", "engine"]
                    shift = round_no % len(phases)
                    for phase in phases[shift:] + phases[:shift]:
                        if phase == "compose":
                            result[phase] = bench_compose(pods, args.image, workdir)
                        elif phase == "engine":
                            result[phase] = engine_limit(pods, image=args.image, command=COMMAND)
                        else:
                            result[phase] = asyncio.run(
                                bench_gitkube(
                                    pods,
                                    args.image,
                                    workdir,
                                    f"{tag}-{phase}",
                                    kind="docker",
                                    variant=phase,
                                    probe=args.probe,
                                )
                            )
                    docker_rounds[pods].append(result)
                    print(
                        f"round {round_no + 1}, {pods} pods: "
                        + ", ".join(f"{v} {result[v].total:.2f}s" for v in variants)
                        + f"; compose {result['compose']:.2f}s; "
                        f"engine {result['engine'][0]:.2f}s ({result['engine'][1]} in flight)",
                        flush=True,
                    )
                if "process" in runtimes:
                    process_rounds[pods].append(
                        asyncio.run(
                            bench_gitkube(
                                pods, args.image, workdir, f"{tag}-p", kind="process", variant="all"
                            )
                        )
                    )
                    print(
                        f"round {round_no + 1}, {pods} pods as processes: "
                        f"{process_rounds[pods][-1].total:.2f}s",
                        flush=True,
                    )
    finally:
        for pods in counts:
            with contextlib.suppress(Exception):
                compose(compose_file(pods, args.image, workdir), "down", "-t", "0", check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    for pods in counts:
        if "docker" in runtimes:
            report_docker(pods, docker_rounds[pods], variants)
        if "process" in runtimes:
            report_process(pods, process_rounds[pods])
    return 0


if __name__ == "__main__":
    sys.exit(main())
