"""v1 Events derived from the writes a controller makes.

Every write of the master's loops goes through the ``Applier``; what those
writes mean is plain from the objects: a pod that gets a node was Scheduled,
a pod created under a controller is its SuccessfulCreate, a Node whose Ready
condition turns False is NodeNotReady. Deriving the events here, once, keeps
the loops free of event calls and makes every loop on the kit record them.
"""

from __future__ import annotations

from collections.abc import Sequence

from gitkube.api.objects import ApiObject, Node, ObjectMeta, Pod, ReplicaSet
from gitkube.control.applier import AppliedHook, Write
from gitkube.store.events import NORMAL, WARNING, EventRecorder

#: the component Kubernetes names for each of gitkube's loops
COMPONENTS = {
    "scheduler": "default-scheduler",
    "replication": "replication-controller",
    "replicaset": "replicaset-controller",
    "deployment": "deployment-controller",
    "node-lifecycle": "node-controller",
    "endpoints": "endpoint-controller",
    "load-balancers": "service-lb-controller",
}


def _owner(obj: ApiObject) -> ApiObject | None:
    """A stand-in for the controller of ``obj`` (enough to name it in an event)."""
    from gitkube.api.objects import KINDS

    ref = obj.metadata.controller_ref()
    if ref is None or ref.kind not in KINDS:
        return None
    owner = KINDS[ref.kind](
        metadata=ObjectMeta(name=ref.name, namespace=obj.namespace, uid=ref.uid)
    )
    owner.api_version = ref.api_version or owner.api_version
    return owner


def _ready(node: Node | None) -> str:
    if node is None:
        return ""
    cond = node.status.condition("Ready")
    return cond.status if cond is not None else ""


def events_of(writes: Sequence[Write]) -> list[tuple[ApiObject, str, str, str]]:
    """(object, type, reason, message) for each event the writes stand for."""
    out: list[tuple[ApiObject, str, str, str]] = []
    for write in writes:
        obj = write.obj
        if isinstance(obj, Pod):
            owner = _owner(obj)
            previous = write.previous if isinstance(write.previous, Pod) else None
            if write.op == "create" and owner is not None:
                out.append((owner, NORMAL, "SuccessfulCreate", f"Created pod: {obj.name}"))
            elif write.op == "delete" and owner is not None:
                out.append((owner, NORMAL, "SuccessfulDelete", f"Deleted pod: {obj.name}"))
            elif (
                write.op == "update"
                and obj.spec.node_name
                and (previous is None or not previous.spec.node_name)
            ):
                out.append(
                    (
                        obj,
                        NORMAL,
                        "Scheduled",
                        f"Successfully assigned {obj.namespace}/{obj.name} to {obj.spec.node_name}",
                    )
                )
            elif write.op == "update" and not obj.spec.node_name:
                cond = obj.status.condition("PodScheduled")
                if cond is not None and cond.status == "False" and cond.message:
                    out.append((obj, WARNING, "FailedScheduling", cond.message))
        elif isinstance(obj, Node) and write.op == "update":
            previous_node = write.previous if isinstance(write.previous, Node) else None
            now, before = _ready(obj), _ready(previous_node)
            if now != before and now in ("False", "Unknown"):
                message = f"Node {obj.name} status is now: NodeNotReady"
                out.append((obj, NORMAL, "NodeNotReady", message))
            elif now != before and now == "True" and before:
                out.append((obj, NORMAL, "NodeReady", f"Node {obj.name} status is now: NodeReady"))
        elif isinstance(obj, ReplicaSet) and write.op in ("create", "update"):
            owner = _owner(obj)
            if owner is None or (write.op == "update" and write.previous is None):
                continue
            new = obj.spec.replicas if obj.spec.replicas is not None else 1
            previous_rs = write.previous if isinstance(write.previous, ReplicaSet) else None
            old = (
                0
                if previous_rs is None
                else (previous_rs.spec.replicas if previous_rs.spec.replicas is not None else 1)
            )
            if write.op == "create" or new != old:
                verb = "up" if new > old else "down"
                message = f"Scaled {verb} replica set {obj.name} from {old} to {new}"
                out.append((owner, NORMAL, "ScalingReplicaSet", message))
    return out


def recording(recorder: EventRecorder | None) -> AppliedHook | None:
    """An ``Applier`` hook that records the events of the writes that landed."""
    if recorder is None:
        return None

    def hook(writes: Sequence[Write]) -> None:
        for obj, type_, reason, message in events_of(writes):
            recorder.record(obj, type_, reason, message)

    return hook
