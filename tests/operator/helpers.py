"""Shared helpers of the operator tests: start an in-process Operator, send
signed webhooks, wait for state, serve a bare repository with `git daemon`,
run gitkube subprocesses and end them (and what they started) by PID.

Copied from the patterns of tests/operator/test_run.py (owned by the lead),
so that file stays untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from gitkube.config import Settings, resolve_settings
from gitkube.operator import Operator
from gitkube.server.webhooks import sign
from tests.fixtures.git import GitRemote, git
from tests.fixtures.require import require_binary

SECRET = "webhook-secret-for-tests"
REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------ in-process operator


class Running:
    """An Operator running as a task of the test's event loop."""

    def __init__(self, operator: Operator, task: asyncio.Task[None], stop: asyncio.Event):
        self.operator = operator
        self.task = task
        self.stop = stop

    @property
    def base(self) -> str:
        assert self.operator.http is not None
        return f"http://127.0.0.1:{self.operator.http.port}"

    async def shutdown(self) -> None:
        self.stop.set()
        await asyncio.wait_for(self.task, timeout=60)


def operator_settings(repo: str, state: Path, **extra: Any) -> Settings:
    flags = {
        "repo": repo,
        "runtime": "process",
        "state_dir": str(state),
        "listen": f"127.0.0.1:{free_port()}",
        "interval": "60s",
        "webhook_secret": SECRET,
        "node": "local",
        "node_grace": "6s",
        # never nftables in this machine's own namespace (see tests/conftest.py)
        "proxy_mode": "userspace",
        **extra,
    }
    settings, _ = resolve_settings(flags, environ={})
    return settings


async def start_operator(settings: Settings) -> Running:
    operator = Operator(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(operator.run(stop))
    for _ in range(400):
        if operator.http is not None and operator.http.port:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.05)
    else:
        stop.set()
        raise AssertionError("the operator's HTTP server did not start")
    return Running(operator, task, stop)


async def eventually(check: Callable[[], Any], *, timeout: float = 20.0, what: str = "") -> Any:
    """Await ``check()`` until it is truthy; its last value, or AssertionError."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}: last {last!r}")


def github_push(
    branch: str, revision: str, *, secret: str = SECRET
) -> tuple[bytes, dict[str, str]]:
    """The body and headers of a GitHub push delivery, signed with ``secret``."""
    body = json.dumps({"ref": f"refs/heads/{branch}", "after": revision}).encode()
    headers = {"X-GitHub-Event": "push", "X-Hub-Signature-256": sign(secret.encode(), body)}
    return body, headers


async def push_hook(
    base: str, branch: str, revision: str, *, session: aiohttp.ClientSession
) -> int:
    body, headers = github_push(branch, revision)
    async with session.post(base + "/hooks/github", data=io.BytesIO(body), headers=headers) as r:
        return r.status


async def get_json(base: str, path: str, *, session: aiohttp.ClientSession) -> Any:
    async with session.get(base + path, timeout=aiohttp.ClientTimeout(total=5)) as resp:
        return await resp.json()


async def http_get(port: int, *, host: str = "127.0.0.1") -> tuple[int, str]:
    """(status, body) of GET / on host:port; (0, error) when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://{host}:{port}/", timeout=aiohttp.ClientTimeout(total=3)) as resp,
        ):
            return resp.status, await resp.text()
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        return 0, repr(exc)


# ------------------------------------------------------------ git


def status_commits(bare: Path, branch: str = "gitkube/status") -> int:
    out = git("rev-list", "--count", f"refs/heads/{branch}", cwd=bare, check=False)
    return int(out) if out.isdigit() else 0


def status_file(bare: Path, path: str, branch: str = "gitkube/status") -> str:
    return git("show", f"refs/heads/{branch}:{path}", cwd=bare, check=False)


class GitDaemon:
    """`git daemon` serving every repository under ``root`` over git://, with pushes."""

    def __init__(self, root: Path) -> None:
        require_binary("git", "install git")
        self.root = root
        self.port = free_port()
        self.log = root.parent / f"git-daemon-{self.port}.log"
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [
                    "git", "daemon", "--reuseaddr", f"--base-path={root}", "--export-all",
                    "--enable=receive-pack", "--listen=127.0.0.1", f"--port={self.port}",
                    str(root),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"git daemon exited: {self.log.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"git daemon did not listen on {self.port}")

    def url(self, name: str) -> str:
        return f"git://127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        kill_tree(self.process.pid)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def serve_remote(remote: GitRemote) -> Iterator[GitDaemon]:
    """Serve ``remote.bare`` with git daemon and point the work clone's origin at it."""
    daemon = GitDaemon(remote.bare.parent)
    try:
        git("remote", "set-url", "origin", daemon.url(remote.bare.name), cwd=remote.work)
        yield daemon
    finally:
        daemon.stop()


# ------------------------------------------------------------ processes


def kill_tree(pid: int, sig: int = signal.SIGKILL) -> None:
    """Signal ``pid`` and every descendant of it (by PID, never by name)."""
    try:
        parent = psutil.Process(pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.send_signal(sig)


def kill_processes_under(path: Path) -> None:
    """End every process whose command line names ``path`` (a test's state dir) or
    whose working directory is under it (the process runtime's pods)."""
    root = str(path)
    for proc in psutil.process_iter(["pid", "cmdline", "cwd"]):
        try:
            named = any(root in part for part in proc.info["cmdline"] or [])
            inside = (proc.info["cwd"] or "").startswith(root)
            if proc.pid != os.getpid() and (named or inside):
                proc.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass


def gitkube_env(**extra: str) -> dict[str, str]:
    """The environment of a gitkube subprocess: no GITKUBE_* from the caller
    but the proxy mode (userspace in the tests, see tests/conftest.py: as root,
    auto would program nftables in this machine's own network namespace)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GITKUBE_") or k == "GITKUBE_PROXY_MODE"
    }
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env


def spawn_gitkube(
    args: Sequence[str], *, log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``python -m gitkube ARGS`` in its own session, output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "gitkube", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env or gitkube_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )


def run_gitkube(
    args: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gitkube", *args],
        capture_output=True,
        text=True,
        env=env or gitkube_env(),
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
    )
