"""Limits of the HTTP server against slow and greedy clients.

The webhook port is the one exposed to the internet, and the process also
runs the sync loop, the controllers and, in `gitkube run`, the agents and the
service proxy: a client must not be able to hold its files or its memory.
aiohttp has no header read timeout and keeps half-sent requests open, so
every connection goes through ``ConnectionGuard``:

- a cap on open connections, overall and per client address; a connection
  over a cap is answered ``503`` at once and closed, before anything is read;
- the request head must arrive within ``header_timeout`` of the connection
  (or of the end of the previous request on a kept-alive connection:
  ``idle_timeout``), else the connection is dropped; a handler running is
  never interrupted by these timers;
- the body of a webhook must arrive within ``body_timeout`` (``HttpServer``);
- a request line or header over 8 KiB is a 400 from aiohttp's parser, logged
  as one line (``quiet_bad_requests``), never a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

log = logging.getLogger(__name__)

_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 30\r\n\r\ntoo many connections; retry.\r\n"
)


@dataclass
class HttpLimits:
    #: seconds for the request line and headers of a new connection
    header_timeout: float = 10.0
    #: seconds for a webhook body once the headers are in
    body_timeout: float = 30.0
    #: seconds a kept-alive connection may sit idle before its next request
    idle_timeout: float = 15.0
    max_connections: int = 1024
    max_connections_per_client: int = 128


class _Connection(asyncio.Protocol):
    """One connection: counts it, times it, hands the bytes to aiohttp."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self.guard = guard
        self.inner = inner
        self.transport: asyncio.Transport | None = None
        self.client = ""
        self.refused = False
        self.busy = 0
        self._timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------ protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.client = str(peer[0]) if peer else ""
        if not self.guard.admit(self):
            self.refused = True
            transport.write(_BUSY)
            transport.close()
            return
        self._arm(self.guard.limits.header_timeout)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if not self.refused:
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        if self.refused:
            return None
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if not self.refused:
            self.guard.release(self)
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if not self.refused:
            self.inner.pause_writing()

    def resume_writing(self) -> None:
        if not self.refused:
            self.inner.resume_writing()

    # ------------------------------------------------------------ timers

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expire(self) -> None:
        self._timer = None
        if self.busy or self.transport is None:
            return
        self.guard.timed_out += 1
        log.debug("HTTP: dropped a connection from %s that sent no request in time", self.client)
        self.transport.abort()

    def request_started(self) -> None:
        self.busy += 1
        self._disarm()

    def request_finished(self) -> None:
        self.busy -= 1
        if not self.busy and self.transport is not None and not self.transport.is_closing():
            self._arm(self.guard.limits.idle_timeout)


class ConnectionGuard:
    """The connections of one server; see the module docstring."""

    def __init__(self, limits: HttpLimits | None = None) -> None:
        self.limits = limits or HttpLimits()
        self.open = 0
        self.per_client: Counter[str] = Counter()
        #: counters, for tests and metrics
        self.refused = 0
        self.timed_out = 0
        self._by_transport: dict[asyncio.BaseTransport, _Connection] = {}

    def protocol_factory(self, inner: Callable[[], Any]) -> Callable[[], asyncio.Protocol]:
        return lambda: _Connection(self, inner())

    def admit(self, conn: _Connection) -> bool:
        limits = self.limits
        if (
            self.open >= limits.max_connections
            or self.per_client[conn.client] >= limits.max_connections_per_client
        ):
            self.refused += 1
            if self.refused % 100 == 1:
                log.warning(
                    "HTTP: refusing connections (%d open, %d from %s; caps %d and %d per client)",
                    self.open,
                    self.per_client[conn.client],
                    conn.client,
                    limits.max_connections,
                    limits.max_connections_per_client,
                )
            return False
        self.open += 1
        self.per_client[conn.client] += 1
        assert conn.transport is not None
        self._by_transport[conn.transport] = conn
        return True

    def release(self, conn: _Connection) -> None:
        self.open -= 1
        self.per_client[conn.client] -= 1
        if self.per_client[conn.client] <= 0:
            del self.per_client[conn.client]
        if conn.transport is not None:
            self._by_transport.pop(conn.transport, None)

    def middleware(self) -> Callable[..., Awaitable[web.StreamResponse]]:
        """Marks a connection busy while a handler runs (its timers wait)."""

        @web.middleware
        async def guard(
            request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
        ) -> web.StreamResponse:
            transport = request.transport
            conn = self._by_transport.get(transport) if transport is not None else None
            if conn is not None:
                conn.request_started()
            try:
                return await handler(request)
            finally:
                if conn is not None:
                    conn.request_finished()

        return guard


class _QuietBadRequests(logging.Filter):
    """aiohttp logs a malformed request (a 100 KB header) with a traceback at
    ERROR; it is the client's mistake: one line at INFO instead."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            message = " ".join(str(exc.message).split())[:120]
            record.msg, record.args = "HTTP: refused a bad request (%s %s)", (exc.code, message)
        return True


_quiet = _QuietBadRequests()


def quiet_bad_requests() -> None:
    logger = logging.getLogger("aiohttp.server")
    if _quiet not in logger.filters:
        logger.addFilter(_quiet)
