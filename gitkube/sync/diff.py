"""Plan a sync (pure): from the desired objects (git) and the live objects
(store) to creates, updates and deletes, each update with the reason for it.

What counts as a difference is decided on a *normalised* form of each side:
the wire dict of the typed object (so defaults are filled in the same way on
both sides and never count) without ``status`` (controllers own it), without
the metadata the system owns (uid, resourceVersion, generation,
creationTimestamp, deletionTimestamp, ownerReferences), without gitkube's
provenance annotations, and without fields the system fills in when git
leaves them empty (a pod's ``spec.nodeName``, a service's ``clusterIP`` and
``nodePort``).

- **git changed**: the live object's ``DESIRED_HASH`` annotation is not the
  hash of the desired normalised form (or it is not gitkube's yet, or it came
  from another file). A new commit that leaves an object as it was does not
  change its hash, so it is not a difference; ``SOURCE_COMMIT`` names the
  commit that last changed the object.
- **drift** (self-heal): the hash matches, but the live normalised form
  differs from the desired one: someone changed it behind git's back.
- **prune**: live objects carrying ``MANAGED_BY: gitkube`` that git no longer
  declares. Objects gitkube did not create (pods an RC made, Endpoints the
  endpoints controller wrote, nodes agents registered) are never deleted, nor
  is any object with a controller owner reference, nor any Node.
- **nodes**: a Node manifest in git only sets labels and
  ``spec.unschedulable`` on the node; the rest (status, addresses) belongs to
  the agent and is kept. Labels git stops declaring are removed (the ones
  gitkube set are remembered in ``MANAGED_LABELS``).

- **refused**: a change to the data of an immutable ConfigMap or Secret (or
  making it mutable) is not planned but refused, as Kubernetes refuses it;
  the caller applies nothing while there are refusals.

Updates keep the live status, system metadata and system-filled fields.
Applying a plan and planning again yields an empty plan.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import yaml

from gitkube.api import annotations as ann
from gitkube.api.keys import object_key
from gitkube.api.objects import KINDS, ApiObject
from gitkube.api.redact import changed_secret_keys, is_secret, redact_diff_pair
from gitkube.api.serde import _fields as serde_fields

#: metadata fields the system owns; never a difference, kept from the live object
SYSTEM_METADATA = (
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "ownerReferences",
)
#: annotations the sync writes itself; never a difference
PROVENANCE = (
    ann.SOURCE_COMMIT,
    ann.SOURCE_PATH,
    ann.DESIRED_HASH,
    ann.MANAGED_BY,
    ann.MANAGED_LABELS,
)
#: kinds the sync reads from the store (resource names)
SYNCED_RESOURCES = tuple(cls.RESOURCE for cls in KINDS.values())


class ManifestLike(Protocol):
    """What ``plan_sync`` needs of a manifest: the file it came from and the object."""

    @property
    def path(self) -> str: ...

    @property
    def obj(self) -> ApiObject: ...


# ---------------------------------------------------------------- normal forms


def _drop_system_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in meta.items() if k not in SYSTEM_METADATA}
    annotations = out.get("annotations")
    if annotations:
        kept = {k: v for k, v in annotations.items() if k not in PROVENANCE}
        if kept:
            out["annotations"] = kept
        else:
            del out["annotations"]
    return out


def normalise(wire: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a wire dict that git decides (see the module docstring)."""
    kind = wire.get("kind", "")
    meta = wire.get("metadata") or {}
    if kind == "Node":
        node_meta: dict[str, Any] = {"name": meta.get("name", "")}
        if meta.get("labels"):
            node_meta["labels"] = dict(meta["labels"])
        spec = wire.get("spec") or {}
        return {
            "apiVersion": wire.get("apiVersion", "v1"),
            "kind": kind,
            "metadata": node_meta,
            "spec": {"unschedulable": bool(spec.get("unschedulable", False))},
        }
    out = {k: v for k, v in wire.items() if k not in ("status", "metadata")}
    out["metadata"] = _drop_system_metadata(meta)
    return out


def _live_normal(live: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """The live object's normal form, as compared with ``desired`` (a normal form):
    fields the system fills in are left out when git leaves them empty, and so
    are annotations of gitkube's own domain that git does not set."""
    normal = normalise(live)
    kind = normal.get("kind")
    meta = normal["metadata"]
    if kind == "Node":
        wanted = desired["metadata"].get("labels", {})
        labels = {k: v for k, v in meta.get("labels", {}).items() if k in wanted}
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
        return normal
    want_ann = desired["metadata"].get("annotations", {})
    if "annotations" in meta:
        kept = {
            k: v
            for k, v in meta["annotations"].items()
            if k in want_ann or not k.startswith(ann.DOMAIN + "/")
        }
        if kept:
            meta["annotations"] = kept
        else:
            del meta["annotations"]
    spec = normal.get("spec")
    want_spec = desired.get("spec") or {}
    if isinstance(spec, dict):
        if kind == "Pod":
            normal["spec"] = spec = _as_desired(spec, want_spec, "nodeName")
        if kind == "Service":
            normal["spec"] = spec = _as_desired(spec, want_spec, "clusterIP")
            want_ports = want_spec.get("ports") or []
            ports = spec.get("ports")
            if ports and any(p.get("nodePort") for p in ports):
                normal["spec"] = {
                    **spec,
                    "ports": [
                        _as_desired(port, want_ports[i] if i < len(want_ports) else {}, "nodePort")
                        for i, port in enumerate(ports)
                    ],
                }
    return normal


def _as_desired(live: dict[str, Any], want: Mapping[str, Any], name: str) -> dict[str, Any]:
    """``live`` with the system-filled field ``name`` as git has it, when git
    leaves it empty (absent, 0 or "")."""
    if want.get(name) or name not in live:
        return live
    out = {k: v for k, v in live.items() if k != name}
    if name in want:
        out[name] = want[name]
    return out


_FIELDS: dict[type, list[tuple[str, str]]] = {}


def wire_of(obj: ApiObject) -> dict[str, Any]:
    """``obj.to_dict()``, the same dict, about three times faster (a sync
    converts every desired object once): field lists are looked up per type
    instead of asking ``is_dataclass`` of every value."""
    if obj.UNSTRUCTURED:
        return obj.to_dict()
    data = _wire(obj)
    data["apiVersion"] = obj.api_version
    data["kind"] = obj.KIND
    data.setdefault("metadata", {})
    return obj.to_wire(data)


def _wire(value: Any) -> Any:
    kind = type(value)
    plan = _FIELDS.get(kind)
    if plan is None:
        if kind is list:
            return [_wire(v) for v in value]
        if kind is dict:
            return {k: _wire(v) for k, v in value.items()}
        if not dataclasses.is_dataclass(kind):
            return value
        plan = _FIELDS[kind] = [(name, wire) for name, wire, _ in serde_fields(kind)]
    out: dict[str, Any] = {}
    for name, wire in plan:
        item = _wire(getattr(value, name))
        if item is None or item == "" or item == [] or item == {}:
            continue
        out[wire] = item
    return out


def hash_normal(normal: Mapping[str, Any]) -> str:
    """A stable hash of a normal form (the ``DESIRED_HASH`` annotation)."""
    text = json.dumps(normal, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def changed_fields(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted paths where ``old`` and ``new`` differ (``spec.containers[0].image``)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(path)
            elif old[key] != new[key]:
                out.extend(changed_fields(old[key], new[key], path))
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        out = []
        for i, (a, b) in enumerate(zip(old, new, strict=True)):
            if a != b:
                out.extend(changed_fields(a, b, f"{prefix}[{i}]"))
        return out
    return [prefix or "(object)"] if old != new else []


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class Desired:
    """One object git declares, with its normal form and hash (computed once
    per parsed blob and cached by the sync loop)."""

    path: str
    kind: str
    namespace: str
    name: str
    key: str
    #: the wire dict of the typed object (defaults filled in; no status)
    wire: dict[str, Any]
    normal: dict[str, Any]
    hash: str

    @classmethod
    def of(cls, manifest: ManifestLike | Desired) -> Desired:
        if isinstance(manifest, Desired):
            return manifest
        obj = manifest.obj
        normal = normalise(wire_of(obj))
        return cls(
            path=manifest.path,
            kind=obj.KIND,
            namespace=obj.namespace,
            name=obj.name,
            key=obj.key,
            # what a create writes: the status is left out, as a decode fills in
            # the same defaults; one dict for both saves memory at 10,000 objects
            wire=normal,
            normal=normal,
            hash=hash_normal(normal),
        )


class Live:
    """One object read from the store, as its wire dict (no typed decode: a
    sync compares thousands of them). ``Live.cached(obj)`` wraps an object of
    the shared cache and makes its wire dict only when the plan compares it:
    objects verified by revision (most of them, on an incremental sync) are
    never converted."""

    __slots__ = ("_obj", "_wire", "key", "kind", "name", "namespace", "resource_version")

    def __init__(
        self,
        key: str,
        kind: str,
        namespace: str,
        name: str,
        resource_version: int,
        wire: dict[str, Any] | None = None,
        *,
        obj: ApiObject | None = None,
    ) -> None:
        if wire is None and obj is None:
            raise ValueError("a live object needs its wire dict or its typed object")
        self.key = key
        self.kind = kind
        self.namespace = namespace
        self.name = name
        #: the key's mod_revision
        self.resource_version = resource_version
        self._wire = wire
        self._obj = obj

    @classmethod
    def of(cls, obj: ApiObject | Live) -> Live:
        if isinstance(obj, Live):
            return obj
        wire = obj.to_dict()
        rv = int(wire["metadata"].pop("resourceVersion", 0) or 0)
        return cls(obj.key, obj.KIND, obj.namespace, obj.name, rv, wire)

    @classmethod
    def cached(cls, obj: ApiObject) -> Live:
        """``obj`` (shared: never changed), its wire dict made on first use."""
        rv = int(obj.metadata.resource_version or 0)
        return cls(obj.key, obj.KIND, obj.namespace, obj.name, rv, obj=obj)

    @classmethod
    def from_wire(cls, wire: dict[str, Any], *, key: str, mod_revision: int) -> Live:
        meta = wire.get("metadata") or {}
        return cls(
            key, wire.get("kind", ""), meta.get("namespace", ""), meta.get("name", ""),
            mod_revision, wire,
        )  # fmt: skip

    @property
    def wire(self) -> dict[str, Any]:
        if self._wire is None:
            assert self._obj is not None
            wire = self._obj.to_dict()
            wire["metadata"].pop("resourceVersion", None)
            self._wire = wire
        return self._wire

    @property
    def annotations(self) -> dict[str, str]:
        if self._wire is None and self._obj is not None:
            return self._obj.metadata.annotations
        meta = self.wire.get("metadata") or {}
        result: dict[str, str] = meta.get("annotations") or {}
        return result

    @property
    def managed(self) -> bool:
        return self.annotations.get(ann.MANAGED_BY) == ann.MANAGED_BY_VALUE

    @property
    def has_controller(self) -> bool:
        if self._wire is None and self._obj is not None:
            return any(ref.controller for ref in self._obj.metadata.owner_references)
        refs = (self.wire.get("metadata") or {}).get("ownerReferences") or []
        return any(ref.get("controller") for ref in refs)

    def to_object(self) -> ApiObject:
        obj = KINDS[self.kind].from_dict(self.wire)
        obj.metadata.resource_version = str(self.resource_version)
        return obj

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Live):
            return NotImplemented
        return (self.key, self.resource_version, self.wire) == (
            other.key,
            other.resource_version,
            other.wire,
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Live({self.kind} {self.key} @{self.resource_version})"


# ---------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Create:
    key: str
    kind: str
    namespace: str
    name: str
    path: str
    #: the wire dict to write (system metadata is added when it is written)
    wire: dict[str, Any]
    desired_normal: dict[str, Any]


@dataclass(frozen=True)
class Update:
    key: str
    kind: str
    namespace: str
    name: str
    path: str
    #: the wire dict to write: the desired form with the live status and system fields
    wire: dict[str, Any]
    live: Live
    #: "changed in git", "changed outside git (self-heal)", "adopted", "moved", "provenance"
    reason: str
    #: the fields that differ (dotted paths)
    fields: tuple[str, ...]
    #: True when the live object changed behind git's back
    drift: bool
    desired_normal: dict[str, Any]
    live_normal: dict[str, Any]

    def describe(self) -> str:
        what = ", ".join(self.fields[:8]) + (" …" if len(self.fields) > 8 else "")
        return f"{self.reason}: {what}" if what else self.reason


@dataclass(frozen=True)
class Prune:
    key: str
    kind: str
    namespace: str
    name: str
    live: Live
    reason: str = "no longer declared in git"


@dataclass(frozen=True)
class Drift:
    """A live object that differs from git while self-heal is off."""

    key: str
    kind: str
    namespace: str
    name: str
    path: str
    fields: tuple[str, ...]
    #: what git declares and what the cluster has, normal forms (for the web page)
    desired_normal: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    live_normal: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


@dataclass(frozen=True)
class Refusal:
    """A change git asks for that Kubernetes refuses (the data of an immutable
    ConfigMap or Secret): the revision is not applied."""

    key: str
    kind: str
    namespace: str
    name: str
    path: str
    field: str
    message: str


#: fields of an immutable ConfigMap or Secret that may never change
IMMUTABLE_FIELDS = ("data", "binaryData", "stringData", "type")


def immutable_change(d: Desired, live: Live) -> Refusal | None:
    """The refusal of an update to an immutable ConfigMap or Secret, if any:
    its data may not change and it may not become mutable again."""
    if d.kind not in ("ConfigMap", "Secret") or live.wire.get("immutable") is not True:
        return None
    changed = [f for f in IMMUTABLE_FIELDS if d.normal.get(f) != live.wire.get(f)]
    if d.normal.get("immutable") is not True:
        changed.append("immutable")
    if not changed:
        return None
    what = "data" if d.kind == "ConfigMap" or changed[0] != "type" else "type"
    keys = changed_secret_keys(live.wire, d.normal)
    detail = ", ".join(changed) + (f"; keys {', '.join(keys)}" if keys else "")  # never values
    return Refusal(
        d.key,
        d.kind,
        d.namespace,
        d.name,
        d.path,
        changed[0],
        f"{d.kind} {d.name!r} is immutable: its {what} cannot change (Kubernetes refuses "
        f"it too; changed: {detail}); give it a new name and point its users "
        "at that, or remove it from git, sync, then add it back",
    )


@dataclass
class SyncPlan:
    creates: list[Create] = field(default_factory=list)
    updates: list[Update] = field(default_factory=list)
    deletes: list[Prune] = field(default_factory=list)
    #: objects that differ but are left as they are (self-heal off)
    drifted: list[Drift] = field(default_factory=list)
    #: gitkube's objects that git no longer declares, kept because prune is off
    orphans: list[Prune] = field(default_factory=list)
    unchanged: int = 0
    #: key -> (mod_revision, desired hash) of live objects found equal to git
    verified: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: changes Kubernetes refuses (immutable ConfigMaps and Secrets): the
    #: revision must not be applied while there are any
    refused: list[Refusal] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.creates or self.updates or self.deletes)

    def counts(self) -> dict[str, int]:
        return {
            "create": len(self.creates),
            "update": len(self.updates),
            "delete": len(self.deletes),
            "unchanged": self.unchanged,
            "drifted": len(self.drifted),
            "orphaned": len(self.orphans),
        }


def _provenance(
    annotations: Mapping[str, str], *, revision: str, path: str, digest: str
) -> dict[str, str]:
    out = dict(annotations)
    out[ann.MANAGED_BY] = ann.MANAGED_BY_VALUE
    out[ann.SOURCE_COMMIT] = revision
    out[ann.SOURCE_PATH] = path
    out[ann.DESIRED_HASH] = digest
    return out


def _create_wire(d: Desired, revision: str) -> dict[str, Any]:
    wire = dict(d.wire)
    meta = dict(wire.get("metadata") or {})
    annotations = meta.get("annotations") or {}
    if d.kind == "Node":
        labels = sorted((meta.get("labels") or {}).keys())
        annotations = {**annotations, ann.MANAGED_LABELS: ",".join(labels)}
        wire = {k: v for k, v in wire.items() if k not in ("status",)}
    meta["annotations"] = _provenance(annotations, revision=revision, path=d.path, digest=d.hash)
    wire["metadata"] = meta
    return wire


def _update_wire(d: Desired, live: Live, revision: str) -> dict[str, Any]:
    live_meta = live.wire.get("metadata") or {}
    live_ann = live_meta.get("annotations") or {}
    if d.kind == "Node":
        wire = dict(live.wire)
        meta = dict(live_meta)
        previously = {k for k in live_ann.get(ann.MANAGED_LABELS, "").split(",") if k}
        want = d.wire.get("metadata", {}).get("labels") or {}
        labels = {k: v for k, v in (meta.get("labels") or {}).items() if k not in previously}
        labels.update(want)
        if labels:
            meta["labels"] = labels
        else:
            meta.pop("labels", None)
        annotations = {**live_ann, ann.MANAGED_LABELS: ",".join(sorted(want))}
        meta["annotations"] = _provenance(
            annotations, revision=revision, path=d.path, digest=d.hash
        )
        wire["metadata"] = meta
        unschedulable = bool((d.wire.get("spec") or {}).get("unschedulable", False))
        wire["spec"] = {**(live.wire.get("spec") or {}), "unschedulable": unschedulable}
        return wire

    wire = {k: v for k, v in d.wire.items() if k != "status"}
    if "status" in live.wire:
        wire["status"] = live.wire["status"]
    meta = dict(d.wire.get("metadata") or {})
    for key in SYSTEM_METADATA:
        if key in live_meta and key != "resourceVersion":
            meta[key] = live_meta[key]
    annotations = dict(meta.get("annotations") or {})
    for key, value in live_ann.items():
        # another component's annotation of gitkube's domain (e.g. the endpoints
        # controller's) is kept when git does not set it
        if key.startswith(ann.DOMAIN + "/") and key not in PROVENANCE and key not in annotations:
            annotations[key] = value
    meta["annotations"] = _provenance(annotations, revision=revision, path=d.path, digest=d.hash)
    wire["metadata"] = meta
    spec = wire.get("spec")
    live_spec = live.wire.get("spec") or {}
    if isinstance(spec, dict):
        if d.kind == "Pod" and not spec.get("nodeName") and live_spec.get("nodeName"):
            wire["spec"] = spec = {**spec, "nodeName": live_spec["nodeName"]}
        if d.kind == "Service":
            if not spec.get("clusterIP") and live_spec.get("clusterIP"):
                wire["spec"] = spec = {**spec, "clusterIP": live_spec["clusterIP"]}
            live_ports = live_spec.get("ports") or []
            ports = spec.get("ports") or []
            if any("nodePort" in p for p in live_ports):
                fixed = []
                for i, port in enumerate(ports):
                    old = live_ports[i] if i < len(live_ports) else {}
                    if not port.get("nodePort") and old.get("nodePort"):
                        port = {**port, "nodePort": old["nodePort"]}
                    fixed.append(port)
                wire["spec"] = {**spec, "ports": fixed}
    return wire


def plan_sync(
    desired: Sequence[ManifestLike | Desired],
    live: Iterable[ApiObject | Live],
    *,
    revision: str = "",
    prune: bool = True,
    self_heal: bool = True,
    verified: Mapping[str, tuple[int, str]] | None = None,
) -> SyncPlan:
    """What to write so the store holds what git declares (see the module docstring).

    ``desired`` must be free of duplicates (``find_duplicates`` reports them);
    the last of two objects with one key wins here. ``revision`` is the commit
    recorded as the source of created and updated objects.

    ``verified`` (key -> (mod_revision, desired hash)) names live objects
    already found equal to a desired form: one that still has that
    mod_revision and hash is unchanged without comparing it again (the sync
    loop passes ``SyncPlan.verified`` of its previous pass, plus its writes).
    """
    want: dict[str, Desired] = {}
    for item in desired:
        d = Desired.of(item)
        want[d.key] = d
    have: dict[str, Live] = {}
    for obj in live:
        one = Live.of(obj)
        have[one.key] = one

    plan = SyncPlan()
    for key, d in want.items():
        lv = have.get(key)
        if lv is None:
            wire = _create_wire(d, revision)
            plan.creates.append(Create(key, d.kind, d.namespace, d.name, d.path, wire, d.normal))
            continue
        if verified is not None:
            seen = verified.get(key)
            if seen is not None and seen == (lv.resource_version, d.hash):
                plan.unchanged += 1
                plan.verified[key] = seen
                continue
        live_normal = _live_normal(lv.wire, d.normal)
        annotations = lv.annotations
        differs = live_normal != d.normal
        reason = ""
        drift = False
        if not lv.managed:
            reason = "adopted: not created by gitkube"
        elif annotations.get(ann.DESIRED_HASH) != d.hash:
            reason = "changed in git" if differs else "provenance"
        elif annotations.get(ann.SOURCE_PATH) != d.path:
            reason = f"moved from {annotations.get(ann.SOURCE_PATH, '')} to {d.path}"
        elif differs:
            if not self_heal:
                fields = tuple(changed_fields(live_normal, d.normal))
                plan.drifted.append(
                    Drift(key, d.kind, d.namespace, d.name, d.path, fields, d.normal, live_normal)
                )
                plan.unchanged += 1
                continue
            reason, drift = "changed outside git (self-heal)", True
        else:
            plan.unchanged += 1
            plan.verified[key] = (lv.resource_version, d.hash)
            continue
        refusal = immutable_change(d, lv) if differs else None
        if refusal is not None:
            plan.refused.append(refusal)
            continue
        fields = tuple(changed_fields(live_normal, d.normal)) if differs else ()
        plan.updates.append(
            Update(
                key=key,
                kind=d.kind,
                namespace=d.namespace,
                name=d.name,
                path=d.path,
                wire=_update_wire(d, lv, revision),
                live=lv,
                reason=reason,
                fields=fields,
                drift=drift,
                desired_normal=d.normal,
                live_normal=live_normal,
            )
        )

    for key, lv in have.items():
        if key in want or lv.kind == "Node" or not lv.managed or lv.has_controller:
            continue
        target = plan.deletes if prune else plan.orphans
        target.append(Prune(key, lv.kind, lv.namespace, lv.name, lv))
    plan.creates.sort(key=lambda c: c.key)
    plan.updates.sort(key=lambda u: u.key)
    # a Namespace goes after the objects in it (apply writes deletes in this order)
    plan.deletes.sort(key=lambda p: (p.kind == "Namespace", p.key))
    return plan


def desired_key(kind: str, namespace: str, name: str) -> str:
    return object_key(KINDS[kind].RESOURCE, namespace, name)


# ---------------------------------------------------------------- presentation


def yaml_text(data: Mapping[str, Any] | None) -> str:
    return "".join(_yaml_lines(data))


def _yaml_lines(data: Mapping[str, Any] | None) -> list[str]:
    if data is None:
        return []
    text: str = yaml.safe_dump(dict(data), sort_keys=True, default_flow_style=False)
    return text.splitlines(keepends=True)


REDACTED = "<redacted>"


def redact_secret(
    kind: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]:
    """Normal forms with a Secret's values replaced (keys kept); a value that
    differs shows as ``<redacted old value>`` / ``<redacted new value>``."""
    if kind != "Secret":
        return old, new
    fields = ("data", "stringData")

    def values(form: Mapping[str, Any] | None, f: str) -> dict[str, Any]:
        got = (form or {}).get(f)
        return dict(got) if isinstance(got, Mapping) else {}

    def masked(form: Mapping[str, Any] | None, side: str) -> Mapping[str, Any] | None:
        if form is None:
            return None
        out = dict(form)
        for f in fields:
            if f not in out:
                continue
            mine, other = values(form, f), values(new if side == "old" else old, f)
            out[f] = {
                k: REDACTED
                if (old is None or new is None or other.get(k) == v)
                else f"<redacted {side} value>"
                for k, v in mine.items()
            }
        return out

    return masked(old, "old"), masked(new, "new")


def render_diff(plan: SyncPlan, *, redact: bool = False) -> str:
    """A unified YAML diff per object (normal forms: no status, no system fields),
    each headed by what will happen and why; ``redact``: Secret values masked."""
    chunks: list[str] = []

    def one(title: str, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> None:
        label = title.split(" ", 2)[1]
        if is_secret(old) or is_secret(new):
            keys = changed_secret_keys(old, new)
            if keys and old is not None and new is not None:
                title += f" (secret data changed: {', '.join(keys)}; values not shown)"
            old, new = redact_diff_pair(old, new)
        body = difflib.unified_diff(
            _yaml_lines(old), _yaml_lines(new), fromfile=f"live/{label}", tofile=f"git/{label}"
        )
        chunks.append(f"# {title}\n" + "".join(body))

    for c in plan.creates:
        one(f"create {c.kind}/{_nsname(c.namespace, c.name)} (from {c.path})", None,
            c.desired_normal)  # fmt: skip
    for u in plan.updates:
        one(
            f"update {u.kind}/{_nsname(u.namespace, u.name)} (from {u.path}): {u.describe()}",
            u.live_normal,
            u.desired_normal,
        )
    for p in plan.deletes:
        one(f"delete {p.kind}/{_nsname(p.namespace, p.name)}: {p.reason}",
            normalise(p.live.wire), None)  # fmt: skip
    for dr in plan.drifted:
        chunks.append(
            f"# drifted {dr.kind}/{_nsname(dr.namespace, dr.name)} (self-heal off): "
            f"{', '.join(dr.fields)}\n"
        )
    return "".join(chunks)


def _nsname(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


# ---------------------------------------------------------------- kept for history and page

#: the most bytes of diff kept for one sync of the history
MAX_RECORDED_DIFF_BYTES = 64 * 1024
#: the most drifted objects, and bytes of them, kept for the web page
MAX_RECORDED_DRIFT_OBJECTS = 200
MAX_RECORDED_DRIFT_BYTES = 512 * 1024


def bounded_text(text: str, limit: int) -> tuple[str, bool]:
    """``text`` cut at a line boundary to at most ``limit`` bytes, and whether it was cut."""
    raw = text.encode()
    if len(raw) <= limit:
        return text, False
    cut = raw[:limit].decode(errors="ignore")
    cut = cut[: cut.rfind("\n") + 1] if "\n" in cut else ""
    return cut + f"# … {len(raw) - len(cut.encode())} more bytes not recorded\n", True


def recorded_diff(plan: SyncPlan, *, limit: int = MAX_RECORDED_DIFF_BYTES) -> dict[str, Any]:
    """What the history keeps of the diff a sync applied: Secret values masked,
    at most ``limit`` bytes."""
    text, truncated = bounded_text(render_diff(plan, redact=True), limit)
    return {"diff": text, "truncated": truncated}


def recorded_drift(
    plan: SyncPlan,
    *,
    max_objects: int = MAX_RECORDED_DRIFT_OBJECTS,
    max_bytes: int = MAX_RECORDED_DRIFT_BYTES,
) -> list[dict[str, Any]]:
    """The objects that differ from git (self-heal off), each with git's and
    the cluster's normal form as YAML (Secret values masked), bounded."""
    out: list[dict[str, Any]] = []
    used = 0
    for dr in sorted(plan.drifted, key=lambda d: d.key)[:max_objects]:
        live, want = redact_secret(dr.kind, dr.live_normal, dr.desired_normal)
        entry: dict[str, Any] = {
            "kind": dr.kind,
            "namespace": dr.namespace,
            "name": dr.name,
            "path": dr.path,
            "fields": list(dr.fields),
            "git": yaml_text(want),
            "cluster": yaml_text(live),
        }
        size = len(entry["git"]) + len(entry["cluster"])
        if used + size > max_bytes:
            entry["git"] = entry["cluster"] = ""
            entry["truncated"] = True
        else:
            used += size
        out.append(entry)
    return out
