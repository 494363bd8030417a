"""The Docker engine's own limit: N containers created and started through
the Docker SDK with K calls in flight, no gitkube, no compose.

    python bench/engine.py [--pods 20] [--in-flight 1,2,4,6,8,16] [--rounds 3]
                           [--port 0] [--image gitkube-test/busybox:latest]
                           [--publish-cost]

Each container is what one single-container pod is (the same image and
command; with ``--port P``, container port P published on a free port of
127.0.0.1, as compose and gitkube publish it). A round creates and starts
all N with K create+start calls in flight (threads of the low-level API
client, one HTTP request per call, as the SDK makes them) and stops the clock
when the last start has returned; then everything is removed. Prints the
median per K and the best K: that is the limit ``bench/agent.py`` and
``bench/e2e.py`` hold gitkube to (and how the Docker runtime's
``start_parallelism`` was sized).

Each figure comes with the machine's CPU time over the round (all
processes, from /proc/stat) per container: what the engine, containerd,
runc and the kernel spend to start one. Divided by the number of CPUs it is
a floor no client of the engine gets under, however it orders its calls.

``--publish-cost`` runs every round twice, with ``--port`` published and
without (paired, taking turns at going first), and prints what publishing
costs: of the engine's work per container, the only part a client could do
another way (iptables rules and a docker-proxy per port, in the engine).

``engine_limit()`` is the same measurement for the other benchmarks, in
their own runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

CPUS = os.cpu_count() or 1
LABEL = "io.gitkube.bench.engine"
DEFAULT_COMMAND = ["sleep", "3600"]


def machine_cpu_seconds() -> float:
    """CPU time the whole machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Round(float):
    """Seconds of one round, with the machine's CPU seconds spent in it."""

    cpu: float = 0.0


def _remove(api: docker.APIClient, run: str) -> None:
    ids = [c["Id"] for c in api.containers(all=True, filters={"label": f"{LABEL}={run}"})]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda cid: api.remove_container(cid, force=True), ids))


def engine_round(
    pods: int,
    in_flight: int,
    *,
    image: str,
    command: list[str] | None = None,
    port: int = 0,
    api: docker.APIClient | None = None,
) -> Round:
    """Seconds to create and start ``pods`` containers with ``in_flight`` calls at once."""
    own = api is None
    api = api or docker.APIClient(
        timeout=120, max_pool_size=max(32, in_flight), **docker.utils.kwargs_from_env()
    )
    run = uuid.uuid4().hex[:10]

    def one(i: int) -> None:
        extra: dict[str, Any] = {}
        host: dict[str, Any] = {}
        if port:
            extra["ports"] = [port]
            host["port_bindings"] = {port: ("127.0.0.1", None)}
        cid = api.create_container(
            image,
            command=command or DEFAULT_COMMAND,
            name=f"gkbench-engine-{run}-{i}",
            labels={LABEL: run},
            host_config=api.create_host_config(**host),
            **extra,
        )["Id"]
        api.start(cid)

    try:
        cpu = machine_cpu_seconds()
        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(one, range(pods)))
        took = Round(time.perf_counter() - started)
        took.cpu = machine_cpu_seconds() - cpu
        return took
    finally:
        _remove(api, run)
        if own:
            api.close()


def engine_limit(
    pods: int,
    *,
    image: str,
    command: list[str] | None = None,
    port: int = 0,
    in_flight: tuple[int, ...] = (4, 6, 8),
) -> tuple[Round, int]:
    """The fastest of one round per ``in_flight`` value: (seconds, calls in flight)."""
    api = docker.APIClient(timeout=120, max_pool_size=32, **docker.utils.kwargs_from_env())
    try:
        results = [
            (engine_round(pods, k, image=image, command=command, port=port, api=api), k)
            for k in in_flight
        ]
    finally:
        api.close()
    return min(results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--in-flight", default="1,2,4,6,8,16")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--port", type=int, default=0, help="container port to publish")
    parser.add_argument("--image", default="gitkube-test/busybox:latest")
    parser.add_argument(
        "--publish-cost",
        action="store_true",
        help="each round with --port published and without, paired (default port 8000)",
    )
    args = parser.parse_args()
    levels = [int(k) for k in args.in_flight.split(",")]
    ports = [args.port or 8000, 0] if args.publish_cost else [args.port]
    runs = [(k, port) for k in levels for port in ports]
    times: dict[tuple[int, int], list[Round]] = {run: [] for run in runs}

    def label(run: tuple[int, int]) -> str:
        k, port = run
        return f"{k} in flight" + (("" if port else " unpublished") if args.publish_cost else "")

    for round_no in range(args.rounds):
        # the runs take turns at going first, so drift falls on all of them
        order = runs[round_no % len(runs) :] + runs[: round_no % len(runs)]
        for k, port in order:
            times[(k, port)].append(engine_round(args.pods, k, image=args.image, port=port))
        print(
            f"round {round_no + 1}: "
            + ", ".join(f"{label(run)} {times[run][-1]:.2f}s" for run in runs),
            flush=True,
        )
    print(
        f"\n{args.pods} containers created and started, median of {args.rounds} rounds "
        f"(CPU: the whole machine's, {CPUS} CPUs):"
    )
    medians = {run: statistics.median(v) for run, v in times.items()}
    cpu = {run: statistics.median(r.cpu for r in v) for run, v in times.items()}
    for run in runs:
        print(
            f"  {label(run):26s} {medians[run]:6.2f}s  "
            f"({medians[run] / args.pods * 1000:5.0f} ms/container; "
            f"CPU {cpu[run] / args.pods * 1000:4.0f} ms/container, "
            f"floor {cpu[run] / CPUS:5.2f}s)"
        )
    best = min(medians, key=lambda run: medians[run])
    print(f"  fastest: {label(best)}, {medians[best]:.2f}s")
    if args.publish_cost:
        for k in levels:
            published, bare = times[(k, ports[0])], times[(k, 0)]
            wall = statistics.median(a / b for a, b in zip(published, bare, strict=True))
            work = statistics.median(a.cpu / b.cpu for a, b in zip(published, bare, strict=True))
            print(
                f"  publishing port {ports[0]}, {k} in flight: {wall:.2f}x the time and "
                f"{work:.2f}x the CPU of the same containers unpublished (median of pairs)"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
