"""The node lifecycle controller: Ready conditions from heartbeats, and evictions.

One key (``"nodes"``) on the control kit: reconciled every
``monitor_period_seconds`` (Kubernetes' node-monitor-period, 5 s) and on
every node event. It reads the nodes, the heartbeat keys (their
``mod_revision`` only; the shared cache keeps them as raw keys) and the
pods from the shared cache, plans with ``plan_node_lifecycle`` on this
controller's monotonic clock, and writes through the applier (guarded, and
fenced when the process is a master):

- the nodes whose Ready condition changes, guarded on their revision;
- evictions: deletes of the pods of nodes not ready for the eviction
  timeout and admitted by the per-zone eviction rate limiter, guarded on
  each pod's revision.

The memory of when each heartbeat last moved lives in this object: a
restarted controller starts the grace period afresh, as Kubernetes' does.
A lost compare-and-swap is left to the next pass.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.keys import HEARTBEAT_PREFIX
from gitkube.api.objects import Node, Pod
from gitkube.control import Applier, Cache, Controller, Result, constant_key, delete, update
from gitkube.planner.nodelifecycle import (
    DEFAULT_EVICTION_RATE,
    DEFAULT_EVICTION_TIMEOUT_SECONDS,
    DEFAULT_GRACE_PERIOD_SECONDS,
    DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD,
    DEFAULT_SECONDARY_EVICTION_RATE,
    DEFAULT_UNHEALTHY_ZONE_THRESHOLD,
    EvictionLimiter,
    NodeHealth,
    NodeLifecycleSettings,
    plan_node_lifecycle,
)
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)


@dataclass
class NodeLifecycleControllerSettings:
    grace_period_seconds: float = DEFAULT_GRACE_PERIOD_SECONDS
    eviction_timeout_seconds: float = DEFAULT_EVICTION_TIMEOUT_SECONDS
    #: how often heartbeats are looked at (a heartbeat alone wakes nothing)
    monitor_period_seconds: float = 5.0
    evict_when_all_nodes_down: bool = False
    eviction_rate: float = DEFAULT_EVICTION_RATE
    secondary_eviction_rate: float = DEFAULT_SECONDARY_EVICTION_RATE
    unhealthy_zone_threshold: float = DEFAULT_UNHEALTHY_ZONE_THRESHOLD
    large_cluster_size_threshold: int = DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD


@dataclass
class NodeLifecyclePass:
    ready: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    #: nodes whose Ready condition was written
    updated: list[str] = field(default_factory=list)
    #: evicted pod keys
    evicted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)


#: the one key the controller reconciles
NODES = "nodes"


class NodeLifecycleController:
    def __init__(
        self,
        objects: ObjectStore,
        settings: NodeLifecycleControllerSettings | None = None,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.settings = settings or NodeLifecycleControllerSettings()
        self.cache = cache if cache is not None else Cache(objects.store)
        if not any(HEARTBEAT_PREFIX.startswith(p) for p in self.cache.raw_prefixes):
            raise ValueError(f"the cache must keep the raw keys under {HEARTBEAT_PREFIX}")
        self.applier = applier if applier is not None else Applier(objects)
        self.clock = clock
        self.health: dict[str, NodeHealth] = {}
        self.limiter = EvictionLimiter()
        self.core_settings = NodeLifecycleSettings(
            grace_period_seconds=self.settings.grace_period_seconds,
            eviction_timeout_seconds=self.settings.eviction_timeout_seconds,
            evict_when_all_nodes_down=self.settings.evict_when_all_nodes_down,
            eviction_rate=self.settings.eviction_rate,
            secondary_eviction_rate=self.settings.secondary_eviction_rate,
            unhealthy_zone_threshold=self.settings.unhealthy_zone_threshold,
            large_cluster_size_threshold=self.settings.large_cluster_size_threshold,
        )
        self.last_pass = NodeLifecyclePass()

    def heartbeats(self) -> dict[str, int]:
        """Node name -> mod_revision of its heartbeat key (from the cache)."""
        return {
            key[len(HEARTBEAT_PREFIX) :]: kv.mod_revision
            for key, kv in self.cache.raw(HEARTBEAT_PREFIX).items()
        }

    async def reconcile_once(self) -> NodeLifecyclePass:
        """Catch the cache up with the store and run one pass."""
        await self.cache.sync()
        await self.reconcile(NODES)
        return self.last_pass

    async def reconcile(self, key: str = NODES) -> Result | None:
        nodes = self.cache.list(Node)
        plan = plan_node_lifecycle(
            nodes,
            self.heartbeats(),
            self.cache.list(Pod),
            self.health,
            now=self.clock(),
            timestamp=now_iso(),
            settings=self.core_settings,
            limiter=self.limiter,
        )
        self.health = plan.health
        self.limiter = plan.limiter
        result = NodeLifecyclePass(ready=plan.ready, not_ready=plan.not_ready)
        self.last_pass = result
        previous = {n.name: n for n in nodes}
        done = await self.applier.apply(
            [update(node, previous[node.name]) for node in plan.node_updates]
        )
        for write in done.applied:
            result.updated.append(write.obj.name)
            cond = write.obj.status.condition("Ready")  # type: ignore[attr-defined]
            log.info(
                "node %s: Ready=%s (%s)",
                write.obj.name,
                cond.status if cond else "?",
                cond.message if cond else "",
            )
        result.conflicts.extend(w.key for w in done.conflicts)
        evicted = await self.applier.apply([delete(e.pod) for e in plan.evictions])
        result.evicted.extend(w.key for w in evicted.applied)
        result.conflicts.extend(w.key for w in (*evicted.conflicts, *evicted.gone))
        if result.evicted:
            log.warning(
                "evicted %d pods from not-ready nodes %s",
                len(result.evicted),
                sorted({e.node for e in plan.evictions}),
            )
        revision = max(done.revision, evicted.revision)
        if revision:
            await self.cache.wait_for_revision(revision)
        return Result(requeue_after=self.settings.monitor_period_seconds)

    def controller(self) -> Controller:
        return Controller(
            "nodelifecycle",
            self.reconcile,
            self.cache,
            watches={"nodes": constant_key(NODES)},
            initial_keys=[NODES],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
