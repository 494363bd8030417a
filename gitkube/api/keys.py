"""Store key layout, after Kubernetes' registry: ``/gitkube/<resource>/<namespace>/<name>``.

Cluster-scoped kinds (nodes) have no namespace segment: ``/gitkube/nodes/<name>``.
Keys gitkube keeps for itself live under ``/gitkube/_system/``.
"""

from __future__ import annotations

PREFIX = "/gitkube/"
SYSTEM = "/gitkube/_system/"

#: the last synced revision, sync state and history (sync loop)
SYNC_STATE_KEY = SYSTEM + "sync/state"
SYNC_HISTORY_KEY = SYSTEM + "sync/history"
SYNC_CONTROL_KEY = SYSTEM + "sync/control"  # suspend / resume
#: the diff each sync of the history applied, and the objects drifted from git
SYNC_DIFFS_KEY = SYSTEM + "sync/diffs"
SYNC_DRIFT_KEY = SYSTEM + "sync/drift"
#: the outcome of the last status write-back to git (gitkube.sync.writeback)
STATUS_WRITEBACK_KEY = SYSTEM + "sync/writeback"
#: node heartbeats: one key per node, attached to the node's lease
HEARTBEAT_PREFIX = SYSTEM + "heartbeats/"
#: master leader election
LEADER_KEY = SYSTEM + "leader"
#: webhook deliveries
DELIVERIES_KEY = SYSTEM + "webhooks/deliveries"
#: service proxy problems (port in use, ...), one key per service per node
PROXY_STATUS_PREFIX = SYSTEM + "proxy/"
#: allocated cluster IPs: one key per IP, created with a compare-on-absent
SERVICE_IP_PREFIX = SYSTEM + "serviceips/"

CLUSTER_SCOPED = frozenset({"nodes", "namespaces"})


def resource_prefix(resource: str, namespace: str | None = None) -> str:
    """The prefix holding every object of ``resource`` (in ``namespace`` if given)."""
    if resource in CLUSTER_SCOPED or namespace is None:
        return f"{PREFIX}{resource}/"
    return f"{PREFIX}{resource}/{namespace}/"


def object_key(resource: str, namespace: str, name: str, *, namespaced: bool | None = None) -> str:
    """The key of object ``name``; ``namespaced``: the kind's scope (a kind
    gitkube only stores has its own), else that of ``resource`` among the
    kinds gitkube runs."""
    if namespaced is None:
        namespaced = resource not in CLUSTER_SCOPED
    if not namespaced:
        return f"{PREFIX}{resource}/{name}"
    return f"{PREFIX}{resource}/{namespace or 'default'}/{name}"


def parse_key(key: str) -> tuple[str, str, str]:
    """(resource, namespace, name) of an object key."""
    if not key.startswith(PREFIX) or key.startswith(SYSTEM):
        raise ValueError(f"not an object key: {key!r}")
    parts = key[len(PREFIX) :].split("/")
    if len(parts) == 2:  # a cluster-scoped kind (nodes, namespaces, clusterroles, ...)
        return parts[0], "", parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ValueError(f"not an object key: {key!r}")
