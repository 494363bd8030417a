"""The native relay: the service proxy's data path in C threads (``relay.c``).

The proxy's control (listeners, endpoints, round-robin, affinity, connect
retries) stays in Python. Once a client connection and its endpoint
connection are both up, their sockets are handed to this library, whose
threads copy the bytes both ways without the Python interpreter: no
per-request Python calls, no GIL, and one thread per CPU (a Python event
loop relays on one core only). Semantics (half-close, back-pressure, resets)
are those of the asyncio relay in ``gitkube/services/relay.py``, which stays
the fallback.

The library is compiled from the C source shipped in the package the first
time it is needed, with the system C compiler (``$CC``, else ``cc``/``gcc``),
and cached under ``$GITKUBE_CACHE_DIR`` (default ``$XDG_CACHE_HOME/gitkube``,
else ``~/.cache/gitkube``), named by a hash of the source: a changed source
is rebuilt, an unchanged one is built once per machine. Without a compiler
(or off Linux), ``engine()`` raises ``NativeUnavailable`` with the reason,
and the proxy uses the asyncio relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import logging
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("relay.c")
ABI = 1
#: the default number of relay threads never exceeds this
MAX_DEFAULT_THREADS = 8
_CFLAGS = ["-O2", "-shared", "-fPIC", "-pthread", "-Wall"]


class NativeUnavailable(RuntimeError):
    """The native relay cannot be used here; the message says why."""


def cache_dir() -> Path:
    explicit = os.environ.get("GITKUBE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "gitkube"


def compiler() -> str | None:
    for name in (os.environ.get("CC", ""), "cc", "gcc", "clang"):
        if name and shutil.which(name):
            return name
    return None


def library_path() -> Path:
    digest = hashlib.sha256(SOURCE.read_bytes() + " ".join(_CFLAGS).encode()).hexdigest()
    return cache_dir() / f"relay-{digest[:16]}-{platform.machine()}.so"


def build(*, force: bool = False) -> Path:
    """Compile ``relay.c`` into the cache (once); the library's path."""
    if not sys.platform.startswith("linux"):
        raise NativeUnavailable(f"the native relay needs Linux (epoll), not {sys.platform}")
    target = library_path()
    if target.exists() and not force:
        return target
    cc = compiler()
    if cc is None:
        raise NativeUnavailable("no C compiler (cc/gcc; set $CC) to build the native relay")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".relay-", suffix=".so", dir=target.parent)
    except OSError as exc:
        raise NativeUnavailable(
            f"cannot write the native relay to {target.parent} ({exc.strerror or exc}); "
            "set GITKUBE_CACHE_DIR to a writable directory"
        ) from exc
    os.close(fd)
    try:
        done = subprocess.run(
            [cc, *_CFLAGS, "-o", tmp, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise NativeUnavailable(
                f"{cc} could not build {SOURCE.name}: {done.stderr.strip()[-2000:]}"
            )
        os.replace(tmp, target)  # atomic: concurrent builders agree
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    log.info("native relay: built %s", target)
    return target


def default_threads(cpus: int | None = None) -> int:
    """One relay thread per usable CPU, at most ``MAX_DEFAULT_THREADS``."""
    from gitkube.services.workers import usable_cpus

    return max(1, min(usable_cpus() if cpus is None else cpus, MAX_DEFAULT_THREADS))


class Engine:
    """The started library of this process: relay threads plus bookkeeping.

    ``add`` hands two connected sockets over (they are detached from their
    Python objects: the library closes them) and returns the pair's id;
    ``on_closed`` is called with that id, on the event loop that added it,
    once the pair has ended. ``abort`` ends a pair at once (resets).
    """

    def __init__(self, lib: ctypes.CDLL, threads: int) -> None:
        self._lib = lib
        self.threads = threads
        self.events_fd = int(lib.relay_events_fd())
        self._callbacks: dict[int, Callable[[int], None]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ids = (ctypes.c_uint64 * 1024)()

    def attach(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver ended pairs on ``loop`` (the loop of the current caller)."""
        if self._loop is loop:
            return
        old = self._loop
        if old is not None and not old.is_closed():
            with contextlib.suppress(Exception):
                old.remove_reader(self.events_fd)
        loop.add_reader(self.events_fd, self._drain)
        self._loop = loop

    def add(
        self, client: socket.socket, endpoint: socket.socket, on_closed: Callable[[int], None]
    ) -> int:
        loop = asyncio.get_running_loop()
        self.attach(loop)
        pair = int(self._lib.relay_add(client.fileno(), endpoint.fileno()))
        if pair == 0:
            raise OSError("the native relay did not take the connection")
        client.detach()
        endpoint.detach()
        self._callbacks[pair] = on_closed
        return pair

    def abort(self, pair: int) -> None:
        self._lib.relay_abort(ctypes.c_uint64(pair))

    @property
    def pairs(self) -> int:
        """Pairs handed over and not yet reported ended."""
        return len(self._callbacks)

    def _drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.events_fd, 8)
        while True:
            count = int(self._lib.relay_take_closed(self._ids, len(self._ids)))
            for i in range(count):
                callback = self._callbacks.pop(int(self._ids[i]), None)
                if callback is not None:
                    callback(int(self._ids[i]))
            if count < len(self._ids):
                return


_engine: Engine | None = None
_failure: str | None = None
_lock = threading.Lock()


def engine(threads: int = 0) -> Engine:
    """The process's native relay, built and started on first use.

    ``threads`` (0: ``default_threads()``) only counts for the first call;
    the threads then live as long as the process. Raises
    ``NativeUnavailable`` (every time, with the first reason) if it cannot
    be had.
    """
    global _engine, _failure
    with _lock:
        if _engine is not None:
            return _engine
        if _failure is not None:
            raise NativeUnavailable(_failure)
        try:
            lib = ctypes.CDLL(str(build()))
            lib.relay_abi.restype = ctypes.c_int
            if lib.relay_abi() != ABI:
                raise NativeUnavailable("the cached native relay is of another version")
            lib.relay_start.argtypes = [ctypes.c_int]
            lib.relay_start.restype = ctypes.c_int
            lib.relay_add.argtypes = [ctypes.c_int, ctypes.c_int]
            lib.relay_add.restype = ctypes.c_uint64
            lib.relay_abort.argtypes = [ctypes.c_uint64]
            lib.relay_abort.restype = ctypes.c_int
            lib.relay_take_closed.argtypes = [ctypes.POINTER(ctypes.c_uint64), ctypes.c_int]
            lib.relay_take_closed.restype = ctypes.c_int
            lib.relay_events_fd.restype = ctypes.c_int
            lib.relay_threads.restype = ctypes.c_int
            count = threads or default_threads()
            err = lib.relay_start(count)
            if err:
                raise NativeUnavailable(f"the native relay did not start: {os.strerror(err)}")
            _engine = Engine(lib, int(lib.relay_threads()))
        except NativeUnavailable as exc:
            _failure = str(exc)
            raise
        except OSError as exc:
            _failure = f"the native relay could not be loaded: {exc}"
            raise NativeUnavailable(_failure) from exc
        log.info("native relay: %d threads", _engine.threads)
        return _engine


def availability() -> str | None:
    """None if the native relay can be used, else why not (for `gitkube doctor`)."""
    try:
        engine()
    except NativeUnavailable as exc:
        return str(exc)
    return None
