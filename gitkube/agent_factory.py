"""How a node's agent is built from the settings: the one way, for both
`gitkube agent` (one node, the host's name) and `gitkube run` (N local nodes).

``AgentOptions.from_settings`` checks what the settings say about a node
(runtime, address, labels, cpu, memory, max-pods, restart back-off, heartbeat,
proxy) and fails with a ``ConfigError`` naming the setting; ``build_agent``
makes the runtime and the agent of one node from them, and ``build_proxy``
the service proxy that runs beside it. Wiring only: components never import
this module.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gitkube.config import Settings, parse_duration
from gitkube.errors import ConfigError
from gitkube.nodes.backoff import BackoffSettings

if TYPE_CHECKING:
    from gitkube.control import Cache
    from gitkube.nodes.agent import Agent
    from gitkube.nodes.runtime.base import Runtime
    from gitkube.services.proxy import ServiceProxy
    from gitkube.store.objects import ObjectStore

RUNTIMES = ("docker", "process", "auto")


@dataclass(frozen=True)
class AgentOptions:
    """What the settings say about every agent of this process, checked."""

    runtime: str = "auto"
    address: str = "127.0.0.1"
    labels: dict[str, str] = field(default_factory=dict)
    #: millicores; None: the host's
    cpu: int | None = None
    #: bytes; None: the host's
    memory: int | None = None
    max_pods: int = 110
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    #: heartbeat lease TTL: a third of the node grace period
    heartbeat_ttl: int = 15
    #: where the process runtime of node N keeps its state: ``state_dir/node-N``
    state_dir: Path = Path(".gitkube")
    run_as: str | None = None
    proxy: bool = True
    proxy_address: str = "127.0.0.1"
    proxy_relay: str = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> AgentOptions:
        """The agent settings, checked; ``ConfigError`` names the bad one."""
        from gitkube.nodes.registration import parse_cpu_flag, parse_labels, parse_memory_flag

        if settings.runtime not in RUNTIMES:
            raise ConfigError(f"--runtime {settings.runtime!r}: expected docker, process or auto")
        try:
            socket.getaddrinfo(settings.address, None, flags=socket.AI_NUMERICHOST)
        except socket.gaierror:
            raise ConfigError(f"--address {settings.address!r} is not an IP address") from None
        if settings.max_pods < 1:
            raise ConfigError("--max-pods must be at least 1")
        initial = parse_duration(settings.restart_backoff, name="--restart-backoff")
        cap = parse_duration(settings.restart_backoff_max, name="--restart-backoff-max")
        if cap < initial:
            raise ConfigError("--restart-backoff-max must not be shorter than --restart-backoff")
        grace = parse_duration(settings.node_grace, name="--node-grace")
        return cls(
            runtime=settings.runtime,
            address=settings.address,
            labels=parse_labels(settings.labels),
            cpu=parse_cpu_flag(settings.cpu) if settings.cpu else None,
            memory=parse_memory_flag(settings.memory) if settings.memory else None,
            max_pods=settings.max_pods,
            backoff=BackoffSettings(initial=initial, cap=cap),
            heartbeat_ttl=max(1, round(grace / 3)),
            state_dir=Path(settings.state_dir).expanduser().resolve(),
            run_as=settings.run_as or None,
            proxy=settings.proxy,
            proxy_address=settings.proxy_address,
            proxy_relay=settings.proxy_relay,
        )

    def node_dir(self, node_name: str) -> Path:
        return self.state_dir / f"node-{node_name}"


async def build_agent(
    options: AgentOptions,
    objects: ObjectStore,
    *,
    node_name: str,
    cache: Cache | None = None,
    advertise_proxy: bool = True,
) -> tuple[Agent, Runtime]:
    """The runtime and the agent of node ``node_name`` (reading ``cache``, the
    process's shared cache, when given); the caller closes the runtime."""
    from gitkube.nodes.agent import Agent, AgentSettings
    from gitkube.nodes.registration import NodeSettings
    from gitkube.nodes.runtime import make_runtime

    node_dir = options.node_dir(node_name)
    runtime = await make_runtime(
        options.runtime,
        node_name=node_name,
        state_dir=node_dir,
        node_address=options.address,
        run_as=options.run_as,
    )
    node = NodeSettings(
        name=node_name,
        address=options.address,
        labels=dict(options.labels),
        cpu=options.cpu,
        memory=options.memory,
        max_pods=options.max_pods,
        runtime_name=runtime.name,
        state_dir=str(node_dir) if runtime.name == "process" else "",
        # LoadBalancer Services list the proxy addresses the agents advertise
        proxy_address=options.proxy_address if options.proxy and advertise_proxy else "",
    )
    agent = Agent(
        objects,
        runtime,
        node=node,
        settings=AgentSettings(backoff=options.backoff, heartbeat_ttl=options.heartbeat_ttl),
        cache=cache,
    )
    return agent, runtime


def build_proxy(
    options: AgentOptions,
    objects: ObjectStore,
    *,
    node_name: str,
    cache: Cache | None = None,
    advertise_proxy: bool = True,
) -> ServiceProxy:
    """The service proxy that runs beside the agent of ``node_name``."""
    from gitkube.services.proxy import ServiceProxy

    return ServiceProxy(
        objects,
        address=options.proxy_address,
        node_name=node_name,
        relay=options.proxy_relay,
        cache=cache,
    )
