"""Health of apps/v1 objects (pure), as ``kubectl rollout status`` reads them.

- Deployment: complete and available is Healthy; spec not observed yet,
  replicas being updated, old ones pending termination, new ones not yet
  available are Progressing; ProgressDeadlineExceeded and ReplicaFailure
  are Degraded; paused mid-rollout says so;
- ReplicaSet: available replicas vs desired, ReplicaFailure;
- the status report (status.json, `gitkube status`): a Deployment's replicas
  (ready, desired, updated, available), its revision, and why the pods of
  its current revision are not serving.
"""

from __future__ import annotations

from datetime import UTC, datetime

from gitkube.api.objects import (
    ContainerState,
    ContainerStateWaiting,
    ContainerStatus,
    Deployment,
    DeploymentCondition,
    DeploymentSpec,
    DeploymentStatus,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodStatus,
    ReplicaSet,
    ReplicaSetCondition,
    ReplicaSetSpec,
    ReplicaSetStatus,
)
from gitkube.api.rollout import REVISION
from gitkube.sync.health import DEGRADED, HEALTHY, PROGRESSING, assess_health
from gitkube.sync.report import ClusterSnapshot, compose_status_report
from gitkube.sync.state import ObjectSyncStatus, SyncState


def deployment(
    *,
    replicas: int = 3,
    generation: int = 2,
    observed: int = 2,
    total: int = 3,
    updated: int = 3,
    available: int = 3,
    conditions: list[DeploymentCondition] | None = None,
    paused: bool = False,
) -> Deployment:
    return Deployment(
        metadata=ObjectMeta(name="web", generation=generation),
        spec=DeploymentSpec(replicas=replicas, paused=paused),
        status=DeploymentStatus(
            observed_generation=observed,
            replicas=total,
            updated_replicas=updated,
            ready_replicas=available,
            available_replicas=available,
            conditions=list(conditions or []),
        ),
    )


class TestDeploymentHealth:
    def test_complete_is_healthy(self) -> None:
        health = assess_health(deployment())
        assert health.status == HEALTHY and "3/3" in health.message

    def test_spec_not_observed_is_progressing(self) -> None:
        health = assess_health(deployment(generation=3))
        assert health.status == PROGRESSING and "observed" in health.message

    def test_rolling_stages_are_progressing(self) -> None:
        assert "1 out of 3 new replicas" in assess_health(deployment(updated=1)).message
        pending = assess_health(deployment(total=4))
        assert pending.status == PROGRESSING and "1 old replicas" in pending.message
        unavailable = assess_health(deployment(available=2))
        assert unavailable.status == PROGRESSING and "2 of 3 updated" in unavailable.message

    def test_progress_deadline_exceeded_is_degraded(self) -> None:
        cond = DeploymentCondition(
            type="Progressing",
            status="False",
            reason="ProgressDeadlineExceeded",
            message='ReplicaSet "web-abc" has timed out progressing.',
        )
        health = assess_health(deployment(updated=1, conditions=[cond]))
        assert health.status == DEGRADED and "ProgressDeadlineExceeded" in health.message

    def test_replica_failure_is_degraded(self) -> None:
        cond = DeploymentCondition(
            type="ReplicaFailure", status="True", reason="FailedCreate", message="no room"
        )
        health = assess_health(deployment(conditions=[cond]))
        assert health.status == DEGRADED and "no room" in health.message

    def test_paused_mid_rollout_says_so(self) -> None:
        cond = DeploymentCondition(type="Progressing", status="Unknown", reason="DeploymentPaused")
        health = assess_health(deployment(updated=1, conditions=[cond], paused=True))
        assert health.status == PROGRESSING and health.message.startswith("paused: ")


class TestReplicaSetHealth:
    def rs(self, available: int, conditions: list[ReplicaSetCondition] | None = None) -> ReplicaSet:
        return ReplicaSet(
            metadata=ObjectMeta(name="web-abc", generation=1),
            spec=ReplicaSetSpec(replicas=2),
            status=ReplicaSetStatus(
                replicas=2,
                available_replicas=available,
                observed_generation=1,
                conditions=list(conditions or []),
            ),
        )

    def test_available_vs_desired(self) -> None:
        assert assess_health(self.rs(2)).status == HEALTHY
        assert assess_health(self.rs(1)).status == PROGRESSING

    def test_replica_failure_is_degraded(self) -> None:
        cond = ReplicaSetCondition(
            type="ReplicaFailure", status="True", reason="FailedCreate", message="x"
        )
        assert assess_health(self.rs(2, [cond])).status == DEGRADED


def test_the_report_carries_replicas_revision_and_the_current_pods_problems() -> None:
    cond = DeploymentCondition(
        type="Progressing",
        status="False",
        reason="ProgressDeadlineExceeded",
        message='ReplicaSet "web-new" has timed out progressing.',
    )
    d = deployment(total=4, updated=1, available=3, conditions=[cond])
    d.metadata.annotations[REVISION] = "2"
    owner = OwnerReference(kind="Deployment", name="web", controller=True)
    new = ReplicaSet(
        metadata=ObjectMeta(name="web-new", annotations={REVISION: "2"}, owner_references=[owner])
    )
    old = ReplicaSet(
        metadata=ObjectMeta(name="web-old", annotations={REVISION: "1"}, owner_references=[owner])
    )
    crashing = Pod(
        metadata=ObjectMeta(
            name="web-new-abcde",
            owner_references=[OwnerReference(kind="ReplicaSet", name="web-new", controller=True)],
        ),
        status=PodStatus(
            phase="Running",
            container_statuses=[
                ContainerStatus(
                    name="app",
                    state=ContainerState(waiting=ContainerStateWaiting(reason="CrashLoopBackOff")),
                )
            ],
        ),
    )
    state = SyncState(
        phase="Synced", objects=[ObjectSyncStatus(kind="Deployment", namespace="", name="web")]
    )
    report = compose_status_report(
        state, ClusterSnapshot.of([d, new, old, crashing]), now=datetime.now(UTC)
    )
    (entry,) = report.status_file()["objects"]
    assert entry["health"] == "Degraded"
    assert entry["revision"] == "2"
    assert entry["replicas"] == {"ready": 3, "desired": 3, "updated": 1, "available": 3}
    assert "pod web-new-abcde: app: CrashLoopBackOff" in entry["message"]
