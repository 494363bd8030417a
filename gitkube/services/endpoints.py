"""Endpoints of a Service: the pure core of the endpoints controller.

``compute_endpoints`` turns a Service and the pods around it into the
Endpoints object Kubernetes would write: the pods that match the selector,
Running and Ready under ``addresses``, the others under
``notReadyAddresses``; terminal pods and pods being deleted are left out.

An endpoint must be reachable from other machines. The agent publishes each
container port on a host port of the node and records it in
``pod.status.hostPorts`` (keyed by ``port_key``), and ``pod.status.hostIP``
is the node's address, so an endpoint is ``hostIP:hostPort``; a port that was
not published falls back to ``podIP:containerPort``.

Pods whose ports resolve differently go into separate subsets, as
Kubernetes' ``RepackSubsets`` does: with a host port per pod that is usually
one subset per pod. The result is deterministic for the same input.

``endpoint_targets`` is the reverse view the proxy needs: the ready
``(ip, port)`` pairs behind one Service port.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gitkube.api.annotations import ENDPOINTS_CONTROLLER, PROXY_ADDRESS
from gitkube.api.labels import selector_matches
from gitkube.api.objects import (
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Node,
    ObjectMeta,
    ObjectReference,
    Pod,
    Service,
    ServicePort,
)
from gitkube.api.ports import port_key

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


@dataclass(frozen=True)
class ResolvedPort:
    """Where one Service port lands in one pod."""

    ip: str
    port: int


def is_managed(endpoints: Endpoints) -> bool:
    """True for Endpoints the controller wrote (and may rewrite or delete)."""
    return endpoints.metadata.annotations.get(ENDPOINTS_CONTROLLER) == "true"


def target_container_port(pod: Pod, service_port: ServicePort) -> tuple[str, int] | None:
    """(container name, containerPort) a Service port's targetPort names in ``pod``.

    targetPort is a number or the name of a container port; absent, it is the
    Service port. A number need not be declared by the container (it is then
    reached on the pod IP, container name ""); a name that the pod does not
    declare makes the pod no endpoint of that port (None).
    """
    target = service_port.target_port
    if target is None or target == "" or target == 0:
        target = service_port.port
    protocol = service_port.protocol or "TCP"
    if isinstance(target, str) and target.isdigit():
        target = int(target)
    if isinstance(target, int):
        for container in pod.spec.containers:
            for cport in container.ports:
                if cport.container_port == target and (cport.protocol or "TCP") == protocol:
                    return container.name, target
        return "", target
    for container in pod.spec.containers:
        for cport in container.ports:
            if cport.name == target and (cport.protocol or "TCP") == protocol:
                return container.name, cport.container_port
    return None


def _declared_host_port(pod: Pod, container_name: str, container_port: int, protocol: str) -> int:
    for container in pod.spec.containers:
        if container.name != container_name:
            continue
        for cport in container.ports:
            if cport.container_port == container_port and (cport.protocol or "TCP") == protocol:
                return cport.host_port
    return 0


def resolve_port(
    pod: Pod, service_port: ServicePort, *, node_address: str = ""
) -> ResolvedPort | None:
    """The address and port at which ``pod`` serves ``service_port``, or None."""
    target = target_container_port(pod, service_port)
    if target is None:
        return None
    container_name, container_port = target
    protocol = service_port.protocol or "TCP"
    host_ip = pod.status.host_ip or node_address
    if container_name:
        host_port = pod.status.host_ports.get(port_key(container_name, container_port, protocol))
        if not host_port:
            host_port = _declared_host_port(pod, container_name, container_port, protocol)
        if host_port and host_ip:
            return ResolvedPort(host_ip, host_port)
    pod_ip = pod.status.pod_ip or (host_ip if pod.spec.host_network else "")
    if pod_ip:
        return ResolvedPort(pod_ip, container_port)
    return None


def _address(pod: Pod, ip: str) -> EndpointAddress:
    return EndpointAddress(
        ip=ip,
        node_name=pod.spec.node_name,
        target_ref=ObjectReference(
            kind="Pod", namespace=pod.namespace, name=pod.name, uid=pod.metadata.uid
        ),
    )


def _address_order(address: EndpointAddress) -> tuple[str, str]:
    return address.ip, address.target_ref.name if address.target_ref else ""


PortSet = tuple[tuple[str, int, str], ...]


def compute_endpoints(
    service: Service,
    pods: Iterable[Pod],
    nodes: Mapping[str, Node] | None = None,
) -> Endpoints | None:
    """The Endpoints object for ``service``, or None when it has no selector
    (its Endpoints, if any, are someone else's to write).

    ``nodes`` (by name) supply the node address of a pod whose status does not
    carry ``hostIP`` yet.
    """
    selector = service.spec.selector
    if not selector:
        return None
    nodes = nodes or {}
    # port set -> (ready addresses, not-ready addresses)
    groups: dict[PortSet, tuple[list[EndpointAddress], list[EndpointAddress]]] = {}
    for pod in pods:
        if pod.namespace != service.namespace or not selector_matches(
            selector, pod.metadata.labels
        ):
            continue
        if pod.status.phase in TERMINAL_PHASES or pod.metadata.deletion_timestamp:
            continue
        node = nodes.get(pod.spec.node_name) if pod.spec.node_name else None
        node_address = node.address() if node is not None else ""
        by_ip: dict[str, list[tuple[str, int, str]]] = {}
        for sport in service.spec.ports:
            resolved = resolve_port(pod, sport, node_address=node_address)
            if resolved is None:
                continue
            by_ip.setdefault(resolved.ip, []).append(
                (sport.name, resolved.port, sport.protocol or "TCP")
            )
        ready = pod.is_ready()
        for ip, ports in by_ip.items():
            ready_list, not_ready_list = groups.setdefault(tuple(sorted(ports)), ([], []))
            (ready_list if ready else not_ready_list).append(_address(pod, ip))

    subsets = []
    for port_set in sorted(groups, key=lambda ps: [(n, p, pr) for n, p, pr in ps]):
        ready_list, not_ready_list = groups[port_set]
        subsets.append(
            EndpointSubset(
                addresses=sorted(ready_list, key=_address_order),
                not_ready_addresses=sorted(not_ready_list, key=_address_order),
                ports=[EndpointPort(name=n, port=p, protocol=pr) for n, p, pr in port_set],
            )
        )
    return Endpoints(
        metadata=ObjectMeta(
            name=service.name,
            namespace=service.namespace,
            labels=dict(service.metadata.labels),
            annotations={ENDPOINTS_CONTROLLER: "true"},
        ),
        subsets=subsets,
    )


def endpoints_differ(current: Endpoints, desired: Endpoints) -> bool:
    """True when writing ``desired`` over ``current`` would change what they say."""
    return (
        current.subsets != desired.subsets
        or current.metadata.labels != desired.metadata.labels
        or any(
            current.metadata.annotations.get(k) != v
            for k, v in desired.metadata.annotations.items()
        )
    )


def endpoint_targets(
    endpoints: Endpoints | None, port_name: str, protocol: str = "TCP"
) -> list[tuple[str, int]]:
    """The ready ``(ip, port)`` pairs behind the Service port named ``port_name``,
    in the order the Endpoints list them (round-robin order for the proxy)."""
    if endpoints is None:
        return []
    out: list[tuple[str, int]] = []
    for subset in endpoints.subsets:
        for eport in subset.ports:
            if eport.name == port_name and (eport.protocol or "TCP") == (protocol or "TCP"):
                out.extend((address.ip, eport.port) for address in subset.addresses)
                break
    return out


def compute_load_balancer_ingress(service: Service, nodes: Iterable[Node]) -> list[dict[str, str]]:
    """``status.loadBalancer.ingress`` of a Service: for type LoadBalancer, the
    proxy address of every Ready node (as k3s's ServiceLB lists its nodes); a
    proxy listening on every address is reached at its node's address. Empty
    for the other types."""
    if service.spec.type != "LoadBalancer":
        return []
    found: set[str] = set()
    for node in nodes:
        address = node.metadata.annotations.get(PROXY_ADDRESS, "")
        if not address or not node.is_ready():
            continue
        if address in ("0.0.0.0", "::"):
            address = node.address()
        if address:
            found.add(address)
    out: list[dict[str, str]] = []
    for address in sorted(found):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            out.append({"hostname": address})
        else:
            out.append({"ip": address})
    return out
