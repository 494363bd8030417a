"""The nftables proxier programming a real kernel, inside a network namespace
each test creates (no default route) and deletes.

- apply: a cluster IP reaches both ready endpoints, spread evenly (round
  robin: 200 connections, 100 each); the cluster IP is held on the gitkube0
  dummy interface (routable with no route)
- NodePort on the node address; hairpin (a client whose source is the
  endpoint reaches it through the Service)
- no ready endpoints: the connection is refused at once
- change: an endpoint leaves, no new connection reaches it; the transaction
  flushes one chain, never the table
- atomicity: a transaction with an error changes nothing; 30 endpoint
  changes under a continuous client lose no connection
- resync: a new proxier on a table left by an old one (with a stale Service)
  brings it to the store's state in one transaction
- stop leaves the table; --cleanup removes table and interface; another
  table in the namespace is never touched
- ClientIP affinity: one client sticks to one endpoint; the set holds it with
  a timeout
- passes that program only the Services that changed leave the table as a
  full computation would (Services added, deleted, an IP taken over)
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

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
from gitkube.services.nftables import NftablesProxier, NftError
from gitkube.services.nftrules import plan_transaction
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from tests.nftables.netns import Netns, netns, require_kernel_path
from tests.store.conftest import eventually

NODE = "10.0.0.1"
VIP = "10.96.0.10"


@pytest.fixture
def ns() -> Iterator[Netns]:
    require_kernel_path()
    with netns(NODE, "10.0.0.2", "10.0.0.3") as created:
        yield created


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def make_service(
    name: str = "web", ip: str = VIP, *, node_port: int = 0, affinity: bool = False
) -> Service:
    return Service(
        metadata=ObjectMeta(name=name),
        spec=ServiceSpec(
            ports=[ServicePort(name="http", port=80, node_port=node_port)],
            selector={"app": name},
            type="NodePort" if node_port else "ClusterIP",
            cluster_ip=ip,
            session_affinity="ClientIP" if affinity else "None",
            session_affinity_config=SessionAffinityConfig(ClientIPConfig(600))
            if affinity
            else None,
        ),
    )


def make_endpoints(name: str, *targets: tuple[str, int]) -> Endpoints:
    return Endpoints(
        metadata=ObjectMeta(name=name),
        subsets=[
            EndpointSubset(
                addresses=[EndpointAddress(ip=ip)], ports=[EndpointPort(name="http", port=port)]
            )
            for ip, port in targets
        ],
    )


async def set_endpoints(objects: ObjectStore, name: str, *targets: tuple[str, int]) -> None:
    have = await objects.get(Endpoints, "default", name)
    if have is None:
        await objects.create(make_endpoints(name, *targets))
    else:
        new = make_endpoints(name, *targets)
        new.metadata = have.metadata
        await objects.update(new)


def proxier(objects: ObjectStore, ns: Netns, **kw: object) -> NftablesProxier:
    return NftablesProxier(objects, node_addresses=[NODE], netns=ns.name, **kw)  # type: ignore[arg-type]


async def test_apply_spread_nodeport_hairpin(objects: ObjectStore, ns: Netns) -> None:
    ns.serve("10.0.0.2", 8002, "a")
    ns.serve("10.0.0.3", 8003, "b")
    await objects.create(make_service(node_port=30080))
    await set_endpoints(objects, "web", ("10.0.0.2", 8002), ("10.0.0.3", 8003))
    p = proxier(objects, ns)
    await p.read_kernel()
    done = await p.reconcile_once()
    assert done.addresses_added == [VIP]
    assert f"inet {VIP}/32" in ns.run("ip", "addr", "show", "dev", "gitkube0")
    assert ns.run("ip", "route", "show", "default").strip() == ""

    seen = await asyncio.to_thread(ns.connect, VIP, 80, 200)
    assert seen.get("a", 0) + seen.get("b", 0) == 200, seen
    # even spreading: round robin, connection by connection
    assert seen["a"] == seen["b"] == 100, seen

    by_node_port = await asyncio.to_thread(ns.connect, NODE, 30080, 20)
    assert by_node_port.get("a", 0) + by_node_port.get("b", 0) == 20, by_node_port

    # hairpin: the endpoint itself (source 10.0.0.2) reaches the Service
    hair = await asyncio.to_thread(ns.connect, VIP, 80, 20, source="10.0.0.2")
    assert hair.get("a", 0) + hair.get("b", 0) == 20, hair


async def test_no_ready_endpoints_rejects_at_once(objects: ObjectStore, ns: Netns) -> None:
    await objects.create(make_service())
    await set_endpoints(objects, "web")
    p = proxier(objects, ns)
    await p.read_kernel()
    await p.reconcile_once()
    seen = await asyncio.to_thread(ns.connect, VIP, 80, 5)
    assert seen.get("ConnectionRefusedError") == 5, seen
    assert seen["_slowest_ms"] < 1000, seen


async def test_change_is_one_chain_not_the_table(objects: ObjectStore, ns: Netns) -> None:
    ns.serve("10.0.0.2", 8002, "a")
    ns.serve("10.0.0.3", 8003, "b")
    await objects.create(make_service())
    await set_endpoints(objects, "web", ("10.0.0.2", 8002), ("10.0.0.3", 8003))
    p = proxier(objects, ns)
    await p.read_kernel()
    await p.reconcile_once()
    await set_endpoints(objects, "web", ("10.0.0.2", 8002))
    done = await p.reconcile_once()
    assert not any("table" in line for line in done.script), done.script
    flushed = [line for line in done.script if line.startswith("flush")]
    assert len(flushed) == 2 and flushed[0].startswith("flush chain ip gitkube svc-"), done.script
    seen = await asyncio.to_thread(ns.connect, VIP, 80, 50)
    assert seen == {"a": 50, "_slowest_ms": seen["_slowest_ms"]}, seen
    # nothing more to do: no transaction at all
    assert (await p.reconcile_once()).lines == 0


async def test_atomic(objects: ObjectStore, ns: Netns) -> None:
    for port in (8001, 8002, 8003):
        ns.serve("10.0.0.2", port, str(port))
    await objects.create(make_service())
    await set_endpoints(objects, "web", ("10.0.0.2", 8001), ("10.0.0.2", 8002))
    p = proxier(objects, ns)
    await p.read_kernel()
    await p.reconcile_once()
    before = ns.run("nft", "list", "table", "ip", "gitkube")
    bad = "flush chain ip gitkube services\nadd rule ip gitkube services bogus statement\n"
    with pytest.raises(NftError):
        await p._run(["nft", "-f", "-"], bad)  # the nft command
    assert ns.run("nft", "list", "table", "ip", "gitkube") == before
    with pytest.raises(NftError, match="Error"):
        await p._nft(bad)  # libnftables in the proxier's process, in the namespace
    assert p._libnft is not None, "libnftables is used when it loads"
    assert ns.run("nft", "list", "table", "ip", "gitkube") == before

    # a client connecting all along while the endpoints change 30 times
    client = ns.connect_async(VIP, 80, 400, pause=0.002)
    pairs = [(8001, 8002), (8002, 8003), (8003, 8001)]
    for i in range(30):
        first, second = pairs[i % 3]
        await set_endpoints(objects, "web", ("10.0.0.2", first), ("10.0.0.2", second))
        await p.reconcile_once()
    out, _ = await asyncio.to_thread(client.communicate)
    import json

    seen = json.loads(out)
    answered = sum(v for k, v in seen.items() if k.isdigit())
    assert answered == 400, seen


async def test_resync_and_cleanup_leave_other_tables(objects: ObjectStore, ns: Netns) -> None:
    ns.run("nft", "add", "table", "ip", "other")
    ns.run("nft", "add", "chain", "ip", "other", "keep")
    ns.serve("10.0.0.2", 8002, "a")
    await objects.create(make_service())
    await objects.create(make_service("old", "10.96.0.11"))
    await set_endpoints(objects, "web", ("10.0.0.2", 8002))
    await set_endpoints(objects, "old", ("10.0.0.2", 8002))

    stop = asyncio.Event()
    first = proxier(objects, ns)
    task = asyncio.create_task(first.run(stop))
    await eventually(lambda: _async(first.passes > 0 and first.current is not None), timeout=10)
    stop.set()
    await task
    assert ns.has_table(), "stop without --cleanup leaves the table"
    assert (await asyncio.to_thread(ns.connect, VIP, 80, 3)).get("a") == 3

    # while no proxier runs: one Service goes, the other changes
    old = await objects.get(Service, "default", "old")
    assert old is not None
    await objects.delete(old)
    ns.serve("10.0.0.3", 8003, "b")
    await set_endpoints(objects, "web", ("10.0.0.3", 8003))

    second = proxier(objects, ns, cleanup=True)
    await second.read_kernel()
    assert second.current is not None and any(c.startswith("svc-") for c in second.current.chains)
    done = await second.reconcile_once()
    assert not any(line.startswith(("flush table", "delete table")) for line in done.script)
    assert "flush map ip gitkube service-ips" in done.script
    assert done.addresses_removed == ["10.96.0.11"]
    listing = ns.run("nft", "list", "table", "ip", "gitkube")
    assert "/old/" not in listing and listing.count("dnat to") == 1
    assert (await asyncio.to_thread(ns.connect, VIP, 80, 3)).get("b") == 3
    assert ns.run("nft", "list", "table", "ip", "other").count("chain keep") == 1

    stop = asyncio.Event()
    task = asyncio.create_task(second.run(stop))
    await eventually(lambda: _async(second.passes > 1), timeout=10)
    stop.set()
    await task
    assert not ns.has_table(), "--cleanup removes the table"
    assert "gitkube0" not in ns.run("ip", "link", "show")
    assert ns.has_table("ip", "other"), "another table is never touched"


async def test_client_ip_affinity(objects: ObjectStore, ns: Netns) -> None:
    ns.serve("10.0.0.2", 8002, "a")
    ns.serve("10.0.0.3", 8003, "b")
    await objects.create(make_service(affinity=True))
    await set_endpoints(objects, "web", ("10.0.0.2", 8002), ("10.0.0.3", 8003))
    p = proxier(objects, ns)
    await p.read_kernel()
    await p.reconcile_once()
    seen = await asyncio.to_thread(ns.connect, VIP, 80, 30, source="10.0.0.1")
    answers = {k for k in seen if not k.startswith("_")}
    assert len(answers) == 1 and seen[answers.pop()] == 30, seen
    sets = ns.run("nft", "list", "sets", "ip")
    assert "timeout 10m" in sets and "elements = { 10.0.0.1 expires " in sets, sets


async def _async(value: object) -> object:
    return value


async def test_incremental_passes_match_a_full_computation(objects: ObjectStore, ns: Netns) -> None:
    """After each change, programmed one Service at a time, the table equals
    what a full computation gives (held state and the kernel's DNATs)."""
    p = proxier(objects, ns)
    await p.read_kernel()
    await objects.create(make_service("a", "10.96.0.1"))
    await objects.create(make_service("b", "10.96.0.2", node_port=30002))
    await objects.create(make_service("c", "10.96.0.3", affinity=True))
    await set_endpoints(objects, "a", ("10.0.0.2", 1))
    await set_endpoints(objects, "b", ("10.0.0.2", 2), ("10.0.0.3", 2))
    await set_endpoints(objects, "c", ("10.0.0.3", 3))
    await p.reconcile_once()

    async def check() -> None:
        await p.reconcile_once()
        desired = p.desired()
        assert plan_transaction(p.current, desired) == []
        assert p.addresses == set(desired.addresses)
        dnats = {
            r.split("dnat to ")[1]
            for rules in desired.chains.values()
            for r in rules or ()
            if "dnat to" in r
        }
        listing = ns.run("nft", "list", "table", "ip", "gitkube")
        assert {
            line.split("dnat to ")[1].strip() for line in listing.splitlines() if "dnat to" in line
        } == dnats
        addrs = ns.run("ip", "-4", "-o", "addr", "show", "dev", "gitkube0")
        assert {w.split("/")[0] for w in addrs.split() if w.startswith("10.96.")} == set(
            desired.addresses
        )

    await set_endpoints(objects, "b", ("10.0.0.3", 2))
    await check()
    a = await objects.get(Service, "default", "a")
    assert a is not None
    await objects.delete(a)
    await check()
    # a later Service asking for c's IP is not served; when c goes, it is
    await objects.create(make_service("d", "10.96.0.3"))
    await set_endpoints(objects, "d", ("10.0.0.2", 4))
    await check()
    assert "dnat to 10.0.0.2:4" not in ns.run("nft", "list", "table", "ip", "gitkube")
    c = await objects.get(Service, "default", "c")
    assert c is not None
    await objects.delete(c)
    await check()
    assert "dnat to 10.0.0.2:4" in ns.run("nft", "list", "table", "ip", "gitkube")
    await set_endpoints(objects, "b")
    await check()
    assert p.last_pass.lines > 0 and not any("table" in line for line in p.last_pass.script)
