"""A rate-limited work queue of keys, after client-go's ``workqueue``.

- a key added while it waits is queued once (``add`` is idempotent until
  a worker takes it);
- a key taken by a worker is never handed to a second worker before the
  first calls ``done``; added meanwhile, it is queued again at ``done``;
- ``add_after`` queues a key later (the earliest of several delays wins);
- ``add_rate_limited`` queues a key after max(per-key exponential back-off,
  the overall token bucket's delay); ``forget`` resets the key's back-off.
"""

from __future__ import annotations

import asyncio
import heapq
import random
import time
from collections import deque
from collections.abc import Callable


class Backoff:
    """Exponential back-off with jitter: base, 2·base, 4·base … up to cap."""

    def __init__(self, base: float = 0.2, cap: float = 30.0, *, seed: int | None = None) -> None:
        self.base, self.cap, self.attempt = base, cap, 0
        self._random = random.Random(seed)

    def next(self) -> float:
        delay = min(self.cap, self.base * (2**self.attempt))
        self.attempt += 1
        return delay * (0.5 + self._random.random() / 2)

    def reset(self) -> None:
        self.attempt = 0


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved: ``reserve()`` is the
    delay before the caller's token is available (0 when one is at hand)."""

    def __init__(
        self, rate: float, burst: int, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("a token bucket needs rate > 0 and burst >= 1")
        self.rate, self.burst, self.clock = rate, burst, clock
        self._tokens = float(burst)
        self._at = clock()

    def reserve(self) -> float:
        now = self.clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        self._tokens -= 1
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate


class WorkQueue:
    """Keys to reconcile; see the module docstring for the guarantees.

    Workers loop on ``key = await queue.get()`` (None once shut down), work,
    then call ``queue.done(key)``.
    """

    def __init__(
        self,
        *,
        base_delay: float = 0.005,
        max_delay: float = 60.0,
        rate: float = 50.0,
        burst: int = 300,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_delay, self.max_delay = base_delay, max_delay
        self.clock = clock
        self.bucket = TokenBucket(rate, burst, clock=clock)
        self._queue: deque[str] = deque()
        self._dirty: set[str] = set()
        self._processing: set[str] = set()
        self._failures: dict[str, int] = {}
        #: key -> when it is due; the heap may hold stale entries
        self._due: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._ready = asyncio.Event()
        self._shutdown = False

    # ------------------------------------------------------------ adding

    def add(self, key: str) -> None:
        if self._shutdown or key in self._dirty:
            return
        self._dirty.add(key)
        if key not in self._processing:
            self._queue.append(key)
            self._ready.set()

    def add_after(self, key: str, delay: float) -> None:
        if self._shutdown:
            return
        if delay <= 0:
            self.add(key)
            return
        due = self.clock() + delay
        if key in self._due and self._due[key] <= due:
            return
        self._due[key] = due
        heapq.heappush(self._heap, (due, key))
        self._arm()

    def add_rate_limited(self, key: str) -> float:
        """Queue ``key`` after its back-off; returns the delay chosen."""
        failures = self._failures.get(key, 0)
        self._failures[key] = failures + 1
        delay = max(min(self.max_delay, self.base_delay * (2**failures)), self.bucket.reserve())
        self.add_after(key, delay)
        return delay

    def forget(self, key: str) -> None:
        self._failures.pop(key, None)

    def failures(self, key: str) -> int:
        return self._failures.get(key, 0)

    # ------------------------------------------------------------ taking

    async def get(self) -> str | None:
        """The next key (marked as being processed), or None after ``shutdown``."""
        while not self._queue:
            if self._shutdown:
                return None
            self._ready.clear()
            await self._ready.wait()
        key = self._queue.popleft()
        self._dirty.discard(key)
        self._processing.add(key)
        if not self._queue:
            self._ready.clear()
        return key

    def done(self, key: str) -> None:
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._ready.set()

    def shutdown(self) -> None:
        self._shutdown = True
        if self._timer is not None:
            self._timer.cancel()
        self._ready.set()

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def waiting(self) -> int:
        """Keys queued for later (``add_after``, back-off)."""
        return len(self._due)

    def processing(self) -> frozenset[str]:
        return frozenset(self._processing)

    # ------------------------------------------------------------ timers

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        while self._heap and self._due.get(self._heap[0][1]) != self._heap[0][0]:
            heapq.heappop(self._heap)  # superseded by an earlier due time
        if not self._heap or self._shutdown:
            return
        delay = max(0.0, self._heap[0][0] - self.clock())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self.clock()
        while self._heap and self._heap[0][0] <= now:
            due, key = heapq.heappop(self._heap)
            if self._due.get(key) == due:
                del self._due[key]
                self.add(key)
        self._arm()
