"""The ReplicationController manager's pure core: from an RC and its pods, a plan.

``plan_replication`` reads one RC, the pods of its namespace and the nodes,
and returns what must change — it performs nothing. Like Nomad's
reconciler, the result is buckets applied by someone else (the loop in
``replication_loop``):

- ``adoptions``: pods matching the selector with no controller, claimed;
- ``releases``: owned pods whose labels stopped matching, let go;
- ``deletes``: failed pods, pods whose node is gone, surplus pods (least
  useful first, in Kubernetes' order: unscheduled, pending, not ready, most
  restarts, newest) and old-template pods during a rolling update;
- ``creates``: pods from the template, named ``<rc>-<5 random chars>``;
- ``status``: replicas, readyReplicas, availableReplicas, updatedReplicas,
  observedGeneration and the Progressing / Degraded conditions.

**Rolling update.** Pods carry ``TEMPLATE_HASH_LABEL``, a hash of the
template they came from. When the template changes, new pods are created at
most ``maxSurge`` above ``replicas``, and old pods are deleted only while
the ready pods stay at or above ``replicas - maxUnavailable`` (defaults:
surge 1, unavailable 0; the RC annotations ``gitkube.io/max-surge`` and
``gitkube.io/max-unavailable`` take a count or a percentage) — Kubernetes'
Deployment arithmetic. A rollout that makes no progress for the progress
deadline (600 s, Kubernetes' progressDeadlineSeconds; settable, and per RC
with ``gitkube.io/progress-deadline-seconds``) stops surging: the old pods
keep serving and the status says Degraded with the reason.

**ReplicaSets** (apps/v1) share this core: ``plan_replicaset`` claims pods
with the same adoption, release, failure and deletion-order rules, through a
set-based selector, and keeps ``replicas`` pods of its one template — a
ReplicaSet never rolls; Deployments roll by moving replicas between
ReplicaSets (``planner.deployment``).

No I/O and no clock: ``now`` (unix seconds) and ``rand`` are passed in.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from gitkube.api.annotations import (
    MAX_SURGE,
    MAX_UNAVAILABLE,
    PROGRESS_DEADLINE,
    TEMPLATE_HASH_LABEL,
)
from gitkube.api.labels import selector_matches
from gitkube.api.objects import (
    ApiObject,
    Node,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetCondition,
    ReplicaSetStatus,
    ReplicationController,
    ReplicationControllerCondition,
    ReplicationControllerStatus,
)
from gitkube.api.serde import to_dict

#: Kubernetes' alphabet for generated name suffixes (no vowels, no confusables)
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
NAME_SUFFIX_LENGTH = 5
MAX_NAME_LENGTH = 63

#: kube-controller-manager's burstReplicas
DEFAULT_BURST_REPLICAS = 500
#: Kubernetes' default progressDeadlineSeconds
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600.0
DEFAULT_MAX_SURGE = 1
DEFAULT_MAX_UNAVAILABLE = 0

TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})

# delete reasons
DELETE_FAILED = "Failed"
DELETE_NODE_LOST = "NodeLost"
DELETE_SURPLUS = "ScaleDown"
DELETE_ROLLING = "RollingUpdate"

# condition types and reasons
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
REPLICA_FAILURE = "ReplicaFailure"
REASON_COMPLETE = "RolloutComplete"
REASON_ROLLING = "RollingUpdate"
REASON_SCALING = "ScalingReplicas"
REASON_DEADLINE = "ProgressDeadlineExceeded"
REASON_BAD_ANNOTATION = "InvalidAnnotation"


@dataclass(frozen=True)
class ReplicationSettings:
    #: at most this many creates, and as many deletes, per pass (kube's burstReplicas)
    burst_replicas: int = DEFAULT_BURST_REPLICAS
    #: a rollout without progress this long is Degraded (RC annotation overrides)
    progress_deadline_seconds: float = DEFAULT_PROGRESS_DEADLINE_SECONDS


@dataclass(frozen=True)
class PodDelete:
    pod: Pod
    reason: str


@dataclass
class ReplicationPlan:
    rc: ReplicationController
    template_hash: str
    creates: list[Pod] = field(default_factory=list)
    deletes: list[PodDelete] = field(default_factory=list)
    #: copies of the pods with this RC added as controller owner
    adoptions: list[Pod] = field(default_factory=list)
    #: copies of the pods with this RC's owner reference removed
    releases: list[Pod] = field(default_factory=list)
    status: ReplicationControllerStatus = field(default_factory=ReplicationControllerStatus)
    #: True when ``status`` differs from the RC's stored status
    status_changed: bool = False

    def has_pod_changes(self) -> bool:
        return bool(self.creates or self.deletes or self.adoptions or self.releases)

    def __bool__(self) -> bool:
        return self.has_pod_changes() or self.status_changed


# ---------------------------------------------------------------- small helpers


def format_time(unix: float) -> str:
    """RFC 3339 UTC with microseconds."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> float | None:
    """Unix seconds of an RFC 3339 UTC time (with or without fractions); None if empty/bad."""
    if not text:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC).timestamp()
        except ValueError:
            continue
    return None


def template_hash(rc: ReplicationController) -> str:
    """A short stable hash of the pod template (its own hash label excluded)."""
    data = to_dict(rc.spec.template)
    labels = data.get("metadata", {}).get("labels", {})
    labels.pop(TEMPLATE_HASH_LABEL, None)
    digest = hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def generate_name(base: str, rand: random.Random, taken: set[str]) -> str:
    """``<base>-<5 chars>`` not in ``taken``, as Kubernetes' generateName."""
    base = base[: MAX_NAME_LENGTH - NAME_SUFFIX_LENGTH - 1]
    while True:
        suffix = "".join(rand.choice(NAME_ALPHABET) for _ in range(NAME_SUFFIX_LENGTH))
        name = f"{base}-{suffix}"
        if name not in taken:
            return name


def slow_start_batches(count: int, *, initial: int = 1) -> list[int]:
    """Batch sizes 1, 2, 4, … adding up to ``count`` (Kubernetes' slowStartBatch)."""
    batches, size, left = [], max(initial, 1), count
    while left > 0:
        batch = min(size, left)
        batches.append(batch)
        left -= batch
        size *= 2
    return batches


def resolve_int_or_percent(value: str, total: int, *, round_up: bool) -> int:
    """A count ("2") or a percentage of ``total`` ("25%"); ValueError if neither."""
    text = value.strip()
    if text.endswith("%"):
        percent = float(text[:-1])
        if percent < 0:
            raise ValueError(f"{value!r} is negative")
        exact = percent * total / 100
        return math.ceil(exact) if round_up else math.floor(exact)
    number = int(text)
    if number < 0:
        raise ValueError(f"{value!r} is negative")
    return number


def rollout_limits(rc: ReplicationController) -> tuple[int, int, list[str]]:
    """(maxSurge, maxUnavailable, problems) from the RC's annotations.

    As Kubernetes: surge rounds up, unavailable rounds down, and both zero
    means a surge of one (a rollout must be able to move).
    """
    annotations, replicas = rc.metadata.annotations, rc.spec.replicas
    problems: list[str] = []
    surge, unavailable = DEFAULT_MAX_SURGE, DEFAULT_MAX_UNAVAILABLE
    for key, round_up in ((MAX_SURGE, True), (MAX_UNAVAILABLE, False)):
        if key not in annotations:
            continue
        try:
            value = resolve_int_or_percent(annotations[key], replicas, round_up=round_up)
        except ValueError:
            problems.append(
                f"annotation {key}={annotations[key]!r} is not a count or a percentage; "
                "using the default"
            )
            continue
        if key == MAX_SURGE:
            surge = value
        else:
            unavailable = value
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable, problems


def progress_deadline(
    rc: ReplicationController, settings: ReplicationSettings
) -> tuple[float, list[str]]:
    raw = rc.metadata.annotations.get(PROGRESS_DEADLINE)
    if raw is None:
        return settings.progress_deadline_seconds, []
    try:
        seconds = float(raw)
        if seconds <= 0 or math.isnan(seconds):
            raise ValueError(raw)
    except ValueError:
        return settings.progress_deadline_seconds, [
            f"annotation {PROGRESS_DEADLINE}={raw!r} is not a positive number of seconds; "
            "using the default"
        ]
    return seconds, []


def is_available(pod: Pod, *, min_ready_seconds: int, now: float) -> bool:
    """Ready for at least ``min_ready_seconds``."""
    if not pod.is_ready():
        return False
    if min_ready_seconds <= 0:
        return True
    cond = pod.status.condition("Ready")
    since = parse_time(cond.last_transition_time) if cond else None
    return since is None or since + min_ready_seconds <= now


_PHASE_RANK = {"Pending": 0, "Unknown": 1, "Running": 2}


def deletion_order(pods: Sequence[Pod]) -> list[Pod]:
    """Least useful first (Kubernetes' ActivePods order): unscheduled, pending,
    not ready, most restarts, newest."""
    newest_first = sorted(pods, key=lambda p: (p.metadata.creation_timestamp, p.name), reverse=True)
    return sorted(
        newest_first,
        key=lambda p: (
            bool(p.spec.node_name),
            _PHASE_RANK.get(p.status.phase, 1),
            p.is_ready(),
            -p.restart_count(),
        ),
    )


def _controller_ref(owner: ApiObject) -> OwnerReference:
    return OwnerReference(
        api_version=owner.api_version or "v1",
        kind=owner.KIND,
        name=owner.name,
        uid=owner.metadata.uid,
        controller=True,
    )


def new_pod(rc: ReplicationController, name: str, hash_: str) -> Pod:
    """A pod from the RC's template, owned by the RC."""
    labels = dict(rc.spec.template.metadata.labels)
    labels[TEMPLATE_HASH_LABEL] = hash_
    return pod_from_template(rc, rc.spec.template, name, labels)


def owned_by(obj: ApiObject, owner: ApiObject) -> bool:
    """True when ``owner`` is ``obj``'s controller (by uid; by name before a uid exists)."""
    ref = obj.metadata.controller_ref()
    return (
        ref is not None
        and ref.kind == owner.KIND
        and (ref.uid == owner.metadata.uid if owner.metadata.uid else ref.name == owner.name)
    )


@dataclass
class ClaimedPods:
    """The pods a controller owns, after adoption and release (Kubernetes'
    ClaimPods), split into the active ones and those to delete."""

    active: list[Pod] = field(default_factory=list)
    adoptions: list[Pod] = field(default_factory=list)
    releases: list[Pod] = field(default_factory=list)
    deletes: list[PodDelete] = field(default_factory=list)


def claim_pods(
    owner: ApiObject,
    matches: Callable[[dict[str, str]], bool],
    pods: Sequence[Pod],
    node_names: set[str],
) -> ClaimedPods:
    """Adopt matching orphans, release owned pods that stopped matching, and
    mark failed pods and pods on lost nodes for deletion."""
    claimed = ClaimedPods()
    owned: list[Pod] = []
    for pod in pods:
        if pod.namespace != owner.namespace:
            continue
        match = matches(pod.metadata.labels)
        if owned_by(pod, owner):
            if match:
                owned.append(pod)
            else:
                released = pod.copy()
                released.metadata.owner_references = [
                    r for r in released.metadata.owner_references if not r.controller
                ]
                claimed.releases.append(released)
        elif (
            match
            and pod.metadata.controller_ref() is None
            and not pod.metadata.deletion_timestamp
            and pod.status.phase not in TERMINAL_PHASES
        ):
            adopted = pod.copy()
            adopted.metadata.owner_references.append(_controller_ref(owner))
            claimed.adoptions.append(adopted)
            owned.append(adopted)
    for pod in owned:
        if pod.metadata.deletion_timestamp:
            continue
        if pod.status.phase in TERMINAL_PHASES:
            claimed.deletes.append(PodDelete(pod, DELETE_FAILED))
        elif pod.spec.node_name and pod.spec.node_name not in node_names:
            claimed.deletes.append(PodDelete(pod, DELETE_NODE_LOST))
        else:
            claimed.active.append(pod)
    return claimed


def pod_from_template(
    owner: ApiObject, template: PodTemplateSpec, name: str, labels: dict[str, str]
) -> Pod:
    """A pod from ``template`` named ``name``, with ``labels``, controlled by ``owner``."""
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=owner.namespace,
            labels=labels,
            annotations=dict(template.metadata.annotations),
            owner_references=[_controller_ref(owner)],
        ),
        spec=copy.deepcopy(template.spec),
    )


# ---------------------------------------------------------------- the plan


def plan_replication(
    rc: ReplicationController,
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    *,
    now: float,
    rand: random.Random,
    settings: ReplicationSettings | None = None,
) -> ReplicationPlan:
    """What must change for ``rc``'s pods to match its spec, and its new status."""
    settings = settings or ReplicationSettings()
    hash_ = template_hash(rc)
    plan = ReplicationPlan(rc=rc, template_hash=hash_)
    selector = rc.effective_selector()
    replicas = max(rc.spec.replicas, 0)
    burst = max(settings.burst_replicas, 1)
    node_names = {n.name for n in nodes}

    claimed = claim_pods(rc, lambda labels: selector_matches(selector, labels), pods, node_names)
    plan.adoptions, plan.releases = claimed.adoptions, claimed.releases
    plan.deletes = list(claimed.deletes)
    active = claimed.active

    new = [p for p in active if p.metadata.labels.get(TEMPLATE_HASH_LABEL) == hash_]
    old = [p for p in active if p.metadata.labels.get(TEMPLATE_HASH_LABEL) != hash_]
    min_ready = rc.spec.min_ready_seconds

    def available(pods_: Sequence[Pod]) -> int:
        return sum(1 for p in pods_ if is_available(p, min_ready_seconds=min_ready, now=now))

    surge, unavailable, problems = rollout_limits(rc)
    deadline, deadline_problems = progress_deadline(rc, settings)
    problems += deadline_problems
    previous = rc.status
    was_degraded = _is_degraded(previous) and previous.observed_generation == rc.metadata.generation

    creates = 0
    to_delete: list[PodDelete] = []
    if not old:
        diff = len(new) - replicas
        if diff < 0:
            creates = -diff
        elif diff > 0:
            to_delete += [PodDelete(p, DELETE_SURPLUS) for p in deletion_order(new)[:diff]]
    else:
        total = len(new) + len(old)
        if len(new) > replicas:
            surplus = deletion_order(new)[: len(new) - replicas]
            to_delete += [PodDelete(p, DELETE_SURPLUS) for p in surplus]
            surplus_keys = {p.key for p in surplus}
            new = [p for p in new if p.key not in surplus_keys]
            total = len(new) + len(old)
        if was_degraded:
            # stopped: only keep ``replicas`` pods in existence, no further surge
            creates = max(0, min(replicas - total, replicas - len(new)))
        else:
            creates = max(0, min(replicas + surge - total, replicas - len(new)))
        # scale old pods down without dropping below replicas - maxUnavailable ready pods
        min_available = max(replicas - unavailable, 0)
        new_available = available(new)
        new_unavailable = len(new) - new_available
        budget = total - min_available - new_unavailable
        if budget > 0:
            old_ranked = deletion_order(old)
            unhealthy = [
                p for p in old_ranked if not is_available(p, min_ready_seconds=min_ready, now=now)
            ][:budget]
            to_delete += [PodDelete(p, DELETE_ROLLING) for p in unhealthy]
            gone = {p.key for p in unhealthy}
            healthy_old = [p for p in old_ranked if p.key not in gone]
            room = new_available + (len(healthy_old)) - min_available
            room = min(room, budget - len(unhealthy), len(healthy_old))
            if room > 0:
                to_delete += [PodDelete(p, DELETE_ROLLING) for p in healthy_old[:room]]

    plan.deletes = (plan.deletes + to_delete)[:burst]
    taken = {p.name for p in pods if p.namespace == rc.namespace}
    for _ in range(min(creates, burst)):
        name = generate_name(rc.name, rand, taken)
        taken.add(name)
        plan.creates.append(new_pod(rc, name, hash_))

    plan.status = _status(
        rc,
        active=active,
        new=new,
        old=old,
        replicas=replicas,
        available_count=available(active),
        now=now,
        deadline=deadline,
        problems=problems,
    )
    plan.status_changed = plan.status != previous
    return plan


def _is_degraded(status: ReplicationControllerStatus) -> bool:
    return any(c.type == DEGRADED and c.status == "True" for c in status.conditions)


def _condition(
    status: ReplicationControllerStatus, type_: str
) -> ReplicationControllerCondition | None:
    for cond in status.conditions:
        if cond.type == type_:
            return cond
    return None


def _set_condition(
    conditions: list[ReplicationControllerCondition],
    previous: ReplicationControllerCondition | None,
    wanted: ReplicationControllerCondition,
    now_text: str,
) -> None:
    """Append ``wanted``, keeping the previous transition time when the status holds."""
    if previous is not None and previous.status == wanted.status:
        wanted = replace(wanted, last_transition_time=previous.last_transition_time or now_text)
    else:
        wanted = replace(wanted, last_transition_time=now_text)
    conditions.append(wanted)


def _status(
    rc: ReplicationController,
    *,
    active: list[Pod],
    new: list[Pod],
    old: list[Pod],
    replicas: int,
    available_count: int,
    now: float,
    deadline: float,
    problems: list[str],
) -> ReplicationControllerStatus:
    previous = rc.status
    template_labels = rc.spec.template.metadata.labels
    status = ReplicationControllerStatus(
        replicas=len(active),
        ready_replicas=sum(1 for p in active if p.is_ready()),
        available_replicas=available_count,
        fully_labeled_replicas=sum(
            1
            for p in active
            if all(p.metadata.labels.get(k) == v for k, v in template_labels.items())
        ),
        updated_replicas=len(new),
        observed_generation=rc.metadata.generation,
    )
    now_text = format_time(now)
    new_ready = sum(1 for p in new if p.is_ready())
    complete = not old and len(new) == replicas and available_count == replicas
    progressed = (
        previous.observed_generation != rc.metadata.generation
        or status.updated_replicas > previous.updated_replicas
        or status.replicas - status.updated_replicas < previous.replicas - previous.updated_replicas
        or status.ready_replicas > previous.ready_replicas
        or status.available_replicas > previous.available_replicas
    )
    prev_progressing = _condition(previous, PROGRESSING)
    last_update = prev_progressing.last_update_time if prev_progressing else ""
    if progressed or not last_update:
        last_update = now_text
    since = parse_time(last_update)
    stalled = not complete and not progressed and since is not None and now - since > deadline
    was_degraded = _is_degraded(previous) and not progressed
    counts = f"updated {len(new)} of {replicas}, ready {status.ready_replicas} of {replicas}"

    if complete:
        if prev_progressing is not None and prev_progressing.reason == REASON_COMPLETE:
            last_update = prev_progressing.last_update_time or last_update
        progressing = ReplicationControllerCondition(
            type=PROGRESSING,
            status="True",
            reason=REASON_COMPLETE,
            message=f"{counts}: rollout complete",
            last_update_time=last_update,
        )
    elif stalled or was_degraded:
        progressing = ReplicationControllerCondition(
            type=PROGRESSING,
            status="False",
            reason=REASON_DEADLINE,
            message=f"{counts}: no progress for {deadline:g}s",
            last_update_time=last_update,
        )
    else:
        progressing = ReplicationControllerCondition(
            type=PROGRESSING,
            status="True",
            reason=REASON_ROLLING if old else REASON_SCALING,
            message=counts + (f", {len(old)} on the old template" if old else ""),
            last_update_time=last_update,
        )
    conditions: list[ReplicationControllerCondition] = []
    _set_condition(conditions, prev_progressing, progressing, now_text)
    if progressing.status == "False":
        not_ready_new = len(new) - new_ready
        what = (
            f"the new template ({TEMPLATE_HASH_LABEL}={template_hash(rc)}) has "
            f"{not_ready_new} of {len(new)} pods not ready after {deadline:g}s"
            if new
            else f"no pods became ready in {deadline:g}s"
        )
        tail = f"; {len(old)} old pods keep serving" if old else ""
        _set_condition(
            conditions,
            _condition(previous, DEGRADED),
            ReplicationControllerCondition(
                type=DEGRADED,
                status="True",
                reason=REASON_DEADLINE,
                message=f"rollout stopped: {what}{tail}",
            ),
            now_text,
        )
    if problems:
        _set_condition(
            conditions,
            _condition(previous, REPLICA_FAILURE),
            ReplicationControllerCondition(
                type=REPLICA_FAILURE,
                status="True",
                reason=REASON_BAD_ANNOTATION,
                message="; ".join(problems),
            ),
            now_text,
        )
    status.conditions = conditions
    return status


# ---------------------------------------------------------------- ReplicaSets

#: the reason of a ReplicaSet's ReplicaFailure condition when pods cannot be created
REASON_FAILED_CREATE = "FailedCreate"


@dataclass
class ReplicaSetPlan:
    rs: ReplicaSet
    creates: list[Pod] = field(default_factory=list)
    deletes: list[PodDelete] = field(default_factory=list)
    adoptions: list[Pod] = field(default_factory=list)
    releases: list[Pod] = field(default_factory=list)
    status: ReplicaSetStatus = field(default_factory=ReplicaSetStatus)
    status_changed: bool = False

    def has_pod_changes(self) -> bool:
        return bool(self.creates or self.deletes or self.adoptions or self.releases)

    def __bool__(self) -> bool:
        return self.has_pod_changes() or self.status_changed


def plan_replicaset(
    rs: ReplicaSet,
    pods: Sequence[Pod],
    nodes: Sequence[Node],
    *,
    now: float,
    rand: random.Random,
    settings: ReplicationSettings | None = None,
    create_failure: str = "",
) -> ReplicaSetPlan:
    """What must change for ``rs``'s pods to match its spec, and its new status.

    ``create_failure``: why the last attempt to create its pods failed (the
    loop remembers it), reported as the ReplicaFailure condition.
    """
    settings = settings or ReplicationSettings()
    plan = ReplicaSetPlan(rs=rs)
    replicas = max(rs.spec.replicas if rs.spec.replicas is not None else 1, 0)
    burst = max(settings.burst_replicas, 1)
    selector = rs.spec.selector
    if selector.is_empty():
        # validation refuses it; an empty apps/v1 selector would match every pod
        claimed = ClaimedPods()
    else:
        claimed = claim_pods(rs, selector.matches, pods, {n.name for n in nodes})
    plan.adoptions, plan.releases = claimed.adoptions, claimed.releases
    active = claimed.active
    deletes = list(claimed.deletes)
    diff = len(active) - replicas
    creates = 0
    if diff < 0:
        creates = -diff
    elif diff > 0:
        deletes += [PodDelete(p, DELETE_SURPLUS) for p in deletion_order(active)[:diff]]
    plan.deletes = deletes[:burst]
    taken = {p.name for p in pods if p.namespace == rs.namespace}
    labels = dict(rs.spec.template.metadata.labels)
    for _ in range(min(creates, burst)):
        name = generate_name(rs.name, rand, taken)
        taken.add(name)
        plan.creates.append(pod_from_template(rs, rs.spec.template, name, dict(labels)))

    min_ready = rs.spec.min_ready_seconds
    status = ReplicaSetStatus(
        replicas=len(active),
        fully_labeled_replicas=sum(
            1 for p in active if all(p.metadata.labels.get(k) == v for k, v in labels.items())
        ),
        ready_replicas=sum(1 for p in active if p.is_ready()),
        available_replicas=sum(
            1 for p in active if is_available(p, min_ready_seconds=min_ready, now=now)
        ),
        observed_generation=rs.metadata.generation,
    )
    if create_failure:
        previous = next((c for c in rs.status.conditions if c.type == REPLICA_FAILURE), None)
        wanted = ReplicaSetCondition(
            type=REPLICA_FAILURE,
            status="True",
            reason=REASON_FAILED_CREATE,
            message=create_failure,
            last_transition_time=format_time(now),
        )
        if previous is not None and previous.status == "True":
            wanted = replace(wanted, last_transition_time=previous.last_transition_time)
        status.conditions = [wanted]
    plan.status = status
    plan.status_changed = status != rs.status
    return plan
