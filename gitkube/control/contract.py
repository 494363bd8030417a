"""The reconcile contract and the ``Controller`` that runs it, after controller-runtime.

``reconcile(key) -> Result | None`` is level-based: the key says which
object, never what changed; the function reads the cache, writes what must
change, and may be called again at any time. What happens next:

- returns ``None`` or ``Result()``: done; the key's back-off is reset;
- returns ``Result(requeue_after=s)``: reconcile the key again in ``s`` seconds;
- raises ``RetryAfter(delay)``: again after ``delay``;
- raises ``Retry``, ``Conflict``, any other error: again after the key's
  exponential back-off (and the queue's token bucket);
- raises ``Terminal``: not again until an event maps to the key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from gitkube.control.cache import Cache, CacheEvent
from gitkube.control.queue import WorkQueue
from gitkube.errors import GitkubeError, LeadershipLost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Result:
    """What a reconcile asks for next: ``requeue_after`` seconds, or nothing."""

    requeue_after: float | None = None


class Retry(GitkubeError):
    """Try the key again after its back-off."""

    retryable = True


class RetryAfter(GitkubeError):
    """Try the key again after ``delay`` seconds."""

    retryable = True

    def __init__(self, message: str, *, delay: float) -> None:
        super().__init__(message)
        self.delay = delay


class Terminal(GitkubeError):
    """Do not try again until the input changes (an event maps to the key)."""


Reconcile = Callable[[str], Awaitable["Result | None"]]
#: maps a cache event to the keys to reconcile
KeyFunc = Callable[[CacheEvent], Iterable[str]]


def ref(obj_namespace: str, name: str) -> str:
    """The queue key of an object: ``namespace/name``, or ``name`` when cluster-scoped."""
    return f"{obj_namespace}/{name}" if obj_namespace else name


def split_ref(key: str) -> tuple[str, str]:
    """``(namespace, name)`` of a queue key made by ``ref``."""
    namespace, _, name = key.rpartition("/")
    return namespace, name


def own_key(event: CacheEvent) -> list[str]:
    """The key of the object the event is about."""
    obj = event.obj
    return [ref(obj.namespace, obj.name)] if obj is not None else []


def constant_key(key: str) -> KeyFunc:
    """Every event maps to one key (a controller that reconciles everything at once)."""
    return lambda _event: (key,)


@dataclass
class ControllerStats:
    reconciles: int = 0
    errors: int = 0
    requeues: int = 0
    terminal: int = 0


class Controller:
    """Runs ``reconcile`` on keys from ``watches`` with ``workers`` workers.

    ``watches`` maps a resource name ("pods", ...; "" for raw keys) to the
    function giving the keys an event of it touches. ``initial_keys`` are
    queued at start (besides the keys of everything in the cache), and
    ``resync_seconds`` replays every cached object through ``watches``
    periodically (a choice, off by default).
    """

    def __init__(
        self,
        name: str,
        reconcile: Reconcile,
        cache: Cache,
        *,
        watches: Mapping[str, KeyFunc],
        workers: int = 1,
        initial_keys: Iterable[str] = (),
        resync_seconds: float | None = None,
        queue: WorkQueue | None = None,
        stop_grace_seconds: float = 5.0,
    ) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.reconcile = reconcile
        self.cache = cache
        self.watches = dict(watches)
        self.workers = workers
        self.initial_keys = list(initial_keys)
        self.resync_seconds = resync_seconds
        self.queue = queue
        self.stop_grace_seconds = stop_grace_seconds
        self.stats = ControllerStats()

    def handle(self, event: CacheEvent) -> None:
        """Map ``event`` to keys and queue them."""
        keys = self.watches.get(event.resource)
        if keys is None or self.queue is None:
            return
        for key in keys(event):
            self.queue.add(key)

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile until ``stop``. Starts the cache if nobody runs it yet."""
        if self.queue is None:
            self.queue = WorkQueue()
        own_cache = None
        if not self.cache.running:
            own_cache = asyncio.create_task(self.cache.run(stop), name=f"{self.name}-cache")
        tasks: list[asyncio.Task[None]] = []
        remove = None
        try:
            await _until(stop, self.cache.synced.wait())
            if stop.is_set():
                return
            remove = self.cache.add_handler(self.handle, replay=True)
            for key in self.initial_keys:
                self.queue.add(key)
            tasks = [
                asyncio.create_task(self._worker(), name=f"{self.name}-worker-{i}")
                for i in range(self.workers)
            ]
            if self.resync_seconds:
                tasks.append(asyncio.create_task(self._resync(stop), name=f"{self.name}-resync"))
            await stop.wait()
        finally:
            if remove is not None:
                remove()
            self.queue.shutdown()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self.stop_grace_seconds)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if own_cache is not None:
                own_cache.cancel()
                await asyncio.gather(own_cache, return_exceptions=True)

    async def _resync(self, stop: asyncio.Event) -> None:
        assert self.resync_seconds
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.resync_seconds)
            if stop.is_set():
                return
            for event in self.cache.snapshot_events():
                self.handle(event)
            for key in self.initial_keys:
                assert self.queue is not None
                self.queue.add(key)

    async def _worker(self) -> None:
        queue = self.queue
        assert queue is not None
        while (key := await queue.get()) is not None:
            try:
                await self.process(key)
            finally:
                queue.done(key)

    async def process(self, key: str) -> None:
        """Reconcile ``key`` once and queue it again as its outcome says."""
        queue = self.queue
        assert queue is not None
        self.stats.reconciles += 1
        try:
            result = await self.reconcile(key)
        except Terminal as exc:
            self.stats.terminal += 1
            queue.forget(key)
            log.warning("%s: %s: %s (not retried until it changes)", self.name, key, exc)
        except RetryAfter as exc:
            self.stats.requeues += 1
            queue.add_after(key, exc.delay)
            log.info("%s: %s: %s; again in %.1fs", self.name, key, exc, exc.delay)
        except LeadershipLost as exc:
            self.stats.errors += 1
            delay = queue.add_rate_limited(key)
            log.warning("%s: %s: %s; again in %.1fs", self.name, key, exc, delay)
        except GitkubeError as exc:
            self.stats.errors += 1
            delay = queue.add_rate_limited(key)
            log.info("%s: %s: %s; again in %.2fs", self.name, key, exc, delay)
        except Exception:
            self.stats.errors += 1
            delay = queue.add_rate_limited(key)
            log.exception("%s: %s: reconcile failed; again in %.2fs", self.name, key, delay)
        else:
            queue.forget(key)
            if result is not None and result.requeue_after is not None:
                self.stats.requeues += 1
                queue.add_after(key, result.requeue_after)


async def _until(stop: asyncio.Event, aw: Awaitable[object]) -> None:
    """Await ``aw`` unless ``stop`` is set first."""
    tasks = [asyncio.ensure_future(aw), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
