"""The work queue, with plain keys.

- a key added twice while it waits is handed out once;
- a key being processed is not handed to a second worker; added meanwhile,
  it comes back once ``done`` is called;
- ``add_after``: the earliest of two delays wins;
- ``add_rate_limited``: per-key exponential back-off, reset by ``forget``,
  and an overall token bucket;
- ``shutdown`` releases waiting workers with None.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from gitkube.control import TokenBucket, WorkQueue


async def test_a_key_added_twice_while_waiting_is_handed_out_once() -> None:
    queue = WorkQueue()
    for key in ("a", "b", "a", "a"):
        queue.add(key)
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["a", "b"]
    assert len(queue) == 0


async def test_a_key_is_never_processed_by_two_workers_at_once() -> None:
    queue = WorkQueue()
    queue.add("k")
    first = await queue.get()
    queue.add("k")  # an event while it is processed
    assert len(queue) == 0, "not handed out while a worker holds it"
    second = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    assert not second.done()
    queue.done(first)  # type: ignore[arg-type]
    assert await asyncio.wait_for(second, 1) == "k"
    queue.done("k")
    assert len(queue) == 0


async def test_workers_in_parallel_never_share_a_key() -> None:
    queue = WorkQueue()
    busy: set[str] = set()
    overlaps: list[str] = []
    handled: list[str] = []

    async def worker() -> None:
        while (key := await queue.get()) is not None:
            if key in busy:
                overlaps.append(key)
            busy.add(key)
            await asyncio.sleep(0.001)
            handled.append(key)
            busy.discard(key)
            queue.done(key)

    workers = [asyncio.create_task(worker()) for _ in range(4)]
    for _ in range(20):
        for key in ("a", "b", "c"):
            queue.add(key)
        await asyncio.sleep(0)
    while len(queue) or queue.processing():
        await asyncio.sleep(0.001)
    queue.shutdown()
    await asyncio.wait_for(asyncio.gather(*workers), 5)
    assert not overlaps
    assert set(handled) == {"a", "b", "c"}
    assert len(handled) < 60, "adds while waiting were coalesced"


async def test_add_after_keeps_the_earliest_delay() -> None:
    queue = WorkQueue()
    started = time.monotonic()
    queue.add_after("k", 30)
    queue.add_after("k", 0.05)
    queue.add_after("k", 20)
    assert queue.waiting == 1
    assert await asyncio.wait_for(queue.get(), 5) == "k"
    assert 0.04 <= time.monotonic() - started < 5


async def test_rate_limited_back_off_doubles_per_key_and_forget_resets() -> None:
    queue = WorkQueue(base_delay=0.01, max_delay=1.0, rate=1000, burst=1000)
    delays = [queue.add_rate_limited("k") for _ in range(5)]
    assert delays == [0.01, 0.02, 0.04, 0.08, 0.16]
    assert queue.add_rate_limited("other") == 0.01, "another key has its own back-off"
    for _ in range(10):
        queue.add_rate_limited("k")
    assert queue.add_rate_limited("k") == 1.0, "capped"
    queue.forget("k")
    assert queue.add_rate_limited("k") == 0.01


async def test_token_bucket_limits_the_overall_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(10, 2, clock=lambda: now[0])
    assert [bucket.reserve(), bucket.reserve()] == [0.0, 0.0]  # the burst
    assert bucket.reserve() == pytest.approx(0.1)
    assert bucket.reserve() == pytest.approx(0.2)
    now[0] = 10.0
    assert bucket.reserve() == 0.0
    queue = WorkQueue(base_delay=0.001, rate=10, burst=1, clock=lambda: now[0])
    assert queue.add_rate_limited("a") == 0.001
    assert queue.add_rate_limited("b") == pytest.approx(0.1), "the bucket, not the key, decides"


async def test_shutdown_releases_waiting_workers() -> None:
    queue = WorkQueue()
    waiting = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.shutdown()
    assert await asyncio.wait_for(waiting, 1) is None
    queue.add("late")
    assert await queue.get() is None
