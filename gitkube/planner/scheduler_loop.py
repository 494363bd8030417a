"""The scheduler loop: bind pending pods with ``schedule``, on the control kit.

One key (``"pending"``) is reconciled: the shared cache gives the pending
pods (the node index, node ""), the bound pods and the nodes; the pure core
plans (seeded by the cache's revision, so a pass can be replayed); the
applier writes, in guarded batches (and with the leader's fence when the
process is a master):

- a binding: ``spec.nodeName`` and ``PodScheduled=True``, guarded on the
  pod's revision; a pod whose write lost the compare-and-swap costs only its
  own binding (its change comes back as an event, and is planned again);
- for a pod that fits nowhere, ``PodScheduled=False`` reason
  ``Unschedulable`` with kube-scheduler's message — written only when it
  changes, so the loop settles. Pod and node events that can change a
  placement queue the key again, which is what retries such pods.

A status change of a bound pod (an agent's report) does not wake the
scheduler. Scheduling latency (first seen pending → binding written, on this
loop's clock) goes to ``on_scheduled`` and into ``latencies`` for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.objects import Node, Pod, PodCondition
from gitkube.control import Applier, Cache, CacheEvent, Controller, Result, update
from gitkube.planner.scheduler import TERMINAL_PHASES, schedule
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)

POD_SCHEDULED = "PodScheduled"
#: the one key the scheduler reconciles
PENDING = "pending"
REASON_UNSCHEDULABLE = "Unschedulable"


@dataclass
class SchedulerSettings:
    #: seed for the node order; None: the store revision of the pass
    seed: int | None = None
    #: kube's percentageOfNodesToScore; 0: adaptive
    percentage_of_nodes_to_score: int = 0
    #: bindings per transaction (etcd allows 128 operations per branch)
    bind_batch: int = 64
    #: while pods are left unschedulable, plan again this often besides events
    resync_seconds: float | None = 10.0
    #: how many recent latencies ``latencies`` keeps
    latency_window: int = 1000


@dataclass
class SchedulingPass:
    """What one pass did."""

    #: pod key -> node name, as written
    bindings: dict[str, str] = field(default_factory=dict)
    #: pod key -> message, for pods that fit nowhere
    unschedulable: dict[str, str] = field(default_factory=dict)
    #: pods whose write lost a compare-and-swap (replanned next pass)
    conflicts: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def bound(self) -> int:
        return len(self.bindings)


def is_pending(pod: Pod) -> bool:
    return (
        not pod.spec.node_name
        and pod.status.phase not in TERMINAL_PHASES
        and not pod.metadata.deletion_timestamp
    )


def _with_condition(pod: Pod, wanted: PodCondition) -> Pod:
    updated = pod.copy()
    old = updated.status.condition(wanted.type)
    if old is not None and old.status == wanted.status and old.last_transition_time:
        wanted.last_transition_time = old.last_transition_time
    updated.status.conditions = [c for c in updated.status.conditions if c.type != wanted.type]
    updated.status.conditions.append(wanted)
    return updated


def bound_pod(pod: Pod, node: str, *, now: str) -> Pod:
    updated = _with_condition(
        pod, PodCondition(type=POD_SCHEDULED, status="True", last_transition_time=now)
    )
    updated.spec.node_name = node
    return updated


def unschedulable_pod(pod: Pod, message: str, *, now: str) -> Pod | None:
    """The pod with the Unschedulable condition, or None when it already says so."""
    old = pod.status.condition(POD_SCHEDULED)
    if (
        old is not None
        and old.status == "False"
        and old.reason == REASON_UNSCHEDULABLE
        and old.message == message
    ):
        return None
    return _with_condition(
        pod,
        PodCondition(
            type=POD_SCHEDULED,
            status="False",
            reason=REASON_UNSCHEDULABLE,
            message=message,
            last_transition_time=now,
        ),
    )


def scheduling_keys(event: CacheEvent) -> list[str]:
    """Pod events that can change a placement: a pending pod, a binding, a pod
    leaving a node. Not the status reports of bound pods."""
    old, new = event.old, event.new
    if event.resource == "nodes":
        return [PENDING]
    if not isinstance(new, Pod):
        return [PENDING] if isinstance(old, Pod) and old.spec.node_name else []
    if is_pending(new):
        return [PENDING]
    if not isinstance(old, Pod) or old.spec.node_name != new.spec.node_name:
        return [PENDING]
    if new.status.phase in TERMINAL_PHASES and old.status.phase not in TERMINAL_PHASES:
        return [PENDING]  # a finished pod frees its node's resources
    return []


class SchedulerLoop:
    """Binds pending pods to nodes."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: SchedulerSettings | None = None,
        *,
        cache: Cache | None = None,
        applier: Applier | None = None,
        on_scheduled: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.settings = settings or SchedulerSettings()
        self.cache = cache if cache is not None else Cache(objects.store)
        self.applier = (
            applier if applier is not None else Applier(objects, batch=self.settings.bind_batch)
        )
        self.on_scheduled = on_scheduled
        self.clock = clock
        #: recent scheduling latencies in seconds (first seen pending -> bound)
        self.latencies: deque[float] = deque(maxlen=self.settings.latency_window)
        self._first_seen: dict[str, float] = {}
        self.last_pass = SchedulingPass()

    async def reconcile_once(self) -> SchedulingPass:
        """Catch the cache up with the store and run one pass."""
        await self.cache.sync()
        await self.reconcile(PENDING)
        return self.last_pass

    async def reconcile(self, key: str = PENDING) -> Result | None:
        self.last_pass = result = SchedulingPass()
        started = self.clock()
        cache = self.cache
        pending = [p for p in cache.pods_on("") if is_pending(p)]
        seen = {p.key for p in pending}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in seen}
        for pod_key in seen:
            self._first_seen.setdefault(pod_key, started)
        if not pending:
            return None
        bound = [p for p in cache.list(Pod) if p.spec.node_name]
        nodes = cache.list(Node)
        seed = self.settings.seed if self.settings.seed is not None else cache.revision
        plan = schedule(
            pending,
            nodes,
            bound,
            seed=seed,
            percentage_of_nodes_to_score=self.settings.percentage_of_nodes_to_score,
        )
        by_key = {p.key: p for p in pending}
        now = now_iso()
        writes = [
            update(bound_pod(by_key[pod_key], node, now=now), by_key[pod_key])
            for pod_key, node in plan.bindings.items()
        ]
        for entry in plan.unschedulable:
            result.unschedulable[entry.pod_key] = entry.message
            noted = unschedulable_pod(by_key[entry.pod_key], entry.message, now=now)
            if noted is not None:
                writes.append(update(noted, by_key[entry.pod_key]))
        done = await self.applier.apply(writes)
        written = set(done.keys)
        for pod_key, node in plan.bindings.items():
            if pod_key in written:
                result.bindings[pod_key] = node
        result.conflicts = [w.key for w in done.conflicts]
        finished = self.clock()
        for pod_key in result.bindings:
            latency = finished - self._first_seen.pop(pod_key, started)
            self.latencies.append(latency)
            if self.on_scheduled is not None:
                self.on_scheduled(pod_key, latency)
        if done.revision:
            # the next pass must see these bindings (else it would plan them again)
            await cache.wait_for_revision(done.revision)
        result.seconds = self.clock() - started
        if result.bindings or result.unschedulable:
            log.info(
                "scheduler: bound %d pods, %d unschedulable, %d conflicts in %.3fs",
                result.bound,
                len(result.unschedulable),
                len(result.conflicts),
                result.seconds,
            )
        # a conflicted pod changed: its event queues this key again; pods that
        # fit nowhere are retried on events, and on a timer as a safety net
        if (result.unschedulable or result.conflicts) and self.settings.resync_seconds:
            return Result(requeue_after=self.settings.resync_seconds)
        return None

    def controller(self) -> Controller:
        return Controller(
            "scheduler",
            self.reconcile,
            self.cache,
            watches={"pods": scheduling_keys, "nodes": scheduling_keys},
            initial_keys=[PENDING],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)
