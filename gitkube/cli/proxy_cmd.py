"""`gitkube proxy`: run the service proxy alone (agents and `gitkube run` host it too).

The bytes are copied by the native relay (C threads, one per CPU; see
``gitkube.services.native``) when it can be built here, else by the asyncio
relay on uvloop (``--relay`` chooses). With the native relay one process
uses every CPU, so ``--workers`` defaults to 1. With the asyncio relay it
defaults to one per CPU, at most 4 (``default_workers``): the command is then
a supervisor of N worker processes (``gitkube proxy --worker-index i``,
hidden options), each a full proxy sharing the Service ports with
SO_REUSEPORT; see ``gitkube.services.workers``. ``--workers 1`` runs the
proxy in this process, as agents and ``gitkube run`` do.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
from typing import Annotated

import typer

from gitkube.cli.app import StoreOpt, app, fail, resolve_store, run_async


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
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            "-w",
            help="Proxy processes sharing the ports (SO_REUSEPORT, Linux); 0 means 1 with the "
            "native relay, else one per CPU, at most 4. Services with ClientIP affinity are "
            "served by worker 0 alone.",
        ),
    ] = 0,
    relay: Annotated[
        str,
        typer.Option(
            "--relay",
            help="Data path: native (C threads, no Python per request), asyncio, or auto "
            "(native if it can be built here).",
        ),
    ] = "auto",
    relay_threads: Annotated[
        int,
        typer.Option(
            "--relay-threads", help="Native relay threads per process; 0 means one per CPU."
        ),
    ] = 0,
    worker_index: Annotated[int, typer.Option("--worker-index", hidden=True)] = -1,
    parent_fd: Annotated[int, typer.Option("--parent-fd", hidden=True)] = -1,
    ready_fd: Annotated[int, typer.Option("--ready-fd", hidden=True)] = -1,
) -> None:
    """Listen on every Service port and forward connections to ready endpoints."""
    from gitkube.services import native
    from gitkube.services.proxy import RELAY_MODES, install_uvloop
    from gitkube.services.workers import default_workers, shared_ports_supported

    if connect_timeout <= 0 or resync <= 0:
        raise typer.BadParameter("--connect-timeout and --resync must be positive")
    if workers < 0:
        raise typer.BadParameter("--workers must be 0 (the default) or more")
    if relay_threads < 0:
        raise typer.BadParameter("--relay-threads must be 0 (one per CPU) or more")
    if relay not in RELAY_MODES:
        raise typer.BadParameter(f"--relay must be one of {', '.join(RELAY_MODES)}")
    if workers > 1 and not shared_ports_supported():
        raise typer.BadParameter("--workers above 1 needs Linux (SO_REUSEPORT)")
    if relay != "asyncio" and worker_index < 0:
        try:
            native.build()  # once, before any worker starts; cached afterwards
        except native.NativeUnavailable as exc:
            if relay == "native":
                fail(str(exc))
            relay = "asyncio"
            logging.getLogger(__name__).warning("proxy: using the asyncio relay: %s", exc)
    count = workers or (1 if relay != "asyncio" else default_workers())
    if worker_index >= count:
        raise typer.BadParameter("--worker-index must be below --workers")
    url = resolve_store(store)
    node = node or socket.gethostname()
    _check_address(address)
    if not logging.getLogger().handlers:
        prefix = f"[worker {worker_index}] " if worker_index >= 0 else ""
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s %(levelname)s {prefix}%(message)s"
        )
    if count > 1 and worker_index < 0:
        _supervise(
            count,
            [
                "--store", url, "--address", address, "--node", node,
                "--connect-timeout", str(connect_timeout), "--resync", str(resync),
                "--relay", relay, "--relay-threads", str(relay_threads),
            ],
        )  # fmt: skip
        return
    install_uvloop()
    run_async(
        lambda: _serve(
            url,
            address=address,
            node=node,
            connect_timeout=connect_timeout,
            resync=resync,
            worker=max(worker_index, 0),
            workers=count,
            parent_fd=parent_fd,
            ready_fd=ready_fd,
            relay=relay,
            relay_threads=relay_threads,
        )
    )


def _check_address(address: str) -> None:
    try:
        socket.getaddrinfo(address, None, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        fail(f"--address {address!r} is not an IP address")


def _supervise(count: int, options: list[str]) -> None:
    from gitkube.services.workers import Supervisor

    def command(index: int, parent_fd: int, ready_fd: int) -> list[str]:
        return [
            sys.executable, "-m", "gitkube", "proxy", *options,
            "--workers", str(count), "--worker-index", str(index),
            "--parent-fd", str(parent_fd), "--ready-fd", str(ready_fd),
        ]  # fmt: skip

    logging.getLogger(__name__).info("proxy: %d workers", count)
    status = Supervisor(command, count).run()
    if status:
        raise typer.Exit(status)


async def _serve(
    url: str,
    *,
    address: str,
    node: str,
    connect_timeout: float,
    resync: float,
    worker: int = 0,
    workers: int = 1,
    parent_fd: int = -1,
    ready_fd: int = -1,
    relay: str = "auto",
    relay_threads: int = 0,
) -> None:
    from gitkube.services.proxy import ServiceProxy
    from gitkube.services.workers import set_parent_death_signal, watch_parent
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if parent_fd >= 0:
        set_parent_death_signal(signal.SIGTERM)
        watch_parent(loop, parent_fd, stop)  # also covers a parent gone before this
    store = await open_store(url)
    try:
        proxy = ServiceProxy(
            ObjectStore(store),
            address=address,
            node_name=node,
            connect_timeout=connect_timeout,
            resync_seconds=resync,
            worker=worker,
            workers=workers,
            relay=relay,
            relay_threads=relay_threads,
        )
        logging.getLogger(__name__).info(
            "proxy on %s for node %s (store %s, worker %d of %d, data path %s)",
            address,
            node,
            store.url,
            worker,
            workers,
            proxy.data_path,
        )
        if ready_fd >= 0:  # tell the supervisor this worker serves
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        await proxy.run(stop)
    finally:
        await store.close()
