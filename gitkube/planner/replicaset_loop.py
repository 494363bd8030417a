"""The ReplicaSet controller: ``plan_replicaset`` on the control kit.

Each ReplicaSet is a key (``namespace/name``). Events map to keys: a
ReplicaSet's own changes; a pod's change to the ReplicaSet controlling it
and, for a pod without a controller, to the ReplicaSets of its namespace
whose selector matches it (to adopt it); a node that comes or goes to the
ReplicaSets with pods on it. The reconcile reads the shared cache, plans with
the pure core shared with ReplicationControllers, and applies through the
applier (guarded; fenced in the master role):

1. pods whose controlling ReplicaSet is gone (or was replaced by another of
   the same name) are deleted — the garbage collector's work for owner
   references, so pruning a Deployment from git removes its pods;
2. adoptions and releases, then guarded deletes;
3. creates in slow-start batches of 1, 2, 4, … (one atomic transaction per
   batch; a failed batch stops the rest);
4. the status, in a ``finally`` so a pass that failed half-way still reports.

A lost compare-and-swap re-plans the key (bounded); the reconcile waits
until the cache holds its own writes, so it never creates the same pods
twice. A ReplicaSet whose pods are Ready but not yet available
(``minReadySeconds``) comes back when they will be.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gitkube.api.objects import ApiObject, Node, Pod, ReplicaSet
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
    replan,
    split_ref,
    update,
    update_status,
)
from gitkube.errors import Conflict, GitkubeError
from gitkube.planner.replication import (
    DEFAULT_BURST_REPLICAS,
    ReplicaSetPlan,
    ReplicationSettings,
    plan_replicaset,
    slow_start_batches,
)
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: creates per transaction (etcd allows 128 operations per branch)
MAX_CREATE_BATCH = 64
#: cache index: pods by the ReplicaSet that controls them, "<namespace>/<name>"
RS_INDEX = "apps/replicaset-controller"


def _rs_of(resource: str, obj: ApiObject) -> list[str]:
    owner = obj.metadata.controller_ref()
    if resource == "pods" and owner is not None and owner.kind == ReplicaSet.KIND:
        return [ref(obj.namespace, owner.name)]
    return []


def add_index(cache: Cache, name: str, func: Callable[[str, ApiObject], Iterable[str]]) -> None:
    """Add an index once (controllers of one process share the cache)."""
    with contextlib.suppress(ValueError):
        cache.add_index(name, func)


@dataclass
class ReplicaSetControllerSettings:
    burst_replicas: int = DEFAULT_BURST_REPLICAS
    workers: int = 2
    #: plans per key when writes keep losing compare-and-swaps
    max_attempts: int = 3
    #: seed of the random source for pod names; None: the OS's entropy
    seed: int | None = None


@dataclass
class ReplicaSetPass:
    """What reconciles did, as pod and ReplicaSet keys."""

    created: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    adopted: list[str] = field(default_factory=list)
    released: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)


class ReplicaSetController:
    """Keeps every ReplicaSet's pods and status current."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: ReplicaSetControllerSettings | None = None,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.settings = settings or ReplicaSetControllerSettings()
        # not `cache or …`: an empty cache is falsy (it has a length)
        self.cache = cache if cache is not None else Cache(objects.store)
        add_index(self.cache, RS_INDEX, _rs_of)
        self.applier = applier if applier is not None else Applier(objects)
        self.clock = clock
        self.rand = random.Random(self.settings.seed)
        self.core = ReplicationSettings(burst_replicas=self.settings.burst_replicas)
        #: why creating pods last failed, per key (the ReplicaFailure condition)
        self.failures: dict[str, str] = {}
        self.done = ReplicaSetPass()

    # ------------------------------------------------------------ keys

    def keys_of(self, event: CacheEvent) -> list[str]:
        if event.resource == "replicasets":
            return own_key(event)
        if event.resource == "nodes":
            if event.old is not None and event.new is not None:
                return []  # a node's status: the plan only needs which nodes exist
            name = event.obj.name if event.obj is not None else ""
            return sorted({k for p in self.cache.pods_on(name) for k in _rs_of("pods", p)})
        keys: set[str] = set()
        for pod in (event.old, event.new):
            if not isinstance(pod, Pod):
                continue
            owner = _rs_of("pods", pod)
            keys.update(owner)
            if not owner and pod.metadata.controller_ref() is None:
                for rs in self.cache.list(ReplicaSet, pod.namespace):
                    selector = rs.spec.selector
                    if not selector.is_empty() and selector.matches(pod.metadata.labels):
                        keys.add(ref(rs.namespace, rs.name))
        return sorted(keys)

    def all_keys(self) -> list[str]:
        keys = {ref(rs.namespace, rs.name) for rs in self.cache.list(ReplicaSet)}
        for pod in self.cache.list(Pod):
            keys.update(_rs_of("pods", pod))
        return sorted(keys)

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> ReplicaSetPass:
        """Catch the cache up and reconcile every ReplicaSet once (for tests)."""
        await self.cache.sync()
        self.done = ReplicaSetPass()
        for key in self.all_keys():
            await self.reconcile(key)
        return self.done

    async def reconcile(self, key: str) -> Result | None:
        namespace, name = split_ref(key)
        written = 0

        async def attempt() -> ReplicaSet | None:
            nonlocal written
            rs = self.cache.get(ReplicaSet, namespace, name)
            written = max(written, await self._collect(namespace, name, rs))
            if rs is None:
                self.failures.pop(key, None)
                return None
            plan = plan_replicaset(
                rs,
                self._pods_for(rs),
                self.cache.list(Node),
                now=self.clock(),
                rand=self.rand,
                settings=self.core,
                create_failure=self.failures.get(key, ""),
            )
            try:
                written = max(written, await self._apply(key, plan))
            finally:
                if written:
                    await self.cache.wait_for_revision(written)
            return rs

        rs = await replan(
            attempt,
            what=f"replicaset {key}",
            cache=self.cache,
            attempts=self.settings.max_attempts,
        )
        if rs is None:
            return None
        rs = self.cache.get(ReplicaSet, namespace, name) or rs
        status = rs.status
        if rs.spec.min_ready_seconds > 0 and status.ready_replicas > status.available_replicas:
            # pods become available with time alone: look again then
            return Result(requeue_after=min(float(rs.spec.min_ready_seconds), 5.0))
        return None

    def _pods_for(self, rs: ReplicaSet) -> list[Pod]:
        """Its pods, and the pods it could adopt or must release."""
        pods = {p.key: p for p in self.cache.index(RS_INDEX, ref(rs.namespace, rs.name))}
        selector = rs.spec.selector
        if not selector.is_empty():
            for pod in self.cache.select(Pod, rs.namespace, selector.match_labels):
                if selector.matches(pod.metadata.labels):
                    pods.setdefault(pod.key, pod)
        return [p for p in pods.values() if isinstance(p, Pod)]

    async def _collect(self, namespace: str, name: str, rs: ReplicaSet | None) -> int:
        """Delete pods naming ``namespace/name`` as controller whose ReplicaSet is gone."""
        uid = rs.metadata.uid if rs is not None else None
        orphans = []
        for pod in self.cache.index(RS_INDEX, ref(namespace, name)):
            owner = pod.metadata.controller_ref()
            if owner is None or pod.metadata.deletion_timestamp:
                continue
            if uid is None or (owner.uid and owner.uid != uid):
                orphans.append(pod)
        if not orphans:
            return 0
        done = await self.applier.apply([delete(p) for p in orphans])
        self.done.collected.extend(w.key for w in done.applied)
        if done.applied:
            log.info("replicasets: %s is gone; deleted %d of its pods", name, len(done.applied))
        if done.conflicts:
            raise Conflict(f"{len(done.conflicts)} orphaned pods changed before their deletion")
        return done.revision

    async def _apply(self, key: str, plan: ReplicaSetPlan) -> int:
        """Write ``plan``; ``Conflict`` when a guarded write lost. Returns the
        last revision written (0: nothing)."""
        revision = 0
        try:
            for pods, kept in (
                (plan.adoptions, self.done.adopted),
                (plan.releases, self.done.released),
            ):
                if pods:
                    done = await self.applier.apply([update(p) for p in pods])
                    revision = max(revision, done.revision)
                    kept.extend(done.keys)
                    if done.conflicts:
                        raise Conflict(f"{len(done.conflicts)} pods changed before adoption")
            if plan.deletes:
                done = await self.applier.apply([delete(d.pod) for d in plan.deletes])
                revision = max(revision, done.revision)
                self.done.deleted.extend(done.keys)
                if done.conflicts:
                    raise Conflict(f"{len(done.conflicts)} pods changed before their deletion")
            revision = max(revision, await self._create(key, plan))
        finally:
            if plan.status_changed:
                done = await self.applier.apply([update_status(plan.rs, plan.status)], atomic=True)
                revision = max(revision, done.revision)
                self.done.statuses.append(plan.rs.key)
        if plan.has_pod_changes():
            log.info(
                "replicasets: %s: created %d, deleted %d pods",
                key,
                len(plan.creates),
                len(plan.deletes),
            )
        return revision

    async def _create(self, key: str, plan: ReplicaSetPlan) -> int:
        revision, done = 0, 0
        try:
            for size in slow_start_batches(len(plan.creates)):
                batch, done = plan.creates[done : done + size], done + size
                for start in range(0, len(batch), MAX_CREATE_BATCH):
                    applied = await self.applier.apply(
                        [create(p) for p in batch[start : start + MAX_CREATE_BATCH]], atomic=True
                    )
                    revision = max(revision, applied.revision)
                    self.done.created.extend(applied.keys)
        except Conflict:
            raise
        except GitkubeError as exc:
            self.failures[key] = f"cannot create pods: {exc}"
            raise Retry(self.failures[key]) from exc
        self.failures.pop(key, None)
        return revision

    # ------------------------------------------------------------ running

    def controller(self) -> Controller:
        watched = ("replicasets", "pods", "nodes")
        return Controller(
            "replicasets",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(watched, self.keys_of),
            workers=self.settings.workers,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
