"""The Docker engine's own limit: N containers created and started through
the Docker SDK with K calls in flight, no gitkube, no compose.

    python bench/engine.py [--pods 20] [--in-flight 1,2,4,6,8,16] [--rounds 3]
                           [--port 0] [--image gitkube-test/busybox:latest]

Each container is what one single-container pod is (the same image and
command; with ``--port P``, container port P published on a free port of
127.0.0.1, as compose and gitkube publish it). A round creates and starts
all N with K create+start calls in flight (threads of the low-level API
client, one HTTP request per call, as the SDK makes them) and stops the clock
when the last start has returned; then everything is removed. Prints the
median per K and the best K: that is the limit ``bench/agent.py`` and
``bench/e2e.py`` hold gitkube to (and how the Docker runtime's
``start_parallelism`` was sized).

``engine_limit()`` is the same measurement for the other benchmarks, in
their own runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import docker

LABEL = "io.gitkube.bench.engine"
DEFAULT_COMMAND = ["sleep", "3600"]


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
) -> float:
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
        started = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(one, range(pods)))
        return time.perf_counter() - started
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
) -> tuple[float, int]:
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
    args = parser.parse_args()
    levels = [int(k) for k in args.in_flight.split(",")]
    times: dict[int, list[float]] = {k: [] for k in levels}
    for round_no in range(args.rounds):
        # the levels take turns at going first, so drift falls on all of them
        order = levels[round_no % len(levels) :] + levels[: round_no % len(levels)]
        for k in order:
            times[k].append(engine_round(args.pods, k, image=args.image, port=args.port))
        print(
            f"round {round_no + 1}: "
            + ", ".join(f"{k} in flight {times[k][-1]:.2f}s" for k in levels),
            flush=True,
        )
    print(f"\n{args.pods} containers created and started, median of {args.rounds} rounds:")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for k in levels:
        print(
            f"  {k:3d} in flight: {medians[k]:6.2f}s  "
            f"({medians[k] / args.pods * 1000:5.0f} ms/container)"
        )
    best = min(medians, key=lambda k: medians[k])
    print(f"  fastest: {best} in flight, {medians[best]:.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
