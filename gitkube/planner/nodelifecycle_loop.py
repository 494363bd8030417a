"""The node lifecycle controller: Ready conditions from heartbeats, and evictions.

Every ``monitor_period_seconds`` (Kubernetes' node-monitor-period, 5 s) and
on every node event, a pass reads the nodes, the heartbeat keys (their
``mod_revision`` only) and the pods, plans with ``plan_node_lifecycle`` on
this controller's monotonic clock, and writes:

- the nodes whose Ready condition changes, guarded on their revision;
- evictions: deletes of the pods of nodes not ready for the eviction
  timeout and admitted by the per-zone eviction rate limiter, guarded on
  each pod's revision.

The memory of when each heartbeat last moved lives in this object: a
restarted controller starts the grace period afresh, as Kubernetes' does.
A lost compare-and-swap is left to the next pass, which re-reads.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.keys import HEARTBEAT_PREFIX
from gitkube.api.objects import Node, Pod
from gitkube.errors import Conflict
from gitkube.loops import run_loop
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
from gitkube.store.base import Compare, Delete
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)


@dataclass
class NodeLifecycleControllerSettings:
    grace_period_seconds: float = DEFAULT_GRACE_PERIOD_SECONDS
    eviction_timeout_seconds: float = DEFAULT_EVICTION_TIMEOUT_SECONDS
    #: how often heartbeats are looked at (they are not watched)
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


class NodeLifecycleController:
    def __init__(
        self,
        objects: ObjectStore,
        settings: NodeLifecycleControllerSettings | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.settings = settings or NodeLifecycleControllerSettings()
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

    async def heartbeats(self) -> dict[str, int]:
        """Node name -> mod_revision of its heartbeat key."""
        kvs, _ = await self.objects.store.range(HEARTBEAT_PREFIX)
        return {kv.key[len(HEARTBEAT_PREFIX) :]: kv.mod_revision for kv in kvs}

    async def reconcile_once(self) -> NodeLifecyclePass:
        nodes, _ = await self.objects.list(Node)
        beats = await self.heartbeats()
        pods, _ = await self.objects.list(Pod)
        plan = plan_node_lifecycle(
            nodes,
            beats,
            pods,
            self.health,
            now=self.clock(),
            timestamp=now_iso(),
            settings=self.core_settings,
            limiter=self.limiter,
        )
        self.health = plan.health
        self.limiter = plan.limiter
        result = NodeLifecyclePass(ready=plan.ready, not_ready=plan.not_ready)
        previous = {n.name: n for n in nodes}
        for node in plan.node_updates:
            compare, put = self.objects.update_ops(node, previous[node.name])
            try:
                await self.objects.apply([compare], [put])
                result.updated.append(node.name)
                cond = node.status.condition("Ready")
                log.info(
                    "node %s: Ready=%s (%s)",
                    node.name,
                    cond.status if cond else "?",
                    cond.message if cond else "",
                )
            except Conflict:
                result.conflicts.append(node.key)
        for eviction in plan.evictions:
            pod = eviction.pod
            revision = int(pod.metadata.resource_version or 0)
            outcome = await self.objects.store.txn([Compare(pod.key, revision)], [Delete(pod.key)])
            if outcome.succeeded:
                result.evicted.append(pod.key)
            else:
                result.conflicts.append(pod.key)
        if result.evicted:
            log.warning(
                "evicted %d pods from not-ready nodes %s",
                len(result.evicted),
                sorted({e.node for e in plan.evictions}),
            )
        return result

    async def run(self, stop: asyncio.Event) -> None:
        await run_loop(
            "nodelifecycle",
            self.reconcile_once,
            self.objects,
            resources=["nodes"],
            stop=stop,
            resync_seconds=self.settings.monitor_period_seconds,
        )
