"""Validating manifests: every problem in one pass, each with file, line,
object and field.

A document is checked in four steps: its ``apiVersion`` and ``kind`` pick a
schema (``gitkube/api/schemas/``), the compiled schema checks fields and
types (unknown fields are errors, so typos never pass; fields Kubernetes
defines but gitkube ignores are reported as ``IgnoredField``), the checks a
schema cannot express run next (selector against template labels, unique
names, probes with one handler, ...), and last the official Kubernetes
schema (``kubernetes.json``, strict) is the floor: what Kubernetes refuses
never passes, including inside ignored fields; what gitkube already
reported at a field is not reported twice.

A ``List`` (or ``ServiceList``, ``DeploymentList``, ...) is read as its
items, each an object of its own at its own line. Kinds gitkube does not run
(official ones, and custom resources) are stored with ``unsupported="store"``
(``--unsupported-kinds``) and refused otherwise.

Decisions worth knowing:

- ``nodePort`` must be in Kubernetes' default range 30000-32767, so a
  manifest that works here works on a Kubernetes cluster too; 0 means unset.
- ``type: LoadBalancer`` is served as NodePort is, on every agent's proxy
  address.
- Service names are DNS-1035 labels (start with a letter), as in
  Kubernetes; other objects are DNS-1123 subdomains.
- ``status`` and the metadata a cluster sets (``uid``,
  ``resourceVersion``, ...) are ignored, so ``kubectl get -o yaml`` output
  loads; they never reach the object built from the manifest.
- A probe's named port must be a port of its container.
- Deployments and ReplicaSets need a non-empty selector that matches their
  template's labels; a Secret's ``stringData`` is merged into ``data`` (base64)
  when the object is built, as the API server does, and never stored.
- ``generateName`` without ``metadata.name`` is refused, as ``kubectl apply``
  refuses it: an object kept in git needs a name the next sync finds again.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

from gitkube.api.labels import check_label_value, expressions_match
from gitkube.api.manifests import (
    DEFAULT_MAX_BYTES,
    Document,
    FieldPath,
    _child,
    find_manifest_files,
    parse_documents,
)
from gitkube.api.objects import (
    API_VERSIONS,
    KINDS,
    ApiObject,
    ObjectMeta,
    Secret,
    Service,
    UnsupportedObject,
    unsupported_class,
)
from gitkube.api.quantity import QuantityError, parse_quantity
from gitkube.api.redact import is_secret, remember_secret, scrub_message
from gitkube.api.schema import (
    Sink,
    check_dns1035_label,
    check_dns1123_label,
    check_dns1123_subdomain,
    describe,
    kind_checks,
    metadata_check,
    official_check,
    official_kinds,
    plural_resource,
)

SUPPORTED = "; ".join(
    f"{version} {', '.join(k for k in KINDS if API_VERSIONS[k] == version)}"
    for version in dict.fromkeys(API_VERSIONS.values())
)

#: gitkube annotations whose values gitkube reads (rolling updates)
_ROLLING_ANNOTATIONS = ("gitkube.io/max-unavailable", "gitkube.io/max-surge")
_INT_OR_PERCENT = re.compile(r"^\d+%?$")
#: Kubernetes' limit on all annotations of one object together
MAX_ANNOTATIONS_BYTES = 256 * 1024

#: kinds people bring from newer Kubernetes, and where they live
_OTHER_KINDS = {
    "StatefulSet": "apps/v1",
    "DaemonSet": "apps/v1",
    "Job": "batch/v1",
    "CronJob": "batch/v1",
    "Ingress": "networking.k8s.io/v1",
    "PersistentVolumeClaim": "v1",
    "ServiceAccount": "v1",
    "List": "v1",
}


# ---------------------------------------------------------------- results


def format_path(path: FieldPath) -> str:
    """``("spec", "containers", 0, "image")`` -> ``spec.containers[0].image``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out


def _location(file: str, line: int, kind: str, name: str, field_: str) -> str:
    parts = [f"{file}:{line}" if line else file]
    if kind or name:
        parts.append(f"{kind or '?'}/{name or '?'}")
    if field_:
        parts.append(field_)
    return ": ".join(parts)


@dataclass
class ManifestError:
    """One problem in one manifest. ``line`` 0 means the whole file."""

    file: str
    line: int
    document: int
    kind: str
    name: str
    field: str
    message: str

    def __str__(self) -> str:
        where = _location(self.file, self.line, self.kind, self.name, self.field)
        return f"{where}: {self.message}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class IgnoredField:
    """A Kubernetes v1 field that was accepted but has no effect in gitkube."""

    file: str
    line: int
    document: int
    kind: str
    name: str
    field: str
    reason: str

    def __str__(self) -> str:
        where = _location(self.file, self.line, self.kind, self.name, self.field)
        return f"{where}: ignored: {self.reason}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_NO_LINES: Mapping[str, int] = MappingProxyType({})


@dataclass
class Manifest:
    """One valid document: ``data`` as written, ``obj`` the typed object.

    ``obj`` has the defaults applied (namespace "default") and no ignored
    fields (``status``, cluster-set metadata).
    """

    path: str
    document: int
    line: int
    data: dict[str, Any]
    obj: ApiObject
    #: the lines of the fields the checks across files name (``_CROSS_FIELDS``),
    #: those not on the object's first line (most have none: one shared empty map)
    field_lines: Mapping[str, int] = field(default_factory=lambda: _NO_LINES)

    def line_of(self, field_: str) -> int:
        """The line of ``field_`` (one of ``_CROSS_FIELDS``), else the object's first."""
        return self.field_lines.get(field_, self.line)


#: what the checks across files point at: kept per manifest (a line each), not the YAML
_CROSS_FIELDS: tuple[FieldPath, ...] = (
    ("apiVersion",),
    ("metadata", "namespace"),
    ("spec", "clusterIP"),
)


@dataclass
class ValidationReport:
    manifests: list[Manifest] = field(default_factory=list)
    errors: list[ManifestError] = field(default_factory=list)
    ignored: list[IgnoredField] = field(default_factory=list)
    #: the files that were read
    files: list[str] = field(default_factory=list)
    #: symlinks met in directories and not followed
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


# ---------------------------------------------------------------- one document


#: what becomes of objects of kinds gitkube does not run (``--unsupported-kinds``)
UNSUPPORTED_MODES = ("store", "error")
#: store: a real repository (with its Ingresses, ServiceAccounts, custom
#: resources) syncs as it is, and status shows what is not acted on
DEFAULT_UNSUPPORTED = "store"

_CUSTOM_API_VERSION = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z]{2,}/v[0-9a-z]+$")
_KIND_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class CustomKind:
    """A kind a CustomResourceDefinition in git declares."""

    #: ``<plural>.<group>``, as the API serves it
    resource: str
    namespaced: bool
    #: the versions it serves
    versions: tuple[str, ...]
    #: the CustomResourceDefinition: its name and ``file:line``
    crd: str
    where: str


#: custom kinds by (API group, kind)
CustomKinds = Mapping[tuple[str, str], CustomKind]

CRD_API_VERSION = "apiextensions.k8s.io/v1"


@dataclass(frozen=True)
class CrdDefinition:
    """What a CustomResourceDefinition's spec declares of its kind."""

    group: str
    kind: str
    plural: str
    singular: str
    short_names: tuple[str, ...]
    namespaced: bool
    #: the versions it serves
    versions: tuple[str, ...]


def crd_definition(data: Mapping[str, Any]) -> CrdDefinition | None:
    """The kind a CustomResourceDefinition (its wire form, or an object's
    ``content``) declares; None without a group, kind and plural (the
    official schema reports what is missing)."""
    spec = _mapping(data.get("spec"))
    names = _mapping(spec.get("names"))
    group, kind, plural = spec.get("group"), names.get("kind"), names.get("plural")
    if not all(isinstance(x, str) and x for x in (group, kind, plural)):
        return None
    assert isinstance(group, str) and isinstance(kind, str) and isinstance(plural, str)
    return CrdDefinition(
        group=group,
        kind=kind,
        plural=plural,
        singular=str(names.get("singular") or ""),
        short_names=tuple(str(n) for n in _list(names.get("shortNames"))),
        namespaced=spec.get("scope") != "Cluster",
        versions=tuple(
            v["name"]
            for v in _list(spec.get("versions"))
            if isinstance(v, dict) and isinstance(v.get("name"), str) and v.get("served", True)
        ),
    )


def _crd_of(obj: ApiObject) -> CrdDefinition | None:
    if (
        isinstance(obj, UnsupportedObject)
        and obj.KIND == "CustomResourceDefinition"
        and obj.api_version == CRD_API_VERSION
    ):
        return crd_definition(obj.content)
    return None


def custom_kinds_of(manifests: Iterable[Manifest]) -> dict[tuple[str, str], CustomKind]:
    """The kinds the CustomResourceDefinitions among ``manifests`` declare
    (their scope, plural and served versions decide how custom resources of
    those kinds are stored)."""
    found: dict[tuple[str, str], CustomKind] = {}
    for manifest in manifests:
        crd = _crd_of(manifest.obj)
        if crd is not None:
            found[(crd.group, crd.kind)] = CustomKind(
                resource=f"{crd.plural}.{crd.group}",
                namespaced=crd.namespaced,
                versions=crd.versions,
                crd=manifest.obj.name,
                where=f"{manifest.path}:{manifest.line}",
            )
    return found


def crd_summary(obj: ApiObject) -> ApiObject:
    """What ``custom_kinds_of`` reads of a CustomResourceDefinition (the rest,
    often large schemas, need not be kept to know its kinds)."""
    crd = _crd_of(obj)
    if crd is None:
        return obj
    kept = {
        "group": crd.group,
        "scope": "Namespaced" if crd.namespaced else "Cluster",
        "names": {"kind": crd.kind, "plural": crd.plural},
        "versions": [{"name": v} for v in crd.versions],
    }
    summary = type(obj)(metadata=ObjectMeta(name=obj.metadata.name))
    assert isinstance(summary, UnsupportedObject)  # as obj is (_crd_of)
    summary.api_version = obj.api_version
    summary.content = {"spec": kept}
    return summary


def storable_kind(
    api_version: Any, kind: Any, custom: CustomKinds | None = None
) -> tuple[str, bool] | None:
    """(resource, namespaced) of a kind gitkube can store without running it:
    an official Kubernetes kind, or a custom resource (an API group with a dot
    that Kubernetes does not serve itself: as its CustomResourceDefinition in
    git says, else namespaced, named by the default plural); None for
    anything else (a typo in a Kubernetes kind stays an error)."""
    if not isinstance(api_version, str) or not isinstance(kind, str):
        return None
    official = official_kinds().get((api_version, kind))
    if official is not None:
        return official.resource, official.namespaced
    group = api_version.partition("/")[0]
    if (
        _CUSTOM_API_VERSION.match(api_version)
        and _KIND_NAME.match(kind)
        and group not in _builtin_groups()
    ):
        declared = (custom or {}).get((group, kind))
        if declared is not None:
            return declared.resource, declared.namespaced
        return f"{plural_resource(kind)}.{group}", True
    return None


@cache
def _builtin_groups() -> frozenset[str]:
    """The API groups Kubernetes serves itself (a kind unknown there is a typo,
    not a custom resource); extension groups such as gateway.networking.k8s.io
    are not among them."""
    groups = {api_version.rpartition("/")[0] for api_version, _ in official_kinds()}
    return frozenset(groups | {"extensions"})


def validate_document(
    data: Any, *, unsupported: str = "error"
) -> tuple[list[tuple[FieldPath, str]], list[tuple[FieldPath, str]]]:
    """(errors, ignored) of one parsed document, as ``(field path, message)`` pairs.

    ``unsupported``: "store" accepts kinds gitkube does not run (checked
    against the official schema when it knows them), "error" refuses them.
    Pure: the caller turns paths into lines.
    """
    sink = Sink()
    if not isinstance(data, dict):
        what = describe(data)
        hint = " (put one object per document, separated by ---)" if isinstance(data, list) else ""
        sink.errors.append(
            ((), f"a manifest must be a mapping with apiVersion and kind, not {what}{hint}")
        )
        return sink.errors, sink.ignored
    kind = data.get("kind")
    api_version = data.get("apiVersion")
    if isinstance(api_version, str) and api_version.startswith("kustomize.config.k8s.io/"):
        sink.errors.append(
            (
                ("kind",),
                f"a kustomize file ({kind}), not a Kubernetes object: gitkube reads plain "
                "manifests; commit the output of `kustomize build` (or keep this file "
                "outside the manifest path)",
            )
        )
        return sink.errors, sink.ignored
    supported = isinstance(kind, str) and API_VERSIONS.get(kind) == api_version
    if not supported and unsupported == "store" and storable_kind(api_version, kind):
        assert isinstance(kind, str) and isinstance(api_version, str)
        _check_unsupported(api_version, kind, data, sink)
        return sink.errors, sink.ignored
    if not _check_type_meta(api_version, kind, sink):
        return sink.errors, sink.ignored
    assert isinstance(kind, str) and isinstance(api_version, str)
    kind_checks()[kind](data, (), sink)
    _check_semantics(kind, data, sink)
    _check_official(api_version, kind, data, sink)
    return sink.errors, sink.ignored


def _check_official(api_version: str, kind: str, data: dict[str, Any], sink: Sink) -> None:
    """The floor: the official Kubernetes schema, strict. What gitkube's own
    checks already reported at a field (or above it) is not reported twice."""
    check = official_check(api_version, kind)
    if check is None:
        return
    floor = Sink()
    check(data, (), floor)
    if not floor.errors:
        return
    reported = {path for path, _ in sink.errors}
    for path, message in floor.errors:
        if not any(path[:n] in reported for n in range(len(path) + 1)):
            sink.errors.append((path, message))
            reported.add(path)


def _check_unsupported(api_version: str, kind: str, data: dict[str, Any], sink: Sink) -> None:
    """A kind gitkube stores but does not run: its metadata by gitkube's rules,
    everything by the official schema when it knows the kind."""
    metadata = data.get("metadata")
    if metadata is None:
        sink.errors.append((("metadata",), "required field is missing"))
    else:
        metadata_check()(metadata, ("metadata",), sink)
        name = _mapping(metadata).get("name")
        if isinstance(name, str) and name:
            problem = check_dns1123_subdomain(name)
            if problem:
                sink.errors.append((("metadata", "name"), f"invalid name: {problem}"))
        _check_annotations(_mapping(metadata), ("metadata",), sink)
    if data.get("status") is not None:
        sink.ignored.append((("status",), "status is written by a cluster, never read from git"))
    _check_official(api_version, kind, data, sink)


def _check_type_meta(api_version: Any, kind: Any, sink: Sink) -> bool:
    """One error for a wrong kind or apiVersion, naming what is supported."""
    if kind is None or api_version is None:
        for name, value in (("apiVersion", api_version), ("kind", kind)):
            if value is None:
                sink.errors.append(
                    ((name,), f"required field is missing; gitkube supports {SUPPORTED}")
                )
        return False
    if not isinstance(kind, str) or kind not in KINDS:
        where = _OTHER_KINDS.get(kind) if isinstance(kind, str) else None
        if storable_kind(api_version, kind):
            where = api_version
        found = f"kind {kind!r}" + (f" ({where})" if where else "")
        hint = ""
        if storable_kind(api_version, kind):
            hint = (
                "; with --unsupported-kinds store it is validated and stored, "
                "and shown as not acted on"
            )
        sink.errors.append(
            (("kind",), f"{found} is not supported; gitkube supports {SUPPORTED}{hint}")
        )
        return False
    if api_version != API_VERSIONS[kind]:
        sink.errors.append(
            (
                ("apiVersion",),
                f"apiVersion {api_version!r} is not supported for {kind} "
                f"(use {API_VERSIONS[kind]}); gitkube supports {SUPPORTED}",
            )
        )
        return False
    return True


def _check_semantics(kind: str, data: dict[str, Any], sink: Sink) -> None:
    metadata = _mapping(data.get("metadata"))
    name = metadata.get("name")
    if isinstance(name, str) and name:
        problem = check_dns1035_label(name) if kind == "Service" else check_dns1123_subdomain(name)
        if problem:
            sink.errors.append((("metadata", "name"), f"invalid name: {problem}"))
    elif name is None and isinstance(metadata.get("generateName"), str):
        sink.errors.append(
            (
                ("metadata", "generateName"),
                "generateName without metadata.name is not supported: an object kept in git "
                "needs a fixed name so that the next sync finds it again (kubectl apply "
                "refuses it for the same reason); set metadata.name",
            )
        )
    if kind == "Namespace" and isinstance(name, str) and name:
        problem = check_dns1123_label(name)
        if problem:
            sink.errors.append((("metadata", "name"), f"invalid Namespace name: {problem}"))
    if kind in ("Node", "Namespace") and metadata.get("namespace") is not None:
        sink.ignored.append((("metadata", "namespace"), f"{kind}s are cluster-scoped"))
    _check_annotations(metadata, ("metadata",), sink)
    spec = _mapping(data.get("spec"))
    if kind == "Pod":
        _check_pod_spec(spec, ("spec",), sink)
    elif kind == "ReplicationController":
        _check_rc_spec(spec, sink)
    elif kind == "Service":
        _check_service_spec(spec, sink)
    elif kind == "Endpoints":
        _check_endpoints(data, sink)
    elif kind in ("Deployment", "ReplicaSet"):
        _check_apps_spec(kind, spec, sink)
    elif kind == "ConfigMap":
        _check_config_map(data, sink)
    elif kind == "Secret":
        _check_secret(data, sink)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _check_annotations(metadata: dict[str, Any], path: FieldPath, sink: Sink) -> None:
    annotations = _mapping(metadata.get("annotations"))
    if not annotations:
        return
    size = sum(len(str(k)) + len(str(v)) for k, v in annotations.items())
    if size > MAX_ANNOTATIONS_BYTES:
        sink.errors.append(
            ((*path, "annotations"), f"annotations total {size} bytes, over the 256 KiB limit")
        )
    for key in _ROLLING_ANNOTATIONS:
        value = annotations.get(key)
        if isinstance(value, str) and not _INT_OR_PERCENT.match(value):
            sink.errors.append(
                (
                    (*path, "annotations", key),
                    f"must be a count or a percentage such as '25%', not {value!r}",
                )
            )


def _check_pod_spec(spec: dict[str, Any], path: FieldPath, sink: Sink) -> None:
    seen: dict[str, str] = {}
    host_ports: dict[tuple[str, int], FieldPath] = {}
    host_network = spec.get("hostNetwork") is True
    volumes = _check_volumes(spec, path, sink)
    for group in ("initContainers", "containers"):
        for index, container in enumerate(_list(spec.get(group))):
            if not isinstance(container, dict):
                continue
            cpath = (*path, group, index)
            name = container.get("name")
            if isinstance(name, str) and name:
                if name in seen:
                    sink.errors.append(
                        (
                            (*cpath, "name"),
                            f"duplicate container name {name!r} (also {seen[name]})",
                        )
                    )
                else:
                    seen[name] = f"{group}[{index}]"
            _check_env(container, cpath, sink)
            _check_mounts(container, cpath, sink, volumes)
            if group == "initContainers":
                for probe_field in ("livenessProbe", "readinessProbe", "startupProbe"):
                    if container.get(probe_field) is not None:
                        sink.errors.append(
                            ((*cpath, probe_field), "init containers may not have probes")
                        )
                _check_container_ports(container, cpath, sink, {}, False)
                _check_resources(_mapping(container.get("resources")), (*cpath, "resources"), sink)
            else:
                _check_container(container, cpath, sink, host_ports, host_network)


def _check_volumes(spec: dict[str, Any], path: FieldPath, sink: Sink) -> set[str]:
    names: dict[str, int] = {}
    for index, volume in enumerate(_list(spec.get("volumes"))):
        if not isinstance(volume, dict):
            continue
        vpath = (*path, "volumes", index)
        name = volume.get("name")
        if isinstance(name, str) and name:
            if name in names:
                sink.errors.append(
                    (
                        (*vpath, "name"),
                        f"duplicate volume name {name!r} (also volumes[{names[name]}])",
                    )
                )
            else:
                names[name] = index
        sources = [k for k in volume if k != "name" and volume[k] is not None]
        if not sources:
            sink.errors.append((vpath, "a volume needs a source: configMap, secret or emptyDir"))
        elif len(sources) > 1:
            sink.errors.append(
                (vpath, f"a volume needs exactly one source, this one has {', '.join(sources)}")
            )
        for source, name_field in (("configMap", "name"), ("secret", "secretName")):
            config = volume.get(source)
            if isinstance(config, dict) and not config.get(name_field):
                sink.errors.append(((*vpath, source, name_field), "required field is missing"))
    return set(names)


def _check_env(container: dict[str, Any], cpath: FieldPath, sink: Sink) -> None:
    for index, env in enumerate(_list(container.get("env"))):
        if not isinstance(env, dict):
            continue
        source = env.get("valueFrom")
        if not isinstance(source, dict):
            continue
        epath = (*cpath, "env", index)
        if env.get("value"):
            sink.errors.append(((*epath, "valueFrom"), "may not be given with value"))
        given = [k for k, v in source.items() if v is not None]
        if len(given) != 1:
            shown = ", ".join(given) if given else "none"
            sink.errors.append(
                (
                    (*epath, "valueFrom"),
                    "needs exactly one of configMapKeyRef, secretKeyRef, fieldRef or "
                    f"resourceFieldRef (given: {shown})",
                )
            )
        for ref in ("configMapKeyRef", "secretKeyRef"):
            selector = source.get(ref)
            if isinstance(selector, dict) and not selector.get("name"):
                sink.errors.append(
                    ((*epath, "valueFrom", ref, "name"), "required field is missing")
                )
    for index, env_from in enumerate(_list(container.get("envFrom"))):
        if not isinstance(env_from, dict):
            continue
        given = [k for k in ("configMapRef", "secretRef") if env_from.get(k) is not None]
        fpath = (*cpath, "envFrom", index)
        if len(given) != 1:
            sink.errors.append((fpath, "needs exactly one of configMapRef or secretRef"))
        for ref in given:
            selector = env_from.get(ref)
            if isinstance(selector, dict) and not selector.get("name"):
                sink.errors.append(((*fpath, ref, "name"), "required field is missing"))


def _check_mounts(
    container: dict[str, Any], cpath: FieldPath, sink: Sink, volumes: set[str]
) -> None:
    paths: dict[str, int] = {}
    for index, mount in enumerate(_list(container.get("volumeMounts"))):
        if not isinstance(mount, dict):
            continue
        mpath = (*cpath, "volumeMounts", index)
        name = mount.get("name")
        if isinstance(name, str) and name and name not in volumes:
            known = ", ".join(sorted(volumes)) or "none"
            sink.errors.append(
                ((*mpath, "name"), f"no volume named {name!r} in this pod (volumes: {known})")
            )
        mount_path = mount.get("mountPath")
        if isinstance(mount_path, str) and mount_path:
            if mount_path in paths:
                sink.errors.append(
                    (
                        (*mpath, "mountPath"),
                        f"{mount_path!r} is mounted twice (also volumeMounts[{paths[mount_path]}])",
                    )
                )
            else:
                paths[mount_path] = index
        sub_path = mount.get("subPath")
        if isinstance(sub_path, str) and (sub_path.startswith("/") or ".." in sub_path.split("/")):
            sink.errors.append(((*mpath, "subPath"), "must be a relative path without '..'"))


def _check_container(
    container: dict[str, Any],
    cpath: FieldPath,
    sink: Sink,
    host_ports: dict[tuple[str, int], FieldPath],
    host_network: bool,
) -> None:
    port_names = _check_container_ports(container, cpath, sink, host_ports, host_network)
    _check_resources(_mapping(container.get("resources")), (*cpath, "resources"), sink)
    for probe_field in ("livenessProbe", "readinessProbe"):
        probe = container.get(probe_field)
        if isinstance(probe, dict):
            _check_probe(
                probe,
                (*cpath, probe_field),
                sink,
                port_names,
                liveness=probe_field == "livenessProbe",
            )


def _check_container_ports(
    container: dict[str, Any],
    cpath: FieldPath,
    sink: Sink,
    host_ports: dict[tuple[str, int], FieldPath],
    host_network: bool,
) -> set[str]:
    names: dict[str, int] = {}
    for index, port in enumerate(_list(container.get("ports"))):
        if not isinstance(port, dict):
            continue
        ppath = (*cpath, "ports", index)
        name = port.get("name")
        if isinstance(name, str) and name:
            if name in names:
                sink.errors.append(
                    ((*ppath, "name"), f"duplicate port name {name!r} (also ports[{names[name]}])")
                )
            else:
                names[name] = index
        host_port = port.get("hostPort")
        container_port = port.get("containerPort")
        protocol = port.get("protocol") or "TCP"
        if (
            host_network
            and isinstance(host_port, int)
            and host_port
            and host_port != container_port
        ):
            sink.errors.append(
                ((*ppath, "hostPort"), "with hostNetwork, hostPort must equal containerPort")
            )
        if host_network and not host_port and isinstance(container_port, int):
            host_port = container_port
        if isinstance(host_port, int) and host_port > 0 and isinstance(protocol, str):
            other = host_ports.get((protocol, host_port))
            if other is not None:
                sink.errors.append(
                    (
                        (*ppath, "hostPort"),
                        f"host port {host_port}/{protocol} is already used by {format_path(other)}",
                    )
                )
            else:
                host_ports[(protocol, host_port)] = ppath
    return set(names)


def _check_resources(resources: dict[str, Any], path: FieldPath, sink: Sink) -> None:
    limits = _mapping(resources.get("limits"))
    requests = _mapping(resources.get("requests"))
    for resource, request in requests.items():
        if resource not in limits:
            continue
        try:
            over = parse_quantity(request) > parse_quantity(limits[resource])
        except (QuantityError, TypeError):
            continue  # reported by the schema
        if over:
            sink.errors.append(
                (
                    (*path, "requests", resource),
                    f"request {request} is more than the limit {limits[resource]}",
                )
            )


_HANDLERS = ("exec", "httpGet", "tcpSocket", "grpc")


def _check_probe(
    probe: dict[str, Any], path: FieldPath, sink: Sink, port_names: set[str], *, liveness: bool
) -> None:
    handlers = [h for h in _HANDLERS if probe.get(h) is not None]
    if not handlers:
        sink.errors.append(
            (path, "a probe needs exactly one handler: exec, httpGet, tcpSocket or grpc")
        )
    elif len(handlers) > 1:
        sink.errors.append(
            (
                path,
                f"a probe needs exactly one handler, this one has {len(handlers)}: "
                + ", ".join(handlers),
            )
        )
    if (
        liveness
        and isinstance(probe.get("successThreshold"), int)
        and probe["successThreshold"] != 1
    ):
        sink.errors.append(((*path, "successThreshold"), "must be 1 for a liveness probe"))
    for handler in ("httpGet", "tcpSocket"):
        port = _mapping(probe.get(handler)).get("port")
        if isinstance(port, str) and port and port not in port_names:
            known = ", ".join(sorted(port_names)) or "none"
            sink.errors.append(
                (
                    (*path, handler, "port"),
                    f"no port named {port!r} in this container (named ports: {known})",
                )
            )


def _check_rc_spec(spec: dict[str, Any], sink: Sink) -> None:
    template = _mapping(spec.get("template"))
    labels = _mapping(_mapping(template.get("metadata")).get("labels"))
    selector = _mapping(spec.get("selector"))
    tpath: FieldPath = ("spec", "template")
    if not labels:
        sink.errors.append(
            (
                (*tpath, "metadata", "labels"),
                "the pod template needs labels (the controller finds its pods by them)",
            )
        )
    elif selector:
        missing = {k: v for k, v in selector.items() if labels.get(k) != v}
        if missing:
            shown = ", ".join(f"{k}={v}" for k, v in sorted(missing.items()))
            sink.errors.append(
                (
                    ("spec", "selector"),
                    f"selector does not match the template labels ({shown} not in "
                    "spec.template.metadata.labels): the controller would never see its pods",
                )
            )
    pod_spec = _mapping(template.get("spec"))
    policy = pod_spec.get("restartPolicy")
    if isinstance(policy, str) and policy != "Always":
        sink.errors.append(
            (
                (*tpath, "spec", "restartPolicy"),
                f"must be Always in a ReplicationController, not {policy!r}",
            )
        )
    _check_annotations(_mapping(template.get("metadata")), (*tpath, "metadata"), sink)
    _check_pod_spec(pod_spec, (*tpath, "spec"), sink)


def _check_service_spec(spec: dict[str, Any], sink: Sink) -> None:
    path: FieldPath = ("spec",)
    headless = spec.get("clusterIP") == "None"
    service_type = spec.get("type") or "ClusterIP"
    ports = _list(spec.get("ports"))
    if not ports and not headless:
        sink.errors.append(
            ((*path, "ports"), "a Service needs at least one port (or clusterIP: None)")
        )
    if headless and service_type in ("NodePort", "LoadBalancer"):
        sink.errors.append(
            ((*path, "clusterIP"), f"a {service_type} Service cannot be headless (clusterIP: None)")
        )
    if spec.get("sessionAffinityConfig") is not None and spec.get("sessionAffinity") != "ClientIP":
        sink.errors.append(((*path, "sessionAffinityConfig"), "needs sessionAffinity: ClientIP"))
    names: dict[str, int] = {}
    numbers: dict[tuple[str, Any], int] = {}
    node_ports: dict[Any, int] = {}
    for index, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        ppath = (*path, "ports", index)
        name = port.get("name")
        if len(ports) > 1 and not name:
            sink.errors.append(((*ppath, "name"), "required when a Service has more than one port"))
        if isinstance(name, str) and name:
            if name in names:
                sink.errors.append(
                    ((*ppath, "name"), f"duplicate port name {name!r} (also ports[{names[name]}])")
                )
            else:
                names[name] = index
        key = (port.get("protocol") or "TCP", port.get("port"))
        if isinstance(key[0], str) and isinstance(key[1], int):
            if key in numbers:
                sink.errors.append(
                    (
                        (*ppath, "port"),
                        f"duplicate port {key[1]}/{key[0]} (also ports[{numbers[key]}])",
                    )
                )
            else:
                numbers[key] = index
        node_port = port.get("nodePort")
        # 0 means "not set", as in `kubectl get -o yaml` output of ClusterIP Services
        if node_port is not None and node_port != 0 and not isinstance(node_port, dict | list):
            if service_type not in ("NodePort", "LoadBalancer"):
                sink.errors.append(
                    (
                        (*ppath, "nodePort"),
                        f"nodePort needs type NodePort or LoadBalancer, not {service_type}",
                    )
                )
            elif node_port in node_ports:
                sink.errors.append(
                    (
                        (*ppath, "nodePort"),
                        f"duplicate nodePort {node_port} (also ports[{node_ports[node_port]}])",
                    )
                )
            else:
                node_ports[node_port] = index


def _check_endpoints(data: dict[str, Any], sink: Sink) -> None:
    for index, subset in enumerate(_list(data.get("subsets"))):
        ports = _list(_mapping(subset).get("ports"))
        if len(ports) > 1:
            for pindex, port in enumerate(ports):
                if isinstance(port, dict) and not port.get("name"):
                    sink.errors.append(
                        (
                            ("subsets", index, "ports", pindex, "name"),
                            "required when a subset has more than one port",
                        )
                    )


# ---------------------------------------------------------------- apps/v1, config


def _check_apps_spec(kind: str, spec: dict[str, Any], sink: Sink) -> None:
    """Deployment and ReplicaSet: the selector, the template and the strategy."""
    template = _mapping(spec.get("template"))
    tpath: FieldPath = ("spec", "template")
    labels = _mapping(_mapping(template.get("metadata")).get("labels"))
    selector = spec.get("selector")
    if isinstance(selector, dict):
        expressions = _check_selector(selector, ("spec", "selector"), sink)
        match_labels = _mapping(selector.get("matchLabels"))
        if not match_labels and not _list(selector.get("matchExpressions")):
            sink.errors.append(
                (
                    ("spec", "selector"),
                    "the selector is empty: it would match every pod in the namespace; "
                    "give matchLabels or matchExpressions",
                )
            )
        elif (
            expressions is not None
            and all(isinstance(v, str) for v in match_labels.values())
            and not expressions_match(match_labels, expressions, labels)
        ):
            sink.errors.append(
                (
                    ("spec", "selector"),
                    "selector does not match the template labels "
                    f"({_labels_text(labels)}): the {kind} would never see its pods",
                )
            )
    pod_spec = _mapping(template.get("spec"))
    policy = pod_spec.get("restartPolicy")
    if isinstance(policy, str) and policy != "Always":
        sink.errors.append(
            ((*tpath, "spec", "restartPolicy"), f"must be Always in a {kind}, not {policy!r}")
        )
    _check_annotations(_mapping(template.get("metadata")), (*tpath, "metadata"), sink)
    _check_pod_spec(pod_spec, (*tpath, "spec"), sink)
    if kind == "Deployment":
        _check_strategy(spec, sink)


def _labels_text(labels: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(labels.items())) or "no labels"


def _check_selector(
    selector: dict[str, Any], path: FieldPath, sink: Sink
) -> list[tuple[str, str, list[str]]] | None:
    """The selector's expressions as ``expressions_match`` takes them, or None
    when one of them is malformed (reported)."""
    out: list[tuple[str, str, list[str]]] = []
    ok = True
    for index, expr in enumerate(_list(selector.get("matchExpressions"))):
        if not isinstance(expr, dict):
            ok = False
            continue
        epath = (*path, "matchExpressions", index)
        key, operator, values = expr.get("key"), expr.get("operator"), expr.get("values")
        if values is None:
            values = []
        if not isinstance(key, str) or not isinstance(values, list):
            ok = False
            continue
        if operator in ("In", "NotIn"):
            if not values:
                ok = False
                sink.errors.append(
                    ((*epath, "values"), f"operator {operator} needs at least one value")
                )
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                ok = False
                sink.errors.append(((*epath, "values"), f"operator {operator} takes no values"))
        else:
            ok = False  # reported by the schema
            continue
        for vindex, value in enumerate(values):
            if not isinstance(value, str):
                ok = False
                continue
            problem = check_label_value(value)
            if problem:
                sink.errors.append(((*epath, "values", vindex), problem))
        out.append((key, operator, [v for v in values if isinstance(v, str)]))
    return out if ok else None


def _is_zero(value: Any) -> bool:
    return value == 0 or value == "0%"


def _check_strategy(spec: dict[str, Any], sink: Sink) -> None:
    path: FieldPath = ("spec", "strategy")
    strategy = _mapping(spec.get("strategy"))
    kind = strategy.get("type") or "RollingUpdate"
    rolling = strategy.get("rollingUpdate")
    if kind == "Recreate" and rolling is not None:
        sink.errors.append(
            ((*path, "rollingUpdate"), "may not be given when strategy type is Recreate")
        )
    if isinstance(rolling, dict):
        surge = rolling.get("maxSurge")
        unavailable = rolling.get("maxUnavailable")
        if _is_zero(surge) and _is_zero(unavailable):
            sink.errors.append(
                (
                    (*path, "rollingUpdate", "maxUnavailable"),
                    "maxUnavailable and maxSurge may not both be 0: the rollout could never "
                    "make progress",
                )
            )
        if isinstance(unavailable, str) and unavailable.endswith("%"):
            digits = unavailable[:-1]
            if digits.isdigit() and int(digits) > 100:
                sink.errors.append(
                    ((*path, "rollingUpdate", "maxUnavailable"), "may not be more than 100%")
                )
    deadline = spec.get("progressDeadlineSeconds")
    ready = spec.get("minReadySeconds")
    if (
        isinstance(deadline, int)
        and isinstance(ready, int)
        and not isinstance(deadline, bool)
        and not isinstance(ready, bool)
        and deadline <= ready
    ):
        sink.errors.append(
            (
                ("spec", "progressDeadlineSeconds"),
                f"must be more than minReadySeconds ({ready}), not {deadline}",
            )
        )


#: Kubernetes' limit on the data of one ConfigMap or Secret
MAX_CONFIG_BYTES = 1 << 20

#: Secret types Kubernetes checks, and the keys each needs (any one of a tuple)
_SECRET_KEYS: dict[str, tuple[tuple[str, ...], ...]] = {
    "kubernetes.io/tls": (("tls.crt",), ("tls.key",)),
    "kubernetes.io/dockerconfigjson": ((".dockerconfigjson",),),
    "kubernetes.io/dockercfg": ((".dockercfg",),),
    "kubernetes.io/ssh-auth": (("ssh-privatekey",),),
    "kubernetes.io/basic-auth": (("username", "password"),),
}


def _config_size(*maps: dict[str, Any]) -> int:
    return sum(len(k) + len(v) for m in maps for k, v in m.items() if isinstance(v, str))


def _check_config_map(data: dict[str, Any], sink: Sink) -> None:
    text = _mapping(data.get("data"))
    binary = _mapping(data.get("binaryData"))
    for key in binary:
        if key in text:
            sink.errors.append(
                (("binaryData", key), f"key {key!r} is also in data: a key may be in only one")
            )
    size = _config_size(text, binary)
    if size > MAX_CONFIG_BYTES:
        sink.errors.append(((), f"data totals {size} bytes, over Kubernetes' 1 MiB limit"))


def _check_secret(data: dict[str, Any], sink: Sink) -> None:
    values = _mapping(data.get("data"))
    strings = _mapping(data.get("stringData"))
    size = _config_size(values, strings)
    if size > MAX_CONFIG_BYTES:
        sink.errors.append(((), f"data totals {size} bytes, over Kubernetes' 1 MiB limit"))
    secret_type = data.get("type")
    needed = _SECRET_KEYS.get(secret_type) if isinstance(secret_type, str) else None
    keys = set(values) | set(strings)
    for options in needed or ():
        if not keys & set(options):
            shown = " or ".join(repr(o) for o in options)
            sink.errors.append((("data",), f"a Secret of type {secret_type} needs the key {shown}"))


# ---------------------------------------------------------------- files


def _identity(data: Any) -> tuple[str, str]:
    if not isinstance(data, dict):
        return "", ""
    kind = data.get("kind")
    name = _mapping(data.get("metadata")).get("name")
    return (kind if isinstance(kind, str) else "", name if isinstance(name, str) else "")


def _without(data: dict[str, Any], paths: list[FieldPath]) -> dict[str, Any]:
    """``data`` less the fields at ``paths``; containers on those paths are copied, not changed."""
    root = dict(data)
    copied = {id(root)}
    for path in paths:
        node: Any = root
        for part in path[:-1]:
            child = node[part]
            if id(child) not in copied:
                child = dict(child) if isinstance(child, dict) else list(child)
                copied.add(id(child))
                node[part] = child
            node = child
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return root


def _build_object(
    data: dict[str, Any], ignored: list[tuple[FieldPath, str]], custom: CustomKinds | None = None
) -> ApiObject:
    clean = _without(data, [path for path, _ in ignored]) if ignored else data
    kind, api_version = clean["kind"], clean["apiVersion"]
    if API_VERSIONS.get(kind) != api_version:
        storable = storable_kind(api_version, kind, custom)
        assert storable is not None  # validated
        resource, namespaced = storable
        stored = unsupported_class(api_version, kind, resource=resource, namespaced=namespaced)
        obj: ApiObject = stored.from_dict(clean)
        if stored.NAMESPACED and not obj.metadata.namespace:
            obj.metadata.namespace = "default"
        return obj
    cls = KINDS[kind]
    obj = cls.from_dict(clean)
    if cls.NAMESPACED and not obj.metadata.namespace:
        obj.metadata.namespace = "default"
    if isinstance(obj, Secret) and obj.string_data:
        # as the API server does: stringData is written into data (and wins), never stored
        for key, value in obj.string_data.items():
            obj.data[key] = base64.b64encode(value.encode()).decode()
        obj.string_data = {}
    return obj


def load_manifests(
    data: bytes,
    path: str,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    unsupported: str = "error",
    custom: CustomKinds | None = None,
) -> tuple[list[Manifest], list[ManifestError], list[IgnoredField]]:
    """Parse and validate one file's bytes (``path`` is used in messages only;
    ``unsupported`` as for ``validate_document``; ``custom``: the kinds the
    CustomResourceDefinitions of the whole set declare, ``custom_kinds_of``).

    Returns the valid documents, every error, and the ignored fields.
    A document with any error yields no Manifest.
    """
    documents, problems = parse_documents(data, path, max_bytes=max_bytes)
    errors = [ManifestError(path, p.line, p.document, "", "", "", p.message) for p in problems]
    manifests: list[Manifest] = []
    ignored: list[IgnoredField] = []
    for whole in documents:
        for doc, list_errors in _list_items(whole):
            if doc.data is None:  # the List around items
                kind = _identity(whole.data)[0]
                errors += [_error(path, doc, kind, "", p, m) for p, m in list_errors]
                errors += [
                    ManifestError(path, p.line, doc.index, kind, "", format_path(p.path), p.message)
                    for p in doc.problems
                ]
                continue
            kind, name = _identity(doc.data)
            try:
                found, skipped = validate_document(doc.data, unsupported=unsupported)
            except Exception as exc:  # a bug in gitkube: say where, never hide other files
                found = [((), f"gitkube could not check this object (a bug): {exc!r}")]
                skipped = []
            doc_errors = [
                ManifestError(path, p.line, doc.index, kind, name, format_path(p.path), p.message)
                for p in doc.problems
            ]
            doc_errors += [_error(path, doc, kind, name, fpath, msg) for fpath, msg in found]
            if is_secret(doc.data):
                # its values never reach a message, a log line or a report
                remember_secret(doc.data)
                doc_errors = [
                    replace(e, message=scrub_message(e.message, doc.data)) for e in doc_errors
                ]
            doc_errors.sort(key=lambda e: e.line)
            errors += doc_errors
            ignored += [
                IgnoredField(
                    path, doc.line_of(fpath), doc.index, kind, name, format_path(fpath), reason
                )
                for fpath, reason in skipped
            ]
            if not doc_errors:
                manifests.append(
                    Manifest(
                        path,
                        doc.index,
                        doc.line,
                        doc.data,
                        _build_object(doc.data, skipped, custom),
                        _field_lines(doc),
                    )
                )
    errors.sort(key=lambda e: (e.document, e.line))
    return manifests, errors, ignored


def _field_lines(doc: Document) -> Mapping[str, int]:
    """The lines of the ``_CROSS_FIELDS`` the document has, where they are
    not the object's first line."""
    lines = {}
    for fpath in _CROSS_FIELDS:
        value: Any = doc.data
        for part in fpath:
            value = value.get(part) if isinstance(value, dict) else None
        if value is not None and (line := doc.line_of(fpath)) != doc.line:
            lines[format_path(fpath)] = line
    return lines or _NO_LINES


def is_list_kind(api_version: Any, kind: Any) -> bool:
    """``List`` (v1) or a typed list such as ``ServiceList`` or ``DeploymentList``."""
    if not isinstance(kind, str) or not isinstance(api_version, str):
        return False
    if kind == "List":
        return api_version == "v1"
    item = kind[:-4]
    return kind.endswith("List") and (
        API_VERSIONS.get(item) == api_version or (api_version, item) in official_kinds()
    )


def _list_items(doc: Document) -> list[tuple[Document, list[tuple[FieldPath, str]]]]:
    """A document, or the items of a List document as documents of their own,
    each located at its own line, with the problems of the list itself."""
    data = doc.data
    if not isinstance(data, dict) or not is_list_kind(data.get("apiVersion"), data.get("kind")):
        return [(doc, [])]
    problems: list[tuple[FieldPath, str]] = [
        ((key,), f"unknown field {key!r} in a {data['kind']}")
        for key in data
        if key not in ("apiVersion", "kind", "metadata", "items")
    ]
    items = data.get("items")
    if items is not None and not isinstance(items, list):
        problems.append((("items",), f"must be a list, not {describe(items)}"))
        items = []
    list_doc = Document(doc.index, doc.line, None, doc.node, doc.problems)
    out: list[tuple[Document, list[tuple[FieldPath, str]]]] = [(list_doc, problems)]
    item_kind = data["kind"][:-4] if data["kind"] != "List" else None
    for index, item in enumerate(items or []):
        node = _item_node(doc, index)
        if item_kind is not None and isinstance(item, dict):
            # the items of a typed list may leave out their kind, as Kubernetes allows
            item = {"apiVersion": data["apiVersion"], "kind": item_kind, **item}
        line = node.start_mark.line + 1 if node is not None else doc.line
        problems_here = [
            replace(p, path=p.path[2:]) for p in doc.problems if p.path[:2] == ("items", index)
        ]
        out.append((Document(doc.index, line, item, node, problems_here), []))
    list_doc.problems = [p for p in doc.problems if p.path[:1] != ("items",)]
    return out


def _item_node(doc: Document, index: int) -> Any:
    node = doc.node
    if node is None:
        return None
    for part in ("items", index):
        found = _child(node, part)
        if found is None:
            return None
        node = found[1]
    return node


def _error(
    path: str, doc: Document, kind: str, name: str, fpath: FieldPath, message: str
) -> ManifestError:
    return ManifestError(
        path, doc.line_of(fpath), doc.index, kind, name, format_path(fpath), message
    )


def find_duplicates(manifests: list[Manifest]) -> list[ManifestError]:
    """One error per object declared again (same kind, namespace and name),
    at the later place, naming the first."""
    first: dict[tuple[str, str, str], Manifest] = {}
    errors: list[ManifestError] = []
    for manifest in sorted(manifests, key=lambda m: (m.path, m.document)):
        obj = manifest.obj
        key = (obj.KIND, obj.metadata.namespace, obj.metadata.name)
        earlier = first.get(key)
        if earlier is None:
            first[key] = manifest
            continue
        where = f" in namespace {key[1]!r}" if key[1] else ""
        errors.append(
            ManifestError(
                manifest.path,
                manifest.line,
                manifest.document,
                key[0],
                key[2],
                "metadata.name",
                f"{key[0]} {key[2]!r}{where} is declared twice: first at "
                f"{earlier.path}:{earlier.line} (document {earlier.document})",
            )
        )
    errors += _duplicate_cluster_ips(manifests)
    return errors


def _duplicate_cluster_ips(manifests: list[Manifest]) -> list[ManifestError]:
    """A clusterIP two Services declare: an error at the later, naming the first."""
    first: dict[str, Manifest] = {}
    errors: list[ManifestError] = []
    for manifest in sorted(manifests, key=lambda m: (m.path, m.document)):
        obj = manifest.obj
        if not isinstance(obj, Service):
            continue
        ip = obj.spec.cluster_ip
        if not ip or ip == "None":
            continue
        earlier = first.get(ip)
        if earlier is None:
            first[ip] = manifest
            continue
        if (earlier.obj.namespace, earlier.obj.name) == (obj.namespace, obj.name):
            continue  # the same Service twice: reported above
        errors.append(
            ManifestError(
                manifest.path,
                manifest.line_of("spec.clusterIP"),
                manifest.document,
                "Service",
                obj.name,
                "spec.clusterIP",
                f"clusterIP {ip} of Service {obj.namespace}/{obj.name} is also declared by "
                f"Service {earlier.obj.namespace}/{earlier.obj.name} at "
                f"{earlier.path}:{earlier.line_of('spec.clusterIP')}",
            )
        )
    return errors


def find_undeclared_namespaces(manifests: list[Manifest]) -> list[ManifestError]:
    """One error per namespaced object whose namespace is neither ``default``
    nor a Namespace declared among ``manifests``, naming both."""
    declared = {m.obj.name for m in manifests if m.obj.KIND == "Namespace"}
    errors: list[ManifestError] = []
    for manifest in sorted(manifests, key=lambda m: (m.path, m.document, m.line)):
        obj = manifest.obj
        namespace = obj.metadata.namespace
        if not obj.NAMESPACED or namespace in ("default", "") or namespace in declared:
            continue
        errors.append(
            ManifestError(
                manifest.path,
                manifest.line_of("metadata.namespace"),
                manifest.document,
                obj.KIND,
                obj.name,
                "metadata.namespace",
                f"{obj.KIND} {obj.name!r} is in namespace {namespace!r}, which is not declared "
                f"in git: add a Namespace {namespace!r} (or use the default namespace)",
            )
        )
    return errors


def find_unserved_versions(manifests: list[Manifest]) -> list[ManifestError]:
    """One error per custom resource whose CustomResourceDefinition is in git
    but does not serve its version (a cluster refuses it)."""
    custom = custom_kinds_of(manifests)
    errors: list[ManifestError] = []
    if not custom:
        return errors
    for manifest in manifests:
        obj = manifest.obj
        if not isinstance(obj, UnsupportedObject):
            continue
        group, _, version = obj.api_version.rpartition("/")
        declared = custom.get((group, obj.KIND))
        if declared is None or version in declared.versions:
            continue
        served = ", ".join(declared.versions) or "none"
        errors.append(
            ManifestError(
                manifest.path,
                manifest.line_of("apiVersion"),
                manifest.document,
                obj.KIND,
                obj.name,
                "apiVersion",
                f"version {version!r} of {declared.resource} is not served by the "
                f"CustomResourceDefinition {declared.crd!r} at {declared.where} "
                f"(it serves: {served})",
            )
        )
    return errors


def check_across_files(manifests: list[Manifest]) -> list[ManifestError]:
    """What only the whole set of manifests can tell: objects declared twice,
    namespaces used but not declared, and custom resources in versions their
    CustomResourceDefinition does not serve."""
    found = (
        find_duplicates(manifests)
        + find_undeclared_namespaces(manifests)
        + find_unserved_versions(manifests)
    )
    return sorted(found, key=lambda e: (e.file, e.document, e.line))


def validate_paths(
    paths: list[Path],
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    unsupported: str = "error",
    opener: Callable[[bytes, str], tuple[bytes, ManifestError | None]] | None = None,
) -> ValidationReport:
    """Validate files and directories (searched recursively, symlinks inside not followed).

    A path that cannot be read is an error in the report, not an exception.
    ``opener`` turns a file's bytes into what is validated, or an error (the
    CLI opens SOPS-encrypted files with it).
    """
    found = find_manifest_files(paths)
    report = ValidationReport(skipped=[str(p) for p in found.skipped])
    for folder, why in found.unreadable:
        report.errors.append(ManifestError(str(folder), 0, 0, "", "", "", f"cannot list: {why}"))
    read: list[tuple[str, bytes]] = []
    for file in found.files:
        name = str(file)
        report.files.append(name)
        try:
            size = os.stat(file).st_size
            if size > max_bytes:
                report.errors.append(
                    ManifestError(
                        name,
                        0,
                        0,
                        "",
                        "",
                        "",
                        f"file is {size} bytes, over the {max_bytes}-byte limit (--max-size)",
                    )
                )
                continue
            data = file.read_bytes()
        except OSError as exc:
            report.errors.append(
                ManifestError(name, 0, 0, "", "", "", f"cannot read: {exc.strerror or exc}")
            )
            continue
        if opener is not None:
            data, problem = opener(data, name)
            if problem is not None:
                report.errors.append(problem)
                continue
        read.append((name, data))
    custom: dict[tuple[str, str], CustomKind] = {}
    while True:
        # once more when the CustomResourceDefinitions found change how
        # custom resources are built (their scope, their plural)
        loaded = [
            load_manifests(data, name, max_bytes=max_bytes, unsupported=unsupported, custom=custom)
            for name, data in read
        ]
        declared = custom_kinds_of(m for manifests, _, _ in loaded for m in manifests)
        if declared == custom:
            break
        custom = declared
    for manifests, errors, ignored in loaded:
        report.manifests += manifests
        report.errors += errors
        report.ignored += ignored
    report.errors += check_across_files(report.manifests)
    return report
