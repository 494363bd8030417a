"""The agent (kubelet): runs the pods bound to its node through a runtime.

Work is keyed per pod (its uid) on the control kit, as kubelet's pod workers
are: a ``Controller`` hands each key to one worker at a time, so one slow pod
(a stop waiting out its grace period, a slow image pull) never holds up the
others. A key is queued when

- the pod changes in the shared cache (``Cache``, fed by the store watch;
  the agent reads the pods of its node from the cache's node index and never
  lists the store);
- what the runtime runs for it changes: a *relist* (kubelet's PLEG) lists the
  runtime's sandboxes and containers (found by their labels, so a restarted
  agent adopts what its predecessor started) and queues the pods whose
  containers changed. A runtime with an event stream (Docker) has a relist
  run as soon as it reports a change, and on a slow timer
  (``evented_relist_seconds``) as a safety net, as kubelet's evented PLEG
  does; otherwise (processes) the relist runs every ``relist_seconds``;
- its node appears or disappears, a probe verdict changes, or a back-off
  ends (the reconcile's ``Result(requeue_after=…)``).

``reconcile`` of one pod plans (``podplan.plan_pod``, pure), executes the plan
(its containers start concurrently) and writes the pod's status
(``podstatus.compute_pod_status``, pure) with a compare-and-swap when it
changed. After acting on a pod, its next reconcile reads a fresh relist.

Before a container starts, its env is resolved from the ConfigMaps, Secrets
and fields it names and its volumes are written under the runtime's
``pods_dir`` (``podconfig``, pure; ``volumes``, atomic). A missing object or
key that is not optional leaves it waiting with CreateContainerConfigError
until it appears (ConfigMap and Secret changes wake the agent). Each pass
rewrites the volumes of running pods, so a changed ConfigMap or Secret
reaches mounted files within a pass; env stays as it was started.

Pods deleted from the store, bound elsewhere, marked for deletion, or on a
node that no longer exists are stopped (SIGTERM, then SIGKILL after their
grace period) and removed. Stopping the agent leaves pods running.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field, replace
from typing import Any

from gitkube.api.objects import ConfigMap, Container, Node, Pod, Probe, Secret
from gitkube.api.serde import to_dict
from gitkube.control import Backoff, Cache, CacheEvent, Controller, Result, Retry, WorkQueue
from gitkube.errors import Conflict, GitkubeError, StoreUnavailable
from gitkube.nodes import volumes as pod_volumes
from gitkube.nodes.backoff import BackoffSettings, RestartBackoff
from gitkube.nodes.podconfig import (
    CREATE_CONTAINER_CONFIG_ERROR,
    ConfigMissing,
    ConfigSources,
    referenced_names,
    resolve_container,
    resolve_volumes,
)
from gitkube.nodes.podevents import PodEvent, killing, pod_events
from gitkube.nodes.podplan import (
    PodPlan,
    StartContainer,
    StartFailure,
    plan_pod,
    plan_teardown,
    restart_key,
)
from gitkube.nodes.podstatus import TERMINAL_PHASES, Waiting, compute_pod_status
from gitkube.nodes.probes import ProbeKind, ProbeManager, ProbeSpec, ProbeTarget
from gitkube.nodes.registration import Heartbeat, NodeSettings, register_node
from gitkube.nodes.runtime.base import (
    ContainerStartError,
    Mount,
    Runtime,
    RuntimeContainer,
    Sandbox,
)
from gitkube.store.events import EventRecorder
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)


@dataclass
class AgentSettings:
    """Timings of the agent; tests use small values."""

    #: list the runtime this often (exited containers are noticed)
    relist_seconds: float = 1.0
    #: ... and this often while the runtime's event stream is open (events
    #: start a relist at once)
    evented_relist_seconds: float = 10.0
    #: follow the runtime's event stream, where it has one
    runtime_events: bool = True
    #: how long ``reconcile_once`` waits for its pods before returning
    pass_wait_seconds: float = 0.5
    #: pods reconciled at once
    workers: int = 16
    #: on stop, how long pod work in flight may take to finish
    stop_grace_seconds: float = 60.0
    #: grace period for pods that are no longer known (deleted while the agent was down)
    default_grace_seconds: float = 30.0
    backoff: BackoffSettings = field(default_factory=BackoffSettings)
    #: heartbeat lease TTL (a third of the node controller's grace)
    heartbeat_ttl: int = 15
    #: heartbeat period; default a third of the TTL
    heartbeat_interval: float | None = None
    status_write_attempts: int = 8


@dataclass
class AgentPass:
    """What reconciles did (names: ``namespace/pod`` or ``namespace/pod/container#attempt``)."""

    pods: int = 0
    started: list[str] = field(default_factory=list)
    start_failed: list[str] = field(default_factory=list)
    killed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    sandboxes_created: list[str] = field(default_factory=list)
    sandboxes_removed: list[str] = field(default_factory=list)
    statuses_written: list[str] = field(default_factory=list)
    pods_deleted: list[str] = field(default_factory=list)
    #: ``namespace/pod/volume`` whose files were rewritten (a ConfigMap or Secret changed)
    volumes_updated: list[str] = field(default_factory=list)
    #: pods whose reconcile had not finished when ``reconcile_once`` returned
    pending: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def did_something(self) -> bool:
        return bool(
            self.started
            or self.start_failed
            or self.killed
            or self.removed
            or self.sandboxes_created
            or self.sandboxes_removed
            or self.statuses_written
            or self.pods_deleted
            or self.volumes_updated
        )


def _fingerprint(
    sandboxes: list[Sandbox], containers: list[RuntimeContainer]
) -> tuple[list[tuple[str, bool]], list[tuple[Any, ...]]]:
    """What a pod's sandboxes and containers are, as far as acting on them goes."""
    return (
        sorted((s.id, s.running) for s in sandboxes),
        sorted((c.id, c.state, c.exit_code, c.finished_at) for c in containers),
    )


def _pod_name(pod: Pod) -> str:
    return f"{pod.namespace}/{pod.name}"


def _rc_pod_name(rc: RuntimeContainer | Sandbox) -> str:
    return f"{rc.pod_namespace}/{rc.pod_name}"


ExtraTask = Callable[[asyncio.Event], Coroutine[Any, Any, object]]


class Agent:
    """The kubelet of one node; see the module docstring."""

    def __init__(
        self,
        objects: ObjectStore,
        runtime: Runtime,
        *,
        node: NodeSettings,
        settings: AgentSettings | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.objects = objects
        self.runtime = runtime
        self.node = node
        self.settings = settings or AgentSettings()
        #: the process's shared cache (its own when none is given)
        self.cache = cache if cache is not None else Cache(objects.store)
        self.backoff = RestartBackoff(self.settings.backoff)
        self.probes = ProbeManager(runtime, on_change=self._on_probe_change)
        self.heartbeat = Heartbeat(
            objects,
            node,
            ttl=self.settings.heartbeat_ttl,
            interval=self.settings.heartbeat_interval,
            on_reregister=self._on_reregister,
        )
        #: the keys (pod uids) to reconcile, while running
        self.queue: WorkQueue | None = None
        #: v1 Events of what the agent does (Pulled, Started, Killing, ...)
        self.events: EventRecorder | None = EventRecorder(objects, "kubelet", host=node.name)
        #: counters, for tests and metrics
        self.relists = 0
        self.reconciles = 0
        #: what the last relist found, by pod uid
        self._sandboxes: dict[str, list[Sandbox]] = {}
        self._containers: dict[str, list[RuntimeContainer]] = {}
        self._fingerprints: dict[str, tuple[Any, ...]] = {}
        self._pod_of_container: dict[str, str] = {}
        #: containers started here: id -> (pod uid, relists started then), for a
        #: relist that began before they started (and so does not list them)
        self._started_here: dict[str, tuple[str, int]] = {}
        #: relists started so far, and the one the snapshot above came from
        self._relists_started = 0
        self._snapshot_from = 0
        self._relist_lock = asyncio.Lock()
        #: set to relist now (the runtime reported a change)
        self._relist_now = asyncio.Event()
        #: the runtime's event stream is open
        self.evented = False
        #: pod uid -> relists started when the agent last acted on it: the
        #: pod's next reconcile needs a relist started after that
        self._acted: dict[str, int] = {}
        #: pods whose last action only started containers, all running, with
        #: the engine's events followed and no listing done meanwhile: what
        #: runs of them is known (kept in _sandboxes/_containers, its
        #: fingerprint in _fingerprints), so their next reconcile needs no
        #: relist. Until a listing says otherwise, or one begun after the
        #: action (it may know of an exit) is done
        self._settled: set[str] = set()
        #: uid -> the status this agent last found right for the pod: the
        #: cache's event for its write of it is no news to the pod's worker
        self._status_found: dict[str, Any] = {}
        #: pod uid -> seconds after which to reconcile it again (a back-off ends)
        self._requeue: dict[str, float] = {}
        #: last seen pod by uid (its grace period, once it is gone from the store)
        self._known: dict[str, Pod] = {}
        self._failures: dict[tuple[str, str], StartFailure] = {}
        self._extra: list[tuple[str, ExtraTask]] = []
        #: pod uid -> digest of the volume contents last written
        self._volume_digests: dict[str, str] = {}
        self._inflight: set[asyncio.Task[None]] = set()
        #: probe a container from its start (False: from the next relist, for
        #: bench/agent.py's measure of what that gains)
        self.probe_on_start = True

    @property
    def node_name(self) -> str:
        return self.node.name

    @property
    def address(self) -> str:
        return self.node.address

    # ------------------------------------------------------------ running

    def add_task(self, name: str, task: ExtraTask) -> None:
        """Run ``task(stop)`` beside the agent loop (e.g. the service proxy)."""
        self._extra.append((name, task))

    async def register(self) -> Node:
        return await register_node(self.objects, self.node)

    async def _join(self, stop: asyncio.Event) -> bool:
        """Register and beat once; a store that does not answer yet (starting,
        overloaded) is waited for, as kubelet waits for its API server.
        False when stopped first."""
        backoff = Backoff(base=0.5, cap=10.0)
        while not stop.is_set():
            try:
                await self.register()
                await self.heartbeat.beat()
                return True
            except StoreUnavailable as exc:
                delay = backoff.next()
                log.warning(
                    "node %s: cannot register yet (%s); again in %.1fs", self.node_name, exc, delay
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
        return False

    def controller(self) -> Controller:
        """The pod workers: one key per pod uid, fed by the cache and the relist."""
        self.queue = WorkQueue()
        return Controller(
            f"agent {self.node_name}",
            self.reconcile,
            self.cache,
            # ConfigMaps and Secrets: a missing one appears, a mounted one changes
            watches={
                "pods": self._pod_keys,
                "nodes": self._node_keys,
                "configmaps": self._config_keys,
                "secrets": self._config_keys,
            },
            workers=self.settings.workers,
            queue=self.queue,
            stop_grace_seconds=self.settings.stop_grace_seconds,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Register, heartbeat and reconcile until ``stop``; pods keep running after."""
        if not await self._join(stop):
            return
        controller = self.controller()
        tasks: list[asyncio.Task[Any]] = [
            asyncio.create_task(self.heartbeat.run(stop), name="heartbeat"),
            asyncio.create_task(controller.run(stop), name="agent-pods"),
            asyncio.create_task(self._relist_loop(stop), name="agent-relist"),
            asyncio.create_task(self._events_loop(stop), name="agent-runtime-events"),
        ]
        tasks += [asyncio.create_task(extra(stop), name=name) for name, extra in self._extra]
        try:
            await stop.wait()
        finally:
            # the pod workers finish what is in flight (the controller's grace)
            await asyncio.wait(tasks[1:2], timeout=self.settings.stop_grace_seconds + 5)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Exception):
                    log.error("%s ended with %r", task.get_name(), result)
            self.queue = None
            await self.close()

    async def close(self) -> None:
        """Stop probing and let in-flight pod work finish; leaves pods running."""
        await self.settle()
        await self.probes.close()
        await self.heartbeat.stop()
        if self.events is not None:
            await self.events.close()

    async def settle(self, timeout: float | None = None) -> None:
        """Wait for the pod work ``reconcile_once`` started (tests, shutdown)."""
        work = [t for t in self._inflight if not t.done()]
        if work:
            await asyncio.wait(work, timeout=timeout)

    # ------------------------------------------------------------ keys

    def _pod_keys(self, event: CacheEvent) -> set[str]:
        """A pod that is (or was) bound here: its uid. Not for the agent's own
        status write (kubelet's pod workers are not woken by the status its
        status manager wrote): the worker that wrote it knew it."""
        old, new = event.old, event.new
        if isinstance(old, Pod) and isinstance(new, Pod) and self._own_status_write(old, new):
            return set()
        return {
            pod.metadata.uid
            for pod in (old, new)
            if isinstance(pod, Pod) and pod.spec.node_name == self.node_name and pod.metadata.uid
        }

    def _own_status_write(self, old: Pod, new: Pod) -> bool:
        """Whether ``old`` -> ``new`` is this agent's status write and nothing else."""
        found = self._status_found.get(new.metadata.uid)
        return (
            found is not None
            and new.status == found
            and new.spec == old.spec
            and replace(new.metadata, resource_version="")
            == replace(old.metadata, resource_version="")
        )

    def _node_keys(self, event: CacheEvent) -> list[str]:
        """This node appearing or disappearing concerns every pod here."""
        obj = event.obj
        if obj is None or obj.name != self.node_name or (event.old is None) == (event.new is None):
            return []
        return self._all_keys()

    def _config_keys(self, event: CacheEvent) -> list[str]:
        """A ConfigMap or Secret changed: the pods here of its namespace."""
        obj = event.obj
        if obj is None:
            return []
        return sorted(
            p.metadata.uid
            for p in self.cache.pods_on(self.node_name)
            if p.metadata.uid and p.namespace == obj.namespace
        )

    def _all_keys(self) -> list[str]:
        uids = {p.metadata.uid for p in self.cache.pods_on(self.node_name) if p.metadata.uid}
        uids.update(self._sandboxes)
        uids.update(self._containers)
        return sorted(uids)

    def _wake(self, *uids: str) -> None:
        """Reconcile these pods (all, when none is named) soon."""
        if self.queue is None:
            return
        for uid in uids or self._all_keys():
            self.queue.add(uid)

    # ------------------------------------------------------------ the runtime

    async def _events_loop(self, stop: asyncio.Event) -> None:
        """Follow the runtime's event stream (if it has one): a change starts a relist."""
        backoff = Backoff(base=0.5, cap=10.0)
        while not stop.is_set():
            stream = self.runtime.events() if self.settings.runtime_events else None
            if stream is None:
                return
            try:
                async for _uid in _until(stream, stop):
                    # "" when the stream opens: what happened before, a relist finds
                    self.evented = True
                    self._relist_now.set()
                    backoff.reset()
            except Exception as exc:
                log.warning("agent %s: runtime events: %s", self.node_name, exc)
            finally:
                self.evented = False
                self._relist_now.set()  # catch up by listing
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=backoff.next())

    async def _relist_loop(self, stop: asyncio.Event) -> None:
        backoff = Backoff(base=0.5, cap=10.0)
        while not stop.is_set():
            delay = (
                self.settings.evented_relist_seconds
                if self.evented
                else self.settings.relist_seconds
            )
            self._relist_now.clear()
            try:
                await self.relist()
                # volume directories of pods gone while no worker saw them hold Secrets
                await self._remove_stale_pod_dirs(set(self._all_keys()), AgentPass())
                backoff.reset()
            except Exception as exc:
                delay = backoff.next()
                log.warning("agent %s: cannot list the runtime: %s", self.node_name, exc)
                self._relist_now.clear()  # not before the back-off
            await _first(stop, self._relist_now, timeout=delay)

    async def relist(self) -> list[str]:
        """List the runtime; queue (and return) the pods whose sandboxes or
        containers changed since the last relist. One relist at a time."""
        async with self._relist_lock:
            return await self._relist_locked()

    async def _relist_locked(self) -> list[str]:
        self._relists_started += 1
        started = self._relists_started
        sandboxes, containers = await self.runtime.list_pods()
        self.relists += 1
        sandboxes_by_uid: dict[str, list[Sandbox]] = {}
        for sandbox in sandboxes:
            sandboxes_by_uid.setdefault(sandbox.pod_uid, []).append(sandbox)
        containers_by_uid: dict[str, list[RuntimeContainer]] = {}
        for rc in containers:
            containers_by_uid.setdefault(rc.pod_uid, []).append(rc)
        fingerprints = {
            uid: _fingerprint(sandboxes_by_uid.get(uid, []), containers_by_uid.get(uid, []))
            for uid in set(sandboxes_by_uid) | set(containers_by_uid)
        }
        changed = sorted(
            uid
            for uid in set(fingerprints) | set(self._fingerprints)
            if fingerprints.get(uid) != self._fingerprints.get(uid)
        )
        # a listing begun before the action on a settled pod is older than
        # what the agent knows: it ends that only when it shows something else
        # (an exit, or a start not yet listed: the pod's reconcile relists)
        self._settled -= {
            uid for uid in self._settled if started > self._acted.get(uid, 0) or uid in changed
        }
        self._sandboxes, self._containers = sandboxes_by_uid, containers_by_uid
        self._fingerprints = fingerprints
        self._pod_of_container = {rc.id: rc.pod_uid for rc in containers}
        for cid, (uid, at) in list(self._started_here.items()):
            if at >= started:
                self._pod_of_container.setdefault(cid, uid)  # newer than this listing
            else:
                del self._started_here[cid]  # listed since, or gone
        self._snapshot_from = started
        self.probes.sync(
            self._probe_specs(self._pods_here(), sandboxes_by_uid, containers_by_uid),
            generation=started,
        )
        if changed:
            self._wake(*changed)
        return changed

    async def _fresh(self, uid: str) -> None:
        """Make sure the runtime was listed (after the agent last acted on
        ``uid``), unless what the action left is known (settled)."""
        if uid in self._settled:
            return
        while self._snapshot_from <= (acted := self._acted.get(uid, 0)):
            async with self._relist_lock:
                if self._snapshot_from <= acted:
                    await self._relist_locked()

    def _pods_here(self) -> dict[str, Pod]:
        """The pods bound to this node (while it exists), by uid, from the cache."""
        if self.cache.get(Node, "", self.node_name) is None:
            return {}
        return {p.metadata.uid: p for p in self.cache.pods_on(self.node_name) if p.metadata.uid}

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, uid: str) -> Result | None:
        """Bring one pod (by uid) to its spec, or stop what runs of it here."""
        report = AgentPass()
        await self._reconcile_pod(uid, report)
        if report.errors:
            raise Retry("; ".join(report.errors))
        delay = self._requeue.pop(uid, None)
        return Result(requeue_after=delay) if delay is not None else None

    async def _reconcile_pod(self, uid: str, report: AgentPass) -> None:
        self.reconciles += 1
        await self._fresh(uid)
        pod = self._pods_here().get(uid)
        sandboxes = self._sandboxes.get(uid, [])
        containers = self._containers.get(uid, [])
        if pod is not None and not pod.metadata.deletion_timestamp:
            report.pods += 1
            self._known[uid] = pod
            await self._sync_pod(pod, sandboxes, containers, report)
        elif pod is not None or sandboxes or containers:
            await self._teardown(uid, pod, sandboxes, containers, report)
        else:
            self._forget(uid)

    async def reconcile_once(self) -> AgentPass:
        """Catch the cache up, relist, and reconcile every pod once (tests; the
        agent must not be running). Waits ``pass_wait_seconds`` for the pods;
        ``settle`` waits for the rest."""
        await self.cache.sync()
        await self.relist()
        report = AgentPass()
        keys = self._all_keys()
        await self._remove_stale_pod_dirs(set(keys), report)
        tasks = []
        for uid in keys:
            task = asyncio.create_task(self._reconcile_pod(uid, report), name=f"pod-{uid[:8]}")
            self._inflight.add(task)
            task.add_done_callback(self._work_done)
            tasks.append(task)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.pass_wait_seconds)
            report.pending = [t.get_name() for t in pending]
        return report

    def _work_done(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("pod work %s failed", task.get_name(), exc_info=task.exception())

    # ------------------------------------------------------------ pod workers

    async def _sync_pod(
        self,
        pod: Pod,
        sandboxes: list[Sandbox],
        containers: list[RuntimeContainer],
        report: AgentPass,
    ) -> None:
        uid = pod.metadata.uid
        name = _pod_name(pod)
        try:
            sources = await self._config_sources(pod)
        except Exception as exc:
            report.errors.append(f"{name}: {exc}")
            log.warning("pod %s: %s", name, exc, exc_info=not isinstance(exc, GitkubeError))
            return
        self._clear_config_failures(pod, sources)
        if sandboxes and any(s.running for s in sandboxes):
            await self._refresh_volumes(pod, sources, report)
        failures = {c: f for (u, c), f in self._failures.items() if u == uid}
        plan = plan_pod(
            pod,
            sandboxes,
            containers,
            backoff=self.backoff,
            failures=failures,
            liveness_failed=self.probes.liveness_failed(),
            now=time.time(),
        )
        waiting = dict(plan.waiting)
        acted = settled = False
        begun = self._relists_started
        try:
            if not plan.is_empty():
                acted = True
                grace = float(pod.spec.termination_grace_period_seconds)
                await self._kill_and_remove(plan, grace, containers, report)
                sandbox = plan.sandbox
                if plan.create_sandbox:
                    sandbox = await self._create_sandbox(pod, plan, waiting, report)
                new: list[RuntimeContainer] = []
                if sandbox is not None and plan.start:
                    failed, new = await self._start_containers(pod, sandbox, plan, report, sources)
                    waiting.update(failed)
                    plan.sandbox = sandbox
                    self._probe_new(pod, sandbox, new)
                if plan.kill or plan.remove or plan.remove_sandboxes:
                    # what the runtime runs now (exit codes of what was stopped)
                    containers = [
                        rc for rc in await self.runtime.list_containers() if rc.pod_uid == uid
                    ]
                else:
                    containers = containers + new
                    # what a listing will show when nothing else happens: that
                    # listing is no news to wake this pod for (an exit is)
                    known = {s.id: s for s in sandboxes}
                    if sandbox is not None:
                        known[sandbox.id] = sandbox
                    self._fingerprints[uid] = _fingerprint(list(known.values()), containers)
                    # every start returned running: with the engine's events
                    # followed, an exit is heard of without looking again
                    # and no listing done since the action began (it may
                    # have seen an exit, which the fingerprint above hides)
                    settled = (
                        self.evented
                        and len(new) == len(plan.start)
                        and self._snapshot_from <= begun
                    )
                    if settled:
                        self._sandboxes[uid] = list(known.values())
                        self._containers[uid] = containers
            if plan.requeue_after is not None:
                self._requeue_in(plan.requeue_after, uid)
        except Exception as exc:
            report.errors.append(f"{name}: {exc}")
            log.warning("pod %s: %s", name, exc, exc_info=not isinstance(exc, GitkubeError))
            return
        finally:
            if acted:
                # see the outcome in a fresh relist soon (unless it is settled)
                self._acted_on(uid, settled=settled)
        sandbox = plan.sandbox
        await self._write_status(pod, sandbox, containers, waiting, report)

    async def _kill_and_remove(
        self,
        plan: PodPlan,
        grace: float,
        containers: list[RuntimeContainer],
        report: AgentPass,
    ) -> None:
        states = {rc.id: rc for rc in containers}

        async def kill(cid: str) -> None:
            rc = states.get(cid)
            known = self._known.get(rc.pod_uid) if rc is not None else None
            if known is not None and rc is not None:
                self._record_events(known, [killing(rc.name)])
            await self.runtime.stop_container(cid, grace_seconds=grace)
            report.killed.append(self._describe(rc, cid))

        async def remove(cid: str) -> None:
            rc = states.get(cid)
            if rc is not None and rc.state == "running" and cid not in plan.kill:
                await self.runtime.stop_container(cid, grace_seconds=grace)
            await self.runtime.remove_container(cid)
            report.removed.append(self._describe(rc, cid))

        await _gather_all([kill(cid) for cid in plan.kill])
        await _gather_all([remove(cid) for cid in plan.remove])
        for sandbox_id in plan.remove_sandboxes:
            await self.runtime.remove_sandbox(sandbox_id)
            report.sandboxes_removed.append(sandbox_id)

    async def _create_sandbox(
        self, pod: Pod, plan: PodPlan, waiting: dict[str, Waiting], report: AgentPass
    ) -> Sandbox | None:
        try:
            sandbox = await self.runtime.start_sandbox(pod, node_address=self.address)
        except Exception as exc:
            message = str(exc)
            log.warning("pod %s: sandbox: %s", _pod_name(pod), message)
            report.errors.append(f"{_pod_name(pod)}: sandbox: {message}")
            for step in plan.start:
                # no attempt was made: the retry waits the container's back-off
                self._record_failure(
                    pod.metadata.uid, step.container.name, "CreatePodSandboxError", message
                )
                waiting[step.container.name] = Waiting("CreatePodSandboxError", message)
            return None
        report.sandboxes_created.append(_pod_name(pod))
        return sandbox

    # ------------------------------------------------------------ config and volumes

    async def _config_sources(self, pod: Pod) -> ConfigSources:
        """The ConfigMaps and Secrets the pod names (those that exist)."""
        config_names, secret_names = referenced_names(pod)
        if not config_names and not secret_names:
            return ConfigSources()
        ns = pod.metadata.namespace or "default"
        cm_names, secret_list = sorted(config_names), sorted(secret_names)
        found = await asyncio.gather(
            *(self.objects.get(ConfigMap, ns, n) for n in cm_names),
            *(self.objects.get(Secret, ns, n) for n in secret_list),
        )
        cms = found[: len(cm_names)]
        secrets = found[len(cm_names) :]
        return ConfigSources(
            config_maps={
                n: o for n, o in zip(cm_names, cms, strict=True) if isinstance(o, ConfigMap)
            },
            secrets={
                n: o for n, o in zip(secret_list, secrets, strict=True) if isinstance(o, Secret)
            },
        )

    def _container_config(
        self, pod: Pod, container: Container, sources: ConfigSources, *, pod_ip: str
    ) -> tuple[Container, list[Mount]]:
        """The container with its env resolved and its mounts; raises ``ConfigMissing``."""
        resolved = resolve_container(pod, container, sources, pod_ip=pod_ip, host_ip=self.address)
        if not container.volume_mounts:
            return resolved, []
        volumes = {v.name: v for v in pod.spec.volumes}
        contents = resolve_volumes(pod, sources)
        mounts: list[Mount] = []
        for mount in container.volume_mounts:
            volume = volumes.get(mount.name)
            if volume is None or mount.name not in contents:
                raise ConfigMissing(
                    f"volumeMount {mount.name!r}: the pod has no configMap, secret or "
                    "emptyDir volume of that name"
                )
            host = pod_volumes.volume_dir(self.runtime.pods_dir, pod.metadata.uid, mount.name)
            if mount.sub_path:
                host = host / mount.sub_path
            projected = volume.config_map is not None or volume.secret is not None
            mounts.append(Mount(str(host), mount.mount_path, mount.read_only or projected))
        return resolved, mounts

    def _clear_config_failures(self, pod: Pod, sources: ConfigSources) -> None:
        """A container waiting on a missing ConfigMap, Secret or key starts as
        soon as it appears, without waiting out its back-off."""
        uid = pod.metadata.uid
        for container in [*pod.spec.init_containers, *pod.spec.containers]:
            failure = self._failures.get((uid, container.name))
            if failure is None or failure.reason != CREATE_CONTAINER_CONFIG_ERROR:
                continue
            try:
                self._container_config(pod, container, sources, pod_ip="")
            except ConfigMissing:
                continue
            del self._failures[(uid, container.name)]
            self.backoff.forget(restart_key(uid, container.name))

    async def _remove_stale_pod_dirs(self, keep: set[str], report: AgentPass) -> None:
        """Volume directories of pods that are gone (deleted while the agent
        was down, or a teardown cut short) hold Secret files: remove them."""
        pods_dir = self.runtime.pods_dir
        stale = set(await asyncio.to_thread(pod_volumes.known_pod_uids, pods_dir)) - keep
        for uid in sorted(stale):
            await asyncio.to_thread(pod_volumes.remove_pod_dir, pods_dir, uid)
            self._volume_digests.pop(uid, None)
            report.removed.append(f"volumes of pod {uid[:8]}")

    async def _write_volumes(self, pod: Pod, sources: ConfigSources) -> list[str]:
        """Write the pod's volumes (changed ones only); raises ``ConfigMissing``."""
        if not pod.spec.volumes:
            return []
        contents = resolve_volumes(pod, sources)
        digest = hashlib.sha256(repr(sorted(contents.items())).encode()).hexdigest()
        uid = pod.metadata.uid
        if self._volume_digests.get(uid) == digest:
            return []  # written already (files on disk are compared otherwise)
        changed = await asyncio.to_thread(
            pod_volumes.write_pod_volumes, self.runtime.pods_dir, uid, contents
        )
        self._volume_digests[uid] = digest
        return changed

    async def _refresh_volumes(self, pod: Pod, sources: ConfigSources, report: AgentPass) -> None:
        """Bring a running pod's mounted files up to date; a ConfigMap or Secret
        that went missing leaves the files as they were (as kubelet does)."""
        try:
            changed = await self._write_volumes(pod, sources)
        except ConfigMissing:
            return
        except OSError as exc:
            report.errors.append(f"{_pod_name(pod)}: volumes: {exc}")
            log.warning("pod %s: cannot write its volumes: %s", _pod_name(pod), exc)
            return
        for volume in changed:
            report.volumes_updated.append(f"{_pod_name(pod)}/{volume}")

    async def _start_containers(
        self,
        pod: Pod,
        sandbox: Sandbox,
        plan: PodPlan,
        report: AgentPass,
        sources: ConfigSources | None = None,
    ) -> tuple[dict[str, Waiting], list[RuntimeContainer]]:
        """Start the plan's containers concurrently: (waiting reasons of failures, started)."""
        uid = pod.metadata.uid
        waiting: dict[str, Waiting] = {}
        new: list[RuntimeContainer] = []
        sources = sources if sources is not None else ConfigSources()
        volumes_error: str | None = None
        try:
            await self._write_volumes(pod, sources)
        except ConfigMissing as exc:
            volumes_error = exc.message
        except OSError as exc:
            volumes_error = f"cannot write the pod's volumes: {exc}"

        async def start(step: StartContainer) -> None:
            cname = step.container.name
            label = f"{_pod_name(pod)}/{cname}#{step.attempt}"
            now = time.time()
            try:
                if volumes_error is not None and step.container.volume_mounts:
                    raise ConfigMissing(volumes_error)
                container, mounts = self._container_config(
                    pod, step.container, sources, pod_ip=sandbox.ip
                )
            except ConfigMissing as exc:
                # not an attempt: the restart back-off is not advanced
                self._record_failure(
                    uid, cname, CREATE_CONTAINER_CONFIG_ERROR, exc.message, attempt=step.attempt
                )
                report.start_failed.append(
                    f"{label}: {CREATE_CONTAINER_CONFIG_ERROR}: {exc.message}"
                )
                waiting[cname] = Waiting(CREATE_CONTAINER_CONFIG_ERROR, exc.message)
                return
            if step.restart:
                self.backoff.advance(restart_key(uid, cname), now=now)
            try:
                rc = await self.runtime.start_container(
                    pod, sandbox, container, attempt=step.attempt, mounts=mounts
                )
            except ContainerStartError as exc:
                self._start_failed(uid, step, exc.reason, exc.message, report, label)
                waiting[cname] = Waiting(exc.reason, exc.message)
                return
            except GitkubeError as exc:
                self._start_failed(uid, step, "RunContainerError", str(exc), report, label)
                waiting[cname] = Waiting("RunContainerError", str(exc))
                return
            self._failures.pop((uid, cname), None)
            new.append(rc)
            report.started.append(label)

        await _gather_all([start(step) for step in plan.start])
        return waiting, new

    def _start_failed(
        self,
        uid: str,
        step: StartContainer,
        reason: str,
        message: str,
        report: AgentPass,
        label: str,
    ) -> None:
        self._record_failure(
            uid, step.container.name, reason, message, attempt=step.attempt, counted=step.restart
        )
        report.start_failed.append(f"{label}: {reason}: {message}")
        log.warning("%s: %s: %s", label, reason, message)

    def _record_failure(
        self,
        uid: str,
        cname: str,
        reason: str,
        message: str,
        *,
        attempt: int = -1,
        counted: bool = False,
    ) -> None:
        """A start of ``cname`` failed: its retry waits the container's back-off,
        advanced here unless the start (a restart) ``counted`` already."""
        now = time.time()
        self._failures[(uid, cname)] = StartFailure(reason, message, now, attempt=attempt)
        key = restart_key(uid, cname)
        if not counted:
            self.backoff.advance(key, now=now)
        self._requeue_in(self.backoff.delay(key), uid)

    async def _teardown(
        self,
        uid: str,
        pod: Pod | None,
        sandboxes: list[Sandbox],
        containers: list[RuntimeContainer],
        report: AgentPass,
    ) -> None:
        known = pod or self._known.get(uid)
        grace = (
            float(known.spec.termination_grace_period_seconds)
            if known is not None
            else self.settings.default_grace_seconds
        )
        plan = plan_teardown(sandboxes, containers)
        try:
            if not plan.is_empty():
                await self._kill_and_remove(plan, grace, containers, report)
                self._acted_on(uid)
        except Exception as exc:
            name = _pod_name(known) if known else uid
            report.errors.append(f"{name}: stop: {exc}")
            log.warning("pod %s: stop: %s", name, exc, exc_info=not isinstance(exc, GitkubeError))
            return
        if plan.is_empty():
            await asyncio.to_thread(pod_volumes.remove_pod_dir, self.runtime.pods_dir, uid)
            self._volume_digests.pop(uid, None)
            self._forget(uid)
        if pod is not None and pod.metadata.deletion_timestamp:
            # graceful deletion: the containers are gone, now the object goes
            try:
                if await self.objects.delete(pod):
                    report.pods_deleted.append(_pod_name(pod))
            except Conflict:
                self._requeue_in(0.0, uid)

    def _forget(self, uid: str) -> None:
        """Nothing of ``uid`` runs here any more: drop what the agent kept about it."""
        for key in [k for k in self._failures if k[0] == uid]:
            del self._failures[key]
        for tracked in self.backoff.tracked_keys():
            if isinstance(tracked, tuple) and tracked and tracked[0] == uid:
                self.backoff.forget(tracked)
        self._known.pop(uid, None)
        self._acted.pop(uid, None)
        self._settled.discard(uid)
        self._requeue.pop(uid, None)
        self._status_found.pop(uid, None)

    # ------------------------------------------------------------ status

    def _ready_ids(self, pod: Pod, containers: list[RuntimeContainer]) -> set[str]:
        specs = {c.name: c for c in pod.spec.containers}
        ready: set[str] = set()
        for rc in containers:
            spec = specs.get(rc.name)
            if rc.state != "running" or spec is None:
                continue
            if spec.readiness_probe is None or self.probes.ready(rc.id):
                ready.add(rc.id)
        return ready

    def _record_events(self, pod: Pod, events: list[PodEvent]) -> None:
        if self.events is None:
            return
        for type_, reason, message in events:
            self.events.record(pod, type_, reason, message)

    async def _write_status(
        self,
        pod: Pod,
        sandbox: Sandbox | None,
        containers: list[RuntimeContainer],
        waiting: dict[str, Waiting],
        report: AgentPass,
    ) -> None:
        """Write the pod's status when it changed; compare-and-swap, re-read on conflict."""
        current: Pod | None = pod
        for _ in range(self.settings.status_write_attempts):
            if current is None or current.metadata.uid != pod.metadata.uid:
                return
            if current.spec.node_name != self.node_name or current.metadata.deletion_timestamp:
                return
            if current.status.phase in TERMINAL_PHASES:
                return  # its final status stays as written
            status = compute_pod_status(
                current,
                sandbox,
                containers,
                waiting=waiting,
                ready_ids=self._ready_ids(current, containers),
                node_address=self.address,
                runtime_name=self.runtime.name,
                now=now_iso(),
            )
            # the status last found right (written or not; before the write:
            # the cache may hear of it before this resumes): an event that
            # brings exactly it is no news, one that brings another is
            self._status_found[pod.metadata.uid] = status
            if to_dict(status) == to_dict(current.status):
                return
            try:
                updated = await self.objects.update_status(current, status)
            except Conflict:
                current = await self.objects.get(Pod, pod.namespace, pod.name)
                continue
            report.statuses_written.append(_pod_name(pod))
            self._record_events(updated, pod_events(current, updated))
            return
        report.errors.append(f"{_pod_name(pod)}: status kept conflicting; trying again later")

    # ------------------------------------------------------------ probes

    def _probe_specs(
        self,
        pods: dict[str, Pod],
        sandboxes: dict[str, list[Sandbox]],
        containers: dict[str, list[RuntimeContainer]],
    ) -> list[ProbeSpec]:
        specs: list[ProbeSpec] = []
        for uid, pod in pods.items():
            if pod.metadata.deletion_timestamp:
                continue
            sandbox = next((s for s in sandboxes.get(uid, []) if s.running), None)
            if sandbox is None:
                continue
            by_name = {c.name: c for c in pod.spec.containers}
            for rc in containers.get(uid, []):
                spec = by_name.get(rc.name)
                if spec is None or rc.state != "running":
                    continue
                target = ProbeTarget(
                    container_id=rc.id,
                    node_address=self.address,
                    pod_ip=sandbox.ip,
                    host_ports=dict(sandbox.host_ports),
                )
                started_at = rc.started_at or time.time()
                probes: list[tuple[ProbeKind, Probe | None]] = [
                    ("liveness", spec.liveness_probe),
                    ("readiness", spec.readiness_probe),
                ]
                for kind, probe in probes:
                    if probe is not None:
                        specs.append(ProbeSpec(kind, probe, spec, target, started_at))
        return specs

    def _probe_new(self, pod: Pod, sandbox: Sandbox, new: list[RuntimeContainer]) -> None:
        """Probe the containers just started at once, not from the next relist
        (their ``initialDelaySeconds`` counts from their start)."""
        uid = pod.metadata.uid
        if not self.probe_on_start:
            return
        for rc in new:
            self._pod_of_container[rc.id] = uid
            self._started_here[rc.id] = (uid, self._relists_started)
        specs = self._probe_specs({uid: pod}, {uid: [sandbox]}, {uid: new})
        if specs:
            self.probes.add(specs, generation=self._relists_started)

    def _on_probe_change(self, container_id: str, kind: ProbeKind, ok: bool) -> None:
        uid = self._pod_of_container.get(container_id)
        if uid:
            self._wake(uid)

    async def _on_reregister(self) -> None:
        self._wake()

    # ------------------------------------------------------------ helpers

    def _requeue_in(self, seconds: float, uid: str) -> None:
        """Reconcile pod ``uid`` again after ``seconds`` (the earliest ask wins)."""
        seconds = max(0.0, seconds)
        if uid not in self._requeue or seconds < self._requeue[uid]:
            self._requeue[uid] = seconds

    def _acted_on(self, uid: str, *, settled: bool = False) -> None:
        """The agent changed what runs of ``uid``: its next reconcile waits for
        a fresh relist, at once; unless ``settled`` (what runs is known: see
        ``_settled``), then no relist is needed until a listing says otherwise."""
        self._acted[uid] = self._relists_started
        if settled:
            self._settled.add(uid)
        else:
            self._settled.discard(uid)
            self._requeue_in(0.0, uid)

    @staticmethod
    def _describe(rc: RuntimeContainer | None, cid: str) -> str:
        if rc is None:
            return cid[:12]
        return f"{_rc_pod_name(rc)}/{rc.name}#{rc.attempt}"


async def _first(stop: asyncio.Event, wake: asyncio.Event, *, timeout: float) -> None:
    """Wait until ``stop`` or ``wake`` is set, or ``timeout`` seconds."""
    waiters = [asyncio.create_task(stop.wait()), asyncio.create_task(wake.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


async def _until(stream: AsyncIterator[str], stop: asyncio.Event) -> AsyncIterator[str]:
    """The items of ``stream`` until it ends or ``stop`` is set (then it is closed)."""
    stopped = asyncio.create_task(stop.wait())
    try:
        while not stop.is_set():
            item = asyncio.ensure_future(anext(stream))
            done, _ = await asyncio.wait({item, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if item not in done:
                item.cancel()
                with contextlib.suppress(BaseException):
                    await item
                return
            try:
                value = item.result()
            except StopAsyncIteration:
                return
            yield value
    finally:
        stopped.cancel()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def _gather_all(coros: list[Awaitable[None]]) -> None:
    """Run concurrently; every one finishes; the first error is raised after."""
    if not coros:
        return
    results = await asyncio.gather(*coros, return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    if errors:
        raise errors[0]
