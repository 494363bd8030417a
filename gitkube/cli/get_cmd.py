"""`gitkube get KIND [NAME]`: objects from the store, as kubectl prints them.

Kinds and their short names: pods (po), replicationcontrollers (rc),
services (svc), endpoints (ep), nodes (no, minions), namespaces (ns),
configmaps (cm), secrets, deployments (deploy), replicasets (rs). Tables:

    pods       NAME READY STATUS RESTARTS AGE          (wide: IP NODE)
    rc         NAME DESIRED CURRENT READY AGE          (wide: CONTAINERS IMAGES SELECTOR)
    services   NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE   (wide: SELECTOR)
    endpoints  NAME ENDPOINTS AGE
    nodes      NAME STATUS LABELS CPU(capacity/allocated) MEMORY(capacity/allocated) PODS
               (like `kubectl get minions` in Kubernetes' first releases; allocated is
               the sum of the requests of the pods bound to the node and not finished)
    namespaces NAME STATUS AGE
    configmaps NAME DATA AGE
    secrets    NAME TYPE DATA AGE
    deploy     NAME READY UP-TO-DATE AVAILABLE AGE (wide: CONTAINERS IMAGES SELECTOR)
    rs         NAME DESIRED CURRENT READY AGE      (wide: CONTAINERS IMAGES SELECTOR)

As kubectl: the namespace is ``default`` unless ``-n`` says otherwise, ``-A``
lists every namespace. ``-o json`` is a v1 ``List`` whose items include
status; with a NAME, the object itself. Reads the store only.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Annotated, Any

import typer

from gitkube.api.keys import object_key, resource_prefix
from gitkube.api.objects import (
    ApiObject,
    ConfigMap,
    Deployment,
    Endpoints,
    Event,
    LabelSelector,
    Namespace,
    Node,
    Pod,
    PodTemplateSpec,
    ReplicaSet,
    ReplicationController,
    Secret,
    Service,
    UnsupportedObject,
)
from gitkube.api.quantity import QuantityError, format_cpu, parse_cpu, parse_memory
from gitkube.api.redact import is_secret, redact_object
from gitkube.cli.app import Output as OutputFormat
from gitkube.cli.app import (
    OutputOpt,
    StoreOpt,
    app,
    err_console,
    fail,
    print_data,
    resolve_store,
    run_async,
)
from gitkube.cli.status_cmd import format_columns, open_existing_store
from gitkube.store.base import KeyValue
from gitkube.store.objects import ObjectStore, decode
from gitkube.sync.report import age_seconds, human_duration

#: resource -> (class, aliases)
RESOURCE_ALIASES: dict[str, tuple[type[ApiObject], tuple[str, ...]]] = {
    "pods": (Pod, ("pod", "po")),
    "replicationcontrollers": (ReplicationController, ("replicationcontroller", "rc")),
    "services": (Service, ("service", "svc")),
    "endpoints": (Endpoints, ("endpoint", "ep")),
    "nodes": (Node, ("node", "no", "minions", "minion")),
    "namespaces": (Namespace, ("namespace", "ns")),
    "configmaps": (ConfigMap, ("configmap", "cm")),
    "secrets": (Secret, ("secret",)),
    "deployments": (Deployment, ("deployment", "deploy")),
    "replicasets": (ReplicaSet, ("replicaset", "rs")),
    "events": (Event, ("event", "ev")),
}
KINDS_HELP = (
    "pods (po), replicationcontrollers (rc), services (svc), endpoints (ep), nodes (no, minions), "
    "namespaces (ns), configmaps (cm), secrets, deployments (deploy), replicasets (rs)"
)
STORED_HELP = (
    ", and the kinds gitkube stores without running them (ingresses, serviceaccounts, ..., "
    "and custom resources whose CustomResourceDefinition is in git)"
)


def resolve_kind(kind: str) -> type[ApiObject] | None:
    wanted = kind.lower()
    for resource, (cls, aliases) in RESOURCE_ALIASES.items():
        if wanted == resource or wanted in aliases:
            return cls
    return None


def resolve_stored_kind(kind: str, crds: list[KeyValue]) -> type[ApiObject] | None:
    """The class of a kind gitkube stores without running it, by the names
    kubectl takes (plural, singular, kind, short name, ``plural.group``): an
    official kind, or a custom one of the CustomResourceDefinitions ``crds``
    (the newest stable version when a kind has several)."""
    from gitkube.server.kubeapi import api_resources, custom_resources, version_priority

    wanted = kind.lower()
    found = []
    for res in api_resources(custom_resources(crds)):
        if not issubclass(res.cls, UnsupportedObject):
            continue
        names = {
            res.plural,
            res.singular_name,
            res.kind.lower(),
            f"{res.plural}.{res.group}",
            *res.aliases,
        }
        if wanted in names:
            found.append(res)
    if not found:
        return None
    return max(found, key=lambda r: version_priority(r.version)).cls


def _unknown(kind: str) -> str:
    return f"unknown resource type {kind!r}; known types: {KINDS_HELP}{STORED_HELP}"


async def _resolve_any(url: str, kind: str) -> type[ApiObject] | None:
    cls = resolve_kind(kind)
    if cls is not None:
        return cls
    store = await open_existing_store(url)
    try:
        crds, _ = await store.range(resource_prefix("customresourcedefinitions"))
    finally:
        await store.close()
    return resolve_stored_kind(kind, crds)


# ---------------------------------------------------------------- cells


def _age(obj: ApiObject, now: datetime) -> str:
    return human_duration(age_seconds(obj.metadata.creation_timestamp, now))


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "<none>"


def pod_status_text(pod: Pod) -> str:
    """The STATUS column of `kubectl get pods`."""
    reason = pod.status.reason or pod.status.phase or "Unknown"
    running = False
    total_init = len(pod.spec.init_containers)
    for index, ics in enumerate(pod.status.init_container_statuses):
        term, wait = ics.state.terminated, ics.state.waiting
        if term is not None and term.exit_code == 0:
            continue
        if term is not None:
            detail = term.reason or (
                f"Signal:{term.signal}" if term.signal else f"ExitCode:{term.exit_code}"
            )
            reason = f"Init:{detail}"
        elif wait is not None and wait.reason and wait.reason != "PodInitializing":
            reason = f"Init:{wait.reason}"
        else:
            reason = f"Init:{index}/{total_init}"
        return "Terminating" if pod.metadata.deletion_timestamp else reason
    for cs in reversed(pod.status.container_statuses):
        state = cs.state
        if state.waiting is not None and state.waiting.reason:
            reason = state.waiting.reason
        elif state.terminated is not None and state.terminated.reason:
            reason = state.terminated.reason
        elif state.terminated is not None:
            term = state.terminated
            reason = f"Signal:{term.signal}" if term.signal else f"ExitCode:{term.exit_code}"
        elif cs.ready and state.running is not None:
            running = True
    if reason == "Completed" and running:
        reason = "Running"
    if pod.metadata.deletion_timestamp:
        reason = "Terminating"
    return reason


def pod_row(pod: Pod, now: datetime, *, wide: bool) -> list[str]:
    total = len(pod.spec.containers)
    ready = sum(1 for cs in pod.status.container_statuses if cs.ready)
    row = [
        pod.name,
        f"{ready}/{total}",
        pod_status_text(pod),
        str(pod.restart_count()),
        _age(pod, now),
    ]
    if wide:
        row += [pod.status.pod_ip or "<none>", pod.spec.node_name or "<none>"]
    return row


def rc_row(rc: ReplicationController, now: datetime, *, wide: bool) -> list[str]:
    row = [
        rc.name,
        str(rc.spec.replicas),
        str(rc.status.replicas),
        str(rc.status.ready_replicas),
        _age(rc, now),
    ]
    if wide:
        containers = rc.spec.template.spec.containers
        row += [
            ",".join(c.name for c in containers) or "<none>",
            ",".join(c.image for c in containers) or "<none>",
            _labels(rc.effective_selector()),
        ]
    return row


def selector_text(selector: LabelSelector) -> str:
    """An apps/v1 selector as kubectl prints it: ``app=web,tier in (a,b)``."""
    parts = [f"{k}={v}" for k, v in sorted(selector.match_labels.items())]
    for expr in selector.match_expressions:
        if expr.operator in ("In", "NotIn"):
            parts.append(f"{expr.key} {expr.operator.lower()} ({','.join(expr.values)})")
        elif expr.operator == "Exists":
            parts.append(expr.key)
        else:
            parts.append(f"!{expr.key}")
    return ",".join(parts) or "<none>"


def _template_cells(template: PodTemplateSpec) -> list[str]:
    containers = template.spec.containers
    return [
        ",".join(c.name for c in containers) or "<none>",
        ",".join(c.image for c in containers) or "<none>",
    ]


def namespace_row(ns: Namespace, now: datetime, *, wide: bool) -> list[str]:
    return [ns.name, ns.status.phase or "Active", _age(ns, now)]


def configmap_row(cm: ConfigMap, now: datetime, *, wide: bool) -> list[str]:
    return [cm.name, str(len(cm.data) + len(cm.binary_data)), _age(cm, now)]


def secret_row(secret: Secret, now: datetime, *, wide: bool) -> list[str]:
    return [secret.name, secret.type or "Opaque", str(len(secret.data)), _age(secret, now)]


def deployment_row(deploy: Deployment, now: datetime, *, wide: bool) -> list[str]:
    desired = deploy.spec.replicas if deploy.spec.replicas is not None else 1
    status = deploy.status
    row = [
        deploy.name,
        f"{status.ready_replicas}/{desired}",
        str(status.updated_replicas),
        str(status.available_replicas),
        _age(deploy, now),
    ]
    if wide:
        row += [*_template_cells(deploy.spec.template), selector_text(deploy.spec.selector)]
    return row


def replicaset_row(rs: ReplicaSet, now: datetime, *, wide: bool) -> list[str]:
    row = [
        rs.name,
        str(rs.spec.replicas if rs.spec.replicas is not None else 1),
        str(rs.status.replicas),
        str(rs.status.ready_replicas),
        _age(rs, now),
    ]
    if wide:
        row += [*_template_cells(rs.spec.template), selector_text(rs.spec.selector)]
    return row


def service_ports_text(svc: Service) -> str:
    ports = []
    for p in svc.spec.ports:
        node = f":{p.node_port}" if p.node_port else ""
        ports.append(f"{p.port}{node}/{p.protocol or 'TCP'}")
    return ",".join(ports) or "<none>"


def external_ip_text(svc: Service) -> str:
    """kubectl's EXTERNAL-IP: a LoadBalancer's ingress addresses, or <pending>."""
    found = [i.get("ip") or i.get("hostname") or "" for i in svc.status.load_balancer.ingress]
    if any(found):
        return ",".join(a for a in found if a)
    return "<pending>" if svc.spec.type == "LoadBalancer" else "<none>"


def service_row(svc: Service, now: datetime, *, wide: bool) -> list[str]:
    row = [
        svc.name,
        svc.spec.type or "ClusterIP",
        svc.spec.cluster_ip or "<none>",
        external_ip_text(svc),
        service_ports_text(svc),
        _age(svc, now),
    ]
    if wide:
        row.append(_labels(svc.spec.selector))
    return row


def endpoints_text(ep: Endpoints, *, limit: int = 3) -> str:
    """``ip:port`` of the ready addresses; past ``limit``, "+ N more..." as kubectl."""
    pairs = _endpoint_pairs(ep)
    if not pairs:
        return "<none>"
    shown = ",".join(pairs[:limit])
    return shown + (f" + {len(pairs) - limit} more..." if len(pairs) > limit else "")


def _endpoint_pairs(ep: Endpoints) -> list[str]:
    pairs: list[str] = []
    for subset in ep.subsets:
        for address in subset.addresses:
            if not subset.ports:
                pairs.append(address.ip)
            for port in subset.ports:
                pairs.append(f"{address.ip}:{port.port}")
    return pairs


def endpoints_row(ep: Endpoints, now: datetime, *, wide: bool) -> list[str]:
    return [ep.name, endpoints_text(ep), _age(ep, now)]


def format_memory_human(size: int) -> str:
    for suffix, scale in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size >= scale:
            value = size / scale
            return f"{value:.0f}{suffix}" if value.is_integer() else f"{value:.1f}{suffix}"
    return str(size)


@dataclass(frozen=True)
class NodeAllocation:
    cpu: int = 0
    memory: int = 0
    pods: int = 0


def allocations(pods: Sequence[Pod]) -> dict[str, NodeAllocation]:
    """Requests of the pods bound to each node that still hold resources."""
    out: dict[str, NodeAllocation] = {}
    for pod in pods:
        node = pod.spec.node_name
        if not node or pod.status.phase in ("Succeeded", "Failed"):
            continue
        cur = out.get(node, NodeAllocation())
        try:
            cpu, memory = pod.spec.request_cpu(), pod.spec.request_memory()
        except QuantityError:
            cpu, memory = 0, 0  # validation rejects these; never fail a listing on one
        out[node] = NodeAllocation(cur.cpu + cpu, cur.memory + memory, cur.pods + 1)
    return out


def _capacity(node: Node, resource: str) -> Any:
    return node.status.capacity.get(resource, node.status.allocatable.get(resource))


def node_status_text(node: Node) -> str:
    status = "Ready" if node.is_ready() else ("NotReady" if node.status.conditions else "Unknown")
    return status + (",SchedulingDisabled" if node.spec.unschedulable else "")


def node_row(node: Node, now: datetime, *, wide: bool, alloc: NodeAllocation) -> list[str]:
    try:
        cpu_cap = parse_cpu(_capacity(node, "cpu") or 0)
        mem_cap = parse_memory(_capacity(node, "memory") or 0)
    except QuantityError:
        cpu_cap, mem_cap = 0, 0
    pods_cap = _capacity(node, "pods")
    row = [
        node.name,
        node_status_text(node),
        _labels(node.metadata.labels),
        f"{format_cpu(cpu_cap)}/{format_cpu(alloc.cpu)}",
        f"{format_memory_human(mem_cap)}/{format_memory_human(alloc.memory)}",
        f"{alloc.pods}/{pods_cap}" if pods_cap is not None else str(alloc.pods),
    ]
    if wide:
        info = node.status.node_info
        row += [
            node.address() or "<none>",
            info.os_image or "<unknown>",
            info.kernel_version or "<unknown>",
            info.container_runtime_version or "<unknown>",
        ]
    row.append(_age(node, now))
    return row


HEADERS: dict[type[ApiObject], tuple[list[str], list[str]]] = {
    Pod: (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE"]),
    ReplicationController: (
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    ),
    Service: (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"]),
    Endpoints: (["NAME", "ENDPOINTS", "AGE"], []),
    Node: (
        [
            "NAME",
            "STATUS",
            "LABELS",
            "CPU(capacity/allocated)",
            "MEMORY(capacity/allocated)",
            "PODS",
        ],
        ["INTERNAL-IP", "OS-IMAGE", "KERNEL-VERSION", "CONTAINER-RUNTIME"],
    ),
    Namespace: (["NAME", "STATUS", "AGE"], []),
    ConfigMap: (["NAME", "DATA", "AGE"], []),
    Secret: (["NAME", "TYPE", "DATA", "AGE"], []),
    Deployment: (
        ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    ),
    ReplicaSet: (
        ["NAME", "DESIRED", "CURRENT", "READY", "AGE"],
        ["CONTAINERS", "IMAGES", "SELECTOR"],
    ),
    Event: (["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"], ["SOURCE", "COUNT"]),
}


def event_row(ev: Event, now: datetime, *, wide: bool) -> list[str]:
    """LAST SEEN, TYPE, REASON, OBJECT, MESSAGE (and COUNT, wide), as kubectl."""
    seen = human_duration(age_seconds(ev.last_timestamp or ev.metadata.creation_timestamp, now))
    ref = ev.involved_object
    row = [seen, ev.type, ev.reason, f"{ref.kind.lower()}/{ref.name}", ev.message]
    if wide:
        row += [ev.source.component, str(ev.count)]
    return row


#: the row function of each kind without special inputs
_ROWS: dict[type[ApiObject], Any] = {
    Pod: pod_row,
    ReplicationController: rc_row,
    Service: service_row,
    Endpoints: endpoints_row,
    Namespace: namespace_row,
    ConfigMap: configmap_row,
    Secret: secret_row,
    Deployment: deployment_row,
    ReplicaSet: replicaset_row,
    Event: event_row,
}


def object_row(
    obj: ApiObject,
    now: datetime,
    *,
    wide: bool,
    pods: Sequence[Pod] = (),
    alloc: dict[str, NodeAllocation] | None = None,
) -> list[str]:
    """One row of ``HEADERS[type(obj)]`` (pure); nodes need ``pods`` or ``alloc``."""
    if isinstance(obj, Node):
        if alloc is None:
            alloc = allocations(pods)
        return node_row(obj, now, wide=wide, alloc=alloc.get(obj.name, NodeAllocation()))
    row = _ROWS.get(type(obj))
    if row is None:  # a kind gitkube stores without running it
        return [obj.name, _age(obj, now)]
    return list(row(obj, now, wide=wide))


def render_table(
    cls: type[ApiObject],
    items: Sequence[ApiObject],
    *,
    now: datetime,
    wide: bool = False,
    all_namespaces: bool = False,
    pods: Sequence[Pod] = (),
) -> str:
    """The table `gitkube get` prints (pure). ``pods`` are needed for nodes."""
    base, extra = HEADERS.get(cls, (["NAME", "AGE"], []))
    headers = [*base, *(extra if wide else [])]
    if cls is Node:
        headers.append("AGE")
    namespaced = cls.NAMESPACED and all_namespaces
    if namespaced:
        headers.insert(0, "NAMESPACE")
    alloc = allocations(pods) if cls is Node else {}
    rows: list[list[str]] = []
    for obj in items:
        row = object_row(obj, now, wide=wide, alloc=alloc)
        rows.append([obj.namespace, *row] if namespaced else row)
    return format_columns(headers, rows) + "\n"


def wire_form(kv: KeyValue, *, show_secrets: bool = False) -> dict[str, Any]:
    """An object as stored (the v1 wire form, status included) with its
    resourceVersion; decoding into dataclasses and back would cost ten times
    more for the same content. A Secret's values are masked unless
    ``show_secrets``."""
    data: dict[str, Any] = json.loads(kv.value)
    data.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    if not show_secrets and is_secret(data):
        data = redact_object(data)
    return data


def as_list(items: Sequence[dict[str, Any]], *, revision: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "List",
        "metadata": {"resourceVersion": str(revision)},
        "items": list(items),
    }


# ---------------------------------------------------------------- the command


@dataclass
class _Result:
    kvs: list[KeyValue]
    revision: int
    pods: list[Pod]


async def _read(
    url: str, cls: type[ApiObject], *, namespace: str | None, name: str | None, with_pods: bool
) -> _Result:
    store = await open_existing_store(url)
    try:
        ns = namespace if cls.NAMESPACED else None
        if name is not None:
            key = object_key(cls.RESOURCE, ns or "", name, namespaced=cls.NAMESPACED)
            kv = await store.get(key)
            return _Result([kv] if kv else [], await store.revision(), [])
        kvs, revision = await store.range(resource_prefix(cls.RESOURCE, ns))
        pods: list[Pod] = []
        if with_pods:
            pods, _ = await ObjectStore(store).list(Pod)
        return _Result(kvs, revision, pods)
    finally:
        await store.close()


@app.command("get")
def get_command(
    kind: Annotated[str, typer.Argument(help=f"What to list: {KINDS_HELP}.")],
    name: Annotated[str | None, typer.Argument(help="One object, by name.")] = None,
    store: StoreOpt = "",
    output: OutputOpt = OutputFormat.table,
    namespace: Annotated[
        str, typer.Option("--namespace", "-n", help="The namespace to read.")
    ] = "default",
    all_namespaces: Annotated[
        bool, typer.Option("--all-namespaces", "-A", help="List across every namespace.")
    ] = False,
    show_secrets: Annotated[
        bool,
        typer.Option(
            "--show-secrets", help="Show Secret values in -o json/yaml (masked otherwise)."
        ),
    ] = False,
) -> None:
    """List objects from the store, as kubectl does (reads the store only);
    several kinds (``deploy,rs,pods``) print one table after another."""
    if "," in kind:
        kinds = kind.split(",")
        if name is not None or output in (OutputFormat.json, OutputFormat.yaml):
            fail(f"{kind!r}: several kinds list as tables only (no NAME, no -o json/yaml)", code=2)
        url = resolve_store(store)
        for one in kinds:
            if resolve_kind(one) is None and run_async(partial(_resolve_any, url, one)) is None:
                fail(_unknown(one), code=2)
        for i, one in enumerate(kinds):
            if i:
                sys.stdout.write("\n")
            sys.stdout.flush()
            get_command(one, None, store, output, namespace, all_namespaces, show_secrets)
        return
    if name is not None and all_namespaces:
        fail("a resource cannot be retrieved by name across all namespaces", code=2)
    ns: str | None = None if all_namespaces else namespace
    url = resolve_store(store)
    cls = resolve_kind(kind) or run_async(lambda: _resolve_any(url, kind))
    if cls is None:
        fail(_unknown(kind), code=2)
    structured = output in (OutputFormat.json, OutputFormat.yaml)
    with_pods = cls is Node and not structured
    result = run_async(lambda: _read(url, cls, namespace=ns, name=name, with_pods=with_pods))
    resource = cls.RESOURCE
    if name is not None and not result.kvs:
        where = f' in namespace "{namespace}"' if cls.NAMESPACED else ""
        fail(f'{resource} "{name}" not found{where}', code=1)
    if structured:
        items = [wire_form(kv, show_secrets=show_secrets) for kv in result.kvs]
        data = items[0] if name is not None else as_list(items, revision=result.revision)
        print_data(data, output)
        return
    if not result.kvs:
        where = f" in {namespace} namespace" if cls.NAMESPACED and ns is not None else ""
        err_console.print(f"No resources found{where}.", highlight=False)
        return
    sys.stdout.write(
        render_table(
            cls,
            [decode(cls, kv) for kv in result.kvs],
            now=datetime.now(UTC),
            wide=output == OutputFormat.wide,
            all_namespaces=all_namespaces,
            pods=result.pods,
        )
    )
