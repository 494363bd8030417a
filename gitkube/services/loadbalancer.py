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
from gitkube.errors import Conflict
from gitkube.loops import run_loop
from gitkube.services.endpoints import compute_load_balancer_ingress
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class LoadBalancerPass:
    #: ``namespace/name`` of the Services whose status was written
    written: list[str] = field(default_factory=list)
    #: writes that lost a compare-and-swap (the next pass redoes them)
    conflicts: list[str] = field(default_factory=list)


class LoadBalancerStatusController:
    def __init__(self, objects: ObjectStore, *, resync_seconds: float = 10.0) -> None:
        self.objects = objects
        self.resync_seconds = resync_seconds

    async def reconcile_once(self) -> LoadBalancerPass:
        services, _ = await self.objects.list(Service)
        nodes, _ = await self.objects.list(Node)
        result = LoadBalancerPass()
        for service in sorted(services, key=lambda s: (s.namespace, s.name)):
            ingress = compute_load_balancer_ingress(service, nodes)
            if ingress == service.status.load_balancer.ingress:
                continue
            ref = f"{service.namespace}/{service.name}"
            updated = service.copy()
            updated.status.load_balancer.ingress = ingress
            compare, put = self.objects.update_ops(updated, service)
            try:
                await self.objects.apply([compare], [put])
            except Conflict:
                result.conflicts.append(ref)
                continue
            result.written.append(ref)
        if result.written:
            log.info("load balancer status: %s", ", ".join(result.written))
        if result.conflicts:
            raise Conflict(f"{', '.join(result.conflicts)} changed while writing")
        return result

    async def run(self, stop: asyncio.Event) -> None:
        await run_loop(
            "load-balancers",
            self.reconcile_once,
            self.objects,
            resources=["services", "nodes"],
            stop=stop,
            resync_seconds=self.resync_seconds,
        )
