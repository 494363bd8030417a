"""Runtime benchmark: start N pods (sandbox + container) through DockerRuntime,
one by one and concurrently, against `docker-compose up -d` of N containers.

    python bench/runtime.py [--pods 20] [--image gitkube-test/busybox:latest]

This is the runtime alone (no store, no agent loop): the floor under
bench/agent.py. Each pod is two containers (the pause sandbox and the pod's
container, as kubelet runs it), against compose's one per service. Prints
each figure and the ratios to compose; removes every container it started,
also on failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gitkube.api.objects import Container, ContainerPort, ObjectMeta, Pod, PodSpec  # noqa: E402
from gitkube.nodes.runtime.docker import DockerRuntime  # noqa: E402

COMPOSE_PROJECT = "gkbenchruntime"


def make_pods(count: int, image: str, tag: str) -> list[Pod]:
    return [
        Pod(
            metadata=ObjectMeta(name=f"{tag}-{i}", uid=uuid.uuid4().hex),
            spec=PodSpec(
                containers=[
                    Container(
                        name="main",
                        image=image,
                        command=["sleep", "3600"],
                        ports=[ContainerPort(container_port=8080)],
                    )
                ]
            ),
        )
        for i in range(count)
    ]


async def start_pods(runtime: DockerRuntime, pods: list[Pod], *, concurrent: bool) -> float:
    async def one(pod: Pod) -> None:
        sandbox = await runtime.start_sandbox(pod, node_address="127.0.0.1")
        await runtime.start_container(pod, sandbox, pod.spec.containers[0], attempt=0)

    began = time.monotonic()
    if concurrent:
        await asyncio.gather(*(one(p) for p in pods))
    else:
        for pod in pods:
            await one(pod)
    return time.monotonic() - began


async def clear(runtime: DockerRuntime) -> None:
    await asyncio.gather(*(runtime.remove_sandbox(s.id) for s in await runtime.list_sandboxes()))
    await asyncio.gather(*(runtime.remove_container(c.id) for c in await runtime.list_containers()))


def compose_up(count: int, image: str, directory: Path) -> float:
    lines = ['version: "2.4"', "services:"]
    for i in range(count):
        lines += [
            f"  s{i}:",
            f"    image: {image}",
            '    command: ["sleep", "3600"]',
            "    network_mode: bridge",
            '    ports: ["127.0.0.1::8080"]',
        ]
    (directory / "docker-compose.yml").write_text("\n".join(lines) + "\n")
    began = time.monotonic()
    subprocess.run(
        ["docker-compose", "-p", COMPOSE_PROJECT, "up", "-d"],
        cwd=directory,
        check=True,
        capture_output=True,
    )
    return time.monotonic() - began


def compose_down(directory: Path) -> None:
    subprocess.run(
        ["docker-compose", "-p", COMPOSE_PROJECT, "down", "-t", "0"],
        cwd=directory,
        capture_output=True,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--image", default="gitkube-test/busybox:latest")
    parser.add_argument(
        "--workers", type=int, default=32, help="concurrent Docker API calls of the runtime"
    )
    parser.add_argument("--skip-sequential", action="store_true")
    args = parser.parse_args()
    runtime = DockerRuntime.connect(
        node_name=f"bench-{uuid.uuid4().hex[:6]}", max_workers=args.workers
    )
    directory = Path(tempfile.mkdtemp(prefix="gk-bench-runtime-"))
    try:
        await runtime.ensure_sandbox_image()
        await runtime.ensure_image(args.image)
        sequential = None
        if not args.skip_sequential:
            sequential = await start_pods(
                runtime, make_pods(args.pods, args.image, "seq"), concurrent=False
            )
            await clear(runtime)
        concurrent = await start_pods(
            runtime, make_pods(args.pods, args.image, "con"), concurrent=True
        )
        await clear(runtime)
        compose = None
        if shutil.which("docker-compose"):
            compose = compose_up(args.pods, args.image, directory)
            compose_down(directory)
        n = args.pods
        if sequential is not None:
            print(f"DockerRuntime, {n} pods one by one:   {sequential:6.2f} s")
        print(f"DockerRuntime, {n} pods concurrently: {concurrent:6.2f} s ({args.workers} workers)")
        if sequential is not None:
            print(f"speed-up of concurrency:             {sequential / concurrent:6.2f}x")
        if compose is not None:
            print(f"docker-compose up -d, {n} services:  {compose:6.2f} s")
            print(f"ratio concurrent / compose:          {concurrent / compose:6.2f}")
            if sequential is not None:
                print(f"ratio one-by-one / compose:          {sequential / compose:6.2f}")
        else:
            print("docker-compose not installed: no comparison")
    finally:
        with contextlib.suppress(Exception):
            await clear(runtime)
        compose_down(directory)
        shutil.rmtree(directory, ignore_errors=True)
        await runtime.close()


if __name__ == "__main__":
    asyncio.run(main())
