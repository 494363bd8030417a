"""One store watch for every client watch of the Kubernetes API (a watch cache).

A hundred ``kubectl get -w`` would otherwise each hold a store watch and
each decode and encode every event. The hub holds one watch of
``/gitkube/``, keeps the recent events in order (``history`` of them), and
each event's served JSON is made once, for every watcher. A client watch
reads the hub from its resourceVersion; one older than what the hub holds
gets a private hub that replays the store's own history (or ``Compacted``,
which the API turns into 410 Gone).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
from typing import Any

from gitkube.api.keys import PREFIX
from gitkube.store.base import Store, WatchEvent

log = logging.getLogger(__name__)

DEFAULT_HISTORY = 20_000


class TooOld(Exception):
    """The revision asked for is older than what the hub holds."""


class HubEvent:
    """A store event with its served form made at most once."""

    __slots__ = ("_data", "_json", "event")

    def __init__(self, event: WatchEvent) -> None:
        self.event = event
        self._data: dict[str, Any] | None = None
        self._json: bytes | None = None

    @property
    def revision(self) -> int:
        return self.event.revision

    @property
    def key(self) -> str:
        return self.event.kv.key

    def data(self) -> dict[str, Any] | None:
        """The object as served (shared: do not change it); for a DELETE the
        last value with the delete's resourceVersion; None when unknown."""
        if self._data is None:
            from gitkube.server.kubeapi import served_form

            event = self.event
            kv = event.kv if event.type == "PUT" else event.prev_kv
            if kv is None or not kv.value:
                return None
            data = served_form(kv)
            if event.type == "DELETE":
                data["metadata"]["resourceVersion"] = str(event.revision)
            self._data = data
        return self._data

    def json(self) -> bytes:
        if self._json is None:
            self._json = json.dumps(self.data(), separators=(",", ":")).encode()
        return self._json


class WatchHub:
    def __init__(self, store: Store, start_revision: int, *, history: int = DEFAULT_HISTORY):
        self.store = store
        self.history = history
        #: events from this revision on are all held
        self.first = start_revision
        #: every revision up to this one has been seen
        self.last = start_revision - 1
        self._events: list[HubEvent] = []
        self._revisions: list[int] = []
        self._changed = asyncio.Condition()
        self._error: BaseException | None = None
        self._task = asyncio.get_running_loop().create_task(self._run(start_revision))

    @property
    def failed(self) -> bool:
        return self._error is not None or self._task.done()

    async def _run(self, start: int) -> None:
        try:
            async for event in self.store.watch(PREFIX, start_revision=start):
                self._events.append(HubEvent(event))
                self._revisions.append(event.revision)
                self.last = event.revision
                if len(self._events) > self.history:
                    drop = len(self._events) - self.history // 2
                    del self._events[:drop]
                    del self._revisions[:drop]
                    self.first = self._revisions[0]
                async with self._changed:
                    self._changed.notify_all()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # watchers see it (Compacted: 410)
            self._error = exc
            async with self._changed:
                self._changed.notify_all()

    async def after(self, revision: int, *, timeout: float) -> list[HubEvent]:
        """Events newer than ``revision``, waiting up to ``timeout`` for one."""
        if revision + 1 < self.first:
            raise TooOld(f"revision {revision} is older than the watch cache ({self.first})")
        if self.last <= revision and self._error is None:
            async with self._changed:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._changed.wait_for(
                            lambda: self.last > revision or self._error is not None
                        ),
                        timeout,
                    )
        if revision + 1 < self.first:
            raise TooOld(f"revision {revision} fell out of the watch cache ({self.first})")
        index = bisect.bisect_right(self._revisions, revision)
        found = self._events[index:]
        if not found and self._error is not None:
            raise self._error
        return found

    async def close(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
