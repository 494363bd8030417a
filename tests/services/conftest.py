"""Fixtures for the services tests: a real SQLite store, real HTTP servers on
loopback, and (for the proxy tests) both event loops the proxy runs on."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.fixtures.require import missing


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    """The proxy runs on uvloop when installed and on asyncio otherwise: its
    tests run on both; the other tests here on asyncio alone."""
    factories: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop
    }
    if "proxy" not in item.path.name:
        return factories
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return factories
    factories["uvloop"] = uvloop.new_event_loop
    return factories


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Backend:
    """A threaded HTTP server on loopback answering ``GET`` with its name."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.hits = 0
        backend = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                backend.hits += 1
                body = backend.name.encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def backends() -> Iterator[list[Backend]]:
    servers = [Backend(f"b{i}") for i in range(3)]
    try:
        yield servers
    finally:
        for server in servers:
            server.close()


def require_native() -> None:
    """The native relay is built here (a failure under CI, a skip elsewhere)."""
    from gitkube.services import native

    reason = native.availability()
    if reason is not None:
        missing("the native relay", f"{reason} (apt-get install gcc)")
