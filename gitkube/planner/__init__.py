"""The planner: scheduler, ReplicationController manager, Deployment and
ReplicaSet controllers, and node lifecycle.

Each is a pure core (``scheduler``, ``replication`` — shared by
ReplicationControllers and ReplicaSets —, ``deployment``,
``nodelifecycle``: objects in, a plan out, no I/O, no clock) and a loop that
wires it to the store (``scheduler_loop``, ``replication_loop``,
``replicaset_loop``, ``deployment_loop``, ``nodelifecycle_loop``), as
Nomad's scheduler and Kubernetes' controllers are built.
"""

from gitkube.planner.deployment import DeploymentPlan, plan_deployment
from gitkube.planner.deployment_loop import DeploymentController, DeploymentControllerSettings
from gitkube.planner.nodelifecycle import NodeLifecyclePlan, plan_node_lifecycle
from gitkube.planner.nodelifecycle_loop import (
    NodeLifecycleController,
    NodeLifecycleControllerSettings,
)
from gitkube.planner.replicaset_loop import ReplicaSetController, ReplicaSetControllerSettings
from gitkube.planner.replication import (
    ReplicaSetPlan,
    ReplicationPlan,
    plan_replicaset,
    plan_replication,
    template_hash,
)
from gitkube.planner.replication_loop import ReplicationManager, ReplicationManagerSettings
from gitkube.planner.scheduler import SchedulePlan, Unschedulable, schedule
from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings

__all__ = [
    "DeploymentController",
    "DeploymentControllerSettings",
    "DeploymentPlan",
    "NodeLifecycleController",
    "NodeLifecycleControllerSettings",
    "NodeLifecyclePlan",
    "ReplicaSetController",
    "ReplicaSetControllerSettings",
    "ReplicaSetPlan",
    "ReplicationManager",
    "ReplicationManagerSettings",
    "ReplicationPlan",
    "SchedulePlan",
    "SchedulerLoop",
    "SchedulerSettings",
    "Unschedulable",
    "plan_deployment",
    "plan_node_lifecycle",
    "plan_replicaset",
    "plan_replication",
    "schedule",
    "template_hash",
]
