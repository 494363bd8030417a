"""Recording v1 Events: what the scheduler, the controllers and the agents did.

``EventRecorder.record(obj, type, reason, message)`` returns at once; a
background task writes. As Kubernetes' recorder does, the same event of the
same object (same reason, message and component) is one Event whose
``count`` grows and whose ``lastTimestamp`` moves, not a new object each
time. Events live in the store under leases, so each one disappears an hour
(``ttl_seconds``) after it last happened; a lease is shared by the events
written within a minute of each other, so a busy cluster does not hold a
lease per event.

Events are best effort: a write that fails is logged at debug level and
dropped; they never hold up the loop that records them.

What is queued is written in one transaction (up to ``BATCH`` events), with
no read first: a new name is created (guarded on its absence), a name this
recorder wrote before is updated from what it wrote (guarded on that
revision). Only when that transaction loses (another writer, an expired
event) is each event read and written alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import socket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from gitkube.api.objects import ApiObject, Event, EventSource, ObjectMeta, ObjectReference
from gitkube.api.redact import scrub
from gitkube.errors import Conflict, GitkubeError, NotFound
from gitkube.store.base import Compare, Put
from gitkube.store.objects import ObjectStore, encode

log = logging.getLogger(__name__)

NORMAL, WARNING = "Normal", "Warning"
#: Kubernetes' default --event-ttl
DEFAULT_TTL_SECONDS = 3600
#: events waiting to be written; beyond it the oldest are dropped
MAX_PENDING = 1000
#: events written in one transaction (the store takes 128 operations a branch)
BATCH = 64
#: events this recorder remembers having written (their next write reads nothing)
MAX_WRITTEN = 1000


def _iso(unix: float) -> str:
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class _Pending:
    ref: ObjectReference
    type: str
    reason: str
    message: str
    at: float


class EventRecorder:
    def __init__(
        self,
        objects: ObjectStore,
        component: str,
        *,
        host: str = "",
        ttl_seconds: int = DEFAULT_TTL_SECONDS,
        lease_window_seconds: float = 60.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.component = component
        self.host = host or socket.gethostname()
        self.ttl_seconds = ttl_seconds
        #: events written within this long share a lease (it lives this much longer)
        self.lease_window_seconds = lease_window_seconds
        self.clock = clock
        self._pending: OrderedDict[str, _Pending] = OrderedDict()
        self._counts: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._lease = 0
        self._lease_at = 0.0
        #: name -> the Event as this recorder last wrote it (resourceVersion set)
        self._written: OrderedDict[str, Event] = OrderedDict()

    # ------------------------------------------------------------ recording

    def record(self, obj: ApiObject, type_: str, reason: str, message: str) -> None:
        """Queue an event about ``obj`` (never blocks, never raises)."""
        message = scrub(message)  # no Secret value this process knows
        meta = obj.metadata
        ref = ObjectReference(
            kind=obj.KIND,
            namespace=meta.namespace,
            name=meta.name,
            uid=meta.uid,
            api_version=obj.api_version,
            resource_version=meta.resource_version,
        )
        name = self.event_name(ref, reason, message)
        self._counts[name] = self._counts.get(name, 0) + 1
        self._pending[name] = _Pending(ref, type_, reason, message, self.clock())
        self._pending.move_to_end(name)
        while len(self._pending) > MAX_PENDING:
            dropped, _ = self._pending.popitem(last=False)
            self._counts.pop(dropped, None)
        self._wake.set()
        self._ensure_task()

    def event_name(self, ref: ObjectReference, reason: str, message: str) -> str:
        digest = hashlib.sha1(
            "\0".join(
                (ref.kind, ref.namespace, ref.name, ref.uid, reason, message, self.component)
            ).encode()
        ).hexdigest()[:16]
        return f"{ref.name}.{digest}"

    def _ensure_task(self) -> None:
        if self._task is not None and not self._task.done():
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop: recorded when one runs flush()
        self._task = loop.create_task(self._writer(), name=f"events {self.component}")

    async def _writer(self) -> None:
        while self._pending:
            await self.flush()
        self._wake.clear()

    async def flush(self) -> None:
        """Write every queued event now."""
        while self._pending:
            batch: list[tuple[str, _Pending, int]] = []
            while self._pending and len(batch) < BATCH:
                name, item = self._pending.popitem(last=False)
                batch.append((name, item, self._counts.pop(name, 1)))
            try:
                if await self._write_unread(batch):
                    continue
            except (GitkubeError, OSError) as exc:
                log.debug("%d events not written at once: %s", len(batch), exc)
            for name, item, count in batch:
                try:
                    await self._write(name, item, count)
                except (GitkubeError, OSError) as exc:
                    log.debug("event %s %s not recorded: %s", item.reason, item.ref.name, exc)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.flush()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    # ------------------------------------------------------------ writing

    async def _lease_now(self) -> int:
        now = time.monotonic()
        if not self._lease or now - self._lease_at >= self.lease_window_seconds:
            ttl = self.ttl_seconds + max(0, round(self.lease_window_seconds))
            self._lease = await self.objects.store.grant_lease(ttl)
            self._lease_at = now
        return self._lease

    def _new_event(self, name: str, item: _Pending, count: int) -> Event:
        event = Event(
            metadata=ObjectMeta(name=name, namespace=item.ref.namespace or "default"),
            involved_object=item.ref,
            reason=item.reason,
            message=item.message,
            source=EventSource(component=self.component, host=self.host),
            first_timestamp=_iso(item.at),
            last_timestamp=_iso(item.at),
            count=count,
            type=item.type,
            reporting_component=self.component,
            reporting_instance=self.host,
        )
        return self.objects.prepare_create(event)

    @staticmethod
    def _again(event: Event, item: _Pending, count: int) -> Event:
        """``event`` (as stored) happened ``count`` more times, the last at ``item.at``."""
        return replace(
            event,
            metadata=replace(event.metadata),
            count=event.count + count,
            last_timestamp=_iso(item.at),
            involved_object=item.ref,
        )

    def _remember(self, event: Event, revision: int) -> None:
        event.metadata.resource_version = str(revision)
        self._written[event.metadata.name] = event
        self._written.move_to_end(event.metadata.name)
        while len(self._written) > MAX_WRITTEN:
            self._written.popitem(last=False)

    async def _write_unread(self, batch: list[tuple[str, _Pending, int]]) -> bool:
        """Write ``batch`` in one transaction from what this recorder knows;
        False (nothing written) when a guard lost."""
        events: list[Event] = []
        for name, item, count in batch:
            known = self._written.pop(name, None)
            events.append(
                self._new_event(name, item, count)
                if known is None
                else self._again(known, item, count)
            )
        lease = await self._lease_now()
        try:
            result = await self.objects.store.txn(
                [Compare(e.key, int(e.metadata.resource_version or 0)) for e in events],
                [Put(e.key, encode(e), lease=lease) for e in events],
            )
        except NotFound:
            self._lease = 0  # the lease lapsed (a store restart): take a new one
            return False
        if not result.succeeded:
            return False
        for event in events:
            self._remember(event, result.revision)
        return True

    async def _write(self, name: str, item: _Pending, count: int) -> None:
        """Read the event, then write it (after the batch lost a guard)."""
        namespace = item.ref.namespace or "default"
        for _ in range(3):
            current = await self.objects.get(Event, namespace, name)
            event = (
                self._new_event(name, item, count)
                if current is None
                else self._again(current, item, count)
            )
            lease = await self._lease_now()
            compare_revision = int(event.metadata.resource_version or 0)
            try:
                result = await self.objects.store.txn(
                    [Compare(event.key, compare_revision)],
                    [Put(event.key, encode(event), lease=lease)],
                )
            except NotFound:
                self._lease = 0  # the lease lapsed (a store restart): take a new one
                continue
            if result.succeeded:
                self._remember(event, result.revision)
                return
        raise Conflict(f"event {namespace}/{name} kept changing")
