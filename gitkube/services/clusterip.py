"""Cluster IPs (pure): the service range, claims, and which IP a Service gets.

A claim is one store key per allocated IP (``SERVICE_IP_PREFIX + ip``) whose
value names the Service (namespace, name, uid). It is created with a
compare-on-absent, so two masters can never hand one IP to two Services.
This module decides; ``gitkube.services.allocator`` writes.

- ``parse_service_cidr("10.96.0.0/16")``: the range (IPv4, at most /30);
- ``candidate_ips(network, taken, seed=uid)``: the free IPs in the order to
  try them, starting at a point derived from the Service's uid so that
  concurrent allocations rarely race for the same IP;
- ``plan_cluster_ip(service, claims, network)``: what the allocator must do
  for one Service (``ClusterIPPlan``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from gitkube.api.objects import Service

DEFAULT_SERVICE_CIDR = "10.96.0.0/16"


def parse_service_cidr(text: str) -> ipaddress.IPv4Network:
    """The service range; ``ValueError`` naming the problem."""
    try:
        network = ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as exc:
        raise ValueError(f"service-cidr: {text!r} is not a network ({exc})") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise ValueError(f"service-cidr: {text!r}: only IPv4 ranges are supported")
    if network.prefixlen > 30:
        raise ValueError(f"service-cidr: {text!r} is too small (at most /30)")
    return network


@dataclass(frozen=True)
class Claim:
    """Who holds an IP."""

    ip: str
    namespace: str
    name: str
    uid: str
    #: the claim key's mod_revision (0 when not read from the store)
    revision: int = 0

    @property
    def service(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_json(self) -> bytes:
        return json.dumps(
            {"namespace": self.namespace, "name": self.name, "uid": self.uid}
        ).encode()

    @classmethod
    def from_json(cls, ip: str, data: bytes, *, revision: int = 0) -> Claim:
        try:
            value = json.loads(data)
        except ValueError:
            value = {}
        if not isinstance(value, dict):
            value = {}
        return cls(
            ip,
            str(value.get("namespace", "")),
            str(value.get("name", "")),
            str(value.get("uid", "")),
            revision,
        )


def wants_cluster_ip(service: Service) -> bool:
    """Headless Services (``clusterIP: None``) get none."""
    return not service.spec.headless


def in_range(ip: str, network: ipaddress.IPv4Network) -> bool:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    return address in network and address not in (
        network.network_address,
        network.broadcast_address,
    )


def candidate_ips(
    network: ipaddress.IPv4Network, taken: set[str] | frozenset[str], *, seed: str
) -> Iterator[str]:
    """Free IPs of ``network`` (neither its network nor broadcast address), starting
    at an offset derived from ``seed`` and wrapping around."""
    size = network.num_addresses - 2
    start = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big") % size
    base = int(network.network_address) + 1
    for i in range(size):
        ip = str(ipaddress.IPv4Address(base + (start + i) % size))
        if ip not in taken:
            yield ip


@dataclass
class ClusterIPPlan:
    """What to do for one Service.

    - ``claim``: create the claim of ``ip`` (absent) for the Service;
    - ``set_ip``: write ``ip`` into ``spec.clusterIP`` (after the claim holds);
    - ``release``: claims of this Service that are not its IP any more;
    - ``error``: the IP the Service asks for cannot be had (taken, out of range).
    """

    ip: str = ""
    claim: bool = False
    set_ip: bool = False
    release: list[Claim] = field(default_factory=list)
    error: str = ""
    reason: Literal["", "Taken", "OutOfRange", "Full"] = ""

    @property
    def noop(self) -> bool:
        return not (self.claim or self.set_ip or self.release or self.error)


def claims_by_service(claims: Mapping[str, Claim]) -> dict[str, list[Claim]]:
    out: dict[str, list[Claim]] = {}
    for claim in claims.values():
        out.setdefault(claim.service, []).append(claim)
    return out


def plan_cluster_ip(
    service: Service,
    claims: Mapping[str, Claim],
    network: ipaddress.IPv4Network,
    *,
    mine: list[Claim] | None = None,
) -> ClusterIPPlan:
    """What the allocator does for ``service``, given every claim by IP (``mine``:
    the claims naming this Service, if the caller has them indexed)."""
    if mine is None:
        key = f"{service.namespace}/{service.name}"
        mine = [c for c in claims.values() if c.service == key]
    # a claim made for an earlier Service of the same name (deleted, created
    # again) is this Service's too: the name is what git declares
    plan = ClusterIPPlan()
    if not wants_cluster_ip(service):
        plan.release = list(mine)
        return plan
    asked = service.spec.cluster_ip
    if asked:
        plan.ip = asked
        plan.release = [c for c in mine if c.ip != asked]
        holder = claims.get(asked)
        if holder is not None and holder.service != f"{service.namespace}/{service.name}":
            plan.error = f"spec.clusterIP {asked} is already allocated to Service {holder.service}"
            plan.reason = "Taken"
            plan.release = []  # keep what it had until the conflict is resolved
            return plan
        if holder is None:
            if not in_range(asked, network):
                plan.error = f"spec.clusterIP {asked} is not in the service range {network}"
                plan.reason = "OutOfRange"
                return plan
            plan.claim = True
        return plan
    # no IP yet: reuse a claim this Service already holds (an allocation whose
    # spec write was lost), else take a free one
    if mine:
        keep = min(mine, key=lambda c: c.ip)
        plan.ip, plan.set_ip = keep.ip, True
        plan.release = [c for c in mine if c is not keep]
        return plan
    for ip in candidate_ips(network, frozenset(claims), seed=service.metadata.uid or service.key):
        plan.ip, plan.claim, plan.set_ip = ip, True, True
        return plan
    plan.error = f"the service range {network} is full"
    plan.reason = "Full"
    return plan


def duplicate_cluster_ips(services: list[Service]) -> dict[str, list[Service]]:
    """IPs that more than one Service declares, with those Services (for validation)."""
    seen: dict[str, list[Service]] = {}
    for service in services:
        ip = service.spec.cluster_ip
        if ip and ip != "None":
            seen.setdefault(ip, []).append(service)
    return {ip: group for ip, group in seen.items() if len(group) > 1}
