"""The HTTP server of `gitkube run` and `gitkube master` (aiohttp).

/healthz, /readyz           liveness and readiness of the process
/metrics                    Prometheus text format
/api/v1/status              the same content as `gitkube status -o json`
/hooks/{github,gitlab,gitea,generic}
                            webhooks: authenticated first (see webhooks.py)
/hooks/notify               the local post-receive hook (token file)
/version, /api, /apis, /openapi/v2
                            the Kubernetes API, read-only (kubeapi.py); beyond
                            loopback it needs the bearer token of --api-token-file
/, /ui/                     the web dashboard (ui.py; off with --no-ui)
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from gitkube.server.kubeapi import KubeApi, is_api_path, status_response
from gitkube.server.metrics import Metrics
from gitkube.server.ui import Dashboard
from gitkube.server.webhooks import HOOKS, MAX_BODY_BYTES, Delivery, Verdict, check_signature, route

log = logging.getLogger(__name__)

DELIVERY_LOG_LENGTH = 50


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class DeliveryLog:
    """The last 50 deliveries, newest last; persisted by ``on_change``."""

    def __init__(self, on_change: Callable[[list[dict[str, Any]]], Awaitable[None]] | None = None):
        self.items: deque[Delivery] = deque(maxlen=DELIVERY_LOG_LENGTH)
        self._on_change = on_change
        self._flush: asyncio.Task[None] | None = None

    def add(self, delivery: Delivery) -> None:
        self.items.append(delivery)
        if self._on_change and (self._flush is None or self._flush.done()):
            self._flush = asyncio.get_running_loop().create_task(self._persist())

    async def _persist(self) -> None:
        await asyncio.sleep(0.05)  # a burst of deliveries is one write
        if self._on_change:
            try:
                await self._on_change(self.to_list())
            except Exception:
                log.exception("could not record webhook deliveries")

    def to_list(self) -> list[dict[str, Any]]:
        return [d.to_dict() for d in self.items]


class HttpServer:
    def __init__(
        self,
        *,
        metrics: Metrics,
        branch: str,
        on_push: Callable[[str | None], None],
        status: Callable[[], Awaitable[dict[str, Any]]],
        secret: bytes | None,
        allow_unsigned: bool = False,
        notify_token: bytes | None = None,
        deliveries: DeliveryLog | None = None,
        ready: Callable[[], bool] = lambda: True,
        before_metrics: Callable[[], Awaitable[None]] | None = None,
        kubeapi: KubeApi | None = None,
        api_token: bytes | None = None,
        ssl_context: ssl.SSLContext | None = None,
        dashboard: Dashboard | None = None,
    ) -> None:
        self.metrics = metrics
        self.branch = branch
        self.on_push = on_push
        self.status = status
        self.secret = secret
        self.allow_unsigned = allow_unsigned
        self.notify_token = notify_token
        self.deliveries = deliveries or DeliveryLog()
        self.ready = ready
        self.before_metrics = before_metrics
        self.kubeapi = kubeapi
        self.api_token = api_token
        self.ssl_context = ssl_context
        self.dashboard = dashboard
        if dashboard is not None:
            dashboard.loopback = lambda: self.loopback
        #: set by ``start``: whether the server listens on loopback only
        self.loopback = True
        self._runner: web.AppRunner | None = None
        self.port = 0

    def app(self) -> web.Application:
        middlewares = [self._api_auth]
        if self.dashboard is not None:
            middlewares.append(self.dashboard.middleware)
        app = web.Application(client_max_size=MAX_BODY_BYTES + 1, middlewares=middlewares)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/api/v1/status", self._status)
        app.router.add_post("/hooks/notify", self._notify)
        app.router.add_post("/hooks/{hook}", self._hook)
        if self.kubeapi is not None:
            self.kubeapi.register(app)
        if self.dashboard is not None:
            self.dashboard.register(app)
        return app

    @web.middleware
    async def _api_auth(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """The Kubernetes API needs the bearer token when one is configured, and
        when the server listens beyond loopback (then without a token it is off)."""
        if (
            self.kubeapi is None
            or not is_api_path(request.path)
            or request.path == "/api/v1/status"
        ):
            return await handler(request)
        if self.api_token is None:
            if self.loopback:
                return await handler(request)
            return status_response(
                401,
                "Unauthorized",
                "the Kubernetes API beyond loopback needs a bearer token: "
                "start gitkube with --api-token-file",
            )
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            return status_response(401, "Unauthorized", "a bearer token is required")
        if not hmac.compare_digest(given.strip().encode(), self.api_token):
            return status_response(403, "Forbidden", "the bearer token is not the API token")
        return await handler(request)

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        self.loopback = is_loopback(host)
        site = web.TCPSite(
            self._runner, host, port, reuse_address=True, ssl_context=self.ssl_context
        )
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        return self.port

    async def stop(self) -> None:
        if self.kubeapi is not None:
            self.kubeapi.close()
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ handlers

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _readyz(self, request: web.Request) -> web.Response:
        if self.ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.before_metrics:
            try:
                await self.before_metrics()
            except Exception:
                log.exception("could not refresh metrics from the store")
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": Metrics.content_type}
        )

    async def _status(self, request: web.Request) -> web.Response:
        data = await self.status()
        data["deliveries"] = self.deliveries.to_list() or data.get("deliveries", [])
        return web.json_response(data, dumps=lambda d: json.dumps(d, default=str))

    async def _read_body(self, request: web.Request) -> bytes | None:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return None
        body = await request.content.read(MAX_BODY_BYTES + 1)
        return None if len(body) > MAX_BODY_BYTES else body

    def _record(self, hook: str, verdict: Verdict, request: web.Request) -> web.Response:
        delivery = Delivery(
            time=_now(),
            hook=hook,
            event=verdict.event,
            status=verdict.status,
            outcome=verdict.outcome,
            reason=verdict.reason,
            delivery_id=request.headers.get("X-GitHub-Delivery", "")
            or request.headers.get("X-Gitea-Delivery", "")
            or request.headers.get("X-Gitlab-Event-UUID", ""),
            ref=verdict.ref,
            revision=verdict.revision,
        )
        self.deliveries.add(delivery)
        self.metrics.webhooks.labels(hook=hook, outcome=verdict.outcome).inc()
        log.info("webhook %s %s: %s %s", hook, verdict.event, verdict.status, verdict.reason)
        return web.json_response(
            {"outcome": verdict.outcome, "reason": verdict.reason}, status=verdict.status
        )

    async def _hook(self, request: web.Request) -> web.Response:
        hook = request.match_info["hook"]
        if hook not in HOOKS:
            return web.json_response(
                {"outcome": "rejected", "reason": f"no hook {hook!r}; hooks: {', '.join(HOOKS)}"},
                status=404,
            )
        if self.secret is None and not self.allow_unsigned:
            return self._record(
                hook,
                Verdict(403, "rejected", "no webhook secret configured; set one to accept hooks"),
                request,
            )
        body = await self._read_body(request)
        if body is None:
            return self._record(
                hook, Verdict(413, "rejected", f"body over {MAX_BODY_BYTES} bytes"), request
            )
        if self.secret is not None:
            problem = check_signature(hook, request.headers, body, self.secret)
            if problem:
                return self._record(hook, Verdict(401, "rejected", problem), request)
        verdict = route(hook, request.headers, body, branch=self.branch)
        if verdict.trigger:
            self.on_push(verdict.revision or None)
        return self._record(hook, verdict, request)

    async def _notify(self, request: web.Request) -> web.Response:
        given = request.headers.get("X-Gitkube-Token", "").encode()
        if self.notify_token is None or not hmac.compare_digest(given, self.notify_token):
            return self._record(
                "notify", Verdict(401, "rejected", "missing or wrong X-Gitkube-Token"), request
            )
        body = await self._read_body(request)
        if body is None:
            return self._record("notify", Verdict(413, "rejected", "body too large"), request)
        ref, revision = "", ""
        for line in body.decode(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[2] == f"refs/heads/{self.branch}":
                ref, revision = parts[2], parts[1]
        if not ref:
            verdict = Verdict(202, "ignored", f"no update of refs/heads/{self.branch}", "push")
        elif set(revision) == {"0"}:
            verdict = Verdict(202, "ignored", f"branch {self.branch} was deleted", "push", ref)
        else:
            verdict = Verdict(
                202,
                "accepted",
                f"push of {revision[:12]} to {self.branch}",
                "push",
                ref,
                revision,
                trigger=True,
            )
            self.on_push(revision)
        return self._record("notify", verdict, request)
