"""Prometheus metrics, every name prefixed ``gitkube_``."""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)


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

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
