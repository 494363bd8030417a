"""Scheduler throughput.

Case 1 (pure core): 10,000 pods onto 5,000 nodes, the shape of Kubernetes'
scheduler_perf SchedulingBasic 5000Nodes_10000Pods (CI floor 680 pods/s).
Mixed requests, some nodeSelectors, some host ports, pods of 200 controllers.
The last line of this case is ``pods_per_second=N``.

Case 2 (end to end): 1,000 pods onto 100 nodes through the embedded SQLite
store — the scheduler loop lists pods and nodes and writes every binding
with a compare-and-swap.

    python bench/scheduler.py [--case all|pure|e2e] [--pods 10000 --nodes 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gitkube.api.objects import (
    Container,
    ContainerPort,
    Node,
    NodeCondition,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodSpec,
    ResourceRequirements,
)
from gitkube.planner.scheduler import rejections, schedule

KUBE_CI_FLOOR = 680.0
ZONES = ("a", "b", "c", "d")


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_nodes(count: int, rng: random.Random) -> list[Node]:
    nodes = []
    for i in range(count):
        big = rng.random() < 0.5
        nodes.append(
            Node(
                metadata=ObjectMeta(
                    name=f"node-{i:05d}",
                    labels={"zone": ZONES[i % len(ZONES)], "disk": "ssd" if i % 3 else "hdd"},
                ),
                spec=NodeSpec(unschedulable=(i % 97 == 0)),
                status=NodeStatus(
                    allocatable={
                        "cpu": "8" if big else "4",
                        "memory": "32Gi" if big else "16Gi",
                        "pods": 110,
                    },
                    conditions=[NodeCondition(type="Ready", status="True")],
                ),
            )
        )
    return nodes


def make_pods(count: int, rng: random.Random, *, controllers: int = 200) -> list[Pod]:
    pods = []
    for i in range(count):
        port = []
        if rng.random() < 0.1:
            port = [ContainerPort(container_port=8080, host_port=rng.choice((8080, 8081, 9090)))]
        selector = {}
        roll = rng.random()
        if roll < 0.15:
            selector = {"zone": rng.choice(ZONES)}
        elif roll < 0.25:
            selector = {"disk": "ssd"}
        rc = i % controllers
        pods.append(
            Pod(
                metadata=ObjectMeta(
                    name=f"pod-{i:06d}",
                    creation_timestamp="2024-01-01T00:00:00Z",
                    owner_references=[
                        OwnerReference(
                            kind="ReplicationController",
                            name=f"rc-{rc}",
                            uid=f"uid-{rc}",
                            controller=True,
                        )
                    ],
                ),
                spec=PodSpec(
                    containers=[
                        Container(
                            name="app",
                            image="busybox",
                            ports=port,
                            resources=ResourceRequirements(
                                requests={
                                    "cpu": rng.choice(("100m", "250m", "500m", "1")),
                                    "memory": rng.choice(("128Mi", "256Mi", "512Mi", "1Gi")),
                                }
                            ),
                        )
                    ],
                    node_selector=selector,
                ),
            )
        )
    return pods


def verify(pods: list[Pod], nodes: list[Node], bindings: dict[str, str]) -> None:
    """Replay the bindings and check every filter held at each placement."""
    from gitkube.planner.scheduler import NodeState, PodRequest

    states = {n.name: NodeState.of(n) for n in nodes}
    by_key = {p.key: p for p in pods}
    for key, node_name in bindings.items():
        request = PodRequest.of(by_key[key])
        state = states[node_name]
        reasons = rejections(request, state)
        if reasons:
            raise SystemExit(f"binding {key} -> {node_name} breaks a filter: {reasons}")
        state.add(request)


def bench_pure(pod_count: int, node_count: int) -> float:
    rng = random.Random(7)
    nodes = make_nodes(node_count, rng)
    pods = make_pods(pod_count, rng)
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = schedule(pods, nodes, [], seed=1)
    elapsed = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    verify(pods, nodes, plan.bindings)
    rate = len(pods) / elapsed
    print(f"case=pure pods={pod_count} nodes={node_count}")
    print(f"bound={len(plan.bindings)} unschedulable={len(plan.unschedulable)}")
    if plan.unschedulable:
        print(f"example: {plan.unschedulable[0].message}")
    print(
        f"seconds={elapsed:.3f} cpu_seconds={cpu_seconds:.3f} (wall > cpu: the machine is shared)"
    )
    print(f"peak_rss_mib={peak_rss_mib():.1f}")
    print(f"pods_per_cpu_second={len(pods) / cpu_seconds:.0f}")
    print(f"ratio_to_kube_ci_floor_680={rate / KUBE_CI_FLOOR:.2f}")
    print(f"pods_per_second={rate:.0f}")
    return rate


async def _bench_e2e(pod_count: int, node_count: int) -> float:
    from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    rng = random.Random(11)
    with tempfile.TemporaryDirectory() as tmp:
        store = await open_store(f"sqlite://{tmp}/state.db")
        try:
            objects = ObjectStore(store)
            for node in make_nodes(node_count, rng):
                node.spec.unschedulable = False
                await objects.create(node)
            for pod in make_pods(pod_count, rng, controllers=20):
                pod.spec.node_selector = {}
                pod.spec.containers[0].ports = []
                await objects.create(pod)
            loop = SchedulerLoop(objects, SchedulerSettings(seed=1))
            started = time.perf_counter()
            bound = 0
            while True:
                result = await loop.reconcile_once()
                bound += result.bound
                if not result.bound:
                    break
            elapsed = time.perf_counter() - started
            pods, _ = await objects.list(Pod)
            on_nodes = sum(1 for p in pods if p.spec.node_name)
        finally:
            await store.close()
    rate = bound / elapsed
    print(f"case=e2e-sqlite pods={pod_count} nodes={node_count}")
    print(f"bound={bound} stored_bound={on_nodes} seconds={elapsed:.3f}")
    print(f"peak_rss_mib={peak_rss_mib():.1f}")
    print(f"ratio_to_kube_ci_floor_680={rate / KUBE_CI_FLOOR:.2f}")
    print(f"e2e_pods_per_second={rate:.0f}")
    return rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--case", choices=("all", "pure", "e2e"), default="all")
    parser.add_argument("--pods", type=int, default=10_000)
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument("--e2e-pods", type=int, default=1_000)
    parser.add_argument("--e2e-nodes", type=int, default=100)
    args = parser.parse_args()
    if args.case == "pure":
        bench_pure(args.pods, args.nodes)
    elif args.case == "e2e":
        asyncio.run(_bench_e2e(args.e2e_pods, args.e2e_nodes))
    else:
        # each case in its own process, so peak RSS is the case's own; the pure
        # case runs last, so the last line of the run is pods_per_second=N
        common = [f"--pods={args.pods}", f"--nodes={args.nodes}"]
        common += [f"--e2e-pods={args.e2e_pods}", f"--e2e-nodes={args.e2e_nodes}"]
        for case in ("e2e", "pure"):
            subprocess.run([sys.executable, __file__, f"--case={case}", *common], check=True)
            if case == "e2e":
                print(flush=True)


if __name__ == "__main__":
    main()
