"""`gitkube proxy`: run the service proxy alone (agents and `gitkube run` host it too).

``--proxy-mode`` chooses the data path as for agents and ``gitkube run``
(``gitkube.services.mode``, the same ``make_proxy``): ``userspace`` listens
on every Service port at ``--address``; ``nftables`` programs the kernel
(table ``ip gitkube``, cluster IPs on ``gitkube0``, nodePorts on
``--address``), left in place on stop unless ``--cleanup``; ``auto`` (the
default) is nftables when running as root and ``nft`` works, else userspace.
What follows is about the userspace mode (in nftables mode one process
programs the kernel: ``--workers`` and the relay options do not apply).

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
from typing import Annotated, Any

import typer

from gitkube.cli.app import StoreOpt, app, fail, resolve_store, run_async


@app.command("proxy")
def proxy_command(
    store: StoreOpt = "",
    address: Annotated[
        str,
        typer.Option(
            "--address",
            "-a",
            help="Address to listen on for Service ports and nodePorts (nftables mode: the "
            "node address nodePorts are served on).",
        ),
    ] = "127.0.0.1",
    proxy_mode: Annotated[
        str,
        typer.Option(
            "--proxy-mode",
            envvar="GITKUBE_PROXY_MODE",
            help="userspace, nftables (kernel, cluster IPs; root) or auto (nftables when root "
            "and nft works, else userspace).",
        ),
    ] = "auto",
    cleanup: Annotated[
        bool,
        typer.Option(
            "--cleanup",
            envvar="GITKUBE_CLEANUP",
            help="nftables mode: remove the gitkube table and interface on stop.",
        ),
    ] = False,
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
            help="Userspace mode: proxy processes sharing the ports (SO_REUSEPORT, Linux); 0 "
            "means 1 with the native relay, else one per CPU, at most 4. Services with ClientIP "
            "affinity are served by worker 0 alone.",
        ),
    ] = 0,
    relay: Annotated[
        str,
        typer.Option(
            "--relay",
            help="Userspace mode's relay: native (C threads, no Python per request), asyncio, "
            "or auto (native if it can be built here).",
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
    """Serve every Service: in the kernel (nftables) or by relaying (userspace)."""
    from gitkube.config import PROXY_MODES
    from gitkube.errors import ConfigError
    from gitkube.services import native
    from gitkube.services.nftables import choose_proxy_mode
    from gitkube.services.proxy import RELAY_MODES, install_uvloop
    from gitkube.services.workers import default_workers, shared_ports_supported

    if proxy_mode not in PROXY_MODES:
        raise typer.BadParameter(f"--proxy-mode must be one of {', '.join(PROXY_MODES)}")
    if proxy_mode == "nftables" and workers > 1:
        raise typer.BadParameter("--workers applies to the userspace mode only")
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
    try:
        chosen = choose_proxy_mode(proxy_mode)
    except ConfigError as exc:
        fail(str(exc), code=2)
    if worker_index >= 0 and chosen[0] != "userspace":  # workers exist in userspace mode only
        fail(f"worker {worker_index}: the supervisor chose userspace, this worker {chosen[0]}")
    url = resolve_store(store)
    node = node or socket.gethostname()
    _check_address(address)
    if not logging.getLogger().handlers:
        prefix = f"[worker {worker_index}] " if worker_index >= 0 else ""
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s %(levelname)s {prefix}%(message)s"
        )
    if chosen[0] == "nftables":
        if workers > 1:
            logging.getLogger(__name__).warning("proxy: nftables mode, --workers ignored")
        run_async(
            lambda: _serve(
                url,
                address=address,
                node=node,
                proxy_mode=proxy_mode,
                chosen=chosen,
                cleanup=cleanup,
            )
        )
        return
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
    if count > 1 and worker_index < 0:
        _supervise(
            count,
            [
                "--store", url, "--address", address, "--node", node, "--proxy-mode", proxy_mode,
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
            proxy_mode=proxy_mode,
            chosen=chosen,
            userspace={
                "connect_timeout": connect_timeout,
                "resync_seconds": resync,
                "worker": max(worker_index, 0),
                "workers": count,
                "relay_threads": relay_threads,
            },
            parent_fd=parent_fd,
            ready_fd=ready_fd,
            relay=relay,
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
    proxy_mode: str,
    chosen: tuple[str, str],
    cleanup: bool = False,
    userspace: dict[str, Any] | None = None,
    parent_fd: int = -1,
    ready_fd: int = -1,
    relay: str = "auto",
) -> None:
    from gitkube.services.mode import make_proxy
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
        mode, reason, run = make_proxy(
            ObjectStore(store),
            requested=proxy_mode,
            chosen=chosen,
            node_name=node,
            node_address=address,
            proxy_address=address,
            relay=relay,
            cleanup=cleanup,
            userspace=userspace,
        )
        if mode == "nftables":
            logging.getLogger(__name__).info(
                "proxy for node %s: nftables (%s), nodePorts on %s, store %s",
                node,
                reason,
                address,
                store.url,
            )
        else:
            logging.getLogger(__name__).info(
                "proxy on %s for node %s (store %s, worker %d of %d, data path %s)",
                address,
                node,
                store.url,
                (userspace or {}).get("worker", 0),
                (userspace or {}).get("workers", 1),
                run.proxy.data_path,  # type: ignore[attr-defined]
            )
        if ready_fd >= 0:  # tell the supervisor this worker serves
            os.write(ready_fd, b"r")
            os.close(ready_fd)
        await run(stop)
    finally:
        await store.close()
