"""The Deployment controller's pure core: from a Deployment, its ReplicaSets
and their pods, a plan.

``plan_deployment`` follows Kubernetes' deployment controller
(``pkg/controller/deployment``) step for step, and returns data — the
ReplicaSets to create, scale, annotate, adopt, release and delete, and the
Deployment's new revision annotation and status — for the loop to write:

- **ReplicaSets per template.** The new ReplicaSet is the one whose template
  equals the Deployment's (ignoring ``pod-template-hash``); it is named
  ``<deployment>-<pod-template-hash>``, and the hash (FNV-32a over the
  template and ``status.collisionCount``, rendered with Kubernetes'
  safe-encoded alphabet) is added to its labels, selector and template. A
  name taken by a ReplicaSet of another template bumps ``collisionCount``.
- **RollingUpdate**: the new ReplicaSet grows while all ReplicaSets' replicas
  stay within ``replicas + maxSurge``; old ones shrink (unavailable pods
  first) while available pods stay at or above ``replicas - maxUnavailable``.
  maxSurge rounds up, maxUnavailable down, and when both come to 0
  maxUnavailable is 1 (defaults 25% and 25%). A new template whose pods
  never turn available therefore stops within the maxUnavailable budget and
  the old pods keep serving.
- **Recreate**: old ReplicaSets go to 0, the new one is created only once
  their pods are gone.
- **Scaling** (``replicas`` changed) is proportional across active
  ReplicaSets; **paused** Deployments scale but do not roll.
- **Revisions**: ``deployment.kubernetes.io/revision`` on each ReplicaSet
  (the new one gets max(old) + 1, also when an old template comes back) and
  on the Deployment; ``gitkube.io/revision-commit`` records the git commit
  that made each revision. Old ReplicaSets with no replicas beyond
  ``revisionHistoryLimit`` (default 10) are deleted, oldest first.
- **Status and conditions**: replicas, updated, ready, available,
  unavailable, observedGeneration; Available (MinimumReplicasAvailable),
  Progressing (NewReplicaSetCreated, FoundNewReplicaSet, ReplicaSetUpdated,
  NewReplicaSetAvailable; False with ProgressDeadlineExceeded after
  ``progressDeadlineSeconds`` without progress) and ReplicaFailure (copied
  from a ReplicaSet that cannot create pods).

Availability is counted from the pods (Ready for ``minReadySeconds``).
No I/O and no clock: ``now`` (unix seconds) is passed in.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from gitkube.api.annotations import DOMAIN, SOURCE_COMMIT
from gitkube.api.objects import (
    Deployment,
    DeploymentCondition,
    DeploymentStatus,
    IntOrString,
    LabelSelector,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetSpec,
)
from gitkube.api.rollout import (
    AVAILABLE,
    DESIRED_REPLICAS,
    FOUND_NEW_RS,
    MAX_REPLICAS,
    MINIMUM_REPLICAS_AVAILABLE,
    MINIMUM_REPLICAS_UNAVAILABLE,
    NEW_RS_AVAILABLE,
    NEW_RS_CREATED,
    PAUSED,
    POD_TEMPLATE_HASH,
    PROGRESSING,
    REPLICA_FAILURE,
    RESUMED,
    REVISION,
    REVISION_COMMIT,
    REVISION_HISTORY,
    RS_UPDATED,
    TIMED_OUT,
    desired_replicas,
    revision_of,
)
from gitkube.api.serde import to_dict
from gitkube.planner.replication import (
    TERMINAL_PHASES,
    format_time,
    is_available,
    owned_by,
    parse_time,
)

#: annotations of the Deployment never copied to its ReplicaSets
_NOT_COPIED_PREFIXES = (f"{DOMAIN}/", "deployment.kubernetes.io/")
_NOT_COPIED = frozenset({"kubectl.kubernetes.io/last-applied-configuration"})

DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600

RECREATE = "Recreate"
ROLLING_UPDATE = "RollingUpdate"

#: safe-encoding alphabet of Kubernetes' rand.SafeEncodeString
_ALPHANUMS = "bcdfghjklmnpqrstvwxz2456789"


# ---------------------------------------------------------------- small helpers


def fnv32a(data: bytes, value: int = 0x811C9DC5) -> int:
    for byte in data:
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """Kubernetes' ``rand.SafeEncodeString``: each byte to a letter of an
    alphabet without vowels, so a hash never spells a word."""
    return "".join(_ALPHANUMS[b % len(_ALPHANUMS)] for b in text.encode())


def compute_hash(template: PodTemplateSpec, collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of ``template``, as Kubernetes' ComputeHash:
    FNV-32a over the template, then ``collisionCount`` as a little-endian
    uint32, written in decimal and safe-encoded. (Kubernetes feeds the hash
    a go-spew dump of the Go struct; gitkube feeds it canonical JSON.)"""
    data = json.dumps(to_dict(template), sort_keys=True, separators=(",", ":")).encode()
    value = fnv32a(data)
    if collision_count is not None:
        value = fnv32a((collision_count & 0xFFFFFFFF).to_bytes(4, "little"), value)
    return safe_encode(str(value))


def _template_without_hash(template: PodTemplateSpec) -> dict[str, object]:
    data = to_dict(template)
    labels = data.get("metadata", {}).get("labels")
    if labels is not None:
        labels.pop(POD_TEMPLATE_HASH, None)
        if not labels:
            del data["metadata"]["labels"]
        if not data["metadata"]:
            del data["metadata"]
    return data


def equal_ignore_hash(a: PodTemplateSpec, b: PodTemplateSpec) -> bool:
    return _template_without_hash(a) == _template_without_hash(b)


def scaled_value(value: IntOrString | None, total: int, *, round_up: bool, default: str) -> int:
    """An absolute count or a percentage of ``total``."""
    if value is None:
        value = default
    if isinstance(value, int) and not isinstance(value, bool):
        return max(value, 0)
    text = str(value).strip()
    try:
        if not text.endswith("%"):
            raise ValueError(text)
        percent = max(int(text[:-1]), 0)
    except ValueError:
        # validation refuses it before it gets here; never crash a controller on it
        return scaled_value(default, total, round_up=round_up, default=default)
    exact = percent * total
    return -(-exact // 100) if round_up else exact // 100


def _round_half_away(value: float) -> int:
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def rollout_limits(d: Deployment) -> tuple[int, int]:
    """(maxSurge, maxUnavailable) as counts: Kubernetes' ResolveFenceposts.

    Recreate has neither. When both come to 0, maxUnavailable is 1, so a
    rollout can always move; maxUnavailable is at most ``replicas``."""
    replicas = desired_replicas(d)
    if d.spec.strategy.type == RECREATE:
        return 0, 0
    rolling = d.spec.strategy.rolling_update
    surge = scaled_value(
        rolling.max_surge if rolling else None, replicas, round_up=True, default=DEFAULT_MAX_SURGE
    )
    unavailable = scaled_value(
        rolling.max_unavailable if rolling else None,
        replicas,
        round_up=False,
        default=DEFAULT_MAX_UNAVAILABLE,
    )
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, min(unavailable, replicas)


def progress_deadline(d: Deployment) -> int:
    seconds = d.spec.progress_deadline_seconds
    return DEFAULT_PROGRESS_DEADLINE_SECONDS if seconds is None else seconds


def rs_replicas(rs: ReplicaSet) -> int:
    return rs.spec.replicas if rs.spec.replicas is not None else 1


def _created_key(rs: ReplicaSet) -> tuple[str, str]:
    return (rs.metadata.creation_timestamp, rs.name)


def _controller_ref(d: Deployment) -> OwnerReference:
    return OwnerReference(
        api_version=d.api_version or "apps/v1",
        kind=d.KIND,
        name=d.name,
        uid=d.metadata.uid,
        controller=True,
    )


# ---------------------------------------------------------------- the plan


@dataclass
class ReplicaSetCounts:
    """What a ReplicaSet's pods are doing, counted from the pods."""

    pods: int = 0
    ready: int = 0
    available: int = 0
    #: pods not yet Succeeded or Failed (Recreate waits for these to be gone)
    running: int = 0


@dataclass
class DeploymentPlan:
    deployment: Deployment
    #: the new ReplicaSet to create (at most one)
    creates: list[ReplicaSet] = field(default_factory=list)
    #: ReplicaSets whose replicas, annotations or owner references change (copies)
    updates: list[ReplicaSet] = field(default_factory=list)
    #: old ReplicaSets beyond revisionHistoryLimit
    deletes: list[ReplicaSet] = field(default_factory=list)
    #: the Deployment's annotations and status after this pass
    annotations: dict[str, str] = field(default_factory=dict)
    status: DeploymentStatus = field(default_factory=DeploymentStatus)
    #: True when ``annotations`` or ``status`` differ from the stored Deployment
    deployment_changed: bool = False
    #: the name of the ReplicaSet of the current template ("" before it exists)
    new_rs_name: str = ""
    #: reconcile again after this many seconds (the progress deadline), if set
    requeue_after: float | None = None

    def has_rs_changes(self) -> bool:
        return bool(self.creates or self.updates or self.deletes)

    def __bool__(self) -> bool:
        return self.has_rs_changes() or self.deployment_changed


class _Planner:
    """One pass over one Deployment; the methods follow the controller's files."""

    def __init__(
        self, d: Deployment, replicasets: Sequence[ReplicaSet], pods: Sequence[Pod], now: float
    ) -> None:
        self.d = d
        self.now = now
        self.now_text = format_time(now)
        self.replicas = desired_replicas(d)
        self.surge, self.unavailable = rollout_limits(d)
        self.plan = DeploymentPlan(deployment=d, annotations=dict(d.metadata.annotations))
        self.conditions = [copy.copy(c) for c in d.status.conditions]
        self.collision_count = d.status.collision_count
        #: RS name -> the RS as it will be after this pass
        self.rs: dict[str, ReplicaSet] = {}
        self._changed: set[str] = set()
        self._created: set[str] = set()
        #: every ReplicaSet name in the namespace, ours or not (hash collisions)
        self._taken_names = {rs.name for rs in replicasets if rs.namespace == d.namespace}
        self._claim(replicasets)
        self._count(pods)

    # ------------------------------------------------------------ inputs

    def _claim(self, replicasets: Sequence[ReplicaSet]) -> None:
        """Kubernetes' ClaimReplicaSets: own matching RSes, adopt orphans, release others."""
        selector = self.d.spec.selector
        for rs in replicasets:
            if rs.namespace != self.d.namespace or rs.metadata.deletion_timestamp:
                continue
            matches = not selector.is_empty() and selector.matches(rs.metadata.labels)
            if owned_by(rs, self.d):
                if matches:
                    self.rs[rs.name] = rs
                else:
                    released = rs.copy()
                    released.metadata.owner_references = [
                        r for r in released.metadata.owner_references if not r.controller
                    ]
                    self.plan.updates.append(released)
            elif matches and rs.metadata.controller_ref() is None:
                adopted = rs.copy()
                adopted.metadata.owner_references.append(_controller_ref(self.d))
                self.rs[rs.name] = adopted
                self._changed.add(rs.name)

    def _count(self, pods: Sequence[Pod]) -> None:
        by_uid = {rs.metadata.uid: name for name, rs in self.rs.items() if rs.metadata.uid}
        self.counts: dict[str, ReplicaSetCounts] = {name: ReplicaSetCounts() for name in self.rs}
        min_ready = self.d.spec.min_ready_seconds
        for pod in pods:
            ref = pod.metadata.controller_ref()
            if ref is None or ref.kind != ReplicaSet.KIND or pod.namespace != self.d.namespace:
                continue
            name = by_uid.get(ref.uid) if ref.uid else ref.name
            if name is None or name not in self.counts:
                continue
            counts = self.counts[name]
            if pod.status.phase not in TERMINAL_PHASES:
                counts.running += 1
            if pod.metadata.deletion_timestamp or pod.status.phase in TERMINAL_PHASES:
                continue
            counts.pods += 1
            counts.ready += pod.is_ready()
            counts.available += is_available(pod, min_ready_seconds=min_ready, now=self.now)

    # ------------------------------------------------------------ helpers

    def _find_new(self) -> ReplicaSet | None:
        """The oldest RS whose template is the Deployment's (FindNewReplicaSet)."""
        for rs in sorted(self.rs.values(), key=_created_key):
            if equal_ignore_hash(rs.spec.template, self.d.spec.template):
                return rs
        return None

    def _old(self, new: ReplicaSet | None) -> list[ReplicaSet]:
        return sorted(
            (rs for rs in self.rs.values() if new is None or rs.name != new.name),
            key=_created_key,
        )

    def _edit(self, rs: ReplicaSet) -> ReplicaSet:
        """The copy of ``rs`` this pass changes."""
        if rs.name not in self._changed and rs.name not in self._created:
            rs = rs.copy()
            self.rs[rs.name] = rs
            self._changed.add(rs.name)
        return self.rs[rs.name]

    def _scale(self, rs: ReplicaSet, replicas: int) -> bool:
        """Kubernetes' scaleReplicaSet: size and the desired/max annotations."""
        max_replicas = self.replicas + self.surge
        ann = rs.metadata.annotations
        if (
            rs_replicas(rs) == replicas
            and ann.get(DESIRED_REPLICAS) == str(self.replicas)
            and ann.get(MAX_REPLICAS) == str(max_replicas)
        ):
            return False
        scaled = rs_replicas(rs) != replicas
        rs = self._edit(rs)
        rs.spec.replicas = replicas
        rs.metadata.annotations[DESIRED_REPLICAS] = str(self.replicas)
        rs.metadata.annotations[MAX_REPLICAS] = str(max_replicas)
        return scaled

    def _available(self, rses: Sequence[ReplicaSet]) -> int:
        return sum(self.counts[rs.name].available for rs in rses)

    def _available_after(self, rses: Sequence[ReplicaSet]) -> int:
        """Available pods that will remain once each RS is at its size: pods
        beyond it are deleted, least useful first, so at most this many
        available ones are left. Scale-down decisions use this bound."""
        return sum(min(self.counts[rs.name].available, rs_replicas(rs)) for rs in rses)

    def _spec_total(self, rses: Sequence[ReplicaSet]) -> int:
        return sum(rs_replicas(rs) for rs in rses)

    def _set_condition(self, wanted: DeploymentCondition) -> None:
        """Kubernetes' SetDeploymentCondition: same status and reason: unchanged."""
        current = next((c for c in self.conditions if c.type == wanted.type), None)
        if current is not None and current.status == wanted.status:
            if current.reason == wanted.reason:
                return
            wanted = replace(wanted, last_transition_time=current.last_transition_time)
        self.conditions = [c for c in self.conditions if c.type != wanted.type] + [wanted]

    def _condition(self, type_: str, status: str, reason: str, message: str) -> DeploymentCondition:
        return DeploymentCondition(
            type=type_,
            status=status,
            reason=reason,
            message=message,
            last_update_time=self.now_text,
            last_transition_time=self.now_text,
        )

    def _get_condition(self, type_: str) -> DeploymentCondition | None:
        return next((c for c in self.conditions if c.type == type_), None)

    def _remove_condition(self, type_: str) -> None:
        self.conditions = [c for c in self.conditions if c.type != type_]

    # ------------------------------------------------------------ new RS, revisions

    def _sync_revision(self, create: bool) -> tuple[ReplicaSet | None, list[ReplicaSet]]:
        """getAllReplicaSetsAndSyncRevision: the new RS (created when asked)
        with its revision, and the old ones."""
        new = self._find_new()
        old = self._old(new)
        max_old = max((revision_of(rs) for rs in old), default=0)
        next_revision = max_old + 1
        commit = self.d.metadata.annotations.get(SOURCE_COMMIT, "")
        if new is not None:
            current = revision_of(new)
            if current < next_revision:
                new = self._edit(new)
                ann = new.metadata.annotations
                if current > 0:
                    history = [h for h in ann.get(REVISION_HISTORY, "").split(",") if h]
                    ann[REVISION_HISTORY] = ",".join([*history, str(current)])
                ann[REVISION] = str(next_revision)
                if commit:
                    ann[REVISION_COMMIT] = commit
            if new.spec.min_ready_seconds != self.d.spec.min_ready_seconds:
                self._edit(new).spec.min_ready_seconds = self.d.spec.min_ready_seconds
            if self._get_condition(PROGRESSING) is None:
                self._set_condition(
                    self._condition(
                        PROGRESSING, "True", FOUND_NEW_RS, f'Found new replica set "{new.name}"'
                    )
                )
        elif create:
            new = self._create_new(next_revision, commit, old)
        if new is not None:
            self.plan.new_rs_name = new.name
            self.plan.annotations[REVISION] = new.metadata.annotations.get(REVISION, "")
        return new, old

    def _create_new(self, revision: int, commit: str, old: list[ReplicaSet]) -> ReplicaSet | None:
        template = copy.deepcopy(self.d.spec.template)
        hash_ = compute_hash(template, self.collision_count)
        name = f"{self.d.name}-{hash_}"
        if name in self._taken_names or name in self.rs:
            # a ReplicaSet of another template has this name: hash again next time
            self.collision_count = (self.collision_count or 0) + 1
            self.plan.requeue_after = 0.0
            return None
        template.metadata.labels[POD_TEMPLATE_HASH] = hash_
        selector = LabelSelector(
            match_labels={**self.d.spec.selector.match_labels, POD_TEMPLATE_HASH: hash_},
            match_expressions=copy.deepcopy(self.d.spec.selector.match_expressions),
        )
        annotations = {
            k: v
            for k, v in self.d.metadata.annotations.items()
            if k not in _NOT_COPIED and not k.startswith(_NOT_COPIED_PREFIXES)
        }
        annotations[REVISION] = str(revision)
        annotations[DESIRED_REPLICAS] = str(self.replicas)
        annotations[MAX_REPLICAS] = str(self.replicas + self.surge)
        if commit:
            annotations[REVISION_COMMIT] = commit
        rs = ReplicaSet(
            metadata=ObjectMeta(
                name=name,
                namespace=self.d.namespace,
                labels=dict(template.metadata.labels),
                annotations=annotations,
                owner_references=[_controller_ref(self.d)],
                creation_timestamp=self.now_text,
            ),
            spec=ReplicaSetSpec(
                replicas=self._new_replicas(None, old),
                selector=selector,
                template=template,
                min_ready_seconds=self.d.spec.min_ready_seconds,
            ),
        )
        self.rs[name] = rs
        self.counts[name] = ReplicaSetCounts()
        self._created.add(name)
        self._set_condition(
            self._condition(
                PROGRESSING, "True", NEW_RS_CREATED, f'Created new replica set "{name}"'
            )
        )
        return rs

    def _new_replicas(self, new: ReplicaSet | None, old: list[ReplicaSet]) -> int:
        """NewRSNewReplicas: how big the new RS may be now."""
        current_new = rs_replicas(new) if new is not None else 0
        if self.d.spec.strategy.type == RECREATE:
            return self.replicas
        total = self._spec_total(old) + current_new
        max_total = self.replicas + self.surge
        if total >= max_total:
            return current_new
        return current_new + max(0, min(max_total - total, self.replicas - current_new))

    # ------------------------------------------------------------ strategies

    def rolling(self) -> None:
        new, old = self._sync_revision(create=True)
        if new is None:
            self._rollout_status(None, old)
            return
        all_rs = [*old, new]
        if new.name not in self._created:
            if rs_replicas(new) > self.replicas:
                self._scale(new, self.replicas)
            elif rs_replicas(new) < self.replicas:
                self._scale(new, self._new_replicas(new, old))
            new = self.rs[new.name]
            all_rs = [*old, new]
        self._reconcile_old(all_rs, [rs for rs in old if rs_replicas(rs) > 0], new)
        old = [self.rs[rs.name] for rs in old]
        if self._complete(new):
            self._cleanup(old)
        self._rollout_status(new, old)

    def _reconcile_old(
        self, all_rs: list[ReplicaSet], old_active: list[ReplicaSet], new: ReplicaSet
    ) -> None:
        """reconcileOldReplicaSets: scale old RSes down within maxUnavailable."""
        if self._spec_total(old_active) == 0:
            return
        min_available = self.replicas - self.unavailable
        new_unavailable = max(rs_replicas(new) - self._available_after([new]), 0)
        max_scaled_down = self._spec_total(all_rs) - min_available - new_unavailable
        if max_scaled_down <= 0:
            return
        # unhealthy replicas first (cleanupUnhealthyReplicas), oldest RS first
        cleaned = 0
        for rs in sorted(old_active, key=_created_key):
            if cleaned >= max_scaled_down:
                break
            rs = self.rs[rs.name]
            unhealthy = rs_replicas(rs) - self._available_after([rs])
            if unhealthy <= 0:
                continue
            down = min(max_scaled_down - cleaned, unhealthy)
            self._scale(rs, rs_replicas(rs) - down)
            cleaned += down
        # then healthy ones, while availability stays at minAvailable
        # (scaleDownOldReplicaSetsForRollingUpdate)
        available = self._available_after([self.rs[rs.name] for rs in all_rs])
        budget = available - min_available
        if budget <= 0:
            return
        done = 0
        for rs in sorted(old_active, key=_created_key):
            rs = self.rs[rs.name]
            if done >= budget or rs_replicas(rs) == 0:
                continue
            down = min(rs_replicas(rs), budget - done)
            self._scale(rs, rs_replicas(rs) - down)
            done += down

    def recreate(self) -> None:
        new, old = self._sync_revision(create=False)
        scaled = False
        for rs in old:
            if rs_replicas(rs) > 0:
                scaled = self._scale(rs, 0) or scaled
        old = [self.rs[rs.name] for rs in old]
        if scaled or any(self.counts[rs.name].running for rs in old):
            self._rollout_status(new, old)
            return
        if new is None:
            new = self._create_new(
                max((revision_of(rs) for rs in old), default=0) + 1,
                self.d.metadata.annotations.get(SOURCE_COMMIT, ""),
                old,
            )
            if new is not None:
                self.plan.new_rs_name = new.name
                self.plan.annotations[REVISION] = new.metadata.annotations[REVISION]
        elif rs_replicas(new) != self.replicas:
            self._scale(new, self.replicas)
            new = self.rs[new.name]
        if new is not None and self._complete(new):
            self._cleanup(old)
        self._rollout_status(new, old)

    def scaling_event(self) -> bool:
        """isScalingEvent: an active RS was sized for another ``replicas``."""
        for rs in self.rs.values():
            if rs_replicas(rs) <= 0:
                continue
            desired = rs.metadata.annotations.get(DESIRED_REPLICAS)
            if desired is not None and desired != str(self.replicas):
                return True
        return False

    def sync(self) -> None:
        """Kubernetes' ``sync``: scale (paused or a scaling event), no rollout."""
        new, old = self._sync_revision(create=False)
        self._scale_all(new, old)
        old = [self.rs[rs.name] for rs in old]
        new = self.rs[new.name] if new is not None else None
        if self.d.spec.paused:
            self._cleanup(old)
        self._status(new, old)

    def _scale_all(self, new: ReplicaSet | None, old: list[ReplicaSet]) -> None:
        active = [rs for rs in ([new] if new else []) + old if rs_replicas(rs) > 0]
        if len(active) <= 1:
            target = active[0] if active else new or (old[-1] if old else None)
            if target is not None:
                self._scale(target, self.replicas)
            return
        if (
            new is not None
            and rs_replicas(new) == self.replicas
            and self.counts[new.name].available >= self.replicas
        ):
            for rs in old:
                if rs_replicas(rs) > 0:
                    self._scale(rs, 0)
            return
        if self.d.spec.strategy.type != ROLLING_UPDATE:
            return
        allowed = self.replicas + self.surge if self.replicas > 0 else 0
        to_add = allowed - self._spec_total(active)
        if to_add > 0:
            ordered = sorted(active, key=lambda r: (rs_replicas(r), _created_key(r)), reverse=True)
        else:
            ordered = sorted(active, key=lambda r: (-rs_replicas(r), _created_key(r)))
        added = 0
        sizes: dict[str, int] = {}
        for rs in ordered:
            proportion = 0
            if to_add != 0:
                try:
                    annotated = int(rs.metadata.annotations.get(MAX_REPLICAS, ""))
                except ValueError:
                    annotated = self.d.status.replicas or 1
                annotated = annotated or 1
                fraction = _round_half_away(rs_replicas(rs) * allowed / annotated) - rs_replicas(rs)
                allowed_left = to_add - added
                proportion = (
                    min(fraction, allowed_left) if to_add > 0 else max(fraction, allowed_left)
                )
            sizes[rs.name] = rs_replicas(rs) + proportion
            added += proportion
        if ordered and to_add != added:
            first = ordered[0].name
            sizes[first] = sizes[first] + to_add - added
        for rs in ordered:
            self._scale(rs, max(sizes[rs.name], 0))

    # ------------------------------------------------------------ clean-up

    def _cleanup(self, old: list[ReplicaSet]) -> None:
        """Delete old RSes with no replicas beyond revisionHistoryLimit, oldest revision first."""
        limit = self.d.spec.revision_history_limit
        limit = DEFAULT_REVISION_HISTORY_LIMIT if limit is None else limit
        diff = len(old) - limit
        if diff <= 0:
            return
        for rs in sorted(old, key=lambda r: (revision_of(r), _created_key(r)))[:diff]:
            rs = self.rs[rs.name]
            if rs_replicas(rs) != 0 or self.counts[rs.name].pods != 0:
                continue
            self.plan.deletes.append(rs)
            self._changed.discard(rs.name)

    # ------------------------------------------------------------ status

    def _complete(self, new: ReplicaSet) -> bool:
        counts = self.counts[new.name]
        total = sum(c.pods for c in self.counts.values())
        return (
            rs_replicas(new) == self.replicas
            and counts.pods == self.replicas
            and total == self.replicas
            and counts.available == self.replicas
        )

    def _calculate(self, new: ReplicaSet | None, old: list[ReplicaSet]) -> DeploymentStatus:
        all_rs = ([new] if new else []) + old
        available = self._available(all_rs)
        status = DeploymentStatus(
            observed_generation=self.d.metadata.generation,
            replicas=sum(self.counts[rs.name].pods for rs in all_rs),
            updated_replicas=self.counts[new.name].pods if new else 0,
            ready_replicas=sum(self.counts[rs.name].ready for rs in all_rs),
            available_replicas=available,
            unavailable_replicas=max(self._spec_total(all_rs) - available, 0),
            collision_count=self.collision_count,
        )
        if available >= self.replicas - self.unavailable:
            self._set_condition(
                self._condition(
                    AVAILABLE,
                    "True",
                    MINIMUM_REPLICAS_AVAILABLE,
                    "Deployment has minimum availability.",
                )
            )
        else:
            self._set_condition(
                self._condition(
                    AVAILABLE,
                    "False",
                    MINIMUM_REPLICAS_UNAVAILABLE,
                    "Deployment does not have minimum availability.",
                )
            )
        return status

    def _status(self, new: ReplicaSet | None, old: list[ReplicaSet]) -> None:
        """syncDeploymentStatus (paused, scaling): counts, Available, pause conditions."""
        status = self._calculate(new, old)
        cond = self._get_condition(PROGRESSING)
        if self.d.spec.paused and (cond is None or cond.reason != PAUSED):
            self._set_condition(
                self._condition(PROGRESSING, "Unknown", PAUSED, "Deployment is paused")
            )
        self._finish(status)

    def _rollout_status(self, new: ReplicaSet | None, old: list[ReplicaSet]) -> None:
        """syncRolloutStatus: counts, Available, Progressing, ReplicaFailure."""
        previous = self.d.status
        cond = self._get_condition(PROGRESSING)
        if cond is not None and cond.reason == PAUSED:
            self._set_condition(
                self._condition(PROGRESSING, "Unknown", RESUMED, "Deployment is resumed")
            )
            cond = self._get_condition(PROGRESSING)
        status = self._calculate(new, old)
        deadline = progress_deadline(self.d)
        name = f'ReplicaSet "{new.name}"' if new else f'Deployment "{self.d.name}"'
        complete = (
            status.updated_replicas == self.replicas
            and status.replicas == self.replicas
            and status.available_replicas == self.replicas
            and new is not None
            and rs_replicas(new) == self.replicas
        )
        already_complete = (
            status.replicas == status.updated_replicas
            and cond is not None
            and cond.reason == NEW_RS_AVAILABLE
        )
        if not already_complete:
            prev_old = previous.replicas - previous.updated_replicas
            progressing = (
                # a new spec (a fix, a rollback) after a timed-out rollout restarts
                # the deadline, even when it finds an existing ReplicaSet and no
                # count moves yet
                (
                    previous.observed_generation < self.d.metadata.generation
                    and cond is not None
                    and cond.reason == TIMED_OUT
                )
                or status.updated_replicas > previous.updated_replicas
                or status.replicas - status.updated_replicas < prev_old
                or status.ready_replicas > previous.ready_replicas
                or status.available_replicas > previous.available_replicas
            )
            if complete:
                self._set_condition(
                    self._condition(
                        PROGRESSING,
                        "True",
                        NEW_RS_AVAILABLE,
                        f"{name} has successfully progressed.",
                    )
                )
            elif progressing:
                wanted = self._condition(PROGRESSING, "True", RS_UPDATED, f"{name} is progressing.")
                if cond is not None and cond.status == "True":
                    wanted.last_transition_time = cond.last_transition_time
                self.conditions = [c for c in self.conditions if c.type != PROGRESSING] + [wanted]
            elif self._timed_out(deadline):
                self._set_condition(
                    self._condition(
                        PROGRESSING, "False", TIMED_OUT, f"{name} has timed out progressing."
                    )
                )
        cond = self._get_condition(PROGRESSING)
        if cond is not None and cond.status == "True" and cond.reason != NEW_RS_AVAILABLE:
            since = parse_time(cond.last_update_time)
            if since is not None:
                left = max(since + deadline - self.now, 0.0) + 1.0
                if self.plan.requeue_after is None or left < self.plan.requeue_after:
                    self.plan.requeue_after = left
        failure = self._replica_failure(new, old)
        if failure is not None:
            self._set_condition(failure)
        else:
            self._remove_condition(REPLICA_FAILURE)
        self._finish(status)

    def _timed_out(self, deadline: int) -> bool:
        cond = self._get_condition(PROGRESSING)
        if cond is None or cond.reason == NEW_RS_AVAILABLE:
            return False
        if cond.reason == TIMED_OUT:
            return True
        since = parse_time(cond.last_update_time)
        return since is not None and since + deadline < self.now

    def _replica_failure(
        self, new: ReplicaSet | None, old: list[ReplicaSet]
    ) -> DeploymentCondition | None:
        for rs in ([new] if new else []) + old:
            for c in rs.status.conditions:
                if c.type == REPLICA_FAILURE and c.status == "True":
                    return DeploymentCondition(
                        type=REPLICA_FAILURE,
                        status="True",
                        reason=c.reason,
                        message=f'ReplicaSet "{rs.name}": {c.message}',
                        last_update_time=self.now_text,
                        last_transition_time=c.last_transition_time or self.now_text,
                    )
        return None

    def _finish(self, status: DeploymentStatus) -> None:
        status.conditions = self.conditions
        plan = self.plan
        plan.status = status
        for name in sorted(self._changed):
            if name not in self._created and name in self.rs:
                plan.updates.append(self.rs[name])
        plan.creates = [self.rs[name] for name in sorted(self._created)]
        plan.deployment_changed = (
            status != self.d.status or plan.annotations != self.d.metadata.annotations
        )


def plan_deployment(
    deployment: Deployment,
    replicasets: Sequence[ReplicaSet],
    pods: Sequence[Pod],
    now: float,
) -> DeploymentPlan:
    """What must change for ``deployment``'s ReplicaSets to follow its spec.

    ``replicasets`` and ``pods``: those of the Deployment's namespace (others
    are ignored). Applying the plan, then planning again with the same pods,
    changes nothing more than the rollout allows.
    """
    planner = _Planner(deployment, replicasets, pods, now)
    if deployment.spec.selector.is_empty():
        planner._status(None, [])
        return planner.plan
    if deployment.spec.paused or planner.scaling_event():
        planner.sync()
    elif deployment.spec.strategy.type == RECREATE:
        planner.recreate()
    else:
        planner.rolling()
    return planner.plan
