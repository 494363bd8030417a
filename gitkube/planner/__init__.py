"""The planner: scheduler, ReplicationController manager and node lifecycle.

Each is a pure core (``scheduler``, ``replication``, ``nodelifecycle``:
objects in, a plan out, no I/O, no clock) and a loop that wires it to the
store (``scheduler_loop``, ``replication_loop``, ``nodelifecycle_loop``),
as Nomad's scheduler and Kubernetes' controllers are built.
"""

from gitkube.planner.nodelifecycle import NodeLifecyclePlan, plan_node_lifecycle
from gitkube.planner.nodelifecycle_loop import (
    NodeLifecycleController,
    NodeLifecycleControllerSettings,
)
from gitkube.planner.replication import ReplicationPlan, plan_replication, template_hash
from gitkube.planner.replication_loop import ReplicationManager, ReplicationManagerSettings
from gitkube.planner.scheduler import SchedulePlan, Unschedulable, schedule
from gitkube.planner.scheduler_loop import SchedulerLoop, SchedulerSettings

__all__ = [
    "NodeLifecycleController",
    "NodeLifecycleControllerSettings",
    "NodeLifecyclePlan",
    "ReplicationManager",
    "ReplicationManagerSettings",
    "ReplicationPlan",
    "SchedulePlan",
    "SchedulerLoop",
    "SchedulerSettings",
    "Unschedulable",
    "plan_node_lifecycle",
    "plan_replication",
    "schedule",
    "template_hash",
]
