"""What both store backends share: key ranges and the checks etcd makes on a transaction.

The SQLite store makes the same checks as etcd (operation count, duplicate
keys), so a transaction that works on one machine also works on a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence

from gitkube.errors import StoreError, TxnTooLarge
from gitkube.store.base import Compare, Delete, KeyValue, Op, Put

__all__ = ["DEFAULT_MAX_TXN_OPS", "TxnTooLarge", "check_txn", "make_kv", "prefix_end"]

#: etcd's default ``--max-txn-ops``: compares, success and failure are each limited.
DEFAULT_MAX_TXN_OPS = 128


_new = object.__new__


def make_kv(
    key: str, value: bytes, create_revision: int, mod_revision: int, version: int, lease: int
) -> KeyValue:
    """``KeyValue(...)`` at half the cost: a range builds one per key, and the
    frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) is
    most of the time a large range spends in Python."""
    kv: KeyValue = _new(KeyValue)
    kv.__dict__.update(
        key=key,
        value=value,
        create_revision=create_revision,
        mod_revision=mod_revision,
        version=version,
        lease=lease,
    )
    return kv


def prefix_end(prefix: bytes) -> bytes:
    """The smallest key greater than every key starting with ``prefix`` (b"" = no end)."""
    end = bytearray(prefix)
    while end:
        if end[-1] < 0xFF:
            end[-1] += 1
            return bytes(end)
        end.pop()
    return b""


def check_txn(
    compares: Sequence[Compare],
    success: Sequence[Op],
    failure: Sequence[Op],
    *,
    max_ops: int = DEFAULT_MAX_TXN_OPS,
) -> None:
    """Reject what etcd rejects: too many operations, or one key written twice."""
    for what, items in (("compares", compares), ("success", success), ("failure", failure)):
        if len(items) > max_ops:
            raise TxnTooLarge(
                f"transaction has {len(items)} {what} operations; the store accepts at most "
                f"{max_ops} per branch (etcd --max-txn-ops). A transaction is atomic, so it "
                "is not split for you: write fewer objects per transaction"
            )
    for ops in (success, failure):
        _check_duplicates(ops)


def _check_duplicates(ops: Sequence[Op]) -> None:
    puts: set[str] = set()
    for op in ops:
        if isinstance(op, Put):
            if op.key in puts:
                raise StoreError(f"transaction puts key {op.key!r} twice")
            puts.add(op.key)
    for op in ops:
        if isinstance(op, Delete):
            hit = (
                [k for k in puts if k.startswith(op.key)]
                if op.prefix
                else ([op.key] if op.key in puts else [])
            )
            if hit:
                raise StoreError(f"transaction both puts and deletes key {hit[0]!r}")
