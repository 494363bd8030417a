"""The endpoints pure core (``gitkube.services.endpoints``), with plain objects.

- selection: selector match, namespace, Services without a selector
- readiness: Running+Ready in addresses, others in notReadyAddresses,
  terminal and deleting pods left out, pods without an address left out
- ports: targetPort by number, by container port name, absent (= port);
  hostIP:hostPort from pod status, declared hostPort, podIP fallback, node
  address fallback; a name the pod lacks drops the pod from that port
- subsets: pods whose ports resolve differently are separate subsets;
  ordering is deterministic (input order does not matter)
- headless Services and empty results; metadata of the result
- ``endpoint_targets`` (the proxy's view) and ``endpoints_differ``
"""

from __future__ import annotations

import itertools

from gitkube.api.annotations import ENDPOINTS_CONTROLLER
from gitkube.api.objects import (
    Container,
    ContainerPort,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    Node,
    NodeAddress,
    NodeStatus,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.api.ports import port_key
from gitkube.nodes.runtime.base import port_key as runtime_port_key
from gitkube.services.endpoints import (
    compute_endpoints,
    endpoint_targets,
    endpoints_differ,
    is_managed,
    target_container_port,
)

APP = {"app": "web"}


def make_pod(
    name: str,
    *,
    labels: dict[str, str] | None = None,
    namespace: str = "default",
    ready: bool = True,
    phase: str = "Running",
    host_ip: str = "10.0.0.1",
    pod_ip: str = "172.17.0.2",
    ports: list[ContainerPort] | None = None,
    host_ports: dict[str, int] | None = None,
    node: str = "n1",
    deleting: bool = False,
) -> Pod:
    ports = ports if ports is not None else [ContainerPort(container_port=8080, name="http")]
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            labels=dict(APP if labels is None else labels),
            uid=f"uid-{name}",
            deletion_timestamp="2024-01-01T00:00:00Z" if deleting else "",
        ),
        spec=PodSpec(containers=[Container(name="main", ports=ports)], node_name=node),
        status=PodStatus(
            phase=phase,
            conditions=[PodCondition(type="Ready", status="True" if ready else "False")],
            host_ip=host_ip,
            pod_ip=pod_ip,
            host_ports=dict(host_ports or {}),
        ),
    )


def make_service(
    *,
    selector: dict[str, str] | None = None,
    ports: list[ServicePort] | None = None,
    cluster_ip: str = "",
    name: str = "web",
) -> Service:
    return Service(
        metadata=ObjectMeta(name=name, labels={"tier": "front"}),
        spec=ServiceSpec(
            selector=dict(APP if selector is None else selector),
            ports=ports if ports is not None else [ServicePort(port=80, target_port=8080)],
            cluster_ip=cluster_ip,
        ),
    )


def addrs(subset: EndpointSubset, *, ready: bool = True) -> list[tuple[str, str]]:
    items = subset.addresses if ready else subset.not_ready_addresses
    return [(a.ip, a.target_ref.name if a.target_ref else "") for a in items]


def targets(endpoints: Endpoints | None, port_name: str = "") -> list[tuple[str, int]]:
    return endpoint_targets(endpoints, port_name)


# ------------------------------------------------------------------ selection


def test_only_pods_matching_the_selector_in_the_namespace_are_endpoints() -> None:
    pods = [
        make_pod("a", host_ports={"main/8080/TCP": 30001}),
        make_pod("b", labels={"app": "db"}, host_ports={"main/8080/TCP": 30002}),
        make_pod("c", namespace="other", host_ports={"main/8080/TCP": 30003}),
        make_pod("d", labels={"app": "web", "x": "y"}, host_ports={"main/8080/TCP": 30004}),
    ]
    result = compute_endpoints(make_service(), pods)
    assert targets(result) == [("10.0.0.1", 30001), ("10.0.0.1", 30004)]


def test_service_without_selector_gets_no_managed_endpoints() -> None:
    assert compute_endpoints(make_service(selector={}), [make_pod("a")]) is None


def test_no_matching_pods_gives_empty_endpoints_object() -> None:
    result = compute_endpoints(make_service(), [make_pod("a", labels={"app": "db"})])
    assert result is not None
    assert result.subsets == []
    assert result.name == "web" and result.namespace == "default"


# ------------------------------------------------------------------ readiness


def test_ready_pods_are_addresses_and_unready_are_not_ready_addresses() -> None:
    pods = [
        make_pod("ready", host_ports={"main/8080/TCP": 30001}),
        make_pod("unready", ready=False, host_ports={"main/8080/TCP": 30001}, host_ip="10.0.0.2"),
        make_pod(
            "pending", phase="Pending", host_ports={"main/8080/TCP": 30001}, host_ip="10.0.0.3"
        ),
    ]
    result = compute_endpoints(make_service(), pods)
    assert result is not None
    (subset,) = result.subsets
    assert addrs(subset) == [("10.0.0.1", "ready")]
    assert addrs(subset, ready=False) == [("10.0.0.2", "unready"), ("10.0.0.3", "pending")]
    assert targets(result) == [("10.0.0.1", 30001)]


def test_terminal_and_deleting_pods_are_left_out() -> None:
    pods = [
        make_pod("done", phase="Succeeded"),
        make_pod("failed", phase="Failed"),
        make_pod("going", deleting=True),
    ]
    result = compute_endpoints(make_service(), pods)
    assert result is not None and result.subsets == []


def test_pod_without_any_address_is_left_out() -> None:
    result = compute_endpoints(
        make_service(), [make_pod("new", phase="Pending", host_ip="", pod_ip="", ready=False)]
    )
    assert result is not None and result.subsets == []


# ------------------------------------------------------------------ ports


def test_target_port_by_number_uses_published_host_port_on_host_ip() -> None:
    pod = make_pod("a", host_ports={port_key("main", 8080): 31000})
    result = compute_endpoints(make_service(), [pod])
    assert result is not None
    assert result.subsets[0].ports == [EndpointPort(name="", port=31000, protocol="TCP")]
    assert targets(result) == [("10.0.0.1", 31000)]


def test_target_port_by_name_resolves_through_the_container_port() -> None:
    pod = make_pod(
        "a",
        ports=[ContainerPort(container_port=9000, name="metrics"), ContainerPort(8080, name="web")],
        host_ports={"main/8080/TCP": 32000, "main/9000/TCP": 32001},
    )
    service = make_service(ports=[ServicePort(name="http", port=80, target_port="web")])
    result = compute_endpoints(service, [pod])
    assert targets(result, "http") == [("10.0.0.1", 32000)]


def test_absent_target_port_means_the_service_port() -> None:
    pod = make_pod("a", ports=[ContainerPort(container_port=80)], host_ports={"main/80/TCP": 30080})
    service = make_service(ports=[ServicePort(port=80)])
    assert target_container_port(pod, service.spec.ports[0]) == ("main", 80)
    assert targets(compute_endpoints(service, [pod])) == [("10.0.0.1", 30080)]


def test_unpublished_port_falls_back_to_pod_ip_and_container_port() -> None:
    declared = make_pod("declared")  # 8080 declared, nothing published
    undeclared = make_pod("undeclared", ports=[], pod_ip="172.17.0.3")
    result = compute_endpoints(make_service(), [declared, undeclared])
    assert sorted(targets(result)) == [("172.17.0.2", 8080), ("172.17.0.3", 8080)]


def test_declared_host_port_is_used_when_status_has_none_yet() -> None:
    pod = make_pod("a", ports=[ContainerPort(container_port=8080, host_port=8888)])
    assert targets(compute_endpoints(make_service(), [pod])) == [("10.0.0.1", 8888)]


def test_node_address_stands_in_for_a_missing_host_ip() -> None:
    pod = make_pod("a", host_ip="", pod_ip="", host_ports={"main/8080/TCP": 30500})
    node = Node(
        metadata=ObjectMeta(name="n1"),
        status=NodeStatus(addresses=[NodeAddress(type="InternalIP", address="192.168.1.7")]),
    )
    assert targets(compute_endpoints(make_service(), [pod], {"n1": node})) == [
        ("192.168.1.7", 30500)
    ]


def test_named_target_port_missing_from_a_pod_drops_that_pod() -> None:
    has = make_pod("has", host_ports={"main/8080/TCP": 30001})
    lacks = make_pod("lacks", ports=[ContainerPort(container_port=8080, name="other")])
    service = make_service(ports=[ServicePort(name="http", port=80, target_port="http")])
    result = compute_endpoints(service, [has, lacks])
    assert result is not None
    assert [addrs(s) for s in result.subsets] == [[("10.0.0.1", "has")]]


def test_protocol_must_match_for_named_ports() -> None:
    pod = make_pod("a", ports=[ContainerPort(container_port=53, name="dns", protocol="UDP")])
    tcp = make_service(ports=[ServicePort(port=53, target_port="dns", protocol="TCP")])
    udp = make_service(ports=[ServicePort(port=53, target_port="dns", protocol="UDP")])
    assert compute_endpoints(tcp, [pod]).subsets == []  # type: ignore[union-attr]
    assert endpoint_targets(compute_endpoints(udp, [pod]), "", "UDP") == [("172.17.0.2", 53)]


def test_port_key_is_the_runtime_one() -> None:
    assert port_key("c", 80, "UDP") == runtime_port_key("c", 80, "UDP") == "c/80/UDP"
    assert port_key("c", 80, "") == runtime_port_key("c", 80, "") == "c/80/TCP"


# ------------------------------------------------------------------ subsets


def test_pods_whose_ports_differ_are_separate_subsets_with_all_ports() -> None:
    ports = [ContainerPort(8080, name="http"), ContainerPort(8443, name="https")]
    a = make_pod("a", ports=ports, host_ports={"main/8080/TCP": 30001, "main/8443/TCP": 30002})
    b = make_pod(
        "b",
        ports=ports,
        host_ip="10.0.0.2",
        host_ports={"main/8080/TCP": 30001, "main/8443/TCP": 30002},
    )
    c = make_pod("c", ports=ports, host_ports={"main/8080/TCP": 30003, "main/8443/TCP": 30004})
    service = make_service(
        ports=[
            ServicePort(name="https", port=443, target_port="https"),
            ServicePort(name="http", port=80, target_port="http"),
        ]
    )
    result = compute_endpoints(service, [c, b, a])
    assert result is not None
    assert [[(p.name, p.port) for p in s.ports] for s in result.subsets] == [
        [("http", 30001), ("https", 30002)],
        [("http", 30003), ("https", 30004)],
    ]
    assert addrs(result.subsets[0]) == [("10.0.0.1", "a"), ("10.0.0.2", "b")]
    assert targets(result, "http") == [
        ("10.0.0.1", 30001),
        ("10.0.0.2", 30001),
        ("10.0.0.1", 30003),
    ]
    assert targets(result, "https")[2] == ("10.0.0.1", 30004)


def test_result_does_not_depend_on_pod_order() -> None:
    pods = [
        make_pod(
            f"p{i}",
            ready=i % 2 == 0,
            host_ip=f"10.0.0.{i % 3}",
            host_ports={"main/8080/TCP": 30000 + i % 2},
        )
        for i in range(5)
    ]
    results = {
        repr(compute_endpoints(make_service(), list(order)))
        for order in itertools.permutations(pods)
    }
    assert len(results) == 1


def test_address_records_node_and_pod_reference() -> None:
    result = compute_endpoints(make_service(), [make_pod("a", host_ports={"main/8080/TCP": 1})])
    assert result is not None
    (address,) = result.subsets[0].addresses
    assert address == EndpointAddress(ip="10.0.0.1", node_name="n1", target_ref=address.target_ref)
    assert address.target_ref is not None
    assert (address.target_ref.kind, address.target_ref.name, address.target_ref.uid) == (
        "Pod",
        "a",
        "uid-a",
    )


# ------------------------------------------------------------------ headless, metadata


def test_headless_service_gets_endpoints_too() -> None:
    service = make_service(cluster_ip="None")
    assert service.spec.headless
    result = compute_endpoints(service, [make_pod("a", host_ports={"main/8080/TCP": 30001})])
    assert targets(result) == [("10.0.0.1", 30001)]


def test_result_is_marked_managed_and_carries_service_labels() -> None:
    result = compute_endpoints(make_service(), [])
    assert result is not None
    assert is_managed(result)
    assert result.metadata.annotations == {ENDPOINTS_CONTROLLER: "true"}
    assert result.metadata.labels == {"tier": "front"}
    assert not is_managed(Endpoints(metadata=ObjectMeta(name="hand-made")))


def test_endpoints_differ_ignores_store_metadata_only() -> None:
    pod = make_pod("a", host_ports={"main/8080/TCP": 30001})
    desired = compute_endpoints(make_service(), [pod])
    assert desired is not None
    stored = desired.copy()
    stored.metadata.resource_version = "42"
    stored.metadata.uid = "u"
    stored.metadata.creation_timestamp = "2024-01-01T00:00:00Z"
    assert not endpoints_differ(stored, desired)
    changed = compute_endpoints(make_service(), [make_pod("a", ready=False)])
    assert changed is not None
    assert endpoints_differ(stored, changed)


def test_endpoint_targets_of_nothing_is_empty() -> None:
    assert endpoint_targets(None, "") == []
    assert targets(compute_endpoints(make_service(), [make_pod("a", ready=False)])) == []
