"""The agent, the service proxy and the sync loop read the process's shared
cache, fed by one store watch; none lists the store on a pass (a real SQLite
store, the process runtime, a real git remote):

- started together on one cache, they bring up what git declares (a pod
  bound to the node, a Service the proxy listens for), and the sync's
  status write-back reads its report from the cache too;
- after that, a new commit (a second pod) is synced, started and reported,
  and the loops then idle through many relists of the runtime, and the store
  is not ranged once: reads come from the cache;
- the sync's writes go through the kit's applier (one transaction per batch).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gitkube.api.keys import HEARTBEAT_PREFIX, PROXY_STATUS_PREFIX
from gitkube.api.objects import Pod
from gitkube.control import Applier, Cache
from gitkube.control.applier import AnyWrite
from gitkube.nodes.agent import Agent, AgentSettings
from gitkube.nodes.backoff import BackoffSettings
from gitkube.nodes.registration import NodeSettings
from gitkube.nodes.runtime.process import ProcessRuntime
from gitkube.services.proxy import ServiceProxy
from gitkube.store.base import KeyValue, Store
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.source import GitSource
from gitkube.sync.writeback import StatusWriteback, StatusWriter
from tests.fixtures.git import GitRemote

NODE = f"quiet-{uuid.uuid4().hex[:8]}"


class RangeCountingStore:
    """A real store that counts the ranges (listings) asked of it."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.ranges: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def range(self, prefix: str, *args: Any, **kwargs: Any) -> tuple[list[KeyValue], int]:
        self.ranges.append(prefix)
        result: tuple[list[KeyValue], int] = await self._store.range(prefix, *args, **kwargs)
        return result


def pod_yaml(name: str) -> str:
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: quiet}}
spec:
  nodeName: {NODE}
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: busybox
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.1; done"]
"""


def service_yaml(port: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: quiet
spec:
  selector: {{app: quiet}}
  ports:
  - port: {port}
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(check: Any, *, timeout: float = 20.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_agent_proxy_and_sync_read_the_cache_not_the_store(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    port = free_port()
    git_remote.write_many({"a.yaml": pod_yaml("a"), "svc.yaml": service_yaml(port)})
    git_remote.commit_and_push("a pod and its Service")

    real = await open_store(f"sqlite:///{tmp_path}/state.db")
    store = RangeCountingStore(real)
    objects = ObjectStore(store)  # type: ignore[arg-type]
    # as the operator's: the proxies' reports too (the status report reads them)
    cache = Cache(store, raw_prefixes=(HEARTBEAT_PREFIX, PROXY_STATUS_PREFIX))  # type: ignore[arg-type]
    txns: list[int] = []

    async def count(writes: Sequence[AnyWrite]) -> None:
        txns.append(len(writes))

    writer = StatusWriter(
        git_remote.url,
        cache_dir=tmp_path / "status-git",
        synced_branch=git_remote.branch,
    )
    writeback = StatusWriteback(writer, objects, cache=cache)
    sync = SyncLoop(
        objects,
        GitSource(git_remote.url, cache_dir=tmp_path / "git"),
        SyncSettings(),
        cache=cache,
        applier=Applier(objects, on_txn=count),
        after_sync=writeback,
    )
    runtime = ProcessRuntime(node_name=NODE, state_dir=tmp_path / "node")
    agent = Agent(
        objects,
        runtime,
        node=NodeSettings(name=NODE, address="127.0.0.1", runtime_name=runtime.name),
        settings=AgentSettings(
            relist_seconds=0.1, backoff=BackoffSettings(initial=0.4, cap=1.6), heartbeat_ttl=5
        ),
        cache=cache,
    )
    proxy = ServiceProxy(objects, node_name=NODE, relay="asyncio", cache=cache)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(cache.run(stop))]
    tasks += [asyncio.create_task(loop.run(stop)) for loop in (agent, proxy)]
    try:
        assert (await sync.reconcile_once()).outcome == "Succeeded"
        # the objects in one batch, then the sync state, history, applied diff and drift
        assert txns == [2, 4]

        async def running(name: str) -> bool:
            pod = await objects.get(Pod, "default", name)
            return pod is not None and pod.status.phase == "Running"

        async def listening() -> bool:
            return any(b.port == port for b in proxy.listening)

        await eventually(lambda: running("a"), what="pod a Running")
        await eventually(listening, what="the proxy to listen for the Service")

        before = list(store.ranges)
        assert before, "the cache lists the store once"
        git_remote.write("b.yaml", pod_yaml("b"))
        git_remote.commit_and_push("a second pod")
        result = await sync.reconcile_once()
        assert (result.outcome, result.created) == ("Succeeded", 1)
        await eventually(lambda: running("b"), what="pod b Running")
        settled = agent.relists + 5
        await eventually(lambda: _after(agent.relists >= settled), what="five relists")
        quiet_from = agent.reconciles
        await eventually(
            lambda: _after(agent.relists >= settled + 20), what="twenty relists of the runtime"
        )
        assert (await sync.reconcile_once()).outcome == "Unchanged"
        assert writeback.last is not None and writeback.last.outcome in ("Committed", "Unchanged")
        assert store.ranges == before, "a loop listed the store"
        assert cache.lists == 1
        # at rest, nothing is reconciled again (no status rewritten, no pass per relist)
        assert agent.reconciles == quiet_from
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, timeout=30)
        await sync.source.close()
        for rc in await runtime.list_containers():
            with contextlib.suppress(Exception):
                await runtime.stop_container(rc.id, grace_seconds=0)
        await runtime.close()
        await real.close()


async def _after(value: bool) -> bool:
    return value
