"""Fixtures of the sync tests: a real SQLite store, manifests as text, a loop
on a real git remote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.store.base import Delete
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.source import GitSource
from tests.fixtures.git import GitRemote


def pod_yaml(name: str, image: str = "nginx:1", *, app: str = "web") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: {app}
spec:
  containers:
  - name: main
    image: {image}
    ports:
    - containerPort: 80
"""


def service_yaml(name: str, port: int = 80) -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: {name}
spec:
  selector:
    app: {name}
  ports:
  - port: {port}
"""


def rc_yaml(name: str, replicas: int = 2) -> str:
    return f"""apiVersion: v1
kind: ReplicationController
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: main
        image: nginx:1
"""


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


@pytest.fixture
async def etcd_objects(etcd_server: object) -> AsyncIterator[ObjectStore]:
    store = await open_store(etcd_server.url)  # type: ignore[attr-defined]
    await store.txn([], [Delete("", prefix=True)])
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def make_loop(
    objects: ObjectStore, remote: GitRemote, tmp_path: Path, **settings: object
) -> SyncLoop:
    source = GitSource(remote.url, cache_dir=tmp_path / "cache")
    return SyncLoop(objects, source, SyncSettings(**settings))  # type: ignore[arg-type]
