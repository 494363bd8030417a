"""The service proxy: Kubernetes' userspace proxy mode, on asyncio.

One ``ServiceProxy`` runs on every agent (and in ``gitkube run``). For each
Service that is not headless it listens on every TCP Service port at the
proxy address, and for NodePort (and LoadBalancer) Services on the nodePort
too, and relays each accepted connection to one of the Service's ready
endpoints (``gitkube.services.relay``).

**Data path.** With ``relay="auto"`` (the default) the bytes are copied by
the native relay (``gitkube.services.native``: C threads, one per CPU, no
Python per request) when it can be built here, else by the asyncio relay;
``"native"`` insists on the former (an error if it cannot be had),
``"asyncio"`` asks for the latter. Both have the same semantics.

A pass is level-triggered, as kube-proxy's sync of its whole ruleset: it
reads every Service and Endpoints from the shared cache
(``gitkube.control.Cache``, fed by the store watch; the proxy never lists
the store), opens the listeners that are missing, closes those no longer
wanted (their established connections carry on), and hands the current
endpoints to each port's balancer. On the control kit it is one key
(``"all"``), queued by every Service and Endpoints change: a burst of
changes is one pass.

A port that cannot be served — already in use on the machine, claimed by
another Service, an unsupported protocol — is logged once and recorded in
the store under ``PROXY_STATUS_PREFIX + "<node>/<namespace>/<name>"`` as
JSON (message and ports), attached to a lease so that a proxy that dies
takes its complaints with it; the key is deleted once the problem is gone.
Other Services are not affected, and a pass every ``resync_seconds`` tries
the port again while a problem lasts (and keeps its lease alive).

Several workers (``gitkube proxy --workers N``, see
``gitkube.services.workers``) each run a ``ServiceProxy`` with their own
``worker`` index, listening with SO_REUSEPORT on the same ports. Then:

- **Affinity.** The kernel spreads connections by their 4-tuple, so one
  client's connections would reach different workers, each with its own
  affinity table. A Service with sessionAffinity ClientIP is therefore served
  by worker 0 alone (the others do not listen on its ports): its pinning is
  exactly that of a single proxy.
- **Problems.** Every worker skips a port that another program holds, but
  only worker 0 writes (and withdraws) the records in the store.
- **Round-robin.** Each worker starts its rotation at its own index, so the
  first connections of the workers do not all go to the first endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from gitkube.api.keys import PROXY_STATUS_PREFIX
from gitkube.api.objects import Endpoints, Service, ServicePort
from gitkube.control import Cache, Controller, Result, constant_key
from gitkube.errors import NotFound, StoreError
from gitkube.services import RELAY_MODES, native
from gitkube.services.endpoints import endpoint_targets
from gitkube.services.relay import Balancer, NativeRelay, RawServer, Relay
from gitkube.services.workers import bind_shared, worker_group_pids
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

#: Kubernetes' default ClientIP affinity timeout (3 hours)
DEFAULT_AFFINITY_SECONDS = 10800
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
#: the proxy's one reconcile key: a pass covers every Service
ALL = "all"


def install_uvloop() -> bool:
    """Make new event loops uvloop ones when uvloop is installed; True if so."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on Linux
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def proxy_status_key(node: str, namespace: str, name: str) -> str:
    return f"{PROXY_STATUS_PREFIX}{node}/{namespace}/{name}"


@dataclass(frozen=True)
class Bind:
    """One socket the proxy listens on."""

    host: str
    port: int


@dataclass
class PortProblem:
    name: str
    port: int
    protocol: str
    error: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "port": self.port,
            "protocol": self.protocol,
            "error": self.error,
        }


@dataclass
class ProxyPass:
    """What one pass did."""

    opened: list[str] = field(default_factory=list)
    closed: list[str] = field(default_factory=list)
    #: "namespace/name" -> problems with its ports
    problems: dict[str, list[PortProblem]] = field(default_factory=dict)
    #: "namespace/name:port" -> number of ready endpoints
    endpoints: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class _Ask:
    bind: Bind
    owner: str  # "namespace/name"
    sport: ServicePort
    balancer: Balancer


@dataclass
class _Listener:
    bind: Bind
    owner: str  # "namespace/name"
    server: asyncio.AbstractServer | RawServer
    relay: Relay | NativeRelay


def _describe_bind_error(bind: Bind, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {bind.port} on {bind.host} is already in use on this machine"
    if exc.errno == errno.EACCES:
        return f"port {bind.port} on {bind.host}: permission denied (ports below 1024 need root)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"address {bind.host} is not an address of this machine"
    return f"cannot listen on {bind.host}:{bind.port}: {exc.strerror or exc}"


class ServiceProxy:
    """Listens on Service ports and relays connections to their endpoints."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        address: str = "127.0.0.1",
        node_name: str = "",
        connect_timeout: float = 5.0,
        resync_seconds: float = 10.0,
        status_ttl: int = 30,
        backlog: int = 1024,
        worker: int = 0,
        workers: int = 1,
        group: Callable[[], Iterable[int]] = worker_group_pids,
        relay: str = "auto",
        relay_threads: int = 0,
        cache: Cache | None = None,
    ) -> None:
        if not 0 <= worker < workers:
            raise ValueError(f"worker {worker} is not one of {workers} workers")
        if relay not in RELAY_MODES:
            raise ValueError(f"relay must be one of {', '.join(RELAY_MODES)}, not {relay!r}")
        self.objects = objects
        #: the process's shared cache (its own when none is given)
        self.cache = cache if cache is not None else Cache(objects.store)
        self.address = address
        self.node_name = node_name or socket.gethostname()
        self.connect_timeout = connect_timeout
        self.resync_seconds = resync_seconds
        self.status_ttl = status_ttl
        self.backlog = backlog
        self.worker = worker
        self.workers = workers
        #: the processes whose listeners this one may join (SO_REUSEPORT)
        self.group = group
        self._listeners: dict[Bind, _Listener] = {}
        #: (namespace, name, port name) -> balancer, shared by port and nodePort
        self._balancers: dict[tuple[str, str, str], Balancer] = {}
        self._reported: dict[str, bytes] = {}
        #: the reports stored by an earlier proxy of this node were looked for
        self._swept = False
        self._lease = 0
        self.last_pass = ProxyPass()
        #: the native relay engine, or None for the asyncio relay
        self.engine: native.Engine | None = None
        if relay != "asyncio":
            try:
                self.engine = native.engine(relay_threads)
            except native.NativeUnavailable as exc:
                if relay == "native":
                    raise
                log.warning("proxy: using the asyncio relay: %s", exc)

    @property
    def data_path(self) -> str:
        """ "native (N threads)" or "asyncio": what copies the bytes."""
        if self.engine is None:
            return "asyncio"
        return f"native ({self.engine.threads} threads)"

    # ------------------------------------------------------------ inspection

    @property
    def listening(self) -> dict[Bind, str]:
        """Every socket listened on, and the Service port it serves."""
        return {bind: lst.relay.balancer.name for bind, lst in self._listeners.items()}

    @property
    def connections(self) -> int:
        """Client connections accepted and not yet closed, over all listeners."""
        return sum(lst.relay.count for lst in self._listeners.values())

    def balancer(self, namespace: str, name: str, port_name: str = "") -> Balancer | None:
        return self._balancers.get((namespace, name, port_name))

    # ------------------------------------------------------------ reconcile

    async def reconcile_once(self) -> ProxyPass:
        """Catch the cache up with the store, then one pass (what a test calls)."""
        await self.cache.sync()
        return await self._sync()

    async def reconcile(self, key: str) -> Result | None:
        """One pass (the key is always ``ALL``); again after ``resync_seconds``
        while a port cannot be served or clients are pinned (affinity)."""
        result = await self._sync()
        pinned = any(b.affinity for b in self._balancers.values())
        if result.problems or pinned:
            return Result(requeue_after=self.resync_seconds)
        return None

    async def _sync(self) -> ProxyPass:
        services = self.cache.list(Service)
        endpoints = {(ep.namespace, ep.name): ep for ep in self.cache.list(Endpoints)}
        loop = asyncio.get_running_loop()
        now = loop.time()
        result = ProxyPass()

        # What each Service asks for, in a stable order.
        asks: list[_Ask] = []
        balancers: dict[tuple[str, str, str], Balancer] = {}
        for service in sorted(services, key=lambda s: (s.namespace, s.name)):
            if service.spec.headless:
                continue
            owner = f"{service.namespace}/{service.name}"
            for sport in service.spec.ports:
                if (sport.protocol or "TCP") != "TCP":
                    result.problems.setdefault(owner, []).append(
                        _problem(sport, f"protocol {sport.protocol} is not proxied (TCP only)")
                    )
                    continue
                key = (service.namespace, service.name, sport.name)
                affinity = _affinity_seconds(service)
                balancer = self._balancers.get(key) or Balancer(
                    f"{owner}:{sport.name or sport.port}", start=self.worker
                )
                balancer.set_targets(
                    endpoint_targets(endpoints.get(key[:2]), sport.name, sport.protocol)
                )
                balancer.set_affinity(affinity)
                balancer.expire(now)
                balancers[key] = balancer
                result.endpoints[f"{owner}:{sport.port}"] = len(balancer.targets)
                ports = [sport.port]
                if service.spec.type in NODE_PORT_TYPES and sport.node_port:
                    ports.append(sport.node_port)
                asks.extend(
                    _Ask(Bind(self.address, port), owner, sport, balancer) for port in ports
                )
        self._balancers = balancers

        # A socket already served stays with its Service while that Service
        # still asks for it; the rest go to the first asker in name order.
        wanted: dict[Bind, _Ask] = {}
        for ask in asks:
            holder = self._listeners.get(ask.bind)
            if holder is not None and holder.owner == ask.owner and ask.bind not in wanted:
                wanted[ask.bind] = ask
        for ask in asks:
            claimed = wanted.setdefault(ask.bind, ask)
            if claimed.owner != ask.owner:
                result.problems.setdefault(ask.owner, []).append(
                    _problem(
                        ask.sport,
                        f"port {ask.bind.port} is already used by Service {claimed.owner}",
                    )
                )
            elif claimed is not ask and claimed.balancer is not ask.balancer:
                result.problems.setdefault(ask.owner, []).append(
                    _problem(ask.sport, f"port {ask.bind.port} is listed twice")
                )

        if self.worker:  # worker 0 alone serves affinity Services
            wanted = {b: a for b, a in wanted.items() if not a.balancer.affinity_timeout}

        # Close what is no longer wanted (or moved to another Service/port).
        for bind, listener in list(self._listeners.items()):
            want = wanted.get(bind)
            if (
                want is None
                or want.owner != listener.owner
                or want.balancer is not listener.relay.balancer
            ):
                listener.server.close()
                del self._listeners[bind]
                result.closed.append(f"{bind.host}:{bind.port}")

        for bind, ask in wanted.items():
            if bind in self._listeners:
                continue
            balancer = ask.balancer
            relay: Relay | NativeRelay
            if self.engine is not None:
                relay = NativeRelay(
                    balancer, loop=loop, engine=self.engine, connect_timeout=self.connect_timeout
                )
            else:
                relay = Relay(balancer, loop=loop, connect_timeout=self.connect_timeout)
            try:
                server = await self._listen(loop, relay, bind)
            except OSError as exc:
                problem = _problem(ask.sport, _describe_bind_error(bind, exc))
                problem.port = bind.port
                result.problems.setdefault(ask.owner, []).append(problem)
                continue
            self._listeners[bind] = _Listener(bind, ask.owner, server, relay)
            result.opened.append(f"{bind.host}:{bind.port}")
            log.info("proxy: %s listening on %s:%d", balancer.name, bind.host, bind.port)

        if self.worker == 0:
            await self._report(result.problems)
        self.last_pass = result
        return result

    async def _listen(
        self, loop: asyncio.AbstractEventLoop, relay: Relay | NativeRelay, bind: Bind
    ) -> asyncio.AbstractServer | RawServer:
        if isinstance(relay, NativeRelay):
            if self.workers == 1:
                sock = _bind_plain(bind.host, bind.port)
            else:
                sock = bind_shared(bind.host, bind.port, group=self.group)
            try:
                sock.listen(self.backlog)
                return relay.serve(sock)
            except BaseException:
                sock.close()
                raise
        if self.workers == 1:
            return await loop.create_server(
                relay.factory(), bind.host, bind.port, reuse_address=True, backlog=self.backlog
            )
        sock = bind_shared(bind.host, bind.port, group=self.group)
        try:
            return await loop.create_server(relay.factory(), sock=sock, backlog=self.backlog)
        except BaseException:
            sock.close()
            raise

    # ------------------------------------------------------------ status

    async def _report(self, problems: dict[str, list[PortProblem]]) -> None:
        desired: dict[str, bytes] = {}
        for owner, items in problems.items():
            namespace, name = owner.split("/", 1)
            message = "; ".join(p.error for p in items)
            desired[proxy_status_key(self.node_name, namespace, name)] = json.dumps(
                {
                    "node": self.node_name,
                    "namespace": namespace,
                    "service": name,
                    "message": message,
                    "ports": [p.to_dict() for p in items],
                },
                sort_keys=True,
            ).encode()
        store = self.objects.store
        fresh_lease = False
        if desired:
            if self._lease:
                try:
                    await store.refresh_lease(self._lease)
                except NotFound:
                    self._lease = 0
            if not self._lease:
                self._lease = await store.grant_lease(self.status_ttl)
                fresh_lease = True
        for key, value in desired.items():
            if fresh_lease or self._reported.get(key) != value:
                await store.put(key, value, lease=self._lease)
                if self._reported.get(key) != value:
                    owner = key[len(PROXY_STATUS_PREFIX) + len(self.node_name) + 1 :]
                    log.error("proxy: Service %s: %s", owner, _msg(value))
        if self._swept:
            stale = [key for key in self._reported if key not in desired]
        else:  # once: what an earlier proxy of this node left (its lease may live on)
            stored, _ = await store.range(f"{PROXY_STATUS_PREFIX}{self.node_name}/")
            stale = [kv.key for kv in stored if kv.key not in desired]
        for key in stale:
            await store.delete(key)
            log.info("proxy: resolved %s", key[len(PROXY_STATUS_PREFIX) :])
        self._swept = True
        self._reported = desired

    # ------------------------------------------------------------ running

    def controller(self) -> Controller:
        return Controller(
            "proxy",
            self.reconcile,
            self.cache,
            watches=dict.fromkeys(("services", "endpoints"), constant_key(ALL)),
            initial_keys=[ALL],
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Reconcile on Service and Endpoints changes until ``stop``; then close."""
        try:
            await self.controller().run(stop)
        finally:
            await self.close()

    async def close(self, *, drop_connections: bool = True) -> None:
        """Stop listening, end relayed connections, withdraw this node's reports."""
        listeners = list(self._listeners.values())
        self._listeners.clear()
        for listener in listeners:
            listener.server.close()
            if drop_connections:
                listener.relay.close_all()
        for listener in listeners:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(listener.server.wait_closed(), 1.0)
        with contextlib.suppress(StoreError, OSError):
            for key in self._reported:
                await self.objects.store.delete(key)
            if self._lease:
                await self.objects.store.revoke_lease(self._lease)
        self._reported = {}
        self._lease = 0


def _bind_plain(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` as ``loop.create_server`` would bind it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _problem(sport: ServicePort, error: str) -> PortProblem:
    return PortProblem(sport.name, sport.port, sport.protocol or "TCP", error)


def _msg(value: bytes) -> str:
    return str(json.loads(value)["message"])


def _affinity_seconds(service: Service) -> float:
    if service.spec.session_affinity != "ClientIP":
        return 0.0
    config = service.spec.session_affinity_config
    if config is not None and config.client_ip is not None and config.client_ip.timeout_seconds:
        return float(config.client_ip.timeout_seconds)
    return float(DEFAULT_AFFINITY_SECONDS)
