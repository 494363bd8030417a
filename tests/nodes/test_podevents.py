"""The agent's events from status changes (pure): a new container attempt is
Pulled, Created and Started; entering CrashLoopBackOff is BackOff; a config
error is Failed; a running container that stops being ready is Unhealthy;
nothing is recorded twice for the same state."""

from __future__ import annotations

from gitkube.api.objects import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateWaiting,
    ContainerStatus,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
)
from gitkube.nodes.podevents import killing, pod_events


def pod(*statuses: ContainerStatus, ready_message: str = "") -> Pod:
    return Pod(
        metadata=ObjectMeta(name="web-1"),
        spec=PodSpec(containers=[Container(name="web", image="busybox:1")]),
        status=PodStatus(
            container_statuses=list(statuses),
            conditions=[PodCondition(type="Ready", status="False", message=ready_message)],
        ),
    )


def running(cid: str, *, ready: bool = True) -> ContainerStatus:
    return ContainerStatus(
        name="web",
        container_id=cid,
        ready=ready,
        state=ContainerState(running=ContainerStateRunning(started_at="t")),
    )


def waiting(reason: str, message: str = "") -> ContainerStatus:
    return ContainerStatus(
        name="web", state=ContainerState(waiting=ContainerStateWaiting(reason, message))
    )


def reasons(events: list[tuple[str, str, str]]) -> list[str]:
    return [reason for _, reason, _ in events]


def test_a_new_attempt_is_pulled_created_started_once() -> None:
    first = pod(running("docker://a"))
    assert reasons(pod_events(None, first)) == ["Pulled", "Created", "Started"]
    assert 'image "busybox:1"' in pod_events(None, first)[0][2]
    assert pod_events(first, pod(running("docker://a"))) == []
    assert reasons(pod_events(first, pod(running("docker://b")))) == [
        "Pulled",
        "Created",
        "Started",
    ]


def test_back_off_and_config_errors_are_warnings_once() -> None:
    crash = pod(waiting("CrashLoopBackOff", "back-off 10s"))
    events = pod_events(pod(running("docker://a")), crash)
    assert events == [
        ("Warning", "BackOff", "Back-off restarting failed container web in pod web-1")
    ]
    assert pod_events(crash, pod(waiting("CrashLoopBackOff", "back-off 20s"))) == []
    config = pod(waiting("CreateContainerConfigError", 'configmap "settings" not found'))
    assert pod_events(None, config) == [
        ("Warning", "Failed", 'Error: configmap "settings" not found')
    ]


def test_a_running_container_that_stops_being_ready_is_unhealthy() -> None:
    before = pod(running("docker://a"))
    after = pod(running("docker://a", ready=False), ready_message="HTTP 500")
    assert pod_events(before, after) == [
        ("Warning", "Unhealthy", "Readiness probe failed: HTTP 500")
    ]
    assert pod_events(after, after) == []


def test_killing() -> None:
    assert killing("web") == ("Normal", "Killing", "Stopping container web")
