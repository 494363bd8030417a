"""The LoadBalancer status controller: writes ``status.loadBalancer.ingress``
of every Service of type LoadBalancer.

gitkube serves a LoadBalancer Service as k3s's ServiceLB does: the service
proxy of every agent listens on its port (and nodePort), so the addresses a
client can use are the agents' proxy addresses, which each agent publishes
on its Node (``gitkube.io/proxy-address``). A pass lists Services and Nodes,
computes the ingress with ``compute_load_balancer_ingress`` (pure), and
writes only the Services whose ingress changed, each with a compare-and-swap
on the revision read; a Service that stops being a LoadBalancer has its
ingress cleared. Passes run on Service and Node events.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gitkube.api.objects import Node, Service
from gitkube.control import Applier, Cache, CacheEvent, Controller, Result, Retry
from gitkube.control.applier import update
from gitkube.services.endpoints import compute_load_balancer_ingress
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: the controller's one key: every LoadBalancer Service is computed in one pass
ALL = "load-balancers"


@dataclass
class LoadBalancerPass:
    #: ``namespace/name`` of the Services whose status was written
    written: list[str] = field(default_factory=list)
    #: writes that lost a compare-and-swap (retried)
    conflicts: list[str] = field(default_factory=list)


def lb_keys(event: CacheEvent) -> list[str]:
    """Services change; Nodes change what they advertise (their proxy address)."""
    if event.resource == "nodes":
        old, new = event.old, event.new
        if (
            isinstance(old, Node)
            and isinstance(new, Node)
            and old.metadata.annotations == new.metadata.annotations
        ):
            return []
    return [ALL]


class LoadBalancerStatusController:
    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
    ) -> None:
        self.objects = objects
        self.cache = cache if cache is not None else Cache(objects.store)
        self.applier = applier if applier is not None else Applier(objects)
        self.last_pass = LoadBalancerPass()

    async def reconcile_once(self) -> LoadBalancerPass:
        """Catch the cache up with the store and run one pass (tests)."""
        await self.cache.sync()
        await self.reconcile(ALL)
        return self.last_pass

    async def reconcile(self, key: str = ALL) -> Result | None:
        services = self.cache.list(Service)
        nodes = self.cache.list(Node)
        result = self.last_pass = LoadBalancerPass()
        writes = []
        for service in sorted(services, key=lambda s: (s.namespace, s.name)):
            ingress = compute_load_balancer_ingress(service, nodes)
            if ingress == service.status.load_balancer.ingress:
                continue
            updated = service.copy()
            updated.status.load_balancer.ingress = ingress
            writes.append(update(updated, service))
        done = await self.applier.apply(writes)
        result.written = [f"{w.obj.namespace}/{w.obj.name}" for w in done.applied]
        result.conflicts = [f"{w.obj.namespace}/{w.obj.name}" for w in done.conflicts]
        if result.written:
            log.info("load balancer status: %s", ", ".join(result.written))
        if done.revision:
            await self.cache.wait_for_revision(done.revision)
        if result.conflicts:
            raise Retry(f"{', '.join(result.conflicts)} changed while writing")
        return None

    def controller(self) -> Controller:
        return Controller(
            "load-balancers",
            self.reconcile,
            self.cache,
            watches={"services": lb_keys, "nodes": lb_keys},
            initial_keys=[ALL],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
