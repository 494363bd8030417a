"""Leader election through a store lease, as kube-controller-manager does.

Candidates race to create ``LEADER_KEY`` attached to their own lease (a
transaction guarded on the key being absent). The winner refreshes its lease
every ttl/3; when it dies, the lease lapses, the key vanishes and another
candidate wins within the TTL. A leader that cannot refresh in time steps
down at once (before its lease could have lapsed on the server), so two
leaders never act on the same term.

Writes that must not be applied twice carry ``fence()``, a compare on the
leader key's revision: a deposed leader's transaction fails instead of
landing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gitkube.api.keys import LEADER_KEY
from gitkube.control import Backoff
from gitkube.errors import GitkubeError, NotFound
from gitkube.store.base import Compare, Get, Put, Store

log = logging.getLogger(__name__)


class LeaderElection:
    def __init__(self, store: Store, identity: str, *, ttl: int = 10, key: str = LEADER_KEY):
        if ttl < 2:
            raise ValueError("leader lease TTL must be at least 2 seconds")
        self.store = store
        self.identity = identity
        self.ttl = ttl
        self.key = key
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.revision = 0
        self.lease = 0
        self.terms = 0

    def fence(self) -> Compare:
        """A compare that holds only while this term of leadership lasts."""
        return Compare(self.key, self.revision)

    async def leader(self) -> str:
        """Who leads now ('' when nobody does)."""
        kv = await self.store.get(self.key)
        return kv.value.decode() if kv else ""

    async def run(self, stop: asyncio.Event) -> None:
        """Campaign, lead, and campaign again after losing, until ``stop``."""
        backoff = Backoff(base=0.2, cap=self.ttl / 3)
        try:
            while not stop.is_set():
                try:
                    if await self._campaign():
                        backoff.reset()
                        await self._hold(stop)
                    else:
                        await _wait(stop, self.ttl / 4)
                except GitkubeError as exc:
                    self._step_down(f"store error: {exc}")
                    await _wait(stop, backoff.next())
        finally:
            await self.resign()

    async def _campaign(self) -> bool:
        lease = await self.store.grant_lease(self.ttl)
        result = await self.store.txn(
            [Compare(self.key, 0)],
            [Put(self.key, self.identity.encode(), lease=lease)],
            [Get(self.key)],
        )
        if not result.succeeded:
            with contextlib.suppress(GitkubeError):
                await self.store.revoke_lease(lease)
            return False
        self.lease, self.revision = lease, result.revision
        self.terms += 1
        self.lost.clear()
        self.leading.set()
        log.info("%s leads (term %d, revision %d)", self.identity, self.terms, self.revision)
        return True

    async def _hold(self, stop: asyncio.Event) -> None:
        interval = self.ttl / 3
        deadline = time.monotonic() + self.ttl * 2 / 3
        while not stop.is_set() and self.leading.is_set():
            await _wait(stop, interval)
            if stop.is_set():
                return
            try:
                await asyncio.wait_for(self.store.refresh_lease(self.lease), timeout=interval)
                kv = await asyncio.wait_for(self.store.get(self.key), timeout=interval)
            except NotFound:
                self._step_down("lease lapsed")
                return
            except (GitkubeError, TimeoutError) as exc:
                if time.monotonic() > deadline:
                    self._step_down(f"could not refresh the lease in time ({exc})")
                    return
                continue
            if kv is None or kv.mod_revision != self.revision:
                self._step_down("another candidate holds the leader key")
                return
            deadline = time.monotonic() + self.ttl * 2 / 3

    def _step_down(self, why: str) -> None:
        if self.leading.is_set():
            log.warning("%s stops leading: %s", self.identity, why)
            self.leading.clear()
            self.lost.set()

    async def resign(self) -> None:
        """Give up leadership now, so another candidate need not wait the TTL out."""
        was_leading = self.leading.is_set()
        self._step_down("resigned")
        if was_leading and self.lease:
            with contextlib.suppress(GitkubeError):
                await self.store.revoke_lease(self.lease)
        self.lease = 0


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
