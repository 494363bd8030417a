"""`gitkube proxy`: run the service proxy alone (agents and `gitkube run` host it too)."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from typing import Annotated

import typer

from gitkube.cli.app import StoreOpt, app, resolve_store, run_async
from gitkube.errors import ConfigError


@app.command("proxy")
def proxy_command(
    store: StoreOpt = "",
    address: Annotated[
        str,
        typer.Option(
            "--address", "-a", help="Address to listen on for Service ports and nodePorts."
        ),
    ] = "127.0.0.1",
    node: Annotated[
        str,
        typer.Option("--node", help="Node name under which problems are reported."),
    ] = "",
    connect_timeout: Annotated[
        float,
        typer.Option("--connect-timeout", help="Seconds to wait for an endpoint to accept."),
    ] = 5.0,
    resync: Annotated[
        float, typer.Option("--resync", help="Seconds between full passes (besides events).")
    ] = 10.0,
) -> None:
    """Listen on every Service port and forward connections to ready endpoints."""
    from gitkube.services.proxy import install_uvloop

    if connect_timeout <= 0 or resync <= 0:
        raise typer.BadParameter("--connect-timeout and --resync must be positive")
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    install_uvloop()
    run_async(
        lambda: _serve(
            resolve_store(store),
            address=address,
            node=node or socket.gethostname(),
            connect_timeout=connect_timeout,
            resync=resync,
        )
    )


async def _serve(
    url: str, *, address: str, node: str, connect_timeout: float, resync: float
) -> None:
    from gitkube.services.proxy import ServiceProxy
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    try:
        socket.getaddrinfo(address, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        raise ConfigError(f"--address {address!r} is not an IP address") from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    store = await open_store(url)
    try:
        proxy = ServiceProxy(
            ObjectStore(store),
            address=address,
            node_name=node,
            connect_timeout=connect_timeout,
            resync_seconds=resync,
        )
        logging.getLogger(__name__).info(
            "proxy on %s for node %s (store %s)", address, node, store.url
        )
        await proxy.run(stop)
    finally:
        await store.close()
