"""Probes against real sockets:

- httpGet: 2xx and 3xx pass, 4xx/5xx fail, connection refused and a server
  that never answers (timeoutSeconds) fail; the path and headers are sent;
  the port is found by number or by name through the published host port;
  an unknown port name fails with a message;
- tcpSocket: an open port passes, a closed one fails;
- thresholds: failureThreshold consecutive failures flip a passing verdict,
  successThreshold consecutive successes flip a failing one; readiness starts
  failing, liveness passing;
- the probe manager: initialDelaySeconds, periodSeconds, change callbacks,
  workers stopped when their container goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from gitkube.api.objects import (
    Container,
    ContainerPort,
    HTTPGetAction,
    HTTPHeader,
    Probe,
    TCPSocketAction,
)
from gitkube.nodes.probes import (
    ProbeManager,
    ProbeResult,
    ProbeSpec,
    ProbeState,
    ProbeTarget,
    probe_http,
    probe_tcp,
    resolve_port,
)


@dataclass
class HttpServer:
    port: int
    status: int = 200
    hang: bool = False
    requests: list[bytes] = field(default_factory=list)


@pytest.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    state = HttpServer(port=0)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            state.requests.append(head)
            if state.hang:
                await asyncio.sleep(5)
            writer.write(f"HTTP/1.0 {state.status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # a tcpSocket probe connects and hangs up
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    async with server:
        yield state
        server.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def web_container(port_name: str = "http") -> Container:
    return Container(name="web", ports=[ContainerPort(container_port=8080, name=port_name)])


def target_for(host_port: int) -> ProbeTarget:
    return ProbeTarget(
        container_id="c1",
        node_address="127.0.0.1",
        pod_ip="127.0.0.1",
        host_ports={"web/8080/TCP": host_port},
    )


# ---------------------------------------------------------------- httpGet


class TestHttpGet:
    @pytest.mark.parametrize(
        ("status", "ok"), [(200, True), (302, True), (404, False), (500, False)]
    )
    async def test_status_codes(self, http_server: HttpServer, status: int, ok: bool) -> None:
        http_server.status = status
        action = HTTPGetAction(path="/healthz", port=8080)
        result = await probe_http(action, web_container(), target_for(http_server.port), timeout=1)
        assert result.ok is ok
        assert result.message == f"HTTP {status}"

    async def test_named_port_path_and_headers(self, http_server: HttpServer) -> None:
        action = HTTPGetAction(
            path="ready", port="http", http_headers=[HTTPHeader(name="X-Probe", value="yes")]
        )
        result = await probe_http(action, web_container(), target_for(http_server.port), timeout=1)
        assert result.ok
        head = http_server.requests[-1].decode()
        assert head.startswith("GET /ready HTTP/1.0\r\n")
        assert "X-Probe: yes\r\n" in head

    async def test_unpublished_port_tried_on_pod_address(self, http_server: HttpServer) -> None:
        target = ProbeTarget(container_id="c1", node_address="127.0.0.1", pod_ip="127.0.0.1")
        action = HTTPGetAction(port=http_server.port)
        assert (await probe_http(action, web_container(), target, timeout=1)).ok

    async def test_refused(self) -> None:
        action = HTTPGetAction(port=8080)
        result = await probe_http(action, web_container(), target_for(free_port()), timeout=1)
        assert not result.ok
        assert "GET http://127.0.0.1:" in result.message

    async def test_timeout(self, http_server: HttpServer) -> None:
        http_server.hang = True
        started = time.monotonic()
        result = await probe_http(
            HTTPGetAction(port=8080), web_container(), target_for(http_server.port), timeout=0.3
        )
        assert not result.ok
        assert "timed out" in result.message
        assert time.monotonic() - started < 2

    def test_unknown_port_name(self) -> None:
        from gitkube.nodes.probes import ProbeError

        with pytest.raises(ProbeError, match="no port named 'metrics'"):
            resolve_port(web_container(), "metrics")
        assert resolve_port(web_container(), "8081") == 8081


# ---------------------------------------------------------------- tcpSocket


class TestTcpSocket:
    async def test_open_and_closed(self, http_server: HttpServer) -> None:
        action = TCPSocketAction(port="http")
        assert (
            await probe_tcp(action, web_container(), target_for(http_server.port), timeout=1)
        ).ok
        closed = await probe_tcp(action, web_container(), target_for(free_port()), timeout=1)
        assert not closed.ok
        assert "dial 127.0.0.1:" in closed.message


# ---------------------------------------------------------------- thresholds


class TestThresholds:
    def test_readiness_starts_failing_liveness_passing(self) -> None:
        assert ProbeState(Probe(), "readiness").ok is False
        assert ProbeState(Probe(), "liveness").ok is True

    def test_failure_threshold(self) -> None:
        state = ProbeState(Probe(failure_threshold=3), "liveness")
        fail, ok = ProbeResult(False), ProbeResult(True)
        assert [state.record(r) for r in (fail, fail, ok, fail, fail)] == [False] * 5
        assert state.ok
        assert state.record(fail) is True
        assert not state.ok

    def test_success_threshold(self) -> None:
        state = ProbeState(Probe(success_threshold=2), "readiness")
        ok, fail = ProbeResult(True), ProbeResult(False)
        assert state.record(ok) is False
        assert state.record(fail) is False
        assert state.record(ok) is False
        assert state.record(ok) is True
        assert state.ok


# ---------------------------------------------------------------- manager


class NoExecRuntime:
    """The manager needs a runtime only for exec probes; none run here."""

    name = "none"
    node_name = "n"

    async def exec(self, container_id: str, command: list[str], *, timeout: float) -> int:
        raise AssertionError("no exec probe in these tests")


async def wait_for(cond: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class TestManager:
    async def test_readiness_follows_the_server(self, http_server: HttpServer) -> None:
        changes: list[tuple[str, str, bool]] = []
        manager = ProbeManager(
            NoExecRuntime(),  # type: ignore[arg-type]
            on_change=lambda cid, kind, ok: changes.append((cid, kind, ok)),
        )
        probe = Probe(http_get=HTTPGetAction(port=8080), period_seconds=0.05, failure_threshold=1)  # type: ignore[arg-type]
        spec = ProbeSpec(
            "readiness", probe, web_container(), target_for(http_server.port), time.time()
        )
        manager.sync([spec])
        try:
            await wait_for(lambda: manager.ready("c1"))
            http_server.status = 503
            await wait_for(lambda: not manager.ready("c1"))
            assert changes == [("c1", "readiness", True), ("c1", "readiness", False)]
        finally:
            await manager.close()

    async def test_initial_delay(self, http_server: HttpServer) -> None:
        manager = ProbeManager(NoExecRuntime())  # type: ignore[arg-type]
        probe = Probe(
            http_get=HTTPGetAction(port=8080), initial_delay_seconds=0.4, period_seconds=0.05
        )  # type: ignore[arg-type]
        started = time.time()
        manager.sync(
            [ProbeSpec("readiness", probe, web_container(), target_for(http_server.port), started)]
        )
        try:
            await wait_for(lambda: manager.ready("c1"))
            assert time.time() - started >= 0.4
            assert len(http_server.requests) == 1
        finally:
            await manager.close()

    async def test_liveness_failure_and_worker_stop(self) -> None:
        manager = ProbeManager(NoExecRuntime())  # type: ignore[arg-type]
        probe = Probe(
            tcp_socket=TCPSocketAction(port=8080), period_seconds=0.02, failure_threshold=2
        )  # type: ignore[arg-type]
        spec = ProbeSpec("liveness", probe, web_container(), target_for(free_port()), time.time())
        manager.sync([spec])
        try:
            await wait_for(lambda: manager.liveness_failed() == {"c1"})
            manager.sync([])  # the container went
            assert manager.liveness_failed() == set()
            assert not manager.has("c1", "liveness")
        finally:
            await manager.close()

    async def test_a_probe_follows_its_container_to_a_new_address(
        self, http_server: HttpServer
    ) -> None:
        """A probe added before the container's ports were known (nowhere to
        reach) goes where a later listing says, keeping its verdict so far."""
        manager = ProbeManager(NoExecRuntime())  # type: ignore[arg-type]
        probe = Probe(http_get=HTTPGetAction(port=8080), period_seconds=0.05)  # type: ignore[arg-type]
        nowhere = ProbeTarget(container_id="c1", node_address="127.0.0.1", pod_ip="")
        manager.add(
            [ProbeSpec("readiness", probe, web_container(), nowhere, time.time())], generation=3
        )
        try:
            await asyncio.sleep(0.2)
            assert not manager.ready("c1")
            # a listing of the generation it was added at (begun before it) keeps it
            manager.sync([], generation=3)
            assert manager.has("c1", "readiness")
            spec = ProbeSpec(
                "readiness", probe, web_container(), target_for(http_server.port), time.time()
            )
            manager.sync([spec], generation=4)
            await wait_for(lambda: manager.ready("c1"))
            # a later listing without the container stops it
            manager.sync([], generation=5)
            assert not manager.has("c1", "readiness")
        finally:
            await manager.close()
