"""ObjectStore over both backends: typed API objects, one key per object.

- create: uid, creation timestamp, generation 1, resourceVersion; a second
  create of the same object is a Conflict;
- get and list (all namespaces or one; cluster-scoped nodes);
- update: compare-and-swap on resourceVersion (stale -> Conflict, deleted ->
  Conflict), unconditional without one; generation counts spec changes only;
- update_status: the status alone, onto the object as read (no read first,
  no generation bump, the object given unchanged), stale -> Conflict;
- delete: guarded on resourceVersion; deleting what is gone is False;
- watch: PUT and DELETE object events for chosen resources, the deleted
  object carried by its DELETE event.
"""

from __future__ import annotations

import pytest

from gitkube.api.objects import Container, Node, ObjectMeta, Pod, PodSpec, Service
from gitkube.errors import Conflict
from gitkube.store.base import Store
from gitkube.store.objects import ObjectStore

from .conftest import take


def make_pod(name: str, *, namespace: str = "default", image: str = "busybox") -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, namespace=namespace, labels={"app": "web"}),
        spec=PodSpec(containers=[Container(name="main", image=image)]),
    )


@pytest.fixture
def objects(store: Store) -> ObjectStore:
    return ObjectStore(store)


# ---------------------------------------------------------------- create and read


async def test_create_fills_metadata_and_reads_back(objects: ObjectStore) -> None:
    created = await objects.create(make_pod("web-1"))
    meta = created.metadata
    assert meta.uid and meta.creation_timestamp and meta.generation == 1
    assert int(meta.resource_version) == await objects.store.revision()

    got = await objects.get(Pod, "default", "web-1")
    assert got is not None
    assert got.metadata.uid == meta.uid
    assert got.metadata.resource_version == meta.resource_version
    assert got.spec.containers[0].image == "busybox"
    assert got.metadata.labels == {"app": "web"}


async def test_creating_an_existing_object_is_a_conflict(objects: ObjectStore) -> None:
    await objects.create(make_pod("web-1"))
    with pytest.raises(Conflict, match="already exists"):
        await objects.create(make_pod("web-1", image="other"))
    got = await objects.get(Pod, "default", "web-1")
    assert got is not None and got.spec.containers[0].image == "busybox"


async def test_get_of_a_missing_object_is_none(objects: ObjectStore) -> None:
    assert await objects.get(Pod, "default", "nope") is None


async def test_list_by_kind_and_namespace(objects: ObjectStore) -> None:
    await objects.create(make_pod("b", namespace="prod"))
    await objects.create(make_pod("a", namespace="prod"))
    await objects.create(make_pod("c", namespace="dev"))
    await objects.create(Service(metadata=ObjectMeta(name="svc", namespace="prod")))
    await objects.create(Node(metadata=ObjectMeta(name="node-1")))

    pods, revision = await objects.list(Pod)
    assert [(p.namespace, p.name) for p in pods] == [("dev", "c"), ("prod", "a"), ("prod", "b")]
    assert revision == await objects.store.revision()
    prod, _ = await objects.list(Pod, "prod")
    assert [p.name for p in prod] == ["a", "b"]
    nodes, _ = await objects.list(Node)
    assert [n.name for n in nodes] == ["node-1"] and nodes[0].namespace == ""
    assert [s.name for s in (await objects.list(Service))[0]] == ["svc"]


# ---------------------------------------------------------------- update


async def test_update_is_a_compare_and_swap_on_resource_version(objects: ObjectStore) -> None:
    created = await objects.create(make_pod("web-1"))
    mine, theirs = created.copy(), created.copy()
    theirs.metadata.labels["by"] = "them"
    updated = await objects.update(theirs)
    assert int(updated.metadata.resource_version) > int(created.metadata.resource_version)

    mine.metadata.labels["by"] = "me"
    with pytest.raises(Conflict, match="modified"):
        await objects.update(mine)
    got = await objects.get(Pod, "default", "web-1")
    assert got is not None and got.metadata.labels["by"] == "them"


async def test_update_of_a_deleted_object_is_a_conflict(objects: ObjectStore) -> None:
    created = await objects.create(make_pod("web-1"))
    await objects.delete(created)
    with pytest.raises(Conflict):
        await objects.update(created)
    assert await objects.get(Pod, "default", "web-1") is None


async def test_update_without_resource_version_is_unconditional(objects: ObjectStore) -> None:
    created = await objects.create(make_pod("web-1"))
    blind = make_pod("web-1", image="nginx")
    updated = await objects.update(blind)
    assert updated.metadata.uid == created.metadata.uid
    assert updated.metadata.creation_timestamp == created.metadata.creation_timestamp
    got = await objects.get(Pod, "default", "web-1")
    assert got is not None and got.spec.containers[0].image == "nginx"


async def test_generation_counts_spec_changes_only(objects: ObjectStore) -> None:
    pod = await objects.create(make_pod("web-1"))
    pod.status.phase = "Running"
    pod.metadata.labels["tier"] = "front"
    pod = await objects.update(pod)
    assert pod.metadata.generation == 1

    pod.spec.containers[0].image = "nginx"
    pod = await objects.update(pod)
    assert pod.metadata.generation == 2
    stored = await objects.get(Pod, "default", "web-1")
    assert stored is not None and stored.metadata.generation == 2


async def test_update_status_writes_the_status_onto_the_object_as_read(
    objects: ObjectStore,
) -> None:
    from gitkube.api.objects import PodStatus

    read = await objects.create(make_pod("web-1"))
    as_read = read.copy()
    written = await objects.update_status(read, PodStatus(phase="Running", pod_ip="10.0.0.5"))
    assert read == as_read, "the object given was changed"
    assert written.metadata.resource_version != read.metadata.resource_version
    stored = await objects.get(Pod, "default", "web-1")
    assert stored is not None
    assert stored.status.phase == "Running" and stored.status.pod_ip == "10.0.0.5"
    assert stored.metadata.resource_version == written.metadata.resource_version
    assert stored.metadata.generation == 1
    assert stored.metadata.uid == read.metadata.uid
    assert stored.spec == read.spec and stored.metadata.labels == {"app": "web"}
    # the object as read before is stale now: nothing is written
    with pytest.raises(Conflict, match="modified"):
        await objects.update_status(read, PodStatus(phase="Failed"))
    again = await objects.get(Pod, "default", "web-1")
    assert again is not None and again.status.phase == "Running"
    with pytest.raises(ValueError, match="resourceVersion"):
        await objects.update_status(make_pod("web-1"), PodStatus(phase="Failed"))


# ---------------------------------------------------------------- delete


async def test_delete_is_guarded_on_resource_version(objects: ObjectStore) -> None:
    created = await objects.create(make_pod("web-1"))
    changed = created.copy()
    changed.metadata.labels["x"] = "y"
    current = await objects.update(changed)

    with pytest.raises(Conflict):
        await objects.delete(created)
    assert await objects.get(Pod, "default", "web-1") is not None
    assert await objects.delete(current) is True
    assert await objects.get(Pod, "default", "web-1") is None
    assert await objects.delete(current) is False
    assert await objects.delete(current, guarded=False) is False


# ---------------------------------------------------------------- watch


async def test_watch_reports_object_events(objects: ObjectStore) -> None:
    start = await objects.store.revision() + 1
    pod = await objects.create(make_pod("web-1", namespace="prod"))
    await objects.create(Service(metadata=ObjectMeta(name="svc")))
    await objects.create(Node(metadata=ObjectMeta(name="node-1")))
    await objects.store.put("/gitkube/_system/sync/state", b"{}")
    pod.spec.containers[0].image = "nginx"
    pod = await objects.update(pod)
    await objects.delete(pod)

    events = objects.watch(["pods", "nodes"], start_revision=start)
    try:
        got = await take(events, 4)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    assert [(e.type, e.resource, e.namespace, e.name) for e in got] == [
        ("PUT", "pods", "prod", "web-1"),
        ("PUT", "nodes", "", "node-1"),
        ("PUT", "pods", "prod", "web-1"),
        ("DELETE", "pods", "prod", "web-1"),
    ]
    assert isinstance(got[2].object, Pod) and got[2].object.metadata.generation == 2
    assert got[2].object.metadata.resource_version == str(got[2].revision)
    deleted = got[3].object
    assert isinstance(deleted, Pod) and deleted.spec.containers[0].image == "nginx"
