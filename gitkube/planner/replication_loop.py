"""The ReplicationController manager loop: apply ``plan_replication`` to the store.

Each pass lists RCs, pods and nodes once and, per RC, plans with the pure
core and applies the plan:

1. adoptions and releases (owner references), guarded on each pod's revision;
2. deletes, guarded: a pod that changed since it was read is not deleted
   on stale grounds;
3. creates in slow-start batches of 1, 2, 4, … pods (one transaction per
   batch; a failed batch stops the rest, as Kubernetes' slowStartBatch);
4. the status, guarded on the RC's revision — written in a ``finally`` so
   a pass that failed half-way still reports what it saw.

A lost compare-and-swap means the state moved: re-read and plan that RC
again, a bounded number of times (Nomad's plan-rejected loop); the next
pass picks up whatever is left. Pods whose controlling RC no longer exists
are deleted (Kubernetes' garbage collector does this for owner references).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.objects import Node, Pod, ReplicationController
from gitkube.errors import Conflict
from gitkube.loops import run_loop
from gitkube.planner.replication import (
    DEFAULT_BURST_REPLICAS,
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    ReplicationPlan,
    ReplicationSettings,
    plan_replication,
    slow_start_batches,
)
from gitkube.store.base import Compare, Delete
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: creates per transaction (etcd allows 128 operations per branch)
MAX_CREATE_BATCH = 64


@dataclass
class ReplicationManagerSettings:
    burst_replicas: int = DEFAULT_BURST_REPLICAS
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    #: a timer pass, so progress deadlines are noticed without events
    resync_seconds: float = 5.0
    #: plans per RC per pass when writes keep losing compare-and-swaps
    max_attempts: int = 3
    #: seed of the random source for pod names; None: the OS's entropy
    seed: int | None = None


@dataclass
class ReplicationPass:
    """What one pass did, as pod and RC keys."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    #: pods of RCs that no longer exist, deleted
    collected: list[str] = field(default_factory=list)
    #: RCs still conflicting after max_attempts (the next pass retries)
    conflicts: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.created or self.deleted or self.adopted or self.released or self.collected)


def orphaned_pods(rcs: list[ReplicationController], pods: list[Pod]) -> list[Pod]:
    """Pods whose controlling ReplicationController is gone."""
    live = {(rc.namespace, rc.metadata.uid) for rc in rcs}
    out = []
    for pod in pods:
        ref = pod.metadata.controller_ref()
        if (
            ref is not None
            and ref.kind == ReplicationController.KIND
            and ref.uid
            and (pod.namespace, ref.uid) not in live
            and not pod.metadata.deletion_timestamp
        ):
            out.append(pod)
    return out


class ReplicationManager:
    """Keeps every ReplicationController's pods and status current."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: ReplicationManagerSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.settings = settings or ReplicationManagerSettings()
        self.clock = clock
        self.rand = random.Random(self.settings.seed)
        self.core_settings = ReplicationSettings(
            burst_replicas=self.settings.burst_replicas,
            progress_deadline_seconds=self.settings.progress_deadline_seconds,
        )

    async def reconcile_once(self) -> ReplicationPass:
        result = ReplicationPass()
        rcs, _ = await self.objects.list(ReplicationController)
        pods, _ = await self.objects.list(Pod)
        nodes, _ = await self.objects.list(Node)
        for orphan in orphaned_pods(rcs, pods):
            if await self._delete(orphan):
                result.collected.append(orphan.key)
        for rc in sorted(rcs, key=lambda r: r.key):
            await self._reconcile_rc(rc, pods, nodes, result)
        if result.changed:
            log.info(
                "replication: created %d, deleted %d, adopted %d, released %d, collected %d",
                len(result.created),
                len(result.deleted),
                len(result.adopted),
                len(result.released),
                len(result.collected),
            )
        return result

    async def _reconcile_rc(
        self,
        rc: ReplicationController,
        pods: list[Pod],
        nodes: list[Node],
        result: ReplicationPass,
    ) -> None:
        for attempt in range(self.settings.max_attempts):
            if attempt:
                fresh = await self.objects.get(ReplicationController, rc.namespace, rc.name)
                if fresh is None:
                    return
                rc = fresh
                pods, _ = await self.objects.list(Pod, rc.namespace)
                nodes, _ = await self.objects.list(Node)
            plan = plan_replication(
                rc,
                [p for p in pods if p.namespace == rc.namespace],
                nodes,
                now=self.clock(),
                rand=self.rand,
                settings=self.core_settings,
            )
            try:
                await self.apply_plan(plan, result)
                return
            except Conflict as exc:
                log.debug("replication: %s: %s; planning again", rc.key, exc)
        result.conflicts.append(rc.key)

    async def apply_plan(self, plan: ReplicationPlan, result: ReplicationPass) -> None:
        """Write ``plan``; ``Conflict`` when a guarded write lost (plan again)."""
        try:
            for pods, done in ((plan.adoptions, result.adopted), (plan.releases, result.released)):
                for pod in pods:
                    compare, put = self.objects.update_ops(pod, None)
                    await self.objects.apply([compare], [put])
                    done.append(pod.key)
            for delete in plan.deletes:
                if await self._delete(delete.pod):
                    result.deleted.append(delete.pod.key)
            await self._create(plan, result)
        finally:
            if plan.status_changed:
                await self._write_status(plan, result)

    async def _delete(self, pod: Pod) -> bool:
        """Delete ``pod`` if unchanged; ``Conflict`` if it changed; False if already gone."""
        revision = int(pod.metadata.resource_version or 0)
        outcome = await self.objects.store.txn([Compare(pod.key, revision)], [Delete(pod.key)])
        if outcome.succeeded:
            return True
        if await self.objects.store.get(pod.key) is None:
            return False
        raise Conflict(f"pod {pod.namespace}/{pod.name} changed before it could be deleted")

    async def _create(self, plan: ReplicationPlan, result: ReplicationPass) -> None:
        done = 0
        for size in slow_start_batches(len(plan.creates)):
            batch, done = plan.creates[done : done + size], done + size
            for start in range(0, len(batch), MAX_CREATE_BATCH):
                prepared = [
                    self.objects.prepare_create(p) for p in batch[start : start + MAX_CREATE_BATCH]
                ]
                ops = [self.objects.create_ops(p) for p in prepared]
                # a name taken meanwhile fails the batch and stops the rest: plan again
                await self.objects.apply([c for c, _ in ops], [p for _, p in ops])
                result.created.extend(p.key for p in prepared)

    async def _write_status(self, plan: ReplicationPlan, result: ReplicationPass) -> None:
        rc = plan.rc.copy()
        rc.status = plan.status
        compare, put = self.objects.update_ops(rc, plan.rc)
        await self.objects.apply([compare], [put])
        result.statuses.append(rc.key)

    async def run(self, stop: asyncio.Event) -> None:
        await run_loop(
            "replication",
            self.reconcile_once,
            self.objects,
            resources=["replicationcontrollers", "pods", "nodes"],
            stop=stop,
            resync_seconds=self.settings.resync_seconds,
        )
