"""LoadBalancer Services, as k3s's ServiceLB does it: served by the proxy on
every agent's proxy address (like NodePort), and their
``status.loadBalancer.ingress`` lists those addresses.

- pure: the Ready nodes' proxy addresses, sorted, an address for all
  interfaces replaced by the node's own; hostnames as hostnames; none for
  other Service types;
- the LoadBalancer status controller (real SQLite store) writes the status once, keeps
  it when nothing changes, follows a node that goes NotReady, and clears it
  when the Service stops being a LoadBalancer; an agent's registration sets
  the proxy address on its Node.
"""

from __future__ import annotations

from gitkube.api import annotations as ann
from gitkube.api.objects import (
    Node,
    NodeAddress,
    NodeCondition,
    NodeStatus,
    ObjectMeta,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.nodes.registration import NodeSettings, desired_node
from gitkube.services.endpoints import compute_load_balancer_ingress
from gitkube.services.loadbalancer import LoadBalancerStatusController
from gitkube.store.objects import ObjectStore


def node(name: str, address: str, proxy: str, *, ready: bool = True) -> Node:
    return Node(
        metadata=ObjectMeta(name=name, annotations={ann.PROXY_ADDRESS: proxy} if proxy else {}),
        status=NodeStatus(
            addresses=[NodeAddress(type="InternalIP", address=address)],
            conditions=[NodeCondition(type="Ready", status="True" if ready else "False")],
        ),
    )


def service(type_: str = "LoadBalancer") -> Service:
    return Service(
        metadata=ObjectMeta(name="shop"),
        spec=ServiceSpec(
            type=type_, selector={"app": "shop"}, ports=[ServicePort(port=80, target_port=8080)]
        ),
    )


def test_ingress_lists_the_ready_nodes_proxy_addresses() -> None:
    nodes = [
        node("b", "10.0.0.2", "10.0.0.2"),
        node("a", "10.0.0.1", "0.0.0.0"),
        node("c", "10.0.0.3", "10.0.0.3", ready=False),
        node("d", "10.0.0.4", ""),
        node("e", "10.0.0.5", "proxy.example.com"),
    ]
    assert compute_load_balancer_ingress(service(), nodes) == [
        {"ip": "10.0.0.1"},
        {"ip": "10.0.0.2"},
        {"hostname": "proxy.example.com"},
    ]
    assert compute_load_balancer_ingress(service("NodePort"), nodes) == []


def test_registration_sets_the_proxy_address() -> None:
    with_proxy = desired_node(None, NodeSettings(name="n1", proxy_address="127.0.0.1"), now="t")
    assert with_proxy.metadata.annotations[ann.PROXY_ADDRESS] == "127.0.0.1"
    without = desired_node(with_proxy, NodeSettings(name="n1"), now="t")
    assert ann.PROXY_ADDRESS not in without.metadata.annotations


async def test_the_controller_writes_and_follows_the_status(objects: ObjectStore) -> None:
    await objects.create(service())
    await objects.create(node("n1", "127.0.0.1", "127.0.0.1"))
    await objects.create(node("n2", "127.0.0.2", "127.0.0.2"))
    controller = LoadBalancerStatusController(objects)

    first = await controller.reconcile_once()
    assert first.written == ["default/shop"]
    svc = await objects.get(Service, "default", "shop")
    assert svc is not None
    assert svc.status.load_balancer.ingress == [{"ip": "127.0.0.1"}, {"ip": "127.0.0.2"}]
    assert svc.to_dict()["status"]["loadBalancer"]["ingress"][0] == {"ip": "127.0.0.1"}

    assert (await controller.reconcile_once()).written == []

    n2 = await objects.get(Node, "", "n2")
    assert n2 is not None
    n2.status.conditions = [NodeCondition(type="Ready", status="False")]
    await objects.update(n2)
    await controller.reconcile_once()
    svc = await objects.get(Service, "default", "shop")
    assert svc is not None and svc.status.load_balancer.ingress == [{"ip": "127.0.0.1"}]

    svc.spec.type = "ClusterIP"
    await objects.update(svc)
    await controller.reconcile_once()
    svc = await objects.get(Service, "default", "shop")
    assert svc is not None and svc.status.load_balancer.ingress == []
