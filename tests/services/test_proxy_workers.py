"""Several service-proxy workers on the same ports (SO_REUSEPORT), with real
sockets, real HTTP servers and a real SQLite store.

In one process (two ``ServiceProxy`` workers side by side, asyncio and uvloop):
- sharing: both workers listen on a Service port, whichever binds first, and
  both get connections; every backend is reached
- affinity: a ClientIP Service is served by worker 0 alone, and still pins
- another program on the port (with or without SO_REUSEPORT): no worker joins
  it; worker 0 alone records the problem, a sibling never touches the record
- the group rule: who listens on a port, read from /proc; the default worker count

``gitkube proxy --workers 2`` as a subprocess:
- both worker processes hold relayed connections; all backends are reached
- a ClientIP Service: one listener (worker 0), one backend for every connection
- a port in use by another program: recorded once (version 1), by worker 0
- SIGTERM: exit 0, no worker left; SIGKILL of the parent: the workers exit
  within two seconds; a killed worker is restarted
- usage errors; workers failing at start (a bad store URL) fail the command
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import psutil
import pytest

from gitkube.services import native
from gitkube.services.proxy import Bind, ServiceProxy, proxy_status_key
from gitkube.services.workers import (
    default_workers,
    listening_inodes,
    shared_ports_supported,
    socket_inodes,
)
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.services.conftest import Backend, free_port, require_native
from tests.services.test_proxy import HttpConnection, get, put_endpoints, put_service

pytestmark = pytest.mark.skipif(
    not shared_ports_supported(), reason="proxy workers need Linux SO_REUSEPORT"
)

ROOT = Path(__file__).resolve().parents[2]


def just_me() -> set[int]:
    return {os.getpid()}


@contextlib.asynccontextmanager
async def two_workers(objects: ObjectStore) -> AsyncIterator[tuple[ServiceProxy, ServiceProxy]]:
    w0 = ServiceProxy(objects, node_name="n1", worker=0, workers=2, group=just_me)
    w1 = ServiceProxy(objects, node_name="n1", worker=1, workers=2, group=just_me)
    try:
        yield w0, w1
    finally:
        await w1.close()
        await w0.close()


@contextlib.contextmanager
def squatter(*, reuse_port: bool) -> Iterator[int]:
    """Another program listening on a port (a separate Python process)."""
    code = (
        "import socket, sys\n"
        "s = socket.socket()\n"
        f"s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, {int(reuse_port)})\n"
        "s.bind(('127.0.0.1', 0)); s.listen()\n"
        "print(s.getsockname()[1], flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        yield int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.communicate()


# ------------------------------------------------------------------ in one process


async def test_two_workers_share_the_port_and_both_serve(
    objects: ObjectStore, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [b.port for b in backends])
    async with two_workers(objects) as (w0, w1):
        # the sibling may bind first; worker 0 then joins it
        assert (await w1.reconcile_once()).opened == [f"127.0.0.1:{port}"]
        assert (await w0.reconcile_once()).opened == [f"127.0.0.1:{port}"]
        assert len(listening_inodes("127.0.0.1", port)) == 2
        conns = [await HttpConnection.open(port) for _ in range(24)]
        try:
            answers = [await c.get() for c in conns]
            assert w0.connections > 0 and w1.connections > 0
            assert w0.connections + w1.connections == 24
            assert set(answers) == {"b0", "b1", "b2"}
        finally:
            for c in conns:
                await c.close()


async def test_workers_start_their_rotation_at_their_index(
    objects: ObjectStore, backends: list[Backend]
) -> None:
    port = free_port()
    await put_service(objects, "web", port)
    await put_endpoints(objects, "web", [b.port for b in backends])
    async with two_workers(objects) as (w0, w1):
        await w0.reconcile_once()
        await w1.reconcile_once()
        b0, b1 = w0.balancer("default", "web", "http"), w1.balancer("default", "web", "http")
        assert b0 is not None and b1 is not None
        assert b0.candidates("c", 0.0)[0] != b1.candidates("c", 0.0)[0]


async def test_affinity_service_is_served_by_worker_zero_alone(
    objects: ObjectStore, backends: list[Backend]
) -> None:
    sticky, plain = free_port(), free_port()
    await put_service(objects, "sticky", sticky, affinity_seconds=0)
    await put_service(objects, "plain", plain)
    await put_endpoints(objects, "sticky", [b.port for b in backends])
    await put_endpoints(objects, "plain", [b.port for b in backends])
    async with two_workers(objects) as (w0, w1):
        await w0.reconcile_once()
        await w1.reconcile_once()
        assert set(w0.listening) == {Bind("127.0.0.1", sticky), Bind("127.0.0.1", plain)}
        assert set(w1.listening) == {Bind("127.0.0.1", plain)}
        answers = {await get(sticky) for _ in range(20)}
        assert len(answers) == 1
        # affinity switched off: the sibling joins; switched on again: it leaves
        await put_service(objects, "sticky", sticky)
        await w1.reconcile_once()
        assert Bind("127.0.0.1", sticky) in w1.listening
        await put_service(objects, "sticky", sticky, affinity_seconds=0)
        result = await w1.reconcile_once()
        assert result.closed == [f"127.0.0.1:{sticky}"]


@pytest.mark.parametrize("reuse_port", [True, False], ids=["reuseport", "plain"])
async def test_another_program_on_the_port_is_not_joined_and_recorded_once(
    objects: ObjectStore, backends: list[Backend], reuse_port: bool
) -> None:
    free = free_port()
    with squatter(reuse_port=reuse_port) as taken:
        await put_service(objects, "blocked", taken)
        await put_service(objects, "fine", free)
        await put_endpoints(objects, "blocked", [backends[0].port])
        await put_endpoints(objects, "fine", [backends[1].port])
        async with two_workers(objects) as (w0, w1):
            key = proxy_status_key("n1", "default", "blocked")
            for _ in range(3):
                for worker in (w1, w0):
                    result = await worker.reconcile_once()
                    assert list(result.problems) == ["default/blocked"]
                    assert "already in use" in result.problems["default/blocked"][0].error
                    assert Bind("127.0.0.1", taken) not in worker.listening
            kv = await objects.store.get(key)
            assert kv is not None and kv.version == 1, "written once, by worker 0"
            assert json.loads(kv.value)["ports"][0]["port"] == taken
            assert await get(free) == "b1"
            # a sibling closing never withdraws worker 0's records
            await w1.close()
            assert await objects.store.get(key) is not None
            await w0.close()
            assert await objects.store.get(key) is None


def test_listening_inodes_sees_our_listener_and_wildcards() -> None:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = int(sock.getsockname()[1])
        inode = os.fstat(sock.fileno()).st_ino
        assert listening_inodes("127.0.0.1", port) == {inode}
        assert listening_inodes("0.0.0.0", port) == {inode}  # a wildcard conflicts
        assert listening_inodes("127.0.0.2", port) == set()
        assert inode in socket_inodes([os.getpid()])
    assert listening_inodes("127.0.0.1", port) == set()


# ------------------------------------------------------------------ gitkube proxy --workers


class ProxyProcess:
    """``gitkube proxy --workers N`` over a SQLite store, in its own session."""

    def __init__(self, url: str, tmp: Path, *, workers: int = 2) -> None:
        self.log = tmp / "proxy.log"
        self._log = self.log.open("wb")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "gitkube", "proxy", "--store", url, "--node", "n1",
                "--proxy-mode", "userspace", "--workers", str(workers), "--resync", "0.3",
            ],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            start_new_session=True,
        )  # fmt: skip

    def workers(self) -> list[psutil.Process]:
        with contextlib.suppress(psutil.NoSuchProcess):
            return psutil.Process(self.proc.pid).children()
        return []

    def listeners(self, port: int) -> dict[int, int]:
        """Worker pid -> its sockets listening on ``port``."""
        found: dict[int, int] = {}
        for worker in self.workers():
            with contextlib.suppress(psutil.Error):
                count = sum(
                    1
                    for c in worker.net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port
                )
                if count:
                    found[worker.pid] = count
        return found

    def established(self, port: int) -> dict[int, int]:
        """Worker pid -> accepted connections on ``port``."""
        found: dict[int, int] = {}
        for worker in self.workers():
            with contextlib.suppress(psutil.Error):
                found[worker.pid] = sum(
                    1
                    for c in worker.net_connections("tcp")
                    if c.status == psutil.CONN_ESTABLISHED and c.laddr.port == port
                )
        return found

    def stop(self) -> None:
        pids = [self.proc.pid, *(w.pid for w in self.workers())]
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
        for pid in pids:  # whatever is left of what this test started
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self._log.close()


@pytest.fixture
def proxy_process(tmp_path: Path) -> Iterator[Callable[..., ProxyProcess]]:
    started: list[ProxyProcess] = []

    def start(**kwargs: int) -> ProxyProcess:
        proc = ProxyProcess(f"sqlite:///{tmp_path}/state.db", tmp_path, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()


def eventually(check: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not in {timeout}s: {what}"
        time.sleep(0.05)


def alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def http_get(sock: socket.socket) -> str:
    sock.sendall(b"GET / HTTP/1.1\r\nHost: test\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        assert chunk, "connection closed"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        body += sock.recv(4096)
    return body.decode()


def store_call(url: str, action: Callable[[ObjectStore], object]) -> object:
    async def run() -> object:
        store = await open_store(url)
        try:
            return await action(ObjectStore(store))  # type: ignore[misc]
        finally:
            await store.close()

    return asyncio.run(run())


async def _state(objects: ObjectStore, *services: tuple[str, int, list[int], bool]) -> None:
    for name, port, targets, sticky in services:
        await put_service(objects, name, port, affinity_seconds=0 if sticky else None)
        await put_endpoints(objects, name, targets)


def test_workers_all_serve_and_reach_every_backend(
    tmp_path: Path, backends: list[Backend], proxy_process: Callable[..., ProxyProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    port = free_port()
    store_call(url, lambda o: _state(o, ("web", port, [b.port for b in backends], False)))
    proxy = proxy_process(workers=2)
    eventually(lambda: len(proxy.listeners(port)) == 2, what="two workers listening")
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(30)]
    try:
        answers = [http_get(s) for s in socks]
        assert set(answers) == {"b0", "b1", "b2"}
        assert all(b.hits >= 5 for b in backends), [b.hits for b in backends]
        per_worker = proxy.established(port)
        assert len(per_worker) == 2 and all(per_worker.values()), per_worker
        assert sum(per_worker.values()) == 30
    finally:
        for s in socks:
            s.close()


def test_affinity_pins_across_many_connections(
    tmp_path: Path, backends: list[Backend], proxy_process: Callable[..., ProxyProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    sticky, plain = free_port(), free_port()
    targets = [b.port for b in backends]
    store_call(
        url,
        lambda o: _state(o, ("sticky", sticky, targets, True), ("plain", plain, targets, False)),
    )
    proxy = proxy_process(workers=2)
    eventually(lambda: len(proxy.listeners(plain)) == 2, what="two workers on the plain port")
    eventually(lambda: len(proxy.listeners(sticky)) == 1, what="worker 0 on the sticky port")
    time.sleep(0.7)  # two more passes: the sibling still stays away
    assert len(proxy.listeners(sticky)) == 1
    answers = set()
    for _ in range(30):
        with socket.create_connection(("127.0.0.1", sticky), timeout=5) as s:
            answers.add(http_get(s))
    assert len(answers) == 1


def test_port_in_use_is_recorded_once_by_worker_zero(
    tmp_path: Path, backends: list[Backend], proxy_process: Callable[..., ProxyProcess]
) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    with squatter(reuse_port=True) as taken:
        fine = free_port()
        store_call(
            url,
            lambda o: _state(
                o,
                ("blocked", taken, [backends[0].port], False),
                ("fine", fine, [backends[1].port], False),
            ),
        )
        proxy = proxy_process(workers=2)
        key = proxy_status_key("n1", "default", "blocked")
        eventually(lambda: store_call(url, lambda o: o.store.get(key)) is not None, what="record")
        # both workers have made a pass (under load the second one starts late)
        eventually(lambda: len(proxy.listeners(fine)) == 2, what="both workers on the fine port")
        time.sleep(1.0)  # several more passes of both workers: the record is not rewritten
        kv = store_call(url, lambda o: o.store.get(key))
        assert kv is not None and kv.version == 1  # type: ignore[attr-defined]
        assert len(proxy.listeners(fine)) == 2
        assert proxy.listeners(taken) == {}
        with socket.create_connection(("127.0.0.1", fine), timeout=5) as s:
            assert http_get(s) == "b1"
        errors = [line for line in proxy.log.read_text().splitlines() if "already in use" in line]
        assert errors and all("[worker 0]" in line for line in errors), errors


def test_sigterm_stops_parent_and_workers_cleanly(
    tmp_path: Path, proxy_process: Callable[..., ProxyProcess]
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path}/state.db"
    store_call(url, lambda o: _state(o, ("web", port, [free_port()], False)))
    proxy = proxy_process(workers=2)
    eventually(lambda: len(proxy.listeners(port)) == 2, what="two workers listening")
    workers = proxy.workers()
    proxy.proc.send_signal(signal.SIGTERM)
    assert proxy.proc.wait(10) == 0
    assert not any(alive(w) for w in workers)
    assert listening_inodes("127.0.0.1", port) == set()


def test_killed_worker_is_restarted_and_killed_parent_takes_workers_along(
    tmp_path: Path, proxy_process: Callable[..., ProxyProcess]
) -> None:
    port = free_port()
    url = f"sqlite:///{tmp_path}/state.db"
    store_call(url, lambda o: _state(o, ("web", port, [free_port()], False)))
    proxy = proxy_process(workers=2)
    eventually(lambda: len(proxy.listeners(port)) == 2, what="two workers listening")
    first = {w.pid for w in proxy.workers()}
    victim = max(first)
    os.kill(victim, signal.SIGKILL)
    eventually(
        lambda: len(proxy.listeners(port)) == 2 and victim not in proxy.listeners(port),
        what="a new worker in place of the killed one",
    )
    workers = proxy.workers()
    assert len(workers) == 2
    proxy.proc.kill()  # SIGKILL: no chance to forward anything
    proxy.proc.wait()
    deadline = time.monotonic() + 2.0
    while any(alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(alive(w) for w in workers), "orphaned workers"


def test_default_is_one_process_whose_native_threads_relay(
    tmp_path: Path, backends: list[Backend], proxy_process: Callable[..., ProxyProcess]
) -> None:
    require_native()
    url = f"sqlite:///{tmp_path}/state.db"
    port = free_port()
    store_call(url, lambda o: _state(o, ("web", port, [b.port for b in backends], False)))
    proxy = proxy_process(workers=0)
    threads = native.default_threads()
    eventually(
        lambda: f"data path native ({threads} threads)" in proxy.log.read_text(),
        what="the proxy says it relays natively",
    )
    # the log line comes before the first pass opens the Service's listener
    eventually(lambda: listening_inodes("127.0.0.1", port), what="the Service port listens")
    socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(6)]
    try:
        assert sorted(http_get(s) for s in socks) == sorted([b.name for b in backends] * 2)
    finally:
        for sock in socks:
            sock.close()
    assert proxy.workers() == []  # no worker processes: the relay threads use the CPUs
    assert psutil.Process(proxy.proc.pid).num_threads() >= threads + 1


@pytest.mark.parametrize(
    "args",
    [
        ["--workers", "-1"],
        ["--workers", "2", "--worker-index", "2"],
        ["--relay", "fast"],
        ["--relay-threads", "-1"],
        ["--proxy-mode", "kernel"],
        ["--proxy-mode", "nftables", "--workers", "2"],
    ],
)
def test_bad_worker_options_are_usage_errors(tmp_path: Path, args: list[str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gitkube", "proxy", "--store", f"sqlite:///{tmp_path}/s.db", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2, result.stderr


def test_workers_failing_at_start_fail_the_command() -> None:
    argv = ["proxy", "--store", "bogus://x", "--proxy-mode", "userspace", "--workers", "2"]
    result = subprocess.run(
        [sys.executable, "-m", "gitkube", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 1, result.stderr
    assert "unknown scheme" in result.stderr


def test_default_workers_one_per_cpu_up_to_four() -> None:
    assert [default_workers(n) for n in (1, 2, 3, 4, 5, 8, 64)] == [1, 2, 3, 4, 4, 4, 4]
