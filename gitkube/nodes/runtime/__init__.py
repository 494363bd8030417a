"""Container runtimes: ``DockerRuntime``, ``ProcessRuntime`` and the factory.

``make_runtime("auto", ...)`` picks Docker when an engine answers a ping and
the process runtime otherwise. The docker SDK is imported only when Docker is
used, and ``shim.py`` never imports this package.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitkube.errors import ConfigError
from gitkube.nodes.runtime.base import (
    ContainerStartError,
    Mount,
    Runtime,
    RuntimeContainer,
    Sandbox,
    port_key,
)
from gitkube.nodes.runtime.process import ProcessRuntime, default_state_dir

if TYPE_CHECKING:
    from gitkube.nodes.runtime.docker import DockerRuntime

RUNTIME_KINDS = ("auto", "docker", "process")

__all__ = [
    "RUNTIME_KINDS",
    "ContainerStartError",
    "DockerRuntime",
    "Mount",
    "ProcessRuntime",
    "Runtime",
    "RuntimeContainer",
    "Sandbox",
    "default_state_dir",
    "docker_available",
    "make_runtime",
    "port_key",
]


def __getattr__(name: str) -> Any:
    if name == "DockerRuntime":
        from gitkube.nodes.runtime.docker import DockerRuntime

        return DockerRuntime
    raise AttributeError(name)


def docker_available(*, base_url: str | None = None, timeout: float = 2.0) -> bool:
    """True when a Docker engine answers ``GET /_ping`` within ``timeout`` seconds.

    A plain socket for ``unix://`` and ``tcp://`` engines (the SDK's client
    leaks its socket when the engine is absent, and negotiates a version
    first); the SDK for other schemes (ssh, TLS)."""
    url = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    tls = bool(os.environ.get("DOCKER_TLS_VERIFY")) and base_url is None
    if url.startswith(("unix://", "tcp://")) and not tls:
        return _ping_socket(url, timeout)
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.DockerClient(base_url=url, timeout=max(1, int(timeout)))
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def _ping_socket(url: str, timeout: float) -> bool:
    if url.startswith("unix://"):
        family, address = socket.AF_UNIX, url[len("unix://") :]
        target: str | tuple[str, int] = address
    else:
        host, _, port = url[len("tcp://") :].partition(":")
        family, target = socket.AF_INET, (host, int(port.split("/")[0] or 2375))
    try:
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(target)
            sock.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
            response = sock.recv(64)
    except (OSError, ValueError):
        return False
    return response.startswith(b"HTTP/1.") and response[9:12] == b"200"


async def make_runtime(
    kind: str,
    *,
    node_name: str,
    state_dir: Path | None = None,
    node_address: str = "127.0.0.1",
    docker_url: str | None = None,
    sandbox_image: str | None = None,
    pull_timeout: float = 10.0,
    run_as: str | None = None,
) -> Runtime:
    """A runtime of ``kind`` ("docker", "process" or "auto") for ``node_name``.

    ``node_address`` is accepted for symmetry with the agent's flags; the
    runtimes take it per sandbox (``start_sandbox(pod, node_address=...)``).
    ``run_as`` applies to the process runtime only: with "docker" it is an
    error, with "auto" it is ignored when Docker is picked.
    """
    del node_address
    if kind not in RUNTIME_KINDS:
        raise ConfigError(f"runtime {kind!r}: expected one of {', '.join(RUNTIME_KINDS)}")
    explicit = kind
    if kind == "auto":
        available = await asyncio.to_thread(docker_available, base_url=docker_url)
        kind = "docker" if available else "process"
    if kind == "docker":
        from gitkube.errors import RuntimeErrorBase
        from gitkube.nodes.runtime.docker import DockerRuntime

        if run_as and explicit == "docker":
            raise ConfigError("--run-as applies to the process runtime only")
        try:
            return await asyncio.to_thread(
                DockerRuntime.connect,
                node_name=node_name,
                base_url=docker_url,
                sandbox_image=sandbox_image,
                pull_timeout=pull_timeout,
                pods_dir=(state_dir / "pods") if state_dir is not None else None,
            )
        except RuntimeErrorBase as exc:
            raise ConfigError(f"--runtime docker: {exc}") from exc
    return ProcessRuntime(
        node_name=node_name,
        state_dir=state_dir or default_state_dir(node_name),
        run_as=run_as,
    )
