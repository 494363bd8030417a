"""The container runtime interface the agent drives (a small CRI).

A pod is a *sandbox* (its network: the published host ports, and for Docker
a pause container whose network namespace the pod's containers join) plus
one runtime container per container attempt. A pod of one container and no
init containers needs no shared network: a runtime may then give it a
sandbox that is not ``shared`` (Docker: no pause container; the container
owns its network and ports, as compose runs it), and such a sandbox no
longer fits once the pod has more containers (``shared_sandbox_needed``).
Runtimes label what they start with the pod's namespace, name and uid, the
container name, the attempt number and the node name, so an agent that
restarts finds them again by ``list_sandboxes`` / ``list_containers`` and
adopts them.

Two implementations: ``DockerRuntime`` (docker SDK, blocking calls in worker
threads) and ``ProcessRuntime`` (local process groups). One contract test
suite runs against both.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

from gitkube.api.objects import Container, Pod

#: kubelet's labels, shared by both runtimes
LABEL_POD_NAME = "io.kubernetes.pod.name"
LABEL_POD_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_POD_UID = "io.kubernetes.pod.uid"
LABEL_CONTAINER_NAME = "io.kubernetes.container.name"
LABEL_NODE = "io.gitkube.node"
LABEL_ATTEMPT = "io.gitkube.container.attempt"
LABEL_SANDBOX = "io.gitkube.sandbox"
#: on a pod's containers: the id of the sandbox they joined (added by the runtime helper)
LABEL_SANDBOX_ID = "io.gitkube.sandbox.id"


def shared_sandbox_needed(pod: Pod) -> bool:
    """Whether the pod needs a sandbox of its own before its containers
    start: more than one container (init containers included) share it, or
    the container's env names the pod's address (``status.podIP``), which a
    container that owns its network has only once it runs."""
    if len(pod.spec.containers) + len(pod.spec.init_containers) > 1:
        return True
    return any(
        env.value_from is not None
        and env.value_from.field_ref is not None
        and env.value_from.field_ref.field_path.startswith("status.podIP")
        for container in pod.spec.containers
        for env in container.env
    )


def port_key(container: str, container_port: int, protocol: str = "TCP") -> str:
    """The key of a published port in ``Sandbox.host_ports`` and ``PodStatus.host_ports``."""
    return f"{container}/{container_port}/{protocol or 'TCP'}"


@dataclass
class Sandbox:
    id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    #: the pod's own address (container IP for Docker; the node address for processes)
    ip: str
    #: port_key(...) -> host port published on the node
    host_ports: dict[str, int] = field(default_factory=dict)
    running: bool = True
    #: the pod's containers join it (a sandbox of its own: a pause container,
    #: allocated ports); False: the pod's one container owns the network
    #: itself, and ``ip`` / ``host_ports`` are those of its running attempt
    shared: bool = True
    #: the node address the pod's ports are published on (when not shared: the
    #: container publishes them as it starts)
    bind_address: str = ""


ContainerRunState = Literal["created", "running", "exited"]


@dataclass
class RuntimeContainer:
    id: str
    pod_uid: str
    pod_namespace: str
    pod_name: str
    name: str
    attempt: int
    state: ContainerRunState
    image: str = ""
    exit_code: int | None = None
    #: unix times
    started_at: float | None = None
    finished_at: float | None = None
    #: "OOMKilled", "Error", "Completed", ...
    reason: str = ""
    # added by the runtime helper (additive):
    #: the sandbox the container joined
    sandbox_id: str = ""
    #: why it ended, when the runtime knows more than the reason (a start error, a lost process)
    message: str = ""


@dataclass(frozen=True)
class Mount:
    """A directory (or file) of the node seen by a container at ``container_path``."""

    host_path: str
    container_path: str
    read_only: bool = False


class ContainerStartError(Exception):
    """A container could not be started; ``reason`` is the kubelet reason
    (``ErrImagePull``, ``CreateContainerError``, ``RunContainerError``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@runtime_checkable
class Runtime(Protocol):
    name: str  # "docker" | "process"
    node_name: str
    #: where the agent writes the pods' volumes (``gitkube.nodes.volumes``)
    pods_dir: Path

    async def start_sandbox(self, pod: Pod, *, node_address: str) -> Sandbox:
        """Create the pod's sandbox and publish its container ports on host ports
        (``hostPort`` when given, otherwise a free port bound on ``node_address``)."""
        ...

    async def list_sandboxes(self) -> list[Sandbox]:
        """Sandboxes of this node (running or not)."""
        ...

    async def list_pods(self) -> tuple[list[Sandbox], list[RuntimeContainer]]:
        """``list_sandboxes()`` and ``list_containers()`` together, from one
        listing of the runtime where it can (the agent's relist)."""
        ...

    def events(self) -> AsyncIterator[str] | None:
        """The uids of pods whose containers change (start, exit, removal),
        as the runtime reports them, for as long as the caller iterates; None
        when the runtime reports no events (the agent then relists on a timer
        only). The stream ends (or raises ``RuntimeErrorBase``) when the
        runtime stops reporting; the caller may ask again."""
        ...

    async def remove_sandbox(self, sandbox_id: str) -> None:
        """Remove the sandbox, killing and removing any of the pod's containers left in it."""
        ...

    async def start_container(
        self,
        pod: Pod,
        sandbox: Sandbox,
        container: Container,
        *,
        attempt: int,
        mounts: Sequence[Mount] = (),
    ) -> RuntimeContainer:
        """Start one attempt of ``container`` (its env already resolved: values,
        no ``valueFrom``) with ``mounts``; raises ``ContainerStartError``."""
        ...

    async def list_containers(self) -> list[RuntimeContainer]:
        """Containers of this node, every attempt still present."""
        ...

    async def stop_container(self, container_id: str, *, grace_seconds: float) -> None:
        """SIGTERM, then SIGKILL after ``grace_seconds``."""
        ...

    async def remove_container(self, container_id: str) -> None: ...

    async def exec(self, container_id: str, command: list[str], *, timeout: float) -> int:
        """Run ``command`` in the container (exec probes); returns the exit code.

        Raises ``TimeoutError`` when it runs longer than ``timeout`` seconds (the
        command is killed) and ``RuntimeErrorBase`` when it cannot be run (the
        container is gone or not running); a prober counts both as failures."""
        ...

    def logs(
        self,
        container_id: str,
        *,
        tail: int | None = None,
        follow: bool = False,
        timestamps: bool = False,
    ) -> AsyncIterator[bytes]:
        """The container's output (stdout and stderr): the last ``tail`` lines
        (all when None); with ``follow``, then what it writes until it ends or
        the caller stops iterating (``aclose``). ``timestamps`` starts each
        line with the RFC 3339 time it was written, where the runtime records
        it (``RuntimeErrorBase`` where it does not)."""
        ...

    async def close(self) -> None: ...
