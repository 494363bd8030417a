"""The service proxy with real sockets, real HTTP servers and a real SQLite store,
on both asyncio and uvloop, and on both data paths (native relay and asyncio relay).

- forwarding: round-robin over three endpoints; no endpoints closes the client
- half-close: EOF relayed in each direction while the other keeps flowing
- failover: a refused endpoint is skipped, no request fails
- endpoint changes: new connections follow, an open connection is kept
- ClientIP session affinity pins a client, and lets go after the timeout
- listeners: NodePort opens the nodePort too; headless Services get none;
  a removed Service stops listening
- problems: a port in use on the machine or taken by another Service is an
  error in the store (and gone once resolved), the other Services still work
- flow control: a large transfer arrives intact
- the proxy loop follows store changes by itself (run)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator

import pytest

from gitkube.api.keys import PROXY_STATUS_PREFIX
from gitkube.api.objects import (
    ClientIPConfig,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    ObjectMeta,
    Service,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
)
from gitkube.services.proxy import Bind, ServiceProxy, proxy_status_key
from gitkube.store.objects import ObjectStore
from tests.services.conftest import Backend, free_port, require_native

# ------------------------------------------------------------------ helpers


async def put_service(
    objects: ObjectStore,
    name: str,
    port: int,
    *,
    type_: str = "ClusterIP",
    node_port: int = 0,
    affinity_seconds: int | None = None,
    cluster_ip: str = "",
) -> Service:
    spec = ServiceSpec(
        selector={"app": name},
        ports=[ServicePort(name="http", port=port, target_port=8080, node_port=node_port)],
        type=type_,
        cluster_ip=cluster_ip,
    )
    if affinity_seconds is not None:
        spec.session_affinity = "ClientIP"
        if affinity_seconds:
            spec.session_affinity_config = SessionAffinityConfig(
                client_ip=ClientIPConfig(timeout_seconds=affinity_seconds)
            )
    service = Service(metadata=ObjectMeta(name=name), spec=spec)
    current = await objects.get(Service, "default", name)
    if current is None:
        return await objects.create(service)
    return await objects.update(service)


async def put_endpoints(objects: ObjectStore, name: str, ports: list[int]) -> None:
    endpoints = Endpoints(
        metadata=ObjectMeta(name=name),
        subsets=[
            EndpointSubset(
                addresses=[EndpointAddress(ip="127.0.0.1")],
                ports=[EndpointPort(name="http", port=port)],
            )
            for port in ports
        ],
    )
    if await objects.get(Endpoints, "default", name) is None:
        await objects.create(endpoints)
    else:
        await objects.update(endpoints)


class HttpConnection:
    """A keep-alive HTTP/1.1 client connection over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> HttpConnection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def get(self) -> str:
        self.writer.write(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        length = next(
            int(line.split(b":", 1)[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        return (await asyncio.wait_for(self.reader.readexactly(length), 5)).decode()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connect(port: int) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def get(port: int) -> str:
    """One request on a fresh connection."""
    conn = await HttpConnection.open(port)
    try:
        return await conn.get()
    finally:
        await conn.close()


@pytest.fixture(params=["native", "asyncio"])
async def proxy(
    objects: ObjectStore, request: pytest.FixtureRequest
) -> AsyncIterator[ServiceProxy]:
    """A proxy on each data path: the native relay (C threads) and the asyncio one."""
    if request.param == "native":
        require_native()
    proxy = ServiceProxy(objects, node_name="n1", connect_timeout=2.0, relay=request.param)
    assert proxy.data_path.startswith(request.param)
    try:
        yield proxy
    finally:
        await proxy.close()


# ------------------------------------------------------------------ forwarding


async def test_round_robin_over_three_endpoints(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [b.port for b in backends])
    result = await proxy.reconcile_once()
    assert result.opened == [f"127.0.0.1:{port}"]
    assert result.endpoints == {f"default/web:{port}": 3}
    answers = [await get(port) for _ in range(6)]
    assert answers == ["b0", "b1", "b2", "b0", "b1", "b2"]


@pytest.mark.parametrize("relay", ["native", "asyncio"])
async def test_proxy_on_an_ipv6_address(
    objects: ObjectStore, backends: list[Backend], relay: str
) -> None:
    if relay == "native":
        require_native()
    with socket.socket(socket.AF_INET6) as probe:
        try:
            probe.bind(("::1", 0))
        except OSError:
            pytest.skip("no IPv6 loopback on this machine")
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [b.port for b in backends])
    proxy = ServiceProxy(objects, address="::1", node_name="n1", relay=relay)
    try:
        assert (await proxy.reconcile_once()).opened == [f"::1:{port}"]
        reader, writer = await asyncio.open_connection("::1", port)
        writer.write(b"GET / HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"b0")
        writer.close()
    finally:
        await proxy.close()


async def test_no_ready_endpoints_closes_the_connection(
    objects: ObjectStore, proxy: ServiceProxy
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [])
    await proxy.reconcile_once()
    async with connect(port) as (reader, writer):
        writer.write(b"GET / HTTP/1.1\r\n\r\n")
        try:
            answer = await asyncio.wait_for(reader.read(), 5)
        except ConnectionResetError:  # closed with the request unread: a reset
            answer = b""
        assert answer == b""


# ------------------------------------------------------------------ half-close


class HalfCloseBackend:
    """Sends a greeting, shuts down its write side, then reads until EOF."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.received = b""
        self.done = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        conn, _ = self.sock.accept()
        with conn:
            conn.sendall(b"hello")
            conn.shutdown(socket.SHUT_WR)
            while chunk := conn.recv(65536):
                self.received += chunk
        self.done.set()

    def close(self) -> None:
        self.sock.close()


async def test_half_close_from_the_endpoint_keeps_the_client_direction_open(
    objects: ObjectStore, proxy: ServiceProxy
) -> None:
    backend = HalfCloseBackend()
    try:
        port = free_port()
        await put_service(objects, "echo", port)
        await put_endpoints(objects, "echo", [backend.port])
        await proxy.reconcile_once()
        async with connect(port) as (reader, writer):
            # the endpoint's EOF reaches the client ...
            assert await asyncio.wait_for(reader.read(), 5) == b"hello"
            # ... and the client can still send, then half-close in turn
            writer.write(b"still talking")
            writer.write_eof()
            await writer.drain()
            assert await asyncio.to_thread(backend.done.wait, 5)
            assert backend.received == b"still talking"
    finally:
        backend.close()


async def test_half_close_from_the_client_still_gets_the_answer(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [backends[0].port])
    await proxy.reconcile_once()
    async with connect(port) as (reader, writer):
        writer.write(b"GET / HTTP/1.0\r\nHost: test\r\n\r\n")
        writer.write_eof()
        answer = await asyncio.wait_for(reader.read(), 5)
        assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"b0")


# ------------------------------------------------------------------ failover


async def test_refused_endpoint_is_skipped_without_failed_requests(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    dead = free_port()  # nothing listens there
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [backends[0].port, dead, backends[1].port])
    await proxy.reconcile_once()
    answers = [await get(port) for _ in range(9)]
    assert set(answers) == {"b0", "b1"}
    assert len(answers) == 9


# ------------------------------------------------------------------ endpoint changes


async def test_endpoint_change_keeps_open_connections(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [backends[0].port])
    await proxy.reconcile_once()
    kept = await HttpConnection.open(port)
    try:
        assert await kept.get() == "b0"
        await put_endpoints(objects, "web", [backends[1].port, backends[2].port])
        result = await proxy.reconcile_once()
        assert result.opened == [] and result.closed == []
        assert {await get(port) for _ in range(4)} == {"b1", "b2"}
        # the connection opened before the change still reaches its endpoint
        assert await kept.get() == "b0"
    finally:
        await kept.close()


async def test_removed_service_stops_listening_but_open_connection_survives(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    service = await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [backends[0].port])
    await proxy.reconcile_once()
    kept = await HttpConnection.open(port)
    try:
        assert await kept.get() == "b0"
        await objects.delete(service)
        result = await proxy.reconcile_once()
        assert result.closed == [f"127.0.0.1:{port}"]
        with pytest.raises(OSError):
            await get(port)
        assert await kept.get() == "b0"
    finally:
        await kept.close()


# ------------------------------------------------------------------ affinity


async def test_client_ip_affinity_pins_the_client(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port, affinity_seconds=0)  # default timeout
    await put_endpoints(objects, "web", [b.port for b in backends])
    await proxy.reconcile_once()
    balancer = proxy.balancer("default", "web", "http")
    assert balancer is not None and balancer.affinity_timeout == 10800
    answers = [await get(port) for _ in range(6)]
    assert len(set(answers)) == 1


async def test_client_ip_affinity_expires_after_its_timeout(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port, affinity_seconds=1)
    await put_endpoints(objects, "web", [b.port for b in backends])
    await proxy.reconcile_once()
    first = await get(port)
    assert await get(port) == first
    await asyncio.sleep(1.1)
    assert await get(port) != first


async def test_affinity_moves_when_the_pinned_endpoint_leaves(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port, affinity_seconds=0)
    await put_endpoints(objects, "web", [backends[0].port, backends[1].port])
    await proxy.reconcile_once()
    assert await get(port) == "b0"
    await put_endpoints(objects, "web", [backends[1].port, backends[2].port])
    await proxy.reconcile_once()
    answers = {await get(port) for _ in range(4)}
    assert len(answers) == 1 and answers <= {"b1", "b2"}


# ------------------------------------------------------------------ listeners


async def test_node_port_is_listened_on_too(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port, node_port = free_port(), free_port()
    await put_service(objects, "web", port, type_="NodePort", node_port=node_port)
    await put_endpoints(objects, "web", [backends[0].port])
    result = await proxy.reconcile_once()
    assert sorted(result.opened) == sorted([f"127.0.0.1:{port}", f"127.0.0.1:{node_port}"])
    assert await get(node_port) == "b0"
    assert await get(port) == "b0"


async def test_headless_service_gets_no_listener(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port, cluster_ip="None")
    await put_endpoints(objects, "web", [backends[0].port])
    result = await proxy.reconcile_once()
    assert result.opened == [] and proxy.listening == {}
    with pytest.raises(OSError):
        await get(port)


# ------------------------------------------------------------------ problems


async def test_port_in_use_is_an_error_in_the_store_and_others_keep_working(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    taken = int(squatter.getsockname()[1])
    free = free_port()
    try:
        await put_service(objects, "blocked", taken)
        await put_service(objects, "fine", free)
        await put_endpoints(objects, "blocked", [backends[0].port])
        await put_endpoints(objects, "fine", [backends[1].port])
        result = await proxy.reconcile_once()
        assert list(result.problems) == ["default/blocked"]
        kv = await objects.store.get(proxy_status_key("n1", "default", "blocked"))
        assert kv is not None
        assert kv.key == f"{PROXY_STATUS_PREFIX}n1/default/blocked"
        assert kv.lease, "the report is attached to a lease"
        report = json.loads(kv.value)
        assert f"port {taken} on 127.0.0.1 is already in use" in report["message"]
        assert report["ports"][0]["port"] == taken
        assert await get(free) == "b1"
    finally:
        squatter.close()
    # once the port is free the next pass serves it and withdraws the report
    result = await proxy.reconcile_once()
    assert result.problems == {} and result.opened == [f"127.0.0.1:{taken}"]
    assert await objects.store.get(proxy_status_key("n1", "default", "blocked")) is None
    assert await get(taken) == "b0"


async def test_port_claimed_by_two_services_goes_to_one(
    objects: ObjectStore, proxy: ServiceProxy, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "b-second", port)
    await put_endpoints(objects, "b-second", [backends[1].port])
    await proxy.reconcile_once()
    # a Service sorting earlier does not steal a port already served
    await put_service(objects, "a-first", port)
    await put_endpoints(objects, "a-first", [backends[0].port])
    result = await proxy.reconcile_once()
    assert list(result.problems) == ["default/a-first"]
    assert "already used by Service default/b-second" in result.problems["default/a-first"][0].error
    assert await get(port) == "b1"
    assert await objects.store.get(proxy_status_key("n1", "default", "a-first")) is not None


async def test_udp_ports_are_reported_not_proxied(
    objects: ObjectStore, proxy: ServiceProxy
) -> None:
    service = Service(
        metadata=ObjectMeta(name="dns"),
        spec=ServiceSpec(
            selector={"app": "dns"}, ports=[ServicePort(port=free_port(), protocol="UDP")]
        ),
    )
    await objects.create(service)
    result = await proxy.reconcile_once()
    assert "TCP only" in result.problems["default/dns"][0].error
    assert proxy.listening == {}


async def test_close_withdraws_reports(objects: ObjectStore, backends: list[Backend]) -> None:
    squatter = socket.create_server(("127.0.0.1", 0))
    try:
        await put_service(objects, "blocked", int(squatter.getsockname()[1]))
        proxy = ServiceProxy(objects, node_name="n2")
        await proxy.reconcile_once()
        key = proxy_status_key("n2", "default", "blocked")
        assert await objects.store.get(key) is not None
        await proxy.close()
        assert await objects.store.get(key) is None
    finally:
        squatter.close()


# ------------------------------------------------------------------ data path


async def test_large_transfer_both_ways_arrives_intact(
    objects: ObjectStore, proxy: ServiceProxy
) -> None:
    payload = bytes(range(256)) * 40_000  # ~10 MB, far past the write buffers

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while chunk := await reader.read(1 << 16):
            writer.write(chunk)
            await writer.drain()
        writer.write_eof()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    try:
        port = free_port()
        await put_service(objects, "echo", port)
        await put_endpoints(objects, "echo", [server.sockets[0].getsockname()[1]])
        await proxy.reconcile_once()
        async with connect(port) as (reader, writer):

            async def send() -> None:
                writer.write(payload)
                await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            received = await asyncio.wait_for(reader.read(-1), 30)
            await sender
            assert received == payload
    finally:
        server.close()


# ------------------------------------------------------------------ loop


async def test_run_follows_store_changes(objects: ObjectStore, backends: list[Backend]) -> None:
    proxy = ServiceProxy(objects, node_name="n1", resync_seconds=30)
    stop = asyncio.Event()
    task = asyncio.create_task(proxy.run(stop))
    try:
        port = free_port()
        await put_service(objects, "web", port)
        await put_endpoints(objects, "web", [backends[0].port])
        await _eventually(lambda: Bind("127.0.0.1", port) in proxy.listening)
        balancer = proxy.balancer("default", "web", "http")
        assert balancer is not None
        await _eventually(lambda: balancer.targets == [("127.0.0.1", backends[0].port)])
        assert await get(port) == "b0"
        await put_endpoints(objects, "web", [backends[2].port])
        await _eventually(lambda: balancer.targets == [("127.0.0.1", backends[2].port)])
        assert await get(port) == "b2"
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    assert proxy.listening == {}


async def _eventually(check: object, timeout: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)
