"""v1 Events (gitkube.store.events) on a real SQLite store: the same event of
the same object is one Event whose count grows and whose lastTimestamp moves;
different reasons are different Events; every Event expires through its
store lease (an hour by default; a second here); the events of the master's
writes (gitkube.control.events) name what a kubelet-era cluster names."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.objects import (
    Event,
    Node,
    NodeCondition,
    NodeStatus,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodSpec,
)
from gitkube.control.applier import create, delete, update
from gitkube.control.events import events_of
from gitkube.store.events import EventRecorder
from gitkube.store.objects import ObjectStore
from gitkube.store.sqlite import SQLiteStore


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await SQLiteStore.open(tmp_path / "state.db")
    yield ObjectStore(store)
    await store.close()


def pod(name: str = "web-1", node: str = "") -> Pod:
    return Pod(metadata=ObjectMeta(name=name, uid=f"uid-{name}"), spec=PodSpec(node_name=node))


async def test_repeated_events_are_counted_in_one_object(objects: ObjectStore) -> None:
    clock = [1_800_000_000.0]
    recorder = EventRecorder(objects, "kubelet", host="n1", clock=lambda: clock[0])
    target = pod()
    recorder.record(target, "Warning", "BackOff", "Back-off restarting failed container")
    await recorder.flush()
    clock[0] += 30
    recorder.record(target, "Warning", "BackOff", "Back-off restarting failed container")
    recorder.record(target, "Normal", "Started", "Started container web")
    await recorder.flush()
    events, _ = await objects.list(Event)
    by_reason = {e.reason: e for e in events}
    assert set(by_reason) == {"BackOff", "Started"}
    backoff = by_reason["BackOff"]
    assert backoff.count == 2 and backoff.type == "Warning"
    assert backoff.first_timestamp == "2027-01-15T08:00:00Z"
    assert backoff.last_timestamp == "2027-01-15T08:00:30Z"
    assert backoff.involved_object.name == "web-1" and backoff.involved_object.uid == "uid-web-1"
    assert backoff.source.component == "kubelet" and backoff.source.host == "n1"
    await recorder.close()


async def test_queued_events_are_one_transaction_and_other_writers_are_counted(
    objects: ObjectStore,
) -> None:
    """What is queued is written at once, with no read first; when another
    writer (here a second agent process of the same name) wrote the same
    event meanwhile, the guarded write loses, and the event is read and
    counted, not overwritten."""
    first = EventRecorder(objects, "kubelet", host="n1")
    second = EventRecorder(objects, "kubelet", host="n1")
    targets = [pod(f"web-{i}") for i in range(70)]  # more than one batch
    for target in targets:
        first.record(target, "Normal", "Started", "Started container web")
    await first.flush()
    events, _ = await objects.list(Event)
    assert len(events) == 70 and all(e.count == 1 for e in events)
    revisions = {e.metadata.resource_version for e in events}
    assert len(revisions) == 2, f"70 events in {len(revisions)} transactions"
    second.record(targets[0], "Normal", "Started", "Started container web")
    await second.flush()
    first.record(targets[0], "Normal", "Started", "Started container web")
    first.record(targets[1], "Normal", "Started", "Started container web")
    await first.flush()
    counts = {e.involved_object.name: e.count for e in (await objects.list(Event))[0]}
    assert counts["web-0"] == 3 and counts["web-1"] == 2 and counts["web-2"] == 1
    await first.close()
    await second.close()


async def test_events_expire_with_their_lease(objects: ObjectStore) -> None:
    recorder = EventRecorder(objects, "default-scheduler", ttl_seconds=1, lease_window_seconds=0)
    recorder.record(pod(), "Normal", "Scheduled", "Successfully assigned default/web-1 to n1")
    await recorder.flush()
    events, _ = await objects.list(Event)
    assert len(events) == 1
    kv = await objects.store.get(events[0].key)
    assert kv is not None and kv.lease != 0
    for _ in range(100):
        if not (await objects.list(Event))[0]:
            break
        await asyncio.sleep(0.1)
    assert (await objects.list(Event))[0] == []
    await recorder.close()


def test_the_masters_writes_name_their_events() -> None:
    pending = pod("web-2")
    bound = pod("web-2", node="n1")
    rc_ref = OwnerReference(kind="ReplicationController", name="web", uid="rc-uid", controller=True)
    owned = pod("web-3")
    owned.metadata.owner_references = [rc_ref]
    ready = Node(
        metadata=ObjectMeta(name="n1"),
        status=NodeStatus(conditions=[NodeCondition(type="Ready", status="True")]),
    )
    lost = ready.copy()
    lost.status.conditions = [NodeCondition(type="Ready", status="Unknown")]
    found = events_of([update(bound, pending), create(owned), delete(owned), update(lost, ready)])
    assert [(obj.KIND, obj.name, reason) for obj, _, reason, _ in found] == [
        ("Pod", "web-2", "Scheduled"),
        ("ReplicationController", "web", "SuccessfulCreate"),
        ("ReplicationController", "web", "SuccessfulDelete"),
        ("Node", "n1", "NodeNotReady"),
    ]
    assert found[0][3] == "Successfully assigned default/web-2 to n1"
