"""The store: etcd's semantics on SQLite (embedded) or etcd (clusters)."""

from gitkube.store.base import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    Store,
    TxnResult,
    WatchEvent,
)
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectEvent, ObjectStore

__all__ = [
    "Compare",
    "Delete",
    "Get",
    "KeyValue",
    "ObjectEvent",
    "ObjectStore",
    "Op",
    "Put",
    "Store",
    "TxnResult",
    "WatchEvent",
    "open_store",
]
