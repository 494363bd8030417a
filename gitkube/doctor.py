"""`gitkube doctor`: the failures early Kubernetes installs hit, each with what to do.

Every check returns a ``Check`` (ok, warn or fail, what was seen, what to
do); none raises. Checks run concurrently with short timeouts, so a dead
store or remote costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import asdict, dataclass
from typing import Literal

from gitkube.api.keys import HEARTBEAT_PREFIX, resource_prefix
from gitkube.config import Settings, redact_url

Level = Literal["ok", "warn", "fail"]


@dataclass
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


async def check_listen_port(settings: Settings) -> Check:
    host, port = settings.listen_host_port()
    if _port_free(host, port):
        return Check("http port", "ok", f"{host}:{port} is free")
    return Check(
        "http port",
        "warn",
        f"{host}:{port} is already in use (a running gitkube, or another program)",
        f"if gitkube is not running, stop what holds the port (`ss -ltnp 'sport = :{port}'`) "
        "or choose another with --listen HOST:PORT",
    )


async def check_store(settings: Settings) -> Check:
    from gitkube.store.factory import open_store

    url = settings.store_url()
    try:
        store = await asyncio.wait_for(open_store(url), timeout=5)
        try:
            revision = await asyncio.wait_for(store.revision(), timeout=5)
        finally:
            await store.close()
    except Exception as exc:
        return Check(
            "store",
            "fail",
            f"{redact_url(url)} is unreachable: {exc}",
            "start etcd (`systemctl start etcd`) or check --store / GITKUBE_STORE; for one "
            "machine, leave --store unset to use the embedded SQLite file",
        )
    return Check("store", "ok", f"{redact_url(url)} answers at revision {revision}")


async def check_docker(settings: Settings) -> Check:
    from gitkube.nodes.runtime import docker_available

    available = await asyncio.to_thread(docker_available)
    if available:
        return Check("docker", "ok", "the Docker engine answers")
    if settings.runtime == "docker":
        return Check(
            "docker",
            "fail",
            "--runtime docker but no Docker engine answers",
            "start it (`systemctl start docker` or `dockerd &`), check DOCKER_HOST, or use "
            "--runtime process",
        )
    return Check(
        "docker",
        "warn",
        "no Docker engine answers; pods run as local processes (process runtime)",
        "install and start Docker (`apt-get install docker.io && systemctl start docker`) "
        "to run container images",
    )


def _git(*args: str, timeout: float = 15) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0", GIT_SSH_COMMAND="ssh -o BatchMode=yes")
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, timeout=timeout, env=env, check=False
    )


async def check_git_remote(settings: Settings) -> list[Check]:
    if not settings.repo:
        return [
            Check("git remote", "warn", "no --repo given", "pass --repo URL or set GITKUBE_REPO")
        ]
    shown = redact_url(settings.repo)
    try:
        result = await asyncio.to_thread(_git, "ls-remote", "--heads", "--tags", settings.repo)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [Check("git remote", "fail", f"{shown}: {exc}", "check the URL and the network")]
    if result.returncode != 0:
        return [
            Check(
                "git remote",
                "fail",
                f"{shown} is unreachable: {redact_url(result.stderr.strip())}",
                "check the URL, credentials (an SSH key or a token in a credential helper, "
                "never in the URL on the command line) and network access",
            )
        ]
    refs = {line.split("\t")[1] for line in result.stdout.splitlines() if "\t" in line}
    checks = [Check("git remote", "ok", f"{shown} answers ({len(refs)} refs)")]
    branch = settings.branch
    if f"refs/heads/{branch}" not in refs and f"refs/tags/{branch}" not in refs:
        checks.append(
            Check(
                "git ref",
                "warn" if len(branch) == 40 else "fail",
                f"{shown} has no branch or tag {branch!r}",
                "push the branch, or pass --branch with one that exists",
            )
        )
    if settings.writeback:
        checks.append(await _check_push(settings))
    return checks


async def _check_push(settings: Settings) -> Check:
    probe = f"refs/gitkube/doctor-{os.getpid()}"
    result = (
        await asyncio.to_thread(
            _git, "push", "--dry-run", "--porcelain", settings.repo, f"HEAD:{probe}"
        )
        if _in_git_work_tree()
        else None
    )
    if result is None:
        return Check(
            "git push", "warn", "not checked (run doctor inside a git checkout to test pushing)"
        )
    if result.returncode == 0:
        return Check("git push", "ok", "the remote accepts pushes (dry run)")
    return Check(
        "git push",
        "warn",
        f"the remote refuses pushes: {redact_url(result.stderr.strip())[:300]}",
        f"status commits to {settings.status_branch} will fail; grant push access, or run "
        "with --writeback false",
    )


def _in_git_work_tree() -> bool:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        return _git("rev-parse", "--is-inside-work-tree", timeout=5).returncode == 0
    return False


async def check_agents(settings: Settings) -> Check:
    from gitkube.store.factory import open_store

    try:
        store = await asyncio.wait_for(open_store(settings.store_url()), timeout=5)
    except Exception:
        return Check("agents", "warn", "not checked: the store is unreachable")
    try:
        nodes, _ = await store.range(resource_prefix("nodes"))
        beats, _ = await store.range(HEARTBEAT_PREFIX)
    except Exception as exc:
        return Check("agents", "warn", f"not checked: {exc}")
    finally:
        await store.close()
    names = sorted(kv.key.rsplit("/", 1)[1] for kv in nodes)
    alive: dict[str, float] = {}
    for kv in beats:
        with contextlib.suppress(ValueError, KeyError, TypeError):
            data = json.loads(kv.value)
            alive[str(data.get("node") or kv.key.rsplit("/", 1)[1])] = float(data.get("time", 0))
    if not names:
        return Check(
            "agents",
            "warn",
            "no node has registered",
            "start an agent: `gitkube agent --store URL --node NAME` (or `gitkube run`)",
        )
    silent = [n for n in names if n not in alive]
    if silent:
        return Check(
            "agents",
            "fail",
            f"{len(silent)}/{len(names)} nodes are not heartbeating: {', '.join(silent)}",
            "on each, check `systemctl status gitkube-agent` and that it reaches the store; "
            "their pods are evicted after the eviction timeout",
        )
    stale = [n for n, t in alive.items() if t and time.time() - t > 120]
    detail = f"{len(names)} nodes heartbeating"
    if stale:
        detail += f" (clock far behind on: {', '.join(stale)})"
    return Check("agents", "ok", detail)


async def check_proxy_relay(settings: Settings) -> Check:
    """Whether the service proxy can use its native relay (built, cached) here."""
    from gitkube.services import native

    if settings.proxy_relay == "asyncio":
        return Check("proxy relay", "ok", "asyncio relay (proxy-relay is asyncio)")
    try:
        path = await asyncio.to_thread(native.build)
    except native.NativeUnavailable as exc:
        level: Level = "fail" if settings.proxy_relay == "native" else "warn"
        return Check(
            "proxy relay",
            level,
            f"the asyncio relay will copy the bytes: {exc}",
            "install a C compiler (apt-get install gcc) for the native relay",
        )
    return Check("proxy relay", "ok", f"native relay ({path})")


async def check_proxy_mode(settings: Settings) -> list[Check]:
    """Which data path an agent on this machine would use and why, and which
    each registered agent uses (as it recorded on start)."""
    from gitkube.errors import ConfigError
    from gitkube.services.mode import PROXY_MODE_PREFIX
    from gitkube.services.nftables import choose_proxy_mode
    from gitkube.store.factory import open_store

    checks = []
    try:
        mode, why = await asyncio.to_thread(choose_proxy_mode, settings.proxy_mode)
        checks.append(Check("proxy mode", "ok", f"an agent here uses {mode}: {why}"))
    except ConfigError as exc:
        checks.append(
            Check(
                "proxy mode",
                "fail",
                str(exc),
                "run the agent as root with nftables installed (apt-get install nftables), "
                "or use --proxy-mode userspace (or auto)",
            )
        )
    try:
        store = await asyncio.wait_for(open_store(settings.store_url()), timeout=5)
        try:
            recorded, _ = await store.range(PROXY_MODE_PREFIX)
        finally:
            await store.close()
    except Exception:
        return checks
    agents = []
    for kv in recorded:
        with contextlib.suppress(ValueError, AttributeError):
            data = json.loads(kv.value)
            node = kv.key[len(PROXY_MODE_PREFIX) :]
            agents.append(f"{node}: {data.get('mode')} ({data.get('reason')})")
    if agents:
        checks.append(Check("agents' proxy mode", "ok", "; ".join(sorted(agents))))
    return checks


async def run_checks(settings: Settings) -> list[Check]:
    async def store_then_agents() -> list[Check]:
        # one after the other: two first opens of a new SQLite file at once
        # race to create its schema
        return [await check_store(settings), await check_agents(settings)]

    groups = await asyncio.gather(
        check_listen_port(settings),
        store_then_agents(),
        check_docker(settings),
        check_git_remote(settings),
        check_proxy_relay(settings),
        check_proxy_mode(settings),
    )
    out: list[Check] = []
    for item in groups:
        out.extend(item if isinstance(item, list) else [item])
    return out
