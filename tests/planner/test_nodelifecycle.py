"""Node lifecycle's pure core.

- a node is Ready while its heartbeat key's revision keeps changing, on the
  controller's clock; Unknown after the grace period without a change;
  Ready again when heartbeats resume;
- a vanished heartbeat key (lapsed lease) is treated as no change;
- pods of a node not ready for the eviction timeout are evicted, not before;
- no eviction when every node is down (full disruption), unless asked;
- a Ready=False set by the agent itself is left alone;
- heartbeat values round-trip;
- evictions are rate-limited per zone (a token bucket, burst 1, 0.1 nodes/s):
  the first node at once, the next ones one per 1/rate seconds, each zone on
  its own bucket; a node admitted keeps having its pods evicted without a
  new token; a zone in partial disruption (> 2 and >= 55 % not ready) slows
  to the secondary rate, or stops when it is small; a fully disrupted zone
  while others are up evicts at the normal rate; leaving full disruption
  restarts the timeouts of the nodes still down; whatever the sequence of
  passes, a zone never admits more than 1 + rate x elapsed nodes.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.objects import Node, NodeCondition, Pod
from gitkube.planner.nodelifecycle import (
    EvictionLimiter,
    NodeHealth,
    NodeLifecyclePlan,
    NodeLifecycleSettings,
    ZoneState,
    compute_zone_state,
    decode_heartbeat,
    encode_heartbeat,
    plan_node_lifecycle,
    zone_of,
)
from tests.planner.builders import node, pod

SETTINGS = NodeLifecycleSettings(grace_period_seconds=10, eviction_timeout_seconds=30)


class Controller:
    """Feeds each plan's memory and node updates into the next pass."""

    def __init__(self, nodes: list[Node], **kw: object) -> None:
        self.nodes = {n.name: n for n in nodes}
        self.health: dict[str, NodeHealth] = {}
        self.limiter = EvictionLimiter()
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
            limiter=self.limiter,
        )
        self.health = plan.health
        self.limiter = plan.limiter
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
        assert {e.pod.name for e in plan.evictions} == {"on-a"}  # at the normal rate
        plan = forced.tick(210, {"a": 1, "b": 1}, self.pods())
        assert {e.pod.name for e in plan.evictions} == {"on-a", "on-b"}


def zoned(name: str, zone: str) -> Node:
    return node(name, labels={"topology.kubernetes.io/zone": zone} if zone else {})


def pods_on(names: list[str]) -> list[Pod]:
    return [pod(f"p-{n}", node_name=n) for n in names]


def evicted_nodes(plan: NodeLifecyclePlan) -> set[str]:
    return {e.node for e in plan.evictions}


class TestEvictionRate:
    """Grace 10 s, timeout 30 s: a node silent from t=0 is overdue from t=41."""

    def run_outage(
        self, c: Controller, dead: set[str], until: float, step: float = 1.0
    ) -> dict[str, float]:
        """Tick from 0 to ``until`` with ``dead`` silent; when each node was first evicted."""
        names = sorted(c.nodes)
        first: dict[str, float] = {}
        t = 0.0
        while t <= until:
            beats = {n: 1 if n in dead else int(t) + 2 for n in names}
            plan = c.tick(t, beats, pods_on(names))
            for n in evicted_nodes(plan):
                first.setdefault(n, t)
            t += step
        return first

    def test_one_node_at_once_then_one_every_ten_seconds(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)])
        first = self.run_outage(c, {"n1", "n2", "n3"}, until=80)
        assert first == {"n1": 41, "n2": 51, "n3": 61}

    def test_waiting_nodes_are_reported(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)])
        self.run_outage(c, {"n1", "n2", "n3"}, until=45)
        plan = c.tick(46, {n: 1 if n in {"n1", "n2", "n3"} else 99 for n in c.nodes})
        assert plan.eviction_waiting == ["n2", "n3"]
        assert plan.zones == {"": ZoneState.NORMAL}

    def test_the_rate_is_a_setting(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)], eviction_rate=0.5)
        first = self.run_outage(c, {"n1", "n2", "n3"}, until=50)
        assert first == {"n1": 41, "n2": 43, "n3": 45}
        stopped = Controller([node(f"n{i}") for i in range(10)], eviction_rate=0.0)
        assert self.run_outage(stopped, {"n1", "n2"}, until=200) == {}  # 0: never

    def test_each_zone_has_its_own_bucket(self) -> None:
        nodes = [zoned(f"a{i}", "a") for i in range(4)] + [zoned(f"b{i}", "b") for i in range(4)]
        c = Controller(nodes)
        first = self.run_outage(c, {"a1", "a2", "b1"}, until=60)
        assert first == {"a1": 41, "b1": 41, "a2": 51}

    def test_an_admitted_node_is_evicted_again_without_a_token(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)])
        self.run_outage(c, {"n1", "n2"}, until=41)
        beats = {n: 1 if n in {"n1", "n2"} else 99 for n in c.nodes}
        late = pod("late", node_name="n1")  # e.g. the eviction's delete lost a race
        plan = c.tick(42, beats, [late, pod("on-n2", node_name="n2")])
        assert [e.pod.name for e in plan.evictions] == ["late"]
        assert plan.eviction_waiting == ["n2"]

    def test_a_node_back_before_its_turn_is_not_evicted_and_frees_no_token(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)])
        self.run_outage(c, {"n1", "n2"}, until=45)
        beats = {n: 1 if n == "n1" else 1000 for n in c.nodes}  # n2 heartbeats again
        assert c.tick(46, beats, pods_on(sorted(c.nodes))).ready.count("n2") == 1
        for t in range(47, 60):
            plan = c.tick(t, {**beats, "n2": 1000 + t}, pods_on(sorted(c.nodes)))
            assert evicted_nodes(plan) <= {"n1"}
        assert c.health["n2"].evicting_since is None

    def test_recovery_clears_the_admission(self) -> None:
        c = Controller([node(f"n{i}") for i in range(10)])
        self.run_outage(c, {"n1"}, until=41)
        assert c.health["n1"].evicting_since == 41
        c.tick(42, dict.fromkeys(c.nodes, 500))
        assert c.health["n1"].evicting_since is None
        assert c.health["n1"].not_ready_since is None

    def test_small_zone_in_partial_disruption_stops_evicting(self) -> None:
        c = Controller([node(f"n{i}") for i in range(5)])  # 3 of 5 down: 60 %
        assert self.run_outage(c, {"n1", "n2", "n3"}, until=300) == {}
        plan = c.tick(301, {"n0": 999, "n4": 999, "n1": 1, "n2": 1, "n3": 1})
        assert plan.zones == {"": ZoneState.PARTIAL_DISRUPTION}
        assert plan.eviction_waiting == ["n1", "n2", "n3"]

    def test_large_zone_in_partial_disruption_uses_the_secondary_rate(self) -> None:
        nodes = [node(f"n{i:02}") for i in range(60)]
        dead = {f"n{i:02}" for i in range(40)}  # 67 % of 60 nodes
        c = Controller(nodes)
        first = self.run_outage(c, dead, until=250, step=5)
        # full bucket at 41 (first pass past the timeout: t=45), then 1/0.01 = 100 s
        assert sorted(first.values()) == [45, 145, 245]

    def test_two_nodes_down_is_never_partial_disruption(self) -> None:
        c = Controller([node(f"n{i}") for i in range(3)])  # 2 of 3 down: 67 %, but only 2
        first = self.run_outage(c, {"n1", "n2"}, until=60)
        assert first == {"n1": 41, "n2": 51}

    def test_a_fully_disrupted_zone_beside_healthy_ones_evicts_at_the_normal_rate(self) -> None:
        nodes = [zoned(f"a{i}", "a") for i in range(3)] + [zoned("b0", "b")]
        c = Controller(nodes)
        first = self.run_outage(c, {"a0", "a1", "a2"}, until=70)
        assert first == {"a0": 41, "a1": 51, "a2": 61}
        plan = c.tick(71, {"a0": 1, "a1": 1, "a2": 1, "b0": 999})
        assert plan.zones == {"a": ZoneState.FULL_DISRUPTION, "b": ZoneState.NORMAL}

    def test_leaving_full_disruption_restarts_the_timeouts(self) -> None:
        c = Controller([node("a"), node("b"), node("c")])
        c.tick(0, {"a": 1, "b": 1, "c": 1})
        for t in range(1, 100):  # everything silent: nothing evicted
            assert not c.tick(t, {"a": 1, "b": 1, "c": 1}, pods_on(["a", "b", "c"])).evictions
        assert c.limiter.full_disruption
        for t in range(100, 200):  # c comes back at 100: a and b wait a full timeout again
            plan = c.tick(t, {"a": 1, "b": 1, "c": t}, pods_on(["a", "b", "c"]))
            if t < 130:
                assert not plan.evictions, t
        assert c.health["a"].evicting_since == 130 and c.health["b"].evicting_since == 140


class TestZones:
    def test_zone_from_labels(self) -> None:
        assert zone_of(node("x")) == ""
        assert zone_of(zoned("x", "eu-1a")) == "eu-1a"
        both = node(
            "x",
            labels={
                "topology.kubernetes.io/region": "eu",
                "failure-domain.beta.kubernetes.io/zone": "1a",
            },
        )
        assert zone_of(both) == "eu/1a"

    def test_zone_state(self) -> None:
        state = compute_zone_state
        assert state([True, False, False], unhealthy_threshold=0.55) == ZoneState.NORMAL
        assert state([False] * 3 + [True] * 2, unhealthy_threshold=0.55) == (
            ZoneState.PARTIAL_DISRUPTION
        )
        assert state([False] * 3 + [True] * 3, unhealthy_threshold=0.55) == ZoneState.NORMAL
        assert state([False], unhealthy_threshold=0.55) == ZoneState.FULL_DISRUPTION
        assert state([], unhealthy_threshold=0.55) == ZoneState.NORMAL


@settings(max_examples=60, deadline=None)
@given(
    outages=st.lists(st.tuples(st.integers(0, 9), st.integers(0, 150)), min_size=1, max_size=12),
    steps=st.lists(st.floats(0.1, 7.0), min_size=50, max_size=120),
    rate=st.sampled_from([0.05, 0.1, 0.5]),
)
def test_a_zone_never_admits_more_than_its_rate(
    outages: list[tuple[int, int]], steps: list[float], rate: float
) -> None:
    """Nodes go silent at random times (some come back); passes at random intervals."""
    names = [f"n{i}" for i in range(10)]
    silent_from = {f"n{i}": float(start) for i, start in outages}
    c = Controller([node(n) for n in names], eviction_rate=rate)
    admitted: list[float] = []
    t = 0.0
    for step in steps:
        t += step
        beats = {
            n: int(silent_from[n]) + 1
            if n in silent_from and t >= silent_from[n]
            else int(t * 10) + 1
            for n in names
        }
        if t > 200:  # everybody back: admissions reset, tokens do not
            beats = {n: int(t * 10) + 1 for n in names}
        before = {n for n, h in c.health.items() if h.evicting_since is not None}
        c.tick(t, beats, pods_on(names))
        admitted += [
            t for n, h in c.health.items() if h.evicting_since is not None and n not in before
        ]
    if admitted:
        for i, start in enumerate(admitted):
            window = [a for a in admitted[i:] if a - start <= 1000]
            for j, at in enumerate(window):
                assert j + 1 <= 1 + rate * (at - start) + 1e-6


def test_heartbeat_values_round_trip() -> None:
    value = encode_heartbeat("n1", time=12.5, address="127.0.0.1")
    assert decode_heartbeat(value) == {"node": "n1", "time": 12.5, "address": "127.0.0.1"}
    assert decode_heartbeat(b"\xff") == {}
    assert decode_heartbeat(b"[1]") == {}
