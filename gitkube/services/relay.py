"""The data path of the service proxy: accept, pick an endpoint, relay bytes.

Built on asyncio Protocols rather than stream readers: a chunk read from one
side is handed to the other side's transport as it is (no copy, no task
switch), and flow control is the transports' own — when one side's write
buffer passes its high-water mark, reading from the other side pauses until
it drains. Half-close is relayed: an EOF from one side becomes a write-side
shutdown of the other, and the pair closes once both directions are done.

``Balancer`` holds the ready endpoints of one Service port and chooses among
them round-robin, with ClientIP session affinity when asked. The proxy swaps
its target list when the Endpoints change; connections already relaying keep
their upstream.

``NativeRelay`` is the same accept-pick-connect logic on plain sockets, for
the native data path (``gitkube.services.native``): the client socket is not
read by Python at all; once the endpoint is connected, both sockets go to
the C relay threads, which copy the bytes. ``Relay`` (above) is used when
the native relay is not available or not wanted.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gitkube.services.native import Engine

log = logging.getLogger(__name__)

Target = tuple[str, int]


class Balancer:
    """Round-robin over the current targets, with optional ClientIP affinity."""

    __slots__ = ("_next", "affinity", "affinity_timeout", "name", "targets")

    def __init__(self, name: str, *, start: int = 0) -> None:
        self.name = name
        self.targets: list[Target] = []
        #: where the rotation starts (workers start at their own index)
        self._next = start
        #: 0 disables affinity; otherwise seconds a client stays pinned
        self.affinity_timeout = 0.0
        #: client ip -> (target, last used, loop time)
        self.affinity: dict[str, tuple[Target, float]] = {}

    def set_targets(self, targets: list[Target]) -> None:
        if targets != self.targets:
            self.targets = targets
            live = set(targets)
            for client, (target, _) in list(self.affinity.items()):
                if target not in live:
                    del self.affinity[client]

    def set_affinity(self, timeout: float) -> None:
        if timeout != self.affinity_timeout:
            self.affinity_timeout = timeout
            if not timeout:
                self.affinity.clear()

    def candidates(self, client_ip: str, now: float) -> list[Target]:
        """Targets to try in order: the pinned one (if any) or the next in turn,
        then the others, so a refused connection moves on to the next endpoint."""
        targets = self.targets
        count = len(targets)
        if count == 0:
            return []
        if self.affinity_timeout:
            pinned = self.affinity.get(client_ip)
            if pinned is not None and now - pinned[1] < self.affinity_timeout:
                try:
                    start = targets.index(pinned[0])
                except ValueError:
                    pass
                else:
                    return targets[start:] + targets[:start]
        start = self._next % count
        self._next = start + 1
        if start == 0:
            return targets
        return targets[start:] + targets[:start]

    def connected(self, client_ip: str, target: Target, now: float) -> None:
        if self.affinity_timeout:
            self.affinity[client_ip] = (target, now)

    def expire(self, now: float) -> None:
        if self.affinity_timeout:
            for client, (_, used) in list(self.affinity.items()):
                if now - used >= self.affinity_timeout:
                    del self.affinity[client]


def _nodelay(transport: asyncio.BaseTransport) -> None:
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Side(asyncio.Protocol):
    """One socket of a relayed pair; ``peer`` is the other socket's side and
    ``write`` its transport's write (bound once: the hot path is one call)."""

    __slots__ = ("closed", "eof", "peer", "transport", "write")

    def __init__(self) -> None:
        self.transport: asyncio.Transport = None  # type: ignore[assignment]
        self.peer: _Side = None  # type: ignore[assignment]
        self.write: Callable[[bytes], None] | None = None
        self.eof = False
        self.closed = False

    def data_received(self, data: bytes) -> None:
        self.write(data)  # type: ignore[misc]

    def eof_received(self) -> bool:
        self.eof = True
        peer = self.peer
        if peer.eof or peer.closed:
            self.transport.close()
            peer.transport.close()
            return False
        peer.transport.write_eof()
        return True

    # Our write buffer is full: stop reading what would be written to it.
    def pause_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.closed and not peer.eof:
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if peer is not None and not peer.closed and not peer.eof:
            peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        peer = self.peer
        if peer is not None and not peer.closed:
            if exc is not None:
                peer.transport.abort()
            else:
                peer.transport.close()


class _Upstream(_Side):
    __slots__ = ()

    def __init__(self, client: _Client) -> None:
        super().__init__()
        self.peer = client

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.write = self.peer.transport.write


class _Client(_Side):
    """The accepted side. Until an upstream is connected it holds what the
    client sends (reading paused) and hands it over on connect."""

    __slots__ = ("_relay", "pending")

    def __init__(self, relay: Relay) -> None:
        super().__init__()
        self._relay = relay
        self.pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # uvloop starts reading after connection_made regardless; data_received
        # pauses again if anything arrives before the upstream is there.
        transport.pause_reading()  # type: ignore[attr-defined]
        relay = self._relay
        relay.active.add(self)
        relay.loop.create_task(relay.connect(self))

    def data_received(self, data: bytes) -> None:
        write = self.write
        if write is None:  # no upstream yet
            self.pending.append(data)
            self.transport.pause_reading()
            return
        write(data)

    def eof_received(self) -> bool:
        if self.peer is None:
            self.eof = True
            return True
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._relay.active.discard(self)
        super().connection_lost(exc)


class Relay:
    """Accepts connections for one Service port and relays them to its endpoints."""

    def __init__(
        self,
        balancer: Balancer,
        *,
        loop: asyncio.AbstractEventLoop,
        connect_timeout: float = 5.0,
    ) -> None:
        self.balancer = balancer
        self.loop = loop
        self.connect_timeout = connect_timeout
        self.active: set[_Client] = set()

    def factory(self) -> Callable[[], asyncio.Protocol]:
        return lambda: _Client(self)

    @property
    def count(self) -> int:
        """Client connections accepted and not yet closed."""
        return len(self.active)

    async def connect(self, client: _Client) -> None:
        peer = client.transport.get_extra_info("peername")
        client_ip = peer[0] if peer else ""
        balancer = self.balancer
        loop = self.loop
        for target in balancer.candidates(client_ip, loop.time()):
            if client.closed:
                return
            try:
                async with asyncio.timeout(self.connect_timeout):
                    transport, upstream = await loop.create_connection(
                        lambda: _Upstream(client), target[0], target[1]
                    )
            except (OSError, TimeoutError) as exc:
                log.debug("%s: endpoint %s:%d failed: %s", balancer.name, *target, exc)
                continue
            if client.closed:
                transport.close()
                return
            _nodelay(transport)
            client.peer = upstream
            client.write = transport.write
            balancer.connected(client_ip, target, loop.time())
            if client.pending:
                transport.writelines(client.pending)
                client.pending = []
            if client.eof:
                if upstream.eof:
                    transport.close()
                    client.transport.close()
                else:
                    transport.write_eof()
            else:
                client.transport.resume_reading()
            return
        if not balancer.targets:
            log.debug("%s: no ready endpoints; closing connection", balancer.name)
        else:
            log.warning("%s: no endpoint accepted the connection", balancer.name)
        client.transport.close()

    def close_all(self) -> None:
        for client in list(self.active):
            client.transport.abort()
            if client.peer is not None and client.peer.transport is not None:
                client.peer.transport.abort()
        self.active.clear()


# ------------------------------------------------------------------ native


#: accept errors that mean "out of descriptors or memory": back off, do not spin
_ACCEPT_BACKOFF = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class RawServer:
    """A listening socket served by ``loop.add_reader`` (for ``NativeRelay``);
    ``close``/``wait_closed`` as an ``asyncio.Server``."""

    def __init__(
        self, sock: socket.socket, loop: asyncio.AbstractEventLoop, relay: NativeRelay
    ) -> None:
        self.sock = sock
        self._loop = loop
        self._relay = relay
        self._closed = False
        self._retry: asyncio.TimerHandle | None = None
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        for _ in range(64):
            try:
                conn, addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _ACCEPT_BACKOFF:
                    log.warning(
                        "%s: cannot accept (%s); pausing 1s", self._relay.balancer.name, exc
                    )
                    self._loop.remove_reader(self.sock.fileno())
                    self._retry = self._loop.call_later(1.0, self._resume)
                return
            self._relay.accepted(conn, addr)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self.sock.fileno(), self._accept)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self.sock.fileno())
        self.sock.close()

    async def wait_closed(self) -> None:
        return None


def _ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class NativeRelay:
    """Accepts connections for one Service port, connects each to an endpoint
    (round-robin, retrying the next on failure) and hands the pair to the
    native relay threads."""

    def __init__(
        self,
        balancer: Balancer,
        *,
        loop: asyncio.AbstractEventLoop,
        engine: Engine,
        connect_timeout: float = 5.0,
    ) -> None:
        self.balancer = balancer
        self.loop = loop
        self.engine = engine
        self.connect_timeout = connect_timeout
        #: ids of the pairs relaying in the native threads
        self.active: set[int] = set()
        self._connecting: dict[asyncio.Task[None], socket.socket] = {}

    def serve(self, sock: socket.socket) -> RawServer:
        return RawServer(sock, self.loop, self)

    @property
    def count(self) -> int:
        return len(self.active) + len(self._connecting)

    def accepted(self, conn: socket.socket, addr: object) -> None:
        conn.setblocking(False)
        client_ip = addr[0] if isinstance(addr, tuple) and addr else ""
        task = self.loop.create_task(self._connect(conn, str(client_ip)))
        self._connecting[task] = conn
        task.add_done_callback(self._connecting.pop)

    async def _connect(self, conn: socket.socket, client_ip: str) -> None:
        balancer = self.balancer
        loop = self.loop
        try:
            for target in balancer.candidates(client_ip, loop.time()):
                upstream = await self._dial(target)
                if upstream is None:
                    continue
                for sock in (conn, upstream):
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                balancer.connected(client_ip, target, loop.time())
                try:
                    pair = self.engine.add(conn, upstream, self.active.discard)
                except OSError:
                    upstream.close()
                    raise
                self.active.add(pair)
                return
            if not balancer.targets:
                log.debug("%s: no ready endpoints; closing connection", balancer.name)
            else:
                log.warning("%s: no endpoint accepted the connection", balancer.name)
            conn.close()
        except BaseException:
            conn.close()
            raise

    async def _dial(self, target: Target) -> socket.socket | None:
        host, port = target
        try:
            async with asyncio.timeout(self.connect_timeout):
                if _ip_literal(host):
                    family = socket.AF_INET6 if ":" in host else socket.AF_INET
                    address: tuple[str, int] = (host, port)
                else:
                    infos = await self.loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    family, _, _, _, sockaddr = infos[0]
                    address = (str(sockaddr[0]), int(sockaddr[1]))
                sock = socket.socket(family, socket.SOCK_STREAM)
                try:
                    sock.setblocking(False)
                    await self.loop.sock_connect(sock, address)
                except BaseException:
                    sock.close()
                    raise
                return sock
        except (OSError, TimeoutError) as exc:
            log.debug("%s: endpoint %s:%d failed: %s", self.balancer.name, host, port, exc)
            return None

    def close_all(self) -> None:
        for task in list(self._connecting):
            task.cancel()
        for pair in list(self.active):
            self.engine.abort(pair)
        self.active.clear()
