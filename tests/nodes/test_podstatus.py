"""Pure cores of the agent, with plain objects:

- pod status: container states (waiting, running, terminated), lastState,
  restartCount, containerID, ready; the pod phase for each restart policy
  (kubelet's getPhase); conditions and their transition times; podIP,
  hostIP and host ports;
- the pod plan: sandbox first, missing containers started, restarts per
  policy with back-off (CrashLoopBackOff), failed starts (ErrImagePull then
  ImagePullBackOff; a failed start kept by the runtime, exited or "created",
  is backed off as a crash under the same per-container back-off), liveness
  kills, old attempts removed, finished pods release their sandbox, terminal
  pods are left alone, teardown;
- the restart back-off: immediate first restart, doubling to the cap, reset.
"""

from __future__ import annotations

from gitkube.api.objects import (
    Container,
    ContainerPort,
    EnvVar,
    EnvVarSource,
    ObjectFieldSelector,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
)
from gitkube.nodes.backoff import BackoffSettings, RestartBackoff
from gitkube.nodes.podplan import (
    StartFailure,
    plan_pod,
    plan_teardown,
    restart_key,
)
from gitkube.nodes.podstatus import (
    Waiting,
    compute_phase,
    compute_pod_status,
    split_container_id,
)
from gitkube.nodes.runtime.base import RuntimeContainer, Sandbox, shared_sandbox_needed

NOW = "2025-01-01T00:00:00Z"
T0 = 1_700_000_000.0


def make_pod(*names: str, policy: str = "Always", phase: str = "Pending") -> Pod:
    return Pod(
        metadata=ObjectMeta(name="web", namespace="default", uid="uid-1"),
        spec=PodSpec(
            containers=[
                Container(name=n, image="busybox", ports=[ContainerPort(container_port=80)])
                for n in names
            ],
            restart_policy=policy,
            node_name="n1",
        ),
        status=PodStatus(phase=phase),
    )


def sandbox(*, running: bool = True, sid: str = "sb1", shared: bool = True) -> Sandbox:
    return Sandbox(
        id=sid,
        pod_uid="uid-1",
        pod_namespace="default",
        pod_name="web",
        ip="172.17.0.5",
        host_ports={"app/80/TCP": 31000},
        running=running,
        shared=shared,
    )


def rc(
    name: str,
    attempt: int = 0,
    *,
    state: str = "running",
    exit_code: int | None = None,
    started: float = T0,
    finished: float | None = None,
    cid: str | None = None,
) -> RuntimeContainer:
    return RuntimeContainer(
        id=cid or f"{name}-{attempt}",
        pod_uid="uid-1",
        pod_namespace="default",
        pod_name="web",
        name=name,
        attempt=attempt,
        state=state,  # type: ignore[arg-type]
        image="busybox",
        exit_code=exit_code,
        started_at=started,
        finished_at=finished,
    )


def status_of(pod: Pod, containers: list[RuntimeContainer], **kw: object) -> PodStatus:
    defaults: dict[str, object] = {
        "waiting": {},
        "ready_ids": {c.id for c in containers if c.state == "running"},
        "node_address": "10.0.0.1",
        "runtime_name": "docker",
        "now": NOW,
    }
    defaults.update(kw)
    sb = defaults.pop("sandbox", sandbox())
    return compute_pod_status(pod, sb, containers, **defaults)  # type: ignore[arg-type]


# ---------------------------------------------------------------- container states


class TestContainerStates:
    def test_not_started_is_waiting_container_creating(self) -> None:
        status = status_of(make_pod("app"), [])
        cs = status.container_statuses[0]
        assert cs.state.waiting is not None
        assert cs.state.waiting.reason == "ContainerCreating"
        assert cs.container_id == ""
        assert cs.restart_count == 0
        assert status.phase == "Pending"

    def test_running_fields(self) -> None:
        status = status_of(make_pod("app"), [rc("app", cid="abc")])
        cs = status.container_statuses[0]
        assert cs.state.running is not None
        assert cs.state.running.started_at == "2023-11-14T22:13:20Z"
        assert cs.container_id == "docker://abc"
        assert cs.ready is True
        assert cs.image == "busybox"
        assert status.phase == "Running"
        assert status.pod_ip == "172.17.0.5"
        assert status.host_ip == "10.0.0.1"
        assert status.host_ports == {"app/80/TCP": 31000}

    def test_not_ready_while_readiness_fails(self) -> None:
        status = status_of(make_pod("app"), [rc("app")], ready_ids=set())
        assert status.container_statuses[0].ready is False
        assert status.condition("Ready").status == "False"  # type: ignore[union-attr]
        assert status.condition("Ready").reason == "ContainersNotReady"  # type: ignore[union-attr]

    def test_restart_shows_last_state_and_count(self) -> None:
        containers = [
            rc("app", 0, state="exited", exit_code=3, finished=T0 + 5),
            rc("app", 1, started=T0 + 6),
        ]
        cs = status_of(make_pod("app"), containers).container_statuses[0]
        assert cs.restart_count == 1
        assert cs.state.running is not None
        assert cs.last_state.terminated is not None
        assert cs.last_state.terminated.exit_code == 3
        assert cs.last_state.terminated.reason == "Error"
        assert cs.last_state.terminated.container_id == "docker://app-0"
        assert cs.container_id == "docker://app-1"

    def test_crash_loop_is_waiting_with_last_state(self) -> None:
        containers = [rc("app", 2, state="exited", exit_code=1, finished=T0 + 1)]
        waiting = {"app": Waiting("CrashLoopBackOff", "back-off 20s")}
        status = status_of(make_pod("app"), containers, waiting=waiting)
        cs = status.container_statuses[0]
        assert cs.state.waiting is not None
        assert cs.state.waiting.reason == "CrashLoopBackOff"
        assert cs.last_state.terminated is not None
        assert cs.last_state.terminated.exit_code == 1
        assert cs.restart_count == 2
        assert status.phase == "Running"  # Always: it will be restarted

    def test_image_pull_error_is_pending(self) -> None:
        waiting = {"app": Waiting("ErrImagePull", "no such image")}
        status = status_of(make_pod("app"), [], waiting=waiting, sandbox=None)
        cs = status.container_statuses[0]
        assert cs.state.waiting is not None
        assert cs.state.waiting.reason == "ErrImagePull"
        assert cs.state.waiting.message == "no such image"
        assert status.phase == "Pending"
        assert status.pod_ip == ""

    def test_terminated_completed_and_signal(self) -> None:
        ok = status_of(
            make_pod("app", policy="Never"), [rc("app", state="exited", exit_code=0)]
        ).container_statuses[0]
        assert ok.state.terminated is not None
        assert ok.state.terminated.reason == "Completed"
        killed = status_of(
            make_pod("app", policy="Never"), [rc("app", state="exited", exit_code=137)]
        ).container_statuses[0]
        assert killed.state.terminated is not None
        assert killed.state.terminated.signal == 9


# ---------------------------------------------------------------- phase


class TestPhase:
    def test_never_failed_and_succeeded(self) -> None:
        failed = status_of(
            make_pod("app", policy="Never"), [rc("app", state="exited", exit_code=2)]
        )
        assert failed.phase == "Failed"
        assert failed.condition("Ready").reason == "PodCompleted"  # type: ignore[union-attr]
        done = status_of(make_pod("app", policy="Never"), [rc("app", state="exited", exit_code=0)])
        assert done.phase == "Succeeded"

    def test_on_failure(self) -> None:
        pod = make_pod("a", "b", policy="OnFailure")
        both_ok = [rc("a", state="exited", exit_code=0), rc("b", state="exited", exit_code=0)]
        assert status_of(pod, both_ok).phase == "Succeeded"
        one_failed = [rc("a", state="exited", exit_code=0), rc("b", state="exited", exit_code=1)]
        assert status_of(pod, one_failed).phase == "Running"

    def test_always_with_all_exited_is_running(self) -> None:
        assert status_of(make_pod("a"), [rc("a", state="exited", exit_code=0)]).phase == "Running"

    def test_one_pending_makes_pending(self) -> None:
        assert status_of(make_pod("a", "b"), [rc("a")]).phase == "Pending"

    def test_no_containers(self) -> None:
        assert compute_phase([], "Always") == "Pending"


# ---------------------------------------------------------------- conditions


class TestConditions:
    def test_all_four_conditions(self) -> None:
        status = status_of(make_pod("app"), [rc("app")])
        types = {c.type: c.status for c in status.conditions}
        assert types == {
            "Initialized": "True",
            "Ready": "True",
            "ContainersReady": "True",
            "PodScheduled": "True",
        }

    def test_transition_time_kept_while_unchanged(self) -> None:
        pod = make_pod("app")
        pod.status.conditions = [
            PodCondition(type="Ready", status="True", last_transition_time="2020-01-01T00:00:00Z")
        ]
        pod.status.start_time = "2020-01-01T00:00:00Z"
        status = status_of(pod, [rc("app")])
        assert status.condition("Ready").last_transition_time == "2020-01-01T00:00:00Z"  # type: ignore[union-attr]
        assert status.start_time == "2020-01-01T00:00:00Z"
        flipped = status_of(pod, [rc("app")], ready_ids=set())
        assert flipped.condition("Ready").last_transition_time == NOW  # type: ignore[union-attr]

    def test_same_inputs_same_status(self) -> None:
        pod = make_pod("app")
        first = status_of(pod, [rc("app")])
        pod.status = first
        again = status_of(pod, [rc("app")], now="2030-01-01T00:00:00Z")
        assert again == first


class TestContainerIds:
    def test_split(self) -> None:
        assert split_container_id("docker://abc") == ("docker", "abc")
        assert split_container_id("process://web-1") == ("process", "web-1")
        assert split_container_id("") == ("", "")

    def test_split_rejects_garbage(self) -> None:
        import pytest

        with pytest.raises(ValueError, match="not a container id"):
            split_container_id("abc")


# ---------------------------------------------------------------- plan


def plan(
    pod: Pod,
    sandboxes: list[Sandbox],
    containers: list[RuntimeContainer],
    *,
    backoff: RestartBackoff | None = None,
    failures: dict[str, StartFailure] | None = None,
    liveness_failed: set[str] | None = None,
    now: float = T0 + 100,
):  # type: ignore[no-untyped-def]
    return plan_pod(
        pod,
        sandboxes,
        containers,
        backoff=backoff or RestartBackoff(BackoffSettings(initial=10, cap=40)),
        failures=failures or {},
        liveness_failed=liveness_failed or set(),
        now=now,
    )


class TestPlanStart:
    def test_new_pod_gets_sandbox_and_all_containers(self) -> None:
        p = plan(make_pod("a", "b"), [], [])
        assert p.create_sandbox
        assert [(s.container.name, s.attempt, s.restart) for s in p.start] == [
            ("a", 0, False),
            ("b", 0, False),
        ]

    def test_running_pod_needs_nothing(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [rc("a")])
        assert p.is_empty()
        assert p.sandbox is not None and p.sandbox.id == "sb1"

    def test_missing_container_started_in_existing_sandbox(self) -> None:
        p = plan(make_pod("a", "b"), [sandbox()], [rc("a")])
        assert not p.create_sandbox
        assert [s.container.name for s in p.start] == ["b"]

    def test_containers_not_in_spec_are_removed(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [rc("a"), rc("gone")])
        assert p.remove == ["gone-0"]


class TestPlanRestart:
    def exited(self, attempt: int = 0, code: int = 1) -> RuntimeContainer:
        return rc("a", attempt, state="exited", exit_code=code, finished=T0 + 99)

    def test_first_restart_is_immediate(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [self.exited()])
        assert [(s.attempt, s.restart) for s in p.start] == [(1, True)]

    def test_crash_loop_back_off(self) -> None:
        backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
        backoff.advance(restart_key("uid-1", "a"), now=T0 + 50)  # one restart already
        p = plan(make_pod("a"), [sandbox()], [self.exited(1)], backoff=backoff)
        assert p.start == []
        assert p.waiting["a"].reason == "CrashLoopBackOff"
        assert "back-off 10s" in p.waiting["a"].message
        assert p.requeue_after == 9.0  # finished at T0+99, now T0+100, 10 s back-off
        later = plan(make_pod("a"), [sandbox()], [self.exited(1)], backoff=backoff, now=T0 + 110)
        assert [s.attempt for s in later.start] == [2]

    def test_on_failure_and_never(self) -> None:
        ok = self.exited(code=0)
        assert plan(make_pod("a", policy="OnFailure"), [sandbox()], [ok]).start == []
        failed = self.exited(code=1)
        assert plan(make_pod("a", policy="OnFailure"), [sandbox()], [failed]).start != []
        assert plan(make_pod("a", policy="Never"), [sandbox()], [failed]).start == []
        assert plan(make_pod("a", policy="Always"), [sandbox()], [ok]).start != []

    def test_finished_pod_keeps_sandbox_and_containers(self) -> None:
        p = plan(make_pod("a", policy="Never"), [sandbox()], [self.exited()])
        assert p.is_empty()

    def test_terminal_pod_is_not_restarted(self) -> None:
        pod = make_pod("a", phase="Failed")
        p = plan(pod, [], [self.exited()])
        assert p.is_empty()

    def test_restart_removes_the_attempt_before_the_latest(self) -> None:
        containers = [rc("a", i, state="exited", exit_code=1, finished=T0 + i) for i in range(2)]
        p = plan(make_pod("a"), [sandbox()], containers)
        assert p.remove == ["a-0"]
        assert [s.attempt for s in p.start] == [2]

    def test_old_attempts_removed(self) -> None:
        containers = [
            rc("a", i, state="exited", exit_code=1, finished=T0 + i) for i in range(3)
        ] + [rc("a", 3)]
        p = plan(make_pod("a"), [sandbox()], containers)
        assert sorted(p.remove) == ["a-0", "a-1"]
        assert p.start == []

    def test_liveness_failure_kills(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [rc("a")], liveness_failed={"a-0"})
        assert p.kill == ["a-0"]
        assert p.start == []

    def test_lost_sandbox_kills_and_removes_then_starts_again(self) -> None:
        p = plan(make_pod("a"), [sandbox(running=False)], [rc("a")])
        assert p.kill == ["a-0"]
        assert p.remove_sandboxes == ["sb1"]
        assert p.start == [] and not p.create_sandbox
        assert p.requeue_after == 0.0

    def test_a_sandbox_that_is_not_shared_serves_one_container(self) -> None:
        own = sandbox(sid="self:uid-1", shared=False)
        p = plan(make_pod("a"), [own], [rc("a")])
        assert p.is_empty() and p.sandbox is own
        restart = plan(make_pod("a"), [own], [rc("a", state="exited", exit_code=1)])
        assert [(s.attempt, s.restart) for s in restart.start] == [(1, True)]
        assert not restart.create_sandbox and restart.sandbox is own

    def test_a_pod_that_grows_a_container_leaves_a_sandbox_that_is_not_shared(self) -> None:
        own = sandbox(sid="self:uid-1", shared=False)
        p = plan(make_pod("a", "b"), [own], [rc("a")])
        # as for a lost sandbox: its container stops, it goes, and the pod
        # starts again in a shared sandbox
        assert p.kill == ["a-0"]
        assert p.remove_sandboxes == ["self:uid-1"]
        assert p.start == [] and not p.create_sandbox
        assert p.requeue_after == 0.0
        again = plan(make_pod("a", "b"), [], [])
        assert again.create_sandbox and [s.container.name for s in again.start] == ["a", "b"]

    def test_which_pods_need_a_shared_sandbox(self) -> None:
        assert not shared_sandbox_needed(make_pod("a"))
        assert shared_sandbox_needed(make_pod("a", "b"))
        with_init = make_pod("a")
        with_init.spec.init_containers = [Container(name="init", image="busybox")]
        assert shared_sandbox_needed(with_init)
        # the pod's address in env: known before the container starts only with a sandbox
        own_ip = make_pod("a")
        own_ip.spec.containers[0].env = [
            EnvVar(
                name="POD_IP",
                value_from=EnvVarSource(field_ref=ObjectFieldSelector(field_path="status.podIP")),
            )
        ]
        assert shared_sandbox_needed(own_ip)
        own_ip.spec.containers[0].env = [
            EnvVar(
                name="NODE",
                value_from=EnvVarSource(field_ref=ObjectFieldSelector(field_path="spec.nodeName")),
            )
        ]
        assert not shared_sandbox_needed(own_ip)

    def test_a_shared_sandbox_fits_a_pod_that_drops_to_one_container(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [rc("a"), rc("b")])
        assert p.remove == ["b-0"] and p.remove_sandboxes == [] and p.kill == []

    def test_half_started_container_replaced(self) -> None:
        p = plan(make_pod("a"), [sandbox()], [rc("a", 0, state="created")])
        assert p.remove == ["a-0"]
        assert [s.attempt for s in p.start] == [1]


class TestPlanStartFailures:
    def test_image_pull_back_off_then_retry(self) -> None:
        backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
        backoff.advance(restart_key("uid-1", "a"), now=T0)  # the agent, at the failure
        failures = {"a": StartFailure("ErrImagePull", "no such image", T0)}
        p = plan(make_pod("a"), [sandbox()], [], backoff=backoff, failures=failures, now=T0 + 3)
        assert p.start == []
        assert p.waiting["a"] == Waiting("ImagePullBackOff", "no such image")
        assert p.requeue_after == 7.0
        retry = plan(
            make_pod("a"), [sandbox()], [], backoff=backoff, failures=failures, now=T0 + 11
        )
        assert [(s.attempt, s.restart) for s in retry.start] == [(0, False)]

    def test_other_errors_keep_their_reason(self) -> None:
        backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
        backoff.advance(restart_key("uid-1", "a"), now=T0)
        failures = {"a": StartFailure("CreateContainerError", "bad mount", T0)}
        p = plan(make_pod("a"), [sandbox()], [], backoff=backoff, failures=failures, now=T0 + 1)
        assert p.waiting["a"] == Waiting("CreateContainerError", "bad mount")
        assert p.start == []

    def failed_start(self, attempt: int, state: str) -> RuntimeContainer:
        return rc("a", attempt, state=state, exit_code=127 if state == "exited" else None)

    def test_a_failed_start_kept_by_the_runtime_is_a_crash_loop(self) -> None:
        """The attempt a bad command leaves behind (exited, or "created" as Docker
        keeps it) waits the back-off as CrashLoopBackOff, then is retried."""
        for state in ("exited", "created"):
            backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
            backoff.advance(restart_key("uid-1", "a"), now=T0)
            failures = {"a": StartFailure("RunContainerError", "exec: no such file", T0, 0)}
            containers = [self.failed_start(0, state)]
            p = plan(
                make_pod("a"),
                [sandbox()],
                containers,
                backoff=backoff,
                failures=failures,
                now=T0 + 4,
            )
            assert p.start == [] and p.remove == [], state
            assert p.waiting["a"].reason == "CrashLoopBackOff", state
            assert "back-off 10s" in p.waiting["a"].message
            assert p.requeue_after == 6.0
            later = plan(
                make_pod("a"),
                [sandbox()],
                containers,
                backoff=backoff,
                failures=failures,
                now=T0 + 10.5,
            )
            assert [(s.attempt, s.restart) for s in later.start] == [(1, True)], state

    def test_failed_starts_back_off_doubling_to_the_cap(self) -> None:
        """The agent's side of the policy, step by step: the first start fails
        (advanced at the failure), each retry is a restart (advanced as it
        starts) that fails again: 10, 20, 40, 40 s apart."""
        backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
        key = restart_key("uid-1", "a")
        now = T0
        starts: list[float] = []
        containers: list[RuntimeContainer] = []
        failures: dict[str, StartFailure] = {}
        while now < T0 + 200:
            p = plan(
                make_pod("a"), [sandbox()], containers, backoff=backoff, failures=failures, now=now
            )
            if p.start:
                (step,) = p.start
                starts.append(now - T0)
                # once per attempt: as a restart starts, or as a first start fails
                backoff.advance(key, now=now)
                failures = {
                    "a": StartFailure("RunContainerError", "no such file", now, step.attempt)
                }
                containers = [*containers[-1:], self.failed_start(step.attempt, "exited")]
            else:
                assert p.waiting["a"].reason == "CrashLoopBackOff"
            now += 0.5
        assert starts == [0, 10, 30, 70, 110, 150, 190]

    def test_a_failure_that_left_no_attempt_waits_under_its_reason(self) -> None:
        """A restart whose start failed before anything was made (no new attempt in
        the runtime) waits the same back-off, showing the failure's reason."""
        backoff = RestartBackoff(BackoffSettings(initial=10, cap=40))
        backoff.advance(restart_key("uid-1", "a"), now=T0 + 99)  # the restart of attempt 1
        exited = rc("a", 0, state="exited", exit_code=1, finished=T0 + 50)
        failures = {"a": StartFailure("CreateContainerError", "no such volume", T0 + 99, 1)}
        p = plan(
            make_pod("a"), [sandbox()], [exited], backoff=backoff, failures=failures, now=T0 + 100
        )
        assert p.waiting["a"] == Waiting("CreateContainerError", "no such volume")
        assert p.requeue_after == 9.0
        later = plan(
            make_pod("a"), [sandbox()], [exited], backoff=backoff, failures=failures, now=T0 + 110
        )
        assert [(s.attempt, s.restart) for s in later.start] == [(1, True)]


class TestTeardown:
    def test_everything_goes(self) -> None:
        p = plan_teardown([sandbox()], [rc("a"), rc("b", state="exited", exit_code=0)])
        assert p.kill == ["a-0"]
        assert sorted(p.remove) == ["a-0", "b-0"]
        assert p.remove_sandboxes == ["sb1"]


# ---------------------------------------------------------------- back-off


class TestBackoff:
    def test_doubles_to_cap(self) -> None:
        b = RestartBackoff(BackoffSettings(initial=10, cap=40))
        assert b.remaining("k", since=T0, now=T0) == 0  # no entry: go ahead
        assert [b.advance("k", now=T0 + i) for i in range(4)] == [10, 20, 40, 40]

    def test_remaining_counts_from_the_failure(self) -> None:
        b = RestartBackoff(BackoffSettings(initial=10, cap=40))
        b.advance("k", now=T0)
        assert b.remaining("k", since=T0 + 5, now=T0 + 8) == 7
        assert b.remaining("k", since=T0 + 5, now=T0 + 20) == 0

    def test_resets_after_a_quiet_period(self) -> None:
        b = RestartBackoff(BackoffSettings(initial=10, cap=40))
        for i in range(3):
            b.advance("k", now=T0 + i)
        assert b.remaining("k", since=T0 + 100, now=T0 + 101) == 0  # 80 s quiet > 2 x cap
        assert b.advance("k", now=T0 + 101) == 10

    def test_forget(self) -> None:
        b = RestartBackoff()
        b.advance(("u", "c"), now=T0)
        b.forget(("u", "c"))
        assert b.tracked_keys() == []
