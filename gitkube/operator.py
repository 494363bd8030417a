"""The operator: every loop of gitkube wired into one process.

- ``role="run"``: the sync loop, the controllers (scheduler, replication,
  ReplicaSets, Deployments, node lifecycle, endpoints), N local agents, the
  service proxy and the HTTP server: the whole system on one machine.
  The controllers include the cluster IP allocator (``--service-cidr``).
- ``role="master"``: the sync loop, the controllers and the HTTP server, for
  a cluster whose agents run on other machines (``gitkube agent``). Several
  masters may run; one leads through a store lease, and only the leader syncs
  and runs controllers. Webhooks reaching a follower are handed to the leader
  through the store (``SYNC_REQUEST_KEY``).

Components never call each other: they meet in the store. One shared
cache (``gitkube.control.Cache``) per process feeds every controller; in the
master role every controller write carries the leader's fence, as the
sync's do. A clean stop (SIGTERM, Ctrl-C) leaves pods running; the next
start adopts them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, Literal

from gitkube.agent_factory import AgentOptions
from gitkube.api.keys import (
    DELIVERIES_KEY,
    HEARTBEAT_PREFIX,
    PROXY_STATUS_PREFIX,
    SERVICE_IP_PREFIX,
    SYSTEM,
)
from gitkube.api.objects import Deployment, Pod
from gitkube.config import Settings, redact_url
from gitkube.control import Applier, Cache
from gitkube.election import LeaderElection
from gitkube.errors import ConfigError, GitkubeError
from gitkube.hooks import ensure_notify_token
from gitkube.server.http import DeliveryLog, HttpServer
from gitkube.server.metrics import Metrics
from gitkube.server.webhooks import ReplayGuard
from gitkube.store.base import Compare, Put, Store
from gitkube.store.objects import ObjectStore

log = logging.getLogger("gitkube.operator")

#: a webhook received by a master that does not lead, for the leader to act on
SYNC_REQUEST_KEY = SYSTEM + "sync/request"
#: webhook delivery IDs answered in the last 24 hours (replays are refused)
SEEN_DELIVERIES_KEY = SYSTEM + "webhooks/seen"

Role = Literal["run", "master"]
Task = Callable[[asyncio.Event], Coroutine[Any, Any, object]]


def node_names(settings: Settings) -> list[str]:
    base = settings.node or socket.gethostname()
    if settings.nodes <= 0:
        return []
    if settings.nodes == 1:
        return [base]
    return [f"{base}-{i}" for i in range(1, settings.nodes + 1)]


def local_git_dir(repo: str) -> Path | None:
    """The git directory of a repository on this machine, if ``repo`` is one."""
    path = Path(repo.removeprefix("file://")).expanduser()
    if not path.exists():
        return None
    if (path / "HEAD").is_file() and (path / "refs").is_dir():
        return path.resolve()
    if (path / ".git" / "HEAD").is_file():
        return (path / ".git").resolve()
    return None


class RefWatcher:
    """Triggers a sync when the tracked branch of a local repository moves
    (watchdog on its refs); the status branch never triggers."""

    def __init__(self, git_dir: Path, branch: str, status_branch: str, trigger: Callable[[], None]):
        self.git_dir = git_dir
        self.branch = branch
        self.status_branch = status_branch
        self.trigger = trigger
        self._observer: Any = None

    def relevant(self, path: str) -> bool:
        rel = os.path.relpath(path, self.git_dir).replace(os.sep, "/").removesuffix(".lock")
        if rel == "packed-refs":
            return True
        return rel == f"refs/heads/{self.branch}"

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        from watchdog.events import FileSystemEvent, FileSystemEventHandler
        from watchdog.observers import Observer

        watcher = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event: FileSystemEvent) -> None:
                # reads (git fetch opening the ref) must not count: only writes
                if event.event_type not in ("created", "modified", "moved", "deleted", "closed"):
                    return
                paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
                if any(p and watcher.relevant(p) for p in paths):
                    loop.call_soon_threadsafe(watcher.trigger)

        observer = Observer()
        observer.schedule(Handler(), str(self.git_dir), recursive=False)
        refs = self.git_dir / "refs" / "heads"
        refs.mkdir(parents=True, exist_ok=True)
        observer.schedule(Handler(), str(refs), recursive=True)
        observer.daemon = True
        observer.start()
        self._observer = observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join(timeout=5)
            self._observer = None


class Operator:
    def __init__(self, settings: Settings, *, role: Role = "run", identity: str = "") -> None:
        if not settings.repo:
            raise ConfigError("no repository: pass --repo URL or set GITKUBE_REPO")
        if settings.nodes < 0:
            raise ConfigError("--nodes must be 0 or more")
        #: the local agents' settings (``gitkube run``), checked before anything starts
        self.agent_options: AgentOptions | None = (
            AgentOptions.from_settings(settings) if role == "run" else None
        )
        self.settings = settings
        self.role = role
        self.identity = identity or f"{socket.gethostname()}-{os.getpid()}"
        self.state_dir = Path(settings.state_dir).expanduser().resolve()
        self.metrics = Metrics()
        self.store: Store | None = None
        self.objects: ObjectStore | None = None
        #: the process's one cache, shared by every loop
        self.cache: Cache | None = None
        self.sync: Any = None
        #: the status write-back (a StatusWriteback), when it is on
        self.writeback: Any = None
        self.http: HttpServer | None = None
        self.election: LeaderElection | None = None
        self.agents: list[Any] = []
        self.synced_once = asyncio.Event()
        #: the last revision a sync finished with (a webhook for it needs no new sync)
        self.done_revision = ""
        self._runtimes: list[Any] = []
        #: event recorders of the loops, flushed on stop
        self._recorders: list[Any] = []

    # ------------------------------------------------------------ wiring

    async def _build(self) -> None:
        from gitkube.store.factory import open_store
        from gitkube.sync.loop import SyncLoop, SyncSettings
        from gitkube.sync.sops import SopsDecryptor
        from gitkube.sync.source import GitSource
        from gitkube.sync.verify import CommitVerifier, policy_from_settings

        s = self.settings
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = await open_store(s.store_url())
        self.objects = ObjectStore(self.store)
        # the proxies' reports too (the status report reads them from the cache),
        # and the cluster IP claims (the allocator's)
        self.cache = Cache(
            self.store, raw_prefixes=(HEARTBEAT_PREFIX, PROXY_STATUS_PREFIX, SERVICE_IP_PREFIX)
        )
        source = GitSource(s.repo, ref=s.branch, path=s.path, cache_dir=self.state_dir / "git")
        policy = policy_from_settings(s)
        decryptor = (
            SopsDecryptor(s.decryption_key_file, work_dir=self.state_dir / "sops")
            if s.decryption_key_file
            else None
        )
        verifier = (
            CommitVerifier(policy, work_dir=self.state_dir / "verify") if policy.enabled else None
        )
        writeback = None
        if s.writeback:
            from gitkube.sync.writeback import StatusWriteback, StatusWriter

            writer = StatusWriter(
                s.repo,
                branch=s.status_branch,
                cache_dir=self.state_dir / "status-git",
                synced_branch=s.branch,
                signing_key=s.status_signing_key,
            )
            writeback = StatusWriteback(writer, self.objects, cache=self.cache)
        self.writeback = writeback

        async def after_sync(result: Any) -> None:
            if result.revision and not result.retryable:
                self.done_revision = result.revision
            self.metrics.syncs.labels(outcome=result.outcome).inc()
            self.metrics.sync_duration.observe(result.duration_seconds)
            if result.refusal:
                self.metrics.refusals.inc()
            if result.outcome in ("Succeeded", "Unchanged"):
                self.metrics.last_synced.set(time.time())
                self.synced_once.set()
            if writeback is not None:
                # every pass: health changes between commits reach git too; the
                # writer commits only when the outcome (fingerprint) changed
                await writeback(result)

        self.sync = SyncLoop(
            self.objects,
            source,
            SyncSettings(
                prune=s.prune,
                self_heal=s.self_heal,
                interval_seconds=s.interval_seconds(),
                unsupported_kinds=s.unsupported_kinds_mode(),
            ),
            after_sync=after_sync,
            verifier=verifier,
            decryptor=decryptor,
            cache=self.cache,
        )

    def _controllers(self) -> list[tuple[str, Task]]:
        from gitkube.planner import (
            NodeLifecycleController,
            NodeLifecycleControllerSettings,
            ReplicationManager,
            SchedulerLoop,
        )
        from gitkube.planner.deployment_loop import DeploymentController
        from gitkube.planner.replicaset_loop import ReplicaSetController
        from gitkube.services.allocator import ClusterIPAllocator
        from gitkube.services.controller import EndpointsController
        from gitkube.services.loadbalancer import LoadBalancerStatusController

        assert self.objects is not None and self.cache is not None
        s = self.settings
        # a master's controllers write only while its term lasts
        fence = self.election.fence if self.election is not None else None
        cache, applier = self.cache, Applier(self.objects, fence=fence)

        def observed(name: str) -> Applier:
            """The applier of one loop, recording the events of its writes."""
            from gitkube.control.events import COMPONENTS, recording
            from gitkube.store.events import EventRecorder

            assert self.objects is not None
            recorder = EventRecorder(self.objects, COMPONENTS[name])
            self._recorders.append(recorder)
            return applier.observed(recording(recorder))

        scheduler = SchedulerLoop(
            self.objects,
            on_scheduled=lambda _key, latency: self.metrics.scheduling_latency.observe(latency),
            cache=cache,
            applier=observed("scheduler"),
        )
        lifecycle = NodeLifecycleController(
            self.objects,
            NodeLifecycleControllerSettings(
                grace_period_seconds=s.node_grace_seconds(),
                eviction_timeout_seconds=s.eviction_timeout_seconds(),
                monitor_period_seconds=min(5.0, s.node_grace_seconds() / 4),
                eviction_rate=s.node_eviction_rate,
                secondary_eviction_rate=s.secondary_node_eviction_rate,
                unhealthy_zone_threshold=s.unhealthy_zone_threshold,
                large_cluster_size_threshold=s.large_cluster_size_threshold,
            ),
            cache=cache,
            applier=observed("node-lifecycle"),
        )
        replication = ReplicationManager(self.objects, cache=cache, applier=observed("replication"))
        replicasets = ReplicaSetController(
            self.objects, cache=cache, applier=observed("replicaset")
        )
        deployments = DeploymentController(
            self.objects, cache=cache, applier=observed("deployment")
        )
        return [
            (
                "load-balancers",
                LoadBalancerStatusController(
                    self.objects, cache=cache, applier=observed("load-balancers")
                ).run,
            ),
            ("sync", self.sync.run),
            ("scheduler", scheduler.run),
            ("replication", replication.run),
            ("replicasets", replicasets.run),
            ("deployments", deployments.run),
            ("node-lifecycle", lifecycle.run),
            ("endpoints", EndpointsController(self.objects, cache=cache, applier=applier).run),
            (
                "clusterip",
                ClusterIPAllocator(
                    self.objects, cache=cache, applier=applier, service_cidr=s.service_cidr
                ).run,
            ),
        ]

    async def _local_agents(self) -> list[tuple[str, Task]]:
        """The local agents and the proxy, built as `gitkube agent` builds its own."""
        from gitkube.agent_factory import build_agent, build_proxy

        assert self.objects is not None and self.agent_options is not None
        options, cache = self.agent_options, self.cache
        tasks: list[tuple[str, Task]] = []
        names = node_names(self.settings)
        for name in names:
            agent, runtime = await build_agent(
                options,
                self.objects,
                node_name=name,
                cache=cache,
                # one proxy serves the local agents; it runs as the first one
                advertise_proxy=name == names[0],
            )
            self._runtimes.append(runtime)
            self.agents.append(agent)
            tasks.append((f"agent {name}", agent.run))
        if names and options.proxy:
            tasks.append(
                ("proxy", build_proxy(options, self.objects, node_name=names[0], cache=cache))
            )
        return tasks

    async def _http(self, stop: asyncio.Event) -> None:
        from gitkube.sync.report import build_status_report

        assert self.objects is not None and self.store is not None
        s = self.settings
        store = self.store

        async def persist(items: list[dict[str, Any]]) -> None:
            await store.put(DELIVERIES_KEY, json.dumps(items).encode())

        async def load_seen() -> bytes | None:
            kv = await store.get(SEEN_DELIVERIES_KEY)
            return kv.value if kv is not None else None

        async def persist_seen(raw: bytes) -> None:
            # merged with what other masters recorded (each master answers
            # webhooks), with a compare-and-swap so no master's IDs are lost
            for _ in range(10):
                merged = ReplayGuard()
                kv = await store.get(SEEN_DELIVERIES_KEY)
                if kv is not None:
                    merged.load(kv.value)
                merged.load(raw)
                done = await store.txn(
                    [Compare(SEEN_DELIVERIES_KEY, kv.mod_revision if kv else 0)],
                    [Put(SEEN_DELIVERIES_KEY, merged.to_json())],
                )
                if done.succeeded:
                    return
            log.warning("could not record webhook delivery IDs: the key kept changing")

        replays = ReplayGuard()
        seen = await store.get(SEEN_DELIVERIES_KEY)
        if seen is not None:
            replays.load(seen.value)

        async def status() -> dict[str, Any]:
            assert self.objects is not None
            report = await build_status_report(self.objects, cache=self.cache)
            data = report.to_dict()
            data["role"] = self.role
            if self.election is not None:
                data["leader"] = await self.election.leader()
            return data

        from gitkube.server.kubeapi import GitLocation, KubeApi

        async def git_location() -> GitLocation:
            return GitLocation(redact_url(s.repo), s.branch, s.path)

        kubeapi = KubeApi(self.objects, git=git_location)
        secret, api_token = s.read_webhook_secret(), s.read_api_token()
        dashboard = None
        if s.ui:
            from gitkube.server.ui import Dashboard
            from gitkube.sync.loop import resume, suspend

            objects, cache = self.objects, self.cache
            assert cache is not None
            dashboard = Dashboard(
                objects,
                cache,
                status=status,
                on_sync=lambda: self._on_push(None),
                suspend=lambda: suspend(objects, reason="from the web page"),
                resume=lambda: resume(objects),
                tokens=[t for t in (api_token, secret) if t],
                api_token=api_token,
                secure=s.ssl_context() is not None,
            )
        self.http = HttpServer(
            metrics=self.metrics,
            branch=s.branch,
            on_push=self._on_push,
            status=status,
            secret=secret,
            allow_unsigned=s.allow_unsigned_webhooks,
            notify_token=ensure_notify_token(self.state_dir),
            deliveries=DeliveryLog(persist),
            ready=self._ready,
            before_metrics=self._refresh_metrics,
            replays=replays,
            on_replays_change=persist_seen,
            load_replays=load_seen,
            limits=s.http_limits(),
            kubeapi=kubeapi,
            api_token=api_token,
            ssl_context=s.ssl_context(),
            dashboard=dashboard,
        )
        host, port = s.listen_host_port()
        try:
            await self.http.start(host, port)
        except OSError as exc:
            raise ConfigError(
                f"--listen {s.listen}: {exc.strerror or exc}; is another gitkube running? "
                "choose another address with --listen HOST:PORT"
            ) from exc
        scheme = "https" if self.http.ssl_context is not None else "http"
        if dashboard is not None:
            if not self.http.loopback and api_token is None:
                log.warning(
                    "the web page is off: beyond loopback it needs --api-token-file "
                    "(or pass --no-ui)"
                )
            else:
                log.info("web page on %s://%s:%d/", scheme, host, self.http.port)
        log.info(
            "HTTP on %s://%s:%d (webhooks under /hooks/, Kubernetes API under /api)",
            scheme,
            host,
            self.http.port,
        )
        try:
            await stop.wait()
        finally:
            await self.http.stop()

    def _ready(self) -> bool:
        if self.role == "master" and self.election is not None:
            return True  # a follower is ready to take over
        return self.synced_once.is_set()

    def _on_push(self, revision: str | None) -> None:
        if revision and revision == self.done_revision:
            log.debug("push of %s: already synced", revision[:12])
            return  # already synced: a burst of deliveries of one push is one sync
        leading = self.election is None or self.election.leading.is_set()
        if leading and self.sync is not None:
            log.debug("push of %s: sync triggered", (revision or "?")[:12])
            self.sync.trigger(revision)
        if self.election is not None and self.store is not None:
            store = self.store
            payload = json.dumps({"revision": revision or "", "time": time.time()}).encode()
            task = asyncio.get_running_loop().create_task(store.put(SYNC_REQUEST_KEY, payload))
            task.add_done_callback(_log_failure)

    async def _follow_sync_requests(self, stop: asyncio.Event) -> None:
        """Leader side of webhooks that reached another master."""
        # the watch waits for events, not for ``stop``: cancel it when told to
        # stop (else a term with no sync request never ends, and neither does
        # a master's shutdown)
        follower = asyncio.create_task(self._watch_sync_requests(stop))
        try:
            await _first(stop.wait(), follower)
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)

    async def _watch_sync_requests(self, stop: asyncio.Event) -> None:
        assert self.store is not None
        while not stop.is_set():
            try:
                start = await self.store.revision() + 1
                async for event in self.store.watch(SYNC_REQUEST_KEY, start_revision=start):
                    if event.type == "PUT" and self.sync is not None:
                        data = json.loads(event.kv.value or b"{}")
                        self.sync.trigger(data.get("revision") or None)
            except GitkubeError as exc:
                log.debug("sync request watch: %s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=1.0)

    async def _refresh_metrics(self) -> None:
        from gitkube.sync.report import build_status_report

        assert self.objects is not None
        report = await build_status_report(self.objects, cache=self.cache)
        self.metrics.objects.clear()
        counts: dict[tuple[str, str], int] = {}
        for obj in report.objects:
            key = (obj.kind, obj.health)
            counts[key] = counts.get(key, 0) + 1
        for (kind, health), n in counts.items():
            self.metrics.objects.labels(kind=kind, health=health).set(n)
        pods = self.cache.list(Pod) if self.cache is not None else (await self.objects.list(Pod))[0]
        phases: dict[str, int] = dict.fromkeys(
            ("Pending", "Running", "Succeeded", "Failed", "Unknown"), 0
        )
        for pod in pods:
            phases[pod.status.phase or "Unknown"] = phases.get(pod.status.phase or "Unknown", 0) + 1
        for phase, n in phases.items():
            self.metrics.pods.labels(phase=phase).set(n)
        deployments, _ = await self.objects.list(Deployment)
        self.metrics.set_deployments(deployments)

    # ------------------------------------------------------------ running

    async def run(self, stop: asyncio.Event) -> None:
        await self._build()
        assert self.store is not None
        loop = asyncio.get_running_loop()
        watcher = None
        git_dir = local_git_dir(self.settings.repo) if self.settings.watch else None
        if git_dir is not None:
            watcher = RefWatcher(
                git_dir, self.settings.branch, self.settings.status_branch, self.sync.trigger
            )
            watcher.start(loop)
            log.info("watching %s for pushes to %s", git_dir, self.settings.branch)
        assert self.cache is not None
        tasks: list[asyncio.Task[Any]] = [
            # first: every loop started after it finds it running and shares it
            asyncio.create_task(self.cache.run(stop), name="cache"),
            asyncio.create_task(self._http(stop), name="http"),
        ]
        try:
            if self.role == "run":
                for name, fn in [*self._controllers(), *await self._local_agents()]:
                    tasks.append(asyncio.create_task(fn(stop), name=name))
            else:
                self.election = LeaderElection(
                    self.store, self.identity, ttl=self.settings.leader_ttl
                )
                # a deposed leader's sync writes fail instead of landing
                self.sync.fence = self.election.fence
                if self.writeback is not None:
                    self.writeback.fence = self.election.fence
                tasks.append(asyncio.create_task(self._lead(stop), name="leader"))
            log.info(
                "gitkube %s: %s from %s (%s), store %s",
                self.role,
                self.settings.path or "/",
                self.sync.source.display_url,
                self.settings.branch,
                self.store.url,
            )
            done, _ = await asyncio.wait(
                [asyncio.create_task(stop.wait()), *tasks], return_when=asyncio.FIRST_EXCEPTION
            )
            for task in done:
                if task in tasks and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            stop.set()
            if watcher is not None:
                watcher.stop()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for task, result in zip(tasks, results, strict=True):
                if isinstance(result, Exception) and not isinstance(result, ConfigError):
                    log.error("%s ended with %r", task.get_name(), result)
            for recorder in self._recorders:
                with contextlib.suppress(Exception):
                    await recorder.close()
            for runtime in self._runtimes:
                with contextlib.suppress(Exception):
                    await runtime.close()
            if self.sync is not None:
                with contextlib.suppress(Exception):
                    await self.sync.source.close()
            await self.store.close()

    async def _lead(self, stop: asyncio.Event) -> None:
        """Run the sync and the controllers while this master leads."""
        assert self.election is not None
        election = asyncio.create_task(self.election.run(stop), name="election")
        try:
            while not stop.is_set():
                await _first(stop.wait(), self.election.leading.wait())
                if stop.is_set():
                    break
                self.metrics.leader.set(1)
                log.info("%s leads: syncing and running controllers", self.identity)
                term_stop = asyncio.Event()
                term = [
                    asyncio.create_task(fn(term_stop), name=name)
                    for name, fn in [
                        *self._controllers(),
                        ("sync-requests", self._follow_sync_requests),
                    ]
                ]
                await _first(stop.wait(), self.election.lost.wait())
                term_stop.set()
                await asyncio.gather(*term, return_exceptions=True)
                self.metrics.leader.set(0)
                if not stop.is_set():
                    log.warning("%s lost leadership; waiting to lead again", self.identity)
        finally:
            await self.election.resign()
            election.cancel()
            await asyncio.gather(election, return_exceptions=True)


async def _first(*aws: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _log_failure(task: asyncio.Task[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("could not record a sync request: %s", task.exception())
