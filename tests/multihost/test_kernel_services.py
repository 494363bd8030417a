"""Services by cluster IP on the nftables data path, across hosts.

Three agent hosts (``--proxy-mode nftables``) and a master, each a network
namespace with no default route on the test's bridge (see ``rig``); each
agent programs the ``gitkube`` table and the cluster IPs of its own namespace.

- the master allocates the Service's cluster IP from the service range; from
  every host, the cluster IP answers from pods on every host (process
  runtime: DNAT to ``nodeAddress:hostPort``; Docker: to the published ports)
- a pod dies (deleted): once it is out of the Endpoints it leaves every
  host's rules within 5 s, and every new connection from every host is
  answered by the others
- a host dies: its endpoints leave every other host's rules, and the cluster
  IP keeps answering from the pods that are left
"""

from __future__ import annotations

import asyncio
import ipaddress
import subprocess
import sys

import pytest

from gitkube.api.objects import Endpoints, Pod, ReplicationController, Service
from tests.multihost.conftest import Cluster, ClusterFactory
from tests.multihost.manifests import web_rc, web_service

HOSTS = ["h1", "h2", "h3"]
PORT = 8080

#: N HTTP GETs to ip:port; prints one line per request: the body, or the error
CLIENT = r"""
import socket, sys
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for _ in range(n):
    try:
        with socket.create_connection((host, port), timeout=3) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            data = b""
            while chunk := c.recv(4096):
                data += chunk
        print(data.split(b"\r\n\r\n", 1)[-1].decode().strip() or "empty", flush=True)
    except OSError as exc:
        print("!" + type(exc).__name__, flush=True)
"""


def call(c: Cluster, host: str, ip: str, n: int) -> list[str]:
    argv = [sys.executable, "-c", CLIENT, ip, str(PORT), str(n)]
    out = subprocess.run(
        ["ip", "netns", "exec", c.lab.hosts[host].netns, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    return out.split()


def rules(c: Cluster, host: str) -> str:
    done = subprocess.run(
        ["ip", "netns", "exec", c.lab.hosts[host].netns, "nft", "list", "table", "ip", "gitkube"],
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout


async def start(c: Cluster, runtime: str) -> tuple[str, dict[str, str]]:
    c.remote.write("web.yaml", web_rc(6, runtime=runtime))
    c.remote.write("svc.yaml", web_service(PORT))
    c.remote.commit_and_push("web and its service")

    async def ready() -> bool:
        rc = await c.objects.get(ReplicationController, "default", "web")
        return rc is not None and rc.status.ready_replicas == 6

    await c.wait(ready, timeout=120, what="6 web pods ready")

    async def allocated() -> str:
        svc = await c.objects.get(Service, "default", "web")
        return svc.spec.cluster_ip if svc is not None else ""

    ip = await c.wait(allocated, timeout=30, what="a cluster IP")
    assert ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/16")
    node_of = {p.name: p.spec.node_name for p in await c.pods()}
    assert set(node_of.values()) == set(HOSTS), node_of
    return ip, node_of


async def endpoint_targets(c: Cluster) -> set[str]:
    ep = await c.objects.get(Endpoints, "default", "web")
    if ep is None:
        return set()
    return {f"{a.ip}:{p.port}" for s in ep.subsets for a in s.addresses for p in s.ports}


def _dnat_targets(text: str) -> set[str]:
    return {line.split("dnat to ")[1].strip() for line in text.splitlines() if "dnat to" in line}


async def programmed_everywhere(c: Cluster, hosts: list[str]) -> bool:
    """Every host's table DNATs to exactly the current ready endpoints."""
    want = await endpoint_targets(c)
    for host in hosts:
        text = rules(c, host)
        have = {
            line.split("dnat to ")[1].strip() for line in text.splitlines() if "dnat to" in line
        }
        if have != want:
            return False
    return bool(want)


async def from_every_host_to_every_host(c: Cluster, ip: str, node_of: dict[str, str]) -> None:
    for client in HOSTS:
        reached: set[str] = set()

        async def all_hosts(client: str = client, reached: set[str] = reached) -> bool:
            for answer in await asyncio.to_thread(call, c, client, ip, 20):
                assert not answer.startswith("!"), f"from {client}: {answer}"
                assert answer in node_of, f"from {client}: {answer!r} is no pod of the RC"
                reached.add(node_of[answer])
            return reached == set(HOSTS)

        await c.wait(all_hosts, timeout=30, what=f"{client} reaching pods on every host")


@pytest.mark.parametrize("runtime", ["process", "docker"])
async def test_cluster_ip_from_every_host_to_pods_on_every_host(
    cluster_factory: ClusterFactory, runtime: str
) -> None:
    c = await cluster_factory(masters=["m1"], agents=HOSTS, runtime=runtime, proxy_mode="nftables")
    ip, node_of = await start(c, runtime)
    await c.wait(lambda: programmed_everywhere(c, HOSTS), timeout=30, what="rules on every host")
    for host in HOSTS:
        routes = subprocess.run(
            ["ip", "-n", c.lab.hosts[host].netns, "route", "show", "default"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert routes.strip() == "", f"{host} has a default route"
    await from_every_host_to_every_host(c, ip, node_of)


async def test_dead_pod_and_dead_host_leave_every_hosts_rules(
    cluster_factory: ClusterFactory,
) -> None:
    c = await cluster_factory(masters=["m1"], agents=HOSTS, proxy_mode="nftables")
    ip, node_of = await start(c, "process")
    await c.wait(lambda: programmed_everywhere(c, HOSTS), timeout=30, what="rules on every host")

    # a pod dies (deleted, as `kubectl delete pod`: its agent stops it, the
    # RC makes another): once it is out of the Endpoints it is out of every
    # host's rules, and every new connection is answered by the others
    victim = next(name for name, node in node_of.items() if node == "h2")
    pod = await c.objects.get(Pod, "default", victim)
    assert pod is not None
    address = c.address("h2")
    mine = {t for t in await endpoint_targets(c) if t.startswith(address + ":")}
    await c.objects.delete(pod)

    async def not_running() -> bool:
        return victim not in c.running("h2")

    await c.wait(not_running, timeout=30, what=f"{victim} stopped")
    dead: set[str] = set()

    async def endpoints_dropped_it() -> bool:
        dead.update(mine - await endpoint_targets(c))
        return bool(dead)

    await c.wait(endpoints_dropped_it, timeout=30, what=f"{victim} out of the Endpoints")
    for host in HOSTS:

        async def out_of_rules(host: str = host) -> bool:
            return not (dead & _dnat_targets(rules(c, host)))

        await c.wait(out_of_rules, timeout=5, what=f"{victim} out of {host}'s rules")
    for client in HOSTS:
        answers = await asyncio.to_thread(call, c, client, ip, 20)
        assert all(not a.startswith("!") for a in answers), (client, answers)
        assert victim not in answers, (client, answers)

    # a host dies: its endpoints leave the others' rules
    dead_host = c.address("h3")
    c.kill_host("h3")
    c.lab.link_down("h3")

    async def gone() -> bool:
        return all(f"dnat to {dead_host}:" not in rules(c, h) for h in ("h1", "h2")) and (
            await programmed_everywhere(c, ["h1", "h2"])
        )

    await c.wait(gone, timeout=60, what="h3's endpoints out of h1's and h2's rules")
    for client in ("h1", "h2"):
        answers = await asyncio.to_thread(call, c, client, ip, 30)
        assert all(not a.startswith("!") for a in answers), (client, answers)
        assert all(node_of.get(a) != "h3" for a in answers), (client, answers)
