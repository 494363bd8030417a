"""What the agent must do to make the runtime match one pod (a pure function).

``plan_pod`` looks at the pod's spec, its sandboxes and container attempts in
the runtime, the restart back-off, failed starts and failed liveness probes,
and returns a ``PodPlan``: the sandbox to create or remove, the containers to
start (with their attempt numbers), to kill and to remove, and the waiting
reasons to show (CrashLoopBackOff, ImagePullBackOff, ...). A sandbox that
is not shared (a single-container pod's container owning its network) is
replaced, as a dead one is, when the pod comes to need a shared one. Init containers
run first, one at a time, each to completion (a failed one is restarted per
the restart policy, with back-off; with ``Never`` the pod fails); the app
containers wait with reason PodInitializing until the last one succeeded.
``plan_teardown``
does the same for a pod that must no longer run here. The agent executes
plans; nothing here performs I/O or reads a clock.

**One back-off per container** (kubelet's CrashLoopBackOff), on both
runtimes: every attempt that fails counts once, whether it ran and ended or
could not start (a bad command, a missing image, a sandbox that could not be
made). The first restart after an attempt that ran is immediate; every other
retry waits the back-off (``RestartBackoff``: 10 s doubling to 5 min). While
it waits, the container shows CrashLoopBackOff, or ImagePullBackOff after a
failed pull, or the reason of a start that left no attempt behind
(CreateContainerError, ...). The agent advances the back-off once per
attempt: when it starts a restart (``StartContainer.restart``), or when a
first start fails.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from gitkube.api.objects import Container, Pod
from gitkube.nodes.backoff import RestartBackoff
from gitkube.nodes.podstatus import (
    CRASH_LOOP_BACK_OFF,
    ERR_IMAGE_PULL,
    IMAGE_PULL_BACK_OFF,
    POD_INITIALIZING,
    TERMINAL_PHASES,
    Waiting,
    attempts_by_name,
    init_done,
)
from gitkube.nodes.runtime.base import RuntimeContainer, Sandbox, shared_sandbox_needed

#: exited attempts kept per container: the current one and the one before
#: (``lastState``, ``gitkube logs --previous``)
KEEP_ATTEMPTS = 2


@dataclass(frozen=True)
class StartFailure:
    """A container attempt the runtime could not start."""

    reason: str
    message: str
    at: float
    #: the attempt that failed (a runtime may keep it, exited or "created"); -1: unknown
    attempt: int = -1


@dataclass(frozen=True)
class StartContainer:
    container: Container
    attempt: int
    #: a retry after an earlier attempt (ended, or failed to start and kept by the
    #: runtime): the agent advances the back-off when it starts it
    restart: bool


@dataclass
class PodPlan:
    create_sandbox: bool = False
    remove_sandboxes: list[str] = field(default_factory=list)
    start: list[StartContainer] = field(default_factory=list)
    #: running containers to stop (SIGTERM, then SIGKILL after the grace period)
    kill: list[str] = field(default_factory=list)
    #: containers to remove (stopped first when still running)
    remove: list[str] = field(default_factory=list)
    waiting: dict[str, Waiting] = field(default_factory=dict)
    #: plan again after this many seconds (a back-off ends), or None
    requeue_after: float | None = None
    #: the sandbox the pod's containers run in (an existing running one)
    sandbox: Sandbox | None = None

    def is_empty(self) -> bool:
        return not (
            self.create_sandbox or self.remove_sandboxes or self.start or self.kill or self.remove
        )

    def _requeue(self, seconds: float) -> None:
        if self.requeue_after is None or seconds < self.requeue_after:
            self.requeue_after = seconds


def restart_key(pod_uid: str, container: str) -> tuple[str, str, str]:
    return (pod_uid, container, "restart")


def should_restart(restart_policy: str, exit_code: int | None) -> bool:
    if restart_policy == "Never":
        return False
    if restart_policy == "OnFailure":
        return exit_code != 0
    return True  # Always (and anything unknown, as kubelet defaults)


def _start_or_wait(
    plan: PodPlan,
    pod: Pod,
    container: Container,
    attempts: Sequence[RuntimeContainer],
    *,
    backoff: RestartBackoff,
    failures: Mapping[str, StartFailure],
    now: float,
) -> None:
    """Start a new attempt of ``container`` unless its back-off runs: one
    back-off per container for failed runs and failed starts alike."""
    uid = pod.metadata.uid
    latest = attempts[-1] if attempts else None
    failure = failures.get(container.name)
    # a failed start that left its attempt behind is a failed attempt, not a
    # half-started one (Docker keeps it as "created"): it is backed off
    failed_attempt = (
        failure is not None and latest is not None and failure.attempt == latest.attempt
    )
    if latest is not None or failure is not None:
        key = restart_key(uid, container.name)
        if failure is not None:
            since = failure.at
        elif latest is not None and latest.finished_at is not None:
            since = latest.finished_at
        else:
            since = now
        remaining = backoff.remaining(key, since=since, now=now)
        if remaining > 0:
            if failure is None or failed_attempt:
                plan.waiting[container.name] = Waiting(
                    CRASH_LOOP_BACK_OFF,
                    f"back-off {backoff.delay(key):g}s restarting failed "
                    f"container={container.name} pod={pod.name}",
                )
            else:
                reason = IMAGE_PULL_BACK_OFF if failure.reason == ERR_IMAGE_PULL else failure.reason
                plan.waiting[container.name] = Waiting(reason, failure.message)
            plan._requeue(remaining)
            return
    attempt = latest.attempt + 1 if latest is not None else 0
    plan.start.append(StartContainer(container, attempt, restart=latest is not None))
    if len(attempts) >= KEEP_ATTEMPTS:
        # the new attempt and the latest one are what is kept
        plan.remove.append(attempts[-KEEP_ATTEMPTS].id)


def _plan_init(
    plan: PodPlan,
    pod: Pod,
    by_name: Mapping[str, list[RuntimeContainer]],
    *,
    backoff: RestartBackoff,
    failures: Mapping[str, StartFailure],
    now: float,
    halted: bool,
    sandbox_lost: bool,
) -> None:
    """The next step of the init containers (the first one not done yet)."""
    for container in pod.spec.init_containers:
        attempts = by_name.get(container.name, [])
        for old in attempts[:-KEEP_ATTEMPTS]:
            plan.remove.append(old.id)
        latest = attempts[-1] if attempts else None
        if latest is not None and latest.state == "exited" and latest.exit_code == 0:
            continue
        if latest is not None and latest.state == "running":
            if sandbox_lost:
                plan.kill.append(latest.id)
            return
        if latest is not None and latest.state == "created":
            plan.remove.append(latest.id)
            if not halted:
                plan.start.append(StartContainer(container, latest.attempt + 1, restart=False))
            return
        if latest is not None and pod.spec.restart_policy == "Never":
            return  # failed for good: the pod fails
        if not halted:
            _start_or_wait(
                plan, pod, container, attempts, backoff=backoff, failures=failures, now=now
            )
        return


def plan_pod(
    pod: Pod,
    sandboxes: Sequence[Sandbox],
    containers: Sequence[RuntimeContainer],
    *,
    backoff: RestartBackoff,
    failures: Mapping[str, StartFailure],
    liveness_failed: Collection[str],
    now: float,
) -> PodPlan:
    """The actions that bring the runtime to ``pod`` (see the module docstring).

    ``failures``: container name -> its last failed start; ``liveness_failed``:
    runtime container ids whose liveness probe failed; ``now``: unix time.
    """
    plan = PodPlan()
    # a sandbox that is not shared (the container owns its network) does not
    # fit a pod that now has several containers: it goes as a dead one would
    fits = not shared_sandbox_needed(pod)
    running_sandboxes = [s for s in sandboxes if s.running and (s.shared or fits)]
    plan.sandbox = running_sandboxes[0] if running_sandboxes else None
    plan.remove_sandboxes = [s.id for s in sandboxes if s is not plan.sandbox]
    sandbox_lost = bool(sandboxes) and plan.sandbox is None

    by_name = attempts_by_name(containers)
    spec_names = {c.name for c in [*pod.spec.init_containers, *pod.spec.containers]}
    for name, attempts in by_name.items():
        if name not in spec_names:  # no longer in the spec
            plan.remove.extend(rc.id for rc in attempts)

    # a pod that ended keeps its sandbox and containers (status, logs) until it is deleted
    stored_terminal = pod.status.phase in TERMINAL_PHASES
    if not init_done(pod, by_name):
        _plan_init(
            plan,
            pod,
            by_name,
            backoff=backoff,
            failures=failures,
            now=now,
            halted=stored_terminal or sandbox_lost,
            sandbox_lost=sandbox_lost,
        )
        for container in pod.spec.containers:
            plan.waiting[container.name] = Waiting(POD_INITIALIZING)
    app_containers = pod.spec.containers if init_done(pod, by_name) else []
    for container in app_containers:
        attempts = by_name.get(container.name, [])
        for old in attempts[:-KEEP_ATTEMPTS]:
            plan.remove.append(old.id)
        latest = attempts[-1] if attempts else None
        failure = failures.get(container.name)
        # a failed start that left its attempt behind is a failed attempt, not a
        # half-started one (Docker keeps it as "created"): it is backed off
        failed_attempt = (
            failure is not None and latest is not None and failure.attempt == latest.attempt
        )
        if latest is not None and latest.state == "running":
            if sandbox_lost or latest.id in liveness_failed:
                plan.kill.append(latest.id)
            continue
        if latest is not None and latest.state == "created" and not failed_attempt:
            # left half-started by an agent that died: replace it
            plan.remove.append(latest.id)
            if not (stored_terminal or sandbox_lost):
                plan.start.append(StartContainer(container, latest.attempt + 1, restart=False))
            continue
        if latest is not None and not should_restart(pod.spec.restart_policy, latest.exit_code):
            continue
        if stored_terminal or sandbox_lost:
            continue
        _start_or_wait(plan, pod, container, attempts, backoff=backoff, failures=failures, now=now)

    if sandbox_lost:
        plan.requeue_after = 0.0  # start again in a new sandbox once these are gone
    elif plan.start and plan.sandbox is None:
        plan.create_sandbox = True
    return plan


def plan_teardown(sandboxes: Sequence[Sandbox], containers: Sequence[RuntimeContainer]) -> PodPlan:
    """Stop and remove everything of a pod that must no longer run here."""
    return PodPlan(
        remove_sandboxes=[s.id for s in sandboxes],
        kill=[rc.id for rc in containers if rc.state in ("running", "created")],
        remove=[rc.id for rc in containers],
    )
