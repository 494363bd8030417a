"""Annotation and label keys gitkube writes and reads."""

from __future__ import annotations

DOMAIN = "gitkube.io"

#: provenance of objects written from git
SOURCE_COMMIT = f"{DOMAIN}/source-commit"
SOURCE_PATH = f"{DOMAIN}/source-path"
#: present (value "gitkube") on objects that the sync created: only these are pruned
MANAGED_BY = f"{DOMAIN}/managed-by"
MANAGED_BY_VALUE = "gitkube"
#: a hash of the desired (git) form, to tell self-heal drift from noise
DESIRED_HASH = f"{DOMAIN}/desired-hash"

#: rolling updates of ReplicationControllers
TEMPLATE_HASH_LABEL = f"{DOMAIN}/template-hash"
MAX_UNAVAILABLE = f"{DOMAIN}/max-unavailable"
MAX_SURGE = f"{DOMAIN}/max-surge"
#: seconds a rollout may go without progress before it is Degraded (default 600)
PROGRESS_DEADLINE = f"{DOMAIN}/progress-deadline-seconds"

#: present (value "true") on Endpoints the endpoints controller writes: only these
#: are rewritten and deleted by it; Endpoints declared by hand (Services without a
#: selector) are left alone
ENDPOINTS_CONTROLLER = f"{DOMAIN}/endpoints-controller"

#: on Nodes: the label keys the sync set from git (comma-separated), so labels git
#: stops declaring are removed and the agent's own labels are kept
MANAGED_LABELS = f"{DOMAIN}/managed-labels"

#: gitkube's own status of objects whose Kubernetes wire form has no field for
#: it, kept as JSON in an annotation so that every object gitkube writes
#: conforms to the official schema (see ``ApiObject.to_dict``):
#: a Pod's published host ports ({"<container>/<port>/<protocol>": hostPort})
HOST_PORTS = f"{DOMAIN}/host-ports"
#: a ReplicationController's rollout: {"updatedReplicas": n, "lastUpdateTime": {type: time}}
RC_ROLLOUT = f"{DOMAIN}/rollout-status"

#: on Nodes: the address of the service proxy that serves the node (set by its
#: agent); LoadBalancer Services list these in status.loadBalancer.ingress
PROXY_ADDRESS = f"{DOMAIN}/proxy-address"
