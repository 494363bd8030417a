"""`gitkube agent`: the kubelet of one node (and its service proxy).

Registers the node, heartbeats, runs the pods bound to it through the
runtime until SIGTERM or Ctrl-C. Stopping the agent leaves its pods running;
an agent started again on the same node adopts them.

Settings come from flags, ``GITKUBE_*`` variables or ``--config`` (see
``gitkube.config``); every flag has its ``GITKUBE_*`` variable and config-file key.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Annotated, Any

import typer

from gitkube.agent_factory import AgentOptions, build_agent, build_proxy
from gitkube.cli.app import app, err_console, run_async
from gitkube.config import Settings, resolve_settings
from gitkube.errors import ConfigError

log = logging.getLogger("gitkube.agent")


@app.command("agent")
def agent_command(
    node: Annotated[
        str | None, typer.Option("--node", help="node name (default: the host name)")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", "-s", help="sqlite:///path/state.db or etcd://host:2379[,…]"),
    ] = None,
    runtime: Annotated[
        str | None,
        typer.Option("--runtime", help="docker, process, or auto (docker if an engine answers)"),
    ] = None,
    address: Annotated[
        str | None,
        typer.Option("--address", help="node address: pods' host ports are published there"),
    ] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="node labels k=v,k2=v2")] = None,
    cpu: Annotated[
        str | None, typer.Option("--cpu", help="CPU capacity, e.g. 4 or 3500m (default: host)")
    ] = None,
    memory: Annotated[
        str | None, typer.Option("--memory", help="memory capacity, e.g. 8Gi (default: host)")
    ] = None,
    max_pods: Annotated[
        int | None, typer.Option("--max-pods", help="pods this node accepts (110)")
    ] = None,
    state_dir: Annotated[
        str | None,
        typer.Option("--state-dir", help="where the process runtime keeps its state and logs"),
    ] = None,
    run_as: Annotated[
        str | None,
        typer.Option("--run-as", help="user the process runtime runs containers as"),
    ] = None,
    proxy: Annotated[
        bool | None,
        typer.Option("--proxy/--no-proxy", help="run the service proxy in the agent (on)"),
    ] = None,
    proxy_address: Annotated[
        str | None, typer.Option("--proxy-address", help="where the service proxy listens")
    ] = None,
    proxy_relay: Annotated[
        str | None,
        typer.Option(
            "--proxy-relay", help="proxy data path: auto, native (C threads), asyncio (auto)"
        ),
    ] = None,
    node_grace: Annotated[
        str | None,
        typer.Option(
            "--node-grace",
            help="heartbeat lapse before the node is NotReady; the lease TTL is a third of it",
        ),
    ] = None,
    backoff: Annotated[
        str | None, typer.Option("--restart-backoff", help="first restart back-off, doubles (10s)")
    ] = None,
    backoff_max: Annotated[
        str | None, typer.Option("--restart-backoff-max", help="longest restart back-off (5m)")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="settings file (YAML, keys as flag names)")
    ] = None,
) -> None:
    """Run this node's pods: register, heartbeat, start/stop/restart containers, probe."""
    flags: dict[str, Any] = {
        "node": node,
        "store": store,
        "runtime": runtime,
        "address": address,
        "labels": labels,
        "state_dir": state_dir,
        "run_as": run_as,
        "proxy_address": proxy_address,
        "proxy_relay": proxy_relay,
        "node_grace": node_grace,
        "cpu": cpu,
        "memory": memory,
        "max_pods": max_pods,
        "proxy": proxy,
        "restart_backoff": backoff,
        "restart_backoff_max": backoff_max,
    }
    try:
        settings, _ = resolve_settings(flags, config_file=config)
        options = AgentOptions.from_settings(settings)
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if settings.verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(message)s",
        )
    run_async(lambda: _run_agent(settings, options))


async def _run_agent(settings: Settings, options: AgentOptions) -> None:
    from gitkube.control import Cache
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="agent"))
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    node_name = settings.node or socket.gethostname()
    store = await open_store(settings.store_url())
    # one cache for the agent and its proxy, fed by one watch
    cache = Cache(store)
    try:
        objects = ObjectStore(store)
        agent, runtime = await build_agent(options, objects, node_name=node_name, cache=cache)
    except BaseException:
        await store.close()
        raise
    cache_task = asyncio.create_task(cache.run(stop), name="cache")
    try:
        if options.proxy:
            proxy = build_proxy(options, objects, node_name=node_name, cache=cache)
            agent.add_task("proxy", proxy.run)
        log.info(
            "agent for node %s: runtime %s, address %s, store %s",
            node_name,
            runtime.name,
            options.address,
            store.url,
        )
        await agent.run(stop)
        log.info("agent for node %s stopped; its pods keep running", node_name)
    finally:
        cache_task.cancel()
        await asyncio.gather(cache_task, return_exceptions=True)
        await runtime.close()
        await store.close()
