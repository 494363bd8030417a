"""The scheduler's pure core.

- filters: not-ready and cordoned nodes, resources (cpu, memory, pod count),
  nodeSelector, host ports — each rejection a named reason;
- a pod that fits nowhere: a plan entry with kube-scheduler's message;
- scores: least allocated, spread of one controller's pods;
- incremental accounting within one pass; sampling (percentageOfNodesToScore);
- properties (hypothesis): no node over capacity, every binding passes every
  filter, unschedulable pods fit nowhere, the same input gives the same plan.
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.objects import Node, Pod
from gitkube.planner.scheduler import (
    REASON_HOST_PORTS,
    REASON_INSUFFICIENT_CPU,
    REASON_INSUFFICIENT_MEMORY,
    REASON_NODE_SELECTOR,
    REASON_NOT_READY,
    REASON_TOO_MANY_PODS,
    REASON_UNSCHEDULABLE,
    NodeState,
    PodRequest,
    fit_error_message,
    num_feasible_nodes_to_find,
    rejections,
    schedule,
    score_nodes,
)
from tests.planner.builders import node, pod

# ---------------------------------------------------------------- filters


class TestFilters:
    def test_not_ready_and_cordoned_nodes_are_skipped(self) -> None:
        nodes = [node("down", ready=False), node("cordoned", unschedulable=True), node("ok")]
        plan = schedule([pod("p")], nodes, [], seed=0)
        assert plan.bindings == {pod("p").key: "ok"}

    def test_reasons_name_every_rejection(self) -> None:
        nodes = [
            node("down", ready=False),
            node("cordoned", unschedulable=True),
            node("small", memory="1Gi"),
            node("tiny", cpu="100m"),
            node("full", pods=1),
            node("other", labels={"disk": "hdd"}),
            node("ported", labels={"disk": "ssd"}),
        ]
        bound = [pod("b1", node_name="full"), pod("b2", node_name="ported", host_ports=(80,))]
        p = pod("p", cpu="500m", memory="2Gi", selector={"disk": "ssd"}, host_ports=(80,))
        plan = schedule([p], nodes, bound, seed=0)
        assert not plan.bindings
        [entry] = plan.unschedulable
        # the nodeSelector filter runs before the resource filters
        assert entry.reasons == {
            REASON_NOT_READY: 1,
            REASON_UNSCHEDULABLE: 1,
            REASON_NODE_SELECTOR: 4,
            REASON_HOST_PORTS: 1,
        }

    def test_resources_name_each_insufficient_resource(self) -> None:
        state = NodeState.of(node("n", cpu="1", memory="1Gi", pods=1))
        state.add(PodRequest.of(pod("b", cpu="1", memory="1Gi")))
        reasons = rejections(PodRequest.of(pod("p", cpu="1m", memory="1")), state)
        assert reasons == (
            REASON_TOO_MANY_PODS,
            REASON_INSUFFICIENT_CPU,
            REASON_INSUFFICIENT_MEMORY,
        )

    def test_host_ports_conflict_only_on_same_protocol_and_port(self) -> None:
        state = NodeState.of(node("n"))
        state.add(PodRequest.of(pod("b", host_ports=(80,))))
        assert rejections(PodRequest.of(pod("p", host_ports=(80,))), state) == (REASON_HOST_PORTS,)
        assert rejections(PodRequest.of(pod("q", host_ports=(81,))), state) == ()

    def test_terminated_bound_pods_free_their_resources(self) -> None:
        done = pod("done", cpu="4", node_name="n", phase="Failed")
        plan = schedule([pod("p", cpu="4")], [node("n", cpu="4")], [done], seed=0)
        assert plan.bindings == {pod("p").key: "n"}


class TestUnschedulableMessage:
    def test_phrased_like_kubernetes(self) -> None:
        nodes = [
            node("a", memory="1Gi", labels={"zone": "x"}),
            node("b", memory="1Gi", labels={"zone": "x"}),
            node("c", labels={"zone": "y"}),
        ]
        plan = schedule([pod("p", memory="2Gi", selector={"zone": "x"})], nodes, [], seed=0)
        assert not plan.bindings
        assert plan.unschedulable[0].message == (
            "0/3 nodes are available: 2 Insufficient memory, "
            "1 node(s) didn't match Pod's node affinity/selector."
        )

    def test_reasons_are_ordered_by_count_then_name(self) -> None:
        msg = fit_error_message(
            4, {REASON_NODE_SELECTOR: 1, REASON_INSUFFICIENT_CPU: 1, REASON_HOST_PORTS: 2}
        )
        assert msg == (
            "0/4 nodes are available: 2 node(s) didn't have free ports for the requested pod"
            " ports, 1 Insufficient cpu, 1 node(s) didn't match Pod's node affinity/selector."
        )

    def test_no_nodes(self) -> None:
        plan = schedule([pod("p")], [], [], seed=0)
        assert plan.unschedulable[0].message == (
            "0/0 nodes are available: no nodes available to schedule pods."
        )


# ---------------------------------------------------------------- scores and accounting


class TestScoring:
    def test_prefers_the_least_allocated_node(self) -> None:
        nodes = [node("busy"), node("idle")]
        bound = [pod("b", cpu="3", memory="6Gi", node_name="busy")]
        for seed in range(5):
            plan = schedule([pod("p", cpu="100m")], nodes, bound, seed=seed)
            assert plan.bindings[pod("p").key] == "idle"

    def test_spreads_a_controllers_pods(self) -> None:
        nodes = [node(f"n{i}") for i in range(3)]
        pending = [pod(f"p{i}", owner_uid="rc1") for i in range(6)]
        plan = schedule(pending, nodes, [], seed=3)
        assert sorted(Counter(plan.bindings.values()).values()) == [2, 2, 2]

    def test_accounts_pods_placed_in_the_same_pass(self) -> None:
        nodes = [node("a", cpu="1"), node("b", cpu="1")]
        pending = [pod(f"p{i}", cpu="600m") for i in range(3)]
        plan = schedule(pending, nodes, [], seed=0)
        assert sorted(plan.bindings.values()) == ["a", "b"]
        assert plan.unschedulable[0].reasons == {REASON_INSUFFICIENT_CPU: 2}

    def test_ties_follow_the_seed(self) -> None:
        nodes = [node(f"n{i}") for i in range(20)]
        chosen = {schedule([pod("p")], nodes, [], seed=s).bindings[pod("p").key] for s in range(20)}
        assert len(chosen) > 1


class TestSampling:
    def test_adaptive_percentage_as_kube_scheduler(self) -> None:
        assert num_feasible_nodes_to_find(50) == 50
        assert num_feasible_nodes_to_find(100) == 100
        assert num_feasible_nodes_to_find(1000) == 420
        assert num_feasible_nodes_to_find(5000) == 500
        assert num_feasible_nodes_to_find(100_000) == 5000
        assert num_feasible_nodes_to_find(200, 10) == 100
        assert num_feasible_nodes_to_find(5000, 100) == 5000

    def test_sampling_never_breaks_filters_and_visits_every_node(self) -> None:
        nodes = [node(f"n{i:03d}", cpu="1", pods=2) for i in range(400)]
        pending = [pod(f"p{i:03d}", cpu="400m") for i in range(800)]
        plan = schedule(pending, nodes, [], seed=5, percentage_of_nodes_to_score=10)
        assert len(plan.bindings) == 800
        assert Counter(plan.bindings.values()) == Counter({n.name: 2 for n in nodes})
        late = pod("extra", created="2024-01-02T00:00:00Z")
        plan = schedule([*pending, late], nodes, [], seed=5)
        assert plan.unschedulable[0].reasons == {REASON_TOO_MANY_PODS: 400}


# ---------------------------------------------------------------- properties

LABELS = st.sampled_from([{}, {"zone": "a"}, {"zone": "b"}, {"zone": "a", "disk": "ssd"}])


@st.composite
def clusters(draw: st.DrawFn) -> tuple[list[Pod], list[Node], list[Pod]]:
    nodes = [
        node(
            f"n{i}",
            cpu=f"{draw(st.integers(0, 8)) * 250}m",
            memory=f"{draw(st.integers(0, 8))}Gi",
            pods=draw(st.integers(0, 5)),
            labels=draw(LABELS),
            ready=draw(st.booleans()) or draw(st.booleans()),
            unschedulable=draw(st.integers(0, 4)) == 0,
        )
        for i in range(draw(st.integers(0, 8)))
    ]

    def some_pod(name: str, node_name: str = "") -> Pod:
        return pod(
            name,
            cpu=f"{draw(st.integers(0, 6)) * 100}m",
            memory=f"{draw(st.integers(0, 6)) * 256}Mi",
            selector=draw(st.sampled_from([{}, {}, {"zone": "a"}, {"disk": "ssd"}])),
            host_ports=draw(st.sampled_from([(), (), (80,), (80, 443)])),
            owner_uid=draw(st.sampled_from(["", "rc1", "rc2"])),
            node_name=node_name,
            created=f"2024-01-01T00:00:{draw(st.integers(0, 3)):02d}Z",
        )

    bound = [
        some_pod(f"b{i}", node_name=draw(st.sampled_from([n.name for n in nodes])))
        for i in range(draw(st.integers(0, 6)) if nodes else 0)
    ]
    pending = [some_pod(f"p{i}") for i in range(draw(st.integers(0, 20)))]
    return pending, nodes, bound


def _replay(pending: list[Pod], nodes: list[Node], bound: list[Pod], plan) -> dict[str, NodeState]:  # type: ignore[no-untyped-def]
    """Check each decision of ``plan`` against every filter, in queue order."""
    states = {n.name: NodeState.of(n) for n in nodes}
    for b in bound:
        states[b.spec.node_name].add(PodRequest.of(b))
    unschedulable = {u.pod_key for u in plan.unschedulable}
    for p in sorted(pending, key=lambda p: (p.metadata.creation_timestamp, p.key)):
        request = PodRequest.of(p)
        if p.key in plan.bindings:
            state = states[plan.bindings[p.key]]
            assert rejections(request, state) == (), (p.key, state.name)
            # the choice has the best score (few nodes: every feasible one is scored)
            feasible = [s for s in states.values() if not rejections(request, s)]
            scores = dict(
                zip([s.name for s in feasible], score_nodes(request, feasible), strict=True)
            )
            assert scores[state.name] == max(scores.values())
            state.add(request)
        else:
            assert p.key in unschedulable
            assert all(rejections(request, s) for s in states.values())
    return states


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(0, 2**32))
def test_every_binding_passes_every_filter(cluster, seed: int) -> None:  # type: ignore[no-untyped-def]
    pending, nodes, bound = cluster
    plan = schedule(pending, nodes, bound, seed=seed)
    assert len(plan.bindings) + len(plan.unschedulable) == len(pending)
    _replay(pending, nodes, bound, plan)


@settings(max_examples=150, deadline=None)
@given(clusters(), st.integers(0, 2**32))
def test_no_node_goes_over_capacity(cluster, seed: int) -> None:  # type: ignore[no-untyped-def]
    pending, nodes, bound = cluster
    plan = schedule(pending, nodes, bound, seed=seed)
    states = {n.name: NodeState.of(n) for n in nodes}
    for b in bound:
        states[b.spec.node_name].add(PodRequest.of(b))
    before = {name: s.pod_count for name, s in states.items()}
    by_key = {p.key: p for p in pending}
    for key, name in plan.bindings.items():
        states[name].add(PodRequest.of(by_key[key]))
    for name, s in states.items():
        if s.pod_count > before[name]:  # only nodes this plan added to
            assert s.requested_cpu <= s.allocatable_cpu
            assert s.requested_memory <= s.allocatable_memory
            assert s.pod_count <= s.allocatable_pods
            assert s.ready and not s.unschedulable


@settings(max_examples=100, deadline=None)
@given(clusters(), st.integers(0, 2**32), st.randoms(use_true_random=False))
def test_same_input_gives_same_bindings(cluster, seed: int, rnd: random.Random) -> None:  # type: ignore[no-untyped-def]
    pending, nodes, bound = cluster
    first = schedule(pending, nodes, bound, seed=seed)
    shuffled_pending, shuffled_nodes = list(pending), list(nodes)
    rnd.shuffle(shuffled_pending)
    rnd.shuffle(shuffled_nodes)
    again = schedule(shuffled_pending, shuffled_nodes, bound, seed=seed)
    assert again.bindings == first.bindings
    assert again.unschedulable == first.unschedulable
