"""The HTTP server against slow and greedy clients (real sockets on loopback;
other clients come from 127.0.0.2, another address of the loopback):

- more half-open connections than the caps from one address: the extra ones
  are answered 503 and closed at once; /healthz and a webhook from another
  address keep answering; the half-open ones are dropped after the header
  timeout and the count of open connections goes back to zero;
- a body that stops coming is a 408 after the body timeout;
- an idle kept-alive connection is closed after the idle timeout;
- a 100 KB header is a 400, logged without a traceback;
- in `gitkube run` (process runtime): while one address holds more
  connections than the overall cap, /healthz, a signed webhook and a Service
  behind the proxy keep answering.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitkube.server.http import HttpServer
from gitkube.server.limits import HttpLimits
from gitkube.server.metrics import Metrics
from gitkube.server.webhooks import sign
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    SECRET,
    eventually,
    free_port,
    kill_processes_under,
    operator_settings,
    start_operator,
)

KEY = b"limits-secret"
HALF = b"GET /healthz HTTP/1.1\r\nHost: gitkube\r\nX-Slow: "


@pytest.fixture
async def server() -> AsyncIterator[tuple[HttpServer, list[str | None]]]:
    pushes: list[str | None] = []

    async def status() -> dict[str, Any]:
        return {}

    http = HttpServer(
        metrics=Metrics(),
        branch="main",
        on_push=pushes.append,
        status=status,
        secret=KEY,
        limits=HttpLimits(
            header_timeout=1.0,
            body_timeout=1.0,
            idle_timeout=2.5,
            max_connections=40,
            max_connections_per_client=10,
        ),
    )
    await http.start("127.0.0.1", 0)
    yield http, pushes
    await http.stop()


def other_client() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0), force_close=True),
        timeout=aiohttp.ClientTimeout(total=5),
    )


async def half_open(port: int, n: int) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HALF)
        await writer.drain()
        conns.append((reader, writer))
    return conns


async def webhook(session: aiohttp.ClientSession, base: str, secret: bytes) -> int:
    body = json.dumps({"ref": "refs/heads/main", "after": "c" * 40}).encode()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(secret, body)}
    async with session.post(base + "/hooks/github", data=io.BytesIO(body), headers=headers) as r:
        return r.status


async def test_half_open_flood_is_capped_and_timed_out(
    server: tuple[HttpServer, list[str | None]],
) -> None:
    http, pushes = server
    conns = await half_open(http.port, 60)
    try:
        # the first 10 are held, the other 50 answered 503 and closed at once
        refused = 0
        for reader, _ in conns[10:]:
            data = await asyncio.wait_for(reader.read(), timeout=5)
            refused += data.startswith(b"HTTP/1.1 503")
        assert refused == 50
        assert http.guard.open == 10
        base = f"http://127.0.0.1:{http.port}"
        async with other_client() as session:
            async with session.get(base + "/healthz") as resp:
                assert resp.status == 200
            assert await webhook(session, base, KEY) == 202
        assert pushes == ["c" * 40]
        # the half-open ones are dropped after the header timeout
        started = time.monotonic()
        for reader, _ in conns[:10]:
            assert await asyncio.wait_for(reader.read(), timeout=10) == b""
        assert time.monotonic() - started < 10
        await eventually(_is_zero(http), what="no connection left open")
        assert http.guard.timed_out >= 10
        async with other_client() as session, session.get(base + "/metrics") as resp:
            text = await resp.text()
        assert "gitkube_http_connections_refused_total 50.0" in text
        assert "gitkube_http_connections_timed_out_total 10.0" in text
    finally:
        for _, writer in conns:
            writer.close()


def _is_zero(http: HttpServer) -> Any:
    async def check() -> bool:
        return http.guard.open == 0

    return check


async def test_a_body_that_stops_coming_is_408(
    server: tuple[HttpServer, list[str | None]],
) -> None:
    http, pushes = server
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        writer.write(
            b"POST /hooks/github HTTP/1.1\r\nHost: x\r\nX-GitHub-Event: push\r\n"
            b"X-Hub-Signature-256: sha256=00\r\nContent-Length: 1000\r\n\r\n" + b"{" * 10
        )
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), timeout=10)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:100]
        assert pushes == []
    finally:
        writer.close()


async def test_an_idle_kept_alive_connection_is_closed(
    server: tuple[HttpServer, list[str | None]],
) -> None:
    http, _ = server
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"ok\n"), timeout=5)
        assert head.startswith(b"HTTP/1.1 200")
        # nothing more is sent: the server closes the connection
        assert await asyncio.wait_for(reader.read(), timeout=10) == b""
    finally:
        writer.close()


async def test_a_100_kb_header_is_400_without_a_traceback(
    server: tuple[HttpServer, list[str | None]], caplog: pytest.LogCaptureFixture
) -> None:
    http, _ = server
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection("127.0.0.1", http.port)
    try:
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\n\r\n")
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(200), timeout=5)
        assert answer.startswith(b"HTTP/1.0 400") or answer.startswith(b"HTTP/1.1 400")
    finally:
        writer.close()
    await eventually(_is_zero(http), what="the connection closed")
    assert not [r for r in caplog.records if r.exc_info], "no traceback in the log"
    assert "Traceback" not in caplog.text
    assert "refused a bad request" in caplog.text


# ---------------------------------------------------------------- in gitkube run


WEB = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 1
  selector: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: python:3.11-alpine
        command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]
        ports:
        - {name: http, containerPort: 8000}
        readinessProbe:
          httpGet: {path: /, port: http}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports:
  - {name: http, port: SVC_PORT, targetPort: http}
"""


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_processes_under(path)


async def test_operator_keeps_answering_under_a_connection_flood(
    git_remote: GitRemote, state: Path
) -> None:
    svc_port = free_port()
    git_remote.write("web.yaml", WEB.replace("SVC_PORT", str(svc_port)))
    git_remote.commit_and_push("web")
    settings = operator_settings(
        git_remote.url,
        state,
        writeback=False,
        http_max_connections=64,
        http_max_connections_per_client=16,
    )
    running = await start_operator(settings)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:

        async def service_answers() -> bool:
            try:
                async with (
                    aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as s,
                    s.get(f"http://127.0.0.1:{svc_port}/") as resp,
                ):
                    return resp.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

        await eventually(service_answers, timeout=60, what="the Service answering")
        assert running.operator.http is not None
        # more half-open connections than the overall cap, from one address
        conns = await half_open(running.operator.http.port, 100)
        guard = running.operator.http.guard
        await eventually(_at_cap(guard, 16), what="16 held, the rest refused")
        async with other_client() as session:
            async with session.get(running.base + "/healthz") as resp:
                assert resp.status == 200
            assert await webhook(session, running.base, SECRET.encode()) == 202
        assert await service_answers()
    finally:
        for _, writer in conns:
            writer.close()
        await running.shutdown()


def _at_cap(guard: Any, n: int) -> Any:
    async def check() -> bool:
        return bool(guard.open == n and guard.refused >= 84)

    return check
