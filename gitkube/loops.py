"""The shape every control loop shares: level-triggered reconcile passes.

A loop has ``reconcile_once()``, which reads all it needs, writes what must
change and returns what it did; running it twice is harmless. ``run_loop``
calls it on every watch event of the resources it cares about (coalesced:
a burst of events becomes one pass), and on a timer as a safety net. A
store outage or a compacted watch is survived: back off, re-list, go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from gitkube.control.queue import Backoff
from gitkube.errors import Compacted, GitkubeError
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

__all__ = ["Backoff", "run_loop"]


async def run_loop(
    name: str,
    reconcile_once: Callable[[], Awaitable[Any]],
    objects: ObjectStore,
    *,
    resources: Sequence[str],
    stop: asyncio.Event,
    resync_seconds: float = 10.0,
    kick: asyncio.Event | None = None,
) -> None:
    """Reconcile on changes to ``resources`` until ``stop`` is set.

    ``kick`` lets another task ask for a pass (e.g. a timer inside the loop
    that must fire before the next resync).
    """
    wake = kick or asyncio.Event()
    wake.set()
    watcher = asyncio.create_task(_watch_into(name, objects, resources, wake, stop))
    backoff = Backoff()
    try:
        while not stop.is_set():
            stop_wait = asyncio.ensure_future(stop.wait())
            wake_wait = asyncio.ensure_future(wake.wait())
            await asyncio.wait(
                {stop_wait, wake_wait},
                timeout=resync_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            stop_wait.cancel()
            wake_wait.cancel()
            if stop.is_set():
                break
            wake.clear()
            try:
                await reconcile_once()
                backoff.reset()
            except GitkubeError as exc:
                delay = backoff.next()
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                wake.set()
                await _sleep_or_stop(delay, stop)
            except Exception:
                delay = backoff.next()
                log.exception("%s: reconcile failed; retrying in %.1fs", name, delay)
                wake.set()
                await _sleep_or_stop(delay, stop)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)


async def _sleep_or_stop(delay: float, stop: asyncio.Event) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=delay)


async def _watch_into(
    name: str,
    objects: ObjectStore,
    resources: Sequence[str],
    wake: asyncio.Event,
    stop: asyncio.Event,
) -> None:
    backoff = Backoff()
    revision = 0
    while not stop.is_set():
        try:
            if not revision:
                revision = await objects.store.revision() + 1
            async for event in objects.watch(resources, start_revision=revision):
                revision = event.revision + 1
                wake.set()
                backoff.reset()
        except Compacted:
            revision = 0
            wake.set()
        except GitkubeError as exc:
            delay = backoff.next()
            log.debug("%s: watch interrupted (%s); again in %.1fs", name, exc, delay)
            await _sleep_or_stop(delay, stop)
            wake.set()
