"""Health of live objects, after Argo CD's health assessment: a pure core.

Each object is Healthy, Progressing, Degraded or Missing (declared in git but
absent from the store); Unknown when its status says nothing we can read.

- **Pod** — Running and Ready is Healthy; Pending is Progressing (with the
  scheduler's reason when it is unschedulable); Failed is Degraded; any
  container waiting with a reason that starts with ``Err`` or ends with
  ``Error`` or ``BackOff`` (CrashLoopBackOff, ImagePullBackOff, ErrImagePull…)
  is Degraded whatever the phase, for pods that restart (policy Always);
  init containers count as well (Init:CrashLoopBackOff).
  Running but not ready is Degraded when a container has terminated before
  (it is restarting), else Progressing. A pod being deleted is Progressing.
- **ReplicationController** — Progressing while ``status.observedGeneration``
  is behind ``metadata.generation`` or fewer than ``spec.replicas`` pods are
  ready (or a rollout still has pods on the old template); Degraded when a
  condition says so: ``ReplicaFailure``/``Degraded``/``RolloutDegraded`` with
  status True, or ``Progressing`` with status False (a stalled rollout).
- **Service** — Degraded when the proxy reported a problem serving it
  (``PROXY_STATUS_PREFIX`` keys, or a failure condition in its status), or
  when it has no ready endpoints; a headless Service (clusterIP None) is not
  proxied and needs none.
- **Node** — Healthy when its Ready condition is True, Degraded otherwise.
- **Endpoints** — Healthy: an Endpoints object is derived state.
- **Namespace, ConfigMap, Secret** — Healthy when present (data, nothing
  runs); a Namespace being deleted (phase Terminating) is Progressing.
- **Kinds gitkube stores but does not run** (Ingress, ServiceAccount, custom
  resources, with ``--unsupported-kinds store``) — NotActedOn, which counts
  as Healthy for the whole set.

The status of the whole set is the worst of its members (``worst``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal, cast

from gitkube.api.objects import (
    ApiObject,
    ConfigMap,
    ContainerStatus,
    Endpoints,
    Namespace,
    Node,
    Pod,
    ReplicationController,
    Secret,
    Service,
)

HealthStatus = Literal["Healthy", "Progressing", "Degraded", "Missing", "Unknown", "NotActedOn"]

HEALTHY: HealthStatus = "Healthy"
PROGRESSING: HealthStatus = "Progressing"
DEGRADED: HealthStatus = "Degraded"
MISSING: HealthStatus = "Missing"
UNKNOWN: HealthStatus = "Unknown"
#: a kind gitkube stores but does not run (--unsupported-kinds store)
NOT_ACTED_ON: HealthStatus = "NotActedOn"

#: worst last; the health of a set is its worst member's
SEVERITY: dict[str, int] = {
    HEALTHY: 0,
    NOT_ACTED_ON: 0,
    UNKNOWN: 1,
    PROGRESSING: 2,
    MISSING: 3,
    DEGRADED: 4,
}

#: RC condition types that, with status True, mean the controller is stuck
RC_FAILURE_CONDITIONS = frozenset({"ReplicaFailure", "Degraded", "RolloutDegraded"})
#: Service condition types that, with status True, mean a port is not served
SERVICE_FAILURE_CONDITIONS = frozenset({"PortInUse", "ProxyError", "Degraded"})
#: Service condition types that, with status False, mean a port is not served
SERVICE_SUCCESS_CONDITIONS = frozenset({"Ready", "Serving", "Listening"})


@dataclass(frozen=True)
class Health:
    status: HealthStatus
    message: str = ""


def worst(statuses: Iterable[str]) -> HealthStatus:
    """The worst of ``statuses`` (Healthy for none)."""
    result: HealthStatus = HEALTHY
    for status in statuses:
        known = cast(HealthStatus, status) if status in SEVERITY else UNKNOWN
        if SEVERITY[known] > SEVERITY[result]:
            result = known
    return result


# ---------------------------------------------------------------- pods


def _is_failing_wait(reason: str) -> bool:
    return reason.startswith("Err") or reason.endswith("Error") or reason.endswith("BackOff")


def _container_failure(cs: ContainerStatus) -> str:
    term = cs.state.terminated
    if term is None:
        return ""
    if term.message:
        return f"container {cs.name}: {term.message}"
    if term.reason == "OOMKilled":
        return f"container {cs.name}: OOMKilled"
    if term.exit_code != 0:
        return f"container {cs.name} failed with exit code {term.exit_code}"
    return ""


def pod_health(pod: Pod) -> Health:
    status = pod.status
    if pod.metadata.deletion_timestamp:
        return Health(PROGRESSING, "pending deletion")
    if pod.spec.restart_policy == "Always":
        waits = [
            (f"init container {cs.name}" if init else f"container {cs.name}", cs.state.waiting)
            for init, statuses in (
                (True, status.init_container_statuses),
                (False, status.container_statuses),
            )
            for cs in statuses
            if cs.state.waiting is not None and _is_failing_wait(cs.state.waiting.reason)
        ]
        if waits:
            return Health(
                DEGRADED,
                "; ".join(
                    f"{name}: {w.reason}" + (f": {w.message}" if w.message else "")
                    for name, w in waits
                    if w is not None
                ),
            )
    phase = status.phase
    if phase == "Pending":
        scheduled = status.condition("PodScheduled")
        if scheduled is not None and scheduled.status == "False":
            reason = scheduled.reason or "Unschedulable"
            return Health(
                PROGRESSING, f"{reason}: {scheduled.message}" if scheduled.message else reason
            )
        if not pod.spec.node_name:
            return Health(PROGRESSING, status.message or "waiting to be scheduled")
        return Health(PROGRESSING, status.message or f"starting on {pod.spec.node_name}")
    if phase == "Succeeded":
        return Health(HEALTHY, status.message or "completed")
    if phase == "Failed":
        if status.message:
            return Health(DEGRADED, status.message)
        for cs in [*status.init_container_statuses, *status.container_statuses]:
            message = _container_failure(cs)
            if message:
                return Health(DEGRADED, message)
        return Health(DEGRADED, status.reason or "pod failed")
    if phase == "Running":
        if pod.spec.restart_policy != "Always":
            # a pod with a finite life is still on its way to Succeeded
            return Health(PROGRESSING, status.message or "running")
        if pod.is_ready():
            return Health(HEALTHY, status.message)
        restarting = [cs.name for cs in status.container_statuses if cs.last_state.terminated]
        if restarting:
            return Health(
                DEGRADED,
                status.message or f"not ready; restarted: {', '.join(restarting)}",
            )
        return Health(PROGRESSING, status.message or "running, not ready")
    return Health(UNKNOWN, status.message or f"phase {phase or 'unset'}")


def pod_problem(pod: Pod) -> str:
    """Why ``pod`` is not serving, in a few stable words ("" when it is
    healthy): the scheduler's reason, a container's waiting reason, the
    failure. Stable so that a report changes only when the problem does
    (back-off durations and restart counts are left out)."""
    health = pod_health(pod)
    if health.status == HEALTHY:
        return ""
    status = pod.status
    scheduled = status.condition("PodScheduled")
    if status.phase == "Pending" and scheduled is not None and scheduled.status == "False":
        return health.message
    reasons = [
        f"{cs.name}: {cs.state.waiting.reason}"
        for cs in status.container_statuses
        if cs.state.waiting is not None and cs.state.waiting.reason
    ]
    if reasons:
        return ", ".join(reasons)
    if health.status == DEGRADED:
        return health.message
    return f"{status.phase or 'Unknown'}, not ready"


# ---------------------------------------------------------------- replication controllers


def replication_controller_health(rc: ReplicationController) -> Health:
    status, desired = rc.status, rc.spec.replicas
    # a failure condition says more than a stalled Progressing one, so it wins
    failing = [
        c for c in status.conditions if c.type in RC_FAILURE_CONDITIONS and c.status == "True"
    ] + [c for c in status.conditions if c.type == "Progressing" and c.status == "False"]
    if failing:
        cond = failing[0]
        why = cond.message or cond.reason or cond.type
        return Health(DEGRADED, f"{cond.reason}: {why}" if cond.reason not in ("", why) else why)
    if rc.metadata.generation and status.observed_generation < rc.metadata.generation:
        return Health(
            PROGRESSING,
            "waiting for the controller to observe generation "
            f"{rc.metadata.generation} (observed {status.observed_generation})",
        )
    if status.ready_replicas < desired:
        return Health(PROGRESSING, f"{status.ready_replicas}/{desired} replicas ready")
    if 0 < status.updated_replicas < desired:
        return Health(
            PROGRESSING,
            f"rolling update: {status.updated_replicas}/{desired} replicas on the new template",
        )
    if status.replicas > desired:
        return Health(PROGRESSING, f"{status.replicas - desired} extra replicas to remove")
    return Health(HEALTHY, f"{status.ready_replicas}/{desired} replicas ready")


# ---------------------------------------------------------------- services


def ready_endpoint_count(endpoints: Endpoints | None) -> int:
    """Ready addresses of ``endpoints`` (one per ready pod behind the Service)."""
    if endpoints is None:
        return 0
    return sum(len(s.addresses) for s in endpoints.subsets)


def service_health(
    service: Service,
    endpoints: Endpoints | None,
    *,
    proxy_errors: Sequence[str] = (),
) -> Health:
    problems = list(proxy_errors)
    for cond in service.status.conditions:
        failing = (cond.type in SERVICE_FAILURE_CONDITIONS and cond.status == "True") or (
            cond.type in SERVICE_SUCCESS_CONDITIONS and cond.status == "False"
        )
        if failing:
            problems.append(cond.message or cond.reason or cond.type)
    if problems:
        return Health(DEGRADED, "; ".join(dict.fromkeys(problems)))
    if service.spec.headless:
        return Health(HEALTHY, "headless: not proxied")
    ready = ready_endpoint_count(endpoints)
    if ready == 0:
        not_ready = sum(len(s.not_ready_addresses) for s in endpoints.subsets) if endpoints else 0
        suffix = f" ({not_ready} not ready)" if not_ready else ""
        return Health(DEGRADED, f"no ready endpoints{suffix}")
    return Health(HEALTHY, f"{ready} endpoint{'s' if ready != 1 else ''}")


# ---------------------------------------------------------------- nodes


def node_health(node: Node) -> Health:
    ready = node.status.condition("Ready")
    if ready is None:
        return Health(DEGRADED, "NotReady: the node has not reported status")
    if ready.status != "True":
        why = ": ".join(p for p in (ready.reason, ready.message) if p)
        return Health(DEGRADED, f"NotReady: {why}" if why else "NotReady")
    if node.spec.unschedulable:
        return Health(HEALTHY, "SchedulingDisabled")
    return Health(HEALTHY, "")


# ---------------------------------------------------------------- any object


def not_acted_on(kind: str) -> Health:
    return Health(
        NOT_ACTED_ON, f"not acted on: gitkube stores {kind} objects but does not run them"
    )


def assess_health(
    obj: ApiObject | None,
    *,
    endpoints: Endpoints | None = None,
    proxy_errors: Sequence[str] = (),
) -> Health:
    """The health of ``obj``; None (declared but absent) is Missing.

    ``endpoints`` and ``proxy_errors`` matter only for a Service: its
    Endpoints object and the problems the proxy recorded for it.
    """
    if obj is None:
        return Health(MISSING, "declared in git but not in the cluster")
    if obj.UNSTRUCTURED:
        return not_acted_on(obj.KIND)
    if isinstance(obj, Pod):
        return pod_health(obj)
    if isinstance(obj, ReplicationController):
        return replication_controller_health(obj)
    if isinstance(obj, Service):
        return service_health(obj, endpoints, proxy_errors=proxy_errors)
    if isinstance(obj, Node):
        return node_health(obj)
    if isinstance(obj, Endpoints):
        count = ready_endpoint_count(obj)
        return Health(HEALTHY, f"{count} ready address{'es' if count != 1 else ''}")
    if isinstance(obj, Namespace):
        if obj.status.phase == "Terminating":
            return Health(PROGRESSING, "terminating")
        return Health(HEALTHY, "active")
    if isinstance(obj, ConfigMap | Secret):
        return Health(HEALTHY, "present")
    return Health(UNKNOWN, f"no health check for {obj.KIND}")
