"""Plain API objects for planner tests (no store, no fixtures)."""

from __future__ import annotations

from gitkube.api.objects import (
    Container,
    ContainerPort,
    ContainerStatus,
    Node,
    NodeCondition,
    NodeSpec,
    NodeStatus,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    PodTemplateSpec,
    ReplicationController,
    ReplicationControllerSpec,
    ResourceRequirements,
)


def node(
    name: str,
    *,
    cpu: str | int = "4",
    memory: str = "8Gi",
    pods: int = 110,
    labels: dict[str, str] | None = None,
    ready: bool = True,
    unschedulable: bool = False,
) -> Node:
    return Node(
        metadata=ObjectMeta(name=name, labels=dict(labels or {})),
        spec=NodeSpec(unschedulable=unschedulable),
        status=NodeStatus(
            allocatable={"cpu": cpu, "memory": memory, "pods": pods},
            conditions=[NodeCondition(type="Ready", status="True" if ready else "Unknown")],
        ),
    )


def pod(
    name: str,
    *,
    cpu: str = "",
    memory: str = "",
    node_name: str = "",
    selector: dict[str, str] | None = None,
    host_ports: tuple[int, ...] = (),
    owner_uid: str = "",
    labels: dict[str, str] | None = None,
    created: str = "2024-01-01T00:00:00Z",
    phase: str = "Pending",
    ready: bool = False,
    restarts: int = 0,
    namespace: str = "default",
) -> Pod:
    requests: dict[str, str | int] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = memory
    owners = (
        [OwnerReference(kind="ReplicationController", name="rc", uid=owner_uid, controller=True)]
        if owner_uid
        else []
    )
    conditions = [PodCondition(type="Ready", status="True" if ready else "False")]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            labels=dict(labels or {}),
            creation_timestamp=created,
            owner_references=owners,
            uid=f"uid-{name}",
        ),
        spec=PodSpec(
            containers=[
                Container(
                    name="app",
                    image="busybox",
                    ports=[ContainerPort(container_port=p, host_port=p) for p in host_ports],
                    resources=ResourceRequirements(requests=requests),
                )
            ],
            node_selector=dict(selector or {}),
            node_name=node_name,
        ),
        status=PodStatus(
            phase="Running" if ready else phase,
            conditions=conditions,
            container_statuses=[ContainerStatus(name="app", ready=ready, restart_count=restarts)],
        ),
    )


def rc(
    name: str = "web",
    *,
    replicas: int = 3,
    labels: dict[str, str] | None = None,
    image: str = "nginx:1",
    uid: str = "rc-uid",
    generation: int = 1,
    annotations: dict[str, str] | None = None,
) -> ReplicationController:
    labels = dict(labels or {"app": name})
    return ReplicationController(
        metadata=ObjectMeta(
            name=name, uid=uid, generation=generation, annotations=dict(annotations or {})
        ),
        spec=ReplicationControllerSpec(
            replicas=replicas,
            selector=dict(labels),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels=dict(labels)),
                spec=PodSpec(containers=[Container(name="app", image=image)]),
            ),
        ),
    )
