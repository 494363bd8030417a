"""The events an agent records, read off the change of a pod's status (pure).

kubelet records Pulled, Created, Started, BackOff and Unhealthy as it acts;
the agent reports what it did in the pod's status, so the same events follow
from comparing the status it last wrote with the one it writes now: a
container attempt with a new id was pulled, created and started; a container
newly waiting in CrashLoopBackOff is backing off; a running container that
stops being ready failed its readiness probe. Killing is recorded where the
agent stops a container (``killing``).
"""

from __future__ import annotations

from gitkube.api.objects import ContainerStatus, Pod

NORMAL, WARNING = "Normal", "Warning"

PodEvent = tuple[str, str, str]  # (type, reason, message)


def _by_name(statuses: list[ContainerStatus]) -> dict[str, ContainerStatus]:
    return {cs.name: cs for cs in statuses}


def pod_events(previous: Pod | None, pod: Pod) -> list[PodEvent]:
    """What happened to ``pod``'s containers between two status reports."""
    out: list[PodEvent] = []
    before_all = {
        **_by_name(previous.status.init_container_statuses if previous else []),
        **_by_name(previous.status.container_statuses if previous else []),
    }
    images = {c.name: c.image for c in [*pod.spec.init_containers, *pod.spec.containers]}
    for cs in [*pod.status.init_container_statuses, *pod.status.container_statuses]:
        before = before_all.get(cs.name)
        started = cs.state.running is not None or cs.state.terminated is not None
        new_attempt = bool(cs.container_id) and (
            before is None or before.container_id != cs.container_id
        )
        if started and new_attempt:
            image = images.get(cs.name, cs.image)
            out.append((NORMAL, "Pulled", f'Container image "{image}" already present on machine'))
            out.append((NORMAL, "Created", f"Created container {cs.name}"))
            out.append((NORMAL, "Started", f"Started container {cs.name}"))
        waiting = cs.state.waiting
        was_waiting = before.state.waiting if before is not None else None
        if (
            waiting is not None
            and waiting.reason == "CrashLoopBackOff"
            and (was_waiting is None or was_waiting.reason != "CrashLoopBackOff")
        ):
            out.append(
                (
                    WARNING,
                    "BackOff",
                    f"Back-off restarting failed container {cs.name} in pod {pod.name}",
                )
            )
        if (
            waiting is not None
            and waiting.reason
            in (
                "CreateContainerConfigError",
                "RunContainerError",
            )
            and (was_waiting is None or was_waiting.reason != waiting.reason)
        ):
            out.append((WARNING, "Failed", f"Error: {waiting.message or waiting.reason}"))
        if (
            before is not None
            and before.ready
            and not cs.ready
            and cs.state.running is not None
            and before.container_id == cs.container_id
        ):
            message = "Readiness probe failed"
            cond = pod.status.condition("Ready")
            if cond is not None and cond.message:
                message += f": {cond.message}"
            out.append((WARNING, "Unhealthy", message))
    return out


def killing(container: str) -> PodEvent:
    return (NORMAL, "Killing", f"Stopping container {container}")
