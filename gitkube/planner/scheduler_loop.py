"""The scheduler loop: bind pending pods with ``schedule`` and compare-and-swap writes.

Each pass lists pods and nodes, plans with the pure core (seeded by the
store revision it read, so a pass can be replayed), then writes:

- a binding: ``spec.nodeName`` and ``PodScheduled=True``, guarded on the
  pod's revision; bindings go in transactions of up to ``bind_batch``
  pods, and a batch that loses a compare is retried pod by pod, so one
  changed pod costs only its own binding (the next pass replans it);
- for a pod that fits nowhere, ``PodScheduled=False`` reason
  ``Unschedulable`` with kube-scheduler's message — written only when it
  changes, so the loop settles. The loop runs on every pod and node event,
  which is what retries such pods when the cluster changes.

Scheduling latency (first seen pending → binding written, on this loop's
clock) goes to ``on_scheduled`` and into ``latencies`` for metrics.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gitkube.api.objects import Node, Pod, PodCondition
from gitkube.errors import Conflict
from gitkube.loops import run_loop
from gitkube.planner.scheduler import TERMINAL_PHASES, schedule
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)

POD_SCHEDULED = "PodScheduled"
REASON_UNSCHEDULABLE = "Unschedulable"


@dataclass
class SchedulerSettings:
    #: seed for the node order; None: the store revision of the pass
    seed: int | None = None
    #: kube's percentageOfNodesToScore; 0: adaptive
    percentage_of_nodes_to_score: int = 0
    #: bindings per transaction (etcd allows 128 operations per branch)
    bind_batch: int = 64
    resync_seconds: float = 10.0
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


class SchedulerLoop:
    """Binds pending pods to nodes."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: SchedulerSettings | None = None,
        *,
        on_scheduled: Callable[[str, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.objects = objects
        self.settings = settings or SchedulerSettings()
        self.on_scheduled = on_scheduled
        self.clock = clock
        #: recent scheduling latencies in seconds (first seen pending -> bound)
        self.latencies: deque[float] = deque(maxlen=self.settings.latency_window)
        self._first_seen: dict[str, float] = {}

    async def reconcile_once(self) -> SchedulingPass:
        started = self.clock()
        pods, revision = await self.objects.list(Pod)
        nodes, _ = await self.objects.list(Node)
        pending = [p for p in pods if is_pending(p)]
        bound = [p for p in pods if p.spec.node_name]
        seen = {p.key for p in pending}
        self._first_seen = {k: v for k, v in self._first_seen.items() if k in seen}
        for key in seen:
            self._first_seen.setdefault(key, started)

        result = SchedulingPass()
        if not pending:
            return result
        seed = self.settings.seed if self.settings.seed is not None else revision
        plan = schedule(
            pending,
            nodes,
            bound,
            seed=seed,
            percentage_of_nodes_to_score=self.settings.percentage_of_nodes_to_score,
        )
        by_key = {p.key: p for p in pending}
        now = now_iso()
        writes: list[tuple[Pod, Pod]] = [
            (by_key[key], bound_pod(by_key[key], node, now=now))
            for key, node in plan.bindings.items()
        ]
        written = await self._write(writes, result)
        for original, _ in writes:
            if original.key in written:
                result.bindings[original.key] = plan.bindings[original.key]
        done = self.clock()
        for key in result.bindings:
            latency = done - self._first_seen.pop(key, started)
            self.latencies.append(latency)
            if self.on_scheduled is not None:
                self.on_scheduled(key, latency)

        notes: list[tuple[Pod, Pod]] = []
        for entry in plan.unschedulable:
            result.unschedulable[entry.pod_key] = entry.message
            updated = unschedulable_pod(by_key[entry.pod_key], entry.message, now=now)
            if updated is not None:
                notes.append((by_key[entry.pod_key], updated))
        await self._write(notes, result)
        result.seconds = self.clock() - started
        if result.bindings or result.unschedulable:
            log.info(
                "scheduler: bound %d pods, %d unschedulable, %d conflicts in %.3fs",
                result.bound,
                len(result.unschedulable),
                len(result.conflicts),
                result.seconds,
            )
        return result

    async def _write(self, writes: list[tuple[Pod, Pod]], result: SchedulingPass) -> set[str]:
        """Guarded puts in batches; a failed batch is retried pod by pod."""
        written: set[str] = set()
        size = max(1, min(self.settings.bind_batch, 128))
        for start in range(0, len(writes), size):
            batch = writes[start : start + size]
            ops = [self.objects.update_ops(new, old) for old, new in batch]
            try:
                await self.objects.apply([c for c, _ in ops], [p for _, p in ops])
                written.update(old.key for old, _ in batch)
                continue
            except Conflict:
                pass
            for (old, _), (compare, put) in zip(batch, ops, strict=True):
                try:
                    await self.objects.apply([compare], [put])
                    written.add(old.key)
                except Conflict:
                    result.conflicts.append(old.key)
        return written

    async def run(self, stop: asyncio.Event) -> None:
        await run_loop(
            "scheduler",
            self.reconcile_once,
            self.objects,
            resources=["pods", "nodes"],
            stop=stop,
            resync_seconds=self.settings.resync_seconds,
        )
