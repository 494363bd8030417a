"""Prometheus metrics, every name prefixed ``gitkube_``."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from gitkube.api.objects import Deployment
from gitkube.api.rollout import desired_replicas, revision_of, rollout_state


class Metrics:
    """One registry per process (tests may make several)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.syncs = Counter("gitkube_sync", "Syncs by outcome", ["outcome"], registry=r)
        self.sync_duration = Histogram(
            "gitkube_sync_duration_seconds",
            "Duration of a sync",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=r,
        )
        self.last_synced = Gauge(
            "gitkube_last_synced_revision_timestamp_seconds",
            "Unix time at which the last revision was applied",
            registry=r,
        )
        self.objects = Gauge(
            "gitkube_objects",
            "Objects declared in git by kind and health",
            ["kind", "health"],
            registry=r,
        )
        self.pods = Gauge("gitkube_pods", "Pods by phase", ["phase"], registry=r)
        self.scheduling_latency = Histogram(
            "gitkube_scheduling_latency_seconds",
            "Time from a pod's creation to its binding",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self.webhooks = Counter(
            "gitkube_webhook_deliveries",
            "Webhook deliveries by hook and outcome",
            ["hook", "outcome"],
            registry=r,
        )
        self.deployment_replicas = Gauge(
            "gitkube_deployment_replicas",
            "Replicas of a Deployment by state (desired, updated, ready, available, unavailable)",
            ["namespace", "deployment", "state"],
            registry=r,
        )
        self.deployment_revision = Gauge(
            "gitkube_deployment_revision",
            "The Deployment's current revision (deployment.kubernetes.io/revision)",
            ["namespace", "deployment"],
            registry=r,
        )
        self.deployment_stalled = Gauge(
            "gitkube_deployment_rollout_stalled",
            "1 when the rollout exceeded its progress deadline (ProgressDeadlineExceeded)",
            ["namespace", "deployment"],
            registry=r,
        )
        self.refusals = Counter(
            "gitkube_sync_refused_revisions",
            "Revisions refused by commit signature verification",
            registry=r,
        )
        self.http_connections = Gauge(
            "gitkube_http_connections", "Open connections to the HTTP server", registry=r
        )
        self.http_refused = Gauge(
            "gitkube_http_connections_refused_total",
            "Connections refused by the caps (overall, per client address)",
            registry=r,
        )
        self.http_timed_out = Gauge(
            "gitkube_http_connections_timed_out_total",
            "Connections dropped for sending no request in time",
            registry=r,
        )
        self.leader = Gauge("gitkube_leader", "1 while this process leads (master)", registry=r)

    def set_deployments(self, deployments: Iterable[Deployment]) -> None:
        """The Deployment gauges, from the Deployments in the store."""
        for gauge in (self.deployment_replicas, self.deployment_revision, self.deployment_stalled):
            gauge.clear()
        for d in deployments:
            ns, name, status = d.namespace, d.name, d.status
            states = {
                "desired": desired_replicas(d),
                "updated": status.updated_replicas,
                "ready": status.ready_replicas,
                "available": status.available_replicas,
                "unavailable": status.unavailable_replicas,
            }
            for state, value in states.items():
                self.deployment_replicas.labels(namespace=ns, deployment=name, state=state).set(
                    value
                )
            self.deployment_revision.labels(namespace=ns, deployment=name).set(revision_of(d))
            self.deployment_stalled.labels(namespace=ns, deployment=name).set(
                1 if rollout_state(d).failed else 0
            )

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
