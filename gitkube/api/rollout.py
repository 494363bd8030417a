"""apps/v1 rollout vocabulary and the rollout state of a Deployment, read
from its status — what ``kubectl rollout status`` says. Shared by the
Deployment controller, health, ``gitkube rollout`` and the reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from gitkube.api.annotations import DOMAIN
from gitkube.api.objects import Deployment, ReplicaSet

POD_TEMPLATE_HASH = "pod-template-hash"
REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
#: gitkube: the git commit that made a ReplicaSet's revision
REVISION_COMMIT = f"{DOMAIN}/revision-commit"

DEFAULT_REPLICAS = 1

# condition types and reasons (apps/v1)
AVAILABLE = "Available"
PROGRESSING = "Progressing"
REPLICA_FAILURE = "ReplicaFailure"
MINIMUM_REPLICAS_AVAILABLE = "MinimumReplicasAvailable"
MINIMUM_REPLICAS_UNAVAILABLE = "MinimumReplicasUnavailable"
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"


def desired_replicas(d: Deployment) -> int:
    return max(d.spec.replicas if d.spec.replicas is not None else DEFAULT_REPLICAS, 0)


def revision_of(rs: ReplicaSet | Deployment) -> int:
    """The ``deployment.kubernetes.io/revision`` annotation (0: none or not a number)."""
    try:
        return int(rs.metadata.annotations.get(REVISION, "0"))
    except ValueError:
        return 0


@dataclass(frozen=True)
class RolloutState:
    message: str
    #: the rollout finished: every replica updated and available
    done: bool = False
    #: the rollout exceeded its progress deadline
    failed: bool = False


def rollout_state(d: Deployment) -> RolloutState:
    """What ``kubectl rollout status`` says of a Deployment, from its status."""
    status = d.status
    name = d.name
    if d.metadata.generation > status.observed_generation:
        return RolloutState(
            f'Waiting for deployment "{name}" spec update to be observed '
            f"(generation {d.metadata.generation}, observed {status.observed_generation})..."
        )
    cond = next((c for c in status.conditions if c.type == PROGRESSING), None)
    if cond is not None and cond.reason == TIMED_OUT:
        return RolloutState(f'deployment "{name}" exceeded its progress deadline', failed=True)
    replicas = desired_replicas(d)
    if status.updated_replicas < replicas:
        return RolloutState(
            f'Waiting for deployment "{name}" rollout to finish: {status.updated_replicas} out '
            f"of {replicas} new replicas have been updated..."
        )
    if status.replicas > status.updated_replicas:
        return RolloutState(
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{status.replicas - status.updated_replicas} old replicas are pending termination..."
        )
    if status.available_replicas < status.updated_replicas:
        return RolloutState(
            f'Waiting for deployment "{name}" rollout to finish: {status.available_replicas} of '
            f"{status.updated_replicas} updated replicas are available..."
        )
    return RolloutState(f'deployment "{name}" successfully rolled out', done=True)
