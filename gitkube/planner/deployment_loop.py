"""The Deployment controller: ``plan_deployment`` on the control kit.

Each Deployment is a key (``namespace/name``). Events map to keys: a
Deployment's own changes; a ReplicaSet's change to the Deployment that
controls it (or, for one without a controller, to the Deployments of its
namespace whose selector matches it); a pod's change to the Deployment of
the ReplicaSet that controls it, since availability is counted from pods.

The reconcile reads the shared cache and applies the plan through the
applier (guarded; fenced in the master role):

1. ReplicaSets whose controlling Deployment is gone are deleted (the
   ReplicaSet controller then deletes their pods): pruning a Deployment from
   git removes what it made;
2. the new ReplicaSet, then ReplicaSet scales, annotations, adoptions and
   releases, then history clean-up;
3. the Deployment's revision annotation and status, in a ``finally``.

A lost compare-and-swap re-plans (bounded). The key comes back when the
progress deadline of a rollout in progress would pass (``requeue_after``),
so ProgressDeadlineExceeded is reported without any event.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.objects import ApiObject, Deployment, Pod, ReplicaSet
from gitkube.control import (
    Applier,
    Cache,
    CacheEvent,
    Controller,
    Result,
    create,
    delete,
    own_key,
    ref,
    replan,
    split_ref,
    update,
)
from gitkube.errors import Conflict
from gitkube.planner.deployment import DeploymentPlan, plan_deployment
from gitkube.planner.replicaset_loop import add_index
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: cache index: ReplicaSets by the Deployment that controls them, "<namespace>/<name>"
DEPLOYMENT_INDEX = "apps/deployment-controller"


def _deployment_of(resource: str, obj: ApiObject) -> list[str]:
    owner = obj.metadata.controller_ref()
    if resource == "replicasets" and owner is not None and owner.kind == Deployment.KIND:
        return [ref(obj.namespace, owner.name)]
    return []


@dataclass
class DeploymentControllerSettings:
    workers: int = 2
    max_attempts: int = 3


@dataclass
class DeploymentPass:
    """What reconciles did, as ReplicaSet and Deployment keys."""

    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    statuses: list[str] = field(default_factory=list)
    collected: list[str] = field(default_factory=list)


class DeploymentController:
    """Keeps every Deployment's ReplicaSets, revision and status current."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: DeploymentControllerSettings | None = None,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.settings = settings or DeploymentControllerSettings()
        # not `cache or …`: an empty cache is falsy (it has a length)
        self.cache = cache if cache is not None else Cache(objects.store)
        add_index(self.cache, DEPLOYMENT_INDEX, _deployment_of)
        self.applier = applier if applier is not None else Applier(objects)
        self.clock = clock
        self.done = DeploymentPass()

    # ------------------------------------------------------------ keys

    def keys_of(self, event: CacheEvent) -> list[str]:
        if event.resource == "deployments":
            return own_key(event)
        keys: set[str] = set()
        for obj in (event.old, event.new):
            if isinstance(obj, ReplicaSet):
                owner = _deployment_of("replicasets", obj)
                keys.update(owner)
                if not owner and obj.metadata.controller_ref() is None:
                    for d in self.cache.list(Deployment, obj.namespace):
                        selector = d.spec.selector
                        if not selector.is_empty() and selector.matches(obj.metadata.labels):
                            keys.add(ref(d.namespace, d.name))
            elif isinstance(obj, Pod):
                owner_ref = obj.metadata.controller_ref()
                if owner_ref is None or owner_ref.kind != ReplicaSet.KIND:
                    continue
                rs = self.cache.get(ReplicaSet, obj.namespace, owner_ref.name)
                if rs is not None:
                    keys.update(_deployment_of("replicasets", rs))
        return sorted(keys)

    def all_keys(self) -> list[str]:
        keys = {ref(d.namespace, d.name) for d in self.cache.list(Deployment)}
        for rs in self.cache.list(ReplicaSet):
            keys.update(_deployment_of("replicasets", rs))
        return sorted(keys)

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> DeploymentPass:
        """Catch the cache up and reconcile every Deployment once (for tests)."""
        await self.cache.sync()
        self.done = DeploymentPass()
        for key in self.all_keys():
            await self.reconcile(key)
        return self.done

    async def reconcile(self, key: str) -> Result | None:
        namespace, name = split_ref(key)
        written = 0

        async def attempt() -> DeploymentPlan | None:
            nonlocal written
            d = self.cache.get(Deployment, namespace, name)
            written = max(written, await self._collect(namespace, name, d))
            if d is None:
                return None
            replicasets = self.cache.list(ReplicaSet, namespace)
            pods: list[Pod] = []
            for rs in replicasets:
                if rs.metadata.uid:
                    pods.extend(self.cache.owned_by(rs.metadata.uid, Pod))
            plan = plan_deployment(d, replicasets, pods, self.clock())
            try:
                written = max(written, await self._apply(plan))
            finally:
                if written:
                    await self.cache.wait_for_revision(written)
            return plan

        plan = await replan(
            attempt,
            what=f"deployment {key}",
            cache=self.cache,
            attempts=self.settings.max_attempts,
        )
        if plan is not None and plan.requeue_after is not None:
            return Result(requeue_after=plan.requeue_after)
        return None

    async def _collect(self, namespace: str, name: str, d: Deployment | None) -> int:
        """Delete ReplicaSets naming ``namespace/name`` as controller whose Deployment is gone."""
        uid = d.metadata.uid if d is not None else None
        orphans = []
        for rs in self.cache.index(DEPLOYMENT_INDEX, ref(namespace, name)):
            owner = rs.metadata.controller_ref()
            if owner is None or rs.metadata.deletion_timestamp:
                continue
            if uid is None or (owner.uid and owner.uid != uid):
                orphans.append(rs)
        if not orphans:
            return 0
        done = await self.applier.apply([delete(rs) for rs in orphans])
        self.done.collected.extend(done.keys)
        if done.applied:
            log.info("deployments: %s is gone; deleted its %d ReplicaSets", name, len(done.applied))
        if done.conflicts:
            raise Conflict(f"{len(done.conflicts)} ReplicaSets changed before their deletion")
        return done.revision

    async def _apply(self, plan: DeploymentPlan) -> int:
        revision = 0
        d = plan.deployment
        try:
            for writes, kept in (
                ([create(rs) for rs in plan.creates], self.done.created),
                # with the ReplicaSet as read: its generation moves with a new
                # size, and the write records a ScalingReplicaSet event
                (
                    [
                        update(rs, self.cache.get(ReplicaSet, rs.namespace, rs.name))
                        for rs in plan.updates
                    ],
                    self.done.updated,
                ),
                ([delete(rs) for rs in plan.deletes], self.done.deleted),
            ):
                if not writes:
                    continue
                done = await self.applier.apply(writes)
                revision = max(revision, done.revision)
                kept.extend(done.keys)
                if done.conflicts:
                    raise Conflict(
                        f"deployment {d.namespace}/{d.name}: {len(done.conflicts)} ReplicaSets "
                        "changed meanwhile"
                    )
        finally:
            if plan.deployment_changed:
                new = d.copy()
                new.metadata.annotations = dict(plan.annotations)
                new.status = plan.status
                done = await self.applier.apply([update(new, d)], atomic=True)
                revision = max(revision, done.revision)
                self.done.statuses.append(new.key)
        if plan.has_rs_changes():
            log.info(
                "deployments: %s/%s: %s",
                d.namespace,
                d.name,
                ", ".join(
                    [f"created {rs.name}" for rs in plan.creates]
                    + [f"{rs.name} to {rs.spec.replicas}" for rs in plan.updates]
                    + [f"deleted {rs.name}" for rs in plan.deletes]
                ),
            )
        return revision

    # ------------------------------------------------------------ running

    def controller(self) -> Controller:
        watched = ("deployments", "replicasets", "pods")
        return Controller(
            "deployments",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(watched, self.keys_of),
            workers=self.settings.workers,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
