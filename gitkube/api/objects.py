"""API objects with Kubernetes field names: v1 Pod, ReplicationController,
Service, Endpoints, Node, Namespace, ConfigMap and Secret, and apps/v1
Deployment and ReplicaSet.

Objects keep ``status`` beside ``spec``, as Kubernetes does. Attribute names
are snake_case; the wire form (``to_dict``/``from_dict``) uses Kubernetes'
camelCase names, so real v1 manifests load unchanged.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

from gitkube.api import annotations as ann
from gitkube.api.quantity import parse_cpu, parse_memory
from gitkube.api.serde import from_dict, to_dict, wire

IntOrString = int | str

# ---------------------------------------------------------------- metadata


@dataclass
class LabelSelectorRequirement:
    key: str = ""
    #: In, NotIn, Exists, DoesNotExist
    operator: str = ""
    values: list[str] = field(default_factory=list)


@dataclass
class LabelSelector:
    """A set-based selector (apps/v1): matchLabels and matchExpressions, ANDed.
    Evaluate it with ``gitkube.api.labels``."""

    match_labels: dict[str, str] = field(default_factory=dict)
    match_expressions: list[LabelSelectorRequirement] = field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        from gitkube.api.labels import expressions_match

        return expressions_match(
            self.match_labels,
            [(e.key, e.operator, e.values) for e in self.match_expressions],
            labels,
        )

    def is_empty(self) -> bool:
        return not self.match_labels and not self.match_expressions


@dataclass
class OwnerReference:
    api_version: str = "v1"
    kind: str = ""
    name: str = ""
    uid: str = ""
    controller: bool = False


@dataclass
class ObjectMeta:
    name: str = ""
    generate_name: str = ""
    namespace: str = "default"
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    uid: str = ""
    resource_version: str = ""
    generation: int = 0
    creation_timestamp: str = ""
    deletion_timestamp: str = ""
    owner_references: list[OwnerReference] = field(default_factory=list)

    def controller_ref(self) -> OwnerReference | None:
        for ref in self.owner_references:
            if ref.controller:
                return ref
        return None


# ---------------------------------------------------------------- containers


@dataclass
class ConfigMapKeySelector:
    name: str = ""
    key: str = ""
    optional: bool | None = None


@dataclass
class SecretKeySelector:
    name: str = ""
    key: str = ""
    optional: bool | None = None


@dataclass
class ObjectFieldSelector:
    field_path: str = ""
    api_version: str = "v1"


@dataclass
class ResourceFieldSelector:
    resource: str = ""
    container_name: str = ""
    divisor: IntOrString | None = None


@dataclass
class EnvVarSource:
    config_map_key_ref: ConfigMapKeySelector | None = None
    secret_key_ref: SecretKeySelector | None = None
    field_ref: ObjectFieldSelector | None = None
    resource_field_ref: ResourceFieldSelector | None = None


@dataclass
class EnvVar:
    name: str = ""
    value: str = ""
    value_from: EnvVarSource | None = None


@dataclass
class ConfigMapEnvSource:
    name: str = ""
    optional: bool | None = None


@dataclass
class SecretEnvSource:
    name: str = ""
    optional: bool | None = None


@dataclass
class EnvFromSource:
    prefix: str = ""
    config_map_ref: ConfigMapEnvSource | None = None
    secret_ref: SecretEnvSource | None = None


@dataclass
class VolumeMount:
    name: str = ""
    mount_path: str = ""
    read_only: bool = False
    sub_path: str = ""


@dataclass
class KeyToPath:
    key: str = ""
    path: str = ""
    mode: int | None = None


@dataclass
class ConfigMapVolumeSource:
    name: str = ""
    items: list[KeyToPath] = field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


@dataclass
class SecretVolumeSource:
    secret_name: str = ""
    items: list[KeyToPath] = field(default_factory=list)
    default_mode: int | None = None
    optional: bool | None = None


@dataclass
class EmptyDirVolumeSource:
    medium: str = ""
    size_limit: IntOrString | None = None


@dataclass
class Volume:
    """A pod volume. gitkube acts on configMap, secret and emptyDir volumes;
    other sources are validated against the official schema and refused by
    gitkube's own checks."""

    name: str = ""
    config_map: ConfigMapVolumeSource | None = None
    secret: SecretVolumeSource | None = None
    empty_dir: EmptyDirVolumeSource | None = None


@dataclass
class ContainerPort:
    container_port: int = 0
    host_port: int = 0
    name: str = ""
    protocol: str = "TCP"
    host_ip: str = wire("hostIP", default="")


@dataclass
class ResourceRequirements:
    limits: dict[str, IntOrString] = field(default_factory=dict)
    requests: dict[str, IntOrString] = field(default_factory=dict)

    def request_cpu(self) -> int:
        """Requested millicores; a limit alone counts as the request, as in Kubernetes."""
        value = self.requests.get("cpu", self.limits.get("cpu"))
        return parse_cpu(value) if value is not None else 0

    def request_memory(self) -> int:
        value = self.requests.get("memory", self.limits.get("memory"))
        return parse_memory(value) if value is not None else 0

    def limit_cpu(self) -> int:
        value = self.limits.get("cpu")
        return parse_cpu(value) if value is not None else 0

    def limit_memory(self) -> int:
        value = self.limits.get("memory")
        return parse_memory(value) if value is not None else 0


@dataclass
class ExecAction:
    command: list[str] = field(default_factory=list)


@dataclass
class HTTPHeader:
    name: str = ""
    value: str = ""


@dataclass
class HTTPGetAction:
    path: str = "/"
    port: IntOrString = 0
    host: str = ""
    scheme: str = "HTTP"
    http_headers: list[HTTPHeader] = field(default_factory=list)


@dataclass
class TCPSocketAction:
    port: IntOrString = 0
    host: str = ""


@dataclass
class GRPCAction:
    """A gRPC health check (grpc.health.v1.Health/Check) on ``port``."""

    port: int = 0
    service: str = ""


@dataclass
class Probe:
    exec: ExecAction | None = wire("exec", default=None)
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    grpc: GRPCAction | None = None
    initial_delay_seconds: int = 0
    period_seconds: int = 10
    timeout_seconds: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3


@dataclass
class Container:
    name: str = ""
    image: str = ""
    command: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    env: list[EnvVar] = field(default_factory=list)
    env_from: list[EnvFromSource] = field(default_factory=list)
    volume_mounts: list[VolumeMount] = field(default_factory=list)
    working_dir: str = ""
    ports: list[ContainerPort] = field(default_factory=list)
    resources: ResourceRequirements = field(default_factory=ResourceRequirements)
    liveness_probe: Probe | None = None
    readiness_probe: Probe | None = None

    def port_by_name(self, name: str) -> ContainerPort | None:
        for port in self.ports:
            if port.name == name:
                return port
        return None


# ---------------------------------------------------------------- pods


@dataclass
class PodSpec:
    containers: list[Container] = field(default_factory=list)
    #: run one after another, each to completion, before ``containers``
    init_containers: list[Container] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    restart_policy: str = "Always"
    node_selector: dict[str, str] = field(default_factory=dict)
    node_name: str = ""
    termination_grace_period_seconds: int = 30
    host_network: bool = False

    def request_cpu(self) -> int:
        return sum(c.resources.request_cpu() for c in self.containers)

    def request_memory(self) -> int:
        return sum(c.resources.request_memory() for c in self.containers)

    def host_ports(self) -> list[tuple[str, int]]:
        """(protocol, hostPort) pairs this pod needs on its node."""
        return [
            (p.protocol or "TCP", p.host_port)
            for c in self.containers
            for p in c.ports
            if p.host_port
        ]


@dataclass
class PodCondition:
    type: str = ""
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


@dataclass
class ContainerStateWaiting:
    reason: str = ""
    message: str = ""


@dataclass
class ContainerStateRunning:
    started_at: str = ""


@dataclass
class ContainerStateTerminated:
    exit_code: int = 0
    signal: int = 0
    reason: str = ""
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    container_id: str = wire("containerID", default="")


@dataclass
class ContainerState:
    waiting: ContainerStateWaiting | None = None
    running: ContainerStateRunning | None = None
    terminated: ContainerStateTerminated | None = None


@dataclass
class ContainerStatus:
    name: str = ""
    state: ContainerState = field(default_factory=ContainerState)
    last_state: ContainerState = field(default_factory=ContainerState)
    ready: bool = False
    restart_count: int = 0
    image: str = ""
    image_id: str = wire("imageID", default="")
    container_id: str = wire("containerID", default="")


@dataclass
class PodStatus:
    phase: str = "Pending"
    conditions: list[PodCondition] = field(default_factory=list)
    message: str = ""
    reason: str = ""
    host_ip: str = wire("hostIP", default="")
    pod_ip: str = wire("podIP", default="")
    start_time: str = ""
    container_statuses: list[ContainerStatus] = field(default_factory=list)
    init_container_statuses: list[ContainerStatus] = field(default_factory=list)
    #: containerPort -> host port actually published on the node (gitkube extension,
    #: keyed "<container>/<containerPort>/<protocol>").
    host_ports: dict[str, int] = field(default_factory=dict)

    def condition(self, type_: str) -> PodCondition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None


@dataclass
class PodTemplateSpec:
    metadata: ObjectMeta = field(default_factory=ObjectMeta)
    spec: PodSpec = field(default_factory=PodSpec)


# ---------------------------------------------------------------- base object

O = TypeVar("O", bound="ApiObject")


@dataclass
class ApiObject:
    """Base of the top-level kinds. Subclasses set ``KIND`` and ``RESOURCE``."""

    KIND: ClassVar[str] = ""
    RESOURCE: ClassVar[str] = ""
    NAMESPACED: ClassVar[bool] = True
    #: True for kinds kept as written (``UnsupportedObject``)
    UNSTRUCTURED: ClassVar[bool] = False

    api_version: str = "v1"
    kind: str = ""
    metadata: ObjectMeta = field(default_factory=ObjectMeta)

    def __post_init__(self) -> None:
        if not self.kind:
            self.kind = self.KIND
        if not self.NAMESPACED:
            self.metadata.namespace = ""

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace

    @property
    def key(self) -> str:
        from gitkube.api.keys import object_key

        return object_key(
            self.RESOURCE, self.metadata.namespace, self.metadata.name, namespaced=self.NAMESPACED
        )

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = to_dict(self)
        data["apiVersion"] = self.api_version
        data["kind"] = self.KIND
        data.setdefault("metadata", {})
        return self.to_wire(data)

    @classmethod
    def from_dict(cls: type[O], data: dict[str, Any]) -> O:
        return from_dict(cls, cls.from_wire(data))

    def to_wire(self, data: dict[str, Any]) -> dict[str, Any]:
        """The last step of ``to_dict`` (``data`` is a fresh dict, changed in
        place): a kind moves what Kubernetes' wire form has no field for into
        annotations, and writes required fields that are empty."""
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> dict[str, Any]:
        """The first step of ``from_dict``, the reverse of ``to_wire``
        (``data`` is not changed: what differs is copied)."""
        return data

    def copy(self: O) -> O:
        return copy.deepcopy(self)


def _set_annotation(data: dict[str, Any], key: str, value: Any) -> None:
    meta = data.setdefault("metadata", {})
    meta["annotations"] = {
        **(meta.get("annotations") or {}),
        key: json.dumps(value, sort_keys=True, separators=(",", ":")),
    }


def _pop_annotation(data: dict[str, Any], key: str) -> tuple[dict[str, Any], Any] | None:
    """(``data`` without annotation ``key``, its JSON value), or None when absent."""
    meta = data.get("metadata")
    if not isinstance(meta, dict):
        return None
    annotations = meta.get("annotations")
    if not isinstance(annotations, dict) or key not in annotations:
        return None
    rest = {k: v for k, v in annotations.items() if k != key}
    try:
        value = json.loads(annotations[key])
    except (TypeError, ValueError):
        value = None
    out = {**data, "metadata": {**meta, "annotations": rest}}
    if not rest:
        del out["metadata"]["annotations"]
    return out, value


# ---------------------------------------------------------------- kinds


@dataclass
class Pod(ApiObject):
    KIND: ClassVar[str] = "Pod"
    RESOURCE: ClassVar[str] = "pods"

    spec: PodSpec = field(default_factory=PodSpec)
    status: PodStatus = field(default_factory=PodStatus)

    def is_ready(self) -> bool:
        cond = self.status.condition("Ready")
        return self.status.phase == "Running" and cond is not None and cond.status == "True"

    def restart_count(self) -> int:
        return sum(cs.restart_count for cs in self.status.container_statuses)

    def to_wire(self, data: dict[str, Any]) -> dict[str, Any]:
        status = data.get("status")
        if status:
            host_ports = status.pop("hostPorts", None)
            if host_ports:
                _set_annotation(data, ann.HOST_PORTS, host_ports)
            for key in ("containerStatuses", "initContainerStatuses"):
                for entry in status.get(key, ()):
                    entry.setdefault("imageID", "")  # required, even before a pull
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> dict[str, Any]:
        host_ports = _pop_annotation(data, ann.HOST_PORTS)
        if host_ports is None:
            return data
        data, value = host_ports
        if isinstance(value, dict):
            data["status"] = {**(data.get("status") or {}), "hostPorts": value}
        return data


@dataclass
class ReplicationControllerSpec:
    replicas: int = 1
    selector: dict[str, str] = field(default_factory=dict)
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    min_ready_seconds: int = 0


@dataclass
class ReplicationControllerCondition:
    type: str = ""
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""
    #: gitkube, as Deployment conditions: when the rollout last made progress
    last_update_time: str = ""


@dataclass
class ReplicationControllerStatus:
    replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    fully_labeled_replicas: int = 0
    updated_replicas: int = 0  # gitkube: pods on the current template
    observed_generation: int = 0
    conditions: list[ReplicationControllerCondition] = field(default_factory=list)


@dataclass
class ReplicationController(ApiObject):
    KIND: ClassVar[str] = "ReplicationController"
    RESOURCE: ClassVar[str] = "replicationcontrollers"

    spec: ReplicationControllerSpec = field(default_factory=ReplicationControllerSpec)
    status: ReplicationControllerStatus = field(default_factory=ReplicationControllerStatus)

    def effective_selector(self) -> dict[str, str]:
        """The selector, or the template's labels when none is given (v1 default)."""
        return self.spec.selector or dict(self.spec.template.metadata.labels)

    def to_wire(self, data: dict[str, Any]) -> dict[str, Any]:
        status = data.get("status")
        if not status:
            return data
        rollout: dict[str, Any] = {}
        updated = status.pop("updatedReplicas", None)
        if updated:
            rollout["updatedReplicas"] = updated
        times = {
            c["type"]: c.pop("lastUpdateTime")
            for c in status.get("conditions", ())
            if c.get("lastUpdateTime")
        }
        if times:
            rollout["lastUpdateTime"] = times
        if rollout:
            _set_annotation(data, ann.RC_ROLLOUT, rollout)
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> dict[str, Any]:
        found = _pop_annotation(data, ann.RC_ROLLOUT)
        if found is None:
            return data
        data, rollout = found
        if not isinstance(rollout, dict):
            return data
        status = dict(data.get("status") or {})
        if isinstance(rollout.get("updatedReplicas"), int):
            status["updatedReplicas"] = rollout["updatedReplicas"]
        times = rollout.get("lastUpdateTime")
        if isinstance(times, dict) and isinstance(status.get("conditions"), list):
            status["conditions"] = [
                {**c, "lastUpdateTime": times[c.get("type")]}
                if isinstance(c, dict) and c.get("type") in times
                else c
                for c in status["conditions"]
            ]
        data["status"] = status
        return data


@dataclass
class ServicePort:
    name: str = ""
    protocol: str = "TCP"
    port: int = 0
    target_port: IntOrString | None = None
    node_port: int = 0


@dataclass
class ClientIPConfig:
    timeout_seconds: int = 10800


@dataclass
class SessionAffinityConfig:
    client_ip: ClientIPConfig | None = wire("clientIP", default=None)


@dataclass
class ServiceSpec:
    ports: list[ServicePort] = field(default_factory=list)
    selector: dict[str, str] = field(default_factory=dict)
    type: str = "ClusterIP"
    cluster_ip: str = wire("clusterIP", default="")
    session_affinity: str = "None"
    session_affinity_config: SessionAffinityConfig | None = None

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"


@dataclass
class LoadBalancerStatus:
    ingress: list[dict[str, str]] = field(default_factory=list)


@dataclass
class ServiceStatus:
    load_balancer: LoadBalancerStatus = field(default_factory=LoadBalancerStatus)
    #: gitkube: why a port could not be served (e.g. "port 80 already in use").
    conditions: list[PodCondition] = field(default_factory=list)


@dataclass
class Service(ApiObject):
    KIND: ClassVar[str] = "Service"
    RESOURCE: ClassVar[str] = "services"

    spec: ServiceSpec = field(default_factory=ServiceSpec)
    status: ServiceStatus = field(default_factory=ServiceStatus)


@dataclass
class ObjectReference:
    kind: str = ""
    namespace: str = ""
    name: str = ""
    uid: str = ""
    api_version: str = ""
    resource_version: str = ""
    field_path: str = ""


@dataclass
class EndpointAddress:
    ip: str = ""
    hostname: str = ""
    node_name: str = ""
    target_ref: ObjectReference | None = None


@dataclass
class EndpointPort:
    name: str = ""
    port: int = 0
    protocol: str = "TCP"


@dataclass
class EndpointSubset:
    addresses: list[EndpointAddress] = field(default_factory=list)
    not_ready_addresses: list[EndpointAddress] = field(default_factory=list)
    ports: list[EndpointPort] = field(default_factory=list)


@dataclass
class Endpoints(ApiObject):
    KIND: ClassVar[str] = "Endpoints"
    RESOURCE: ClassVar[str] = "endpoints"

    subsets: list[EndpointSubset] = field(default_factory=list)


@dataclass
class NodeSpec:
    unschedulable: bool = False
    pod_cidr: str = wire("podCIDR", default="")


@dataclass
class NodeCondition:
    type: str = ""
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_heartbeat_time: str = ""
    last_transition_time: str = ""


@dataclass
class NodeAddress:
    type: str = "InternalIP"
    address: str = ""


@dataclass
class NodeSystemInfo:
    machine_id: str = wire("machineID", default="")
    system_uuid: str = wire("systemUUID", default="")
    boot_id: str = wire("bootID", default="")
    kernel_version: str = ""
    os_image: str = ""
    container_runtime_version: str = ""
    kubelet_version: str = ""
    architecture: str = ""
    operating_system: str = ""


@dataclass
class NodeStatus:
    capacity: dict[str, IntOrString] = field(default_factory=dict)
    allocatable: dict[str, IntOrString] = field(default_factory=dict)
    conditions: list[NodeCondition] = field(default_factory=list)
    addresses: list[NodeAddress] = field(default_factory=list)
    node_info: NodeSystemInfo = field(default_factory=NodeSystemInfo)

    def condition(self, type_: str) -> NodeCondition | None:
        for cond in self.conditions:
            if cond.type == type_:
                return cond
        return None


@dataclass
class Node(ApiObject):
    KIND: ClassVar[str] = "Node"
    RESOURCE: ClassVar[str] = "nodes"
    NAMESPACED: ClassVar[bool] = False

    spec: NodeSpec = field(default_factory=NodeSpec)
    status: NodeStatus = field(default_factory=NodeStatus)

    def is_ready(self) -> bool:
        cond = self.status.condition("Ready")
        return cond is not None and cond.status == "True"

    def address(self) -> str:
        for addr in self.status.addresses:
            if addr.type == "InternalIP":
                return addr.address
        return self.status.addresses[0].address if self.status.addresses else ""

    def allocatable_cpu(self) -> int:
        value = self.status.allocatable.get("cpu", self.status.capacity.get("cpu", 0))
        return parse_cpu(value)

    def allocatable_memory(self) -> int:
        value = self.status.allocatable.get("memory", self.status.capacity.get("memory", 0))
        return parse_memory(value)

    def allocatable_pods(self) -> int:
        value = self.status.allocatable.get("pods", self.status.capacity.get("pods", 110))
        return int(value)

    def to_wire(self, data: dict[str, Any]) -> dict[str, Any]:
        info = (data.get("status") or {}).get("nodeInfo")
        if info is not None:
            for key in _NODE_INFO_REQUIRED:  # required by v1, even when unknown
                info.setdefault(key, "")
        return data


_NODE_INFO_REQUIRED = (
    "machineID",
    "systemUUID",
    "bootID",
    "kernelVersion",
    "osImage",
    "containerRuntimeVersion",
    "kubeletVersion",
    "kubeProxyVersion",
    "operatingSystem",
    "architecture",
)


# ---------------------------------------------------------------- namespaces, config


@dataclass
class NamespaceSpec:
    finalizers: list[str] = field(default_factory=list)


@dataclass
class NamespaceStatus:
    #: Active or Terminating
    phase: str = "Active"


@dataclass
class Namespace(ApiObject):
    KIND: ClassVar[str] = "Namespace"
    RESOURCE: ClassVar[str] = "namespaces"
    NAMESPACED: ClassVar[bool] = False

    spec: NamespaceSpec = field(default_factory=NamespaceSpec)
    status: NamespaceStatus = field(default_factory=NamespaceStatus)


@dataclass
class ConfigMap(ApiObject):
    KIND: ClassVar[str] = "ConfigMap"
    RESOURCE: ClassVar[str] = "configmaps"

    data: dict[str, str] = field(default_factory=dict)
    #: base64 on the wire, as in Kubernetes
    binary_data: dict[str, str] = field(default_factory=dict)
    immutable: bool | None = None


@dataclass
class Secret(ApiObject):
    """A Secret. ``data`` holds base64 values; ``string_data`` is merged into
    ``data`` when the object is built from git and never stored. Values must
    never reach any output: use ``gitkube.api.redact``."""

    KIND: ClassVar[str] = "Secret"
    RESOURCE: ClassVar[str] = "secrets"

    type: str = "Opaque"
    data: dict[str, str] = field(default_factory=dict)
    string_data: dict[str, str] = field(default_factory=dict)
    immutable: bool | None = None


# ---------------------------------------------------------------- kinds gitkube does not run


@dataclass
class UnsupportedObject(ApiObject):
    """An object of a kind gitkube stores but does not act on (an Ingress, a
    ServiceAccount, a custom resource), kept as written: ``content`` holds every
    top-level field but apiVersion, kind, metadata and status. Each kind has its
    own subclass (``unsupported_class``), so ``KIND`` and ``RESOURCE`` work as
    for the other kinds."""

    #: objects of these classes are stored as they are, not decoded into fields
    UNSTRUCTURED: ClassVar[bool] = True
    API_VERSION: ClassVar[str] = ""

    content: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.api_version or self.api_version == "v1":
            self.api_version = self.API_VERSION or self.api_version

    def to_dict(self) -> dict[str, Any]:
        meta: dict[str, Any] = to_dict(self.metadata)
        return {
            "apiVersion": self.api_version,
            "kind": self.KIND,
            "metadata": meta,
            **copy.deepcopy(self.content),
        }

    @classmethod
    def from_dict(cls: type[O], data: dict[str, Any]) -> O:
        meta = from_dict(ObjectMeta, data.get("metadata") or {})
        content = {
            k: copy.deepcopy(v)
            for k, v in data.items()
            if k not in ("apiVersion", "kind", "metadata", "status")
        }
        obj = cls(metadata=meta)
        obj.api_version = data.get("apiVersion") or obj.api_version
        assert isinstance(obj, UnsupportedObject)
        obj.content = content
        if not cls.NAMESPACED:
            obj.metadata.namespace = ""
        return obj


_UNSUPPORTED: dict[tuple[str, str, str, bool], type[UnsupportedObject]] = {}


def unsupported_class(
    api_version: str, kind: str, *, resource: str, namespaced: bool
) -> type[UnsupportedObject]:
    """The class of objects of a kind gitkube stores but does not run (a
    custom kind's resource and scope are as its CustomResourceDefinition says,
    so one kind may have a class per definition seen)."""
    found = _UNSUPPORTED.get((api_version, kind, resource, namespaced))
    if found is None:
        found = type(
            kind,
            (UnsupportedObject,),
            {
                "KIND": kind,
                "RESOURCE": resource,
                "NAMESPACED": namespaced,
                "API_VERSION": api_version,
                "__module__": __name__,
            },
        )
        _UNSUPPORTED[(api_version, kind, resource, namespaced)] = found
    return found


# ---------------------------------------------------------------- apps/v1


@dataclass
class RollingUpdateDeployment:
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None


@dataclass
class DeploymentStrategy:
    #: RollingUpdate (default) or Recreate
    type: str = "RollingUpdate"
    rolling_update: RollingUpdateDeployment | None = None


@dataclass
class DeploymentCondition:
    """Available, Progressing or ReplicaFailure, as apps/v1 has them."""

    type: str = ""
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_update_time: str = ""
    last_transition_time: str = ""


@dataclass
class DeploymentSpec:
    replicas: int | None = None
    selector: LabelSelector = field(default_factory=LabelSelector)
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    strategy: DeploymentStrategy = field(default_factory=DeploymentStrategy)
    min_ready_seconds: int = 0
    revision_history_limit: int | None = None
    paused: bool = False
    progress_deadline_seconds: int | None = None


@dataclass
class DeploymentStatus:
    observed_generation: int = 0
    replicas: int = 0
    updated_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    unavailable_replicas: int = 0
    collision_count: int | None = None
    conditions: list[DeploymentCondition] = field(default_factory=list)


@dataclass
class Deployment(ApiObject):
    KIND: ClassVar[str] = "Deployment"
    RESOURCE: ClassVar[str] = "deployments"

    api_version: str = "apps/v1"
    spec: DeploymentSpec = field(default_factory=DeploymentSpec)
    status: DeploymentStatus = field(default_factory=DeploymentStatus)


@dataclass
class ReplicaSetCondition:
    type: str = ""
    status: str = "Unknown"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


@dataclass
class ReplicaSetSpec:
    replicas: int | None = None
    selector: LabelSelector = field(default_factory=LabelSelector)
    template: PodTemplateSpec = field(default_factory=PodTemplateSpec)
    min_ready_seconds: int = 0


@dataclass
class ReplicaSetStatus:
    replicas: int = 0
    fully_labeled_replicas: int = 0
    ready_replicas: int = 0
    available_replicas: int = 0
    observed_generation: int = 0
    conditions: list[ReplicaSetCondition] = field(default_factory=list)


@dataclass
class ReplicaSet(ApiObject):
    KIND: ClassVar[str] = "ReplicaSet"
    RESOURCE: ClassVar[str] = "replicasets"

    api_version: str = "apps/v1"
    spec: ReplicaSetSpec = field(default_factory=ReplicaSetSpec)
    status: ReplicaSetStatus = field(default_factory=ReplicaSetStatus)


# ---------------------------------------------------------------- events


@dataclass
class EventSource:
    component: str = ""
    host: str = ""


@dataclass
class Event(ApiObject):
    """A v1 Event: something a component did or saw about an object. Written
    by gitkube's loops (``gitkube.store.events``), never declared in git; it
    expires an hour after it last happened."""

    KIND: ClassVar[str] = "Event"
    RESOURCE: ClassVar[str] = "events"

    involved_object: ObjectReference = field(default_factory=ObjectReference)
    reason: str = ""
    message: str = ""
    source: EventSource = field(default_factory=EventSource)
    first_timestamp: str = ""
    last_timestamp: str = ""
    count: int = 1
    #: Normal or Warning
    type: str = "Normal"
    reporting_component: str = ""
    reporting_instance: str = ""


_V1_CORE: tuple[type[ApiObject], ...] = (Pod, ReplicationController, Service, Endpoints, Node)
_WORKLOADS: tuple[type[ApiObject], ...] = (Namespace, ConfigMap, Secret, Deployment, ReplicaSet)
#: the kinds added to the 2015 core (kept as a name for code written against it)
WORKLOAD_KINDS: dict[str, type[ApiObject]] = {cls.KIND: cls for cls in _WORKLOADS}
#: the kinds validation, sync and the CLI know
KINDS: dict[str, type[ApiObject]] = {cls.KIND: cls for cls in (*_V1_CORE, *_WORKLOADS)}
#: the apiVersion of each kind (``v1`` unless listed)
API_VERSIONS: dict[str, str] = {
    kind: ("apps/v1" if kind in ("Deployment", "ReplicaSet") else "v1") for kind in KINDS
}
RESOURCES: dict[str, type[ApiObject]] = {cls.RESOURCE: cls for cls in KINDS.values()}
#: kinds the cluster writes and git never declares
RESOURCES[Event.RESOURCE] = Event


def object_from_dict(data: dict[str, Any]) -> ApiObject:
    """Build the right kind from a wire dict (its ``kind`` must be supported)."""
    kind = data.get("kind", "")
    try:
        cls = KINDS[kind]
    except KeyError:
        raise ValueError(f"unsupported kind {kind!r}; supported: {', '.join(KINDS)}") from None
    return cls.from_dict(data)
