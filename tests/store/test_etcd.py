"""What only the etcd store has to show, against real etcd servers.

- etcd killed mid-run: requests raise StoreUnavailable; after a restart on
  the same data dir and port the client recovers, and a running watch
  resumes with every event, none twice;
- a watch that resumes after its revision was compacted raises Compacted;
- failover: a dead endpoint is skipped; with no endpoint up the error names
  every endpoint;
- the server's own transaction limit surfaces as TxnTooLarge;
- no gRPC exception reaches a caller.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from gitkube.errors import Compacted, StoreUnavailable, TxnTooLarge
from gitkube.store.base import Put, WatchEvent
from gitkube.store.etcd import EtcdStore
from tests.fixtures.etcd import EtcdServer, free_port

from .conftest import eventually, take, watching

pytestmark = pytest.mark.etcd


def open_etcd(*servers: EtcdServer | int, timeout: float = 2.0) -> EtcdStore:
    """A store on ``servers`` (a bare int is a port where nothing listens)."""
    endpoints = [("127.0.0.1", s if isinstance(s, int) else s.client_port) for s in servers]
    return EtcdStore(endpoints, timeout=timeout, watch_retry=0.05, watch_retry_cap=0.5)


async def put_when_back(store: EtcdStore, key: str, value: bytes) -> int:
    async def attempt() -> int:
        try:
            return await store.put(key, value)
        except StoreUnavailable:
            return 0

    revision: int = await eventually(attempt, timeout=15, interval=0.1)
    return revision


async def test_a_killed_etcd_is_unavailable_and_its_restart_recovers_client_and_watch(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    store, other = open_etcd(server), open_etcd(server)
    seen: list[WatchEvent] = []
    try:
        start = await store.put("/r/1", b"one")

        async def watch() -> None:
            async for event in store.watch("/r/", start_revision=start):
                seen.append(event)

        watcher = asyncio.create_task(watch())
        await eventually(lambda: _count(seen, 1))

        server.stop()
        with pytest.raises(StoreUnavailable):
            await store.put("/r/lost", b"")
        with pytest.raises(StoreUnavailable):
            await store.get("/r/1")
        await asyncio.sleep(0.3)  # the watch is retrying now

        server.start()
        # written by another client as soon as etcd is back, maybe before the watch is
        await put_when_back(other, "/r/2", b"two")
        await other.txn([], [Put("/r/3", b"three"), Put("/r/4", b"four")])
        await put_when_back(store, "/r/5", b"five")

        await eventually(lambda: _count(seen, 5), timeout=10)
        await asyncio.sleep(0.2)
        assert [e.kv.key for e in seen] == ["/r/1", "/r/2", "/r/3", "/r/4", "/r/5"]
        assert not watcher.done()
        kv = await store.get("/r/1")
        assert kv is not None and kv.value == b"one"
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    finally:
        await store.close()
        await other.close()


async def _count(seen: list[WatchEvent], n: int) -> bool:
    return len(seen) >= n


async def test_a_watch_resuming_after_compaction_raises_compacted(
    etcd_factory: Callable[[], EtcdServer],
) -> None:
    server = etcd_factory()
    store = open_etcd(server)
    try:
        start = await store.put("/c/a", b"1")
        async with watching(store, "/c/", start_revision=start) as events:
            await take(events, 1)
            port = server.client_port
            server.stop()
            # while the watch cannot reach it, etcd moves on and forgets history
            server.client_port = free_port()
            server.start()
            elsewhere = open_etcd(server)
            await elsewhere.put("/c/a", b"2")
            await elsewhere.compact(await elsewhere.put("/c/a", b"3"))
            await elsewhere.close()
            server.stop()
            server.client_port = port
            server.start()
            with pytest.raises(Compacted):
                await take(events, 1, timeout=10)
    finally:
        await store.close()


async def test_a_dead_endpoint_is_skipped(etcd_server: EtcdServer) -> None:
    store = open_etcd(free_port(), etcd_server)
    try:
        revision = await store.put("/f/a", b"1")
        kv = await store.get("/f/a")
        assert kv is not None and kv.mod_revision == revision
        async with watching(store, "/f/", start_revision=revision) as events:
            assert (await take(events, 1))[0].kv.value == b"1"
    finally:
        await store.close()


async def test_with_no_endpoint_up_the_error_names_them_all() -> None:
    ports = [free_port(), free_port()]
    store = open_etcd(*ports)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.get("/x")
        for port in ports:
            assert f"127.0.0.1:{port}" in str(caught.value)
    finally:
        await store.close()


async def test_the_servers_txn_limit_is_txn_too_large(etcd_server: EtcdServer) -> None:
    store = EtcdStore([("127.0.0.1", etcd_server.client_port)], max_txn_ops=1000)
    try:
        with pytest.raises(TxnTooLarge, match="max-txn-ops"):
            await store.txn([], [Put(f"/big/{i}", b"") for i in range(200)])
        assert (await store.range("/big/"))[0] == []
    finally:
        await store.close()
