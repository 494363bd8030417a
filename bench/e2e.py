"""End-to-end benchmark of gitkube run (issue 7 item 9), all in one run:

(a) from `git push` to all pods Running and Ready, for 20 (and 100) pods
    through Docker: an RC of busybox httpd replicas with an HTTP readiness
    probe, synced by an in-process `gitkube run` operator (Docker runtime,
    embedded SQLite store) told of the push by a signed webhook; beside
    `docker-compose up -d` of the same workload (the same number of services,
    same image, command and published port, a healthcheck with the same 1 s
    period as the probe), and beside the engine's own limit (``bench/engine.py``:
    the same containers, port published, created and started through the
    Docker SDK with 4, 6 and 8 calls in flight, the fastest). Compose is
    timed to all containers running (when `up -d` returns) and to all
    healthy (with more than 20 services compose's healthchecks, execs every
    second, keep the engine from ever reporting them all healthy here, so
    larger runs leave them out and time `up -d` only). Ratios are per
    round, against the peers measured beside it.
    Goals (20 pods): push -> all Running at most 0.6x `docker-compose up -d`
    and 1.3x the engine limit; push -> Ready at most 1.0x compose healthy.
(b) from `git push` to Synced in the store, for a change of 100 objects (100
    files, one RC each) announced by a signed webhook: sequential runs, p50 and
    p90. Goal: p50 under 200 ms. (Status write-back is off here: it commits
    after the state is Synced, off the measured path.)

(c) a rolling update of a Deployment of 20 replicas (maxSurge 25%,
    maxUnavailable 25%) through Docker: from `git push` of a template change
    to the rollout complete (every replica updated and available, as
    `gitkube rollout status` reads it), with the lowest count of available
    pods seen on the way (it must stay at or above replicas - maxUnavailable).

Argo CD polls every 120 s plus jitter by default and Flux bootstraps with a
1-minute source interval; both are printed beside (b) as context.

    python bench/e2e.py [--pods 20,100] [--rounds 3] [--changes 20] [--objects 100]
                        [--only a,b,c]

(``--pods``: the pod counts of (a); (c) rolls out the first.)

Every container (labelled with the bench's node names, and the compose
project) and every process is removed at the end, on failure too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import logging
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402

from bench.engine import CPUS, Round, engine_limit, machine_cpu_seconds  # noqa: E402
from gitkube.api.keys import SYNC_STATE_KEY  # noqa: E402
from gitkube.api.objects import Deployment, Pod, ReplicationController  # noqa: E402
from gitkube.api.rollout import REVISION, rollout_state  # noqa: E402
from gitkube.config import resolve_settings  # noqa: E402
from gitkube.nodes.runtime.base import LABEL_NODE  # noqa: E402
from gitkube.operator import Operator  # noqa: E402
from gitkube.server.webhooks import sign  # noqa: E402
from gitkube.sync.state import SyncState  # noqa: E402

SECRET = "bench-e2e-secret"
COMPOSE_PROJECT = "gkbenche2e"
SERVE = "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8000 -h /www"
ARGO_POLL_S = 120.0  # Argo CD timeout.reconciliation default, plus jitter
FLUX_INTERVAL_S = 60.0  # `flux bootstrap` GitRepository interval
GOAL_SYNC_P50_S = 0.2
GOAL_COMPOSE_RATIO = 1.0
GOAL_RUNNING_COMPOSE = 0.6
GOAL_RUNNING_ENGINE = 1.3

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


def sh(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Repo:
    """A bare remote and a work clone; pushes with the real `git push`."""

    def __init__(self, root: Path) -> None:
        self.bare = root / "remote.git"
        self.work = root / "work"
        git("init", "--quiet", "--bare", "--initial-branch=main", str(self.bare))
        git("init", "--quiet", "--initial-branch=main", str(self.work))
        git("remote", "add", "origin", str(self.bare), cwd=self.work)

    def write(self, path: str, text: str) -> None:
        (self.work / path).parent.mkdir(parents=True, exist_ok=True)
        (self.work / path).write_text(text)

    def commit(self, message: str) -> str:
        git("add", "-A", cwd=self.work)
        git("commit", "--quiet", "--allow-empty", "-m", message, cwd=self.work)
        return git("rev-parse", "HEAD", cwd=self.work)

    def push(self) -> None:
        git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=self.work)


# ---------------------------------------------------------------- the operator


class Running:
    def __init__(self, repo: Repo, state: Path, **extra: Any) -> None:
        flags = {
            "repo": str(repo.bare),
            "state_dir": str(state),
            "listen": f"127.0.0.1:{free_port()}",
            "interval": "60s",
            "webhook_secret": SECRET,
            "watch": False,  # the webhook announces each push
            "node_grace": "20s",
            # this benchmark measures the userspace proxy's path; never program
            # nftables in the machine's own network namespace
            "proxy_mode": "userspace",
            **extra,
        }
        settings, _ = resolve_settings(flags, environ={})
        self.operator = Operator(settings)
        self.stop = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Running:
        self.task = asyncio.create_task(self.operator.run(self.stop))
        while not (self.operator.http and self.operator.http.port):
            if self.task.done():
                self.task.result()
            await asyncio.sleep(0.02)
        await asyncio.wait_for(self.operator.synced_once.wait(), 60)
        self.session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.session is not None:
            await self.session.close()
        self.stop.set()
        if self.task is not None:
            await asyncio.wait_for(self.task, 60)

    async def webhook(self, revision: str) -> None:
        assert self.operator.http is not None and self.session is not None
        body = json.dumps({"ref": "refs/heads/main", "after": revision}).encode()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET.encode(), body)}
        url = f"http://127.0.0.1:{self.operator.http.port}/hooks/github"
        async with self.session.post(url, data=io.BytesIO(body), headers=headers) as resp:
            if resp.status != 202:
                raise RuntimeError(f"webhook answered {resp.status}: {await resp.text()}")

    async def push(self, repo: Repo, revision: str) -> None:
        await asyncio.to_thread(repo.push)
        await self.webhook(revision)


# ---------------------------------------------------------------- (a) 20 pods


def web_rc(replicas: int, image: str) -> str:
    return f"""\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: {replicas}
  selector: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "{SERVE}"]
        ports:
        - {{name: http, containerPort: 8000}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
"""


def remove_node_containers(node: str) -> None:
    ids = sh("docker", "ps", "-aq", "--filter", f"label={LABEL_NODE}={node}", check=False)
    if ids.stdout.split():
        sh("docker", "rm", "-f", *ids.stdout.split(), check=False)


async def bench_gitkube_pods(
    pods: int, image: str, workdir: Path, nodes: list[str]
) -> dict[str, float]:
    node = f"bench-e2e-{uuid.uuid4().hex[:6]}"
    nodes.append(node)
    root = workdir / node
    repo = Repo(root)
    repo.write("README.md", "manifests land here\n")
    repo.commit("empty")
    repo.push()
    try:
        async with Running(repo, root / "state", runtime="docker", node=node) as running:
            op = running.operator
            assert op.objects is not None
            while not op.agents or not op.agents[0].heartbeat.beats:  # registered, idle
                await asyncio.sleep(0.02)
            repo.write("web.yaml", web_rc(pods, image))
            sha = repo.commit(f"{pods} web pods")
            own_cpu, machine_cpu = process_cpu_seconds(), machine_cpu_seconds()
            started = time.perf_counter()
            await running.push(repo, sha)
            running_at = bound_at = 0.0
            cpu: dict[str, float] = {}
            # the operator's own cache (fed by the store watch): reading the
            # store itself every few ms would cost the operator's process CPU
            cache = op.cache
            assert cache is not None
            while True:
                rc = cache.get(ReplicationController, "default", "web")
                if not running_at:
                    listed = cache.list(Pod, "default")
                    if not bound_at and sum(bool(p.spec.node_name) for p in listed) >= pods:
                        bound_at = time.perf_counter() - started
                    if sum(p.status.phase == "Running" for p in listed) >= pods:
                        running_at = time.perf_counter() - started
                        cpu = {
                            "cpu_gitkube": process_cpu_seconds() - own_cpu,
                            "cpu_machine": machine_cpu_seconds() - machine_cpu,
                        }
                if rc is not None and rc.status.ready_replicas >= pods:
                    ready_at = time.perf_counter() - started
                    break
                if time.perf_counter() - started > 180:
                    raise RuntimeError(f"gitkube: {pods} pods not Ready after 180 s")
                await asyncio.sleep(0.02)
            # clean up through git, then make sure
            repo.write("web.yaml", web_rc(0, image))
            await running.push(repo, await asyncio.to_thread(repo.commit, "zero"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed, _ = await op.objects.list(Pod)
                if not listed:
                    break
                await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(remove_node_containers, node)
    return {
        "running": running_at or ready_at,
        "ready": ready_at,
        "bound": bound_at or ready_at,
        **cpu,
    }


def process_cpu_seconds() -> float:
    """CPU time of this process (the operator runs in it) and of its children (git)."""
    own, children = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


#: compose's healthchecks are execs in the containers: beyond this many
#: services, every second, they keep the engine from ever reporting all of
#: them healthy on a small machine (100: not all healthy in 180 s), so larger
#: runs time `up -d` only, without healthchecks
HEALTHCHECKED_SERVICES = 20


def compose_file(pods: int, image: str, workdir: Path) -> Path:
    lines = ['version: "2.4"', "services:"]
    command = json.dumps(["sh", "-c", SERVE.replace("$", "$$")])
    for i in range(pods):
        lines += [
            f"  web{i}:",
            f"    image: {image}",
            f"    command: {command}",
            "    ports: ['127.0.0.1::8000']",
            "    stop_grace_period: 0s",
        ]
        if pods > HEALTHCHECKED_SERVICES:
            continue
        lines += [
            "    healthcheck:",
            '      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:8000/"]',
            "      interval: 1s",
            "      timeout: 1s",
            "      retries: 1",
        ]
    path = workdir / "docker-compose.yml"
    path.write_text("\n".join(lines) + "\n")
    return path


def compose(path: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("docker-compose", "-p", COMPOSE_PROJECT, "-f", str(path), *args, check=check)


def bench_compose(pods: int, image: str, workdir: Path) -> dict[str, float]:
    path = compose_file(pods, image, workdir)
    compose(path, "down", "-t", "0", "--remove-orphans", check=False)
    try:
        started = time.perf_counter()
        compose(path, "up", "-d")
        running_at = time.perf_counter() - started
        if pods > HEALTHCHECKED_SERVICES:
            return {"running": running_at, "ready": float("nan")}
        label = f"label=com.docker.compose.project={COMPOSE_PROJECT}"
        while True:
            healthy = sh("docker", "ps", "-q", "--filter", label, "--filter", "health=healthy")
            if len(healthy.stdout.split()) >= pods:
                return {"running": running_at, "ready": time.perf_counter() - started}
            if time.perf_counter() - started > 180:
                raise RuntimeError("compose: containers not healthy after 180 s")
            time.sleep(0.05)
    finally:
        compose(path, "down", "-t", "0", "--remove-orphans", check=False)


# ---------------------------------------------------------------- (b) push to Synced


def many_rcs(n: int, generation: int) -> dict[str, str]:
    return {
        f"apps/app-{i:03d}.yaml": f"""\
apiVersion: v1
kind: ReplicationController
metadata:
  name: app-{i:03d}
  labels: {{app: app-{i:03d}, generation: "g{generation}"}}
spec:
  replicas: 0
  selector: {{app: app-{i:03d}}}
  template:
    metadata:
      labels: {{app: app-{i:03d}}}
    spec:
      containers:
      - name: main
        image: gitkube-test/busybox:latest
        command: ["sleep", "3600"]
"""
        for i in range(n)
    }


async def synced_at(running: Running, revision: str, started: float) -> float:
    store = running.operator.store
    assert store is not None
    while True:
        kv = await store.get(SYNC_STATE_KEY)
        if kv is not None:
            state = SyncState.from_json(kv.value)
            if state.revision == revision and state.phase == "Synced":
                return time.perf_counter() - started
            if state.attempted_revision == revision and state.phase == "Failed":
                raise RuntimeError(f"sync of {revision[:12]} failed: {state.message}")
        if time.perf_counter() - started > 30:
            raise RuntimeError(f"{revision[:12]} not Synced after 30 s")
        await asyncio.sleep(0.002)


async def bench_push_to_synced(objects: int, changes: int, workdir: Path) -> dict[str, list[float]]:
    root = workdir / "sync"
    repo = Repo(root)
    for path, text in many_rcs(objects, 0).items():
        repo.write(path, text)
    first = repo.commit("100 RCs")
    repo.push()
    out: dict[str, list[float]] = {"push": [], "webhook": [], "total": []}
    async with Running(repo, root / "state", nodes=0, writeback=False) as running:
        await synced_at(running, first, time.perf_counter())
        for generation in range(1, changes + 1):
            for path, text in many_rcs(objects, generation).items():
                repo.write(path, text)
            sha = await asyncio.to_thread(repo.commit, f"generation {generation}")
            started = time.perf_counter()
            await asyncio.to_thread(repo.push)
            pushed = time.perf_counter()
            await running.webhook(sha)
            total = await synced_at(running, sha, started)
            out["push"].append(pushed - started)
            out["webhook"].append(total - (pushed - started))
            out["total"].append(total)
            await asyncio.sleep(0.2)  # sequential: let the last pass settle
    return out


# ---------------------------------------------------------------- (c) a rollout


def web_deployment(replicas: int, image: str, version: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 25%, maxUnavailable: 25%}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "{SERVE}"]
        env:
        - {{name: VERSION, value: "{version}"}}
        ports:
        - {{name: http, containerPort: 8000}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
"""


async def _rolled_out(running: Running, revision: str) -> bool:
    assert running.operator.objects is not None
    d = await running.operator.objects.get(Deployment, "default", "web")
    return (
        d is not None
        and d.metadata.annotations.get(REVISION) == revision
        and d.status.observed_generation == d.metadata.generation
        and rollout_state(d).done
    )


async def bench_rollout(
    replicas: int, image: str, workdir: Path, nodes: list[str]
) -> dict[str, float]:
    node = f"bench-roll-{uuid.uuid4().hex[:6]}"
    nodes.append(node)
    root = workdir / node
    repo = Repo(root)
    repo.write("web.yaml", web_deployment(replicas, image, "v1"))
    repo.commit("web v1")
    repo.push()
    try:
        async with Running(repo, root / "state", runtime="docker", node=node) as running:
            op = running.operator
            assert op.objects is not None
            deadline = time.monotonic() + 240
            while not await _rolled_out(running, "1"):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"rollout: {replicas} replicas of v1 not up after 240 s")
                await asyncio.sleep(0.05)
            repo.write("web.yaml", web_deployment(replicas, image, "v2"))
            sha = repo.commit("web v2")
            lowest = replicas
            started = time.perf_counter()
            await running.push(repo, sha)
            while not await _rolled_out(running, "2"):
                listed, _ = await op.objects.list(Pod, "default")
                lowest = min(lowest, sum(p.is_ready() for p in listed))
                if time.perf_counter() - started > 240:
                    raise RuntimeError("rollout: v2 not rolled out after 240 s")
                await asyncio.sleep(0.02)
            took = time.perf_counter() - started
            repo.write("web.yaml", web_deployment(0, image, "v2"))
            await running.push(repo, await asyncio.to_thread(repo.commit, "zero"))
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                listed, _ = await op.objects.list(Pod)
                if not listed:
                    break
                await asyncio.sleep(0.2)
    finally:
        await asyncio.to_thread(remove_node_containers, node)
    return {"rollout": took, "lowest_ready": float(lowest)}


# ---------------------------------------------------------------- main


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, workdir: Path, nodes: list[str]) -> int:
    parts = set(args.only.split(","))
    if "a" in parts:
        await run_pods(args, workdir, nodes)
    if "b" in parts:
        await run_sync(args, workdir)
    if "c" in parts:
        await run_rollout(args, workdir, nodes)
    return 0


async def run_rollout(args: argparse.Namespace, workdir: Path, nodes: list[str]) -> None:
    replicas = int(args.pods.split(",")[0])
    results = []
    for round_no in range(args.rounds):
        results.append(await bench_rollout(replicas, args.image, workdir, nodes))
        print(
            f"rollout round {round_no + 1}: push -> rolled out {results[-1]['rollout']:.2f}s, "
            f"lowest ready {results[-1]['lowest_ready']:.0f}/{replicas}",
            flush=True,
        )
    took = statistics.median(r["rollout"] for r in results)
    lowest = min(r["lowest_ready"] for r in results)
    floor = replicas - replicas * 25 // 100
    print(
        f"\n(c) rolling update of {replicas} replicas (maxSurge 25%, maxUnavailable 25%) "
        f"through Docker, median of {args.rounds} rounds:"
    )
    print(f"  git push -> rollout complete              {took:6.2f}s")
    print(f"  per replica                               {took / replicas:6.2f}s")
    print(
        f"  lowest ready pods during the rollouts     {lowest:6.0f}  "
        f"(floor replicas - maxUnavailable = {floor}: {verdict(lowest >= floor)})"
    )


async def run_pods(args: argparse.Namespace, workdir: Path, nodes: list[str]) -> None:
    for pods in [int(n) for n in args.pods.split(",")]:
        await run_pods_of(pods, args, workdir, nodes)


async def run_pods_of(pods: int, args: argparse.Namespace, workdir: Path, nodes: list[str]) -> None:
    gk: list[dict[str, float]] = []
    dc: list[dict[str, float]] = []
    engine: list[Round] = []
    command = ["sh", "-c", SERVE]
    for round_no in range(args.rounds):
        # the three take turns at going first
        phases = ["gitkube", "compose", "engine"]
        shift = round_no % 3
        for phase in phases[shift:] + phases[:shift]:
            if phase == "gitkube":
                gk.append(await bench_gitkube_pods(pods, args.image, workdir, nodes))
            elif phase == "compose":
                dc.append(await asyncio.to_thread(bench_compose, pods, args.image, workdir))
            else:
                limit, _ = await asyncio.to_thread(
                    engine_limit, pods, image=args.image, command=command, port=8000
                )
                engine.append(limit)
        print(
            f"round {round_no + 1}, {pods} pods: gitkube push->bound {gk[-1]['bound']:.2f}s "
            f"->running {gk[-1]['running']:.2f}s "
            f"push->ready {gk[-1]['ready']:.2f}s; docker-compose up -d {dc[-1]['running']:.2f}s "
            f"->healthy {dc[-1]['ready']:.2f}s; engine limit {engine[-1]:.2f}s".replace(
                "->healthy nans; ", ""
            ),
            flush=True,
        )
    g = {k: statistics.median(r[k] for r in gk) for k in ("bound", "running", "ready")}
    c = {k: statistics.median(r[k] for r in dc) for k in ("running", "ready")}
    e = statistics.median(engine)
    vs_compose = statistics.median(a["running"] / b["running"] for a, b in zip(gk, dc, strict=True))
    vs_engine = statistics.median(a["running"] / b for a, b in zip(gk, engine, strict=True))
    ratio_ready = statistics.median(a["ready"] / b["ready"] for a, b in zip(gk, dc, strict=True))
    goals = pods <= 20
    print(f"\n(a) {pods} pods through Docker, median of {args.rounds} rounds (ratios per round):")
    print(f"  gitkube: git push -> all pods bound       {g['bound']:6.2f}s")
    print(f"  gitkube: git push -> all pods Running     {g['running']:6.2f}s")
    print(f"  gitkube: git push -> all pods Ready       {g['ready']:6.2f}s")
    print(f"  docker-compose up -d (all running)        {c['running']:6.2f}s")
    if pods <= HEALTHCHECKED_SERVICES:
        print(f"  docker-compose up -d -> all healthy       {c['ready']:6.2f}s")
    print(f"  engine limit (SDK, best of 4/6/8)        {e:6.2f}s")
    floor = statistics.median(r.cpu for r in engine) / CPUS
    print(
        f"  the engine's CPU floor for them           {floor:6.2f}s  (the machine's CPU time "
        f"in the engine-limit round / {CPUS} CPUs)"
    )
    compose_engine = statistics.median(b["running"] / x for b, x in zip(dc, engine, strict=True))
    print(
        f"  compose up -d / engine limit:             {compose_engine:6.2f}x"
        + (
            f" (so {GOAL_RUNNING_COMPOSE}x compose is "
            f"{GOAL_RUNNING_COMPOSE * compose_engine:.2f}x the engine limit, "
            f"{GOAL_RUNNING_COMPOSE * c['running'] / floor:.2f}x its CPU floor)"
            if goals
            else ""
        )
    )
    if goals:
        # what no client of this engine beats for these containers: the bare
        # SDK loop (best of three parallelisms) is held to the same goal
        bare = [x / b["running"] for b, x in zip(dc, engine, strict=True)]
        met = sum(x <= GOAL_RUNNING_COMPOSE for x in bare)
        print(
            f"  engine limit / compose up -d:             {statistics.median(bare):6.2f}x "
            f"(rounds {', '.join(f'{x:.2f}' for x in bare)}: the bare SDK loop itself "
            f"meets <= {GOAL_RUNNING_COMPOSE}x in {met} of {len(bare)})"
        )
    if all("cpu_gitkube" in r for r in gk):
        own = statistics.median(r["cpu_gitkube"] for r in gk)
        machine = statistics.median(r["cpu_machine"] for r in gk)
        print(
            f"  push -> all Running: gitkube's process {own:.2f} CPU-s of the machine's "
            f"{machine:.2f} ({own / machine:.0%})"
        )
    rounds = ", ".join(f"{a['running'] / b['running']:.2f}" for a, b in zip(gk, dc, strict=True))
    print(
        f"  ratio gitkube Running / compose up -d:    {vs_compose:6.2f}x (rounds {rounds})"
        + (
            f" (goal <= {GOAL_RUNNING_COMPOSE}x: {verdict(vs_compose <= GOAL_RUNNING_COMPOSE)})"
            if goals
            else ""
        )
    )
    print(
        f"  ratio gitkube Running / engine limit:     {vs_engine:6.2f}x"
        + (
            f" (goal <= {GOAL_RUNNING_ENGINE}x: {verdict(vs_engine <= GOAL_RUNNING_ENGINE)})"
            if goals
            else ""
        )
    )
    if pods > HEALTHCHECKED_SERVICES:
        return  # compose ran without healthchecks
    print(
        f"  ratio gitkube Ready / compose healthy:    {ratio_ready:6.2f}x"
        + (
            f" (goal <= {GOAL_COMPOSE_RATIO:.1f}x: {verdict(ratio_ready <= GOAL_COMPOSE_RATIO)})"
            if goals
            else ""
        )
    )


async def run_sync(args: argparse.Namespace, workdir: Path) -> None:
    sync = await bench_push_to_synced(args.objects, args.changes, workdir)
    p50, p90 = pct(sync["total"], 50), pct(sync["total"], 90)
    print(
        f"\n(b) git push -> Synced in the store, {args.objects}-object change, {args.changes} runs:"
    )
    print(
        f"  p50 {p50 * 1000:7.1f} ms   p90 {p90 * 1000:7.1f} ms   "
        f"max {max(sync['total']) * 1000:7.1f} ms"
    )
    print(
        f"  of which `git push` p50 {pct(sync['push'], 50) * 1000:.1f} ms; "
        f"webhook -> Synced p50 {pct(sync['webhook'], 50) * 1000:.1f} ms"
    )
    print(f"  goal p50 < {GOAL_SYNC_P50_S * 1000:.0f} ms: {verdict(p50 < GOAL_SYNC_P50_S)}")
    print(
        f"  context (without a webhook receiver): Argo CD polls every {ARGO_POLL_S:.0f} s "
        f"+ jitter,\n  {ARGO_POLL_S / p50:.0f}x the p50; Flux's {FLUX_INTERVAL_S:.0f} s source "
        f"interval is {FLUX_INTERVAL_S / p50:.0f}x the p50"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", default="20,100", help="pod counts of (a), comma-separated")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=20, help="sequential pushes in (b)")
    parser.add_argument("--objects", type=int, default=100, help="objects changed per push in (b)")
    parser.add_argument("--image", default="gitkube-test/busybox:latest")
    parser.add_argument(
        "--only", default="a,b,c", help="parts to run: a (pods), b (push to Synced), c (rollout)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR)
    for tool in ("git", "docker", "docker-compose"):
        if shutil.which(tool) is None:
            print(f"error: `{tool}` is not installed", file=sys.stderr)
            return 1
    if sh("docker", "image", "inspect", args.image, check=False).returncode != 0:
        print(
            f"error: image {args.image} is missing; run scripts/make-test-image.sh", file=sys.stderr
        )
        return 1
    workdir = Path(tempfile.mkdtemp(prefix="gkbench-e2e-"))
    nodes: list[str] = []
    try:
        return asyncio.run(run(args, workdir, nodes))
    finally:
        for node in nodes:
            remove_node_containers(node)
        with contextlib.suppress(Exception):
            for pods in args.pods.split(","):
                compose(
                    compose_file(int(pods), args.image, workdir), "down", "-t", "0", check=False
                )
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
