"""The Kubernetes API, read-only: kubectl and the official clients read gitkube.

Served by the HTTP server of ``gitkube run`` and ``gitkube master``:

- discovery: ``/version``, ``/api``, ``/api/v1``, ``/apis``, ``/apis/apps/v1``
  (legacy discovery; a client that asks for aggregated discovery gets plain
  JSON and falls back, as it does with older servers), ``/openapi/v2``;
- get, list and watch of every kind the store holds (those gitkube runs;
  the official kinds it stores as they are; custom kinds, served as the
  CustomResourceDefinitions in the store say), namespaced and across
  namespaces, with ``labelSelector`` (the full grammar), ``fieldSelector``
  (metadata.name, metadata.namespace, spec.nodeName, status.phase, and
  involvedObject.* for events), ``limit``/``continue``, resourceVersion from
  the store revision, and the Table form kubectl asks for;
- ``pods/{name}/log`` from the runtime that ran the container;
- writes (POST, PUT, PATCH, DELETE) answer 405 with a Status whose message
  names the repository, branch and file that hold the object: git is the
  only way to change desired state.

A watch is fed by the store watch from the given resourceVersion; one the
store has compacted away answers with an ERROR event carrying a 410 Status,
as Kubernetes does, and clients re-list.

Secrets are served with their values redacted: the API is a view, and
values leave gitkube only into pods.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import functools
import json
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gitkube.api.annotations import SOURCE_PATH
from gitkube.api.keys import PREFIX, SYSTEM, object_key, parse_key, resource_prefix
from gitkube.api.labels import SelectorError, expressions_match, parse_selector
from gitkube.api.objects import KINDS, RESOURCES, ApiObject, Node, Pod, unsupported_class
from gitkube.api.redact import is_secret, redact_object
from gitkube.api.validation import crd_definition
from gitkube.errors import Compacted, FutureRevision, GitkubeError
from gitkube.server.watchhub import HubEvent, TooOld, WatchHub
from gitkube.store.base import KeyValue
from gitkube.store.objects import ObjectStore, decode

log = logging.getLogger(__name__)

#: the Kubernetes version whose API this answers as
KUBE_MAJOR, KUBE_MINOR = "1", "30"

SHORT_NAMES: dict[str, tuple[str, ...]] = {
    "pods": ("po",),
    "replicationcontrollers": ("rc",),
    "services": ("svc",),
    "endpoints": ("ep",),
    # `kubectl get minions`, as in Kubernetes' first releases
    "nodes": ("no", "minions"),
    "namespaces": ("ns",),
    "configmaps": ("cm",),
    "deployments": ("deploy",),
    "replicasets": ("rs",),
    "events": ("ev",),
    # official kinds gitkube stores as they are, as a cluster names them
    "serviceaccounts": ("sa",),
    "persistentvolumeclaims": ("pvc",),
    "persistentvolumes": ("pv",),
    "ingresses": ("ing",),
    "networkpolicies": ("netpol",),
    "horizontalpodautoscalers": ("hpa",),
    "poddisruptionbudgets": ("pdb",),
    "statefulsets": ("sts",),
    "daemonsets": ("ds",),
    "cronjobs": ("cj",),
    "customresourcedefinitions": ("crd", "crds"),
    "storageclasses": ("sc",),
    "resourcequotas": ("quota",),
    "limitranges": ("limits",),
    "priorityclasses": ("pc",),
    "certificatesigningrequests": ("csr",),
}
#: what ``kubectl get all`` lists, as in a cluster
ALL_CATEGORY = frozenset(
    {
        "pods",
        "replicationcontrollers",
        "services",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "horizontalpodautoscalers",
    }
)
READ_VERBS = ["get", "list", "watch"]
TABLE_MEDIA = "as=Table"


# ---------------------------------------------------------------- resources


@dataclass(frozen=True)
class ApiResource:
    cls: type[ApiObject]
    group: str
    version: str
    #: its name in paths when that is not the store's resource name (a
    #: custom kind's plural: its objects are stored as ``<plural>.<group>``)
    name: str = ""
    singular: str = ""
    short_names: tuple[str, ...] = ()

    @property
    def plural(self) -> str:
        """The resource's name in paths (``pods``, ``clusterissuers``)."""
        return self.name or self.cls.RESOURCE

    @property
    def stored_as(self) -> str:
        """The resource of its store keys (``pods``, ``clusterissuers.cert-manager.io``)."""
        return self.cls.RESOURCE

    def key(self, namespace: str, name: str) -> str:
        """The store key of object ``name`` (in ``namespace``, when namespaced)."""
        return object_key(self.stored_as, namespace, name, namespaced=self.namespaced)

    @property
    def kind(self) -> str:
        return self.cls.KIND

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def aliases(self) -> tuple[str, ...]:
        """Its short names: as its definition says, else as a cluster names it."""
        return self.short_names or SHORT_NAMES.get(self.plural, ())

    @property
    def namespaced(self) -> bool:
        return self.cls.NAMESPACED

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def discovery(self) -> dict[str, Any]:
        out = {
            "name": self.plural,
            "singularName": self.singular_name,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": READ_VERBS,
            "shortNames": list(self.aliases),
        }
        if self.plural in ALL_CATEGORY:
            out["categories"] = ["all"]
        return out


def api_resources(custom: list[ApiResource] | None = None) -> list[ApiResource]:
    """Every kind the store can hold, with its group and version (read at call
    time, so kinds registered later are served too): the kinds gitkube runs,
    the official kinds it stores as they are (``--unsupported-kinds store``),
    and ``custom`` (the kinds of the CustomResourceDefinitions in the store)."""
    out = []
    classes = {**{cls.RESOURCE: cls for cls in KINDS.values()}, **RESOURCES}
    for cls in classes.values():
        group, _, version = cls().api_version.rpartition("/")
        out.append(ApiResource(cls, group, version))
    out += [r for r in _stored_official() if r.cls.RESOURCE not in classes]
    return out + list(custom or ())


@functools.cache
def _stored_official() -> tuple[ApiResource, ...]:
    """The official kinds gitkube stores without running them (those it runs,
    and events.k8s.io's Events, which are not core Events, are left out by
    ``api_resources``)."""
    from gitkube.api.schema import official_kinds

    out = []
    for official in sorted(official_kinds().values(), key=lambda k: (k.api_version, k.kind)):
        stored = unsupported_class(
            official.api_version,
            official.kind,
            resource=official.resource,
            namespaced=official.namespaced,
        )
        group, _, version = official.api_version.rpartition("/")
        out.append(ApiResource(stored, group, version))
    return tuple(out)


def custom_resources(crds: list[KeyValue]) -> list[ApiResource]:
    """The kinds the stored CustomResourceDefinitions serve, one per served version."""
    out = []
    for kv in crds:
        try:
            data = json.loads(kv.value)
        except ValueError:
            continue
        crd = crd_definition(data) if isinstance(data, dict) else None
        if crd is None:
            continue
        for version in crd.versions:
            cls = unsupported_class(
                f"{crd.group}/{version}",
                crd.kind,
                resource=f"{crd.plural}.{crd.group}",
                namespaced=crd.namespaced,
            )
            out.append(
                ApiResource(
                    cls,
                    crd.group,
                    version,
                    name=crd.plural,
                    singular=crd.singular,
                    short_names=crd.short_names,
                )
            )
    return out


def version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes' order of versions in a group: GA before beta before alpha,
    higher numbers first (v2 > v1 > v1beta2 > v1beta1 > v1alpha1 > others)."""
    found = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if found is None:
        return (0, 0, 0)
    major, level, minor = found.groups()
    rank = {"alpha": 1, "beta": 2}.get(level or "", 3)
    return (rank, int(major), int(minor or 0))


def find_resource(
    group: str, version: str, plural: str, resources: list[ApiResource] | None = None
) -> ApiResource | None:
    for res in resources if resources is not None else api_resources():
        if res.group == group and res.version == version and res.plural == plural:
            return res
    return None


# ---------------------------------------------------------------- statuses


def status_body(code: int, reason: str, message: str, **details: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if details:
        body["details"] = details
    return body


def status_response(code: int, reason: str, message: str, **details: Any) -> web.Response:
    return web.json_response(status_body(code, reason, message, **details), status=code)


class BadRequest(GitkubeError):
    """A query the API refuses (400)."""


# ---------------------------------------------------------------- selectors


@dataclass(frozen=True)
class FieldRequirement:
    path: str
    value: str
    equal: bool


FIELD_PATHS = {
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
    "involvedObject.kind",
    "involvedObject.name",
    "involvedObject.namespace",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "type",
    "source",
}


def parse_field_selector(text: str) -> list[FieldRequirement]:
    out = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        for op in ("!=", "==", "="):
            path, sep, value = item.partition(op)
            if sep:
                break
        else:
            raise BadRequest(f"invalid field selector {item!r}: expected field=value")
        path = path.strip()
        if path not in FIELD_PATHS:
            raise BadRequest(
                f"field label not supported: {path} (supported: {', '.join(sorted(FIELD_PATHS))})"
            )
        out.append(FieldRequirement(path, value.strip(), op != "!="))
    return out


def _field_value(data: dict[str, Any], path: str) -> str:
    if path == "source":
        return str((data.get("source") or {}).get("component", ""))
    value: Any = data
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if path == "metadata.namespace" and value is None:
        return ""
    if path == "status.phase" and value is None and data.get("kind") == "Pod":
        return "Pending"
    return "" if value is None else str(value)


@dataclass(frozen=True)
class Filter:
    labels: list[tuple[str, str, list[str]]]
    fields: list[FieldRequirement]

    def matches(self, data: dict[str, Any]) -> bool:
        if self.labels:
            labels = (data.get("metadata") or {}).get("labels") or {}
            if not expressions_match({}, self.labels, labels):
                return False
        return all((_field_value(data, f.path) == f.value) == f.equal for f in self.fields)


def make_filter(query: Any) -> Filter:
    try:
        labels = parse_selector(query.get("labelSelector", ""))
    except SelectorError as exc:
        raise BadRequest(str(exc)) from None
    return Filter(labels, parse_field_selector(query.get("fieldSelector", "")))


# ---------------------------------------------------------------- continue tokens


def encode_continue(revision: int, last_key: str) -> str:
    raw = json.dumps({"v": "gitkube/v1", "rv": revision, "start": last_key})
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_continue(token: str) -> tuple[int, str]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), str(data["start"])
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise BadRequest(f"invalid continue token {token[:40]!r}") from None


# ---------------------------------------------------------------- redaction


def served_form(kv: KeyValue) -> dict[str, Any]:
    """The object as the API serves it: the stored wire form with its
    resourceVersion, Secret values redacted."""
    data: dict[str, Any] = json.loads(kv.value)
    data.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    if is_secret(data):
        data = redact_object(data)  # the one redaction every surface uses
    return data


# ---------------------------------------------------------------- tables


def _column(name: str, priority: int = 0, type_: str = "string") -> dict[str, Any]:
    fmt = "name" if name == "Name" else ""
    return {"name": name, "type": type_, "format": fmt, "description": "", "priority": priority}


def table_rows(
    cls: type[ApiObject], objs: list[ApiObject], now: datetime, pods: list[Pod]
) -> tuple[list[dict[str, Any]], list[list[Any]]]:
    """Column definitions and cells, as ``gitkube get`` prints them (wide
    columns get priority 1, so ``kubectl get -o wide`` shows them)."""
    from gitkube.cli import get_cmd

    headers = get_cmd.HEADERS.get(cls)
    if headers is None:
        columns = [_column("Name"), _column("Age")]
        return columns, [[o.name, get_cmd._age(o, now)] for o in objs]
    base, extra = headers
    names = [*base, *extra] + (["AGE"] if cls is Node else [])
    priorities = [0] * len(base) + [1] * len(extra) + ([0] if cls is Node else [])
    columns = [
        _column(n.title() if n == "NAME" else n.capitalize(), p)
        for n, p in zip(names, priorities, strict=True)
    ]
    if columns[0]["name"] == "Name":
        columns[0]["format"] = "name"
    rows = [get_cmd.object_row(o, now, wide=True, pods=pods) for o in objs]
    return columns, rows


def partial_metadata(data: dict[str, Any], group_version: str) -> dict[str, Any]:
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": data.get("metadata", {}),
    }


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return TABLE_MEDIA in first.replace(" ", "")


# ---------------------------------------------------------------- the API


@dataclass
class GitLocation:
    repo: str
    branch: str
    path: str


class KubeApi:
    """Routes of the read-only Kubernetes API on an aiohttp application."""

    def __init__(
        self,
        objects: ObjectStore,
        *,
        git: Callable[[], Awaitable[GitLocation | None]] | None = None,
        bookmark_seconds: float = 10.0,
        open_log: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        self.objects = objects
        self.store = objects.store
        self.git = git
        self.bookmark_seconds = bookmark_seconds
        self.open_log = open_log
        self._closing = asyncio.Event()
        self._hub: WatchHub | None = None
        #: the kinds of the stored CustomResourceDefinitions, by their keys and revisions
        self._custom: tuple[tuple[tuple[str, int], ...], list[ApiResource]] | None = None

    def close(self) -> None:
        """End open watches (the server is stopping)."""
        self._closing.set()
        if self._hub is not None:
            self._hub._task.cancel()
            self._hub = None

    def register(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/version", self._version)
        r.add_get("/api", self._api_versions)
        r.add_get("/api/v1", self._core_resources)
        r.add_get("/apis", self._api_groups)
        r.add_get("/apis/{group}", self._api_group)
        r.add_get("/apis/{group}/{version}", self._group_resources)
        r.add_get("/openapi/v2", self._openapi_v2)
        r.add_get("/openapi/v3", self._openapi_v3_root)
        r.add_get("/openapi/v3/{gv:.+}", self._openapi_v3)
        for base in ("/api/{version}", "/apis/{group}/{version}"):
            r.add_get(base + "/namespaces/{namespace}/pods/{name}/log", self._pod_log)
            r.add_get(base + "/namespaces/{namespace}/{plural}/{name}", self._get)
            r.add_get(base + "/namespaces/{namespace}/{plural}", self._list)
            r.add_get(base + "/{plural}/{name}", self._get)
            r.add_get(base + "/{plural}", self._list)
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            r.add_route(method, "/api/{tail:.*}", self._write)
            r.add_route(method, "/apis/{tail:.*}", self._write)

    # ------------------------------------------------------------ discovery

    async def _version(self, request: web.Request) -> web.Response:
        from gitkube import __version__

        return web.json_response(
            {
                "major": KUBE_MAJOR,
                "minor": KUBE_MINOR,
                "gitVersion": f"v{KUBE_MAJOR}.{KUBE_MINOR}.0-gitkube.{__version__}",
                "gitCommit": "",
                "gitTreeState": "clean",
                "buildDate": "",
                "goVersion": "",
                "compiler": "gitkube",
                "platform": "linux/amd64",
            }
        )

    async def _api_versions(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}
                ],
            }
        )

    async def _resources(self) -> list[ApiResource]:
        """What is served now: ``api_resources`` and the kinds of the
        CustomResourceDefinitions in the store."""
        crds, _ = await self.store.range(PREFIX + "customresourcedefinitions/")
        seen = tuple((kv.key, kv.mod_revision) for kv in crds)
        if self._custom is None or self._custom[0] != seen:
            # definitions are large (their schemas) and rarely change: read once each
            self._custom = (seen, custom_resources(crds))
        return api_resources(self._custom[1])

    def _resource_list(self, group_version: str, served: list[ApiResource]) -> dict[str, Any]:
        resources = [r.discovery() for r in served if r.group_version == group_version]
        resources += (
            [
                {
                    "name": "pods/log",
                    "singularName": "",
                    "namespaced": True,
                    "kind": "Pod",
                    "verbs": ["get"],
                }
            ]
            if group_version == "v1"
            else []
        )
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": group_version,
            "resources": resources,
        }

    async def _core_resources(self, request: web.Request) -> web.Response:
        return web.json_response(self._resource_list("v1", api_resources()))

    async def _groups(self) -> list[dict[str, Any]]:
        versions: dict[str, set[str]] = {}
        for res in await self._resources():
            if res.group:
                versions.setdefault(res.group, set()).add(res.version)
        out = []
        for group, vs in sorted(versions.items()):
            ordered = sorted(vs, key=version_priority, reverse=True)
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in ordered]
            out.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return out

    async def _api_groups(self, request: web.Request) -> web.Response:
        return web.json_response(
            {"kind": "APIGroupList", "apiVersion": "v1", "groups": await self._groups()}
        )

    async def _api_group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        for entry in await self._groups():
            if entry["name"] == group:
                return web.json_response({"kind": "APIGroup", "apiVersion": "v1", **entry})
        return status_response(
            404, "NotFound", f"the server could not find the requested resource (group {group})"
        )

    async def _group_resources(self, request: web.Request) -> web.Response:
        group, version = request.match_info["group"], request.match_info["version"]
        body = self._resource_list(f"{group}/{version}", await self._resources())
        if not body["resources"]:
            return status_response(
                404,
                "NotFound",
                f"the server could not find the requested resource ({group}/{version})",
            )
        return web.json_response(body)

    async def _openapi_v2(self, request: web.Request) -> web.Response:
        from gitkube.server.openapi import openapi_v2

        if "protobuf" in request.headers.get("Accept", ""):
            # older kubectl (≤ 1.26) reads only the protobuf form; an empty
            # message is a Document with no definitions: the kinds are left
            # to the server, which refuses every write anyway
            return web.Response(body=b"", content_type="application/octet-stream")

        return web.json_response(openapi_v2(await self._resources()))

    async def _openapi_v3_root(self, request: web.Request) -> web.Response:
        from gitkube.server.openapi import openapi_v3_root

        return web.json_response(openapi_v3_root(await self._resources()))

    async def _openapi_v3(self, request: web.Request) -> web.Response:
        from gitkube.server.openapi import openapi_v3

        doc = openapi_v3(await self._resources(), request.match_info["gv"])
        if doc is None:
            return status_response(
                404, "NotFound", "the server could not find the requested resource"
            )
        return web.json_response(doc)

    # ------------------------------------------------------------ reads

    async def _resolve(self, request: web.Request) -> tuple[ApiResource, str | None]:
        info = request.match_info
        group = info.get("group", "")
        version = info.get("version", "v1")
        plural = info["plural"]
        res = find_resource(group, version, plural)
        if res is None and group:  # a custom kind, if a definition in the store serves it
            res = find_resource(group, version, plural, await self._resources())
        if res is None:
            raise web.HTTPNotFound(
                text=json.dumps(
                    status_body(404, "NotFound", "the server could not find the requested resource")
                ),
                content_type="application/json",
            )
        namespace = info.get("namespace")
        if namespace is not None and not res.namespaced:
            raise web.HTTPNotFound(
                text=json.dumps(status_body(404, "NotFound", f"{plural} is not namespaced")),
                content_type="application/json",
            )
        return res, namespace

    async def _get(self, request: web.Request) -> web.StreamResponse:
        res, namespace = await self._resolve(request)
        name = request.match_info["name"]
        if res.namespaced and namespace is None:
            # /api/v1/namespaces/{name} reads the Namespace; others need one
            return status_response(
                404, "NotFound", "the server could not find the requested resource"
            )
        kv = await self.store.get(res.key(namespace or "", name))
        if kv is None:
            return status_response(
                404,
                "NotFound",
                f'{res.plural} "{name}" not found',
                name=name,
                kind=res.plural,
            )
        data = served_form(kv)
        if wants_table(request):
            return web.json_response(
                await self._table(res, [kv], await self.store.revision(), request)
            )
        return web.json_response(data)

    async def _list(self, request: web.Request) -> web.StreamResponse:
        res, namespace = await self._resolve(request)
        try:
            selector = make_filter(request.query)
        except BadRequest as exc:
            return status_response(400, "BadRequest", str(exc))
        if request.query.get("watch") in ("1", "true"):
            return await self._watch(request, res, namespace, selector)
        try:
            limit = int(request.query.get("limit") or 0)
            token = request.query.get("continue", "")
            start_key = ""
            revision_of_list = 0
            if token:
                revision_of_list, start_key = decode_continue(token)
        except (ValueError, BadRequest) as exc:
            return status_response(400, "BadRequest", str(exc))
        try:
            # a continued list reads where its first page did, as Kubernetes
            # does: one consistent list across pages, or 410 Expired once that
            # history is compacted (kubectl's pager then lists again, whole)
            kvs, revision = await self.store.range(
                resource_prefix(res.stored_as, namespace), revision=revision_of_list
            )
        except Compacted:
            return status_response(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list "
                "result. You can start a new list without the continue parameter.",
            )
        except FutureRevision:
            return status_response(400, "BadRequest", f"invalid continue token {token[:40]!r}")
        matched = []
        for kv in kvs:
            if start_key and kv.key <= start_key:
                continue
            if (selector.labels or selector.fields) and not selector.matches(json.loads(kv.value)):
                continue
            matched.append(kv)
        metadata: dict[str, Any] = {"resourceVersion": str(revision_of_list or revision)}
        if limit > 0 and len(matched) > limit:
            metadata["continue"] = encode_continue(
                revision_of_list or revision, matched[limit - 1].key
            )
            metadata["remainingItemCount"] = len(matched) - limit
            matched = matched[:limit]
        if wants_table(request):
            table = await self._table(res, matched, revision, request)
            table["metadata"] = metadata
            return web.json_response(table)
        return web.json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.group_version,
                "metadata": metadata,
                "items": [self._item(res, kv) for kv in matched],
            }
        )

    def _item(self, res: ApiResource, kv: KeyValue) -> dict[str, Any]:
        data = served_form(kv)
        data.setdefault("apiVersion", res.group_version)
        data.setdefault("kind", res.kind)
        return data

    async def _table(
        self, res: ApiResource, kvs: list[KeyValue], revision: int, request: web.Request
    ) -> dict[str, Any]:
        objs = [decode(res.cls, kv) for kv in kvs]
        pods: list[Pod] = []
        if res.cls is Node:
            pods, _ = await self.objects.list(Pod)
        columns, rows = table_rows(res.cls, objs, datetime.now(UTC), pods)
        include = request.query.get("includeObject", "Metadata")
        out_rows = []
        for kv, cells in zip(kvs, rows, strict=True):
            data = self._item(res, kv)
            obj: dict[str, Any] | None
            if include == "Object":
                obj = data
            elif include == "None":
                obj = None
            else:
                obj = partial_metadata(data, res.group_version)
            row: dict[str, Any] = {"cells": cells}
            if obj is not None:
                row["object"] = obj
            out_rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(revision)},
            "columnDefinitions": columns,
            "rows": out_rows,
        }

    # ------------------------------------------------------------ watch

    async def _watch(
        self,
        request: web.Request,
        res: ApiResource,
        namespace: str | None,
        selector: Filter,
    ) -> web.StreamResponse:
        as_table = wants_table(request)
        bookmarks = request.query.get("allowWatchBookmarks") in ("1", "true")
        timeout = float(request.query.get("timeoutSeconds") or 0) or None
        rv = request.query.get("resourceVersion", "")
        prefix = resource_prefix(res.stored_as, namespace)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        state = _WatchState(selector=selector)

        async def send_raw(lines: list[bytes]) -> None:
            await response.write(b"".join(lines))

        async def send(event_type: str, obj: dict[str, Any]) -> None:
            if as_table and event_type not in ("BOOKMARK", "ERROR"):
                kv_obj = obj
                table = await self._table_for_data(res, kv_obj, request)
                obj = table
            line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
            await response.write(line.encode() + b"\n")

        try:
            if rv in ("", "0"):
                state.listed = True
                kvs, revision = await self.store.range(prefix)
                for kv in kvs:
                    data = self._item(res, kv)
                    if selector.matches(data):
                        state.matching.add(kv.key)
                        await send("ADDED", data)
                start = revision + 1
            else:
                try:
                    start = int(rv) + 1
                except ValueError:
                    await send(
                        "ERROR", status_body(400, "BadRequest", f"invalid resourceVersion {rv!r}")
                    )
                    return response
                if selector.labels or selector.fields:
                    # what the client's list at ``rv`` selected: an object that
                    # leaves the selection later is DELETED for this watch,
                    # one that enters it is ADDED, whatever it was before
                    with contextlib.suppress(Compacted, FutureRevision):
                        kvs, _ = await self.store.range(prefix, revision=start - 1)
                        state.matching = {
                            kv.key for kv in kvs if selector.matches(self._item(res, kv))
                        }
                        state.listed = True
            state.revision = start - 1
            await self._stream(
                request,
                res,
                prefix,
                start,
                state,
                send,
                bookmarks=bookmarks,
                timeout=timeout,
                send_raw=None if as_table else send_raw,
            )
        except Compacted:
            await send(
                "ERROR",
                status_body(
                    410,
                    "Expired",
                    f"too old resource version: {rv} ({await self.store.revision()})",
                ),
            )
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except GitkubeError as exc:
            with contextlib.suppress(ConnectionResetError):
                await send("ERROR", status_body(500, "InternalError", str(exc)))
        return response

    async def _hub_for(self, start: int) -> tuple[WatchHub, bool]:
        """The shared hub, or a private one replaying older history (True)."""
        hub = self._hub
        if hub is None or hub.failed:
            current = await self.store.revision()
            hub = self._hub = WatchHub(self.store, min(start, current + 1))
        if start < hub.first:
            return WatchHub(self.store, start), True
        return hub, False

    async def _stream(
        self,
        request: web.Request,
        res: ApiResource,
        prefix: str,
        start: int,
        state: _WatchState,
        send: Callable[[str, dict[str, Any]], Awaitable[None]],
        *,
        bookmarks: bool,
        timeout: float | None,
        send_raw: Callable[[list[bytes]], Awaitable[None]] | None = None,
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout if timeout else None
        hub, private = await self._hub_for(start)
        after = start - 1
        next_bookmark = loop.time() + self.bookmark_seconds
        filtered = bool(state.selector.labels or state.selector.fields)

        lines: list[bytes] = []

        async def emit(kind: str, item: HubEvent, data: dict[str, Any]) -> None:
            if send_raw is not None:  # one write per batch, not per event
                lines.append(b'{"type":"' + kind.encode() + b'","object":' + item.json() + b"}\n")
            else:
                await send(kind, data)

        try:
            while True:
                # wake at least every second: a client that went away or a
                # server that stops ends the watch (aiohttp does not cancel
                # handlers whose client disconnected)
                wait = 1.0
                if bookmarks:
                    wait = min(wait, max(0.0, next_bookmark - loop.time()))
                if deadline is not None:
                    left = deadline - loop.time()
                    if left <= 0:
                        return
                    wait = min(wait, left)
                try:
                    batch = await hub.after(after, timeout=wait)
                except TooOld:
                    # this watcher fell behind the shared history: replay privately
                    hub, private = WatchHub(self.store, after + 1), True
                    continue
                if self._closing.is_set():
                    return
                transport = request.transport
                if transport is None or transport.is_closing():
                    return
                if not batch:
                    after = max(after, hub.last)
                    state.revision = after
                    if bookmarks and state.revision and loop.time() >= next_bookmark:
                        next_bookmark = loop.time() + self.bookmark_seconds
                        await send(
                            "BOOKMARK",
                            {
                                "kind": res.kind,
                                "apiVersion": res.group_version,
                                "metadata": {"resourceVersion": str(state.revision)},
                            },
                        )
                    continue
                for item in batch:
                    after = state.revision = item.revision
                    key = item.key
                    if not key.startswith(prefix) or key.startswith(SYSTEM):
                        continue
                    data = item.data()
                    if item.event.type == "DELETE":
                        if data is None:
                            data = _stub(res, key)
                            data["metadata"]["resourceVersion"] = str(item.revision)
                        # a watch from a resourceVersion did not list: the deleted
                        # value tells whether the object was in the selection
                        known = key in state.matching or (
                            not state.listed and (not filtered or state.selector.matches(data))
                        )
                        if known:
                            state.matching.discard(key)
                            await emit("DELETED", item, data)
                        continue
                    if data is None:
                        continue
                    if not filtered or state.selector.matches(data):
                        kv = item.event.kv
                        created = kv.create_revision == kv.mod_revision
                        seen = key in state.matching or (not state.listed and not created)
                        state.matching.add(key)
                        await emit("MODIFIED" if seen else "ADDED", item, data)
                    elif key in state.matching:
                        state.matching.discard(key)
                        await emit("DELETED", item, data)
                if lines and send_raw is not None:
                    await send_raw(lines)
                    lines = []
        finally:
            if private:
                await hub.close()

    async def _table_for_data(
        self, res: ApiResource, data: dict[str, Any], request: web.Request
    ) -> dict[str, Any]:
        obj = res.cls.from_dict(data)
        obj.metadata.resource_version = data.get("metadata", {}).get("resourceVersion", "")
        pods: list[Pod] = []
        if res.cls is Node:
            pods, _ = await self.objects.list(Pod)
        columns, rows = table_rows(res.cls, [obj], datetime.now(UTC), pods)
        include = request.query.get("includeObject", "Metadata")
        row: dict[str, Any] = {"cells": rows[0]}
        if include == "Object":
            row["object"] = data
        elif include != "None":
            row["object"] = partial_metadata(data, res.group_version)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": data.get("metadata", {}).get("resourceVersion", "")},
            "columnDefinitions": columns,
            "rows": [row],
        }

    # ------------------------------------------------------------ logs

    async def _pod_log(self, request: web.Request) -> web.StreamResponse:
        from gitkube.cli.logs_cmd import LogsError, open_log

        namespace, name = request.match_info["namespace"], request.match_info["name"]
        query = request.query
        follow = query.get("follow") in ("1", "true")
        previous = query.get("previous") in ("1", "true")
        timestamps = query.get("timestamps") in ("1", "true")
        try:
            tail = int(query["tailLines"]) if "tailLines" in query else None
        except ValueError:
            return status_response(400, "BadRequest", f"invalid tailLines {query['tailLines']!r}")
        try:
            runtime, cid, where = await open_log(
                self.objects,
                namespace,
                name,
                container=query.get("container", ""),
                previous=previous,
            )
        except LogsError as exc:
            return status_response(400, "BadRequest", str(exc))
        except GitkubeError as exc:
            return status_response(404, "NotFound", str(exc))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        chunks = runtime.logs(cid, tail=tail, follow=follow, timestamps=timestamps)
        try:
            async for chunk in chunks:
                await response.write(chunk)
        except GitkubeError as exc:
            log.info("log of %s ended: %s", where, exc)
        finally:
            with contextlib.suppress(BaseException):
                await chunks.aclose()  # type: ignore[attr-defined]
            await runtime.close()
        return response

    # ------------------------------------------------------------ writes

    async def _write(self, request: web.Request) -> web.Response:
        target = await self._write_target(request)
        location = await self.git() if self.git is not None else None
        where = f"{location.repo} on branch {location.branch}" if location else "the git repository"
        what = target or "objects"
        path = ""
        if target and location:
            path = await self._source_path(request)
        if path:
            message = (
                f"gitkube is read-only: {what} is declared in {path} in {where}; "
                "change it there and push (git is the only way to change desired state)"
            )
        else:
            base = location.path if location and location.path else ""
            inside = f" under {base}/" if base else ""
            message = (
                f"gitkube is read-only: add or change {what} in a manifest{inside} in "
                f"{where} and push (git is the only way to change desired state)"
            )
        return status_response(405, "MethodNotAllowed", message)

    def _parse_path(self, request: web.Request) -> tuple[str, str, str] | None:
        """(plural, namespace, name) of a write's path, where it names them."""
        parts = [p for p in request.path.split("/") if p]
        if not parts:
            return None
        parts = parts[2:] if parts[0] == "api" else parts[3:]
        namespace = ""
        if len(parts) >= 2 and parts[0] == "namespaces" and len(parts) != 2:
            namespace, parts = parts[1], parts[2:]
        if not parts:
            return None
        plural = parts[0]
        name = parts[1] if len(parts) > 1 else ""
        return plural, namespace, name

    async def _write_target(self, request: web.Request) -> str:
        parsed = self._parse_path(request)
        if parsed is None:
            return ""
        plural, namespace, name = parsed
        if not name:
            with contextlib.suppress(Exception):
                body = await request.read()
                name = str(json.loads(body).get("metadata", {}).get("name", ""))
        if not name:
            return plural
        where = f' in namespace "{namespace}"' if namespace else ""
        return f'{plural} "{name}"{where}'

    async def _source_path(self, request: web.Request) -> str:
        parsed = self._parse_path(request)
        if parsed is None:
            return ""
        plural, namespace, name = parsed
        if not name:
            return ""
        parts = [p for p in request.path.split("/") if p]
        group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
        res = find_resource(group, version, plural, await self._resources())
        kv = await self.store.get(
            res.key(namespace, name) if res is not None else object_key(plural, namespace, name)
        )
        if kv is None:
            return ""
        with contextlib.suppress(ValueError):
            annotations = json.loads(kv.value).get("metadata", {}).get("annotations") or {}
            return str(annotations.get(SOURCE_PATH, ""))
        return ""


@dataclass
class _WatchState:
    selector: Filter
    revision: int = 0
    #: ``matching`` is exact: the watch began with a list, or read the
    #: selection at its resourceVersion (else it is guessed from each event)
    listed: bool = False

    def __post_init__(self) -> None:
        self.matching: set[str] = set()


def _stub(res: ApiResource, key: str) -> dict[str, Any]:
    _, namespace, name = parse_key(key)
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"kind": res.kind, "apiVersion": res.group_version, "metadata": meta}


def is_api_path(path: str) -> bool:
    return path in ("/version", "/api", "/apis") or path.startswith(
        ("/api/", "/apis/", "/openapi/")
    )
