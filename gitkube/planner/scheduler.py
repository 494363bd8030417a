"""The scheduler's pure core: bind pending pods to nodes.

The pipeline, as in Nomad's scheduler and kube-scheduler:

    feasibility (filters) → score → select → account → next pod

- **Filters** are small named checkers (``FILTERS``). Each answers, for a pod
  and a node, the reasons the node is rejected — an empty tuple means it
  fits. A rejection is data, not an error: a pod that fits nowhere becomes an
  ``Unschedulable`` entry of the plan whose message is phrased as
  Kubernetes phrases it ("0/3 nodes are available: 2 Insufficient memory,
  1 node(s) didn't match Pod's node affinity/selector.").
- **Scores** (``score_nodes``) are least-allocated (prefer the emptiest node) and
  spread (prefer nodes with fewer pods of the same controller), each 0-100,
  weighted and summed.
- **Determinism:** nodes are visited in an order shuffled by ``seed``; the
  first node with the best score wins, so ties are broken by the seeded
  order and the same input gives the same bindings.
- **Speed** (the tricks that make kube-scheduler fast, none of which skip a
  filter): resources are accounted incrementally as pods of one pass are
  bound; the node-only filters (ready, schedulable, nodeSelector) are run
  once per pass per distinct selector rather than once per pod; and once
  enough feasible nodes are found (``num_feasible_nodes_to_find``, kube's
  adaptive percentageOfNodesToScore, at least 100 nodes) the search stops,
  continuing next time from where it left off so that every node gets its
  turn.
"""

from __future__ import annotations

import random
from bisect import bisect_left
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

from gitkube.api.objects import Node, Pod

# ---------------------------------------------------------------- reasons

#: rejection reasons, worded as kube-scheduler words them
REASON_NOT_READY = "node(s) were not ready"
REASON_UNSCHEDULABLE = "node(s) were unschedulable"
REASON_INSUFFICIENT_CPU = "Insufficient cpu"
REASON_INSUFFICIENT_MEMORY = "Insufficient memory"
REASON_TOO_MANY_PODS = "Too many pods"
REASON_NODE_SELECTOR = "node(s) didn't match Pod's node affinity/selector"
REASON_HOST_PORTS = "node(s) didn't have free ports for the requested pod ports"
REASON_NO_NODES = "no nodes available to schedule pods"

#: kube-scheduler's defaults for percentageOfNodesToScore
MIN_FEASIBLE_NODES_TO_FIND = 100
MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND = 5
BASE_PERCENTAGE_OF_NODES_TO_SCORE = 50

MAX_NODE_SCORE = 100

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})


# ---------------------------------------------------------------- inputs, parsed once


@dataclass(slots=True, frozen=True)
class PodRequest:
    """What one pod asks of a node, parsed from the Pod once per pass."""

    key: str
    cpu: int
    memory: int
    host_ports: frozenset[tuple[str, int]]
    node_selector: tuple[tuple[str, str], ...]
    #: "<kind>/<uid>" of the controlling owner, "" for a bare pod
    controller: str

    @classmethod
    def of(cls, pod: Pod) -> PodRequest:
        ref = pod.metadata.controller_ref()
        return cls(
            key=pod.key,
            cpu=pod.spec.request_cpu(),
            memory=pod.spec.request_memory(),
            host_ports=frozenset(pod.spec.host_ports()),
            node_selector=tuple(sorted(pod.spec.node_selector.items())),
            controller=f"{ref.kind}/{ref.uid or ref.name}" if ref else "",
        )


@dataclass(slots=True)
class NodeState:
    """A node and what the pods bound to it use; updated as pods are bound."""

    name: str
    labels: dict[str, str]
    ready: bool
    unschedulable: bool
    allocatable_cpu: int
    allocatable_memory: int
    allocatable_pods: int
    requested_cpu: int = 0
    requested_memory: int = 0
    pod_count: int = 0
    host_ports: set[tuple[str, int]] = field(default_factory=set)
    #: pods per controller on this node (for spreading)
    controller_pods: Counter[str] = field(default_factory=Counter)

    @classmethod
    def of(cls, node: Node) -> NodeState:
        return cls(
            name=node.name,
            labels=dict(node.metadata.labels),
            ready=node.is_ready(),
            unschedulable=node.spec.unschedulable,
            allocatable_cpu=node.allocatable_cpu(),
            allocatable_memory=node.allocatable_memory(),
            allocatable_pods=node.allocatable_pods(),
        )

    def add(self, pod: PodRequest) -> None:
        """Account for ``pod`` bound here."""
        self.requested_cpu += pod.cpu
        self.requested_memory += pod.memory
        self.pod_count += 1
        self.host_ports.update(pod.host_ports)
        if pod.controller:
            self.controller_pods[pod.controller] += 1


# ---------------------------------------------------------------- filters


def node_ready(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    return () if node.ready else (REASON_NOT_READY,)


def node_schedulable(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    return (REASON_UNSCHEDULABLE,) if node.unschedulable else ()


def node_selector_matches(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    labels = node.labels
    for key, value in pod.node_selector:
        if labels.get(key) != value:
            return (REASON_NODE_SELECTOR,)
    return ()


def resources_fit(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    """Requests of the node's pods plus this one within allocatable cpu, memory, pods.

    Every insufficient resource is named, as kube-scheduler's NodeResourcesFit does.
    """
    if (
        node.pod_count < node.allocatable_pods
        and node.requested_cpu + pod.cpu <= node.allocatable_cpu
        and node.requested_memory + pod.memory <= node.allocatable_memory
    ):
        return ()
    reasons = []
    if node.pod_count + 1 > node.allocatable_pods:
        reasons.append(REASON_TOO_MANY_PODS)
    if node.requested_cpu + pod.cpu > node.allocatable_cpu:
        reasons.append(REASON_INSUFFICIENT_CPU)
    if node.requested_memory + pod.memory > node.allocatable_memory:
        reasons.append(REASON_INSUFFICIENT_MEMORY)
    return tuple(reasons)


def host_ports_free(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    if pod.host_ports and not node.host_ports.isdisjoint(pod.host_ports):
        return (REASON_HOST_PORTS,)
    return ()


Checker = Callable[[PodRequest, NodeState], tuple[str, ...]]


@dataclass(frozen=True)
class Filter:
    """A named feasibility checker.

    ``static`` filters look only at the node and the pod's nodeSelector, which
    do not change within a pass, so they are run once per distinct selector.
    """

    name: str
    check: Checker
    static: bool


FILTERS: tuple[Filter, ...] = (
    Filter("NodeReady", node_ready, static=True),
    Filter("NodeUnschedulable", node_schedulable, static=True),
    Filter("NodeSelector", node_selector_matches, static=True),
    Filter("NodeResourcesFit", resources_fit, static=False),
    Filter("NodePorts", host_ports_free, static=False),
)
STATIC_FILTERS = tuple(f for f in FILTERS if f.static)


def rejections(pod: PodRequest, node: NodeState) -> tuple[str, ...]:
    """Why ``node`` cannot take ``pod`` (the first failing filter's reasons)."""
    for flt in FILTERS:
        reasons = flt.check(pod, node)
        if reasons:
            return reasons
    return ()


# ---------------------------------------------------------------- scores


def least_allocated(pod: PodRequest, node: NodeState) -> int:
    """0-100: the mean free fraction of cpu and memory after placing ``pod``."""
    return least_allocated_scores(pod, [node])[0]


def least_allocated_scores(pod: PodRequest, nodes: Sequence[NodeState]) -> list[int]:
    """``least_allocated`` of each node, computed in bulk (it is the hot spot)."""
    cpu, memory, top = pod.cpu, pod.memory, MAX_NODE_SCORE
    return [
        (
            (
                (n.allocatable_cpu - n.requested_cpu - cpu) * top // n.allocatable_cpu
                if n.allocatable_cpu
                else 0
            )
            + (
                (n.allocatable_memory - n.requested_memory - memory) * top // n.allocatable_memory
                if n.allocatable_memory
                else 0
            )
        )
        // 2
        for n in nodes
    ]


def spread_scores(pod: PodRequest, nodes: Sequence[NodeState]) -> list[int]:
    """0-100 per node: fewer pods of the pod's controller scores higher.

    As kube's SelectorSpread: ``100 · (max - count) / max`` over the nodes
    being scored; a bare pod, or none of its siblings placed, scores 100 everywhere.
    """
    if not pod.controller:
        return [MAX_NODE_SCORE] * len(nodes)
    counts = [n.controller_pods.get(pod.controller, 0) for n in nodes]
    most = max(counts, default=0)
    if not most:
        return [MAX_NODE_SCORE] * len(nodes)
    return [MAX_NODE_SCORE * (most - c) // most for c in counts]


#: weights, as kube's defaults weigh spreading above resource balance
LEAST_ALLOCATED_WEIGHT = 1
SPREAD_WEIGHT = 2


def score_nodes(pod: PodRequest, nodes: Sequence[NodeState]) -> list[int]:
    """The weighted total score of each feasible node."""
    spread = spread_scores(pod, nodes)
    least = least_allocated_scores(pod, nodes)
    return [
        LEAST_ALLOCATED_WEIGHT * la + SPREAD_WEIGHT * sp
        for la, sp in zip(least, spread, strict=True)
    ]


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Unschedulable:
    """A pod that fits on no node, and why."""

    pod_key: str
    message: str
    #: reason -> number of nodes rejecting the pod for it
    reasons: dict[str, int]


@dataclass
class SchedulePlan:
    #: pod key -> node name, in the order the pods were placed
    bindings: dict[str, str] = field(default_factory=dict)
    unschedulable: list[Unschedulable] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.bindings or self.unschedulable)


def fit_error_message(total_nodes: int, reasons: Counter[str] | dict[str, int]) -> str:
    """kube-scheduler's FitError text: "0/3 nodes are available: 2 Insufficient memory, …"."""
    if total_nodes == 0:
        return f"0/0 nodes are available: {REASON_NO_NODES}."
    parts = [
        f"{count} {reason}"
        for reason, count in sorted(reasons.items(), key=lambda item: (-item[1], item[0]))
    ]
    return f"0/{total_nodes} nodes are available: {', '.join(parts)}."


def num_feasible_nodes_to_find(total: int, percentage: int = 0) -> int:
    """How many feasible nodes to find before scoring (kube's numFeasibleNodesToFind).

    ``percentage`` 0 means adaptive: 50% minus 1% per 125 nodes, at least 5%;
    never fewer than 100 nodes (or all of them, when there are fewer).
    """
    if total < MIN_FEASIBLE_NODES_TO_FIND or percentage >= 100:
        return total
    if percentage <= 0:
        percentage = BASE_PERCENTAGE_OF_NODES_TO_SCORE - total // 125
        percentage = max(percentage, MIN_FEASIBLE_NODES_PERCENTAGE_TO_FIND)
    return max(total * percentage // 100, MIN_FEASIBLE_NODES_TO_FIND)


def _is_active(pod: Pod) -> bool:
    return pod.status.phase not in TERMINAL_PHASES and not pod.metadata.deletion_timestamp


def _queue_order(pod: Pod) -> tuple[str, str]:
    return (pod.metadata.creation_timestamp, pod.key)


class _Pass:
    """One scheduling pass: node states, the seeded order, caches."""

    def __init__(self, nodes: Iterable[Node], bound: Iterable[Pod], *, seed: int, percentage: int):
        ordered = sorted(nodes, key=lambda n: n.name)
        random.Random(seed).shuffle(ordered)
        self.nodes = [NodeState.of(n) for n in ordered]
        by_name = {n.name: n for n in self.nodes}
        for pod in bound:
            state = by_name.get(pod.spec.node_name)
            if state is not None and _is_active(pod):
                state.add(PodRequest.of(pod))
        self.to_find = num_feasible_nodes_to_find(len(self.nodes), percentage)
        self.next_start = 0
        # selector -> (positions passing the static filters, static rejection counts)
        self._static: dict[tuple[tuple[str, str], ...], tuple[list[int], Counter[str]]] = {}

    def static_candidates(self, pod: PodRequest) -> tuple[list[int], Counter[str]]:
        cached = self._static.get(pod.node_selector)
        if cached is None:
            positions: list[int] = []
            rejected: Counter[str] = Counter()
            for i, node in enumerate(self.nodes):
                for flt in STATIC_FILTERS:
                    reasons = flt.check(pod, node)
                    if reasons:
                        rejected.update(reasons)
                        break
                else:
                    positions.append(i)
            cached = self._static[pod.node_selector] = (positions, rejected)
        return cached

    def place(self, pod: PodRequest) -> NodeState | Counter[str]:
        """The chosen node, or the rejection counts over every node."""
        positions, static_rejected = self.static_candidates(pod)
        nodes = self.nodes
        total = len(positions)
        offset = bisect_left(positions, self.next_start) if total else 0
        feasible: list[NodeState] = []
        rejected: Counter[str] | None = None
        to_find = self.to_find
        found = 0
        last = -1
        # from where the previous pod's search stopped, round the candidates once
        cpu, memory, ports, controller = pod.cpu, pod.memory, pod.host_ports, pod.controller
        top = MAX_NODE_SCORE
        least: list[int] = []  # least_allocated of each feasible node
        siblings: list[int] = []  # pods of the same controller on each feasible node
        for pos in chain(positions[offset:], positions[:offset]):
            node = nodes[pos]
            last = pos
            # NodeResourcesFit and NodePorts, the filters that change as pods bind.
            # Their condition and the scores are spelled out here because these
            # lines run millions of times; ``resources_fit``/``host_ports_free``
            # give the reasons and ``score_nodes`` is the reference the property
            # tests hold every choice to.
            ac, am = node.allocatable_cpu, node.allocatable_memory
            free_cpu, free_memory = (
                ac - node.requested_cpu - cpu,
                am - node.requested_memory - memory,
            )
            if (
                node.pod_count < node.allocatable_pods
                and free_cpu >= 0
                and free_memory >= 0
                and (not ports or node.host_ports.isdisjoint(ports))
            ):
                feasible.append(node)
                least.append(
                    ((free_cpu * top // ac if ac else 0) + (free_memory * top // am if am else 0))
                    // 2
                )
                if controller:
                    siblings.append(node.controller_pods.get(controller, 0))
                found += 1
                if found >= to_find:
                    break
                continue
            if rejected is None:
                rejected = Counter()
            rejected.update(resources_fit(pod, node) or host_ports_free(pod, node))
        if last >= 0:
            self.next_start = (last + 1) % len(nodes)
        if not feasible:
            counts = Counter(static_rejected)
            if rejected:
                counts.update(rejected)
            return counts
        most = max(siblings) if siblings else 0
        if most:
            totals = [
                LEAST_ALLOCATED_WEIGHT * la + SPREAD_WEIGHT * (top * (most - c) // most)
                for la, c in zip(least, siblings, strict=True)
            ]
        else:  # spread is 100 everywhere: least allocated decides
            totals = least
        return feasible[totals.index(max(totals))]


def schedule(
    pending: Sequence[Pod],
    nodes: Sequence[Node],
    bound: Sequence[Pod],
    *,
    seed: int,
    percentage_of_nodes_to_score: int = 0,
) -> SchedulePlan:
    """Bind each of ``pending`` to a node, given the pods already ``bound``.

    Pods are placed oldest first (creation time, then key); each placement is
    accounted before the next pod is placed. ``seed`` orders the nodes, which
    breaks score ties; the same arguments give the same plan.
    """
    plan = SchedulePlan()
    state = _Pass(nodes, bound, seed=seed, percentage=percentage_of_nodes_to_score)
    total_nodes = len(state.nodes)
    for pod in sorted(pending, key=_queue_order):
        if pod.key in plan.bindings:
            continue
        request = PodRequest.of(pod)
        chosen = state.place(request)
        if isinstance(chosen, NodeState):
            chosen.add(request)
            plan.bindings[request.key] = chosen.name
        else:
            plan.unschedulable.append(
                Unschedulable(request.key, fit_error_message(total_nodes, chosen), dict(chosen))
            )
    return plan
