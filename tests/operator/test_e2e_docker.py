"""End to end on real parts (issue 7 item 7): `git daemon` serving a bare
repository over git://, `git push` of manifests, the operator (in process,
Docker runtime) told by webhooks with a real HMAC-SHA256 signature.

- the first push: pods Running in Docker, HTTP through the Service port
  (the proxy on 127.0.0.1) answers with a pod's host name;
- a push that scales the RC: the new pods run and join the Service;
- an invalid manifest: nothing changes, status Failed with file:line;
- a deleted file: what it declared is pruned (the proxy stops listening);
- a status commit on gitkube/status for each, read with git on the bare repo;
- at the end everything is deleted through git and the containers go away.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import docker
import pytest

from gitkube.api.objects import Pod, ReplicationController, Service
from gitkube.nodes.runtime.base import LABEL_NODE
from gitkube.operator import Operator
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    GitDaemon,
    Running,
    eventually,
    free_port,
    get_json,
    http_get,
    operator_settings,
    push_hook,
    serve_remote,
    start_operator,
    status_commits,
    status_file,
)

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SERVE = "mkdir -p /www && echo $HOSTNAME > /www/index.html && exec httpd -f -p 8000 -h /www"


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
      terminationGracePeriodSeconds: 1
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


def web_service(port: int) -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {{app: web}}
  ports:
  - {{name: http, port: {port}, targetPort: http}}
"""


#: line 4 holds the bad name, so the error must say bad.yaml:4
INVALID = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\nspec:\n  containers: []\n"


@pytest.fixture
def node_name() -> str:
    return f"e2e-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def containers(docker_client: docker.DockerClient, node_name: str) -> Iterator[str]:
    """Finalizer: remove every container labelled with this test's node."""
    yield node_name
    for entry in docker_client.api.containers(
        all=True, filters={"label": f"{LABEL_NODE}={node_name}"}
    ):
        with contextlib.suppress(docker.errors.NotFound):
            docker_client.api.remove_container(entry["Id"], force=True)


@pytest.fixture
def daemon(git_remote: GitRemote) -> Iterator[GitDaemon]:
    yield from serve_remote(git_remote)


async def rc_ready(op: Operator) -> int:
    assert op.objects is not None
    rc = await op.objects.get(ReplicationController, "default", "web")
    return rc.status.ready_replicas if rc else -1


async def running_pods(op: Operator) -> list[Pod]:
    assert op.objects is not None
    pods, _ = await op.objects.list(Pod, "default")
    return [p for p in pods if p.status.phase == "Running" and not p.metadata.deletion_timestamp]


def labelled(client: docker.DockerClient, node: str) -> list[dict[str, Any]]:
    """The running containers of ``node`` (no inspect: they may go at any moment)."""
    return list(client.api.containers(filters={"label": f"{LABEL_NODE}={node}"}))


@pytest.fixture
async def operator(
    git_remote: GitRemote,
    daemon: GitDaemon,
    containers: str,
    test_image: str,
    tmp_path: Path,
) -> AsyncIterator[tuple[Running, int]]:
    svc_port = free_port()
    git_remote.write("web.yaml", web_rc(2, test_image))
    git_remote.write("svc.yaml", web_service(svc_port))
    git_remote.commit_and_push("web behind a service")
    settings = operator_settings(
        daemon.url(git_remote.bare.name),
        tmp_path / "state",
        runtime="docker",
        node=containers,
        interval="5m",  # only the webhooks make it sync promptly
        watch=False,
    )
    running = await start_operator(settings)
    try:
        yield running, svc_port
    finally:
        await running.shutdown()


async def test_git_daemon_push_webhook_docker_proxy(
    operator: tuple[Running, int],
    git_remote: GitRemote,
    docker_client: docker.DockerClient,
    containers: str,
    test_image: str,
) -> None:
    running, svc_port = operator
    op = running.operator
    bare = git_remote.bare
    commits = lambda: asyncio.to_thread(status_commits, bare)  # noqa: E731

    async with aiohttp.ClientSession() as session:
        # the first push, announced by a signed webhook
        assert await push_hook(running.base, "main", git_remote.head(), session=session) == 202
        await eventually(lambda: _equals(rc_ready(op), 2), timeout=60, what="2 pods ready")
        pods = await running_pods(op)
        assert len(pods) == 2
        assert all(p.spec.node_name == containers for p in pods)
        assert len(labelled(docker_client, containers)) >= 2  # containers (and sandboxes) run

        async def answers() -> str:
            code, body = await http_get(svc_port)
            return body.strip() if code == 200 else ""

        first = await eventually(answers, timeout=30, what="HTTP through the Service")
        assert first  # the pod's host name
        await eventually(
            lambda: committed_status(bare, git_remote.head(), "Synced"),
            timeout=30,
            what="a status commit for the first push",
        )
        after_first = await commits()

        # scale to 3 through git
        git_remote.write("web.yaml", web_rc(3, test_image))
        sha = git_remote.commit_and_push("scale to 3")
        assert await push_hook(running.base, "main", sha, session=session) == 202
        await eventually(lambda: _equals(rc_ready(op), 3), timeout=60, what="3 pods ready")
        hosts: set[str] = set()

        async def three_backends() -> bool:
            hosts.add(await answers())
            return len(hosts - {""}) == 3

        await eventually(three_backends, timeout=30, what="3 pods answering via the Service")
        await eventually(
            lambda: committed_status(bare, sha, "Synced"), timeout=30, what="status of the scale"
        )
        assert await commits() > after_first
        after_scale = await commits()

        # an invalid manifest: nothing changes; status Failed with file:line
        pod_names = sorted(p.name for p in await running_pods(op))
        git_remote.write("bad.yaml", INVALID)
        bad_sha = git_remote.commit_and_push("an invalid manifest")
        assert await push_hook(running.base, "main", bad_sha, session=session) == 202

        async def failed() -> dict[str, Any] | None:
            data: dict[str, Any] = await get_json(running.base, "/api/v1/status", session=session)
            return data if data["sync"]["phase"] == "Failed" else None

        report = await eventually(failed, timeout=30, what="status Failed")
        assert any("bad.yaml:4" in json.dumps(e) for e in report["errors"]), report["errors"]
        assert report["sync"]["revision"] == sha  # the last good revision stays
        committed = await eventually(
            lambda: committed_status(bare, bad_sha, "Failed"),
            timeout=30,
            what="a status commit for the failure",
        )
        assert committed["revision"] == sha
        assert "bad.yaml:4" in json.dumps(committed["errors"]), committed["errors"]
        assert await commits() > after_scale
        assert await rc_ready(op) == 3
        assert sorted(p.name for p in await running_pods(op)) == pod_names
        assert op.objects is not None
        assert await op.objects.get(Pod, "default", "bad_name") is None
        after_failure = await commits()

        # deleting a file prunes what it declared
        git_remote.remove("bad.yaml")
        git_remote.remove("svc.yaml")
        prune_sha = git_remote.commit_and_push("remove the service")
        assert await push_hook(running.base, "main", prune_sha, session=session) == 202

        async def pruned() -> bool:
            assert op.objects is not None
            return await op.objects.get(Service, "default", "web") is None

        await eventually(pruned, timeout=30, what="the Service pruned")
        await eventually(lambda: _closed(svc_port), timeout=30, what="the proxy to stop")
        committed = await eventually(
            lambda: committed_status(bare, prune_sha, "Synced"),
            timeout=30,
            what="a status commit for the prune",
        )
        assert not any(o["kind"] == "Service" for o in committed["objects"])
        assert await commits() > after_failure
        assert await rc_ready(op) == 3  # the RC was not in the deleted files

        # clean up through git: everything deleted, every container gone
        git_remote.remove("web.yaml")
        empty_sha = git_remote.commit_and_push("delete everything")
        assert await push_hook(running.base, "main", empty_sha, session=session) == 202

        async def all_gone() -> bool:
            assert op.objects is not None
            pods, _ = await op.objects.list(Pod)
            running = await asyncio.to_thread(labelled, docker_client, containers)
            return not pods and not running

        await eventually(all_gone, timeout=60, what="pods and containers deleted")


async def committed_status(bare: Path, revision: str, phase: str) -> dict[str, Any] | None:
    """status.json at the tip of gitkube/status if it reports ``revision`` in ``phase``."""
    text = await asyncio.to_thread(status_file, bare, "status.json")
    if not text:
        return None
    data: dict[str, Any] = json.loads(text)
    attempted = data.get("attemptedRevision") or data.get("revision")
    return data if (attempted, data.get("phase")) == (revision, phase) else None


async def _equals(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _closed(port: int) -> bool:
    code, _ = await http_get(port)
    return code == 0
