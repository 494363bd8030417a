"""The plan applier: guarded writes in batches, an optional leader fence on
every one, and bounded re-plans.

A ``Write`` is ``create(obj)`` (guarded on the key being absent),
``update(new, previous)`` (guarded on ``new.metadata.resourceVersion``) or
``delete(obj)`` (guarded on ``obj``'s resourceVersion). ``Applier.apply``
sends them in transactions within the store's limit (128 operations per
branch, one of them the fence):

- a batch that commits: every write applied;
- a batch that fails: the fence is checked (a moved leader key raises
  ``LeadershipLost``: this batch and the rest are not written), then each
  write is tried alone, so one changed object costs only its own write;
  ``Applied`` tells which writes landed, which lost (``conflicts``) and
  which deletes found the object already gone (``gone``);
- ``atomic=True``: one transaction, all or nothing, ``Conflict`` if it lost.

``apply_encoded`` writes ``Encoded`` writes, values already encoded for the
store (the sync's wire dicts, which it never decodes into typed objects, and
raw keys such as its state), in one fenced transaction, all or nothing.

``replan(attempt, attempts=3)`` calls ``attempt()`` again (after the cache
caught up) while it raises ``Conflict``, and then gives up with ``Retry``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from gitkube.api.objects import ApiObject
from gitkube.control.cache import Cache
from gitkube.control.contract import Retry
from gitkube.errors import Conflict, LeadershipLost
from gitkube.store.base import Compare, Delete, Get, Op, Put, Store
from gitkube.store.objects import ObjectStore, with_status

log = logging.getLogger(__name__)

T = TypeVar("T")

#: the store's operation limit per transaction branch (etcd --max-txn-ops)
MAX_TXN_OPS = 128


@dataclass
class Write:
    op: Literal["create", "update", "delete"]
    obj: ApiObject
    previous: ApiObject | None = None

    @property
    def key(self) -> str:
        return self.obj.key

    def __repr__(self) -> str:
        return f"{self.op} {self.obj.KIND} {self.obj.namespace}/{self.obj.name}"


@dataclass
class Encoded:
    """Put ``value`` at ``key`` (None: delete it), guarded on the key's
    ``mod_revision`` (0: the key must be absent; None: no guard)."""

    key: str
    value: bytes | None
    mod_revision: int | None = None

    @property
    def op(self) -> Literal["put", "delete"]:
        return "delete" if self.value is None else "put"

    def __repr__(self) -> str:
        return f"{self.op} {self.key}"


#: what a transaction writes (``on_txn`` sees either)
AnyWrite = Write | Encoded


def create(obj: ApiObject) -> Write:
    """Create ``obj`` (uid, creation time and generation are filled in)."""
    return Write("create", obj)


async def fence_holds(store: Store, fence: Compare) -> bool:
    """Whether the leader key ``fence`` compares is still as it was (the term lasts)."""
    held = await store.get(fence.key)
    return held is not None and held.mod_revision == fence.mod_revision


def update(obj: ApiObject, previous: ApiObject | None = None) -> Write:
    """Replace the stored object with ``obj``, guarded on ``obj.metadata.resourceVersion``
    (``previous``, when given, carries uid, creation time and generation over)."""
    return Write("update", obj, previous)


def update_status(current: ApiObject, status: Any) -> Write:
    """Write ``status`` onto ``current`` (as read), nothing else: ``current``
    is not copied beyond its metadata, and stays as it was."""
    return Write("update", with_status(current, status), current)


def delete(obj: ApiObject) -> Write:
    """Delete ``obj``, guarded on its resourceVersion (unguarded without one)."""
    return Write("delete", obj)


@dataclass
class Applied:
    """What ``Applier.apply`` did; ``revision`` is the last revision written."""

    revision: int = 0
    applied: list[Write] = field(default_factory=list)
    conflicts: list[Write] = field(default_factory=list)
    gone: list[Write] = field(default_factory=list)

    @property
    def keys(self) -> list[str]:
        return [w.key for w in self.applied]


Fence = Callable[[], Compare]
#: called with each transaction's writes just before it is sent (tracing, tests)
TxnHook = Callable[[Sequence[AnyWrite]], Awaitable[None]]
#: called with the writes that landed (events are derived from them)
AppliedHook = Callable[[Sequence[Write]], None]


class Applier:
    def __init__(
        self,
        objects: ObjectStore,
        *,
        fence: Fence | None = None,
        batch: int = 64,
        on_txn: TxnHook | None = None,
        on_applied: AppliedHook | None = None,
    ) -> None:
        self.objects = objects
        self.fence = fence
        self.batch = max(1, min(batch, MAX_TXN_OPS - 1))
        self.on_txn = on_txn
        self.on_applied = on_applied
        #: transactions sent, for metrics
        self.txns = 0

    def fenced(self, fence: Fence | None) -> Applier:
        """The same applier with ``fence`` on every write."""
        return Applier(
            self.objects,
            fence=fence,
            batch=self.batch,
            on_txn=self.on_txn,
            on_applied=self.on_applied,
        )

    def observed(self, on_applied: AppliedHook | None) -> Applier:
        """The same applier calling ``on_applied`` with the writes that landed."""
        return Applier(
            self.objects,
            fence=self.fence,
            batch=self.batch,
            on_txn=self.on_txn,
            on_applied=on_applied,
        )

    def _ops(self, write: Write) -> tuple[Compare | None, Op]:
        obj = write.obj
        if write.op == "create":
            write.obj = obj = self.objects.prepare_create(obj)
            compare, put = self.objects.create_ops(obj)
            return compare, put
        if write.op == "update":
            compare, put = self.objects.update_ops(obj, write.previous)
            return compare, put
        revision = obj.metadata.resource_version
        return (Compare(obj.key, int(revision)) if revision else None), Delete(obj.key)

    async def apply(self, writes: Sequence[Write], *, atomic: bool = False) -> Applied:
        """Write ``writes``; see the module docstring."""
        result = Applied()
        if not writes:
            return result
        pairs = [(w, *self._ops(w)) for w in writes]
        try:
            if atomic:
                await self._atomic(pairs, result)
                return result
            for start in range(0, len(pairs), self.batch):
                await self._batch(pairs[start : start + self.batch], result)
            return result
        finally:
            if self.on_applied is not None and result.applied:
                self.on_applied(result.applied)

    async def apply_encoded(self, writes: Sequence[Encoded]) -> int:
        """Write ``writes`` in one transaction, all or nothing, with the fence;
        the revision written. ``LeadershipLost`` when the fence failed (nothing
        written), ``Conflict`` when a guard lost."""
        compares: list[Compare] = []
        ops: list[Op] = []
        for write in writes:
            if write.mod_revision is not None:
                compares.append(Compare(write.key, write.mod_revision))
            ops.append(Delete(write.key) if write.value is None else Put(write.key, write.value))
        if not ops:
            return 0
        ok, revision, fence = await self._txn(writes, compares, ops)
        if not ok:
            if not await self._fence_holds(fence):
                raise self._lost(fence, len(ops), Applied())
            raise Conflict(
                f"{len(ops)} writes ({writes[0]!r}, …) lost a compare-and-swap; plan again"
            )
        return revision

    async def _txn(
        self, writes: Sequence[AnyWrite], compares: list[Compare], ops: list[Op]
    ) -> tuple[bool, int, Compare | None]:
        fence = self.fence() if self.fence is not None else None
        if fence is not None:
            compares = [*compares, fence]
        if self.on_txn is not None:
            await self.on_txn(writes)
        self.txns += 1
        outcome = await self.objects.store.txn(compares, ops)
        return outcome.succeeded, outcome.revision, fence

    async def _fence_holds(self, fence: Compare | None) -> bool:
        return fence is None or await fence_holds(self.objects.store, fence)

    def _lost(self, fence: Compare | None, count: int, result: Applied) -> LeadershipLost:
        key = fence.key if fence is not None else "?"
        return LeadershipLost(
            f"leadership was lost ({key} changed); {count} writes not applied"
            + (f" ({len(result.applied)} applied before)" if result.applied else "")
        )

    async def _atomic(self, pairs: list[tuple[Write, Compare | None, Op]], result: Applied) -> None:
        writes = [w for w, _, _ in pairs]
        compares = [c for _, c, _ in pairs if c is not None]
        ok, revision, fence = await self._txn(writes, compares, [op for _, _, op in pairs])
        if not ok:
            if not await self._fence_holds(fence):
                raise self._lost(fence, len(pairs), result)
            raise Conflict(
                f"{len(pairs)} writes ({writes[0]!r}, …) lost a compare-and-swap; plan again"
            )
        result.revision = revision
        result.applied.extend(writes)

    async def _batch(self, pairs: list[tuple[Write, Compare | None, Op]], result: Applied) -> None:
        writes = [w for w, _, _ in pairs]
        compares = [c for _, c, _ in pairs if c is not None]
        ok, revision, fence = await self._txn(writes, compares, [op for _, _, op in pairs])
        if ok:
            result.revision = revision
            result.applied.extend(writes)
            return
        if len(pairs) > 1 and not await self._fence_holds(fence):
            raise self._lost(fence, len(pairs), result)
        for index, (write, compare, op) in enumerate(pairs):
            if len(pairs) > 1:  # a lone write has just been tried
                ok, revision, fence = await self._txn(
                    [write], [compare] if compare is not None else [], [op]
                )
            if ok:
                result.revision = revision
                result.applied.append(write)
                continue
            # one read that also tells whether the fence still holds
            probe = await self.objects.store.txn(
                [fence] if fence is not None else [], [Get(write.key)]
            )
            if not probe.succeeded:
                raise self._lost(fence, len(pairs) - index, result)
            if write.op == "delete" and probe.gets and probe.gets[0] is None:
                result.gone.append(write)
            else:
                result.conflicts.append(write)


async def replan(
    attempt: Callable[[], Awaitable[T]],
    *,
    what: str,
    attempts: int = 3,
    cache: Cache | None = None,
) -> T:
    """``attempt()`` again while it raises ``Conflict`` (not ``LeadershipLost``), at
    most ``attempts`` times, with the cache brought current in between."""
    for number in range(1, attempts + 1):
        try:
            return await attempt()
        except LeadershipLost:
            raise
        except Conflict as exc:
            log.debug("%s: %s; planning again (%d/%d)", what, exc, number, attempts)
            if cache is not None:
                await cache.sync()
    raise Retry(f"{what}: the store kept changing; {attempts} plans lost")


__all__ = [
    "MAX_TXN_OPS",
    "Applied",
    "Applier",
    "Encoded",
    "Fence",
    "Write",
    "create",
    "delete",
    "replan",
    "update",
]
