"""Container runtimes: ``DockerRuntime``, ``ProcessRuntime`` and the factory.

``make_runtime("auto", ...)`` picks Docker when an engine answers a ping and
the process runtime otherwise. The docker SDK is imported only when Docker is
used, and ``shim.py`` never imports this package.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gitkube.errors import ConfigError
from gitkube.nodes.runtime.base import (
    ContainerStartError,
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
    """True when a Docker engine answers a ping within ``timeout`` seconds."""
    try:
        import docker
        import docker.errors
    except ImportError:
        return False
    try:
        if base_url:
            client = docker.DockerClient(base_url=base_url, timeout=max(1, int(timeout)))
        else:
            client = docker.from_env(timeout=max(1, int(timeout)))
    except docker.errors.DockerException:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


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
    ``run_as`` applies to the process runtime only.
    """
    del node_address
    if kind not in RUNTIME_KINDS:
        raise ConfigError(f"runtime {kind!r}: expected one of {', '.join(RUNTIME_KINDS)}")
    if kind == "auto":
        available = await asyncio.to_thread(docker_available, base_url=docker_url)
        kind = "docker" if available else "process"
    if kind == "docker":
        from gitkube.errors import RuntimeErrorBase
        from gitkube.nodes.runtime.docker import DockerRuntime

        if run_as:
            raise ConfigError("--run-as applies to the process runtime only")
        try:
            return await asyncio.to_thread(
                DockerRuntime.connect,
                node_name=node_name,
                base_url=docker_url,
                sandbox_image=sandbox_image,
                pull_timeout=pull_timeout,
            )
        except RuntimeErrorBase as exc:
            raise ConfigError(f"--runtime docker: {exc}") from exc
    return ProcessRuntime(
        node_name=node_name,
        state_dir=state_dir or default_state_dir(node_name),
        run_as=run_as,
    )
