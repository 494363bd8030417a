"""Which data path a node's Services take, and the task that runs it.

``--proxy-mode``:

- ``userspace``: ``gitkube.services.proxy.ServiceProxy`` listens on every
  Service port at the proxy address and relays (works anywhere, no root);
- ``nftables``: ``gitkube.services.nftables.NftablesProxier`` programs the
  kernel: cluster IPs, DNAT to the endpoints (root and ``nft`` needed);
- ``auto`` (the default): nftables when running as root and ``nft`` works,
  else userspace.

The choice and its reason are logged and recorded in the store under
``PROXY_MODE_PREFIX + node`` for ``gitkube doctor``. ``make_proxy`` is the
one way a proxy is built: for agents and ``gitkube run`` (through
``gitkube.agent_factory.build_proxy``) and for ``gitkube proxy``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gitkube.api.keys import SYSTEM
from gitkube.control import Cache
from gitkube.errors import GitkubeError
from gitkube.services.nftables import NftablesProxier, choose_proxy_mode
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: the data path each node's proxy uses, as JSON {mode, reason, requested, time}
PROXY_MODE_PREFIX = SYSTEM + "proxymode/"

Task = Callable[[asyncio.Event], Coroutine[Any, Any, object]]


def make_proxy(
    objects: ObjectStore,
    *,
    requested: str,
    node_name: str,
    node_address: str,
    proxy_address: str,
    relay: str,
    cleanup: bool = False,
    cache: Cache | None = None,
    chosen: tuple[str, str] | None = None,
    userspace: Mapping[str, Any] | None = None,
) -> tuple[str, str, Task]:
    """``(mode, reason, run)``; a ``ConfigError`` when ``nftables`` is asked
    for and cannot be had. ``chosen``: ``choose_proxy_mode(requested)`` when
    the caller has already made the choice; ``userspace``: more keyword
    arguments of ``ServiceProxy`` (``gitkube proxy``'s workers, timeouts)."""
    mode, reason = chosen if chosen is not None else choose_proxy_mode(requested)
    log.info("service proxy for %s: %s (%s)", node_name, mode, reason)
    if mode == "nftables":
        proxier = NftablesProxier(
            objects, node_addresses=[node_address], cache=cache, cleanup=cleanup
        )
        serving: object = proxier
        inner: Task = proxier.run
    else:
        from gitkube.services.proxy import ServiceProxy

        relaying = ServiceProxy(
            objects,
            address=proxy_address,
            node_name=node_name,
            relay=relay,
            cache=cache,
            **(userspace or {}),
        )
        serving = relaying
        inner = relaying.run

    async def run(stop: asyncio.Event) -> object:
        record = {"mode": mode, "reason": reason, "requested": requested, "time": time.time()}
        try:
            await objects.store.put(PROXY_MODE_PREFIX + node_name, json.dumps(record).encode())
        except GitkubeError as exc:
            log.warning("could not record the proxy mode: %s", exc)
        return await inner(stop)

    run.proxy = serving  # type: ignore[attr-defined]  # what runs: for tests and doctor
    return mode, reason, run
