"""Cluster IPs: the pure plan, and the allocator against a real store (SQLite and etcd).

- the service range parses, and bad ranges are errors naming the flag
- candidates never include the network or broadcast address, nor a taken IP
- a Service without an IP gets a free one; one it asked for is claimed if free;
  taken or out of range is an error naming the holder / the range
- headless Services get none and release what they held
- allocator: every Service gets a distinct IP from the range, shown in spec;
  the IP is stable across an update; a pruned Service's IP is released
- two allocators (two masters) racing over 40 Services never hand one IP twice
- a clusterIP asked for that another Service holds: condition naming both,
  and it is claimed once the holder is gone
- a deposed leader's allocator (the leader's fence) writes no claim and no IP
"""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from gitkube.api.keys import HEARTBEAT_PREFIX, SERVICE_IP_PREFIX
from gitkube.api.objects import ObjectMeta, Service, ServicePort, ServiceSpec
from gitkube.control import Applier, Cache
from gitkube.services.allocator import CONDITION, ClusterIPAllocator
from gitkube.services.clusterip import (
    Claim,
    candidate_ips,
    parse_service_cidr,
    plan_cluster_ip,
)
from gitkube.store.objects import ObjectStore
from tests.store.conftest import eventually

NET = ipaddress.IPv4Network("10.96.0.0/29")


def svc(name: str, *, ip: str = "", uid: str = "") -> Service:
    return Service(
        metadata=ObjectMeta(name=name, namespace="default", uid=uid or f"uid-{name}"),
        spec=ServiceSpec(ports=[ServicePort(port=80)], selector={"app": name}, cluster_ip=ip),
    )


# ------------------------------------------------------------ pure


def test_parse_service_cidr() -> None:
    assert str(parse_service_cidr("10.96.0.0/16")) == "10.96.0.0/16"
    for bad in ("10.96.0.1/16", "nope", "10.0.0.0/31", "fd00::/64"):
        with pytest.raises(ValueError, match="service-cidr"):
            parse_service_cidr(bad)


def test_candidates_skip_network_broadcast_and_taken() -> None:
    got = list(candidate_ips(NET, {"10.96.0.3"}, seed="x"))
    assert sorted(got) == ["10.96.0.1", "10.96.0.2", "10.96.0.4", "10.96.0.5", "10.96.0.6"]
    # the start depends on the seed: different Services try different IPs first
    firsts = {
        next(candidate_ips(parse_service_cidr("10.96.0.0/16"), set(), seed=str(i)))
        for i in range(20)
    }
    assert len(firsts) > 15


def test_plan_allocates_reuses_and_rejects() -> None:
    plan = plan_cluster_ip(svc("a"), {}, NET)
    assert plan.claim and plan.set_ip and plan.ip in {str(ip) for ip in NET.hosts()}
    # a claim the Service already holds (its spec write was lost) is reused
    held = Claim("10.96.0.5", "default", "a", "uid-a")
    plan = plan_cluster_ip(svc("a"), {"10.96.0.5": held}, NET)
    assert plan.ip == "10.96.0.5" and plan.set_ip and not plan.claim
    # asked for and free: claimed, the spec already says it
    plan = plan_cluster_ip(svc("b", ip="10.96.0.2"), {"10.96.0.5": held}, NET)
    assert plan.claim and not plan.set_ip and plan.ip == "10.96.0.2"
    # asked for, held by another: an error naming the holder
    plan = plan_cluster_ip(svc("b", ip="10.96.0.5"), {"10.96.0.5": held}, NET)
    assert plan.reason == "Taken" and "default/a" in plan.error and "10.96.0.5" in plan.error
    plan = plan_cluster_ip(svc("b", ip="192.168.0.1"), {}, NET)
    assert plan.reason == "OutOfRange" and str(NET) in plan.error
    # changed IP in git: claim the new, release the old
    plan = plan_cluster_ip(svc("a", ip="10.96.0.6"), {"10.96.0.5": held}, NET)
    assert plan.claim and plan.release == [held]
    # headless: none, and what it held goes
    headless = svc("a", ip="None")
    plan = plan_cluster_ip(headless, {"10.96.0.5": held}, NET)
    assert not plan.claim and plan.release == [held]


def test_plan_full_range() -> None:
    claims = {str(ip): Claim(str(ip), "default", f"s{ip}", "u") for ip in NET.hosts()}
    plan = plan_cluster_ip(svc("z"), claims, NET)
    assert plan.reason == "Full" and str(NET) in plan.error


# ------------------------------------------------------------ against the store


def _cache(objects: ObjectStore) -> Cache:
    return Cache(objects.store, raw_prefixes=(HEARTBEAT_PREFIX, SERVICE_IP_PREFIX))


async def _claims(objects: ObjectStore) -> dict[str, str]:
    kvs, _ = await objects.store.range(SERVICE_IP_PREFIX)
    return {kv.key[len(SERVICE_IP_PREFIX) :]: Claim.from_json("", kv.value).service for kv in kvs}


async def test_allocates_keeps_and_releases(objects: ObjectStore) -> None:
    cache = _cache(objects)
    alloc = ClusterIPAllocator(objects, cache=cache, service_cidr="10.96.0.0/24")
    for name in ("a", "b", "c"):
        await objects.create(svc(name, uid=""))
    await objects.create(svc("h", ip="None", uid=""))
    done = await alloc.reconcile_once()
    assert set(done.allocated) == {"default/a", "default/b", "default/c"}
    ips = {}
    for name in ("a", "b", "c"):
        stored = await objects.get(Service, "default", name)
        assert stored is not None
        ip = stored.spec.cluster_ip
        assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/24")
        ips[name] = ip
    assert len(set(ips.values())) == 3
    assert await _claims(objects) == {ip: f"default/{n}" for n, ip in ips.items()}
    headless = await objects.get(Service, "default", "h")
    assert headless is not None and headless.spec.cluster_ip == "None"

    # stable across an update (of something else), and a second pass does nothing
    a = await objects.get(Service, "default", "a")
    assert a is not None
    a.spec.ports[0].port = 8080
    await objects.update(a)
    again = await alloc.reconcile_once()
    assert not again.allocated and not again.released
    a2 = await objects.get(Service, "default", "a")
    assert a2 is not None and a2.spec.cluster_ip == ips["a"]

    # pruned: released
    b = await objects.get(Service, "default", "b")
    assert b is not None
    await objects.delete(b)
    gone = await alloc.reconcile_once()
    assert gone.released == [ips["b"]]
    assert ips["b"] not in await _claims(objects)


async def test_two_allocators_never_share_an_ip(objects: ObjectStore) -> None:
    # a /27: 30 IPs for 30 Services, so the two race for the same few IPs
    caches = [_cache(objects), _cache(objects)]
    allocators = [
        ClusterIPAllocator(objects, cache=c, applier=Applier(objects), service_cidr="10.96.0.0/27")
        for c in caches
    ]
    names = [f"s{i:02d}" for i in range(30)]
    for name in names:
        await objects.create(svc(name, uid=""))
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop)) for c in caches]
    tasks += [asyncio.create_task(a.run(stop)) for a in allocators]
    try:

        async def all_allocated() -> list[str] | None:
            found, _ = await objects.list(Service)
            ips = [s.spec.cluster_ip for s in found]
            return ips if all(ips) else None

        ips = await eventually(all_allocated, timeout=30)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert len(set(ips)) == len(names)
    claims = await _claims(objects)
    assert sorted(claims) == sorted(ips)


async def test_taken_ip_is_an_error_naming_both(objects: ObjectStore) -> None:
    cache = _cache(objects)
    alloc = ClusterIPAllocator(objects, cache=cache, service_cidr="10.96.0.0/24")
    await objects.create(svc("first", ip="10.96.0.10", uid=""))
    await alloc.reconcile_once()
    await objects.create(svc("second", ip="10.96.0.10", uid=""))
    done = await alloc.reconcile_once()
    assert "default/first" in done.errors["default/second"]
    second = await objects.get(Service, "default", "second")
    assert second is not None
    cond = next(c for c in second.status.conditions if c.type == CONDITION)
    assert cond.status == "False" and "default/first" in cond.message
    assert await _claims(objects) == {"10.96.0.10": "default/first"}
    # the holder goes: the other one gets the IP, and the condition goes
    first = await objects.get(Service, "default", "first")
    assert first is not None
    await objects.delete(first)
    await alloc.reconcile_once()
    await alloc.reconcile_once()
    assert await _claims(objects) == {"10.96.0.10": "default/second"}
    second = await objects.get(Service, "default", "second")
    assert second is not None and not any(c.type == CONDITION for c in second.status.conditions)


async def test_a_deposed_leader_allocates_nothing(objects: ObjectStore) -> None:
    from gitkube.election import LeaderElection
    from gitkube.errors import LeadershipLost

    await objects.create(svc("web", uid=""))
    leader = LeaderElection(objects.store, "m1", ttl=5)
    assert await leader._campaign()
    # another master takes over before this one's allocator writes
    await objects.store.revoke_lease(leader.lease)
    assert await LeaderElection(objects.store, "m2", ttl=5)._campaign()
    alloc = ClusterIPAllocator(
        objects, cache=_cache(objects), applier=Applier(objects, fence=leader.fence)
    )
    with pytest.raises(LeadershipLost):
        await alloc.reconcile_once()
    assert await _claims(objects) == {}
    web = await objects.get(Service, "default", "web")
    assert web is not None and web.spec.cluster_ip == ""
