"""Write a ``SyncPlan`` to the store in transactions guarded on mod_revision,
through the control kit's ``Applier`` (``apply_encoded``: one transaction
per batch, all or nothing, with the leader's fence when the applier has one).

Each transaction holds at most ``batch_size`` objects (default 100: etcd
refuses transactions of more than 128 operations by default; one more is
the fence) and at most about 1 MiB of values (etcd's request limit is
1.5 MiB). Every write is guarded: a create on "the key does not exist", an
update or a delete on the mod_revision the plan was made from. A lost
compare raises ``Conflict``; the caller re-reads and plans again. A lost
fence raises ``LeadershipLost``: that batch and the rest are not written.
Batches already written stay written: a plan is idempotent (planning again
after a partial apply plans only what is left), and the sync state is
written after the last batch, so a crash mid-apply is repaired by the next
run.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from gitkube.control import Applier, Encoded
from gitkube.store.base import Compare, Delete, Put
from gitkube.store.objects import ObjectStore, now_iso
from gitkube.sync.diff import Create, Prune, SyncPlan, Update

#: objects per transaction; etcd's default --max-txn-ops is 128
DEFAULT_BATCH_SIZE = 100
#: value bytes per transaction; etcd's default --max-request-bytes is 1.5 MiB
MAX_TXN_BYTES = 1 << 20

Progress = Callable[[int, int], None]


@dataclass
class ApplyResult:
    created: int = 0
    updated: int = 0
    deleted: int = 0
    #: the revision of each transaction, in order
    revisions: list[int] = field(default_factory=list)
    #: key -> (wire dict, mod_revision) of every object written
    written: dict[str, tuple[dict[str, Any], int]] = field(default_factory=dict)
    removed: list[str] = field(default_factory=list)


def _encode(wire: dict[str, Any]) -> bytes:
    return json.dumps(wire, separators=(",", ":"), sort_keys=True).encode()


def create_ops(create: Create, *, now: str) -> tuple[Compare, Put, dict[str, Any]]:
    """What ``ObjectStore.prepare_create`` + ``create_ops`` do, on the wire dict:
    a cold sync creates thousands of objects, and the typed round trip costs
    more than the write."""
    wire = dict(create.wire)
    meta = dict(wire.get("metadata") or {})
    meta["uid"] = str(uuid.uuid4())
    meta["creationTimestamp"] = now
    meta["generation"] = 1
    wire["metadata"] = meta
    return Compare(create.key, 0), Put(create.key, _encode(wire)), wire


def update_ops(update: Update) -> tuple[Compare, Put, dict[str, Any]]:
    """What ``ObjectStore.update_ops`` does (keep uid and creationTimestamp,
    count ``generation`` when the spec changes; guard on the mod_revision the
    plan read), on the wire dicts: no typed round trip."""
    wire = dict(update.wire)
    meta = dict(wire.get("metadata") or {})
    live = update.live.wire
    live_meta = live.get("metadata") or {}
    for key in ("uid", "creationTimestamp"):
        if not meta.get(key) and live_meta.get(key):
            meta[key] = live_meta[key]
    generation = int(live_meta.get("generation") or 1)
    if _spec_of(wire) != _spec_of(live):
        generation += 1
    meta["generation"] = generation
    meta.pop("resourceVersion", None)
    wire["metadata"] = meta
    return Compare(update.key, update.live.resource_version), Put(update.key, _encode(wire)), wire


def _spec_of(wire: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in wire.items() if k not in ("metadata", "status")}


def delete_ops(prune: Prune) -> tuple[Compare, Delete]:
    return Compare(prune.key, prune.live.resource_version), Delete(prune.key)


async def apply_plan(
    applier: Applier | ObjectStore,
    plan: SyncPlan,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: Progress | None = None,
    result: ApplyResult | None = None,
) -> ApplyResult:
    """Write ``plan``; ``Conflict`` when a guarded write loses, ``LeadershipLost``
    when the applier's fence does (``result``, if given, is filled in as
    batches succeed, so the caller knows what was written). An ``ObjectStore``
    is written through an unfenced ``Applier``."""
    if isinstance(applier, ObjectStore):
        applier = Applier(applier)
    result = result if result is not None else ApplyResult()
    now = now_iso()
    total = len(plan.creates) + len(plan.updates) + len(plan.deletes)
    done = 0
    writes: list[Encoded] = []
    pending: list[tuple[str, str, dict[str, Any] | None]] = []
    size = 0

    async def flush() -> None:
        nonlocal writes, pending, size, done
        if not writes:
            return
        revision = await applier.apply_encoded(writes)
        result.revisions.append(revision)
        for what, key, wire in pending:
            if what == "create":
                result.created += 1
            elif what == "update":
                result.updated += 1
            else:
                result.deleted += 1
                result.removed.append(key)
                result.written.pop(key, None)
                continue
            assert wire is not None
            result.written[key] = (wire, revision)
        done += len(pending)
        if progress:
            progress(done, total)
        writes, pending, size = [], [], 0

    async def add(compare: Compare, op: Put | Delete, what: str, key: str, wire: Any) -> None:
        nonlocal size
        value = op.value if isinstance(op, Put) else None
        value_size = len(value) if value is not None else 0
        if writes and (len(writes) >= batch_size or size + value_size > MAX_TXN_BYTES):
            await flush()
        writes.append(Encoded(key, value, compare.mod_revision))
        pending.append((what, key, wire))
        size += value_size

    for create in plan.creates:
        compare, put, wire = create_ops(create, now=now)
        await add(compare, put, "create", create.key, wire)
    for update in plan.updates:
        compare, put, wire = update_ops(update)
        await add(compare, put, "update", update.key, wire)
    for prune in plan.deletes:
        compare, delete = delete_ops(prune)
        await add(compare, delete, "delete", prune.key, None)
    await flush()
    return result
