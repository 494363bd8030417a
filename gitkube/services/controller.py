"""The endpoints controller: keeps one Endpoints object per Service current.

Each pass reads Services, pods, nodes and Endpoints, computes the desired
Endpoints with ``compute_endpoints`` and writes only those that changed, each
with a compare-and-swap on the revision it read. Managed Endpoints whose
Service is gone (or lost its selector) are deleted. Endpoints written by hand
(no controller annotation) are never touched.

Passes run on every pod or Service event (``run_loop`` coalesces bursts), so
a readiness change reaches the Endpoints within one store round trip.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from gitkube.api.objects import Endpoints, Node, Pod, Service
from gitkube.errors import Conflict
from gitkube.loops import run_loop
from gitkube.services.endpoints import compute_endpoints, endpoints_differ, is_managed
from gitkube.store.base import Compare, Delete
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class EndpointsPass:
    """What one pass did, as ``namespace/name`` lists."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    #: Services whose Endpoints exist but were not written by the controller
    unmanaged: list[str] = field(default_factory=list)
    #: writes that lost a compare-and-swap (the next pass redoes them)
    conflicts: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class EndpointsController:
    """Writes the Endpoints of every Service with a selector."""

    def __init__(self, objects: ObjectStore, *, resync_seconds: float = 10.0) -> None:
        self.objects = objects
        self.resync_seconds = resync_seconds

    async def reconcile_once(self) -> EndpointsPass:
        services, _ = await self.objects.list(Service)
        pods, _ = await self.objects.list(Pod)
        nodes, _ = await self.objects.list(Node)
        existing, _ = await self.objects.list(Endpoints)
        node_map = {node.name: node for node in nodes}
        current = {(ep.namespace, ep.name): ep for ep in existing}
        pods_by_ns: dict[str, list[Pod]] = {}
        for pod in pods:
            pods_by_ns.setdefault(pod.namespace, []).append(pod)

        result = EndpointsPass()
        wanted: set[tuple[str, str]] = set()
        for service in sorted(services, key=lambda s: (s.namespace, s.name)):
            ref = f"{service.namespace}/{service.name}"
            desired = compute_endpoints(service, pods_by_ns.get(service.namespace, []), node_map)
            if desired is None:
                continue
            wanted.add((service.namespace, service.name))
            have = current.get((service.namespace, service.name))
            if have is not None and not is_managed(have):
                result.unmanaged.append(ref)
                continue
            if have is not None and not endpoints_differ(have, desired):
                continue
            try:
                await self._write(desired, have)
            except Conflict:
                result.conflicts.append(ref)
                continue
            (result.updated if have is not None else result.created).append(ref)

        for key, endpoints in sorted(current.items()):
            if key in wanted or not is_managed(endpoints):
                continue
            ref = f"{key[0]}/{key[1]}"
            revision = int(endpoints.metadata.resource_version or 0)
            outcome = await self.objects.store.txn(
                [Compare(endpoints.key, revision)], [Delete(endpoints.key)]
            )
            if outcome.succeeded:
                result.deleted.append(ref)
            else:
                result.conflicts.append(ref)

        if result.changed:
            log.info(
                "endpoints: created %s updated %s deleted %s",
                result.created,
                result.updated,
                result.deleted,
            )
        if result.conflicts:
            # run_loop retries a pass that raised, after a short back-off
            raise Conflict(f"endpoints of {', '.join(result.conflicts)} changed while writing")
        return result

    async def _write(self, desired: Endpoints, have: Endpoints | None) -> None:
        if have is None:
            await self.objects.create(desired)
            return
        desired.metadata.resource_version = have.metadata.resource_version
        compare, put = self.objects.update_ops(desired, have)
        await self.objects.apply([compare], [put])

    async def run(self, stop: asyncio.Event) -> None:
        await run_loop(
            "endpoints",
            self.reconcile_once,
            self.objects,
            resources=["pods", "services"],
            stop=stop,
            resync_seconds=self.resync_seconds,
        )
