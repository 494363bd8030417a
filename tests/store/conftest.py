"""The ``store`` fixture: every contract test runs against SQLite and a real etcd."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TypeVar

import pytest

from gitkube.store.base import Delete, Store, WatchEvent
from gitkube.store.factory import open_store

T = TypeVar("T")


@pytest.fixture(params=["sqlite", pytest.param("etcd", marks=pytest.mark.etcd)])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened = await open_store(f"sqlite://{tmp_path}/state/state.db")
    else:
        server = request.getfixturevalue("etcd_server")
        opened = await open_store(server.url)
        # one etcd serves the whole session: start every test from an empty keyspace
        await opened.txn([], [Delete("", prefix=True)])
    try:
        yield opened
    finally:
        await opened.close()


async def take(events: AsyncIterator[T], count: int, *, timeout: float = 5.0) -> list[T]:
    """The next ``count`` items of ``events``; fails the test if they do not come in time."""
    got: list[T] = []

    async def collect() -> None:
        async for item in events:
            got.append(item)
            if len(got) == count:
                return

    try:
        await asyncio.wait_for(collect(), timeout=timeout)
    except TimeoutError:
        pytest.fail(f"expected {count} events within {timeout}s, got {len(got)}: {got}")
    return got


async def eventually(check, *, timeout: float = 5.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Await ``check()`` until it returns something truthy; fail after ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"condition not met within {timeout}s (last: {result!r})")
        await asyncio.sleep(interval)


@contextlib.asynccontextmanager
async def watching(
    store: Store, prefix: str, *, start_revision: int
) -> AsyncIterator[AsyncIterator[WatchEvent]]:
    """A watch that is closed when the block ends."""
    events = store.watch(prefix, start_revision=start_revision)
    try:
        yield events
    finally:
        await events.aclose()  # type: ignore[attr-defined]
