"""Typed access to API objects in a ``Store``: one key per object, JSON values.

``metadata.resourceVersion`` is the key's ``mod_revision`` as a string; an
``update`` or ``delete`` that carries one is a compare-and-swap on it and
raises ``Conflict`` when the object changed since it was read.
``metadata.generation`` counts changes of ``spec``, as in Kubernetes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from gitkube.api.keys import object_key, resource_prefix
from gitkube.api.objects import RESOURCES, ApiObject
from gitkube.api.redact import remember_secret
from gitkube.errors import Conflict
from gitkube.store.base import Compare, Delete, KeyValue, Op, Put, Store

O = TypeVar("O", bound=ApiObject)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def encode(obj: ApiObject) -> bytes:
    data = obj.to_dict()
    data["metadata"].pop("resourceVersion", None)
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


def decode(cls: type[O], kv: KeyValue) -> O:
    data = json.loads(kv.value)
    if cls.KIND == "Secret":
        remember_secret(data)  # so no log line or message of this process shows it
    obj = cls.from_dict(data)
    obj.metadata.resource_version = str(kv.mod_revision)
    return obj


def _spec_of(obj: ApiObject) -> Any:
    data = obj.to_dict()
    return {k: v for k, v in data.items() if k not in ("metadata", "status")}


def with_status(obj: O, status: Any) -> O:
    """``obj`` with ``status``: a new object with its own metadata, the rest
    shared with ``obj`` (which stays as it was; do not change the result's spec)."""
    return replace(obj, metadata=replace(obj.metadata), status=status)  # type: ignore[call-arg]


def _same_spec(obj: ApiObject, previous: ApiObject) -> bool:
    """Whether ``obj`` has the spec (everything but metadata and status) of ``previous``."""
    if type(obj) is type(previous) and all(
        getattr(obj, f.name) == getattr(previous, f.name)
        for f in fields(obj)
        if f.name not in ("metadata", "status")
    ):
        return True  # equal fields: equal as written, without writing them out
    return bool(_spec_of(obj) == _spec_of(previous))


@dataclass(frozen=True)
class ObjectEvent:
    type: Literal["PUT", "DELETE"]
    resource: str
    namespace: str
    name: str
    #: the object after a PUT, the last known object for a DELETE (may be None)
    object: ApiObject | None
    revision: int


class ObjectStore:
    """API objects over a ``Store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    # ------------------------------------------------------------ reads

    async def get(self, cls: type[O], namespace: str, name: str) -> O | None:
        kv = await self.store.get(
            object_key(cls.RESOURCE, namespace, name, namespaced=cls.NAMESPACED)
        )
        return decode(cls, kv) if kv else None

    async def list(self, cls: type[O], namespace: str | None = None) -> tuple[list[O], int]:
        """Every object of ``cls`` (in ``namespace`` if given) and the revision read at."""
        kvs, revision = await self.store.range(resource_prefix(cls.RESOURCE, namespace))
        return [decode(cls, kv) for kv in kvs], revision

    # ------------------------------------------------------------ writes

    def prepare_create(self, obj: O) -> O:
        obj = obj.copy()
        meta = obj.metadata
        meta.uid = meta.uid or str(uuid.uuid4())
        meta.creation_timestamp = meta.creation_timestamp or now_iso()
        meta.generation = meta.generation or 1
        meta.resource_version = ""
        return obj

    def create_ops(self, obj: ApiObject) -> tuple[Compare, Put]:
        """The guarded put that creates ``obj`` (call ``prepare_create`` first)."""
        return Compare(obj.key, 0), Put(obj.key, encode(obj))

    async def create(self, obj: O) -> O:
        """Create ``obj``; ``Conflict`` if the key exists."""
        obj = self.prepare_create(obj)
        compare, put = self.create_ops(obj)
        result = await self.store.txn([compare], [put])
        if not result.succeeded:
            raise Conflict(f"{obj.KIND} {obj.namespace}/{obj.name} already exists")
        obj.metadata.resource_version = str(result.revision)
        return obj

    def update_ops(self, obj: ApiObject, previous: ApiObject | None) -> tuple[Compare, Put]:
        """The guarded put that replaces ``previous`` with ``obj``."""
        if previous is not None:
            meta, prev = obj.metadata, previous.metadata
            meta.uid = meta.uid or prev.uid
            meta.creation_timestamp = meta.creation_timestamp or prev.creation_timestamp
            generation = prev.generation or 1
            if not _same_spec(obj, previous):
                generation += 1
            meta.generation = generation
        revision = int(obj.metadata.resource_version or 0)
        return Compare(obj.key, revision), Put(obj.key, encode(obj))

    async def update(self, obj: O) -> O:
        """Replace the stored object, guarded on ``obj.metadata.resource_version``.

        Without a resource version the write is unconditional. Raises
        ``Conflict`` when the stored object has moved on (or was deleted).
        """
        obj = obj.copy()
        previous = await self.get(type(obj), obj.namespace, obj.name)
        if obj.metadata.resource_version:
            if (
                previous is None
                or previous.metadata.resource_version != obj.metadata.resource_version
            ):
                raise Conflict(f"{obj.KIND} {obj.namespace}/{obj.name} was modified; re-read it")
        elif previous is not None:
            obj.metadata.resource_version = previous.metadata.resource_version
        compare, put = self.update_ops(obj, previous)
        result = await self.store.txn([compare], [put])
        if not result.succeeded:
            raise Conflict(f"{obj.KIND} {obj.namespace}/{obj.name} was modified; re-read it")
        obj.metadata.resource_version = str(result.revision)
        return obj

    async def update_status(self, current: O, status: Any) -> O:
        """Write ``status`` onto ``current`` as it was read, and nothing else
        (Kubernetes' status subresource: no generation bump). Guarded on
        ``current``'s resource version, so ``current`` is what is stored (no
        read first); ``Conflict`` when the stored object has moved on.
        ``current`` is not changed: the object written is returned."""
        if not current.metadata.resource_version:
            raise ValueError(
                f"{current.KIND} {current.namespace}/{current.name}: no resourceVersion"
            )
        updated = with_status(current, status)
        compare = Compare(updated.key, int(current.metadata.resource_version))
        result = await self.store.txn([compare], [Put(updated.key, encode(updated))])
        if not result.succeeded:
            raise Conflict(
                f"{updated.KIND} {updated.namespace}/{updated.name} was modified; re-read it"
            )
        updated.metadata.resource_version = str(result.revision)
        return updated

    async def delete(self, obj: ApiObject, *, guarded: bool = True) -> bool:
        """Delete ``obj``; guarded on its resource version when it has one."""
        if guarded and obj.metadata.resource_version:
            result = await self.store.txn(
                [Compare(obj.key, int(obj.metadata.resource_version))], [Delete(obj.key)]
            )
            if not result.succeeded:
                current = await self.store.get(obj.key)
                if current is None:
                    return False
                raise Conflict(f"{obj.KIND} {obj.namespace}/{obj.name} was modified; re-read it")
            return True
        return await self.store.delete(obj.key)

    async def apply(self, compares: Sequence[Compare], ops: Sequence[Op]) -> int:
        """Run guarded ops as one transaction; ``Conflict`` if any compare fails."""
        result = await self.store.txn(compares, ops)
        if not result.succeeded:
            raise Conflict("the store changed while the change was being planned; plan again")
        return result.revision

    # ------------------------------------------------------------ watch

    async def watch(
        self, resources: Sequence[str], *, start_revision: int
    ) -> AsyncIterator[ObjectEvent]:
        """Object events for ``resources`` (e.g. ``["pods", "nodes"]``) from a revision.

        One watch on the common prefix; events of other resources are dropped.
        """
        wanted = set(resources)
        async for event in self.store.watch("/gitkube/", start_revision=start_revision):
            parts = event.kv.key.split("/")
            if len(parts) < 4 or parts[2] not in wanted:
                continue
            resource = parts[2]
            cls = RESOURCES[resource]
            if len(parts) == 4:
                namespace, name = "", parts[3]
            else:
                namespace, name = parts[3], parts[4]
            obj: ApiObject | None = None
            if event.type == "PUT":
                obj = decode(cls, event.kv)
            elif event.prev_kv is not None and event.prev_kv.value:
                obj = decode(cls, event.prev_kv)
            yield ObjectEvent(event.type, resource, namespace, name, obj, event.revision)
