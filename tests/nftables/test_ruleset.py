"""The nftables ruleset core (pure), with plain objects.

- a Service port with ready endpoints: a service-ips element to its chain,
  which spreads with numgen inc mod N (round robin) over one chain per endpoint (DNAT)
- one endpoint: a plain goto; no ready endpoints: no-endpoint element -> reject
- NodePort: a nodeport element through an ext- chain that marks for masquerade
- ClientIP affinity: a set with a timeout per endpoint, looked up and updated
- headless and unallocated Services add nothing; two Services claiming one IP:
  the older one is served
- transactions: from nothing, everything is added; no change, no script;
  one endpoint added: only its chain and the service chain change, no table flush
- a removed Service: its elements deleted, then its chains flushed and deleted
- resync (unknown chains, unknown map elements): chains refilled, maps
  replaced, leftovers deleted
"""

from __future__ import annotations

from gitkube.api.objects import (
    ClientIPConfig,
    EndpointAddress,
    EndpointPort,
    Endpoints,
    EndpointSubset,
    ObjectMeta,
    Service,
    ServicePort,
    ServiceSpec,
    SessionAffinityConfig,
)
from gitkube.services.nftrules import (
    NO_ENDPOINT_NODEPORTS,
    NO_ENDPOINT_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Ruleset,
    applied,
    compute_ruleset,
    plan_transaction,
)

NODES = ["10.0.0.1"]


def service(
    name: str = "web",
    ip: str = "10.96.0.10",
    *,
    type_: str = "ClusterIP",
    node_port: int = 0,
    affinity: int = 0,
    created: str = "2026-01-01T00:00:00Z",
) -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace="default", creation_timestamp=created),
        spec=ServiceSpec(
            ports=[ServicePort(name="http", port=80, node_port=node_port)],
            selector={"app": name},
            type=type_,
            cluster_ip=ip,
            session_affinity="ClientIP" if affinity else "None",
            session_affinity_config=SessionAffinityConfig(ClientIPConfig(affinity))
            if affinity
            else None,
        ),
    )


def endpoints(name: str, *targets: tuple[str, int], not_ready: int = 0) -> Endpoints:
    by_port: dict[int, list[str]] = {}
    for ip, port in targets:
        by_port.setdefault(port, []).append(ip)
    subsets = [
        EndpointSubset(
            addresses=[EndpointAddress(ip=ip) for ip in ips],
            ports=[EndpointPort(name="http", port=port)],
        )
        for port, ips in by_port.items()
    ]
    if not_ready:
        subsets.append(
            EndpointSubset(
                not_ready_addresses=[EndpointAddress(ip="10.0.0.9")],
                ports=[EndpointPort(name="http", port=not_ready)],
            )
        )
    return Endpoints(metadata=ObjectMeta(name=name, namespace="default"), subsets=subsets)


def ruleset(*pairs: tuple[Service, Endpoints | None]) -> Ruleset:
    eps = {f"default/{s.name}": e for s, e in pairs if e is not None}
    return compute_ruleset([s for s, _ in pairs], eps, node_addresses=NODES)


def svc_chain(rs: Ruleset, ip: str = "10.96.0.10") -> str:
    verdict = (rs.elements[SERVICE_IPS] or {})[f"{ip} . tcp . 80"]
    return verdict.removeprefix("goto ")


def test_spreads_evenly_over_ready_endpoints() -> None:
    rs = ruleset((service(), endpoints("web", ("10.0.0.1", 8001), ("10.0.0.2", 8002), not_ready=9)))
    chain = svc_chain(rs)
    rules = rs.chains[chain]
    assert rules is not None and len(rules) == 2
    # a client of this host has the cluster IP as its source: masqueraded
    assert rules[0] == "ip saddr 10.96.0.10 jump mark-for-masquerade"
    assert rules[1].startswith("numgen inc mod 2 vmap { 0 : goto ep-")
    eps = [c for c in rs.chains if c.startswith("ep-")]
    assert len(eps) == 2
    dnats = sorted((rs.chains[c] or ())[-1] for c in eps)
    assert dnats == [
        "meta l4proto tcp dnat to 10.0.0.1:8001",
        "meta l4proto tcp dnat to 10.0.0.2:8002",
    ]
    # hairpin: traffic from the endpoint itself is masqueraded
    assert all((rs.chains[c] or ())[0].endswith("jump mark-for-masquerade") for c in eps)
    assert rs.addresses == {"10.96.0.10"}
    assert rs.elements[NO_ENDPOINT_SERVICES] == {}


def test_one_endpoint_and_none() -> None:
    rs = ruleset((service(), endpoints("web", ("10.0.0.1", 8001))))
    assert (rs.chains[svc_chain(rs)] or ())[-1].startswith("goto ep-")
    rs = ruleset((service(), endpoints("web", not_ready=8001)))
    assert rs.elements[SERVICE_IPS] == {}
    assert rs.elements[NO_ENDPOINT_SERVICES] == {"10.96.0.10 . tcp . 80": "goto reject-chain"}
    assert not [c for c in rs.chains if c.startswith(("svc-", "ep-"))]
    # the IP is still held: the reject comes from this host, at once
    assert rs.addresses == {"10.96.0.10"}


def test_node_port() -> None:
    rs = ruleset((service(type_="NodePort", node_port=30080), endpoints("web", ("10.0.0.2", 8002))))
    ext = (rs.elements[SERVICE_NODEPORTS] or {})["tcp . 30080"].removeprefix("goto ")
    assert rs.chains[ext] == ("jump mark-for-masquerade", f"goto {svc_chain(rs)}")
    assert any("ip daddr { 10.0.0.1 }" in r for r in rs.chains["services"] or ())
    rs = ruleset((service(type_="NodePort", node_port=30080), None))
    assert rs.elements[NO_ENDPOINT_NODEPORTS] == {"tcp . 30080": "goto reject-chain"}


def test_client_ip_affinity_uses_sets_with_timeouts() -> None:
    rs = ruleset((service(affinity=60), endpoints("web", ("10.0.0.1", 1), ("10.0.0.2", 2))))
    assert len(rs.sets) == 2
    assert all(d.endswith("flags dynamic,timeout; timeout 60s;") for d in rs.sets.values())
    rules = rs.chains[svc_chain(rs)] or ()
    assert [r.split()[2] for r in rules[1:3]] == [f"@{name}" for name in rs.sets]
    assert rules[3].startswith("numgen inc mod 2")
    for ep in (c for c in rs.chains if c.startswith("ep-")):
        assert any(r.startswith("update @aff-") for r in rs.chains[ep] or ())


def test_headless_unallocated_and_duplicate_ips() -> None:
    rs = ruleset(
        (service("h", "None"), endpoints("h", ("10.0.0.1", 1))),
        (service("u", ""), endpoints("u", ("10.0.0.1", 1))),
    )
    assert rs.addresses == frozenset() and rs.elements[SERVICE_IPS] == {}
    older = service("old", "10.96.0.10", created="2026-01-01T00:00:00Z")
    newer = service("new", "10.96.0.10", created="2026-02-01T00:00:00Z")
    rs = ruleset(
        (newer, endpoints("new", ("10.0.0.2", 2))), (older, endpoints("old", ("10.0.0.1", 1)))
    )
    assert "/old/" in svc_chain(rs)


def test_transactions_hold_only_the_changes() -> None:
    one = ruleset((service(), endpoints("web", ("10.0.0.1", 8001))))
    script = plan_transaction(None, one)
    assert script[0] == "add table ip gitkube"
    assert any(
        line.startswith("add chain ip gitkube nat-prerouting { type nat hook prerouting")
        for line in script
    )
    assert any(
        "add element ip gitkube service-ips { 10.96.0.10 . tcp . 80 : goto svc-" in line
        for line in script
    )
    kernel = applied(None, one)
    assert plan_transaction(kernel, one) == []

    two = ruleset((service(), endpoints("web", ("10.0.0.1", 8001), ("10.0.0.2", 8002))))
    script = plan_transaction(kernel, two)
    assert not any(line.startswith(("flush table", "delete table", "add table")) for line in script)
    flushed = [line for line in script if line.startswith("flush chain")]
    assert flushed == [f"flush chain ip gitkube {svc_chain(two)}"]
    added_chains = [line for line in script if line.startswith("add chain")]
    assert len(added_chains) == 1 and "10.0.0.2/8002" in added_chains[0]
    assert not any("element" in line for line in script)  # the map element is the same
    kernel = applied(kernel, two)

    # the Service goes: its element first, then its chains emptied and deleted
    empty = ruleset()
    script = plan_transaction(kernel, empty)
    delete_el = script.index(
        next(line for line in script if line.startswith("delete element ip gitkube service-ips"))
    )
    first_flush = script.index(next(line for line in script if line.startswith("flush chain")))
    deletes = [line for line in script if line.startswith("delete chain")]
    assert delete_el < first_flush < script.index(deletes[0])
    assert len(deletes) == 3  # svc + two ep chains
    assert not any("table" in line for line in script)


def test_resync_refills_and_removes_leftovers() -> None:
    desired = ruleset((service(), endpoints("web", ("10.0.0.1", 8001))))
    # what a restarted proxier reads back: names only, plus a chain of an old Service
    seen = Ruleset(
        base_chains=dict.fromkeys(desired.base_chains, ""),
        chains={**dict.fromkeys(desired.chains), "svc-OLD-default/old/tcp/http": None},
        maps=dict.fromkeys(desired.maps, ""),
        elements=dict.fromkeys(desired.maps),
    )
    script = plan_transaction(seen, desired)
    assert "flush map ip gitkube service-ips" in script
    assert f"flush chain ip gitkube {svc_chain(desired)}" in script
    assert script[-1] == "delete chain ip gitkube svc-OLD-default/old/tcp/http"
    assert not any(line.startswith("add table") for line in script)
