"""The shared cache against both stores (SQLite and a real etcd).

- one list, then the watch: objects, indices (namespace, labels, node, owner)
  and raw heartbeat keys follow creates, updates and deletes;
- ``wait_for_revision`` returns once the cache holds a write; handlers see
  every change and a replay of what was there;
- without a running watch, ``sync`` reads only the missing events (no re-list);
- a compacted history makes it re-list, and a delete missed meanwhile is
  reported as a DELETE event;
- an etcd outage is survived: the watch resumes and nothing is missed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gitkube.api.keys import HEARTBEAT_PREFIX
from gitkube.api.objects import (
    Container,
    Node,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodSpec,
    Service,
    ServiceSpec,
)
from gitkube.control import Cache, CacheEvent
from gitkube.store.base import Store
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.fixtures.etcd import EtcdServer
from tests.store.conftest import eventually


def make_pod(
    name: str, *, ns: str = "default", labels: dict[str, str] | None = None, owner: str = ""
) -> Pod:
    refs = [OwnerReference(kind="ReplicationController", name="rc", uid=owner, controller=True)]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=ns,
            labels=dict(labels or {}),
            owner_references=refs if owner else [],
        ),
        spec=PodSpec(containers=[Container(name="c", image="busybox")]),
    )


@pytest.fixture
async def running(store: Store) -> AsyncIterator[Cache]:
    cache = Cache(store)
    stop = asyncio.Event()
    task = asyncio.create_task(cache.run(stop))
    await asyncio.wait_for(cache.synced.wait(), 10)
    try:
        yield cache
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_list_then_watch_keeps_objects_and_indices(
    store: Store, objects: ObjectStore
) -> None:
    await objects.create(make_pod("early", labels={"app": "web"}))
    await objects.create(Node(metadata=ObjectMeta(name="n1")))
    cache = Cache(store)
    stop = asyncio.Event()
    task = asyncio.create_task(cache.run(stop))
    try:
        await asyncio.wait_for(cache.synced.wait(), 10)
        assert [p.name for p in cache.list(Pod)] == ["early"]
        assert cache.get(Node, "", "n1") is not None
        assert cache.revision == await store.revision()

        a = await objects.create(make_pod("a", labels={"app": "web", "tier": "front"}))
        await objects.create(make_pod("b", labels={"app": "db"}, owner="uid-1"))
        await objects.create(make_pod("c", ns="other", labels={"app": "web"}))
        await cache.wait_for_revision(await store.revision())
        assert [p.name for p in cache.list(Pod, "default")] == ["a", "b", "early"]
        assert [p.name for p in cache.list(Pod, "other")] == ["c"]
        assert [p.name for p in cache.select(Pod, "default", {"app": "web"})] == ["a", "early"]
        assert [p.name for p in cache.select(Pod, "default", {"app": "web", "tier": "front"})] == [
            "a"
        ]
        assert [p.name for p in cache.owned_by("uid-1")] == ["b"]
        assert sorted(p.name for p in cache.pods_on("")) == ["a", "b", "c", "early"]

        # a binding moves the pod in the node index; a label change in the label index
        bound = a.copy()
        bound.spec.node_name = "n1"
        bound.metadata.labels = {"app": "db"}
        written = await objects.update(bound)
        await cache.wait_for_revision(int(written.metadata.resource_version))
        assert [p.name for p in cache.pods_on("n1")] == ["a"]
        assert "a" not in [p.name for p in cache.pods_on("")]
        assert [p.name for p in cache.select(Pod, "default", {"app": "web"})] == ["early"]
        assert [p.name for p in cache.select(Pod, "default", {"app": "db"})] == ["a", "b"]
        got = cache.get(Pod, "default", "a")
        assert (
            got is not None and got.metadata.resource_version == written.metadata.resource_version
        )

        await objects.delete(written)
        await cache.wait_for_revision(await store.revision())
        assert cache.get(Pod, "default", "a") is None
        assert cache.pods_on("n1") == [] and [
            p.name for p in cache.select(Pod, "default", {"app": "db"})
        ] == ["b"]
        assert cache.lists == 1, "the watch, not a re-list, kept the cache current"
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def test_raw_heartbeat_keys_are_kept(store: Store, running: Cache) -> None:
    lease = await store.grant_lease(5)
    await store.put(HEARTBEAT_PREFIX + "n1", b"{}", lease=lease)
    rev = await store.put(HEARTBEAT_PREFIX + "n2", b"{}")
    await running.wait_for_revision(rev)
    beats = running.raw(HEARTBEAT_PREFIX)
    assert sorted(beats) == [HEARTBEAT_PREFIX + "n1", HEARTBEAT_PREFIX + "n2"]
    assert beats[HEARTBEAT_PREFIX + "n2"].mod_revision == rev
    await store.revoke_lease(lease)  # the agent died: its heartbeat key goes
    await running.wait_for_revision(await store.revision())
    assert list(running.raw(HEARTBEAT_PREFIX)) == [HEARTBEAT_PREFIX + "n2"]
    # other system keys are not kept
    rev = await store.put("/gitkube/_system/leader", b"m1")
    await running.wait_for_revision(rev)
    assert running.raw("/gitkube/_system/leader") == {}


async def test_handlers_get_a_replay_then_every_change(
    objects: ObjectStore, running: Cache
) -> None:
    first = await objects.create(make_pod("first"))
    await running.wait_for_revision(int(first.metadata.resource_version))
    seen: list[CacheEvent] = []
    remove = running.add_handler(seen.append)
    assert [(e.type, e.key) for e in seen] == [("PUT", first.key)]
    svc = await objects.create(Service(metadata=ObjectMeta(name="s"), spec=ServiceSpec()))
    changed = first.copy()
    changed.metadata.labels = {"x": "y"}
    changed = await objects.update(changed)
    await objects.delete(changed)
    await running.wait_for_revision(await objects.store.revision())
    got = [(e.type, e.resource, e.key) for e in seen[1:]]
    assert got == [
        ("PUT", "services", svc.key),
        ("PUT", "pods", first.key),
        ("DELETE", "pods", first.key),
    ]
    update_event, delete_event = seen[2], seen[3]
    assert update_event.old is not None and update_event.old.metadata.labels == {}
    assert update_event.new is not None and update_event.new.metadata.labels == {"x": "y"}
    assert delete_event.new is None and delete_event.obj is not None
    remove()
    await objects.create(make_pod("unseen"))
    await running.wait_for_revision(await objects.store.revision())
    assert len(seen) == 4


async def test_sync_without_a_watch_reads_only_the_missing_events(
    store: Store, objects: ObjectStore
) -> None:
    cache = Cache(store)
    await objects.create(make_pod("a"))
    assert await cache.sync() == await store.revision()
    assert [p.name for p in cache.list(Pod)] == ["a"]
    await objects.create(make_pod("b"))
    pod_a = await objects.get(Pod, "default", "a")
    assert pod_a is not None
    await objects.delete(pod_a)
    assert await cache.sync() == await store.revision()
    assert [p.name for p in cache.list(Pod)] == ["b"]
    assert cache.lists == 1 and cache.events == 2


async def test_a_compacted_history_relists_and_reports_what_was_missed(
    store: Store, objects: ObjectStore
) -> None:
    cache = Cache(store)
    a = await objects.create(make_pod("a"))
    await objects.create(make_pod("b"))
    await cache.sync()
    seen: list[CacheEvent] = []
    cache.add_handler(seen.append, replay=False)
    await objects.delete(a)
    await objects.create(make_pod("c"))
    await store.compact(await store.revision())
    await cache.sync()
    assert cache.lists == 2
    assert [p.name for p in cache.list(Pod)] == ["b", "c"]
    assert sorted((e.type, e.key) for e in seen) == sorted(
        [("DELETE", a.key), ("PUT", make_pod("c").key)]
    )


@pytest.mark.etcd
async def test_an_etcd_outage_is_survived(
    etcd_factory: Callable[[], EtcdServer], tmp_path: Path
) -> None:
    server = etcd_factory()
    store = await open_store(server.url)
    objects = ObjectStore(store)
    cache = Cache(store)
    stop = asyncio.Event()
    task = asyncio.create_task(cache.run(stop))
    try:
        await objects.create(make_pod("before"))
        await asyncio.wait_for(cache.synced.wait(), 10)
        await cache.wait_for_revision(await store.revision())
        server.stop()
        assert cache.running  # the outage does not end the cache
        server.start()

        async def write() -> Pod | None:
            try:
                return await objects.create(make_pod("after"))
            except Exception:
                return None

        written = await eventually(write, timeout=20)
        await cache.wait_for_revision(int(written.metadata.resource_version), timeout=20)
        assert [p.name for p in cache.list(Pod)] == ["after", "before"]
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await store.close()


async def test_a_transaction_is_seen_whole(store: Store, objects: ObjectStore) -> None:
    """A revision written by one transaction of several keys is in the cache whole,
    with and without a running watch."""
    for mode in ("catch-up", "watch"):
        cache = Cache(store)
        await cache.sync()
        stop = asyncio.Event()
        task = asyncio.create_task(cache.run(stop)) if mode == "watch" else None
        try:
            if task is not None:
                await asyncio.wait_for(cache.synced.wait(), 10)
            pods = [objects.prepare_create(make_pod(f"{mode}-{i}")) for i in range(5)]
            ops = [objects.create_ops(p) for p in pods]
            revision = await objects.apply([c for c, _ in ops], [p for _, p in ops])
            await cache.wait_for_revision(revision)
            assert sorted(p.name for p in cache.list(Pod) if p.name.startswith(mode)) == [
                p.name for p in pods
            ]
        finally:
            stop.set()
            if task is not None:
                await asyncio.wait_for(task, 10)


async def test_revisions_outside_gitkube_do_not_hang_sync(store: Store) -> None:
    """In a store shared with other programs, a revision the watch of /gitkube/
    never sees: ``sync`` re-lists instead of waiting for it forever."""
    for running in (False, True):
        cache = Cache(store, lag_timeout=0.2)
        await cache.sync()
        stop = asyncio.Event()
        task = asyncio.create_task(cache.run(stop)) if running else None
        try:
            if task is not None:
                await asyncio.wait_for(cache.synced.wait(), 10)
            foreign = await store.put("/someone-else/key", b"x")
            assert await asyncio.wait_for(cache.sync(), 20) >= foreign
            assert cache.lists == 2
        finally:
            stop.set()
            if task is not None:
                await asyncio.wait_for(task, 10)
