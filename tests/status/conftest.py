"""Fixtures for the status tests: a real SQLite store, real git repositories,
and a filled-in cluster state to report on."""

from __future__ import annotations

import os
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.keys import DELIVERIES_KEY, PROXY_STATUS_PREFIX, SYNC_HISTORY_KEY, SYNC_STATE_KEY
from gitkube.api.objects import (
    Container,
    ContainerPort,
    ContainerState,
    ContainerStateRunning,
    ContainerStateWaiting,
    ContainerStatus,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Node,
    NodeCondition,
    ObjectMeta,
    OwnerReference,
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
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.state import (
    ObjectSyncStatus,
    SyncError,
    SyncRecord,
    SyncState,
    history_to_json,
)
from tests.fixtures.require import require_binary

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Writer",
    "GIT_AUTHOR_EMAIL": "writer@example.invalid",
    "GIT_COMMITTER_NAME": "Test Writer",
    "GIT_COMMITTER_EMAIL": "writer@example.invalid",
}

REVISION = "a" * 40
BAD_REVISION = "b" * 40


def git(*args: str, cwd: Path | None = None, check: bool = True) -> str:
    env = {**os.environ, **GIT_IDENTITY, "GIT_TERMINAL_PROMPT": "0"}
    proc = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed: {proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture
def remote(tmp_path: Path) -> Path:
    """A bare repository with a ``main`` branch of manifests, as a git host has."""
    require_binary("git", "install git (apt-get install git)")
    bare = tmp_path / "remote.git"
    git("init", "--bare", "-q", "-b", "main", str(bare))
    work = tmp_path / "seed"
    git("clone", "-q", str(bare), str(work))
    (work / "app.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n")
    git("add", "app.yaml", cwd=work)
    git("commit", "-q", "-m", "manifests", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    return bare


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite:///{tmp_path}/state/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def running_pod(
    name: str,
    *,
    node: str = "node-1",
    labels: dict[str, str] | None = None,
    ready: bool = True,
    cpu: str = "250m",
    memory: str = "64Mi",
    restarts: int = 0,
    ip: str = "10.1.0.5",
) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels=dict(labels or {"app": "web"})),
        spec=PodSpec(
            containers=[
                Container(
                    name="web",
                    image="busybox",
                    ports=[ContainerPort(container_port=8080)],
                    resources=ResourceRequirements(requests={"cpu": cpu, "memory": memory}),
                )
            ],
            node_name=node,
        ),
        status=PodStatus(
            phase="Running",
            pod_ip=ip,
            host_ip="127.0.0.1",
            conditions=[PodCondition(type="Ready", status="True" if ready else "False")],
            container_statuses=[
                ContainerStatus(
                    name="web",
                    ready=ready,
                    restart_count=restarts,
                    state=ContainerState(running=ContainerStateRunning(started_at="x")),
                )
            ],
        ),
    )


def managed(obj_meta: ObjectMeta, path: str) -> None:
    obj_meta.annotations.update(
        {
            "gitkube.io/managed-by": "gitkube",
            "gitkube.io/source-path": path,
            "gitkube.io/source-commit": REVISION,
        }
    )


async def fill_cluster(objects: ObjectStore) -> None:
    """A small cluster: an RC with 2/3 ready pods, a Service with endpoints, a
    Service without, a crash-looping pod from git, two nodes, and a sync state
    that declares one object that is missing."""
    web = ReplicationController(
        metadata=ObjectMeta(name="web", labels={"app": "web"}),
        spec=ReplicationControllerSpec(replicas=3, selector={"app": "web"}),
    )
    managed(web.metadata, "apps/web.yaml")
    web = await objects.create(web)
    web.status = ReplicationControllerStatus(replicas=3, ready_replicas=2, observed_generation=1)
    await objects.update(web)

    for i, ready in enumerate((True, True, False)):
        pod = running_pod(f"web-{i}", ready=ready, restarts=i, ip=f"10.1.0.{i + 10}")
        pod.metadata.owner_references = [
            OwnerReference(
                kind="ReplicationController", name="web", uid=web.metadata.uid, controller=True
            )
        ]
        await objects.create(pod)

    svc = Service(
        metadata=ObjectMeta(name="web"),
        spec=ServiceSpec(
            ports=[ServicePort(port=80, target_port=8080)],
            selector={"app": "web"},
            cluster_ip="10.0.0.10",
        ),
    )
    managed(svc.metadata, "apps/web.yaml")
    await objects.create(svc)
    await objects.create(
        Endpoints(
            metadata=ObjectMeta(name="web"),
            subsets=[
                EndpointSubset(
                    addresses=[EndpointAddress(ip="10.1.0.10"), EndpointAddress(ip="10.1.0.11")],
                    not_ready_addresses=[EndpointAddress(ip="10.1.0.12")],
                    ports=[EndpointPort(port=8080)],
                )
            ],
        )
    )
    db = Service(
        metadata=ObjectMeta(name="db"),
        spec=ServiceSpec(ports=[ServicePort(port=5432)], selector={"app": "db"}),
    )
    managed(db.metadata, "apps/db.yaml")
    await objects.create(db)

    crash = running_pod("batch", ready=False, restarts=7, node="node-2")
    crash.status.container_statuses[0].state = ContainerState(
        waiting=ContainerStateWaiting(reason="CrashLoopBackOff", message="back-off 40s")
    )
    managed(crash.metadata, "jobs/batch.yaml")
    await objects.create(crash)

    for name, ready in (("node-1", "True"), ("node-2", "False")):
        node = Node(metadata=ObjectMeta(name=name, labels={"zone": "a"}))
        node.status.capacity = {"cpu": "2", "memory": "4Gi", "pods": "110"}
        node.status.conditions = [NodeCondition(type="Ready", status=ready)]
        await objects.create(node)

    state = SyncState(
        repo="https://git.example.invalid/team/cluster.git",
        ref="main",
        revision=REVISION,
        attempted_revision=BAD_REVISION,
        phase="Failed",
        synced_at="2026-01-01T00:00:00Z",
        attempted_at="2026-01-01T00:05:00Z",
        message="revision bbbbbbbbbbbb is invalid; aaaaaaaaaaaa stays applied",
        errors=[
            SyncError(
                message="must be at least 0",
                file="apps/web.yaml",
                line=12,
                kind="ReplicationController",
                name="web",
                field="spec.replicas",
            )
        ],
        objects=[
            ObjectSyncStatus("ReplicationController", "default", "web", "apps/web.yaml"),
            ObjectSyncStatus("Service", "default", "web", "apps/web.yaml"),
            ObjectSyncStatus("Service", "default", "db", "apps/db.yaml"),
            ObjectSyncStatus("Pod", "default", "batch", "jobs/batch.yaml"),
            ObjectSyncStatus("Service", "default", "cache", "apps/cache.yaml", sync="OutOfSync"),
        ],
    )
    await objects.store.put(SYNC_STATE_KEY, state.to_json())
    records = [
        SyncRecord(
            revision=REVISION,
            started_at=f"2026-01-01T00:{i:02d}:00Z",
            finished_at=f"2026-01-01T00:{i:02d}:01Z",
            outcome="Succeeded" if i == 0 else "Unchanged",
            created=5 if i == 0 else 0,
        )
        for i in range(12)
    ]
    await objects.store.put(SYNC_HISTORY_KEY, history_to_json(records))
    await objects.store.put(
        DELIVERIES_KEY,
        b'[{"time": "2026-01-01T00:04:59Z", "hook": "github", "event": "push", '
        b'"status": 202, "outcome": "accepted", "reason": "push to main"}]',
    )
    await objects.store.put(
        PROXY_STATUS_PREFIX + "node-1/default/db",
        b'{"node": "node-1", "namespace": "default", "service": "db", '
        b'"message": "port 5432 already in use"}',
    )
