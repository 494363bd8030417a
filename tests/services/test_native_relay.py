"""The native relay (C threads) on real loopback TCP connections.

Each test builds the chain  client <-> [a | relay | b] <-> server  from two
real TCP connections and hands ``a`` and ``b`` to the relay, then checks:

- bytes both ways, on many pairs at once (spread over the threads)
- half-close in each direction: EOF passes, the other direction still flows
- a reset on one side resets the other; ``abort`` resets both
- a side that sends and closes at once still has all of it delivered
- back-pressure: a large transfer to a slow reader arrives intact
- the end of every pair is reported to Python (``on_closed``)
- building: cached by the source's hash; no compiler is a clear reason, and
  ``ServiceProxy(relay="auto")`` then falls back to the asyncio relay
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import socket
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gitkube.services import native
from tests.services.conftest import require_native


@pytest.fixture(scope="module", autouse=True)
def _native() -> None:
    require_native()


@pytest.fixture
async def engine() -> native.Engine:
    """The process's engine, once the pairs of earlier tests have ended.

    The engine is one per process and reports ended pairs on the loop it is
    attached to: attach this test's loop, then wait until every pair handed
    over before (by earlier tests, whose sockets their teardown closed) has
    been reported, so a test's counts are its own."""
    made = native.engine()
    made.attach(asyncio.get_running_loop())
    await wait_until(lambda: made.pairs == 0, what="the pairs of earlier tests to end")
    return made


async def wait_until(check: Callable[[], bool], *, what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.01)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """Two ends of one real loopback TCP connection."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        near = socket.create_connection(listener.getsockname())
        far, _ = listener.accept()
    return near, far


@dataclass
class Chain:
    """client <-> a ... b <-> server, with a and b handed to the relay."""

    client: socket.socket
    server: socket.socket
    pair: int
    closed: asyncio.Event = field(default_factory=asyncio.Event)

    def close(self) -> None:
        self.client.close()
        self.server.close()


@pytest.fixture
async def chain(engine: native.Engine) -> AsyncIterator[Chain]:
    made = await make_chain(engine)
    try:
        yield made
    finally:
        made.close()


async def make_chain(engine: native.Engine) -> Chain:
    client, a = tcp_pair()
    b, server = tcp_pair()
    for sock in (client, server):
        sock.setblocking(False)
    done = asyncio.Event()
    pair = engine.add(a, b, lambda _id: done.set())
    return Chain(client, server, pair, done)


async def recv_exactly(sock: socket.socket, size: int, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while len(out) < size:
            chunk = await loop.sock_recv(sock, min(65536, size - len(out)))
            if not chunk:
                raise AssertionError(f"EOF after {len(out)} of {size} bytes")
            out += chunk
    return bytes(out)


async def recv_until_eof(sock: socket.socket, timeout: float = 10.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    async with asyncio.timeout(timeout):
        while chunk := await loop.sock_recv(sock, 65536):
            out += chunk
    return bytes(out)


async def test_bytes_go_both_ways_and_the_end_is_reported(chain: Chain) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(chain.client, b"ping")
    assert await recv_exactly(chain.server, 4) == b"ping"
    await loop.sock_sendall(chain.server, b"pong!")
    assert await recv_exactly(chain.client, 5) == b"pong!"
    assert not chain.closed.is_set()
    chain.client.shutdown(socket.SHUT_WR)
    assert await recv_until_eof(chain.server) == b""
    chain.server.shutdown(socket.SHUT_WR)
    assert await recv_until_eof(chain.client) == b""
    await asyncio.wait_for(chain.closed.wait(), 5)


async def test_half_close_from_the_client_keeps_the_answer_flowing(chain: Chain) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(chain.client, b"request")
    chain.client.shutdown(socket.SHUT_WR)
    assert await recv_until_eof(chain.server) == b"request"
    await loop.sock_sendall(chain.server, b"answer after the client's EOF")
    chain.server.close()
    assert await recv_until_eof(chain.client) == b"answer after the client's EOF"
    await asyncio.wait_for(chain.closed.wait(), 5)


async def test_half_close_from_the_server_keeps_the_client_direction_open(chain: Chain) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(chain.server, b"banner")
    chain.server.shutdown(socket.SHUT_WR)
    assert await recv_until_eof(chain.client) == b"banner"
    await loop.sock_sendall(chain.client, b"still talking")
    assert await recv_exactly(chain.server, 13) == b"still talking"
    assert not chain.closed.is_set()


async def test_send_and_close_at_once_delivers_everything(chain: Chain) -> None:
    payload = os.urandom(300_000)
    chain.client.setblocking(True)
    chain.client.sendall(payload)
    chain.client.close()
    assert await recv_until_eof(chain.server) == payload


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def test_a_reset_on_one_side_resets_the_other(chain: Chain) -> None:
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(chain.client, b"x")
    assert await recv_exactly(chain.server, 1) == b"x"
    reset(chain.server)
    with pytest.raises(ConnectionResetError):
        await recv_until_eof(chain.client)
    await asyncio.wait_for(chain.closed.wait(), 5)


async def test_abort_resets_both_sides(engine: native.Engine, chain: Chain) -> None:
    engine.abort(chain.pair)
    await asyncio.wait_for(chain.closed.wait(), 5)
    for sock in (chain.client, chain.server):
        with pytest.raises(ConnectionResetError):
            await recv_until_eof(sock)
    engine.abort(chain.pair)  # a pair that has ended: nothing happens


async def test_a_slow_reader_gets_a_large_transfer_intact(chain: Chain) -> None:
    loop = asyncio.get_running_loop()
    payload = os.urandom(24 * 1024 * 1024)

    async def send() -> None:
        await loop.sock_sendall(chain.client, payload)
        chain.client.shutdown(socket.SHUT_WR)

    sender = asyncio.create_task(send())
    await asyncio.sleep(0.5)  # the server reads nothing yet: buffers fill up
    assert not sender.done(), "back-pressure should hold the sender"
    received = hashlib.sha256()
    size = 0
    async with asyncio.timeout(60):
        while chunk := await loop.sock_recv(chain.server, 1 << 16):
            received.update(chunk)
            size += len(chunk)
            if size < 4 << 20:
                await asyncio.sleep(0.001)  # slowly at first
    await sender
    assert size == len(payload)
    assert received.digest() == hashlib.sha256(payload).digest()


async def test_many_pairs_at_once(engine: native.Engine) -> None:
    loop = asyncio.get_running_loop()
    chains = [await make_chain(engine) for _ in range(200)]
    try:

        async def echo_once(index: int, chain: Chain) -> None:
            message = f"message {index} ".encode() * 50
            await loop.sock_sendall(chain.client, message)
            got = await recv_exactly(chain.server, len(message))
            await loop.sock_sendall(chain.server, got[::-1])
            assert await recv_exactly(chain.client, len(message)) == message[::-1]
            chain.client.close()
            chain.server.close()

        assert engine.pairs == len(chains)
        await asyncio.gather(*(echo_once(i, c) for i, c in enumerate(chains)))
        async with asyncio.timeout(10):
            for chain in chains:
                await chain.closed.wait()
        assert engine.pairs == 0
    finally:
        for chain in chains:
            chain.close()


async def test_sockets_handed_over_belong_to_the_relay(engine: native.Engine) -> None:
    client, a = tcp_pair()
    b, server = tcp_pair()
    fds = (a.fileno(), b.fileno())
    engine.add(a, b, lambda _id: None)
    assert a.fileno() == -1 and b.fileno() == -1  # detached: Python will not close them
    client.close()
    server.close()
    # the relay closes them once both ends are gone
    async with asyncio.timeout(5):
        while any(_is_open(fd) for fd in fds):
            await asyncio.sleep(0.02)


def _is_open(fd: int) -> bool:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
    except OSError as exc:
        assert exc.errno == errno.ENOENT
        return False
    return target.startswith("socket:")


# ------------------------------------------------------------------ building


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("GITKUBE_CACHE_DIR", str(tmp_path / "cache"))
    yield tmp_path / "cache"


def test_build_is_cached_by_the_source_hash(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = native.build()
    assert first.parent == fresh_cache and first.exists()
    flags = " ".join(native._CFLAGS).encode()
    digest = hashlib.sha256(native.SOURCE.read_bytes() + flags).hexdigest()[:16]
    assert first.name.startswith(f"relay-{digest}-")
    stamp = first.stat().st_mtime_ns
    assert native.build() == first
    assert first.stat().st_mtime_ns == stamp  # not rebuilt
    changed = tmp_path / "relay.c"
    changed.write_text(native.SOURCE.read_text() + "\n/* changed */\n")
    monkeypatch.setattr(native, "SOURCE", changed)
    second = native.build()
    assert second != first and second.exists()  # a changed source is built anew


def test_no_compiler_is_a_clear_reason(
    fresh_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(native.NativeUnavailable, match="no C compiler"):
        native.build()


def test_an_unwritable_cache_is_a_clear_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    monkeypatch.setenv("GITKUBE_CACHE_DIR", str(blocker / "cache"))
    with pytest.raises(native.NativeUnavailable, match="set GITKUBE_CACHE_DIR"):
        native.build()


def test_without_a_compiler_the_proxy_falls_back_to_asyncio(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    script = """
import asyncio
from gitkube.services import native
from gitkube.services.proxy import ServiceProxy
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore

async def main():
    store = await open_store("sqlite:///{tmp}/state.db")
    objects = ObjectStore(store)
    print(ServiceProxy(objects, relay="auto").data_path)
    try:
        ServiceProxy(objects, relay="native")
    except native.NativeUnavailable as exc:
        print("native:", exc)
    await store.close()

asyncio.run(main())
""".replace("{tmp}", str(tmp_path))
    env = {
        **os.environ,
        "PATH": str(empty),
        "GITKUBE_CACHE_DIR": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
    }
    env.pop("CC", None)
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "asyncio"
    assert lines[1].startswith("native: no C compiler")
    assert "using the asyncio relay: no C compiler" in done.stderr
