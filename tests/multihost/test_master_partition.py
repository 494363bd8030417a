"""Master partition: the leader is cut off from etcd (its host leaves the
bridge: a silent partition, where what it sends is lost without an error and
TCP delivers it late after the heal; the process keeps running), the other
master takes over, and the deposed one writes nothing, then or after the heal.

Two masters and an agent, each on its own host. A series of pushes: one
at the cut (the leader may be applying it when its link goes down, or start
while cut off, still inside its lease), more while it is cut off, more after
the heal, when both masters are connected again. Every write to the
store is watched from before the first push. The history check:

- each commit is in the sync history as Succeeded exactly once;
- the RC's writes carry the commits' generations in push order, each one,
  never an older one after a newer (a stale apply of the deposed leader
  landing after the heal would put an old generation back);
- the sync state's revision never goes back;
- exactly as many pods are created as the RC asked for (no duplicates from a
  deposed replication manager);
- after the heal the deposed master follows (``gitkube_leader 0``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable

import aiohttp

from gitkube.api.annotations import SOURCE_COMMIT
from gitkube.api.keys import PREFIX, SYNC_HISTORY_KEY, SYNC_STATE_KEY, object_key
from gitkube.store.base import WatchEvent
from gitkube.sync.state import SyncState, history_from_json
from tests.multihost.conftest import LEADER_TTL, Cluster, ClusterFactory
from tests.multihost.manifests import web_rc

RC_KEY = object_key("replicationcontrollers", "default", "web")
POD_PREFIX = PREFIX + "pods/"


async def record_writes(c: Cluster, start: int, events: list[WatchEvent]) -> None:
    async for event in c.objects.store.watch(PREFIX, start_revision=start):
        events.append(event)


async def leader_gauge(c: Cluster, host: str) -> str:
    url = f"http://{c.address(host)}:9080/metrics"
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(url, timeout=aiohttp.ClientTimeout(total=3)) as resp,
        ):
            text = await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return ""
    return next((line for line in text.splitlines() if line.startswith("gitkube_leader ")), "")


async def test_a_deposed_leader_writes_nothing_and_no_update_is_lost(
    cluster_factory: ClusterFactory,
) -> None:
    c = await cluster_factory(masters=["m1", "m2"], agents=["h1"])
    events: list[WatchEvent] = []
    watcher = asyncio.create_task(record_writes(c, await c.objects.store.revision() + 1, events))
    commits: list[str] = []

    async def push(generation: int, replicas: int, *, wait: bool = True) -> str:
        c.remote.write("web.yaml", web_rc(replicas, generation=generation))
        commit = c.remote.commit_and_push(f"generation {generation}")
        commits.append(commit)
        if wait:
            await applied(commit)
        return commit

    async def applied(commit: str) -> None:
        async def check() -> bool:
            return await c.synced_revision() == commit

        await c.wait(check, timeout=60, what=f"{commit[:8]} applied")

    try:
        await push(1, 2)
        deposed = await c.wait(c.leader_host, timeout=30, what="a leader")
        survivor = next(h for h in c.masters if h != deposed)

        # the push, then the cut at once: the leader (watching the repository)
        # may be in the middle of applying it, or start it while cut off,
        # still inside its lease; either way its writes must not land later
        await push(2, 3, wait=False)
        c.lab.detach(deposed)

        async def taken_over() -> bool:
            return await c.leader_host() == survivor

        await c.wait(taken_over, timeout=LEADER_TTL + 30, what=f"{survivor} leads")
        await applied(commits[-1])
        await push(3, 3)
        await push(4, 3)
        assert c.masters[deposed].poll() is None, "the deposed master died"

        c.lab.attach(deposed)

        async def following() -> bool:
            return await leader_gauge(c, deposed) == "gitkube_leader 0.0"

        await c.wait(following, timeout=30, what=f"{deposed} follows after the heal")
        await push(5, 3)
        await push(6, 3)
        assert await c.leader_host() == survivor

        async def pods_ready() -> bool:
            pods = [p for p in await c.pods() if not p.metadata.deletion_timestamp]
            return len(pods) == 3 and all(p.status.phase == "Running" for p in pods)

        await c.wait(pods_ready, timeout=60, what="3 pods running")
        # the deposed master had time to land anything it had in flight
        await _quiet(c, events)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher

    # each commit applied exactly once
    kv = await c.objects.store.get(SYNC_HISTORY_KEY)
    assert kv is not None
    succeeded = [r.revision for r in history_from_json(kv.value) if r.outcome == "Succeeded"]
    for commit in commits:
        assert succeeded.count(commit) == 1, (commit, succeeded)
    assert succeeded == [s for s in succeeded if s in commits]

    # the RC's writes: every generation, in push order, never one going back
    generations: list[int] = []
    for event in events:
        if event.kv.key == RC_KEY and event.type == "PUT":
            meta = json.loads(event.kv.value)["metadata"]
            generation = int(meta["labels"]["generation"])
            if not generations or generations[-1] != generation:
                generations.append(generation)
            source = meta.get("annotations", {}).get(SOURCE_COMMIT, "")
            assert source == commits[generation - 1], (generation, source)
    assert generations == [1, 2, 3, 4, 5, 6], generations

    # the synced revision never goes back to an older commit
    order = {commit: i for i, commit in enumerate(commits)}
    synced = [
        order[SyncState.from_json(e.kv.value).revision]
        for e in events
        if e.kv.key == SYNC_STATE_KEY and e.type == "PUT"
        and SyncState.from_json(e.kv.value).revision in order
    ]  # fmt: skip
    assert synced == sorted(synced), synced

    # as many pods created as asked for: 2, then 1 more for the scale to 3
    created = [
        e.kv.key
        for e in events
        if e.type == "PUT" and e.kv.key.startswith(POD_PREFIX)
        and e.kv.create_revision == e.kv.mod_revision
    ]  # fmt: skip
    assert len(created) == 3, created


async def _quiet(c: Cluster, events: list[WatchEvent]) -> None:
    """Wait until the store has seen no write but heartbeats for two lease TTLs."""
    loop = asyncio.get_running_loop()

    def last_write() -> int:
        return max(
            (i for i, e in enumerate(events) if "/heartbeats/" not in e.kv.key
             and "/leader" not in e.kv.key),
            default=-1,
        )  # fmt: skip

    mark = (last_write(), loop.time())

    async def quiet() -> bool:
        nonlocal mark
        now = last_write()
        if now != mark[0]:
            mark = (now, loop.time())
        return loop.time() - mark[1] >= 2 * LEADER_TTL

    check: Callable[[], Awaitable[bool]] = quiet
    await c.wait(check, timeout=60, what="the store to be quiet")
