"""Across machines on a real etcd: two `gitkube master` and two `gitkube agent`
subprocesses (process runtime), one bare repository.

- one master leads (the leader key holds its "<host>-<pid>"); the pods of the
  first push run on the two agents and answer through an agent's proxy;
- kill -9 the leader, push a change: the other master applies it within the
  lease TTL plus a poll;
- nothing is applied twice: the sync history has each revision Succeeded once;
- the survivor answers /readyz and its /metrics say gitkube_leader 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitkube.api.keys import LEADER_KEY, SYNC_HISTORY_KEY, SYNC_STATE_KEY
from gitkube.api.objects import Node, Pod, ReplicationController
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.state import SyncState, history_from_json
from tests.fixtures.etcd import EtcdServer
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    SECRET,
    eventually,
    free_port,
    gitkube_env,
    http_get,
    kill_processes_under,
    kill_tree,
    spawn_gitkube,
)

pytestmark = [pytest.mark.slow, pytest.mark.etcd]

LEADER_TTL = 3
INTERVAL = 1.0


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
      terminationGracePeriodSeconds: 1
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


@dataclass
class Cluster:
    etcd: EtcdServer
    root: Path
    objects: ObjectStore
    masters: dict[int, tuple[subprocess.Popen[bytes], int]] = field(default_factory=dict)
    agents: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)

    def log_tail(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-2500:]}" for p in self.logs
        )


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    """Every gitkube subprocess of the test, ended by PID (with its children)."""
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for proc in started:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait(timeout=5)


@pytest.fixture
async def cluster(
    etcd_factory: Callable[[], EtcdServer],
    git_remote: GitRemote,
    tmp_path: Path,
    processes: list[subprocess.Popen[bytes]],
) -> AsyncIterator[Cluster]:
    etcd = etcd_factory()
    store = await open_store(etcd.url)
    root = tmp_path / "cluster"
    root.mkdir()
    env = gitkube_env(GITKUBE_WEBHOOK_SECRET=SECRET)
    c = Cluster(etcd, root, ObjectStore(store))
    try:
        for i in (1, 2):
            port = free_port()
            log = root / f"master-{i}.log"
            proc = spawn_gitkube(
                [
                    "master", "--store", etcd.url, "--repo", str(git_remote.bare),
                    "--listen", f"127.0.0.1:{port}", "--leader-ttl", str(LEADER_TTL),
                    "--interval", f"{INTERVAL}s", "--node-grace", "6s",
                    "--state-dir", str(root / f"m{i}"), "--no-writeback",
                ],
                log=log,
                env=env,
            )  # fmt: skip
            processes.append(proc)
            c.masters[proc.pid] = (proc, port)
            c.logs.append(log)
        for i in (1, 2):
            log = root / f"agent-{i}.log"
            proc = spawn_gitkube(
                [
                    "agent", "--store", etcd.url, "--node", f"a{i}", "--runtime", "process",
                    "--state-dir", str(root / f"a{i}"), "--proxy-address", f"127.0.0.{i + 1}",
                    "--node-grace", "6s",
                ],
                log=log,
                env=env,
            )  # fmt: skip
            processes.append(proc)
            c.agents.append(proc)
            c.logs.append(log)
        yield c
    finally:
        # the agents go first (SIGTERM leaves pods running), then their pods
        for proc in processes:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in processes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        kill_processes_under(root)
        await store.close()


async def leader(c: Cluster) -> str:
    kv = await c.objects.store.get(LEADER_KEY)
    return kv.value.decode() if kv else ""


async def ready(c: Cluster, replicas: int) -> bool:
    rc = await c.objects.get(ReplicationController, "default", "web")
    return rc is not None and rc.spec.replicas == replicas and rc.status.ready_replicas == replicas


async def history(c: Cluster) -> list[Any]:
    kv = await c.objects.store.get(SYNC_HISTORY_KEY)
    return history_from_json(kv.value) if kv else []


async def synced_revision(c: Cluster) -> str:
    kv = await c.objects.store.get(SYNC_STATE_KEY)
    return SyncState.from_json(kv.value).revision if kv else ""


async def test_leader_killed_next_push_applied_once(
    cluster: Cluster, git_remote: GitRemote
) -> None:
    c = cluster
    svc_port = free_port()
    try:
        await eventually(lambda: _nodes(c), timeout=30, what="both agents registered")
        git_remote.write("web.yaml", web_rc(2))
        git_remote.write("svc.yaml", web_service(svc_port))
        first = git_remote.commit_and_push("web")
        identity = await eventually(lambda: leader(c), timeout=30, what="a leader")
        pid = int(identity.rsplit("-", 1)[1])
        assert pid in c.masters, (identity, list(c.masters))
        await eventually(lambda: ready(c, 2), timeout=45, what="2 pods ready")
        pods, _ = await c.objects.list(Pod, "default")
        assert {p.spec.node_name for p in pods} == {"a1", "a2"}  # spread over both agents

        async def answers() -> bool:
            return (await http_get(svc_port, host="127.0.0.2"))[0] == 200

        await eventually(answers, timeout=20, what="HTTP through agent a1's proxy")

        # kill -9 the leader; then push a change
        proc, _ = c.masters.pop(pid)
        os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)
        killed = time.monotonic()
        git_remote.write("web.yaml", web_rc(3))
        second = git_remote.commit_and_push("scale to 3")
        survivor_pid, (_, survivor_port) = next(iter(c.masters.items()))

        async def taken_over() -> bool:
            return (await leader(c)).endswith(f"-{survivor_pid}")

        async def applied() -> bool:
            rc = await c.objects.get(ReplicationController, "default", "web")
            return rc is not None and rc.spec.replicas == 3 and await synced_revision(c) == second

        await eventually(taken_over, timeout=30, what="the survivor to lead")
        took_over = time.monotonic() - killed
        await eventually(applied, timeout=30, what="the push applied by the survivor")
        took = time.monotonic() - killed
        assert await taken_over()
        print(f"kill -9 of the leader: takeover {took_over:.2f}s, push applied {took:.2f}s")
        # the lease TTL plus a poll, plus slack for a loaded machine (an etcd
        # stall of a few seconds makes the new leader step down and win again)
        assert took_over < LEADER_TTL + INTERVAL + 3, f"took over {took_over:.1f}s after the kill"
        assert took < LEADER_TTL + INTERVAL + 12, f"applied {took:.1f}s after the kill"

        await eventually(lambda: ready(c, 3), timeout=45, what="3 pods ready")
        records = await history(c)
        succeeded = [(r.revision, r.outcome) for r in records if r.outcome == "Succeeded"]
        assert succeeded.count((first, "Succeeded")) == 1, records
        assert succeeded.count((second, "Succeeded")) == 1, records

        base = f"http://127.0.0.1:{survivor_port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(base + "/readyz") as resp:
                assert resp.status == 200
            async with session.get(base + "/metrics") as resp:
                metrics = await resp.text()
            async with session.get(base + "/api/v1/status") as resp:
                status = await resp.json()
        assert "gitkube_leader 1.0" in metrics.splitlines()
        assert status["role"] == "master" and status["leader"].endswith(f"-{survivor_pid}")
        # everything deleted through git; then the survivor stops cleanly on SIGTERM
        await delete_everything(c, git_remote)
        survivor, _ = c.masters[survivor_pid]
        survivor.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(survivor.wait, 15) == 0
    except BaseException:
        print(c.log_tail())
        raise
    finally:
        if (git_remote.work / "web.yaml").exists():
            with contextlib.suppress(AssertionError):
                await delete_everything(c, git_remote)


async def delete_everything(c: Cluster, git_remote: GitRemote) -> None:
    git_remote.remove("web.yaml")
    git_remote.remove("svc.yaml")
    git_remote.commit_and_push("empty")
    await eventually(lambda: _no_pods(c), timeout=30, what="pods deleted")


async def _nodes(c: Cluster) -> bool:
    nodes, _ = await c.objects.list(Node)
    return {n.name for n in nodes} == {"a1", "a2"}


async def _no_pods(c: Cluster) -> bool:
    pods, _ = await c.objects.list(Pod)
    return not pods
