"""`gitkube run` as one product, on the process runtime (nothing but Python):

- a push to a bare remote plus a signed webhook is synced, pods run, and
  HTTP through the Service port answers;
- scaling through git, an invalid manifest (nothing changes, status Failed
  with file:line), a deleted file (pruned), a status commit for each;
- a burst of 200 signed webhooks becomes a handful of syncs of the last commit;
- stopping the operator leaves pods running; a new operator adopts them.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from gitkube.api.objects import Pod, ReplicationController, Service
from gitkube.config import Settings
from gitkube.operator import Operator
from gitkube.server.webhooks import sign
from tests.fixtures.git import GitRemote, git
from tests.operator.helpers import (
    SECRET,
    Running,
    eventually,
    free_port,
    kill_processes_under,
    operator_settings,
    start_operator,
)


def web_rc(replicas: int) -> str:
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
      containers:
      - name: web
        image: python:3.11-alpine
        command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]
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


def settings_for(remote: GitRemote, state: Path, **extra: Any) -> Settings:
    return operator_settings(remote.url, state, **extra)


async def start(settings: Settings) -> Running:
    return await start_operator(settings)


async def push_hook(running: Running, remote: GitRemote, *, session: aiohttp.ClientSession) -> int:
    body = json.dumps({"ref": f"refs/heads/{remote.branch}", "after": remote.head()}).encode()
    async with session.post(
        running.base + "/hooks/github",
        data=io.BytesIO(body),
        headers={"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET.encode(), body)},
    ) as resp:
        return resp.status


def status_commits(remote: GitRemote) -> int:
    out = git("rev-list", "--count", "refs/heads/gitkube/status", cwd=remote.bare, check=False)
    return int(out) if out.isdigit() else 0


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_processes_under(path)


def ready_is(op: Operator, n: int) -> Callable[[], Any]:
    async def check() -> bool:
        return await ready_replicas(op) == n

    return check


async def ready_replicas(op: Operator) -> int:
    assert op.objects is not None
    rc = await op.objects.get(ReplicationController, "default", "web")
    return rc.status.ready_replicas if rc else -1


async def http_get(port: int) -> int:
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(
                f"http://127.0.0.1:{port}/", timeout=aiohttp.ClientTimeout(total=3)
            ) as resp,
        ):
            return resp.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


@pytest.mark.slow
async def test_push_scale_invalid_prune_and_status(git_remote: GitRemote, state: Path) -> None:
    svc_port = free_port()
    git_remote.write("web.yaml", web_rc(2))
    git_remote.write("svc.yaml", web_service(svc_port))
    git_remote.commit_and_push("web")
    running = await start(settings_for(git_remote, state))
    op = running.operator
    try:
        await eventually(ready_is(op, 2), what="2 ready")

        async def answers() -> bool:
            return await http_get(svc_port) == 200

        await eventually(answers, what="HTTP via the Service")
        assert await eventually(
            lambda: asyncio.to_thread(status_commits, git_remote), what="a status commit"
        )
        first = status_commits(git_remote)

        async with aiohttp.ClientSession() as session:
            # scale through git, announced by a signed webhook
            git_remote.write("web.yaml", web_rc(3))
            git_remote.commit_and_push("scale to 3")
            assert await push_hook(running, git_remote, session=session) == 202

            await eventually(ready_is(op, 3), what="3 ready")
            await eventually(
                lambda: asyncio.to_thread(lambda: status_commits(git_remote) > first),
                what="a status commit for the scale",
            )

            # an invalid manifest changes nothing; status says Failed with file:line
            after_scale = status_commits(git_remote)
            git_remote.write("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Bad_Name\n")
            git_remote.commit_and_push("invalid")
            assert await push_hook(running, git_remote, session=session) == 202

            async def failed() -> dict[str, Any] | None:
                async with session.get(running.base + "/api/v1/status") as resp:
                    data: dict[str, Any] = await resp.json()
                return data if data["sync"]["phase"] == "Failed" else None

            report = await eventually(failed, what="status Failed")
            assert any("bad.yaml:" in json.dumps(e) for e in report["errors"]), report["errors"]
            assert await ready_replicas(op) == 3
            assert op.objects is not None
            assert await op.objects.get(Pod, "default", "bad_name") is None
            await eventually(
                lambda: asyncio.to_thread(lambda: status_commits(git_remote) > after_scale),
                what="a status commit for the failure",
            )

            # deleting a file prunes what it declared
            after_failure = status_commits(git_remote)
            git_remote.remove("bad.yaml")
            git_remote.remove("svc.yaml")
            git_remote.commit_and_push("remove the service")
            assert await push_hook(running, git_remote, session=session) == 202

            async def pruned() -> bool:
                assert op.objects is not None
                return await op.objects.get(Service, "default", "web") is None

            await eventually(pruned, what="the Service pruned")
            await eventually(lambda: _closed(svc_port), what="the proxy to stop listening")
            await eventually(
                lambda: asyncio.to_thread(lambda: status_commits(git_remote) > after_failure),
                what="a status commit for the prune",
            )
    finally:
        await running.shutdown()


async def _closed(port: int) -> bool:
    return await http_get(port) == 0


@pytest.mark.slow
async def test_webhook_burst_coalesces(git_remote: GitRemote, state: Path) -> None:
    git_remote.write("web.yaml", web_rc(1).replace("replicas: 1", "replicas: 0"))
    git_remote.commit_and_push("zero")
    running = await start(settings_for(git_remote, state, nodes=0, writeback=False, watch=False))
    op = running.operator
    try:
        await eventually(lambda: _synced(op), what="first sync")
        before = op.sync.passes
        shas = []
        for i in range(5):
            git_remote.write("web.yaml", web_rc(0).replace("replicas: 0", f"replicas: {i}"))
            shas.append(git_remote.commit_and_push(f"burst {i}"))
        body = json.dumps({"ref": "refs/heads/main", "after": shas[-1]}).encode()
        headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(SECRET.encode(), body)}
        started = time.monotonic()
        async with aiohttp.ClientSession() as session:

            async def post() -> int:
                async with session.post(
                    running.base + "/hooks/github", data=io.BytesIO(body), headers=headers
                ) as resp:
                    return resp.status

            codes = await asyncio.gather(*(post() for _ in range(200)))
        assert set(codes) == {202}
        assert time.monotonic() - started < 5

        async def last_applied() -> bool:
            assert op.objects is not None
            rc = await op.objects.get(ReplicationController, "default", "web")
            return rc is not None and rc.spec.replicas == 4

        await eventually(last_applied, what="the last commit applied")
        await asyncio.sleep(0.5)
        syncs = op.sync.passes - before
        assert 1 <= syncs <= 10, f"{syncs} syncs for 200 webhooks"
    finally:
        await running.shutdown()


async def _synced(op: Operator) -> bool:
    return op.synced_once.is_set()


@pytest.mark.slow
async def test_pods_survive_an_operator_restart(git_remote: GitRemote, state: Path) -> None:
    git_remote.write("web.yaml", web_rc(2))
    git_remote.commit_and_push("web")
    settings = settings_for(git_remote, state, writeback=False)
    running = await start(settings)
    try:
        await eventually(ready_is(running.operator, 2), what="2 ready")
        assert running.operator.objects is not None
        pods, _ = await running.operator.objects.list(Pod)
        before = {p.name: [c.container_id for c in p.status.container_statuses] for p in pods}
    finally:
        await running.shutdown()
    # the processes are still there with the operator gone
    pids_alive = [
        p
        for p in psutil.process_iter(["cmdline"])
        if "http.server" in " ".join(p.info["cmdline"] or [])
    ]
    assert len(pids_alive) >= 2

    running = await start(settings)
    try:
        await eventually(ready_is(running.operator, 2), what="2 ready")
        await asyncio.sleep(1.5)
        assert running.operator.objects is not None
        pods, _ = await running.operator.objects.list(Pod)
        after = {p.name: [c.container_id for c in p.status.container_statuses] for p in pods}
        assert after == before
        # clean up through git: no manifests, everything pruned, processes stopped
        git_remote.remove("web.yaml")
        git_remote.commit_and_push("empty")
        running.operator.sync.trigger()

        async def gone() -> bool:
            assert running.operator.objects is not None
            left, _ = await running.operator.objects.list(Pod)
            return not left

        await eventually(gone, timeout=40, what="pods deleted")
    finally:
        await running.shutdown()


async def _replicas_are(op: Operator, n: int) -> bool:
    assert op.objects is not None
    rc = await op.objects.get(ReplicationController, "default", "web")
    return rc is not None and rc.spec.replicas == n


@pytest.mark.parametrize("trigger", ["watch", "post-receive"])
async def test_a_local_push_syncs_within_a_second(
    git_remote: GitRemote, state: Path, trigger: str
) -> None:
    """No webhook and no polling (interval 60 s): the ref watcher, or the
    post-receive hook from `gitkube install-hook`, starts the sync."""
    from gitkube.hooks import TOKEN_FILE, install_hooks

    git_remote.write("web.yaml", web_rc(0))
    git_remote.commit_and_push("zero")
    settings = settings_for(git_remote, state, nodes=0, writeback=False, watch=trigger == "watch")
    running = await start(settings)
    op = running.operator
    try:
        await eventually(lambda: _synced(op), what="first sync")
        if trigger == "post-receive":
            install_hooks(
                git_remote.bare,
                url=running.base,
                token_file=state / TOKEN_FILE,
                validate=False,
                branch="main",
            )
        git_remote.write("web.yaml", web_rc(0).replace("replicas: 0", "replicas: 7"))
        git_remote.commit()
        pushed = time.monotonic()
        await asyncio.to_thread(git_remote.push)
        await eventually(lambda: _replicas_are(op, 7), timeout=5, what="the push synced")
        assert time.monotonic() - pushed < 1.5
        # the status branch moving never triggers a sync
        passes = op.sync.passes
        git("push", "--quiet", "origin", "HEAD:refs/heads/gitkube/status", cwd=git_remote.work)
        await asyncio.sleep(1.0)
        assert op.sync.passes == passes
    finally:
        await running.shutdown()
