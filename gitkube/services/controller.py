"""The endpoints controller: keeps one Endpoints object per Service current.

Each Service is its own key (``namespace/name``) on the control kit. A
Service's own changes, its Endpoints' changes, and the changes of pods in its
namespace whose labels (before or after) match its selector queue its key;
a node whose addresses change queues the Services of the pods on it. The
reconcile reads the shared cache, computes the desired Endpoints with
``compute_endpoints`` and writes them only when they changed, through the
applier (a compare-and-swap on the revision read; fenced when the process is
a master). Managed Endpoints whose Service is gone (or lost its selector)
are deleted. Endpoints written by hand (no controller annotation) are never
touched. A write that lost a compare-and-swap backs off that Service alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from gitkube.api.labels import selector_matches
from gitkube.api.objects import Endpoints, Node, Pod, Service
from gitkube.control import (
    Applier,
    Cache,
    CacheEvent,
    Controller,
    Result,
    Retry,
    create,
    delete,
    own_key,
    ref,
    split_ref,
    update,
)
from gitkube.errors import Conflict
from gitkube.services.endpoints import compute_endpoints, endpoints_differ, is_managed
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
    #: writes that lost a compare-and-swap (redone after a back-off)
    conflicts: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.updated or self.deleted)


class _Nodes(Mapping[str, Node]):
    """The cache's nodes by name, looked up one at a time."""

    def __init__(self, cache: Cache) -> None:
        self.cache = cache

    def __getitem__(self, name: str) -> Node:
        node = self.cache.get(Node, "", name)
        if node is None:
            raise KeyError(name)
        return node

    def __iter__(self) -> Iterator[str]:
        return (n.name for n in self.cache.list(Node))

    def __len__(self) -> int:
        return len(self.cache.list(Node))

    def __bool__(self) -> bool:
        return True


class EndpointsController:
    """Writes the Endpoints of every Service with a selector."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        resync_seconds: float | None = None,
    ) -> None:
        self.objects = objects
        self.cache = cache if cache is not None else Cache(objects.store)
        self.applier = applier if applier is not None else Applier(objects)
        #: replay every cached object as a change this often (None: events only)
        self.resync_seconds = resync_seconds
        self.last_pass = EndpointsPass()

    # ------------------------------------------------------------ keys

    def keys_of(self, event: CacheEvent) -> list[str]:
        """The Service keys a cache event touches."""
        if event.resource in ("services", "endpoints"):
            return own_key(event)
        if event.resource == "nodes":
            old, new = event.old, event.new
            if (
                isinstance(old, Node)
                and isinstance(new, Node)
                and old.status.addresses == new.status.addresses
            ):
                return []
            name = event.obj.name if event.obj is not None else ""
            keys = {k for pod in self.cache.pods_on(name) for k in self._services_of(pod)}
            return sorted(keys)
        keys = set()
        for pod in (event.old, event.new):
            if isinstance(pod, Pod):
                keys.update(self._services_of(pod))
        return sorted(keys)

    def _services_of(self, pod: Pod) -> list[str]:
        return [
            ref(s.namespace, s.name)
            for s in self.cache.list(Service, pod.namespace)
            if s.spec.selector and selector_matches(s.spec.selector, pod.metadata.labels)
        ]

    def all_keys(self) -> list[str]:
        keys = {ref(s.namespace, s.name) for s in self.cache.list(Service)}
        keys.update(ref(e.namespace, e.name) for e in self.cache.list(Endpoints) if is_managed(e))
        return sorted(keys)

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> EndpointsPass:
        """Catch the cache up and reconcile every Service once (what a test calls)."""
        await self.cache.sync()
        result = EndpointsPass()
        for key in self.all_keys():
            with contextlib.suppress(Retry):  # noted in result.conflicts
                await self._reconcile(key, result)
        self.last_pass = result
        if result.changed:
            log.info(
                "endpoints: created %s updated %s deleted %s",
                result.created,
                result.updated,
                result.deleted,
            )
        if result.conflicts:
            raise Conflict(f"endpoints of {', '.join(result.conflicts)} changed while writing")
        return result

    async def reconcile(self, key: str) -> Result | None:
        self.last_pass = result = EndpointsPass()
        await self._reconcile(key, result)
        if result.changed:
            log.info(
                "endpoints %s: %s",
                key,
                "created" if result.created else "updated" if result.updated else "deleted",
            )
        return None

    async def _reconcile(self, key: str, result: EndpointsPass) -> None:
        namespace, name = split_ref(key)
        service = self.cache.get(Service, namespace, name)
        have = self.cache.get(Endpoints, namespace, name)
        desired = None
        if service is not None:
            pods = self.cache.select(Pod, namespace, service.spec.selector or {})
            desired = compute_endpoints(service, pods, _Nodes(self.cache))
        if desired is None:
            if have is None or not is_managed(have):
                return
            done = await self.applier.apply([delete(have)])
            if done.applied or done.gone:
                result.deleted.append(key)
        elif have is not None and not is_managed(have):
            result.unmanaged.append(key)
            return
        elif have is not None and not endpoints_differ(have, desired):
            return
        else:
            if have is None:
                write = create(desired)
            else:
                desired.metadata.resource_version = have.metadata.resource_version
                write = update(desired, have)
            done = await self.applier.apply([write])
            if done.applied:
                (result.updated if have is not None else result.created).append(key)
        if done.conflicts:
            result.conflicts.append(key)
            raise Retry(f"the endpoints of {key} changed while writing")
        if done.revision:
            await self.cache.wait_for_revision(done.revision)

    def controller(self) -> Controller:
        watched = ("services", "endpoints", "pods", "nodes")
        return Controller(
            "endpoints",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(watched, self.keys_of),
            resync_seconds=self.resync_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
