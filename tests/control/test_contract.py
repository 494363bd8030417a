"""The reconcile contract, with plain reconcile functions (a Controller on a
real SQLite store's cache, and ``Controller.process`` with a plain queue).

- Result(requeue_after) reconciles the key again after the delay;
- Retry backs off per key (and one failing key does not hold up the others);
- RetryAfter waits the given delay; Terminal is not retried until an event;
- a running Controller maps cache events to keys and reconciles each once
  per change, never one key in two workers at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.objects import ConfigMap, Container, ObjectMeta, Pod, PodSpec
from gitkube.control import (
    Cache,
    Controller,
    Result,
    Retry,
    RetryAfter,
    Terminal,
    WorkQueue,
    own_key,
    ref,
    split_ref,
)
from gitkube.errors import Conflict
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.store.conftest import eventually


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def make_pod(name: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name),
        spec=PodSpec(containers=[Container(name="c", image="busybox")]),
    )


def test_keys() -> None:
    assert ref("default", "web") == "default/web" and ref("", "node-1") == "node-1"
    assert split_ref("default/web") == ("default", "web")
    assert split_ref("node-1") == ("", "node-1")
    assert ConfigMap.RESOURCE  # the kit's cache knows the new workload kinds too


def controller(fn, queue: WorkQueue, objects: ObjectStore) -> Controller:  # type: ignore[no-untyped-def]
    return Controller("test", fn, Cache(objects.store), watches={}, queue=queue)


async def test_outcomes_decide_when_a_key_comes_back(objects: ObjectStore) -> None:
    queue = WorkQueue(base_delay=0.01, rate=1000, burst=1000)
    outcomes: dict[str, object] = {
        "ok": None,
        "requeue": Result(requeue_after=0.05),
        "retry": Retry("not yet"),
        "conflict": Conflict("lost a compare-and-swap"),
        "crash": ValueError("a bug"),
        "after": RetryAfter("wait", delay=0.05),
        "terminal": Terminal("bad input"),
    }

    async def reconcile(key: str) -> Result | None:
        outcome = outcomes[key]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome  # type: ignore[return-value]

    ctl = controller(reconcile, queue, objects)
    for key in outcomes:
        await ctl.process(key)
    # ok and terminal: gone for good; everything else: queued for later
    assert queue.waiting == 5 and len(queue) == 0
    back = set()
    while len(back) < 5:
        key = await asyncio.wait_for(queue.get(), 5)
        assert key is not None
        back.add(key)
        queue.done(key)
    assert back == {"requeue", "retry", "conflict", "crash", "after"}
    assert queue.failures("retry") == 1 and queue.failures("ok") == 0
    assert ctl.stats.terminal == 1 and ctl.stats.errors == 3


async def test_retry_backs_off_that_key_only(objects: ObjectStore) -> None:
    queue = WorkQueue(base_delay=0.01, rate=1000, burst=1000)
    calls: list[str] = []

    async def reconcile(key: str) -> None:
        calls.append(key)
        if key == "bad":
            raise Retry("still conflicting")

    ctl = controller(reconcile, queue, objects)
    for _ in range(4):
        await ctl.process("bad")
    assert queue.failures("bad") == 4  # 10, 20, 40, 80 ms: it backs off
    await ctl.process("good")
    assert queue.failures("good") == 0
    # success forgets the back-off
    calls.clear()

    async def fixed(key: str) -> None:
        calls.append(key)

    ctl.reconcile = fixed
    await ctl.process("bad")
    assert queue.failures("bad") == 0


async def test_a_running_controller_reconciles_each_changed_object(
    objects: ObjectStore,
) -> None:
    await objects.create(make_pod("existing"))
    cache = Cache(objects.store)
    seen: list[str] = []
    running: set[str] = set()
    overlaps: list[str] = []
    terminal_keys: list[str] = []

    async def reconcile(key: str) -> Result | None:
        if key in running:
            overlaps.append(key)
        running.add(key)
        try:
            await asyncio.sleep(0.001)
            namespace, name = split_ref(key)
            pod = cache.get(Pod, namespace, name)
            seen.append(f"{key}:{'present' if pod else 'gone'}")
            if name == "bad":
                terminal_keys.append(key)
                raise Terminal("this pod is wrong until it changes")
            return None
        finally:
            running.discard(key)

    ctl = Controller("pods", reconcile, cache, watches={"pods": own_key}, workers=4)
    stop = asyncio.Event()
    task = asyncio.create_task(ctl.run(stop))
    try:
        await eventually(_async(lambda: "default/existing:present" in seen))
        pod = await objects.create(make_pod("new"))
        await eventually(_async(lambda: "default/new:present" in seen))
        await objects.delete(pod)
        await eventually(_async(lambda: "default/new:gone" in seen))
        bad = await objects.create(make_pod("bad"))
        await eventually(_async(lambda: len(terminal_keys) == 1))
        # not retried until it changes
        await eventually(
            _async(lambda: not ctl.queue or (not len(ctl.queue) and not ctl.queue.waiting))
        )
        assert len(terminal_keys) == 1
        bad.metadata.labels = {"fixed": "no"}
        await objects.update(bad)
        await eventually(_async(lambda: len(terminal_keys) == 2))
        assert not overlaps
        assert cache.lists == 1
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


def _async(check):  # type: ignore[no-untyped-def]
    async def run() -> bool:
        return bool(check())

    return run
