"""Node lifecycle's pure core.

- a node is Ready while its heartbeat key's revision keeps changing, on the
  controller's clock; Unknown after the grace period without a change;
  Ready again when heartbeats resume;
- a vanished heartbeat key (lapsed lease) is treated as no change;
- pods of a node not ready for the eviction timeout are evicted, not before;
- no eviction when every node is down (full disruption), unless asked;
- a Ready=False set by the agent itself is left alone;
- heartbeat values round-trip.
"""

from __future__ import annotations

from gitkube.api.objects import Node, NodeCondition
from gitkube.planner.nodelifecycle import (
    NodeHealth,
    NodeLifecyclePlan,
    NodeLifecycleSettings,
    decode_heartbeat,
    encode_heartbeat,
    plan_node_lifecycle,
)
from tests.planner.builders import node, pod

SETTINGS = NodeLifecycleSettings(grace_period_seconds=10, eviction_timeout_seconds=30)


class Controller:
    """Feeds each plan's memory and node updates into the next pass."""

    def __init__(self, nodes: list[Node], **kw: object) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.health: dict[str, NodeHealth] = {}
        self.settings = NodeLifecycleSettings(**{**SETTINGS.__dict__, **kw})  # type: ignore[arg-type]

    def tick(
        self, now: float, heartbeats: dict[str, int], pods: list | None = None
    ) -> NodeLifecyclePlan:  # type: ignore[type-arg]
        plan = plan_node_lifecycle(
            list(self.nodes.values()),
            heartbeats,
            pods or [],
            self.health,
            now=now,
            timestamp=f"t{now}",
            settings=self.settings,
        )
        self.health = plan.health
        for updated in plan.node_updates:
            self.nodes[updated.name] = updated
        return plan

    def ready(self, name: str) -> str:
        cond = self.nodes[name].status.condition("Ready")
        return cond.status if cond else ""


class TestReadiness:
    def test_heartbeats_keep_a_node_ready_and_silence_makes_it_unknown(self) -> None:
        c = Controller([node("a", ready=False), node("b", ready=False)])
        c.tick(0, {"a": 5, "b": 6})
        assert (c.ready("a"), c.ready("b")) == ("True", "True")
        for t in range(1, 30):
            c.tick(t, {"a": 5 + t, "b": 6})  # b's heartbeat never changes again
        assert c.ready("a") == "True"
        assert c.ready("b") == "Unknown"
        assert c.nodes["b"].status.condition("Ready").reason == "NodeStatusUnknown"  # type: ignore[union-attr]

    def test_unknown_exactly_after_the_grace_period(self) -> None:
        c = Controller([node("a")])
        c.tick(100, {"a": 1})
        assert not c.tick(110, {"a": 1}).node_updates
        assert c.tick(110.5, {"a": 1}).not_ready == ["a"]

    def test_agent_clock_is_irrelevant_only_revisions_count(self) -> None:
        c = Controller([node("a")])
        c.tick(0, {"a": 1})
        c.tick(9, {"a": 2})
        c.tick(18, {"a": 3})
        assert c.tick(27, {"a": 3}).ready == ["a"]

    def test_a_vanished_heartbeat_key_is_no_change(self) -> None:
        c = Controller([node("a")])
        c.tick(0, {"a": 1})
        assert c.tick(5, {}).ready == ["a"]
        assert c.tick(11, {}).not_ready == ["a"]

    def test_ready_again_when_heartbeats_resume(self) -> None:
        c = Controller([node("a")])
        c.tick(0, {"a": 1})
        c.tick(20, {"a": 1})
        assert c.ready("a") == "Unknown"
        plan = c.tick(21, {"a": 2})
        assert c.ready("a") == "True" and plan.ready == ["a"]
        assert c.health["a"].not_ready_since is None

    def test_writes_only_on_transitions(self) -> None:
        c = Controller([node("a", ready=False)])
        assert len(c.tick(0, {"a": 1}).node_updates) == 1
        assert not c.tick(1, {"a": 2})

    def test_agent_reported_not_ready_is_kept(self) -> None:
        sick = node("a")
        sick.status.conditions = [NodeCondition(type="Ready", status="False", reason="RuntimeDown")]
        c = Controller([sick, node("b")])
        plan = c.tick(0, {"a": 1, "b": 1})
        assert plan.not_ready == ["a"] and not plan.node_updates


class TestEviction:
    def pods(self) -> list:  # type: ignore[type-arg]
        return [pod("on-a", node_name="a"), pod("on-b", node_name="b"), pod("pending")]

    def test_after_the_timeout_the_nodes_pods_are_evicted(self) -> None:
        c = Controller([node("a"), node("b")])
        c.tick(0, {"a": 1, "b": 1})
        t = 1
        while t <= 40:  # a goes silent at t=0; not ready from t=11, evicted from t=41
            assert not c.tick(t, {"a": 1, "b": t + 1}, self.pods()).evictions
            t += 1
        plan = c.tick(41, {"a": 1, "b": 50}, self.pods())
        assert [(e.pod.name, e.node) for e in plan.evictions] == [("on-a", "a")]

    def test_pods_being_deleted_are_not_evicted_again(self) -> None:
        c = Controller([node("a"), node("b")])
        leaving = pod("on-a", node_name="a")
        leaving.metadata.deletion_timestamp = "now"
        c.tick(0, {"a": 1, "b": 1})
        for t in range(1, 60):
            assert not c.tick(t, {"a": 1, "b": t + 1}, [leaving]).evictions

    def test_no_eviction_when_every_node_is_down(self) -> None:
        c = Controller([node("a"), node("b")])
        c.tick(0, {"a": 1, "b": 1})
        for t in range(1, 100):
            assert not c.tick(t, {"a": 1, "b": 1}, self.pods()).evictions
        forced = Controller([node("a"), node("b")], evict_when_all_nodes_down=True)
        forced.tick(0, {"a": 1, "b": 1})
        plan = forced.tick(100, {"a": 1, "b": 1}, self.pods())
        plan = forced.tick(200, {"a": 1, "b": 1}, self.pods())
        assert {e.pod.name for e in plan.evictions} == {"on-a", "on-b"}


def test_heartbeat_values_round_trip() -> None:
    value = encode_heartbeat("n1", time=12.5, address="127.0.0.1")
    assert decode_heartbeat(value) == {"node": "n1", "time": 12.5, "address": "127.0.0.1"}
    assert decode_heartbeat(b"\xff") == {}
    assert decode_heartbeat(b"[1]") == {}
