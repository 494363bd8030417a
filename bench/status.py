"""Status at the scale of bench/sync.py: 10,000 objects (1,000 RCs, 1,000
Services with Endpoints, 8,000 Pods) and 20 nodes in an embedded SQLite store.

Measures, each the median of a few runs:
- build_status_report (reads every object, assesses health);
- the report as JSON (`gitkube status -o json` content) and STATUS.md;
- StatusWriter.write to a local bare remote: the first commit (branch
  created), a changed outcome (a second commit), an unchanged outcome after a
  restart (fetch + compare, no commit), and the in-memory no-op;
- `gitkube status -o json` and `gitkube get pods -A -o json` as processes,
  against the ratio to `python -c pass` with the same interpreter (the floor).

    python bench/status.py [--pods 8000] [--rcs 1000] [--services 1000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gitkube.api.keys import SYNC_HISTORY_KEY, SYNC_STATE_KEY
from gitkube.api.objects import (
    ApiObject,
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStatus,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Node,
    NodeCondition,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    ReplicationController,
    ReplicationControllerSpec,
    ReplicationControllerStatus,
    ResourceRequirements,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.store.base import Put
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore, encode
from gitkube.sync.report import build_status_report
from gitkube.sync.state import SyncRecord, SyncState, history_to_json
from gitkube.sync.writeback import StatusWriter, render_status_markdown

MANAGED = {"gitkube.io/managed-by": "gitkube", "gitkube.io/source-commit": "a" * 40}


def objects_for(pods: int, rcs: int, services: int) -> list[ApiObject]:
    out: list[ApiObject] = []
    for n in range(20):
        node = Node(metadata=ObjectMeta(name=f"node-{n:02d}", labels={"zone": f"z{n % 3}"}))
        node.status.capacity = {"cpu": "16", "memory": "64Gi", "pods": "1000"}
        node.status.conditions = [NodeCondition(type="Ready", status="True")]
        out.append(node)
    for i in range(rcs):
        meta = ObjectMeta(
            name=f"app-{i}", annotations={**MANAGED, "gitkube.io/source-path": f"apps/{i}.yaml"}
        )
        out.append(
            ReplicationController(
                metadata=meta,
                spec=ReplicationControllerSpec(replicas=8, selector={"app": f"app-{i}"}),
                status=ReplicationControllerStatus(
                    replicas=8, ready_replicas=8 if i % 10 else 7, observed_generation=1
                ),
            )
        )
    for i in range(services):
        meta = ObjectMeta(
            name=f"app-{i}", annotations={**MANAGED, "gitkube.io/source-path": f"apps/{i}.yaml"}
        )
        out.append(
            Service(
                metadata=meta,
                spec=ServiceSpec(
                    ports=[ServicePort(port=80, target_port=8080)], selector={"app": f"app-{i}"}
                ),
            )
        )
        out.append(
            Endpoints(
                metadata=ObjectMeta(name=f"app-{i}"),
                subsets=[
                    EndpointSubset(
                        addresses=[
                            EndpointAddress(ip=f"10.{i // 250}.{i % 250}.{k}") for k in range(3)
                        ],
                        ports=[EndpointPort(port=8080)],
                    )
                ],
            )
        )
    for i in range(pods):
        meta = ObjectMeta(name=f"app-{i % max(rcs, 1)}-{i}", labels={"app": f"app-{i % 1000}"})
        out.append(
            Pod(
                metadata=meta,
                spec=PodSpec(
                    containers=[
                        Container(
                            name="c",
                            image="busybox",
                            resources=ResourceRequirements(
                                requests={"cpu": "10m", "memory": "16Mi"}
                            ),
                        )
                    ],
                    node_name=f"node-{i % 20:02d}",
                ),
                status=PodStatus(
                    phase="Running",
                    pod_ip=f"10.{i // 65000}.{(i // 250) % 250}.{i % 250}",
                    conditions=[PodCondition(type="Ready", status="True")],
                    container_statuses=[
                        ContainerStatus(
                            name="c",
                            ready=True,
                            state=ContainerState(running=ContainerStateRunning(started_at="x")),
                        )
                    ],
                ),
            )
        )
    return out


async def fill(objects: ObjectStore, items: list[ApiObject]) -> None:
    puts = [Put(o.key, encode(objects.prepare_create(o))) for o in items]
    for start in range(0, len(puts), 100):
        await objects.store.txn([], puts[start : start + 100])
    state = SyncState(
        repo="file:///bench.git",
        revision="a" * 40,
        phase="Synced",
        synced_at="2026-01-01T00:00:00Z",
    )
    await objects.store.put(SYNC_STATE_KEY, state.to_json())
    history = [SyncRecord("a" * 40, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01Z", "Succeeded")]
    await objects.store.put(SYNC_HISTORY_KEY, history_to_json(history))


async def timed(fn: Callable[[], Awaitable[Any]], runs: int = 3) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = await fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def run_process(args: list[str], env: dict[str, str], runs: int = 3) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(args, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{args} failed: {proc.stderr.decode()[-500:]}")
    return statistics.median(times)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pods", type=int, default=8000)
    parser.add_argument("--rcs", type=int, default=1000)
    parser.add_argument("--services", type=int, default=1000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="gitkube-bench-status-") as tmp:
        root = Path(tmp)
        url = f"sqlite:///{root}/state.db"
        store = await open_store(url)
        objects = ObjectStore(store)
        items = objects_for(args.pods, args.rcs, args.services)
        t0 = time.perf_counter()
        await fill(objects, items)
        print(f"objects in the store: {len(items)} (filled in {time.perf_counter() - t0:.2f}s)")

        seconds, report = await timed(lambda: build_status_report(objects))
        print(
            f"build_status_report:          {seconds:.3f}s "
            f"({len(report.objects)} declared objects, {len(report.nodes)} nodes)"
        )
        t0 = time.perf_counter()
        size = len(json.dumps(report.to_dict()))
        print(
            f"report as JSON:               {time.perf_counter() - t0:.3f}s ({size / 1e6:.1f} MB)"
        )
        t0 = time.perf_counter()
        md = render_status_markdown(report)
        print(
            f"STATUS.md:                    {time.perf_counter() - t0:.3f}s "
            f"({len(md) / 1e3:.0f} kB, rows capped)"
        )

        remote = root / "remote.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(remote)], check=True)
        writer = StatusWriter(f"file://{remote}", cache_dir=root / "cache", synced_branch="main")
        t0 = time.perf_counter()
        first = await writer.write(report)
        print(
            f"write-back, first commit:     {time.perf_counter() - t0:.3f}s ({(first or '')[:12]})"
        )
        t0 = time.perf_counter()
        assert await writer.write(report) is None
        print(f"write-back, in-memory no-op:  {(time.perf_counter() - t0) * 1e3:.2f}ms")
        rc = await objects.get(ReplicationController, "default", "app-0")
        assert rc is not None
        rc.status.ready_replicas = 8
        await objects.update(rc)
        changed = await build_status_report(objects)
        t0 = time.perf_counter()
        second = await writer.write(changed) or ""
        print(f"write-back, changed outcome:  {time.perf_counter() - t0:.3f}s ({second[:12]})")
        fresh = StatusWriter(f"file://{remote}", cache_dir=root / "cache2", synced_branch="main")
        t0 = time.perf_counter()
        assert await fresh.write(changed) is None
        print(f"write-back, restart no-op:    {time.perf_counter() - t0:.3f}s (fetch and compare)")
        await store.close()

        env = {**os.environ, "GITKUBE_STORE": url}
        floor = run_process([sys.executable, "-c", "pass"], env)
        importing = run_process([sys.executable, "-c", "import gitkube.cli"], env)
        status = run_process([sys.executable, "-m", "gitkube", "status", "-o", "json"], env)
        get = run_process([sys.executable, "-m", "gitkube", "get", "pods", "-A", "-o", "json"], env)
        print(f"python -c pass:               {floor:.3f}s")
        print(f"import gitkube.cli:           {importing:.3f}s")
        print(f"gitkube status -o json:       {status:.3f}s ({status / importing:.1f}x the import)")
        print(f"gitkube get pods -A -o json:  {get:.3f}s ({get / importing:.1f}x the import)")


if __name__ == "__main__":
    asyncio.run(main())
