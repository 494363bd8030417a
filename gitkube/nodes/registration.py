"""Node registration and heartbeats.

The agent owns its Node's ``status`` (capacity, allocatable, addresses,
nodeInfo), the labels given on its command line and a few annotations that
say where it runs (for ``gitkube logs``). Everything else on the Node (other
labels, ``spec.unschedulable``, set from git by the sync) is left as it is;
writes are compare-and-swap, re-read and retried on conflict.

Ready: the agent sets the Ready condition True when it registers, and again
when it re-registers after losing its lease (an outage). Marking a node
NotReady is the node lifecycle controller's job; the agent never does.

Heartbeat: a key ``HEARTBEAT_PREFIX + node`` attached to a lease with a TTL,
re-put every ``interval`` with the time (so its ``mod_revision`` moves: the
node controller watches these changes with its own clock). When the lease
has lapsed the agent grants a new one and registers again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from gitkube import __version__
from gitkube.api.annotations import PROXY_ADDRESS
from gitkube.api.keys import HEARTBEAT_PREFIX
from gitkube.api.objects import Node, NodeAddress, NodeCondition, NodeSystemInfo
from gitkube.api.quantity import format_cpu, parse_cpu, parse_memory
from gitkube.errors import ConfigError, Conflict, GitkubeError, NotFound
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)

#: annotations the agent keeps on its Node: where its runtime runs
AGENT_HOSTNAME = "gitkube.io/agent-hostname"
AGENT_RUNTIME = "gitkube.io/agent-runtime"
AGENT_STATE_DIR = "gitkube.io/agent-state-dir"
#: where the service proxy serving this node listens (LoadBalancer Services'
#: status.loadBalancer.ingress lists these); absent when the node runs none
AGENT_PROXY_ADDRESS = PROXY_ADDRESS

DEFAULT_MAX_PODS = 110


@dataclass
class NodeSettings:
    """What the agent says about its node."""

    name: str
    address: str = "127.0.0.1"
    labels: dict[str, str] = field(default_factory=dict)
    #: millicores; None: the host's CPU count
    cpu: int | None = None
    #: bytes; None: the host's memory
    memory: int | None = None
    max_pods: int = DEFAULT_MAX_PODS
    runtime_name: str = ""
    runtime_version: str = ""
    state_dir: str = ""
    hostname: str = field(default_factory=socket.gethostname)
    #: the address of the service proxy that serves this node ("" for none)
    proxy_address: str = ""


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` -> dict; ``ConfigError`` naming the bad item."""
    labels: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--labels: {item!r} is not key=value")
        labels[key.strip()] = value.strip()
    return labels


def parse_cpu_flag(text: str) -> int:
    try:
        return parse_cpu(text)
    except ValueError as exc:
        raise ConfigError(f"--cpu: {exc}") from exc


def parse_memory_flag(text: str) -> int:
    try:
        return parse_memory(text)
    except ValueError as exc:
        raise ConfigError(f"--memory: {exc}") from exc


def _read_first_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.readline().strip()
    except OSError:
        return ""


def _os_image() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("PRETTY_NAME="):
                    return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return platform.platform()


_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm"}


def _system_uuid(machine_id: str) -> str:
    """The hardware UUID as kubelet reports it (readable by root), else one
    derived from the machine ID, else from the host name: stable per machine."""
    found = _read_first_line("/sys/class/dmi/id/product_uuid")
    if found:
        return found.lower()
    seed = machine_id or platform.node()
    return str(uuid.uuid5(uuid.NAMESPACE_OID, f"gitkube-node:{seed}"))


def host_system_info(settings: NodeSettings) -> NodeSystemInfo:
    runtime = settings.runtime_name
    if runtime and settings.runtime_version:
        runtime = f"{runtime}://{settings.runtime_version}"
    machine_id = _read_first_line("/etc/machine-id")
    return NodeSystemInfo(
        machine_id=machine_id,
        system_uuid=_system_uuid(machine_id),
        boot_id=_read_first_line("/proc/sys/kernel/random/boot_id"),
        kernel_version=platform.release(),
        os_image=_os_image(),
        container_runtime_version=runtime,
        kubelet_version=f"gitkube-{__version__}",
        architecture=_ARCH.get(platform.machine(), platform.machine()),
        operating_system=platform.system().lower(),
    )


def host_capacity(settings: NodeSettings) -> dict[str, int | str]:
    """cpu, memory and pods: from the settings, else from the host."""
    cpu = settings.cpu
    if cpu is None:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
        cpu = (cores or os.cpu_count() or 1) * 1000
    memory = settings.memory
    if memory is None:
        import psutil

        memory = int(psutil.virtual_memory().total)
    mem_text = f"{memory // 1024}Ki" if memory % 1024 == 0 else str(memory)
    return {"cpu": format_cpu(cpu), "memory": mem_text, "pods": str(settings.max_pods)}


def desired_node(current: Node | None, settings: NodeSettings, *, now: str) -> Node:
    """``current`` with what the agent owns brought up to date and Ready True.

    Labels and annotations are merged (the agent's keys win); spec is kept.
    """
    node = current.copy() if current is not None else Node()
    node.metadata.name = settings.name
    node.metadata.labels = {
        **node.metadata.labels,
        "kubernetes.io/hostname": settings.name,
        **settings.labels,
    }
    node.metadata.annotations = {
        **node.metadata.annotations,
        AGENT_HOSTNAME: settings.hostname,
        AGENT_RUNTIME: settings.runtime_name,
        AGENT_STATE_DIR: settings.state_dir,
    }
    if settings.proxy_address:
        node.metadata.annotations[AGENT_PROXY_ADDRESS] = settings.proxy_address
    else:
        node.metadata.annotations.pop(AGENT_PROXY_ADDRESS, None)
    capacity = host_capacity(settings)
    node.status.capacity = dict(capacity)
    node.status.allocatable = dict(capacity)
    node.status.addresses = [
        NodeAddress(type="InternalIP", address=settings.address),
        NodeAddress(type="Hostname", address=settings.hostname),
    ]
    node.status.node_info = host_system_info(settings)
    ready = NodeCondition(
        type="Ready",
        status="True",
        reason="KubeletReady",
        message="gitkube agent is posting ready status",
        last_heartbeat_time=now,
        last_transition_time=now,
    )
    old = node.status.condition("Ready")
    if old is not None and old.status == "True" and old.last_transition_time:
        ready.last_transition_time = old.last_transition_time
    node.status.conditions = [c for c in node.status.conditions if c.type != "Ready"] + [ready]
    return node


async def register_node(
    objects: ObjectStore, settings: NodeSettings, *, attempts: int = 10
) -> Node:
    """Create or update this agent's Node (Ready True), compare-and-swap with retries."""
    for _ in range(attempts):
        current = await objects.get(Node, "", settings.name)
        node = desired_node(current, settings, now=now_iso())
        try:
            if current is None:
                return await objects.create(node)
            return await objects.update(node)
        except Conflict:
            await asyncio.sleep(0.05)
    raise Conflict(
        f"node {settings.name}: registration kept conflicting; is another agent using it?"
    )


def heartbeat_key(node: str) -> str:
    return HEARTBEAT_PREFIX + node


def heartbeat_value(node: str, *, address: str, now: float) -> bytes:
    return json.dumps({"node": node, "time": now, "address": address}).encode()


class Heartbeat:
    """The node's lease and heartbeat key (see the module docstring)."""

    def __init__(
        self,
        objects: ObjectStore,
        settings: NodeSettings,
        *,
        ttl: int = 15,
        interval: float | None = None,
        on_reregister: Callable[[], Awaitable[object]] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.objects = objects
        self.settings = settings
        self.ttl = max(1, int(ttl))
        self.interval = interval if interval is not None else max(0.2, self.ttl / 3)
        self.on_reregister = on_reregister
        self.clock = clock
        self.lease = 0
        self.beats = 0
        self.reregistrations = 0

    @property
    def key(self) -> str:
        return heartbeat_key(self.settings.name)

    async def beat(self) -> None:
        """One heartbeat: keep the lease and re-put the key.

        A lapsed lease (an outage longer than the TTL) gets a new lease and a
        re-registration, which sets Ready True again.
        """
        store = self.objects.store
        lost = not self.lease
        if self.lease:
            try:
                await store.refresh_lease(self.lease)
            except NotFound:
                lost = True
        if lost:
            self.lease = await store.grant_lease(self.ttl)
            if self.beats:  # not the first beat: we were cut off
                self.reregistrations += 1
                log.warning("node %s: lease lapsed; registering again", self.settings.name)
                await register_node(self.objects, self.settings)
                if self.on_reregister is not None:
                    await self.on_reregister()
        value = heartbeat_value(self.settings.name, address=self.settings.address, now=self.clock())
        await store.put(self.key, value, lease=self.lease)
        self.beats += 1

    async def run(self, stop: asyncio.Event) -> None:
        """Beat every ``interval`` until ``stop``; store errors are retried."""
        while not stop.is_set():
            try:
                await self.beat()
            except GitkubeError as exc:
                log.warning("node %s: heartbeat failed: %s", self.settings.name, exc)
            except Exception:
                log.exception("node %s: heartbeat failed", self.settings.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    async def stop(self, *, revoke: bool = False) -> None:
        """Stop heartbeating. The lease lapses after its TTL, or at once with ``revoke``."""
        if self.lease and revoke:
            with contextlib.suppress(GitkubeError):
                await self.objects.store.revoke_lease(self.lease)
            self.lease = 0


def node_labels_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
