"""Agent benchmark: 20 pods to Running through the Docker runtime, against
`docker run -d` in a loop and `docker-compose up -d` of the same containers.

    python bench/agent.py [--pods 20] [--rounds 3] [--image gitkube-test/busybox:latest]

Each round, on the local Docker engine with the local busybox image:

1. gitkube: an agent (DockerRuntime, embedded SQLite store) is running and
   idle; N pods bound to its node are written in one transaction; the clock
   runs until the store shows all N pods Running. Each pod is a sandbox
   (pause container) plus one container, as kubelet runs it, so gitkube
   starts 2N containers to the others' N;
2. `docker run -d` of the same N containers, one after the other;
3. `docker-compose up -d` of a compose file with the same N services
   (Debian's docker-compose 1.29).

Prints each figure (median over the rounds) and the ratios gitkube/compose
(goal <= 1.0) and gitkube/docker-run. Every container is removed after each
phase, and at the end even on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitkube.api.objects import Container, ObjectMeta, Pod, PodSpec  # noqa: E402
from gitkube.nodes.agent import Agent, AgentSettings  # noqa: E402
from gitkube.nodes.registration import NodeSettings  # noqa: E402
from gitkube.nodes.runtime.docker import DockerRuntime  # noqa: E402
from gitkube.store.factory import open_store  # noqa: E402
from gitkube.store.objects import ObjectStore  # noqa: E402

NODE = "bench-node"
RUN_PREFIX = "gkbench-run-"
COMPOSE_PROJECT = "gkbench"
COMMAND = ["sleep", "3600"]


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=300)


# ---------------------------------------------------------------- gitkube


async def wipe(runtime: DockerRuntime) -> None:
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


async def bench_gitkube(pods: int, image: str, workdir: Path, round_no: int) -> float:
    store = await open_store(f"sqlite:///{workdir}/state-{round_no}.db")
    objects = ObjectStore(store)
    runtime = await asyncio.to_thread(DockerRuntime.connect, node_name=NODE)
    await wipe(runtime)
    await runtime.ensure_sandbox_image()
    agent = Agent(
        objects,
        runtime,
        node=NodeSettings(name=NODE, address="127.0.0.1", runtime_name="docker"),
        settings=AgentSettings(relist_seconds=1.0),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        while agent.heartbeat.beats == 0:  # registered and idle
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        batch = [
            objects.prepare_create(
                Pod(
                    metadata=ObjectMeta(name=f"bench-{i}"),
                    spec=PodSpec(
                        node_name=NODE,
                        termination_grace_period_seconds=0,
                        containers=[Container(name="main", image=image, command=COMMAND)],
                    ),
                )
            )
            for i in range(pods)
        ]
        ops = [objects.create_ops(p) for p in batch]
        await objects.apply([c for c, _ in ops], [p for _, p in ops])
        started = time.perf_counter()
        while True:
            listed, _ = await objects.list(Pod)
            if sum(1 for p in listed if p.status.phase == "Running") == pods:
                break
            if time.perf_counter() - started > 120:
                raise RuntimeError("gitkube: pods not Running after 120 s")
            await asyncio.sleep(0.01)
        return time.perf_counter() - started
    finally:
        stop.set()
        await task
        await wipe(runtime)
        await runtime.close()
        await store.close()


# ---------------------------------------------------------------- docker run


def clean_docker_run(pods: int) -> None:
    names = [f"{RUN_PREFIX}{i}" for i in range(pods)]
    sh("docker", "rm", "-f", *names, check=False)


def bench_docker_run(pods: int, image: str) -> float:
    clean_docker_run(pods)
    started = time.perf_counter()
    try:
        for i in range(pods):
            sh("docker", "run", "-d", "--name", f"{RUN_PREFIX}{i}", image, *COMMAND)
        return time.perf_counter() - started
    finally:
        clean_docker_run(pods)


# ---------------------------------------------------------------- docker-compose


def compose_file(pods: int, image: str, workdir: Path) -> Path:
    lines = ['version: "3"', "services:"]
    for i in range(pods):
        lines += [f"  svc{i}:", f"    image: {image}", f"    command: {COMMAND!r}"]
    path = workdir / "docker-compose.yml"
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--image", default="gitkube-test/busybox:latest")
    args = parser.parse_args()
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

    times: dict[str, list[float]] = {"gitkube": [], "docker run": [], "docker-compose": []}
    workdir = Path(tempfile.mkdtemp(prefix="gkbench-"))
    try:
        for round_no in range(args.rounds):
            times["gitkube"].append(
                asyncio.run(bench_gitkube(args.pods, args.image, workdir, round_no))
            )
            times["docker run"].append(bench_docker_run(args.pods, args.image))
            times["docker-compose"].append(bench_compose(args.pods, args.image, workdir))
            print(
                f"round {round_no + 1}: "
                + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()),
                flush=True,
            )
    finally:
        clean_docker_run(args.pods)
        with contextlib.suppress(Exception):
            compose(compose_file(args.pods, args.image, workdir), "down", "-t", "0", check=False)
        shutil.rmtree(workdir, ignore_errors=True)

    median = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{args.pods} containers to running, median of {args.rounds} rounds:")
    print(f"  gitkube (bound in store -> all Running): {median['gitkube']:.2f}s")
    print(f"  docker run -d, in a loop:                {median['docker run']:.2f}s")
    print(f"  docker-compose up -d:                    {median['docker-compose']:.2f}s")
    ratio_compose = median["gitkube"] / median["docker-compose"]
    ratio_run = median["gitkube"] / median["docker run"]
    print(f"  ratio gitkube / docker-compose: {ratio_compose:.2f}x (goal <= 1.0x)")
    print(f"  ratio gitkube / docker run:     {ratio_run:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
