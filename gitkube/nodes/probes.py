"""Liveness and readiness probes: handlers, thresholds and the workers that run them.

A handler runs one check: ``exec`` (a command in the container through the
runtime; exit code 0 passes), ``httpGet`` (an HTTP/1.0 GET; a 2xx or 3xx
answer passes), ``tcpSocket`` (a connection opens) or ``grpc`` (the gRPC
health protocol, ``grpc.health.v1.Health/Check``, answers SERVING). Containers are reached
as other machines reach them: the node address and the host port the
runtime published for the probed containerPort (by number or by name);
a port that is not published is tried on the pod's own address.

``ProbeState`` turns results into kubelet's verdict: it flips to failure after
``failureThreshold`` consecutive failures and to success after
``successThreshold`` consecutive successes. Readiness starts failed, liveness
starts passed. ``ProbeManager`` keeps one worker task per probed container
attempt, started ``initialDelaySeconds`` after the container started, and
calls back when a verdict changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from gitkube.api.objects import (
    Container,
    GRPCAction,
    HTTPGetAction,
    IntOrString,
    Probe,
    TCPSocketAction,
)
from gitkube.nodes.runtime.base import Runtime, port_key

log = logging.getLogger(__name__)

ProbeKind = Literal["liveness", "readiness"]


class ProbeError(Exception):
    """A probe that cannot be run as written (e.g. an unknown named port)."""


@dataclass(frozen=True)
class ProbeTarget:
    """Where a probed container attempt can be reached."""

    container_id: str
    #: the node's address: published host ports listen there
    node_address: str
    #: the pod's own address (container IP for Docker)
    pod_ip: str
    #: port_key(...) -> host port (Sandbox.host_ports)
    host_ports: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    message: str = ""


def resolve_port(container: Container, port: IntOrString) -> int:
    """The containerPort a probe names, by number or by the port's name."""
    if isinstance(port, int):
        return port
    text = str(port)
    if text.isdigit():
        return int(text)
    named = container.port_by_name(text)
    if named is None:
        raise ProbeError(f"container {container.name!r} has no port named {text!r}")
    return named.container_port


def resolve_address(
    container: Container, target: ProbeTarget, port: IntOrString, host: str
) -> tuple[str, int]:
    """(host, port) to connect to for a probe of ``port`` on ``container``."""
    container_port = resolve_port(container, port)
    published = target.host_ports.get(port_key(container.name, container_port, "TCP"))
    if published:
        return host or target.node_address, published
    return host or target.pod_ip or target.node_address, container_port


async def probe_http(
    action: HTTPGetAction, container: Container, target: ProbeTarget, *, timeout: float
) -> ProbeResult:
    host, port = resolve_address(container, target, action.port, action.host)
    path = action.path or "/"
    if not path.startswith("/"):
        path = "/" + path
    ssl_context: ssl.SSLContext | None = None
    if action.scheme.upper() == "HTTPS":
        # kubelet does not verify probe certificates either
        ssl_context = ssl.create_default_context()
        ssl_context.check_hostname = False
        ssl_context.verify_mode = ssl.CERT_NONE
    headers = {"Host": f"{host}:{port}", "User-Agent": "gitkube-probe/1.0", "Accept": "*/*"}
    for header in action.http_headers:
        headers[header.name] = header.value
    request = f"GET {path} HTTP/1.0\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=ssl_context)
            writer.write((request + "\r\n").encode("latin-1"))
            await writer.drain()
            status_line = await reader.readline()
    except TimeoutError:
        return ProbeResult(False, f"GET http://{host}:{port}{path}: timed out after {timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"GET http://{host}:{port}{path}: {exc}")
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    parts = status_line.decode("latin-1").split()
    if len(parts) < 2 or not parts[1].isdigit():
        return ProbeResult(False, f"GET http://{host}:{port}{path}: not an HTTP answer")
    code = int(parts[1])
    return ProbeResult(200 <= code < 400, f"HTTP {code}")


async def probe_tcp(
    action: TCPSocketAction, container: Container, target: ProbeTarget, *, timeout: float
) -> ProbeResult:
    host, port = resolve_address(container, target, action.port, action.host)
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
    except TimeoutError:
        return ProbeResult(False, f"dial {host}:{port}: timed out after {timeout:g}s")
    except OSError as exc:
        return ProbeResult(False, f"dial {host}:{port}: {exc}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return ProbeResult(True)


#: grpc.health.v1.HealthCheckResponse.ServingStatus
_GRPC_STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}


def _grpc_health_request(service: str) -> bytes:
    """A HealthCheckRequest (protobuf: field 1, the service name)."""
    name = service.encode()
    if not name:
        return b""
    length, size = b"", len(name)
    while True:
        byte, size = size & 0x7F, size >> 7
        length += bytes([byte | (0x80 if size else 0)])
        if not size:
            return b"\x0a" + length + name


def _grpc_health_status(reply: bytes) -> int:
    """The status of a HealthCheckResponse (protobuf: field 1, an enum); 0 when absent."""
    if len(reply) >= 2 and reply[0] == 0x08:
        return reply[1] & 0x7F
    return 0


async def probe_grpc(
    action: GRPCAction, container: Container, target: ProbeTarget, *, timeout: float
) -> ProbeResult:
    import grpc  # the etcd client's dependency; only agents with gRPC probes load it

    host, port = resolve_address(container, target, action.port, "")
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    async with grpc.aio.insecure_channel(where) as channel:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        try:
            reply = await check(_grpc_health_request(action.service), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            return ProbeResult(False, f"grpc {where}: {exc.code().name}: {exc.details()}")
    status = _grpc_health_status(reply)
    return ProbeResult(status == 1, f"grpc {where}: {_GRPC_STATUS.get(status, status)}")


async def probe_exec(
    command: list[str], runtime: Runtime, target: ProbeTarget, *, timeout: float
) -> ProbeResult:
    try:
        code = await runtime.exec(target.container_id, command, timeout=timeout)
    except Exception as exc:  # any runtime failure is a failed probe, not a crash
        return ProbeResult(False, f"exec {command}: {exc}")
    return ProbeResult(code == 0, f"exit code {code}")


async def run_probe(
    probe: Probe, container: Container, target: ProbeTarget, *, runtime: Runtime
) -> ProbeResult:
    """One check of ``probe`` against a container attempt."""
    timeout = max(float(probe.timeout_seconds or 1), 0.001)
    try:
        if probe.exec is not None:
            return await probe_exec(probe.exec.command, runtime, target, timeout=timeout)
        if probe.http_get is not None:
            return await probe_http(probe.http_get, container, target, timeout=timeout)
        if probe.tcp_socket is not None:
            return await probe_tcp(probe.tcp_socket, container, target, timeout=timeout)
        if probe.grpc is not None:
            return await probe_grpc(probe.grpc, container, target, timeout=timeout)
    except ProbeError as exc:
        return ProbeResult(False, str(exc))
    return ProbeResult(False, "probe has no handler (exec, httpGet, tcpSocket or grpc)")


class ProbeState:
    """Consecutive results -> verdict, with kubelet's thresholds."""

    def __init__(self, probe: Probe, kind: ProbeKind) -> None:
        self.success_threshold = max(1, probe.success_threshold or 1)
        self.failure_threshold = max(1, probe.failure_threshold or 3)
        self.ok = kind == "liveness"
        self.successes = 0
        self.failures = 0
        self.message = ""

    def record(self, result: ProbeResult) -> bool:
        """Add one result; True when the verdict changed."""
        self.message = result.message
        if result.ok:
            self.successes += 1
            self.failures = 0
            if not self.ok and self.successes >= self.success_threshold:
                self.ok = True
                return True
        else:
            self.failures += 1
            self.successes = 0
            if self.ok and self.failures >= self.failure_threshold:
                self.ok = False
                return True
        return False


@dataclass(frozen=True)
class ProbeSpec:
    """A probe to run on one container attempt."""

    kind: ProbeKind
    probe: Probe
    container: Container
    target: ProbeTarget
    #: unix time the container attempt started (initialDelaySeconds counts from it)
    started_at: float

    @property
    def key(self) -> tuple[str, ProbeKind]:
        return (self.target.container_id, self.kind)


ChangeCallback = Callable[[str, ProbeKind, bool], None]


class ProbeManager:
    """One worker per probed container attempt; verdicts readable at any time."""

    def __init__(self, runtime: Runtime, *, on_change: ChangeCallback | None = None) -> None:
        self.runtime = runtime
        self.on_change = on_change
        self._workers: dict[tuple[str, ProbeKind], asyncio.Task[None]] = {}
        self._states: dict[tuple[str, ProbeKind], ProbeState] = {}
        #: where each probe reaches its container
        self._targets: dict[tuple[str, ProbeKind], ProbeTarget] = {}
        #: probes started by ``add``: the generation they were added at
        self._added: dict[tuple[str, ProbeKind], int] = {}

    def sync(self, specs: list[ProbeSpec], *, generation: int | None = None) -> None:
        """Run exactly the probes in ``specs``: start new workers, stop the others.

        ``generation``: the listing ``specs`` come from; probes ``add``-ed at
        that generation or later are of containers it may predate, and stay."""
        wanted = {spec.key: spec for spec in specs}
        for key in list(self._workers):
            if key in wanted:
                continue
            added = self._added.get(key)
            if generation is not None and added is not None and added >= generation:
                continue
            self._workers.pop(key).cancel()
            self._states.pop(key, None)
            self._added.pop(key, None)
            self._targets.pop(key, None)
        self._start(wanted.values())

    def add(self, specs: list[ProbeSpec], *, generation: int) -> None:
        """Start probing these container attempts now (they just started),
        before a listing at a later ``generation`` than this one shows them."""
        for spec in specs:
            self._added.setdefault(spec.key, generation)
        self._start(specs)

    def _start(self, specs: Iterable[ProbeSpec]) -> None:
        for spec in specs:
            key = spec.key
            if key in self._workers:
                if self._targets.get(key) == spec.target:
                    continue
                # the container is reached elsewhere now (its address or ports
                # became known): probe there, keeping the verdict so far
                self._workers.pop(key).cancel()
            else:
                self._states[key] = ProbeState(spec.probe, spec.kind)
            self._targets[key] = spec.target
            self._workers[key] = asyncio.create_task(
                self._work(spec, self._states[key]), name=f"probe-{spec.kind}-{key[0][:12]}"
            )

    def ready(self, container_id: str) -> bool:
        """The readiness verdict of a container attempt (False until it first passes)."""
        state = self._states.get((container_id, "readiness"))
        return state is not None and state.ok

    def has(self, container_id: str, kind: ProbeKind) -> bool:
        return (container_id, kind) in self._states

    def liveness_failed(self) -> set[str]:
        return {cid for (cid, kind), s in self._states.items() if kind == "liveness" and not s.ok}

    def message(self, container_id: str, kind: ProbeKind) -> str:
        state = self._states.get((container_id, kind))
        return state.message if state else ""

    async def close(self) -> None:
        workers = list(self._workers.values())
        self._workers.clear()
        self._states.clear()
        self._added.clear()
        self._targets.clear()
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def _work(self, spec: ProbeSpec, state: ProbeState) -> None:
        probe = spec.probe
        delay = spec.started_at + float(probe.initial_delay_seconds or 0) - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        period = max(float(probe.period_seconds or 10), 0.01)
        while True:
            result = await run_probe(probe, spec.container, spec.target, runtime=self.runtime)
            if state.record(result):
                log.info(
                    "%s probe of %s (%s) now %s: %s",
                    spec.kind,
                    spec.container.name,
                    spec.target.container_id[:12],
                    "passing" if state.ok else "failing",
                    result.message,
                )
                if self.on_change is not None:
                    self.on_change(spec.target.container_id, spec.kind, state.ok)
            if spec.kind == "liveness" and not state.ok:
                return  # the container will be killed; its next attempt gets a new worker
            await asyncio.sleep(period)
