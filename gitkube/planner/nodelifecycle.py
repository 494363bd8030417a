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
- when every node is down at once the fault is more likely on the
  controller's side (a partition), so nothing is evicted — Kubernetes'
  "full disruption" rule.

Node labels and ``spec.unschedulable`` come from git (the sync merges them);
this core only writes the Ready condition.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from gitkube.api.objects import Node, NodeCondition, Pod

#: Kubernetes' node-monitor-grace-period
DEFAULT_GRACE_PERIOD_SECONDS = 50.0
#: Kubernetes' default not-ready toleration for pods
DEFAULT_EVICTION_TIMEOUT_SECONDS = 300.0

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
) -> NodeLifecyclePlan:
    """Ready conditions and evictions.

    ``heartbeats`` maps node name to its heartbeat key's mod_revision (absent:
    no key); ``health`` is the memory returned by the previous pass; ``now``
    is the controller's monotonic clock and ``timestamp`` the wall-clock time
    written into conditions.
    """
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
        if not ready:
            earlier = previous.not_ready_since if previous else None
            not_ready_since = earlier if earlier is not None else now
        plan.health[name] = NodeHealth(revision, seen_at, not_ready_since)
        (plan.ready if ready else plan.not_ready).append(name)

    all_down = bool(judged_ready) and not any(judged_ready.values())
    if all_down and not settings.evict_when_all_nodes_down:
        return plan
    overdue = {
        name
        for name, h in plan.health.items()
        if h.not_ready_since is not None
        and now - h.not_ready_since >= settings.eviction_timeout_seconds
    }
    if overdue:
        for pod in sorted(pods, key=lambda p: p.key):
            if pod.spec.node_name in overdue and not pod.metadata.deletion_timestamp:
                plan.evictions.append(Eviction(pod, pod.spec.node_name))
    return plan
