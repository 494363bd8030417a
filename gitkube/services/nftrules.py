"""The nftables ruleset of the kernel proxy (pure): from Services and
Endpoints to the desired table, and from two rulesets to one transaction.

After kube-proxy's nftables mode. One table, ``ip gitkube``:

- base chains ``nat-prerouting``/``nat-output`` jump to ``services``, which
  looks ``daddr . l4proto . dport`` up in the verdict map ``service-ips``
  (cluster IPs) and ``l4proto . dport`` in ``service-nodeports`` (NodePort
  and LoadBalancer Services, on the node addresses), each element a ``goto``
  to the Service port's chain;
- a Service port's chain ``svc-HASH-ns/name/proto/port`` marks traffic whose
  source is the cluster IP itself (a client on this host: the kernel picks the
  local cluster IP as source) for masquerade, then picks an endpoint
  chain with ``numgen inc mod N vmap { 0 : goto ..., ... }``: round robin,
  connection by connection, so N endpoints get even shares, as the userspace
  proxy and HAProxy give them (kube-proxy uses ``numgen random``, whose shares
  of a few dozen connections are not even: 50 keep-alive connections over 3
  endpoints landed 22/15/13 in bench/proxy.py); with ClientIP affinity, first
  ``ip saddr @aff-...`` per endpoint (a set with ``flags dynamic,timeout``,
  refreshed by the endpoint chain);
- an endpoint chain ``ep-HASH-...__ip/port`` marks hairpin traffic (source
  is the endpoint) for masquerade and DNATs to ``ip:port``; traffic that came
  in on a nodePort is masqueraded too (``ext-...`` chain), so replies return
  through this host;
- a Service port without ready endpoints is in ``no-endpoint-services`` /
  ``no-endpoint-nodeports``, checked by the filter chains of input, forward
  and output for new connections: ``goto reject-chain``, so the client gets
  "connection refused" at once.

``compute_ruleset`` builds the whole desired ``Ruleset`` (pure, from plain
objects; ``service_fragment`` per Service so a caller can reuse unchanged
ones). ``plan_transaction(current, desired)`` gives the nft script of one
atomic transaction holding only the changes: new chains, sets and maps;
changed chains flushed and refilled (a chain, never the table); map elements
deleted and added one by one; chains and sets no longer wanted deleted last.
``current=None`` (or chains/elements marked unknown) is a resync: every
desired chain is refilled and every map's elements are replaced, still in
one transaction, and objects of the table nobody wants are deleted.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from gitkube.api.objects import Endpoints, Service

TABLE = "gitkube"
FAMILY = "ip"
#: the packet mark asking for masquerade
MASQ_MARK = 0x4000
DEFAULT_AFFINITY_SECONDS = 10800
NODE_PORT_TYPES = frozenset({"NodePort", "LoadBalancer"})
PROTOCOLS = {"TCP": "tcp", "UDP": "udp", "SCTP": "sctp"}

SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
NO_ENDPOINT_SERVICES = "no-endpoint-services"
NO_ENDPOINT_NODEPORTS = "no-endpoint-nodeports"

#: base chains: name -> declaration
BASE_CHAINS: dict[str, str] = {
    "nat-prerouting": "type nat hook prerouting priority dstnat; policy accept;",
    "nat-output": "type nat hook output priority -100; policy accept;",
    "nat-postrouting": "type nat hook postrouting priority srcnat; policy accept;",
    "filter-input": "type filter hook input priority -110; policy accept;",
    "filter-forward": "type filter hook forward priority -110; policy accept;",
    "filter-output": "type filter hook output priority -110; policy accept;",
}
MAPS: dict[str, str] = {
    SERVICE_IPS: "type ipv4_addr . inet_proto . inet_service : verdict;",
    SERVICE_NODEPORTS: "type inet_proto . inet_service : verdict;",
    NO_ENDPOINT_SERVICES: "type ipv4_addr . inet_proto . inet_service : verdict;",
    NO_ENDPOINT_NODEPORTS: "type inet_proto . inet_service : verdict;",
}


@dataclass
class Ruleset:
    """A table's content. ``chains``: name -> rules (None: unknown, refill);
    ``elements``: map name -> key -> verdict (None: unknown, replace)."""

    base_chains: dict[str, str] = field(default_factory=dict)
    chains: dict[str, tuple[str, ...] | None] = field(default_factory=dict)
    sets: dict[str, str] = field(default_factory=dict)
    maps: dict[str, str] = field(default_factory=dict)
    elements: dict[str, dict[str, str] | None] = field(default_factory=dict)
    #: the cluster IPs the host must hold (on the dummy interface)
    addresses: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Fragment:
    """What one Service adds to the ruleset."""

    chains: tuple[tuple[str, tuple[str, ...]], ...] = ()
    sets: tuple[tuple[str, str], ...] = ()
    #: (map, key, verdict)
    elements: tuple[tuple[str, str, str], ...] = ()
    address: str = ""


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b32encode(digest)[:8].decode()


def _valid_ipv4(ip: str) -> bool:
    try:
        return isinstance(ipaddress.ip_address(ip), ipaddress.IPv4Address)
    except ValueError:
        return False


def static_ruleset(node_addresses: Sequence[str]) -> Ruleset:
    """The part of the table that does not depend on Services."""
    nodes = sorted({a for a in node_addresses if _valid_ipv4(a)})
    node_match = f"ip daddr {{ {', '.join(nodes)} }} " if nodes else ""
    chains: dict[str, tuple[str, ...] | None] = {
        "nat-prerouting": ("jump services",),
        "nat-output": ("jump services",),
        "nat-postrouting": ("jump masquerading",),
        "filter-input": ("ct state new jump service-endpoints-check",),
        "filter-forward": ("ct state new jump service-endpoints-check",),
        "filter-output": ("ct state new jump service-endpoints-check",),
        "mark-for-masquerade": (f"meta mark set meta mark or {MASQ_MARK:#x}",),
        "masquerading": (
            f"meta mark & {MASQ_MARK:#x} == 0 return",
            f"meta mark set meta mark xor {MASQ_MARK:#x}",
            "masquerade fully-random",
        ),
        "services": (
            f"ip daddr . meta l4proto . th dport vmap @{SERVICE_IPS}",
            *(
                (f"{node_match}meta l4proto . th dport vmap @{SERVICE_NODEPORTS}",)
                if node_match
                else ()
            ),
        ),
        "service-endpoints-check": (
            f"ip daddr . meta l4proto . th dport vmap @{NO_ENDPOINT_SERVICES}",
            *(
                (f"{node_match}meta l4proto . th dport vmap @{NO_ENDPOINT_NODEPORTS}",)
                if node_match
                else ()
            ),
        ),
        "reject-chain": ("reject",),
    }
    return Ruleset(
        base_chains=dict(BASE_CHAINS),
        chains=chains,
        maps=dict(MAPS),
        elements={name: {} for name in MAPS},
    )


def _ready_targets(
    endpoints: Endpoints | None, port_name: str, protocol: str
) -> list[tuple[str, int]]:
    if endpoints is None:
        return []
    out: set[tuple[str, int]] = set()
    for subset in endpoints.subsets:
        for eport in subset.ports:
            if eport.name == port_name and (eport.protocol or "TCP") == protocol:
                out.update((a.ip, eport.port) for a in subset.addresses if _valid_ipv4(a.ip))
                break
    return sorted(out, key=lambda t: (ipaddress.ip_address(t[0]), t[1]))


def service_fragment(service: Service, endpoints: Endpoints | None) -> Fragment:
    """The chains, sets and map elements of one Service (empty when it has no
    usable cluster IP: headless, not allocated yet)."""
    ip = service.spec.cluster_ip
    if service.spec.headless or not _valid_ipv4(ip):
        return Fragment()
    chains: list[tuple[str, tuple[str, ...]]] = []
    sets: list[tuple[str, str]] = []
    elements: list[tuple[str, str, str]] = []
    affinity = service.spec.session_affinity == "ClientIP"
    timeout = DEFAULT_AFFINITY_SECONDS
    config = service.spec.session_affinity_config
    if config is not None and config.client_ip is not None:
        timeout = config.client_ip.timeout_seconds or DEFAULT_AFFINITY_SECONDS
    node_port_type = service.spec.type in NODE_PORT_TYPES
    for port in service.spec.ports:
        proto = PROTOCOLS.get(port.protocol or "TCP")
        if proto is None or not port.port:
            continue
        port_id = f"{service.namespace}/{service.name}/{proto}/{port.name or port.port}"
        svc_chain = f"svc-{_hash(port_id)}-{port_id}"
        targets = _ready_targets(endpoints, port.name, port.protocol or "TCP")
        key = f"{ip} . {proto} . {port.port}"
        node_port = port.node_port if node_port_type else 0
        if not targets:
            elements.append((NO_ENDPOINT_SERVICES, key, "goto reject-chain"))
            if node_port:
                elements.append(
                    (NO_ENDPOINT_NODEPORTS, f"{proto} . {node_port}", "goto reject-chain")
                )
            continue
        elements.append((SERVICE_IPS, key, f"goto {svc_chain}"))
        if node_port:
            ext_chain = f"ext-{_hash(port_id)}-{port_id}"
            chains.append((ext_chain, ("jump mark-for-masquerade", f"goto {svc_chain}")))
            elements.append((SERVICE_NODEPORTS, f"{proto} . {node_port}", f"goto {ext_chain}"))
        # a client on this host connecting to a cluster IP gets the cluster IP
        # (a local address here) as its source: masquerade, or the endpoint's
        # host would answer an address it also holds
        rules: list[str] = [f"ip saddr {ip} jump mark-for-masquerade"]
        ep_chains = []
        for target_ip, target_port in targets:
            ep_id = f"{port_id}__{target_ip}/{target_port}"
            ep_chain = f"ep-{_hash(ep_id)}-{ep_id}"
            ep_chains.append(ep_chain)
            ep_rules = [f"ip saddr {target_ip} jump mark-for-masquerade"]
            if affinity:
                aff_set = f"aff-{_hash(f'{ep_id}/{timeout}')}"
                sets.append(
                    (aff_set, f"type ipv4_addr; flags dynamic,timeout; timeout {timeout}s;")
                )
                rules.append(f"ip saddr @{aff_set} goto {ep_chain}")
                ep_rules.append(f"update @{aff_set} {{ ip saddr }}")
            ep_rules.append(f"meta l4proto {proto} dnat to {target_ip}:{target_port}")
            chains.append((ep_chain, tuple(ep_rules)))
        if len(ep_chains) == 1:
            rules.append(f"goto {ep_chains[0]}")
        else:
            spread = ", ".join(f"{i} : goto {c}" for i, c in enumerate(ep_chains))
            rules.append(f"numgen inc mod {len(ep_chains)} vmap {{ {spread} }}")
        chains.append((svc_chain, tuple(rules)))
    return Fragment(tuple(chains), tuple(sets), tuple(elements), ip)


def owners_of_ips(services: Iterable[Service]) -> dict[str, str]:
    """Which Service (``namespace/name``) is served on each cluster IP: when two
    claim one (a conflict the allocator reports), the older one keeps it."""
    owners: dict[str, tuple[str, str]] = {}
    for service in services:
        ip = service.spec.cluster_ip
        if service.spec.headless or not ip:
            continue
        ident = (service.metadata.creation_timestamp or "~", service.key)
        if ip not in owners or ident < owners[ip]:
            owners[ip] = ident
    return {ip: key for ip, (_, key) in owners.items()}


def compute_ruleset(
    services: Iterable[Service],
    endpoints: Mapping[str, Endpoints],
    *,
    node_addresses: Sequence[str],
    fragments: Mapping[str, Fragment] | None = None,
) -> Ruleset:
    """The desired table. ``endpoints`` by ``namespace/name``; ``fragments``
    (by Service key) are used instead of computing them when given."""
    services = list(services)
    owners = owners_of_ips(services)
    ruleset = static_ruleset(node_addresses)
    addresses = set()
    elements = ruleset.elements
    for service in services:
        if owners.get(service.spec.cluster_ip) != service.key:
            continue
        key = f"{service.namespace}/{service.name}"
        fragment = (fragments or {}).get(service.key)
        if fragment is None:
            fragment = service_fragment(service, endpoints.get(key))
        for name, rules in fragment.chains:
            ruleset.chains[name] = rules
        for name, decl in fragment.sets:
            ruleset.sets[name] = decl
        for map_name, element, verdict in fragment.elements:
            table = elements[map_name]
            assert table is not None
            table[element] = verdict
        if fragment.address:
            addresses.add(fragment.address)
    ruleset.addresses = frozenset(addresses)
    return ruleset


def _t(kind: str, name: str) -> str:
    return f"{kind} {FAMILY} {TABLE} {name}"


def plan_transaction(current: Ruleset | None, desired: Ruleset) -> list[str]:
    """The nft script (lines) taking the table from ``current`` to ``desired``;
    empty when nothing changes. See the module docstring."""
    have = current if current is not None else Ruleset()
    lines: list[str] = []
    if current is None or not (have.base_chains or have.chains or have.maps):
        lines.append(f"add table {FAMILY} {TABLE}")
    for name, decl in desired.base_chains.items():
        if have.base_chains.get(name) != decl:
            lines.append(f"add {_t('chain', name)} {{ {decl} }}")
    for name in desired.chains:
        if name not in have.chains and name not in desired.base_chains:
            lines.append(f"add {_t('chain', name)}")
    for name, decl in desired.sets.items():
        if name not in have.sets:
            lines.append(f"add {_t('set', name)} {{ {decl} }}")
    for name, decl in desired.maps.items():
        if name not in have.maps:
            lines.append(f"add {_t('map', name)} {{ {decl} }}")
    # chains whose rules changed: refilled (the chain only)
    for name, rules in desired.chains.items():
        known = name in have.chains or name in have.base_chains
        old = have.chains.get(name) if known else ()
        if rules is None or old == rules:
            continue
        if known:
            lines.append(f"flush {_t('chain', name)}")
        lines.extend(f"add rule {FAMILY} {TABLE} {name} {rule}" for rule in rules)
    # map elements, one by one
    for name, want in desired.elements.items():
        want = want or {}
        old_elements = have.elements.get(name, {}) if name in have.maps else {}
        if old_elements is None:
            lines.append(f"flush {_t('map', name)}")
            old_elements = {}
        gone = [k for k, v in old_elements.items() if want.get(k) != v]
        if gone:
            lines.append(f"delete element {FAMILY} {TABLE} {name} {{ {', '.join(gone)} }}")
        new = [f"{k} : {v}" for k, v in want.items() if old_elements.get(k) != v]
        if new:
            lines.append(f"add element {FAMILY} {TABLE} {name} {{ {', '.join(new)} }}")
    # what nobody wants any more: emptied first (they may reference each other)
    removed = [n for n in have.chains if n not in desired.chains and n not in desired.base_chains]
    removed_base = [n for n in have.base_chains if n not in desired.base_chains]
    for name in [*removed, *removed_base]:
        lines.append(f"flush {_t('chain', name)}")
    for name in [*removed, *removed_base]:
        lines.append(f"delete {_t('chain', name)}")
    for name in have.sets:
        if name not in desired.sets:
            lines.append(f"delete {_t('set', name)}")
    for name in have.maps:
        if name not in desired.maps:
            lines.append(f"delete {_t('map', name)}")
    if lines == [f"add table {FAMILY} {TABLE}"] and current is not None:
        return []
    return lines


def applied(current: Ruleset | None, desired: Ruleset) -> Ruleset:
    """What the table holds after ``plan_transaction(current, desired)`` succeeded."""
    return Ruleset(
        base_chains=dict(desired.base_chains),
        chains=dict(desired.chains),
        sets=dict(desired.sets),
        maps=dict(desired.maps),
        elements={k: dict(v or {}) for k, v in desired.elements.items()},
        addresses=desired.addresses,
    )
