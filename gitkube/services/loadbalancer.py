"""The LoadBalancer status controller: writes ``status.loadBalancer.ingress``
of every Service of type LoadBalancer.

gitkube serves a LoadBalancer Service as k3s's ServiceLB does: the service
proxy of every agent listens on its port (and nodePort), so the addresses a
client can use are the agents' proxy addresses, which each agent publishes
on its Node (``gitkube.io/proxy-address``). A pass reads Services and Nodes
from the shared cache (``gitkube.control``; it never lists the store),
computes the ingress with ``compute_load_balancer_ingress`` (pure), and
writes only the Services whose ingress changed through the applier, each
with a compare-and-swap on the revision read (and the leader's fence in a
master); a Service that stops being a LoadBalancer has its ingress cleared.
On the control kit a pass is one key, queued by every Service and Node change.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gitkube.api.objects import Node, Service
from gitkube.control import Applier, Cache, Controller, Result, constant_key, update
from gitkube.errors import Conflict
from gitkube.services.endpoints import compute_load_balancer_ingress
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class LoadBalancerPass:
    #: ``namespace/name`` of the Services whose status was written
    written: list[str] = field(default_factory=list)
    #: writes that lost a compare-and-swap (the next pass redoes them)
    conflicts: list[str] = field(default_factory=list)


#: the controller's one reconcile key: a pass covers every Service
ALL = "all"


class LoadBalancerStatusController:
    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
    ) -> None:
        self.objects = objects
        #: the process's shared cache (its own when none is given)
        self.cache = cache if cache is not None else Cache(objects.store)
        self.applier = applier if applier is not None else Applier(objects)

    async def reconcile_once(self) -> LoadBalancerPass:
        """Catch the cache up with the store, then one pass (what a test calls)."""
        await self.cache.sync()
        return await self._sync()

    async def reconcile(self, key: str) -> Result | None:
        await self._sync()
        return None

    async def _sync(self) -> LoadBalancerPass:
        nodes = self.cache.list(Node)
        writes = []
        for service in self.cache.list(Service):
            ingress = compute_load_balancer_ingress(service, nodes)
            if ingress == service.status.load_balancer.ingress:
                continue
            updated = service.copy()
            updated.status.load_balancer.ingress = ingress
            writes.append(update(updated, service))
        done = await self.applier.apply(writes)
        result = LoadBalancerPass(
            written=[f"{w.obj.namespace}/{w.obj.name}" for w in done.applied],
            conflicts=[f"{w.obj.namespace}/{w.obj.name}" for w in done.conflicts],
        )
        if done.revision:
            await self.cache.wait_for_revision(done.revision)
        if result.written:
            log.info("load balancer status: %s", ", ".join(result.written))
        if result.conflicts:
            raise Conflict(f"{', '.join(result.conflicts)} changed while writing")
        return result

    def controller(self) -> Controller:
        return Controller(
            "load-balancers",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(("services", "nodes"), constant_key(ALL)),
            initial_keys=[ALL],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
