"""Several service-proxy processes on the same ports (``gitkube proxy --workers N``).

One Python event loop relays on one core; HAProxy uses them all. So the
proxy can run as N worker processes, each a full ``ServiceProxy`` (its own
store connection, balancers and listeners), all listening on the same
Service ports with ``SO_REUSEPORT``: the kernel spreads new connections over
the workers' sockets. Linux only (elsewhere SO_REUSEPORT does not balance).

Sharing a port with SO_REUSEPORT would also let any other process of the
same user join it silently, so before binding, a worker looks at who already
listens on the port (``/proc/net/tcp{,6}``, socket inodes) and joins only if
every listener belongs to its own group (itself and its siblings, the other
children of the same parent). A listener of another program makes the port
"in use on this machine", exactly as for a single proxy.

The parent (``Supervisor``) starts the workers, restarts one that dies,
forwards SIGTERM/SIGINT and waits for them. A worker stops when its parent
is gone: it watches the read end of a pipe whose write end only the parent
holds (EOF once the parent dies, however it dies), and on Linux it also asks
for SIGTERM on parent death (``PR_SET_PDEATHSIG``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

#: the default number of workers never exceeds this
MAX_DEFAULT_WORKERS = 4
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp
_PR_SET_PDEATHSIG = 1


def shared_ports_supported() -> bool:
    """Whether this system balances SO_REUSEPORT listeners and shows their owners."""
    return (
        sys.platform.startswith("linux")
        and hasattr(socket, "SO_REUSEPORT")
        and os.path.exists("/proc/net/tcp")
    )


def default_workers(cpus: int | None = None) -> int:
    """One worker per usable CPU, at most ``MAX_DEFAULT_WORKERS``; 1 without SO_REUSEPORT.

    Measured on 2 CPUs with wrk and the endpoints on the same machine
    (bench/proxy.py): a second worker costs 20-30% more CPU per request (two
    half-idle event loops sleep and wake per request instead of batching), so
    with little other load ``--workers 1`` relays more; under load from other
    programs two workers hold their share of the CPUs better.
    """
    if not shared_ports_supported():
        return 1
    return max(1, min(usable_cpus() if cpus is None else cpus, MAX_DEFAULT_WORKERS))


def usable_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - Linux has it
        return os.cpu_count() or 1


# ------------------------------------------------------------------ who listens


def _proc_address(text: str) -> bytes:
    """An address as /proc/net/tcp{,6} prints it (32-bit words in host order)."""
    raw = bytes.fromhex(text)
    order = sys.byteorder
    return b"".join(
        int.from_bytes(raw[i : i + 4], order).to_bytes(4, "big") for i in range(0, len(raw), 4)
    )


def _wildcard(address: bytes) -> bool:
    return not any(address)


def listening_inodes(host: str, port: int) -> set[int]:
    """Inodes of the sockets listening on ``port`` at an address that conflicts
    with ``host`` (the same address, or a wildcard on either side)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ours = socket.inet_pton(family, host)
    suffix = f":{port:04X}"
    found: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle, None)
                for line in handle:
                    fields = line.split()
                    if len(fields) < 10 or fields[3] != _LISTEN:
                        continue
                    local = fields[1]
                    if not local.endswith(suffix):
                        continue
                    theirs = _proc_address(local[: -len(suffix)])
                    if theirs == ours or _wildcard(theirs) or _wildcard(ours):
                        found.add(int(fields[9]))
        except FileNotFoundError:
            continue
    return found


def socket_inodes(pids: Iterable[int]) -> set[int]:
    """Inodes of the sockets the processes hold open (those we may look at)."""
    inodes: set[int] = set()
    for pid in pids:
        base = f"/proc/{pid}/fd"
        try:
            names = os.listdir(base)
        except OSError:
            continue
        for name in names:
            try:
                target = os.readlink(f"{base}/{name}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return {int(x) for x in handle.read().split()}
    except OSError:
        pass
    found: set[int] = set()  # kernels without CONFIG_PROC_CHILDREN
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        if int(stat[stat.rfind(")") + 2 :].split()[1]) == pid:
            found.add(int(entry))
    return found


def worker_group_pids() -> set[int]:
    """This process and its siblings (the other workers of the same parent)."""
    me = os.getpid()
    parent = os.getppid()
    if parent <= 1:
        return {me}
    return _children(parent) | {me}


def bind_shared(
    host: str,
    port: int,
    *,
    group: Callable[[], Iterable[int]] = worker_group_pids,
) -> socket.socket:
    """A socket bound with SO_REUSEPORT to ``host:port``, joining only listeners
    of our own worker group. A listener of anyone else raises EADDRINUSE."""
    holders = listening_inodes(host, port)
    if holders and not holders <= socket_inodes(group()):
        raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


# ------------------------------------------------------------------ worker side


def set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Ask Linux to send ``sig`` when the parent dies; False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0)
    except (OSError, AttributeError):  # pragma: no cover
        return False


def watch_parent(loop: asyncio.AbstractEventLoop, fd: int, stop: asyncio.Event) -> None:
    """Set ``stop`` once the parent's end of the pipe ``fd`` closes."""

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            loop.remove_reader(fd)
            log.info("proxy worker: parent is gone; stopping")
            stop.set()

    os.set_blocking(fd, False)
    loop.add_reader(fd, readable)


# ------------------------------------------------------------------ parent side


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen[bytes]
    started: float
    #: read end of the pipe the worker writes to once it serves
    ready_fd: int
    ready: bool = False

    def poll_ready(self) -> bool:
        if not self.ready:
            with contextlib.suppress(BlockingIOError):
                self.ready = bool(os.read(self.ready_fd, 1))
        return self.ready


@dataclass
class Supervisor:
    """Runs ``command(index, parent_fd, ready_fd)`` for each worker index and keeps it running.

    A worker writes a byte to ``ready_fd`` once it serves. A worker that
    exits or is killed is restarted after ``restart_delay``, unless it failed
    (exit status > 0) before it said it was ready (bad configuration, store
    unreachable): then all stop and ``run`` returns that exit status. Readiness,
    not a start-up time, decides, so a slow start on a loaded machine is not
    mistaken for a crash after start (which would restart a worker forever).
    SIGTERM and SIGINT stop the workers (SIGTERM, then SIGKILL
    after ``stop_timeout``) and ``run`` returns 0.
    """

    command: Callable[[int, int, int], Sequence[str]]
    workers: int
    restart_delay: float = 1.0
    stop_timeout: float = 5.0
    poll_seconds: float = 0.1
    _running: dict[int, _Worker] = field(default_factory=dict)
    _stopping: bool = False

    def run(self) -> int:
        read_fd, write_fd = os.pipe()  # the write end never leaves this process
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)
        }
        status = 0
        try:
            for index in range(self.workers):
                self._start(index, read_fd)
            restart_at: dict[int, float] = {}
            while not self._stopping:
                time.sleep(self.poll_seconds)
                now = time.monotonic()
                for index, worker in list(self._running.items()):
                    code = worker.proc.poll()
                    ready = worker.poll_ready()
                    if code is None:
                        continue
                    del self._running[index]
                    os.close(worker.ready_fd)
                    if self._stopping:
                        break
                    if code > 0 and not ready:
                        log.error("proxy worker %d failed at start (exit %d)", index, code)
                        status = code
                        self._stopping = True
                        break
                    log.warning("proxy worker %d exited (%d); restarting", index, code)
                    restart_at[index] = now + self.restart_delay
                for index, when in list(restart_at.items()):
                    if now >= when and not self._stopping:
                        del restart_at[index]
                        self._start(index, read_fd)
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            os.close(write_fd)
            os.close(read_fd)
        return status

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._running.values()]

    def _on_signal(self, signum: int, frame: object) -> None:
        self._stopping = True

    def _start(self, index: int, read_fd: int) -> None:
        ready_read, ready_write = os.pipe()
        os.set_blocking(ready_read, False)
        try:
            proc = subprocess.Popen(
                list(self.command(index, read_fd, ready_write)), pass_fds=(read_fd, ready_write)
            )
        except BaseException:
            os.close(ready_read)
            raise
        finally:
            os.close(ready_write)
        self._running[index] = _Worker(index, proc, time.monotonic(), ready_read)
        log.info("proxy worker %d: pid %d", index, proc.pid)

    def _stop_all(self) -> None:
        procs = [w.proc for w in self._running.values()]
        for worker in self._running.values():
            os.close(worker.ready_fd)
        self._running.clear()
        for proc in procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("proxy worker pid %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
