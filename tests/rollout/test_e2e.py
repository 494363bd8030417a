"""Deployments end to end, on both runtimes (process and Docker): a git
remote, `git push`, the operator in process (sync, scheduler, ReplicaSet and
Deployment controllers, agent, endpoints, proxy), and the `gitkube` command
in subprocesses.

1. a pushed Deployment comes up: 3 pods Ready, its Service answers;
2. a pushed template change rolls: ready pods never drop below 3 (maxSurge
   1, maxUnavailable 0), the rollout completes, the Service answers v2;
3. a pushed broken template (a command that exits) stops the rollout: the v2
   pods keep serving, and `gitkube rollout status` exits 1 once the progress
   deadline is exceeded;
4. `gitkube rollback` writes a commit on the branch; the sync applies it and
   `gitkube rollout status` exits 0; `rollout history` lists the revisions
   with their commits; status, the status branch and metrics follow;
5. the manifest removed from git: the Deployment is pruned, and with it its
   ReplicaSets and their pods.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitkube.api.objects import Deployment, Pod, ReplicaSet
from gitkube.api.rollout import REVISION, rollout_state
from gitkube.nodes.runtime.base import LABEL_NODE
from tests.fixtures.docker import TEST_IMAGE
from tests.fixtures.git import GitRemote, git
from tests.operator.helpers import (
    REPO_ROOT,
    Running,
    eventually,
    free_port,
    http_get,
    operator_settings,
    start_operator,
)

pytestmark = pytest.mark.slow

SERVE = {
    "process": 'printf %s \\"$VERSION\\" > index.html && '
    "exec python3 -m http.server $(PORT) --bind 127.0.0.1",
    "docker": 'mkdir -p /www && printf %s \\"$VERSION\\" > /www/index.html && '
    "exec httpd -f -p $(PORT) -h /www",
}
BROKEN = "echo this template is broken >&2; exit 3"


def manifest(command: str, version: str, port: int) -> str:
    return f"""\
# the web tier: a Deployment and its Service
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
  progressDeadlineSeconds: 12
  selector:
    matchLabels: {{app: web}}
  strategy:
    type: RollingUpdate
    rollingUpdate: {{maxSurge: 1, maxUnavailable: 0}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {TEST_IMAGE}
        command: ["sh", "-c", "{command}"]
        env:
        - {{name: VERSION, value: {version}}}
        ports:
        - {{name: http, containerPort: 8080}}
        readinessProbe:
          httpGet: {{path: /, port: http}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: {port}, targetPort: http}}
"""


def gitkube(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitkube", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env={"GIT_AUTHOR_NAME": "Ops", "GIT_AUTHOR_EMAIL": "ops@example.com", **_env()},
    )


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("GITKUBE_")}


@pytest.fixture(params=["process", "docker"])
def runtime(request: pytest.FixtureRequest) -> Iterator[str]:
    kind: str = request.param
    node = f"deploy-{uuid.uuid4().hex[:8]}"
    if kind == "docker":
        request.getfixturevalue("test_image")
        client = request.getfixturevalue("docker_client")
    yield f"{kind}:{node}"
    if kind == "docker":
        import docker.errors

        for entry in client.api.containers(all=True, filters={"label": f"{LABEL_NODE}={node}"}):
            with contextlib.suppress(docker.errors.NotFound):
                client.api.remove_container(entry["Id"], force=True)


@pytest.fixture
async def operator(
    runtime: str, git_remote: GitRemote, tmp_path: Path
) -> AsyncIterator[tuple[Running, str, int]]:
    kind, node = runtime.split(":")
    port = free_port()
    git_remote.write("k8s/web.yaml", manifest(SERVE[kind], "v1", port))
    git_remote.commit_and_push("web v1")
    settings = operator_settings(
        git_remote.url,
        tmp_path / "state",
        runtime=kind,
        node=node,
        interval="2s",
        watch=True,
    )
    running = await start_operator(settings)
    try:
        yield running, kind, port
    finally:
        await running.shutdown()


async def deployment(running: Running) -> Deployment:
    objects = running.operator.objects
    assert objects is not None
    d = await objects.get(Deployment, "default", "web")
    assert d is not None
    return d


async def ready_pods(running: Running, version: str | None = None) -> list[Pod]:
    objects = running.operator.objects
    assert objects is not None
    pods, _ = await objects.list(Pod, "default")
    return [
        p
        for p in pods
        if p.is_ready()
        and not p.metadata.deletion_timestamp
        and (version is None or any(e.value == version for c in p.spec.containers for e in c.env))
    ]


async def complete(running: Running, revision: str) -> bool:
    objects = running.operator.objects
    assert objects is not None
    d = await objects.get(Deployment, "default", "web")
    return (
        d is not None
        and d.metadata.annotations.get(REVISION) == revision
        and d.status.observed_generation == d.metadata.generation
        and rollout_state(d).done
    )


async def answers(port: int) -> str:
    code, body = await http_get(port)
    return body.strip() if code == 200 else ""


async def test_rolling_update_broken_template_and_rollback(
    operator: tuple[Running, str, int], git_remote: GitRemote
) -> None:
    running, kind, port = operator
    store = running.operator.settings.store_url()
    timeout = 120 if kind == "docker" else 90

    # 1. the first push: 3 pods ready, the Service answers
    await eventually(lambda: complete(running, "1"), timeout=timeout, what="revision 1 rolled out")
    assert len(await ready_pods(running, "v1")) == 3
    await eventually(lambda: _is(answers(port), "v1"), timeout=30, what="v1 through the Service")

    # 2. a template change rolls without dropping below 3 ready pods
    git_remote.write("k8s/web.yaml", manifest(SERVE[kind], "v2", port))
    v2_commit = git_remote.commit_and_push("web v2")
    lowest, deadline = 3, time.monotonic() + timeout
    while not await complete(running, "2"):
        lowest = min(lowest, len(await ready_pods(running)))
        assert time.monotonic() < deadline, "the rolling update did not complete"
        await asyncio.sleep(0.05)
    assert lowest >= 3, f"ready pods dropped to {lowest} during the rollout"
    assert len(await ready_pods(running, "v2")) == 3
    await eventually(lambda: _is(answers(port), "v2"), timeout=30, what="v2 through the Service")

    # 3. a broken template: the rollout stops, v2 keeps serving, status exits 1
    git_remote.write("k8s/web.yaml", manifest(BROKEN, "v3", port))
    git_remote.commit_and_push("web v3, broken")
    await eventually(lambda: _revision_is(running, "3"), timeout=timeout, what="revision 3 started")
    status = await asyncio.to_thread(
        gitkube, "rollout", "status", "deployment/web", "--timeout", "90s", "--store", store
    )
    assert status.returncode == 1, status.stdout + status.stderr
    assert "exceeded its progress deadline" in status.stdout
    assert len(await ready_pods(running, "v2")) == 3
    assert await answers(port) == "v2"
    # … and every view says so: status, the status branch, metrics
    report = await asyncio.to_thread(gitkube, "status", "-o", "json", "--store", store)
    web = _deployment_entry(json.loads(report.stdout)["objects"])
    assert web["health"] == "Degraded" and "ProgressDeadlineExceeded" in web["message"]
    assert web["revision"] == "3" and web["replicas"]["ready"] == 3
    await eventually(
        lambda: _status_branch_health(git_remote, "Degraded"),
        timeout=30,
        what="status.json on gitkube/status saying Degraded",
    )
    metrics = await _metrics(running)
    assert 'gitkube_deployment_rollout_stalled{deployment="web",namespace="default"} 1.0' in metrics
    assert (
        'gitkube_deployment_replicas{deployment="web",namespace="default",state="available"} 3.0'
        in metrics
    )

    # 4. the rollback is a commit; the sync applies it
    history = await asyncio.to_thread(
        gitkube, "rollout", "history", "deployment/web", "--store", store
    )
    assert history.returncode == 0, history.stderr
    lines = [line for line in history.stdout.splitlines() if line[:1].isdigit()]
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert v2_commit in lines[1]
    before = git_remote.head()
    rollback = await asyncio.to_thread(gitkube, "rollback", "deployment/web", "--store", store)
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    head = git("rev-parse", "main", cwd=git_remote.bare)
    assert git("rev-parse", "main~1", cwd=git_remote.bare) == before
    message = git("log", "-1", "--format=%B", "main", cwd=git_remote.bare)
    assert "Roll back deployment/web to revision 2" in message
    assert "ProgressDeadlineExceeded" in message
    assert git("show", "main:k8s/web.yaml", cwd=git_remote.bare) == manifest(
        SERVE[kind], "v2", port
    ).rstrip("\n")
    await eventually(lambda: complete(running, "4"), timeout=timeout, what="the rollback")
    status = await asyncio.to_thread(
        gitkube, "rollout", "status", "deployment/web", "--timeout", "30s", "--store", store
    )
    assert status.returncode == 0, status.stdout + status.stderr
    assert len(await ready_pods(running, "v2")) == 3
    d = await deployment(running)
    assert d.metadata.annotations["gitkube.io/source-commit"] == head
    await eventually(
        lambda: _status_branch_health(git_remote, "Healthy"),
        timeout=30,
        what="status.json on gitkube/status saying Healthy",
    )

    # 5. removed from git: the Deployment is pruned, then its ReplicaSets and pods
    git("pull", "--quiet", "origin", "main", cwd=git_remote.work)  # the rollback commit
    git_remote.remove("k8s/web.yaml")
    git_remote.commit_and_push("remove web")
    await eventually(lambda: _nothing_left(running), timeout=timeout, what="everything pruned")


def _deployment_entry(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return next(o for o in objects if o["kind"] == "Deployment" and o["name"] == "web")


async def _status_branch_health(remote: GitRemote, health: str) -> bool:
    text = await asyncio.to_thread(
        git, "show", "gitkube/status:status.json", cwd=remote.bare, check=False
    )
    try:
        data = json.loads(text)
    except ValueError:
        return False
    return bool(_deployment_entry(data["objects"])["health"] == health)


async def _metrics(running: Running) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.get(running.base + "/metrics") as resp,
    ):
        return await resp.text()


async def _nothing_left(running: Running) -> bool:
    objects = running.operator.objects
    assert objects is not None
    for cls in (Deployment, ReplicaSet, Pod):
        found, _ = await objects.list(cls, "default")
        if found:
            return False
    return True


async def _is(value: object, expected: str) -> bool:
    return await value == expected  # type: ignore[misc]


async def _revision_is(running: Running, revision: str) -> bool:
    d = await deployment(running)
    return d.metadata.annotations.get(REVISION) == revision
