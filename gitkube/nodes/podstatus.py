"""What the runtime runs for a pod, as the pod's ``status`` (a pure function).

Follows kubelet: per container the state of its latest attempt (waiting,
running or terminated), the attempt before it as ``lastState``, the attempt
number as ``restartCount``; the pod's phase from the container states and the
restart policy (kubelet's ``getPhase``); the conditions PodScheduled,
Initialized, ContainersReady and Ready.

No I/O and no clock: the time and everything observed are arguments.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from gitkube.api.objects import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    Pod,
    PodCondition,
    PodStatus,
)
from gitkube.nodes.runtime.base import RuntimeContainer, Sandbox

PENDING, RUNNING, SUCCEEDED, FAILED = "Pending", "Running", "Succeeded", "Failed"
TERMINAL_PHASES = frozenset({SUCCEEDED, FAILED})

#: waiting reasons
CONTAINER_CREATING = "ContainerCreating"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
ERR_IMAGE_PULL = "ErrImagePull"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
POD_INITIALIZING = "PodInitializing"


@dataclass(frozen=True)
class Waiting:
    """Why a container is not running although it should (a waiting state)."""

    reason: str
    message: str = ""


def iso_time(unix: float | None) -> str:
    if unix is None:
        return ""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def container_id_uri(runtime_name: str, container_id: str) -> str:
    """``docker://<id>`` / ``process://<id>``, as in ``status.containerStatuses``."""
    return f"{runtime_name}://{container_id}" if container_id else ""


def split_container_id(uri: str) -> tuple[str, str]:
    """(runtime name, id) of a ``containerID`` URI; ("", "") for an empty one."""
    if not uri:
        return "", ""
    runtime, sep, ident = uri.partition("://")
    if not sep or not runtime or not ident:
        raise ValueError(f"not a container id: {uri!r} (expected '<runtime>://<id>')")
    return runtime, ident


def attempts_by_name(containers: Sequence[RuntimeContainer]) -> dict[str, list[RuntimeContainer]]:
    """The runtime containers of one pod by container name, oldest attempt first."""
    out: dict[str, list[RuntimeContainer]] = {}
    for rc in containers:
        out.setdefault(rc.name, []).append(rc)
    for attempts in out.values():
        attempts.sort(key=lambda rc: (rc.attempt, rc.started_at or 0.0))
    return out


def init_done(pod: Pod, by_name: Mapping[str, Sequence[RuntimeContainer]]) -> bool:
    """Every init container's latest attempt succeeded (or an app container
    has already run: the init records may be gone)."""
    if not pod.spec.init_containers:
        return True
    if any(by_name.get(c.name) for c in pod.spec.containers):
        return True
    for container in pod.spec.init_containers:
        attempts = by_name.get(container.name)
        if not attempts:
            return False
        latest = attempts[-1]
        if latest.state != "exited" or latest.exit_code != 0:
            return False
    return True


def init_failed(pod: Pod, by_name: Mapping[str, Sequence[RuntimeContainer]]) -> bool:
    """An init container failed and will not be restarted (restartPolicy Never)."""
    if pod.spec.restart_policy != "Never" or init_done(pod, by_name):
        return False
    for container in pod.spec.init_containers:
        attempts = by_name.get(container.name)
        if attempts and attempts[-1].state == "exited" and attempts[-1].exit_code != 0:
            return True
    return False


def terminated_state(rc: RuntimeContainer, runtime_name: str) -> ContainerState:
    exit_code = rc.exit_code if rc.exit_code is not None else -1
    reason = rc.reason or ("Completed" if exit_code == 0 else "Error")
    return ContainerState(
        terminated=ContainerStateTerminated(
            exit_code=exit_code,
            signal=exit_code - 128 if 128 < exit_code < 160 else 0,
            reason=reason,
            started_at=iso_time(rc.started_at),
            finished_at=iso_time(rc.finished_at),
            container_id=container_id_uri(runtime_name, rc.id),
        )
    )


def compute_container_status(
    container: Container,
    attempts: Sequence[RuntimeContainer],
    *,
    waiting: Waiting | None,
    ready: bool,
    runtime_name: str,
) -> ContainerStatus:
    """One entry of ``status.containerStatuses``; ``attempts`` oldest first."""
    status = ContainerStatus(name=container.name, image=container.image)
    if not attempts:
        status.state = ContainerState(
            waiting=ContainerStateWaiting(
                reason=waiting.reason if waiting else CONTAINER_CREATING,
                message=waiting.message if waiting else "",
            )
        )
        return status
    latest = attempts[-1]
    previous = attempts[-2] if len(attempts) > 1 else None
    status.restart_count = latest.attempt
    status.container_id = container_id_uri(runtime_name, latest.id)
    status.image = latest.image or container.image
    # the image the runtime ran, as ``<runtime>://<image>`` (stable across agent
    # restarts, so an adopted container's status is not rewritten)
    status.image_id = container_id_uri(runtime_name, status.image)
    if previous is not None and previous.state == "exited":
        status.last_state = terminated_state(previous, runtime_name)
    if latest.state == "running" and waiting is None:
        status.state = ContainerState(
            running=ContainerStateRunning(started_at=iso_time(latest.started_at))
        )
        status.ready = ready
    elif latest.state == "exited" and waiting is None:
        status.state = terminated_state(latest, runtime_name)
    else:
        status.state = ContainerState(
            waiting=ContainerStateWaiting(
                reason=waiting.reason if waiting else CONTAINER_CREATING,
                message=waiting.message if waiting else "",
            )
        )
        if latest.state == "exited":
            # waiting to be restarted: the attempt that ended is the last state
            status.last_state = terminated_state(latest, runtime_name)
    return status


def compute_phase(statuses: Sequence[ContainerStatus], restart_policy: str) -> str:
    """kubelet's ``getPhase``."""
    pending = running = stopped = succeeded = 0
    for cs in statuses:
        if cs.state.running is not None:
            running += 1
        elif cs.state.terminated is not None:
            stopped += 1
            if cs.state.terminated.exit_code == 0:
                succeeded += 1
        elif cs.state.waiting is not None:
            if cs.last_state.terminated is not None:
                stopped += 1
            else:
                pending += 1
        else:
            pending += 1
    if not statuses or pending > 0:
        return PENDING
    if running > 0:
        return RUNNING
    if restart_policy == "Always":
        return RUNNING  # every container will be restarted
    if stopped == succeeded:
        return SUCCEEDED
    if restart_policy == "Never":
        return FAILED
    return RUNNING  # OnFailure: the failed ones will be restarted


def _condition(
    type_: str, ok: bool, reason: str, previous: PodStatus | None, now: str
) -> PodCondition:
    status = "True" if ok else "False"
    old = previous.condition(type_) if previous else None
    since = old.last_transition_time if old is not None and old.status == status else now
    return PodCondition(
        type=type_, status=status, reason="" if ok else reason, last_transition_time=since
    )


def compute_pod_status(
    pod: Pod,
    sandbox: Sandbox | None,
    containers: Sequence[RuntimeContainer],
    *,
    waiting: Mapping[str, Waiting],
    ready_ids: Collection[str],
    node_address: str,
    runtime_name: str,
    now: str,
) -> PodStatus:
    """The pod's status from what the runtime runs.

    ``waiting``: container name -> why it is not running although it should;
    ``ready_ids``: runtime container ids whose readiness passes (or that have
    no readiness probe); ``now``: ISO time for condition transitions and the
    start time, used only when they change.
    """
    previous = pod.status
    by_name = attempts_by_name(containers)
    init_statuses = [
        compute_container_status(
            c,
            by_name.get(c.name, []),
            waiting=waiting.get(c.name),
            ready=bool(by_name.get(c.name))
            and by_name[c.name][-1].state == "exited"
            and by_name[c.name][-1].exit_code == 0,
            runtime_name=runtime_name,
        )
        for c in pod.spec.init_containers
    ]
    initialized = init_done(pod, by_name)
    statuses = [
        compute_container_status(
            c,
            by_name.get(c.name, []),
            waiting=waiting.get(c.name),
            ready=bool(by_name.get(c.name)) and by_name[c.name][-1].id in ready_ids,
            runtime_name=runtime_name,
        )
        for c in pod.spec.containers
    ]
    if initialized:
        phase = compute_phase(statuses, pod.spec.restart_policy)
    else:
        phase = FAILED if init_failed(pod, by_name) else PENDING
    all_ready = bool(statuses) and all(cs.ready for cs in statuses)
    not_ready_reason = "PodCompleted" if phase in TERMINAL_PHASES else "ContainersNotReady"
    conditions = [
        _condition("Initialized", initialized, "ContainersNotInitialized", previous, now),
        _condition("Ready", all_ready, not_ready_reason, previous, now),
        _condition("ContainersReady", all_ready, not_ready_reason, previous, now),
        _condition("PodScheduled", True, "", previous, now),
    ]
    return PodStatus(
        phase=phase,
        conditions=conditions,
        host_ip=node_address,
        pod_ip=sandbox.ip if sandbox is not None else "",
        start_time=previous.start_time or now,
        container_statuses=statuses,
        init_container_statuses=init_statuses,
        host_ports=dict(sandbox.host_ports) if sandbox is not None else {},
    )
