"""Node registration and heartbeats against a real SQLite store:

- registration creates the Node: name, labels from flags, capacity and
  allocatable (from flags or the host), InternalIP, nodeInfo, Ready True,
  the agent's annotations;
- re-registration keeps what others own (labels set from git,
  spec.unschedulable) and merges the agent's labels, with compare-and-swap;
- the heartbeat key carries the node, time and address on a lease; each
  beat moves its mod_revision; stopping without revoking leaves it to lapse;
- a lapsed lease (an outage) gets a new lease and a re-registration that
  sets Ready True again after the node controller marked it NotReady;
- flag parsing: labels, cpu and memory errors name the flag.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.objects import Node, NodeCondition
from gitkube.errors import ConfigError
from gitkube.nodes.registration import (
    AGENT_RUNTIME,
    AGENT_STATE_DIR,
    Heartbeat,
    NodeSettings,
    heartbeat_key,
    parse_cpu_flag,
    parse_labels,
    parse_memory_flag,
    register_node,
)
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def settings(**kw: object) -> NodeSettings:
    base: dict[str, object] = {
        "name": "w1",
        "address": "127.0.0.9",
        "labels": {"zone": "a"},
        "cpu": 3500,
        "memory": 8 * 2**30,
        "max_pods": 20,
        "runtime_name": "process",
        "state_dir": "/var/lib/gitkube/node-w1",
    }
    base.update(kw)
    return NodeSettings(**base)  # type: ignore[arg-type]


class TestRegistration:
    async def test_creates_the_node(self, objects: ObjectStore) -> None:
        await register_node(objects, settings())
        node = await objects.get(Node, "", "w1")
        assert node is not None
        assert node.metadata.labels["zone"] == "a"
        assert node.metadata.labels["kubernetes.io/hostname"] == "w1"
        assert node.status.capacity == {"cpu": "3500m", "memory": "8388608Ki", "pods": "20"}
        assert node.status.allocatable == node.status.capacity
        assert node.allocatable_cpu() == 3500
        assert node.allocatable_memory() == 8 * 2**30
        assert node.allocatable_pods() == 20
        assert node.address() == "127.0.0.9"
        assert node.status.node_info.kubelet_version.startswith("gitkube-")
        assert node.status.node_info.operating_system == "linux"
        assert node.is_ready()
        assert node.metadata.annotations[AGENT_RUNTIME] == "process"
        assert node.metadata.annotations[AGENT_STATE_DIR] == "/var/lib/gitkube/node-w1"

    async def test_capacity_from_the_host(self, objects: ObjectStore) -> None:
        import os

        import psutil

        await register_node(objects, settings(cpu=None, memory=None))
        node = await objects.get(Node, "", "w1")
        assert node is not None
        assert node.allocatable_cpu() == len(os.sched_getaffinity(0)) * 1000
        assert abs(node.allocatable_memory() - psutil.virtual_memory().total) < 1024

    async def test_keeps_what_others_own(self, objects: ObjectStore) -> None:
        await register_node(objects, settings())
        node = await objects.get(Node, "", "w1")
        assert node is not None
        node.metadata.labels["disk"] = "ssd"  # from git
        node.metadata.labels["zone"] = "b"
        node.spec.unschedulable = True
        node.status.conditions = [NodeCondition(type="Ready", status="False", reason="NodeLost")]
        await objects.update(node)
        await register_node(objects, settings(labels={"zone": "c"}))
        node = await objects.get(Node, "", "w1")
        assert node is not None
        assert node.metadata.labels["disk"] == "ssd"
        assert node.metadata.labels["zone"] == "c"  # the agent's flag wins for its keys
        assert node.spec.unschedulable is True
        assert node.is_ready()


class TestHeartbeat:
    async def test_key_on_a_lease_and_moving(self, objects: ObjectStore) -> None:
        await register_node(objects, settings())
        beat = Heartbeat(objects, settings(), ttl=5, clock=lambda: 1234.5)
        await beat.beat()
        kv = await objects.store.get(heartbeat_key("w1"))
        assert kv is not None
        assert json.loads(kv.value) == {"node": "w1", "time": 1234.5, "address": "127.0.0.9"}
        assert kv.lease == beat.lease != 0
        first = kv.mod_revision
        await beat.beat()
        kv2 = await objects.store.get(heartbeat_key("w1"))
        assert kv2 is not None and kv2.mod_revision > first
        assert beat.reregistrations == 0

    async def test_revoke_on_stop_removes_the_key(self, objects: ObjectStore) -> None:
        beat = Heartbeat(objects, settings(), ttl=5)
        await beat.beat()
        await beat.stop(revoke=True)
        assert await objects.store.get(heartbeat_key("w1")) is None

    async def test_lapsed_lease_reregisters_ready(self, objects: ObjectStore) -> None:
        await register_node(objects, settings())
        beat = Heartbeat(objects, settings(), ttl=5)
        await beat.beat()
        # an outage: the lease lapses and the node controller marks the node NotReady
        await objects.store.revoke_lease(beat.lease)
        node = await objects.get(Node, "", "w1")
        assert node is not None
        node.status.conditions = [NodeCondition(type="Ready", status="Unknown", reason="NodeLost")]
        await objects.update(node)
        await beat.beat()
        assert beat.reregistrations == 1
        kv = await objects.store.get(heartbeat_key("w1"))
        assert kv is not None and kv.lease == beat.lease
        node = await objects.get(Node, "", "w1")
        assert node is not None and node.is_ready()


class TestFlags:
    def test_labels(self) -> None:
        assert parse_labels("zone=a, disk=ssd,") == {"zone": "a", "disk": "ssd"}
        assert parse_labels("") == {}
        with pytest.raises(ConfigError, match="--labels: 'zone' is not key=value"):
            parse_labels("zone")

    def test_quantities(self) -> None:
        assert parse_cpu_flag("2") == 2000
        assert parse_memory_flag("1Gi") == 2**30
        with pytest.raises(ConfigError, match="--cpu"):
            parse_cpu_flag("two")
        with pytest.raises(ConfigError, match="--memory"):
            parse_memory_flag("lots")
