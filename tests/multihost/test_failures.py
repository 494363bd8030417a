"""Hosts failing under a running cluster, on both runtimes (on Docker each
host runs its own engine).

- host death: every process of a host is killed and its link goes down; its
  node turns NotReady after the grace period (not before), and its pods are
  Ready on the other hosts after the eviction timeout;
- agent partition: a host's link goes down while its agent and pods keep
  running; its pods are rescheduled on the other host; when the link heals
  the agent stops the pods that were rescheduled away, so no pod runs twice
  (checked by listing what each host's runtime runs: the pod processes in
  its namespace, or the containers of its engine).
"""

from __future__ import annotations

import time

import pytest

from gitkube.api.objects import Pod, ReplicationController
from tests.multihost.conftest import EVICTION_TIMEOUT, NODE_GRACE, Cluster, ClusterFactory
from tests.multihost.manifests import web_rc


async def rc_ready(c: Cluster, replicas: int, *, avoiding: str = "") -> bool:
    rc = await c.objects.get(ReplicationController, "default", "web")
    if rc is None or rc.status.ready_replicas != replicas:
        return False
    pods = [p for p in await c.pods() if not p.metadata.deletion_timestamp]
    return (
        len(pods) == replicas
        and all(p.spec.node_name != avoiding for p in pods)
        and all(_pod_ready(p) for p in pods)
    )


def _pod_ready(pod: Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions)


async def bound(c: Cluster) -> dict[str, list[str]]:
    """Pod names by the node they are bound to, in the store."""
    out: dict[str, list[str]] = {h: [] for h in c.agents}
    for pod in await c.pods():
        out.setdefault(pod.spec.node_name, []).append(pod.name)
    return {h: sorted(names) for h, names in out.items()}


@pytest.mark.parametrize("runtime", ["process", "docker"])
async def test_host_death_pods_come_back_on_the_other_hosts(
    cluster_factory: ClusterFactory, runtime: str
) -> None:
    c = await cluster_factory(masters=["m1"], agents=["h1", "h2", "h3"], runtime=runtime)
    c.remote.write("web.yaml", web_rc(6, runtime=runtime))
    c.remote.commit_and_push("web")
    await c.wait(lambda: rc_ready(c, 6), timeout=60, what="6 pods ready")
    victims = (await bound(c))["h2"]
    assert victims, await bound(c)

    killed = c.kill_host("h2")
    c.lab.link_down("h2")
    died = time.monotonic()
    assert killed >= 1 + len(victims)  # the agent and at least one process per pod

    async def not_ready() -> bool:
        return "h2" not in await c.ready_nodes()

    await c.wait(not_ready, timeout=NODE_GRACE + 20, what="h2 NotReady")
    noticed = time.monotonic() - died
    # the heartbeat last moved at most a heartbeat interval (grace / 3) before the kill
    assert noticed >= NODE_GRACE - NODE_GRACE / 3 - 0.5, f"NotReady after {noticed:.1f}s"

    await c.wait(
        lambda: rc_ready(c, 6, avoiding="h2"), timeout=60, what="6 pods ready on h1 and h3"
    )
    recovered = time.monotonic() - died
    assert recovered >= NODE_GRACE - NODE_GRACE / 3 + EVICTION_TIMEOUT - 0.5
    names = {p.name for p in await c.pods()}
    assert not names & set(victims), "the dead host's pods were not evicted"
    # what runs on the live hosts is what the store binds there
    stored = await bound(c)
    for host in ("h1", "h3"):
        assert c.running(host) == stored[host], host
    print(f"host death: NotReady after {noticed:.1f}s, pods back after {recovered:.1f}s")


@pytest.mark.parametrize("runtime", ["process", "docker"])
async def test_agent_partition_no_pod_runs_twice_after_the_heal(
    cluster_factory: ClusterFactory, runtime: str
) -> None:
    c = await cluster_factory(masters=["m1"], agents=["h1", "h2"], runtime=runtime)
    c.remote.write("web.yaml", web_rc(4, runtime=runtime))
    c.remote.commit_and_push("web")
    await c.wait(lambda: rc_ready(c, 4), timeout=60, what="4 pods ready")
    before = await bound(c)
    assert before["h2"], before
    assert c.running("h2") == before["h2"]

    c.lab.link_down("h2")  # the agent and its pods keep running, cut off
    cut = time.monotonic()
    await c.wait(lambda: rc_ready(c, 4, avoiding="h2"), timeout=60, what="4 pods ready on h1 alone")
    # still running on the far side of the partition: the agent cannot know yet
    assert c.running("h2") == before["h2"]
    assert c.agents["h2"].poll() is None

    c.lab.link_up("h2")
    healed = time.monotonic()

    async def settled() -> dict[str, list[str]] | None:
        stored = await bound(c)
        running = {h: c.running(h) for h in ("h1", "h2")}
        return running if running == {h: stored.get(h, []) for h in running} else None

    running = await c.wait(settled, timeout=60, what="each host runs what the store binds to it")
    print(
        f"agent partition: pods moved {healed - cut:.1f}s after the cut, "
        f"stopped on h2 {time.monotonic() - healed:.1f}s after the heal"
    )
    everywhere = running["h1"] + running["h2"]
    assert len(everywhere) == len(set(everywhere)) == 4, running
    assert not set(everywhere) & set(before["h2"]), "a rescheduled pod still runs on h2"

    async def h2_ready() -> bool:
        return "h2" in await c.ready_nodes()

    await c.wait(h2_ready, timeout=30, what="h2 Ready again")
