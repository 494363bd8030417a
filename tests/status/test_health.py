"""Health assessment (pure): plain objects in, Healthy / Progressing / Degraded /
Missing out.

- pods: running and ready, pending (scheduled or not), failed, crash-looping,
  image pull back-off, restarting, finite pods, being deleted;
- replication controllers: ready vs desired, observed generation, a degraded
  rollout condition, a stalled Progressing condition, surplus replicas;
- services: ready endpoints, none, only not-ready ones, headless, a proxy
  error, a failure condition;
- nodes: Ready, NotReady, never reported, cordoned;
- the short reason given for a controller's unhealthy pod;
- an object declared in git but absent is Missing; the worst of a set.
"""

from __future__ import annotations

from gitkube.api.objects import (
    Container,
    ContainerState,
    ContainerStateRunning,
    ContainerStateTerminated,
    ContainerStateWaiting,
    ContainerStatus,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Node,
    NodeCondition,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    ReplicationController,
    ReplicationControllerCondition,
    ReplicationControllerSpec,
    ReplicationControllerStatus,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.sync.health import assess_health, pod_problem, worst


def pod(
    phase: str = "Running",
    *,
    ready: bool = True,
    waiting: str = "",
    waiting_message: str = "",
    restarted: bool = False,
    restart_policy: str = "Always",
    node: str = "n1",
    conditions: list[PodCondition] | None = None,
    message: str = "",
    terminated: ContainerStateTerminated | None = None,
) -> Pod:
    state = ContainerState()
    if waiting:
        state.waiting = ContainerStateWaiting(reason=waiting, message=waiting_message)
    elif terminated is not None:
        state.terminated = terminated
    elif phase == "Running":
        state.running = ContainerStateRunning(started_at="2026-01-01T00:00:00Z")
    last = ContainerState(terminated=ContainerStateTerminated(exit_code=1)) if restarted else None
    cs = ContainerStatus(name="web", state=state, ready=ready, last_state=last or ContainerState())
    conds = list(conditions or [])
    if phase == "Running":
        conds.append(PodCondition(type="Ready", status="True" if ready else "False"))
    return Pod(
        metadata=ObjectMeta(name="p"),
        spec=PodSpec(
            containers=[Container(name="web", image="busybox")],
            node_name=node,
            restart_policy=restart_policy,
        ),
        status=PodStatus(
            phase=phase,
            conditions=conds,
            container_statuses=[cs] if phase != "Pending" or waiting else [],
            message=message,
        ),
    )


class TestPodHealth:
    def test_running_and_ready_is_healthy(self) -> None:
        assert assess_health(pod()).status == "Healthy"

    def test_pending_on_a_node_is_progressing(self) -> None:
        health = assess_health(pod("Pending", ready=False))
        assert health.status == "Progressing"
        assert "n1" in health.message

    def test_unschedulable_pod_is_progressing_with_the_scheduler_reason(self) -> None:
        why = "0/3 nodes are available: 3 Insufficient memory."
        health = assess_health(
            pod(
                "Pending",
                ready=False,
                node="",
                conditions=[
                    PodCondition(
                        type="PodScheduled", status="False", reason="Unschedulable", message=why
                    )
                ],
            )
        )
        assert health.status == "Progressing"
        assert health.message == f"Unschedulable: {why}"

    def test_failed_is_degraded_with_the_container_exit_code(self) -> None:
        health = assess_health(
            pod("Failed", ready=False, terminated=ContainerStateTerminated(exit_code=3))
        )
        assert health.status == "Degraded"
        assert health.message == "container web failed with exit code 3"

    def test_failed_prefers_the_pod_message(self) -> None:
        health = assess_health(pod("Failed", ready=False, message="evicted: disk pressure"))
        assert (health.status, health.message) == ("Degraded", "evicted: disk pressure")

    def test_crash_loop_back_off_is_degraded(self) -> None:
        health = assess_health(
            pod("Running", ready=False, waiting="CrashLoopBackOff", waiting_message="back-off 10s")
        )
        assert health.status == "Degraded"
        assert health.message == "container web: CrashLoopBackOff: back-off 10s"

    def test_init_container_crash_loop_is_degraded(self) -> None:
        p = pod("Pending", ready=False, waiting="PodInitializing")
        p.status.init_container_statuses = [
            ContainerStatus(
                name="setup",
                state=ContainerState(waiting=ContainerStateWaiting(reason="CrashLoopBackOff")),
            )
        ]
        health = assess_health(p)
        assert (health.status, health.message) == (
            "Degraded",
            "init container setup: CrashLoopBackOff",
        )

    def test_config_error_is_degraded(self) -> None:
        health = assess_health(
            pod(
                "Pending",
                ready=False,
                waiting="CreateContainerConfigError",
                waiting_message='configmap "app" not found (env MODE)',
            )
        )
        assert health.status == "Degraded"
        assert 'configmap "app" not found' in health.message

    def test_image_pull_back_off_while_pending_is_degraded(self) -> None:
        health = assess_health(pod("Pending", ready=False, waiting="ImagePullBackOff"))
        assert (health.status, health.message) == ("Degraded", "container web: ImagePullBackOff")

    def test_err_image_pull_is_degraded(self) -> None:
        assert assess_health(pod("Pending", ready=False, waiting="ErrImagePull")).status == (
            "Degraded"
        )

    def test_container_creating_is_progressing(self) -> None:
        health = assess_health(pod("Pending", ready=False, waiting="ContainerCreating"))
        assert health.status == "Progressing"

    def test_running_not_ready_after_a_restart_is_degraded(self) -> None:
        assert assess_health(pod(ready=False, restarted=True)).status == "Degraded"

    def test_running_not_ready_first_time_is_progressing(self) -> None:
        assert assess_health(pod(ready=False)).status == "Progressing"

    def test_a_finite_pod_running_is_progressing_and_succeeded_is_healthy(self) -> None:
        assert assess_health(pod(restart_policy="Never")).status == "Progressing"
        done = pod("Succeeded", ready=False, restart_policy="Never")
        assert assess_health(done).status == "Healthy"

    def test_back_off_of_a_finite_pod_follows_the_phase(self) -> None:
        # Argo CD: only pods that restart are judged by their waiting reason
        p = pod("Pending", ready=False, waiting="ImagePullBackOff", restart_policy="Never")
        assert assess_health(p).status == "Progressing"

    def test_pod_being_deleted_is_progressing(self) -> None:
        p = pod()
        p.metadata.deletion_timestamp = "2026-01-01T00:00:00Z"
        assert assess_health(p).status == "Progressing"

    def test_unknown_phase_is_unknown(self) -> None:
        assert assess_health(pod("Unknown", ready=False)).status == "Unknown"


class TestPodProblem:
    """The short, stable reason a controller's report gives for one of its pods."""

    def test_a_healthy_pod_has_none(self) -> None:
        assert pod_problem(pod()) == ""

    def test_unschedulable_gives_the_scheduler_message(self) -> None:
        why = "0/2 nodes are available: 2 Insufficient cpu."
        p = pod(
            "Pending",
            ready=False,
            node="",
            conditions=[PodCondition(type="PodScheduled", status="False", message=why)],
        )
        assert pod_problem(p) == f"Unschedulable: {why}"

    def test_a_waiting_reason_leaves_out_the_back_off_time(self) -> None:
        p = pod(ready=False, waiting="CrashLoopBackOff", waiting_message="back-off 5m0s")
        assert pod_problem(p) == "web: CrashLoopBackOff"

    def test_running_not_ready(self) -> None:
        assert pod_problem(pod(ready=False)) == "Running, not ready"

    def test_failed_gives_the_failure(self) -> None:
        p = pod("Failed", ready=False, terminated=ContainerStateTerminated(exit_code=2))
        assert pod_problem(p) == "container web failed with exit code 2"


def rc(
    replicas: int = 3,
    *,
    ready: int = 3,
    current: int | None = None,
    generation: int = 2,
    observed: int = 2,
    conditions: list[ReplicationControllerCondition] | None = None,
) -> ReplicationController:
    return ReplicationController(
        metadata=ObjectMeta(name="web", generation=generation),
        spec=ReplicationControllerSpec(replicas=replicas, selector={"app": "web"}),
        status=ReplicationControllerStatus(
            replicas=ready if current is None else current,
            ready_replicas=ready,
            available_replicas=ready,
            observed_generation=observed,
            conditions=list(conditions or []),
        ),
    )


class TestReplicationControllerHealth:
    def test_all_ready_is_healthy(self) -> None:
        health = assess_health(rc())
        assert (health.status, health.message) == ("Healthy", "3/3 replicas ready")

    def test_fewer_ready_than_desired_is_progressing(self) -> None:
        health = assess_health(rc(ready=1, current=3))
        assert (health.status, health.message) == ("Progressing", "1/3 replicas ready")

    def test_unobserved_generation_is_progressing(self) -> None:
        health = assess_health(rc(generation=3, observed=2))
        assert health.status == "Progressing"
        assert "generation 3" in health.message

    def test_degraded_rollout_condition_is_degraded_with_its_reason(self) -> None:
        cond = ReplicationControllerCondition(
            type="Degraded",
            status="True",
            reason="RolloutStalled",
            message="new pods never became ready; old pods keep serving",
        )
        health = assess_health(rc(ready=3, conditions=[cond]))
        assert health.status == "Degraded"
        assert health.message == (
            "RolloutStalled: new pods never became ready; old pods keep serving"
        )

    def test_the_degraded_condition_wins_over_a_stalled_progressing_one(self) -> None:
        # as gitkube.planner.replication writes a stopped rollout
        stalled = ReplicationControllerCondition(
            type="Progressing",
            status="False",
            reason="ProgressDeadlineExceeded",
            message="updated 1 of 3, ready 2 of 3: no progress for 600s",
        )
        degraded = ReplicationControllerCondition(
            type="Degraded",
            status="True",
            reason="ProgressDeadlineExceeded",
            message="rollout stopped: the new template has 1 of 1 pods not ready after 600s",
        )
        health = assess_health(rc(ready=2, current=3, conditions=[stalled, degraded]))
        assert health.status == "Degraded"
        assert health.message.startswith("ProgressDeadlineExceeded: rollout stopped")

    def test_replica_failure_is_degraded(self) -> None:
        cond = ReplicationControllerCondition(
            type="ReplicaFailure", status="True", message="pods cannot be created"
        )
        assert assess_health(rc(ready=0, conditions=[cond])).status == "Degraded"

    def test_a_false_failure_condition_is_ignored(self) -> None:
        cond = ReplicationControllerCondition(type="ReplicaFailure", status="False")
        assert assess_health(rc(conditions=[cond])).status == "Healthy"

    def test_stalled_progressing_condition_is_degraded(self) -> None:
        cond = ReplicationControllerCondition(
            type="Progressing", status="False", reason="ProgressDeadlineExceeded"
        )
        health = assess_health(rc(conditions=[cond]))
        assert (health.status, health.message) == ("Degraded", "ProgressDeadlineExceeded")

    def test_surplus_replicas_are_progressing(self) -> None:
        health = assess_health(rc(replicas=2, ready=3, current=3))
        assert (health.status, health.message) == ("Progressing", "1 extra replicas to remove")

    def test_zero_replicas_is_healthy(self) -> None:
        assert assess_health(rc(replicas=0, ready=0)).status == "Healthy"


def service(*, headless: bool = False) -> Service:
    return Service(
        metadata=ObjectMeta(name="web"),
        spec=ServiceSpec(
            ports=[ServicePort(port=80, target_port=8080)],
            selector={"app": "web"},
            cluster_ip="None" if headless else "",
        ),
    )


def endpoints(ready: int, not_ready: int = 0) -> Endpoints:
    return Endpoints(
        metadata=ObjectMeta(name="web"),
        subsets=[
            EndpointSubset(
                addresses=[EndpointAddress(ip=f"10.0.0.{i}") for i in range(ready)],
                not_ready_addresses=[EndpointAddress(ip=f"10.0.1.{i}") for i in range(not_ready)],
                ports=[EndpointPort(port=8080)],
            )
        ],
    )


class TestServiceHealth:
    def test_ready_endpoints_are_healthy(self) -> None:
        health = assess_health(service(), endpoints=endpoints(2))
        assert (health.status, health.message) == ("Healthy", "2 endpoints")

    def test_no_endpoints_object_is_degraded(self) -> None:
        health = assess_health(service())
        assert (health.status, health.message) == ("Degraded", "no ready endpoints")

    def test_only_not_ready_endpoints_is_degraded(self) -> None:
        health = assess_health(service(), endpoints=endpoints(0, not_ready=2))
        assert (health.status, health.message) == ("Degraded", "no ready endpoints (2 not ready)")

    def test_headless_needs_no_endpoints(self) -> None:
        assert assess_health(service(headless=True)).status == "Healthy"

    def test_a_proxy_error_is_degraded_with_its_message(self) -> None:
        health = assess_health(
            service(),
            endpoints=endpoints(2),
            proxy_errors=["port 80 already in use (node n1)"],
        )
        assert (health.status, health.message) == (
            "Degraded",
            "port 80 already in use (node n1)",
        )

    def test_a_failure_condition_is_degraded(self) -> None:
        svc = service()
        svc.status.conditions.append(
            PodCondition(type="PortInUse", status="True", message="port 80 already in use")
        )
        health = assess_health(svc, endpoints=endpoints(1))
        assert (health.status, health.message) == ("Degraded", "port 80 already in use")


def node(ready: str | None = "True", *, unschedulable: bool = False) -> Node:
    n = Node(metadata=ObjectMeta(name="n1"))
    if ready is not None:
        reason = "" if ready == "True" else "NodeLeaseExpired"
        n.status.conditions = [NodeCondition(type="Ready", status=ready, reason=reason)]
    n.spec.unschedulable = unschedulable
    return n


class TestNodeHealth:
    def test_ready_node_is_healthy(self) -> None:
        assert assess_health(node()).status == "Healthy"

    def test_not_ready_node_is_degraded_with_the_reason(self) -> None:
        health = assess_health(node("Unknown"))
        assert (health.status, health.message) == ("Degraded", "NotReady: NodeLeaseExpired")

    def test_a_node_that_never_reported_is_degraded(self) -> None:
        assert assess_health(node(None)).status == "Degraded"

    def test_cordoned_ready_node_is_healthy_and_says_so(self) -> None:
        health = assess_health(node(unschedulable=True))
        assert (health.status, health.message) == ("Healthy", "SchedulingDisabled")


class TestMissingAndAggregate:
    def test_absent_object_is_missing(self) -> None:
        assert assess_health(None).status == "Missing"

    def test_worst_orders_degraded_over_missing_over_progressing(self) -> None:
        assert worst([]) == "Healthy"
        assert worst(["Healthy", "Progressing"]) == "Progressing"
        assert worst(["Progressing", "Missing", "Healthy"]) == "Missing"
        assert worst(["Missing", "Degraded"]) == "Degraded"
        assert worst(["Healthy", "Bogus"]) == "Unknown"
