"""Benchmark: the read-only Kubernetes API — list latency and watch fan-out.

    python bench/api.py [--pods 10000] [--watchers 100] [--changes 1000] [--rounds 20]

1. **List:** ``GET /api/v1/pods`` of ``--pods`` pods (JSON) and the same as a
   Table (what ``kubectl get pods`` asks for), ``--rounds`` times each: p50
   and p99 latency. The peer measured in the same run is the store's own
   range read of the same keys (the floor: what a list must at least read).
2. **Watch fan-out:** ``--watchers`` concurrent watches of pods, then
   ``--changes`` pod updates written to the store; for every change and
   every watcher, the delay from the write to the event's arrival: p50, p99
   and max, and whether every watcher saw every change in order.

Everything runs on loopback against a SQLite store in a temporary folder,
in one process (server, writer and clients share one event loop, which
makes the delivery latencies an upper bound).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from gitkube.api.objects import Container, ObjectMeta, Pod, PodSpec, PodStatus
from gitkube.server.http import HttpServer
from gitkube.server.kubeapi import KubeApi
from gitkube.server.metrics import Metrics
from gitkube.store.base import Put
from gitkube.store.objects import ObjectStore, encode
from gitkube.store.sqlite import SQLiteStore

TABLE = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def make_pod(i: int) -> Pod:
    return Pod(
        metadata=ObjectMeta(
            name=f"pod-{i:05d}",
            labels={"app": f"app-{i % 100}", "tier": "web"},
            uid=f"uid-{i}",
            creation_timestamp="2026-12-01T00:00:00Z",
        ),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], node_name=f"n{i % 50}"),
        status=PodStatus(phase="Running", pod_ip="127.0.0.1"),
    )


async def seed(store: SQLiteStore, pods: int) -> None:
    for start in range(0, pods, 100):
        ops = [
            Put(p.key, encode(p))
            for p in (make_pod(i) for i in range(start, min(pods, start + 100)))
        ]
        await store.txn([], ops)


async def bench_list(base: str, store: SQLiteStore, rounds: int, pods: int) -> None:
    async with aiohttp.ClientSession() as session:
        for label, headers in (("JSON", {}), ("Table", {"Accept": TABLE})):
            times = []
            for _ in range(rounds):
                started = time.perf_counter()
                async with session.get(f"{base}/api/v1/pods", headers=headers) as resp:
                    body = await resp.read()
                times.append(time.perf_counter() - started)
            data = json.loads(body)
            count = len(data.get("items", data.get("rows", [])))
            assert count == pods, f"listed {count} of {pods}"
            floor = []
            for _ in range(rounds):
                started = time.perf_counter()
                await store.range("/gitkube/pods/")
                floor.append(time.perf_counter() - started)
            p50, p99 = pct(times, 50), pct(times, 99)
            print(
                f"list {pods} pods ({label}): p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms; "
                f"store range p50 {pct(floor, 50) * 1000:.0f} ms; "
                f"ratio {p50 / pct(floor, 50):.1f}x the store read; {len(body) / 1e6:.1f} MB"
            )


async def bench_watch(base: str, objects: ObjectStore, watchers: int, changes: int) -> None:
    store = objects.store
    start = await store.revision()
    written: dict[int, float] = {}
    arrivals: list[list[tuple[int, float]]] = [[] for _ in range(watchers)]
    ready = 0
    all_ready = asyncio.Event()

    async def watch(index: int, session: aiohttp.ClientSession) -> None:
        nonlocal ready
        url = f"{base}/api/v1/namespaces/default/pods?watch=1&resourceVersion={start}"
        async with session.get(url) as resp:
            ready += 1
            if ready == watchers:
                all_ready.set()
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                rv = int(event["object"]["metadata"]["resourceVersion"])
                arrivals[index].append((rv, time.perf_counter()))
                if len(arrivals[index]) >= changes:
                    return

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.create_task(watch(i, session)) for i in range(watchers)]
        await asyncio.wait_for(all_ready.wait(), 60)
        pods = {i: make_pod(i) for i in range(min(changes, 1000))}
        for n in range(changes):
            pod = pods[n % len(pods)]
            pod.metadata.labels["round"] = str(n)
            revision = await store.put(pod.key, encode(pod))
            written[revision] = time.perf_counter()
            if n % 50 == 49:
                await asyncio.sleep(0)  # let the watchers read as a real writer would
        await asyncio.wait_for(asyncio.gather(*tasks), 300)
    delays = []
    in_order = True
    for events in arrivals:
        revisions = [rv for rv, _ in events]
        in_order &= revisions == sorted(revisions) and len(set(revisions)) == changes
        delays += [at - written[rv] for rv, at in events if rv in written]
    print(
        f"watch fan-out: {watchers} watchers x {changes} changes = {len(delays)} deliveries; "
        f"delivery latency p50 {pct(delays, 50) * 1000:.1f} ms, "
        f"p99 {pct(delays, 99) * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms; "
        f"every watcher saw every change in order: {in_order}"
    )
    print(f"  mean {statistics.mean(delays) * 1000:.1f} ms")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--watchers", type=int, default=100)
    parser.add_argument("--changes", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = await SQLiteStore.open(Path(tmp) / "state.db")
        objects = ObjectStore(store)

        async def nothing() -> dict[str, Any]:
            return {}

        server = HttpServer(
            metrics=Metrics(),
            branch="main",
            on_push=lambda _revision: None,
            status=nothing,
            secret=None,
            kubeapi=KubeApi(objects),
        )
        await server.start("127.0.0.1", 0)
        base = f"http://127.0.0.1:{server.port}"
        try:
            await seed(store, args.pods)
            await bench_list(base, store, args.rounds, args.pods)
            await bench_watch(base, objects, args.watchers, args.changes)
        finally:
            await server.stop()
            await store.close()


if __name__ == "__main__":
    asyncio.run(main())
