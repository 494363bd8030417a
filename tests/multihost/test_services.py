"""Pods spread over hosts, one Service across them (both runtimes).

Three agent hosts and a master host, each a network namespace on the test's
bridge; etcd on the bridge. An RC of 6 web servers is pushed with a Service:
its pods run on every host, and the Service called on one host's proxy
address (from outside every host) answers from pods on every host. On Docker
each host runs its own engine in its namespace.
"""

from __future__ import annotations

import pytest

from gitkube.api.objects import ReplicationController
from tests.multihost.conftest import ClusterFactory
from tests.multihost.manifests import web_rc, web_service
from tests.operator.helpers import free_port, http_get

HOSTS = ["h1", "h2", "h3"]


@pytest.mark.parametrize("runtime", ["process", "docker"])
async def test_a_service_on_one_host_answers_from_pods_on_every_host(
    cluster_factory: ClusterFactory, runtime: str
) -> None:
    c = await cluster_factory(masters=["m1"], agents=HOSTS, runtime=runtime)
    port = free_port()
    c.remote.write("web.yaml", web_rc(6, runtime=runtime))
    c.remote.write("svc.yaml", web_service(port))
    c.remote.commit_and_push("web and its service")

    async def ready() -> bool:
        rc = await c.objects.get(ReplicationController, "default", "web")
        return rc is not None and rc.status.ready_replicas == 6

    await c.wait(ready, timeout=90, what="6 web pods ready")
    node_of = {p.name: p.spec.node_name for p in await c.pods()}
    assert set(node_of.values()) == set(HOSTS), node_of

    answered: dict[str, str] = {}

    async def every_host_answered() -> bool:
        status, body = await http_get(port, host=c.address("h1"))
        if status == 200:
            name = body.strip()
            assert name in node_of, f"an answer from {name!r}, not a pod of the RC"
            answered[name] = node_of[name]
        return set(answered.values()) == set(HOSTS)

    await c.wait(every_host_answered, timeout=30, what=f"answers from every host: {answered}")
