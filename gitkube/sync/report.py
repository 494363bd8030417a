"""The status report: what `gitkube status`, ``/api/v1/status`` and the git
write-back show, built from the store alone (so it works while the operator
is down).

``build_status_report`` reads the store; ``compose_status_report`` is the
pure part that turns what was read into a ``StatusReport``:

- the sync state: repository, synced revision and its age, phase (Synced,
  OutOfSync, Failed, Suspended), the last errors with file:line;
- each object declared in git with its sync state and health (Missing when
  it is absent from the store), replicas ready/desired for RCs, endpoints
  for Services; the nodes with their health;
- the sync history, the webhook delivery log and the last write-back.

``StatusReport.fingerprint()`` hashes the outcome only (no times, no ages,
no history), so the write-back can tell whether the outcome changed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from gitkube.api import annotations as ann
from gitkube.api.keys import (
    DELIVERIES_KEY,
    PROXY_STATUS_PREFIX,
    STATUS_WRITEBACK_KEY,
    SYNC_CONTROL_KEY,
    SYNC_HISTORY_KEY,
    SYNC_STATE_KEY,
    parse_key,
    resource_prefix,
)
from gitkube.api.objects import (
    KINDS,
    ApiObject,
    Deployment,
    Endpoints,
    Node,
    Pod,
    ReplicaSet,
    ReplicationController,
    Secret,
    Service,
)
from gitkube.api.redact import SCRUBBER, remember_secret
from gitkube.api.rollout import REVISION, desired_replicas
from gitkube.api.serde import camel
from gitkube.control import Cache
from gitkube.store.base import KeyValue, Store
from gitkube.store.objects import ObjectStore, decode
from gitkube.sync.health import (
    HEALTHY,
    UNKNOWN,
    assess_health,
    not_acted_on,
    pod_problem,
    ready_endpoint_count,
    worst,
)
from gitkube.sync.state import (
    ObjectSyncStatus,
    SyncControl,
    SyncError,
    SyncRecord,
    SyncState,
    history_from_json,
)

log = logging.getLogger(__name__)

#: the most webhook deliveries a report carries (the operator keeps 50)
DELIVERY_LOG_LENGTH = 50
STATUS_FILE_API_VERSION = "gitkube.io/v1"

ObjectId = tuple[str, str, str]  # kind, namespace, name


# ---------------------------------------------------------------- credentials


_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)[^/@\s]+@")


def redact(text: str, *urls: str) -> str:
    """``text`` with the user:password part of every URL removed, and any
    secret from ``urls`` masked wherever else it appears."""
    for url in urls:
        try:
            parts = urlsplit(url)
        except ValueError:
            continue
        for secret in (parts.password, parts.username):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
    return _USERINFO.sub(lambda m: m["scheme"], text)


# ---------------------------------------------------------------- time


def parse_time(text: str) -> datetime | None:
    """An ISO-8601 time (``Z`` or an offset; naive means UTC), or None."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def format_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def age_seconds(since: str, now: datetime) -> float | None:
    start = parse_time(since)
    return None if start is None else max(0.0, (now - start).total_seconds())


def human_duration(seconds: float | None) -> str:
    """kubectl's AGE format: 45s, 5m30s, 42m, 3h20m, 20h, 2d4h, 40d, 2y30d."""
    if seconds is None:
        return "<unknown>"
    s = int(seconds)
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        return f"{minutes}m{s % 60}s" if s % 60 else f"{minutes}m"
    if minutes < 180:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        return f"{hours}h{minutes % 60}m" if minutes % 60 else f"{hours}h"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d{hours % 24}h" if hours % 24 else f"{hours // 24}d"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        return f"{hours // (24 * 365)}y{days}d" if days else f"{hours // (24 * 365)}y"
    return f"{hours // (24 * 365)}y"


# ---------------------------------------------------------------- report parts


@dataclass
class ObjectReport:
    kind: str
    namespace: str
    name: str
    path: str = ""
    #: "Synced" | "OutOfSync" | "Failed" | "Unknown"
    sync: str = "Synced"
    health: str = HEALTHY
    message: str = ""
    replicas_ready: int | None = None
    replicas_desired: int | None = None
    endpoints: int | None = None
    #: Deployments: replicas on the current template, available, and the revision
    replicas_updated: int | None = None
    replicas_available: int | None = None
    revision: str = ""
    #: a Service's allocated cluster IP
    cluster_ip: str = ""

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "kind": self.kind,
            "namespace": self.namespace,
            "name": self.name,
            "path": self.path,
            "sync": self.sync,
            "health": self.health,
            "message": self.message,
        }
        if self.replicas_desired is not None:
            data["replicas"] = {"ready": self.replicas_ready, "desired": self.replicas_desired}
            if self.replicas_updated is not None:
                data["replicas"]["updated"] = self.replicas_updated
            if self.replicas_available is not None:
                data["replicas"]["available"] = self.replicas_available
        if self.revision:
            data["revision"] = self.revision
        if self.endpoints is not None:
            data["endpoints"] = self.endpoints
        if self.cluster_ip:
            data["clusterIP"] = self.cluster_ip
        return data


@dataclass
class WritebackOutcome:
    """The last status write-back to git, as recorded in the store."""

    time: str
    #: "Committed" | "Unchanged" | "Failed"
    outcome: str
    branch: str = ""
    commit: str = ""
    #: why it failed (credentials removed)
    error: str = ""
    #: status-branch commits gitkube did not sign (with --status-signing-key)
    unsigned_commits: list[str] = field(default_factory=list)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> WritebackOutcome:
        data = json.loads(raw)
        keys = ("time", "outcome", "branch", "commit", "error", "unsigned_commits")
        return cls(**{k: data[k] for k in keys if k in data})


def error_to_dict(err: SyncError) -> dict[str, Any]:
    return {
        "file": err.file,
        "line": err.line,
        "kind": err.kind,
        "name": err.name,
        "field": err.field,
        "message": err.message,
        "location": f"{err.file}:{err.line}" if err.file else "",
        "text": str(err),
    }


def _camel_dict(data: Mapping[str, Any]) -> dict[str, Any]:
    return {camel(k): v for k, v in data.items()}


@dataclass
class StatusReport:
    generated_at: str
    phase: str = "Unknown"
    repo: str = ""
    ref: str = ""
    path: str = ""
    revision: str = ""
    synced_at: str = ""
    age_seconds: float | None = None
    attempted_revision: str = ""
    attempted_at: str = ""
    message: str = ""
    suspended: bool = False
    #: the synced commit's message, author and time
    commit: dict[str, str] = field(default_factory=dict)
    #: the worst health among the objects declared in git
    health: str = HEALTHY
    objects: list[ObjectReport] = field(default_factory=list)
    nodes: list[ObjectReport] = field(default_factory=list)
    errors: list[SyncError] = field(default_factory=list)
    history: list[SyncRecord] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    writeback: WritebackOutcome | None = None
    #: the revision signature verification refused last (commit, signer, reason, path)
    refusal: dict[str, str] = field(default_factory=dict)

    def health_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for obj in self.objects:
            counts[obj.health] = counts.get(obj.health, 0) + 1
        return counts

    def to_dict(self) -> dict[str, Any]:
        """The content of `gitkube status -o json` and ``/api/v1/status``."""
        return {
            "generatedAt": self.generated_at,
            "source": {"repo": self.repo, "ref": self.ref, "path": self.path},
            "sync": {
                "phase": self.phase,
                "revision": self.revision,
                "syncedAt": self.synced_at,
                "ageSeconds": self.age_seconds,
                "age": human_duration(self.age_seconds) if self.synced_at else "",
                "attemptedRevision": self.attempted_revision,
                "attemptedAt": self.attempted_at,
                "message": self.message,
                "suspended": self.suspended,
                **({"refusal": dict(self.refusal)} if self.refusal else {}),
                "commit": dict(self.commit),
            },
            "health": {"status": self.health, "counts": self.health_counts()},
            "objects": [o.to_dict() for o in self.objects],
            "nodes": [n.to_dict() for n in self.nodes],
            "errors": [error_to_dict(e) for e in self.errors],
            "history": [_camel_dict(asdict(r)) for r in self.history],
            "deliveries": list(self.deliveries),
            "writeback": _camel_dict(asdict(self.writeback)) if self.writeback else None,
        }

    def status_file(self) -> dict[str, Any]:
        """The content of ``status.json`` on the status branch."""
        return {
            "apiVersion": STATUS_FILE_API_VERSION,
            "kind": "SyncStatus",
            "generatedAt": self.generated_at,
            "source": {"repo": self.repo, "ref": self.ref, "path": self.path},
            "revision": self.revision,
            "syncedAt": self.synced_at,
            "attemptedRevision": self.attempted_revision,
            "phase": self.phase,
            "message": self.message,
            "health": self.health,
            "objects": [o.to_dict() for o in self.objects],
            "errors": [error_to_dict(e) for e in self.errors],
            **({"refusal": dict(self.refusal)} if self.refusal else {}),
        }

    def fingerprint(self) -> str:
        return status_fingerprint(self.status_file())


#: fields of status.json that change with time alone, not with the outcome
VOLATILE_STATUS_FIELDS = frozenset({"generatedAt", "syncedAt", "message"})


def status_fingerprint(status_file: Mapping[str, Any]) -> str:
    """A hash of a ``status.json`` content without its times (and the free-text
    sync message, which may carry durations): equal fingerprints mean the
    outcome did not change."""
    outcome = {k: v for k, v in status_file.items() if k not in VOLATILE_STATUS_FIELDS}
    canonical = json.dumps(outcome, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------- composing (pure)


@dataclass
class ClusterSnapshot:
    """The live objects a report needs, as read from the store."""

    objects: dict[ObjectId, ApiObject] = field(default_factory=dict)
    #: (namespace, name) of a Service -> its Endpoints
    endpoints: dict[tuple[str, str], Endpoints] = field(default_factory=dict)
    #: (namespace, name) of a Service -> problems the proxy recorded for it
    proxy_errors: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    #: (namespace, name) of a ReplicationController -> its pods (those decoded)
    controlled_pods: dict[tuple[str, str], list[Pod]] = field(default_factory=dict)
    #: (namespace, name) of a ReplicaSet -> its pods (those decoded)
    replicaset_pods: dict[tuple[str, str], list[Pod]] = field(default_factory=dict)
    #: (namespace, name) of a Deployment -> its ReplicaSets
    deployment_replicasets: dict[tuple[str, str], list[ReplicaSet]] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        items: Iterable[ApiObject],
        *,
        proxy_errors: Mapping[tuple[str, str], list[str]] | None = None,
    ) -> ClusterSnapshot:
        snap = cls(proxy_errors=dict(proxy_errors or {}))
        for obj in items:
            if isinstance(obj, Endpoints):
                snap.endpoints[(obj.namespace, obj.name)] = obj
            if isinstance(obj, Pod):
                ref = obj.metadata.controller_ref()
                if ref is not None and ref.kind == ReplicationController.KIND:
                    snap.controlled_pods.setdefault((obj.namespace, ref.name), []).append(obj)
                if ref is not None and ref.kind == ReplicaSet.KIND:
                    snap.replicaset_pods.setdefault((obj.namespace, ref.name), []).append(obj)
            if isinstance(obj, ReplicaSet):
                ref = obj.metadata.controller_ref()
                if ref is not None and ref.kind == Deployment.KIND:
                    snap.deployment_replicasets.setdefault((obj.namespace, ref.name), []).append(
                        obj
                    )
            snap.objects[(obj.KIND, obj.namespace, obj.name)] = obj
        return snap


def _is_managed(obj: ApiObject) -> bool:
    return obj.metadata.annotations.get(ann.MANAGED_BY) == ann.MANAGED_BY_VALUE


def _scope(kind: str, namespace: str) -> str:
    """The namespace an object of ``kind`` is found under: none for the
    cluster-scoped kinds (Node, Namespace), ``default`` when a namespaced
    kind's record has none; kinds gitkube only stores keep theirs."""
    cls = KINDS.get(kind)
    if cls is None:
        return namespace
    return (namespace or "default") if cls.NAMESPACED else ""


def object_report(
    declared: ObjectSyncStatus, live: ApiObject | None, snapshot: ClusterSnapshot
) -> ObjectReport:
    namespace = _scope(declared.kind, declared.namespace)
    endpoints = snapshot.endpoints.get((namespace, declared.name))
    if declared.kind not in KINDS:
        # stored, not run (--unsupported-kinds store); the report does not read them
        health = not_acted_on(declared.kind)
    else:
        health = assess_health(
            live,
            endpoints=endpoints,
            proxy_errors=snapshot.proxy_errors.get((namespace, declared.name), ()),
        )
    report = ObjectReport(
        kind=declared.kind,
        namespace=namespace,
        name=declared.name,
        path=declared.path,
        sync=declared.sync,
        health=health.status,
        message=health.message,
    )
    if declared.kind == "ReplicationController" and isinstance(live, ReplicationController):
        report.replicas_ready = live.status.ready_replicas
        report.replicas_desired = live.spec.replicas
        if health.status != HEALTHY:
            why = _pod_problems(snapshot.controlled_pods.get((namespace, declared.name), []))
            report.message = "; ".join(m for m in (report.message, why) if m)
    if declared.kind == "Deployment" and isinstance(live, Deployment):
        report.replicas_ready = live.status.ready_replicas
        report.replicas_desired = desired_replicas(live)
        report.replicas_updated = live.status.updated_replicas
        report.replicas_available = live.status.available_replicas
        report.revision = live.metadata.annotations.get(REVISION, "")
        if health.status != HEALTHY:
            # why the pods of the current revision are not serving
            current = [
                rs
                for rs in snapshot.deployment_replicasets.get((namespace, declared.name), [])
                if rs.metadata.annotations.get(REVISION) == report.revision
            ]
            pods = [
                p for rs in current for p in snapshot.replicaset_pods.get((namespace, rs.name), [])
            ]
            why = _pod_problems(pods)
            report.message = "; ".join(m for m in (report.message, why) if m)
    if declared.kind == "ReplicaSet" and isinstance(live, ReplicaSet):
        report.replicas_ready = live.status.ready_replicas
        report.replicas_desired = live.spec.replicas if live.spec.replicas is not None else 1
    if declared.kind == "Service" and isinstance(live, Service):
        report.endpoints = ready_endpoint_count(endpoints)
        if not live.spec.headless:
            report.cluster_ip = live.spec.cluster_ip
    if isinstance(live, Pod) and live.spec.containers and not report.message:
        ready = sum(1 for cs in live.status.container_statuses if cs.ready)
        report.message = f"{ready}/{len(live.spec.containers)} containers ready"
    return report


#: pods of a controller whose problems are spelled out in its message
POD_PROBLEMS_SHOWN = 3


def _pod_problems(pods: Sequence[Pod]) -> str:
    problems = [(p.name, pod_problem(p)) for p in sorted(pods, key=lambda p: p.name)]
    problems = [(name, why) for name, why in problems if why]
    text = "; ".join(f"pod {name}: {why}" for name, why in problems[:POD_PROBLEMS_SHOWN])
    more = len(problems) - POD_PROBLEMS_SHOWN
    return text + (f" (and {more} more pods)" if more > 0 else "")


def _declared_objects(state: SyncState | None, snapshot: ClusterSnapshot) -> list[ObjectSyncStatus]:
    if state is not None and state.objects:
        return list(state.objects)
    # no per-object record (none yet, or too many objects for the state key):
    # what the sync created is what git declared
    synced = state is not None and state.phase == "Synced"
    return [
        ObjectSyncStatus(
            kind=obj.KIND,
            namespace=obj.namespace,
            name=obj.name,
            path=obj.metadata.annotations.get(ann.SOURCE_PATH, ""),
            sync="Synced" if synced else "Unknown",
        )
        for obj in snapshot.objects.values()
        if _is_managed(obj)
    ]


def compose_status_report(
    state: SyncState | None,
    snapshot: ClusterSnapshot,
    *,
    now: datetime,
    history: Sequence[SyncRecord] = (),
    deliveries: Sequence[Mapping[str, Any]] = (),
    writeback: WritebackOutcome | None = None,
    control: SyncControl | None = None,
) -> StatusReport:
    """The report for a sync state and a snapshot of the cluster (pure)."""
    report = StatusReport(
        generated_at=format_time(now),
        history=list(history),
        deliveries=[dict(d) for d in deliveries][-DELIVERY_LOG_LENGTH:],
        writeback=writeback,
    )
    if state is None:
        report.message = "no sync has run yet"
    else:
        report.repo, report.ref, report.path = redact(state.repo), state.ref, state.path
        report.revision = state.revision
        report.synced_at = state.synced_at
        report.age_seconds = age_seconds(state.synced_at, now)
        report.attempted_revision = state.attempted_revision
        report.attempted_at = state.attempted_at
        report.phase = state.phase
        report.message = state.message
        report.errors = list(state.errors)
        report.suspended = state.suspended
        report.refusal = dict(state.refusal)
        report.commit = dict(state.commit)
    if control is not None and control.suspended and not report.suspended:
        # suspended since the last pass: the loop has not recorded it yet
        report.message = "sync is suspended" + (f": {control.reason}" if control.reason else "")
    if report.suspended or (control is not None and control.suspended):
        report.suspended = True
        report.phase = "Suspended"
    declared = _declared_objects(state, snapshot)
    report.objects = sorted(
        (
            object_report(
                d,
                snapshot.objects.get((d.kind, _scope(d.kind, d.namespace), d.name)),
                snapshot,
            )
            for d in declared
        ),
        key=lambda o: (o.path, o.kind, o.namespace, o.name),
    )
    report.nodes = [
        object_report(ObjectSyncStatus(kind="Node", namespace="", name=obj.name), obj, snapshot)
        for obj in sorted(
            (o for o in snapshot.objects.values() if isinstance(o, Node)), key=lambda n: n.name
        )
    ]
    for node in report.nodes:
        node.sync = ""
    report.health = worst(o.health for o in report.objects) if report.objects else UNKNOWN
    if not report.objects and state is not None and state.revision:
        report.health = HEALTHY  # a revision that declares nothing is trivially healthy
    # no Secret value this process knows reaches status, status.json, STATUS.md
    # or the status API, whatever message carried it
    scrubbed: StatusReport = SCRUBBER.scrub_object(report)
    return scrubbed


# ---------------------------------------------------------------- reading the store


def parse_proxy_errors(kvs: Iterable[KeyValue]) -> dict[tuple[str, str], list[str]]:
    """Problems the proxy recorded, by Service.

    Keys are ``PROXY_STATUS_PREFIX + <node>/<namespace>/<name>`` (written by
    ``gitkube.services.proxy`` only while there is a problem); a value is a
    JSON object with ``message`` (and ``node``, ``namespace``, ``service``),
    or plain text. A value with ``"ok": true`` or no message is no problem.
    """
    out: dict[tuple[str, str], list[str]] = {}
    for kv in kvs:
        parts = kv.key[len(PROXY_STATUS_PREFIX) :].split("/")
        if len(parts) != 3:
            continue
        node, namespace, name = parts
        text = kv.value.decode(errors="replace").strip()
        message = text
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            if data.get("ok") is True or data.get("healthy") is True:
                continue
            message = str(data.get("message") or data.get("error") or data.get("reason") or "")
            node = str(data.get("node") or node)
            namespace = str(data.get("namespace") or namespace)
            name = str(data.get("service") or name)
        elif isinstance(data, str):
            message = data
        if not message:
            continue
        where = f" (node {node})" if node else ""
        out.setdefault((namespace, name), []).append(message + where)
    return out


def _parse_control(kv: KeyValue | None) -> SyncControl | None:
    """The sync control key (``gitkube suspend`` / ``resume``), or None."""
    if kv is None:
        return None
    try:
        return SyncControl.from_json(kv.value)
    except (ValueError, TypeError) as exc:
        log.warning("ignoring unreadable sync control at %s: %s", kv.key, exc)
        return None


def _load(what: str, kv: KeyValue | None, parse: Any) -> Any:
    if kv is None:
        return None
    try:
        return parse(kv.value)
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("ignoring unreadable %s at %s: %s", what, kv.key, exc)
        return None


async def _read_live(store: Store, state: SyncState | None) -> list[ApiObject]:
    """The live objects a report needs, decoded; at 10,000 objects decoding
    is most of the cost, so only the declared objects (or, without a
    per-object record, the ones the sync created), the Endpoints of declared
    Services and the nodes are decoded."""
    declared = (
        {(o.kind, _scope(o.kind, o.namespace), o.name) for o in state.objects} if state else set()
    )
    services = {(ns, name) for kind, ns, name in declared if kind == "Service"}
    live: list[ApiObject] = []
    # Services before Endpoints: without a declared list, the Endpoints wanted
    # are those of the managed Services found
    order: list[type[ApiObject]] = [
        Pod,
        ReplicationController,
        Service,
        Endpoints,
        Node,
        Deployment,
        ReplicaSet,
    ]
    for cls in order + [c for c in KINDS.values() if c not in order]:
        kvs, _ = await store.range(resource_prefix(cls.RESOURCE))
        for kv in kvs:
            _, namespace, name = parse_key(kv.key)
            if cls is Node or cls is ReplicaSet:
                # ReplicaSets: few, and they explain their Deployment's health
                wanted = True
            elif cls is Endpoints:
                wanted = (namespace, name) in services
            elif cls is Pod and _may_be_unhealthy(kv.value):
                wanted = True  # its problem may explain its controller's health
            elif declared:
                wanted = (cls.KIND, namespace, name) in declared
            else:
                wanted = _MANAGED_MARK in kv.value
            if wanted:
                obj = decode(cls, kv)
                live.append(obj)
                if cls is Service and not declared and _is_managed(obj):
                    services.add((namespace, name))
    return live


#: a cheap test before decoding: only objects carrying it can be managed
_MANAGED_MARK = ann.MANAGED_BY.encode()


def _may_be_unhealthy(value: bytes) -> bool:
    """A cheap test on a stored pod (``ObjectStore.encode``'s compact JSON):
    False only for pods that are Running with nothing not ready, the bulk of a
    healthy cluster, which need not be decoded."""
    return (
        b'"phase":"Running"' not in value
        or b'"ready":false' in value
        or (b'"status":"False"' in value)
    )


def _live_from_cache(cache: Cache, state: SyncState | None) -> list[ApiObject]:
    """``_read_live``'s choice of objects, from the shared cache (decoded already)."""
    declared = (
        {(o.kind, _scope(o.kind, o.namespace), o.name) for o in state.objects} if state else set()
    )
    services = {(ns, name) for kind, ns, name in declared if kind == "Service"}
    live: list[ApiObject] = []
    order: list[type[ApiObject]] = [Pod, ReplicationController, Service, Endpoints, Node]
    for cls in order + [c for c in KINDS.values() if c not in order]:
        for obj in cache.list(cls):
            namespace, name = obj.namespace, obj.name
            if cls is Node:
                wanted = True
            elif cls is Endpoints:
                wanted = (namespace, name) in services
            elif isinstance(obj, Pod) and _pod_may_be_unhealthy(obj):
                wanted = True
            elif declared:
                wanted = (cls.KIND, namespace, name) in declared
            else:
                wanted = ann.MANAGED_BY in obj.metadata.annotations
            if wanted:
                live.append(obj)
                if cls is Service and not declared and _is_managed(obj):
                    services.add((namespace, name))
    return live


def _pod_may_be_unhealthy(pod: Pod) -> bool:
    """``_may_be_unhealthy`` on a decoded pod."""
    status = pod.status
    return (
        status.phase != "Running"
        or any(not cs.ready for cs in status.container_statuses)
        or any(c.status == "False" for c in status.conditions)
    )


async def build_status_report(
    objects: ObjectStore, *, now: datetime | None = None, cache: Cache | None = None
) -> StatusReport:
    """The status report, read from the store, or with ``cache`` (the
    process's shared cache) from the cache for the objects (and the proxy's
    reports, when the cache keeps them)."""
    store = objects.store
    state = _load("sync state", await store.get(SYNC_STATE_KEY), SyncState.from_json)
    history = _load("sync history", await store.get(SYNC_HISTORY_KEY), history_from_json) or []
    deliveries_raw = _load("webhook deliveries", await store.get(DELIVERIES_KEY), json.loads)
    deliveries = (
        [d for d in deliveries_raw if isinstance(d, dict)]
        if isinstance(deliveries_raw, list)
        else []
    )
    writeback = _load(
        "write-back outcome", await store.get(STATUS_WRITEBACK_KEY), WritebackOutcome.from_json
    )
    control = _parse_control(await store.get(SYNC_CONTROL_KEY))
    if cache is not None:
        await cache.sync()
        if PROXY_STATUS_PREFIX in cache.raw_prefixes:
            proxy_kvs = list(cache.raw(PROXY_STATUS_PREFIX).values())
        else:
            proxy_kvs, _ = await store.range(PROXY_STATUS_PREFIX)
        live = _live_from_cache(cache, state)
        # every stored Secret's values are scrubbed from the report, even from
        # messages an older process stored
        for secret in cache.list(Secret):
            remember_secret(secret.to_dict())
    else:
        proxy_kvs, _ = await store.range(PROXY_STATUS_PREFIX)
        secret_kvs, _ = await store.range(resource_prefix("secrets"))
        for kv in secret_kvs:
            with contextlib.suppress(ValueError):
                remember_secret(json.loads(kv.value))
        live = await _read_live(store, state)
    snapshot = ClusterSnapshot.of(live, proxy_errors=parse_proxy_errors(proxy_kvs))
    return compose_status_report(
        state,
        snapshot,
        now=now or datetime.now(UTC),
        history=history,
        deliveries=deliveries,
        writeback=writeback,
        control=control,
    )
