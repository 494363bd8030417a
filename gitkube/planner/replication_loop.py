"""The ReplicationController manager: ``plan_replication`` on the control kit.

Each RC is its own key (``namespace/name``). Events map to keys: an RC's
own changes; a pod's change to its controlling RC (by name) and, for a pod
without one, to the RCs of its namespace whose selector matches it (to
adopt it); a node that comes or goes to the RCs with pods on it. The
reconcile reads the shared cache, plans with the pure core and applies
through the applier (guarded, and fenced when the process is a master):

1. adoptions and releases (owner references), guarded on each pod's revision;
2. deletes, guarded: a pod that changed since it was read is not deleted
   on stale grounds;
3. creates in slow-start batches of 1, 2, 4, … pods (one atomic
   transaction per batch; a failed batch stops the rest, as Kubernetes'
   slowStartBatch);
4. the status, guarded on the RC's revision — written in a ``finally`` so
   a pass that failed half-way still reports what it saw.

A lost compare-and-swap re-plans that RC (bounded, ``replan``); then the
key backs off alone. The reconcile waits until the cache holds its own
writes, so the next reconcile of the key never creates the same pods twice.
Pods whose controlling RC no longer exists are deleted (Kubernetes' garbage
collector does this for owner references). While an RC is not settled
(a rollout, pods not yet available), its key comes back every
``resync_seconds`` so progress deadlines are noticed without events.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.labels import selector_matches
from gitkube.api.objects import ApiObject, Node, Pod, ReplicationController
from gitkube.control import (
    Applied,
    Applier,
    Cache,
    CacheEvent,
    Controller,
    Result,
    Retry,
    create,
    delete,
    ref,
    replan,
    split_ref,
    update,
    update_status,
)
from gitkube.errors import Conflict
from gitkube.planner.replication import (
    DEFAULT_BURST_REPLICAS,
    DEFAULT_PROGRESS_DEADLINE_SECONDS,
    ReplicationPlan,
    ReplicationSettings,
    plan_replication,
    slow_start_batches,
)
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: creates per transaction (etcd allows 128 operations per branch)
MAX_CREATE_BATCH = 64
#: cache index: pods by the RC that controls them, "<namespace>/<rc name>"
RC_INDEX = "replication/controller"


@dataclass
class ReplicationManagerSettings:
    burst_replicas: int = DEFAULT_BURST_REPLICAS
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS
    #: how often an RC that is not settled is looked at again without events
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


def _rc_of(resource: str, obj: ApiObject) -> list[str]:
    ref_ = obj.metadata.controller_ref()
    if resource == "pods" and ref_ is not None and ref_.kind == ReplicationController.KIND:
        return [ref(obj.namespace, ref_.name)]
    return []


def orphaned_pods(rcs: list[ReplicationController], pods: list[Pod]) -> list[Pod]:
    """Pods whose controlling ReplicationController is gone."""
    live = {(rc.namespace, rc.metadata.uid) for rc in rcs}
    out = []
    for pod in pods:
        ref_ = pod.metadata.controller_ref()
        if (
            ref_ is not None
            and ref_.kind == ReplicationController.KIND
            and ref_.uid
            and (pod.namespace, ref_.uid) not in live
            and not pod.metadata.deletion_timestamp
        ):
            out.append(pod)
    return out


def settled(rc: ReplicationController) -> bool:
    """True when the RC's status says all its pods are current and available."""
    status, want = rc.status, max(rc.spec.replicas, 0)
    return (
        status.observed_generation == rc.metadata.generation
        and status.replicas == want
        and status.ready_replicas == want
        and status.available_replicas == want
        and status.updated_replicas == want
    )


class ReplicationManager:
    """Keeps every ReplicationController's pods and status current."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: ReplicationManagerSettings | None = None,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.settings = settings or ReplicationManagerSettings()
        self.cache = cache if cache is not None else Cache(objects.store)
        if RC_INDEX not in self.cache.indices():
            self.cache.add_index(RC_INDEX, _rc_of)
        self.applier = applier if applier is not None else Applier(objects)
        self.clock = clock
        self.rand = random.Random(self.settings.seed)
        self.core_settings = ReplicationSettings(
            burst_replicas=self.settings.burst_replicas,
            progress_deadline_seconds=self.settings.progress_deadline_seconds,
        )
        self.last_pass = ReplicationPass()

    # ------------------------------------------------------------ keys

    def keys_of(self, event: CacheEvent) -> list[str]:
        """The RC keys a cache event touches."""
        if event.resource == "replicationcontrollers":
            obj = event.obj
            return [ref(obj.namespace, obj.name)] if obj is not None else []
        if event.resource == "nodes":
            if event.old is not None and event.new is not None:
                return []  # a node's status: the plan only needs which nodes exist
            name = event.obj.name if event.obj is not None else ""
            return sorted({k for p in self.cache.pods_on(name) for k in _rc_of("pods", p)})
        keys: set[str] = set()
        for pod in (event.old, event.new):
            if not isinstance(pod, Pod):
                continue
            owner = _rc_of("pods", pod)
            keys.update(owner)
            if not owner:
                for rc in self.cache.list(ReplicationController, pod.namespace):
                    if selector_matches(rc.effective_selector(), pod.metadata.labels):
                        keys.add(ref(rc.namespace, rc.name))
        return sorted(keys)

    def all_keys(self) -> list[str]:
        """Every RC, and every RC name that pods still name as their controller."""
        keys = {ref(rc.namespace, rc.name) for rc in self.cache.list(ReplicationController)}
        keys.update(self.cache.index_values(RC_INDEX))
        return sorted(keys)

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> ReplicationPass:
        """Catch the cache up and reconcile every RC once (what a test calls)."""
        await self.cache.sync()
        result = ReplicationPass()
        for key in self.all_keys():
            try:
                await self._reconcile(key, result)
            except Retry:
                result.conflicts.append(key)
        self.last_pass = result
        return result

    async def reconcile(self, key: str) -> Result | None:
        result = ReplicationPass()
        self.last_pass = result
        return await self._reconcile(key, result)

    async def _reconcile(self, key: str, result: ReplicationPass) -> Result | None:
        namespace, name = split_ref(key)
        written = 0

        async def attempt() -> ReplicationController | None:
            nonlocal written
            rc = self.cache.get(ReplicationController, namespace, name)
            done = await self._collect(namespace, name, rc, result)
            written = max(written, done)
            if rc is None:
                return None
            plan = plan_replication(
                rc,
                self._pods_for(rc),
                self.cache.list(Node),
                now=self.clock(),
                rand=self.rand,
                settings=self.core_settings,
            )
            try:
                written = max(written, await self.apply_plan(plan, result))
            finally:
                if written:
                    # the next plan (and the next reconcile) must see these writes
                    await self.cache.wait_for_revision(written)
            return rc

        rc = await replan(
            attempt,
            what=f"replication {key}",
            cache=self.cache,
            attempts=self.settings.max_attempts,
        )
        if result.changed:
            log.info(
                "replication %s: created %d, deleted %d, adopted %d, released %d, collected %d",
                key,
                len(result.created),
                len(result.deleted),
                len(result.adopted),
                len(result.released),
                len(result.collected),
            )
        rc = self.cache.get(ReplicationController, namespace, name) if rc is not None else None
        if rc is not None and not settled(rc) and self.settings.resync_seconds:
            return Result(requeue_after=self.settings.resync_seconds)
        return None

    def _pods_for(self, rc: ReplicationController) -> list[Pod]:
        """Its pods, and the pods it could adopt or must release."""
        pods = {p.key: p for p in self.cache.index(RC_INDEX, ref(rc.namespace, rc.name))}
        for pod in self.cache.select(Pod, rc.namespace, rc.effective_selector()):
            pods.setdefault(pod.key, pod)
        return [p for p in pods.values() if isinstance(p, Pod)]

    async def _collect(
        self, namespace: str, name: str, rc: ReplicationController | None, result: ReplicationPass
    ) -> int:
        """Delete pods that name ``namespace/name`` as controller but whose RC is gone."""
        named = [p for p in self.cache.index(RC_INDEX, ref(namespace, name)) if isinstance(p, Pod)]
        orphans = orphaned_pods([rc] if rc is not None else [], named)
        if not orphans:
            return 0
        done = await self.applier.apply([delete(p) for p in orphans])
        result.collected.extend(w.key for w in done.applied)
        if done.conflicts:
            raise Conflict(f"{len(done.conflicts)} orphaned pods changed before their deletion")
        return done.revision

    async def apply_plan(self, plan: ReplicationPlan, result: ReplicationPass) -> int:
        """Write ``plan``; ``Conflict`` when a guarded write lost (plan again).
        Returns the last revision written (0: nothing)."""
        revision = 0

        def note(done: Applied) -> Applied:
            nonlocal revision
            revision = max(revision, done.revision)
            return done

        try:
            for pods, kept in ((plan.adoptions, result.adopted), (plan.releases, result.released)):
                if pods:
                    done = note(await self.applier.apply([update(p) for p in pods]))
                    kept.extend(w.key for w in done.applied)
                    if done.conflicts:
                        raise Conflict(f"{len(done.conflicts)} pods changed before adoption")
            if plan.deletes:
                done = note(await self.applier.apply([delete(d.pod) for d in plan.deletes]))
                result.deleted.extend(w.key for w in done.applied)
                if done.conflicts:
                    raise Conflict(
                        f"{len(done.conflicts)} pods changed before they could be deleted"
                    )
            await self._create(plan, result, note)
        finally:
            if plan.status_changed:
                note(await self.applier.apply([update_status(plan.rc, plan.status)], atomic=True))
                result.statuses.append(plan.rc.key)
        return revision

    async def _create(
        self, plan: ReplicationPlan, result: ReplicationPass, note: Callable[[Applied], Applied]
    ) -> None:
        done = 0
        for size in slow_start_batches(len(plan.creates)):
            batch, done = plan.creates[done : done + size], done + size
            for start in range(0, len(batch), MAX_CREATE_BATCH):
                # a name taken meanwhile fails the batch and stops the rest: plan again
                applied = note(
                    await self.applier.apply(
                        [create(p) for p in batch[start : start + MAX_CREATE_BATCH]], atomic=True
                    )
                )
                result.created.extend(applied.keys)

    def controller(self) -> Controller:
        watched = ("replicationcontrollers", "pods", "nodes")
        return Controller(
            "replication",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(watched, self.keys_of),
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
