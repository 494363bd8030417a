"""Node lifecycle's pure core: which nodes are Ready, which pods to evict.

Agents heartbeat by refreshing a key under ``HEARTBEAT_PREFIX`` put with a
lease; when an agent dies the lease lapses and the key vanishes. As
Kubernetes' node controller does, this core never compares the agent's clock
with ours: it remembers, on the controller's own clock (``now``, monotonic),
when it last saw each heartbeat key *change* (its ``mod_revision``). So
clock skew between machines cannot make a node look dead or alive.

- a node whose heartbeat has not changed for ``grace_period_seconds``
  (Kubernetes' node-monitor-grace-period, 50 s) gets ``Ready=Unknown``;
  it is Ready again as soon as its heartbeat moves;
- a node that has been not ready for ``eviction_timeout_seconds`` (the
  300 s not-ready toleration Kubernetes gives pods) has its pods evicted
  (deleted), and the RC manager creates replacements on other nodes;
- evictions are rate-limited per zone, as Kubernetes' node lifecycle
  controller does (``--node-eviction-rate``): a token bucket per zone (burst
  1) admits ``eviction_rate`` nodes per second (0.1: one node every 10 s);
  a node admitted has its pods evicted, on every pass while it stays not
  ready, without taking another token;
- a zone with more than two nodes not ready and at least
  ``unhealthy_zone_threshold`` (55 %) of its nodes not ready is in *partial
  disruption*: its rate drops to ``secondary_eviction_rate`` (0.01), or to
  0 when the zone has no more than ``large_cluster_size_threshold`` (50)
  nodes — many nodes failing together look like a network fault, not dead
  machines;
- when every node is down at once the fault is more likely on the
  controller's side (a partition), so nothing is evicted — Kubernetes'
  "full disruption" rule. When some node comes back, the nodes still down
  start their eviction timeout afresh (Kubernetes resets its timestamps
  when it leaves full disruption).

A node's zone is its ``topology.kubernetes.io/region`` and
``topology.kubernetes.io/zone`` labels (or the older
``failure-domain.beta.kubernetes.io/…`` ones); nodes without them share one
zone. The bucket state is memory like the heartbeat times: the loop passes
the plan's ``limiter`` to the next pass; time is passed in (``now``).

Node labels and ``spec.unschedulable`` come from git (the sync merges them);
this core only writes the Ready condition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum

from gitkube.api.objects import Node, NodeCondition, Pod

#: Kubernetes' node-monitor-grace-period
DEFAULT_GRACE_PERIOD_SECONDS = 50.0
#: Kubernetes' default not-ready toleration for pods
DEFAULT_EVICTION_TIMEOUT_SECONDS = 300.0
#: Kubernetes' --node-eviction-rate: nodes per second whose pods are evicted, per zone
DEFAULT_EVICTION_RATE = 0.1
#: Kubernetes' --secondary-node-eviction-rate: the rate in a zone in partial disruption
DEFAULT_SECONDARY_EVICTION_RATE = 0.01
#: Kubernetes' --unhealthy-zone-threshold: share of nodes not ready for partial disruption
DEFAULT_UNHEALTHY_ZONE_THRESHOLD = 0.55
#: Kubernetes' --large-cluster-size-threshold: smaller zones stop evicting in partial disruption
DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD = 50
#: the token bucket's size (Kubernetes' evictionLimiterBurst)
EVICTION_BURST = 1.0

ZONE_LABELS = ("topology.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/zone")
REGION_LABELS = ("topology.kubernetes.io/region", "failure-domain.beta.kubernetes.io/region")

READY = "Ready"
REASON_READY = "AgentReady"
REASON_UNKNOWN = "NodeStatusUnknown"
#: reasons this controller writes; a Ready condition with another reason was set by the agent
OWN_REASONS = frozenset({REASON_READY, REASON_UNKNOWN, "KubeletReady", ""})
EVICTION_REASON = "NodeNotReady"


@dataclass(frozen=True)
class NodeLifecycleSettings:
    grace_period_seconds: float = DEFAULT_GRACE_PERIOD_SECONDS
    eviction_timeout_seconds: float = DEFAULT_EVICTION_TIMEOUT_SECONDS
    #: evict even when every node is down (off, as Kubernetes' full-disruption mode)
    evict_when_all_nodes_down: bool = False
    eviction_rate: float = DEFAULT_EVICTION_RATE
    secondary_eviction_rate: float = DEFAULT_SECONDARY_EVICTION_RATE
    unhealthy_zone_threshold: float = DEFAULT_UNHEALTHY_ZONE_THRESHOLD
    large_cluster_size_threshold: int = DEFAULT_LARGE_CLUSTER_SIZE_THRESHOLD


class ZoneState(StrEnum):
    NORMAL = "Normal"
    PARTIAL_DISRUPTION = "PartialDisruption"
    FULL_DISRUPTION = "FullDisruption"


def zone_of(node: Node) -> str:
    """The node's zone key from its labels: ``region/zone``, or ``zone``, or ``""``."""
    labels = node.metadata.labels
    zone = next((labels[k] for k in ZONE_LABELS if labels.get(k)), "")
    region = next((labels[k] for k in REGION_LABELS if labels.get(k)), "")
    return f"{region}/{zone}" if region else zone


def compute_zone_state(ready: Sequence[bool], *, unhealthy_threshold: float) -> ZoneState:
    """Kubernetes' ComputeZoneState over the Ready judgements of one zone's nodes."""
    not_ready = sum(1 for r in ready if not r)
    if ready and not_ready == len(ready):
        return ZoneState.FULL_DISRUPTION
    if not_ready > 2 and not_ready / len(ready) >= unhealthy_threshold:
        return ZoneState.PARTIAL_DISRUPTION
    return ZoneState.NORMAL


def zone_eviction_rate(state: ZoneState, zone_size: int, settings: NodeLifecycleSettings) -> float:
    """Nodes per second the zone's bucket refills at (Kubernetes' setLimiterInZone)."""
    if state is ZoneState.PARTIAL_DISRUPTION:
        if zone_size <= settings.large_cluster_size_threshold:
            return 0.0
        return settings.secondary_eviction_rate
    # a fully disrupted zone while others are up is evicted at the normal rate;
    # every zone fully disrupted is handled before any bucket is consulted
    return settings.eviction_rate


# ---------------------------------------------------------------- the rate limiter


@dataclass(frozen=True)
class ZoneBucket:
    """A token bucket: ``tokens`` as of controller time ``at``."""

    tokens: float
    at: float

    def refilled(self, now: float, rate: float) -> ZoneBucket:
        if rate <= 0:
            # Kubernetes swaps in a limiter that never admits; the one swapped
            # back later starts drained
            return ZoneBucket(0.0, now)
        elapsed = max(0.0, now - self.at)
        return ZoneBucket(min(EVICTION_BURST, self.tokens + rate * elapsed), now)


@dataclass(frozen=True)
class EvictionLimiter:
    """The eviction rate limiter's memory: a bucket per zone, and whether every
    node was down on the last pass. A zone not seen before starts with a full
    bucket, so the first node of an outage is evicted without waiting."""

    buckets: Mapping[str, ZoneBucket] = field(default_factory=dict)
    full_disruption: bool = False


# ---------------------------------------------------------------- heartbeat values


def encode_heartbeat(node: str, *, time: float, address: str) -> bytes:
    """The value an agent puts under ``HEARTBEAT_PREFIX + node``."""
    return json.dumps({"node": node, "time": time, "address": address}).encode()


def decode_heartbeat(value: bytes) -> dict[str, object]:
    """The heartbeat's fields; an unreadable value is an empty dict (only its revision counts)."""
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class NodeHealth:
    """What the controller remembers of one node, on its own clock."""

    #: the heartbeat key's mod_revision when last seen (0: no key)
    heartbeat_revision: int
    #: when the controller last saw the heartbeat change (or first saw the node)
    seen_at: float
    #: when the controller first judged the node not ready (None: ready)
    not_ready_since: float | None = None
    #: when the rate limiter admitted the node's eviction (None: not admitted)
    evicting_since: float | None = None


@dataclass(frozen=True)
class Eviction:
    pod: Pod
    node: str
    reason: str = EVICTION_REASON


@dataclass
class NodeLifecyclePlan:
    #: the controller's memory for the next pass
    health: dict[str, NodeHealth] = field(default_factory=dict)
    #: copies of nodes whose Ready condition changes
    node_updates: list[Node] = field(default_factory=list)
    evictions: list[Eviction] = field(default_factory=list)
    ready: list[str] = field(default_factory=list)
    not_ready: list[str] = field(default_factory=list)
    #: the rate limiter's memory for the next pass
    limiter: EvictionLimiter = field(default_factory=EvictionLimiter)
    #: each zone's state this pass
    zones: dict[str, ZoneState] = field(default_factory=dict)
    #: nodes past the eviction timeout whose eviction waits for the rate limiter
    eviction_waiting: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.node_updates or self.evictions)


def _ready_condition(node: Node) -> NodeCondition | None:
    return node.status.condition(READY)


def _with_ready(node: Node, status: str, reason: str, message: str, timestamp: str) -> Node:
    updated = node.copy()
    conditions = [c for c in updated.status.conditions if c.type != READY]
    conditions.insert(
        0,
        NodeCondition(
            type=READY,
            status=status,
            reason=reason,
            message=message,
            last_heartbeat_time=timestamp,
            last_transition_time=timestamp,
        ),
    )
    updated.status.conditions = conditions
    return updated


def plan_node_lifecycle(
    nodes: Sequence[Node],
    heartbeats: Mapping[str, int],
    pods: Sequence[Pod],
    health: Mapping[str, NodeHealth],
    *,
    now: float,
    timestamp: str,
    settings: NodeLifecycleSettings | None = None,
    limiter: EvictionLimiter | None = None,
) -> NodeLifecyclePlan:
    """Ready conditions and evictions.

    ``heartbeats`` maps node name to its heartbeat key's mod_revision (absent:
    no key); ``health`` and ``limiter`` are the memory returned by the
    previous pass (``plan.health``, ``plan.limiter``); ``now`` is the
    controller's monotonic clock and ``timestamp`` the wall-clock time
    written into conditions.
    """
    limiter = limiter or EvictionLimiter()
    settings = settings or NodeLifecycleSettings()
    grace = settings.grace_period_seconds
    plan = NodeLifecyclePlan()
    judged_ready: dict[str, bool] = {}
    for node in sorted(nodes, key=lambda n: n.name):
        name = node.name
        revision = heartbeats.get(name, 0)
        previous = health.get(name)
        if previous is None or (revision and revision != previous.heartbeat_revision):
            seen_at = now
        else:
            seen_at = previous.seen_at
        fresh = now - seen_at <= grace
        cond = _ready_condition(node)
        current = cond.status if cond else ""
        ours = cond is None or cond.reason in OWN_REASONS
        if fresh and revision and current != "True" and ours:
            plan.node_updates.append(
                _with_ready(node, "True", REASON_READY, "agent is posting heartbeats", timestamp)
            )
            current = "True"
        elif not fresh and current != "Unknown":
            plan.node_updates.append(
                _with_ready(
                    node,
                    "Unknown",
                    REASON_UNKNOWN,
                    f"agent stopped posting heartbeats: none for more than {grace:g}s",
                    timestamp,
                )
            )
            current = "Unknown"
        ready = current == "True"
        judged_ready[name] = ready
        not_ready_since: float | None = None
        evicting_since: float | None = None
        if not ready:
            earlier = previous.not_ready_since if previous else None
            not_ready_since = earlier if earlier is not None else now
            evicting_since = previous.evicting_since if previous else None
        plan.health[name] = NodeHealth(revision, seen_at, not_ready_since, evicting_since)
        (plan.ready if ready else plan.not_ready).append(name)

    all_down = bool(judged_ready) and not any(judged_ready.values())
    full_disruption_rule = all_down and not settings.evict_when_all_nodes_down
    if limiter.full_disruption and not all_down:
        # leaving full disruption: the nodes still down get a fresh timeout
        for name, h in plan.health.items():
            if h.not_ready_since is not None and h.evicting_since is None:
                plan.health[name] = replace(h, not_ready_since=now)
    zones: dict[str, list[Node]] = {}
    for node in nodes:
        zones.setdefault(zone_of(node), []).append(node)
    buckets: dict[str, ZoneBucket] = {}
    overdue: set[str] = set()
    for zone in sorted(zones):
        members = zones[zone]
        state = compute_zone_state(
            [judged_ready[n.name] for n in members],
            unhealthy_threshold=settings.unhealthy_zone_threshold,
        )
        plan.zones[zone] = state
        rate = 0.0 if full_disruption_rule else zone_eviction_rate(state, len(members), settings)
        previous_bucket = limiter.buckets.get(zone)
        bucket = (previous_bucket or ZoneBucket(EVICTION_BURST, now)).refilled(now, rate)
        due = sorted(
            (h.not_ready_since, n.name)
            for n in members
            if (h := plan.health[n.name]).not_ready_since is not None
            and now - h.not_ready_since >= settings.eviction_timeout_seconds
        )
        for _, name in due:
            h = plan.health[name]
            if full_disruption_rule:
                plan.eviction_waiting.append(name)
            elif h.evicting_since is not None:
                overdue.add(name)
            elif bucket.tokens >= 1.0 - 1e-9:
                bucket = ZoneBucket(bucket.tokens - 1.0, bucket.at)
                plan.health[name] = replace(h, evicting_since=now)
                overdue.add(name)
            else:
                plan.eviction_waiting.append(name)
        buckets[zone] = bucket
    plan.limiter = EvictionLimiter(buckets, full_disruption=full_disruption_rule)
    plan.eviction_waiting.sort()
    if overdue:
        for pod in sorted(pods, key=lambda p: p.key):
            if pod.spec.node_name in overdue and not pod.metadata.deletion_timestamp:
                plan.evictions.append(Eviction(pod, pod.spec.node_name))
    return plan
