"""Fixtures of the control kit tests: the store contract's ``store`` fixture
(SQLite and a real etcd), and an ``ObjectStore`` on it."""

from __future__ import annotations

import pytest

from gitkube.store.base import Store
from gitkube.store.objects import ObjectStore
from tests.store.conftest import eventually, store  # noqa: F401  (fixture and helper)


@pytest.fixture
def objects(store: Store) -> ObjectStore:  # noqa: F811
    return ObjectStore(store)
