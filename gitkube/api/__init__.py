"""Typed API objects, schemas, validation, label selectors and the key layout."""

from gitkube.api.keys import object_key, parse_key, resource_prefix
from gitkube.api.labels import format_labels, parse_labels, selector_matches
from gitkube.api.objects import (
    KINDS,
    RESOURCES,
    ApiObject,
    Container,
    ContainerPort,
    ContainerStatus,
    Endpoints,
    Node,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodSpec,
    Probe,
    ReplicationController,
    Service,
    ServicePort,
    object_from_dict,
)
from gitkube.api.quantity import parse_cpu, parse_memory, parse_quantity

__all__ = [
    "KINDS",
    "RESOURCES",
    "ApiObject",
    "Container",
    "ContainerPort",
    "ContainerStatus",
    "Endpoints",
    "Node",
    "ObjectMeta",
    "OwnerReference",
    "Pod",
    "PodSpec",
    "Probe",
    "ReplicationController",
    "Service",
    "ServicePort",
    "format_labels",
    "object_from_dict",
    "object_key",
    "parse_cpu",
    "parse_key",
    "parse_labels",
    "parse_memory",
    "parse_quantity",
    "resource_prefix",
    "selector_matches",
]
