"""The store protocol: etcd's semantics, implemented by SQLite and etcd backends.

- a global ``revision`` that every write increments (a transaction once);
- per key ``create_revision``, ``mod_revision`` and ``version``;
- ``get``, ``range`` by prefix, ``put`` and ``delete``;
- ``txn``: compares on ``mod_revision`` (0 means "the key does not exist"),
  then the success or the failure operations, all at one revision;
- ``watch`` a prefix from a revision: events in revision order, nothing lost
  across a reconnect while the revision is held; ``Compacted`` once it is not;
- leases with a TTL; keys put with a lease vanish when it lapses or is revoked.

Values are bytes; ``ObjectStore`` (in ``gitkube.store.objects``) maps API
objects to keys and JSON on top of this.

Details both backends share (the contract suite in tests/store checks them):

- the first revision of an empty store is 1; a write that changes nothing
  (deleting a missing key, a read-only branch) does not move it;
- a transaction has at most 128 compares and 128 operations per branch
  (etcd's ``--max-txn-ops``) and may not write one key twice; a larger one
  raises ``gitkube.errors.TxnTooLarge`` rather than being split;
- a watch with ``start_revision <= 0`` starts after the current revision;
  ``prev_kv`` is set on DELETE events (the deleted value), not on PUTs;
- a lease's TTL is at least 1 second; revoking an unknown lease does nothing;
  ``put`` with an unknown lease raises ``NotFound``;
- ``compact`` at or below the compacted revision does nothing; beyond the
  current revision it raises ``StoreError``.

Open a store with ``gitkube.store.factory.open_store(url)``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int = 1
    lease: int = 0


@dataclass(frozen=True)
class Compare:
    """``mod_revision(key) == mod_revision``; 0 asserts the key is absent."""

    key: str
    mod_revision: int


@dataclass(frozen=True)
class Put:
    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True)
class Delete:
    key: str
    #: delete every key under ``key`` as a prefix
    prefix: bool = False


@dataclass(frozen=True)
class Get:
    key: str


Op = Put | Delete | Get


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    #: for each ``Get`` among the executed operations, its result (in order)
    gets: list[KeyValue | None] = field(default_factory=list)


@dataclass(frozen=True)
class WatchEvent:
    type: Literal["PUT", "DELETE"]
    kv: KeyValue
    #: the value before this event, when the backend knows it
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        return self.kv.mod_revision


@runtime_checkable
class Store(Protocol):
    """One protocol, two backends; see the module docstring for the semantics."""

    url: str

    async def revision(self) -> int:
        """The current global revision."""
        ...

    async def get(self, key: str) -> KeyValue | None: ...

    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix`` in key order, and the revision read at:
        the current one, or ``revision`` (what the keys were then, as etcd
        reads at a revision: ``Compacted`` once that history is gone,
        ``FutureRevision`` past the current revision)."""
        ...

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Write ``key``; returns the new revision."""
        ...

    async def delete(self, key: str) -> bool:
        """Delete ``key``; True when it existed."""
        ...

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult: ...

    def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Events under ``prefix`` with revision >= ``start_revision``, forever.

        Raises ``Compacted`` when ``start_revision`` is no longer held.
        """
        ...

    async def grant_lease(self, ttl: int) -> int:
        """A new lease id with ``ttl`` seconds."""
        ...

    async def refresh_lease(self, lease: int) -> int:
        """Keep ``lease`` alive; returns its TTL. Raises ``NotFound`` if it lapsed."""
        ...

    async def revoke_lease(self, lease: int) -> None: ...

    async def compact(self, revision: int) -> None:
        """Forget history before ``revision`` (watches from earlier get Compacted)."""
        ...

    async def close(self) -> None: ...
