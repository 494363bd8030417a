"""The web dashboard: the cluster as git sees it, live, at ``/``.

Served by the HTTP server of ``gitkube run`` and ``gitkube master`` (off with
``--no-ui``). Nothing here is a second source of truth:

- ``/ui/api/status`` is ``build_status_report`` (what `gitkube status` prints);
- ``/ui/api/objects`` is every object the process's shared cache holds (the
  watch-fed ``gitkube.control.Cache``), each summarised with the row
  `gitkube get` prints for it and its health from ``gitkube.sync.health``;
- ``/ui/api/watch`` streams changes as server-sent events, fed by that cache
  (objects) and by a store watch of the sync keys (state, history, control,
  webhook deliveries);
- ``/ui/api/diffs`` and ``/ui/api/drift``: what the sync loop recorded;
- ``/ui/api/pods/{ns}/{name}`` and ``…/log``: a pod with its events, and its
  log followed live (``gitkube.cli.logs_cmd.open_log``, as `gitkube logs -f`).

Actions (``POST /ui/api/{sync,suspend,resume}``) do not change desired
state. They need the API token (``--api-token-file``) or the webhook secret,
as a bearer token or as the session cookie the page's sign-in sets, AND a
same-origin request (``Origin`` or ``Sec-Fetch-Site``). Without any token the
page is read-only. Beyond loopback the page needs ``--api-token-file``, and
its data needs the token.

Secret values never reach the page: a Secret is summarised by its data keys.
Every asset comes from the package (``gitkube/server/ui_assets/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from importlib import resources
from typing import Any

from aiohttp import web

from gitkube.api import annotations as ann
from gitkube.api.keys import (
    DELIVERIES_KEY,
    SYNC_CONTROL_KEY,
    SYNC_DIFFS_KEY,
    SYNC_DRIFT_KEY,
    SYNC_HISTORY_KEY,
    SYNC_STATE_KEY,
    SYSTEM,
)
from gitkube.api.objects import (
    ApiObject,
    Deployment,
    Endpoints,
    Event,
    Node,
    Pod,
    ReplicaSet,
    ReplicationController,
    Secret,
    Service,
)
from gitkube.control.cache import KNOWN_RESOURCES, Cache, CacheEvent
from gitkube.errors import GitkubeError
from gitkube.store.objects import ObjectStore
from gitkube.sync.health import assess_health

log = logging.getLogger(__name__)

COOKIE = "gitkube_ui"
ASSETS = {
    "app.js": "text/javascript",
    "app.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
#: keys whose change makes the page read the status again
STATUS_KEYS = (SYNC_STATE_KEY, SYNC_HISTORY_KEY, SYNC_CONTROL_KEY, DELIVERIES_KEY)
#: a page that reads events slower than this many is dropped (it re-lists)
MAX_QUEUED_EVENTS = 20000
LOG_TAIL_LINES = 200


def _asset(name: str) -> bytes:
    return (resources.files("gitkube.server") / "ui_assets" / name).read_bytes()


def session_value(token: bytes) -> str:
    """The session cookie's value for ``token`` (stateless: a new token ends
    every session)."""
    return hmac.new(token, b"gitkube-ui-session", hashlib.sha256).hexdigest()


# ---------------------------------------------------------------- summaries (pure)


def _row(obj: ApiObject, now: datetime, pods_by_node: dict[str, list[Pod]]) -> list[str]:
    from gitkube.cli.get_cmd import object_row

    try:
        if isinstance(obj, Node):
            return object_row(obj, now, wide=False, pods=pods_by_node.get(obj.name, ()))
        return object_row(obj, now, wide=False)
    except (KeyError, ValueError, TypeError, AttributeError):
        return []


def headers() -> dict[str, list[str]]:
    """The column headers of `gitkube get` for each kind (AGE last for nodes too)."""
    from gitkube.cli.get_cmd import HEADERS

    out = {}
    for cls, (base, _extra) in HEADERS.items():
        out[cls.KIND] = [*base, "AGE"] if cls is Node else list(base)
    return out


def summarize(
    obj: ApiObject,
    *,
    now: datetime,
    endpoints: Endpoints | None = None,
    pods_by_node: dict[str, list[Pod]] | None = None,
) -> dict[str, Any]:
    """What the page knows of one object: identity, labels, owners, health,
    provenance and the `gitkube get` row. Never a Secret's values."""
    meta = obj.metadata
    health = assess_health(obj, endpoints=endpoints)
    data: dict[str, Any] = {
        "key": obj.key,
        "kind": obj.KIND,
        "ns": obj.namespace,
        "name": obj.name,
        "uid": meta.uid,
        "labels": dict(meta.labels),
        "owners": [r.uid for r in meta.owner_references if r.uid],
        "managed": meta.annotations.get(ann.MANAGED_BY) == ann.MANAGED_BY_VALUE,
        "path": meta.annotations.get(ann.SOURCE_PATH, ""),
        "health": health.status,
        "why": health.message,
        "row": _row(obj, now, pods_by_node or {}),
    }
    if isinstance(obj, Pod):
        data["node"] = obj.spec.node_name
        data["phase"] = obj.status.phase
        data["restarts"] = sum(cs.restart_count for cs in obj.status.container_statuses)
        try:
            data["cpu"], data["memory"] = obj.spec.request_cpu(), obj.spec.request_memory()
        except (ValueError, GitkubeError):
            data["cpu"], data["memory"] = 0, 0
    elif isinstance(obj, Service):
        data["selector"] = dict(obj.spec.selector)
    elif isinstance(obj, Node):
        ready = obj.status.condition("Ready")
        data["ready"] = ready.status if ready is not None else "Unknown"
        data["capacity"] = {k: str(v) for k, v in obj.status.capacity.items()}
        data["allocatable"] = {
            "cpu": obj.allocatable_cpu(),
            "memory": obj.allocatable_memory(),
            "pods": obj.allocatable_pods(),
        }
    elif isinstance(obj, Secret):
        data["dataKeys"] = sorted({*obj.data, *obj.string_data})
    elif isinstance(obj, ReplicationController | ReplicaSet | Deployment):
        data["replicas"] = {
            "ready": obj.status.ready_replicas,
            "desired": obj.spec.replicas if obj.spec.replicas is not None else 1,
        }
    return data


def pods_by_node(cache: Cache) -> dict[str, list[Pod]]:
    out: dict[str, list[Pod]] = {}
    for pod in cache.list(Pod):
        if pod.spec.node_name:
            out.setdefault(pod.spec.node_name, []).append(pod)
    return out


def same_origin(request: web.Request) -> bool:
    """A request the page itself made: its Origin is this server, or the
    browser says the fetch is same-origin. Neither header: refused."""
    origin = request.headers.get("Origin")
    if origin is not None:
        return origin == f"{request.scheme}://{request.host}"
    return request.headers.get("Sec-Fetch-Site") == "same-origin"


def _sse(event: str, data: Any) -> bytes:
    text = json.dumps(data, separators=(",", ":"), default=str)
    return f"event: {event}\ndata: {text}\n\n".encode()


# ---------------------------------------------------------------- the dashboard


class Dashboard:
    def __init__(
        self,
        objects: ObjectStore,
        cache: Cache,
        *,
        status: Callable[[], Awaitable[dict[str, Any]]],
        on_sync: Callable[[], None] | None,
        suspend: Callable[[], Awaitable[Any]],
        resume: Callable[[], Awaitable[Any]],
        tokens: Sequence[bytes] = (),
        api_token: bytes | None = None,
        loopback: Callable[[], bool] = lambda: True,
        secure: bool = False,
    ) -> None:
        self.objects = objects
        self.cache = cache
        self.status = status
        self.on_sync = on_sync
        self.suspend = suspend
        self.resume = resume
        #: the tokens an action may carry: the API token and the webhook secret
        self.tokens = [t for t in tokens if t]
        self.api_token = api_token
        self.loopback = loopback
        self.secure = secure
        self._subscribers: set[asyncio.Queue[bytes | None]] = set()
        self._remove_handler: Callable[[], None] | None = None
        self._status_watch: asyncio.Task[None] | None = None
        #: log streams being served (they follow forever: ended at shutdown)
        self._log_tasks: set[asyncio.Task[Any]] = set()

    @property
    def read_only(self) -> bool:
        return not self.tokens

    def register(self, app: web.Application) -> None:
        app.router.add_get("/", self._index)
        app.router.add_get("/ui/assets/{name}", self._asset)
        app.router.add_get("/ui/api/session", self._session)
        app.router.add_post("/ui/api/login", self._login)
        app.router.add_post("/ui/api/logout", self._logout)
        app.router.add_get("/ui/api/status", self._status)
        app.router.add_get("/ui/api/objects", self._objects)
        app.router.add_get("/ui/api/watch", self._watch)
        app.router.add_get("/ui/api/diffs", self._diffs)
        app.router.add_get("/ui/api/drift", self._drift)
        app.router.add_get("/ui/api/pods/{namespace}/{name}", self._pod)
        app.router.add_get("/ui/api/pods/{namespace}/{name}/log", self._log)
        for action in ("sync", "suspend", "resume"):
            app.router.add_post(f"/ui/api/{action}", self._action)
        app.on_shutdown.append(self._shutdown)

    # ------------------------------------------------------------ access

    def authenticated(self, request: web.Request) -> bool:
        """The request carries a token (bearer) or the session cookie of one."""
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and given:
            return any(hmac.compare_digest(given.strip().encode(), t) for t in self.tokens)
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and any(
            hmac.compare_digest(cookie, session_value(t)) for t in self.tokens
        )

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Beyond loopback: the page only with --api-token-file, its data only
        with the token. Every page response carries the security headers."""
        path = request.path
        if path != "/" and not path.startswith("/ui/"):
            return await handler(request)
        if not self.loopback():
            if self.api_token is None:
                return web.Response(
                    status=403,
                    text="gitkube: the web page is served beyond loopback only with a token: "
                    "start gitkube with --api-token-file FILE (or --no-ui, or listen on "
                    "127.0.0.1)\n",
                )
            public = (
                path == "/"
                or path.startswith("/ui/assets/")
                or path
                in (
                    "/ui/api/session",
                    "/ui/api/login",
                    "/ui/api/logout",
                )
            )
            if not public and not self.authenticated(request):
                return web.json_response({"error": "sign in with the API token first"}, status=401)
        response = await handler(request)
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    def _refuse(self, request: web.Request) -> web.Response | None:
        """Why a POST may not proceed, or None."""
        if not same_origin(request):
            return web.json_response(
                {"error": "cross-origin request refused (Origin / Sec-Fetch-Site)"}, status=403
            )
        return None

    # ------------------------------------------------------------ page

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(
            body=_asset("index.html"),
            content_type="text/html",
            charset="utf-8",
            headers={"Cache-Control": "no-cache"},
        )

    async def _asset(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in ASSETS:
            raise web.HTTPNotFound()
        return web.Response(
            body=_asset(name), headers={"Content-Type": ASSETS[name], "Cache-Control": "no-cache"}
        )

    async def _session(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "readOnly": self.read_only,
                "authenticated": bool(self.tokens) and self.authenticated(request),
                "loopback": self.loopback(),
            }
        )

    async def _login(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if self.read_only:
            return web.json_response(
                {
                    "error": "no token is configured: the page is read-only "
                    "(start gitkube with --api-token-file)"
                },
                status=403,
            )
        try:
            body = await request.json()
            given = str(body.get("token", "")).strip().encode()
        except (ValueError, AttributeError):
            return web.json_response({"error": 'send {"token": "…"}'}, status=400)
        match = next((t for t in self.tokens if hmac.compare_digest(given, t)), None)
        if match is None:
            return web.json_response({"error": "that is not the token"}, status=403)
        response = web.json_response({"authenticated": True})
        response.set_cookie(
            COOKIE,
            session_value(match),
            httponly=True,
            samesite="Strict",
            secure=self.secure,
            path="/",
        )
        return response

    async def _logout(self, request: web.Request) -> web.Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        response = web.json_response({"authenticated": False})
        response.del_cookie(COOKIE, path="/")
        return response

    # ------------------------------------------------------------ data

    async def _status(self, request: web.Request) -> web.Response:
        data = await self.status()
        return web.json_response(data, dumps=lambda d: json.dumps(d, default=str))

    def snapshot(self) -> dict[str, Any]:
        """Every object the cache holds, summarised (``/ui/api/objects``)."""
        now = datetime.now(UTC)
        by_node = pods_by_node(self.cache)
        items = []
        for cls in KNOWN_RESOURCES.values():
            for obj in self.cache.list(cls):
                items.append(self._summary(obj, now, by_node))
        return {"revision": self.cache.revision, "headers": headers(), "objects": items}

    def _summary(
        self, obj: ApiObject, now: datetime, by_node: dict[str, list[Pod]] | None = None
    ) -> dict[str, Any]:
        endpoints = (
            self.cache.get(Endpoints, obj.namespace, obj.name) if isinstance(obj, Service) else None
        )
        return summarize(obj, now=now, endpoints=endpoints, pods_by_node=by_node)

    async def _objects(self, request: web.Request) -> web.Response:
        data = self.snapshot()
        body = json.dumps(data, separators=(",", ":"), default=str)
        return web.Response(text=body, content_type="application/json")

    async def _read_json(self, key: str, default: Any) -> Any:
        kv = await self.objects.store.get(key)
        if kv is None:
            return default
        try:
            return json.loads(kv.value)
        except ValueError:
            return default

    async def _diffs(self, request: web.Request) -> web.Response:
        return web.json_response({"diffs": await self._read_json(SYNC_DIFFS_KEY, [])})

    async def _drift(self, request: web.Request) -> web.Response:
        return web.json_response({"objects": await self._read_json(SYNC_DRIFT_KEY, [])})

    async def _pod(self, request: web.Request) -> web.Response:
        namespace, name = request.match_info["namespace"], request.match_info["name"]
        pod = self.cache.get(Pod, namespace, name) or await self.objects.get(Pod, namespace, name)
        if pod is None:
            return web.json_response({"error": f"pod {namespace}/{name} not found"}, status=404)
        events = [
            e.to_dict()
            for e in self.cache.list(Event, namespace)
            if e.involved_object.kind == "Pod" and e.involved_object.name == name
        ]
        events.sort(key=lambda e: e.get("lastTimestamp") or "")
        health = assess_health(pod)
        return web.json_response(
            {
                "pod": pod.to_dict(),
                "health": {"status": health.status, "message": health.message},
                "events": events,
            }
        )

    # ------------------------------------------------------------ live

    def _start(self) -> None:
        if self._remove_handler is None:
            self._remove_handler = self.cache.add_handler(self._on_cache_event, replay=False)
        if self._status_watch is None or self._status_watch.done():
            self._status_watch = asyncio.get_running_loop().create_task(self._watch_status())

    def _stop_if_idle(self) -> None:
        if self._subscribers:
            return
        if self._remove_handler is not None:
            self._remove_handler()
            self._remove_handler = None
        if self._status_watch is not None:
            self._status_watch.cancel()
            self._status_watch = None

    def _broadcast(self, message: bytes) -> None:
        for queue in list(self._subscribers):
            if queue.qsize() >= MAX_QUEUED_EVENTS:
                # too slow a reader: end its stream; the page re-lists
                self._subscribers.discard(queue)
                queue.put_nowait(None)
            else:
                queue.put_nowait(message)

    def _on_cache_event(self, event: CacheEvent) -> None:
        if not event.resource:
            return  # raw keys (heartbeats): not shown
        now = datetime.now(UTC)
        if event.type == "DELETE":
            self._broadcast(_sse("del", {"key": event.key, "rev": event.revision}))
        elif event.new is not None:
            summary = self._summary(event.new, now)
            self._broadcast(_sse("put", {"o": summary, "rev": event.revision}))
        obj = event.obj
        if isinstance(obj, Endpoints):
            # a Service's health follows its endpoints
            svc = self.cache.get(Service, obj.namespace, obj.name)
            if svc is not None:
                self._broadcast(_sse("put", {"o": self._summary(svc, now), "rev": event.revision}))
        if isinstance(obj, Pod) and obj.spec.node_name:
            # a node's allocation follows its pods
            node = self.cache.get(Node, "", obj.spec.node_name)
            if node is not None:
                by_node = {node.name: self.cache.pods_on(node.name)}
                self._broadcast(
                    _sse("put", {"o": self._summary(node, now, by_node), "rev": event.revision})
                )

    async def _watch_status(self) -> None:
        """One store watch of the sync keys for every open page."""
        store = self.objects.store
        while True:
            try:
                start = await store.revision() + 1
                async for event in store.watch(SYSTEM, start_revision=start):
                    if event.kv.key in STATUS_KEYS or event.kv.key in (
                        SYNC_DIFFS_KEY,
                        SYNC_DRIFT_KEY,
                    ):
                        self._broadcast(_sse("status", {"key": event.kv.key}))
            except asyncio.CancelledError:
                raise
            except GitkubeError as exc:
                log.debug("dashboard: status watch: %s", exc)
                await asyncio.sleep(1.0)

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._subscribers.add(queue)
        self._start()
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        try:
            await response.prepare(request)
            await response.write(_sse("hello", {"rev": self.cache.revision}))
            while True:
                try:
                    message = await asyncio.wait_for(queue.get(), timeout=15.0)
                except TimeoutError:
                    await response.write(b": keep-alive\n\n")
                    continue
                if message is None:
                    await response.write(_sse("relist", {}))
                    break
                # coalesce what is waiting into one write
                chunks = [message]
                while not queue.empty() and len(chunks) < 500:
                    more = queue.get_nowait()
                    if more is None:
                        break
                    chunks.append(more)
                await response.write(b"".join(chunks))
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._subscribers.discard(queue)
            self._stop_if_idle()
        return response

    async def _log(self, request: web.Request) -> web.StreamResponse:
        from gitkube.cli.logs_cmd import open_log

        namespace, name = request.match_info["namespace"], request.match_info["name"]
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        try:
            runtime, cid, where = await open_log(
                self.objects,
                namespace,
                name,
                container=request.query.get("container", ""),
                previous=request.query.get("previous") in ("1", "true"),
            )
        except GitkubeError as exc:
            with contextlib.suppress(ConnectionResetError):
                await response.write(_sse("fail", {"message": str(exc)}))
            return response
        chunks = runtime.logs(cid, tail=LOG_TAIL_LINES, follow=True)
        pending = b""
        task = asyncio.current_task()
        if task is not None:
            self._log_tasks.add(task)
        try:
            await response.write(_sse("where", {"where": where}))
            async for chunk in chunks:
                pending += chunk
                *lines, pending = pending.split(b"\n")
                if lines:
                    text = [line.decode(errors="replace") for line in lines]
                    await response.write(_sse("lines", text))
            if pending:
                await response.write(_sse("lines", [pending.decode(errors="replace")]))
            await response.write(_sse("end", {}))
        except GitkubeError as exc:
            with contextlib.suppress(ConnectionResetError):
                await response.write(_sse("fail", {"message": f"{where}: {exc}"}))
        except ConnectionResetError:
            pass  # the page went away
        finally:
            self._log_tasks.discard(task)
            with contextlib.suppress(BaseException):
                await chunks.aclose()  # type: ignore[attr-defined]
            await runtime.close()
        return response

    # ------------------------------------------------------------ actions

    async def _action(self, request: web.Request) -> web.Response:
        action = request.path.rsplit("/", 1)[1]
        refused = self._refuse(request)
        if refused is not None:
            return refused
        if self.read_only:
            return web.json_response(
                {
                    "error": "the page is read-only: start gitkube with --api-token-file "
                    "(or a webhook secret) to allow Sync, Suspend and Resume"
                },
                status=403,
            )
        if not self.authenticated(request):
            return web.json_response({"error": "sign in with the API token first"}, status=401)
        if action == "sync":
            if self.on_sync is None:
                return web.json_response({"error": "this process does not sync"}, status=409)
            self.on_sync()
            message = "sync requested"
        elif action == "suspend":
            await self.suspend()
            message = "sync suspended"
        else:
            await self.resume()
            message = "sync resumed"
        log.info("dashboard: %s", message)
        return web.json_response({"ok": True, "message": message}, status=202)

    async def _shutdown(self, app: web.Application) -> None:
        """End every stream, so that stopping the server does not wait for pages."""
        for queue in list(self._subscribers):
            queue.put_nowait(None)
        self._subscribers.clear()
        self._stop_if_idle()
        for task in list(self._log_tasks):
            task.cancel()
