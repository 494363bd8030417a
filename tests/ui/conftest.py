"""Fixtures of the dashboard tests: the HTTP server with its dashboard on a
real SQLite store and a running shared cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gitkube.control.cache import Cache
from gitkube.server.http import HttpServer
from gitkube.server.metrics import Metrics
from gitkube.server.ui import Dashboard
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import resume, suspend
from gitkube.sync.report import build_status_report

API_TOKEN = b"api-token-for-tests"
WEBHOOK_SECRET = b"webhook-secret-for-tests"


@dataclass
class Served:
    objects: ObjectStore
    cache: Cache
    http: HttpServer
    dashboard: Dashboard
    syncs: list[int] = field(default_factory=list)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http.port}"


Start = Callable[..., Any]


@pytest.fixture
async def serve(tmp_path: Path) -> AsyncIterator[Start]:
    """``await serve(tokens=..., api_token=..., loopback=True)``: a started server."""
    started: list[tuple[Served, asyncio.Event, asyncio.Task[None]]] = []
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    objects = ObjectStore(store)

    async def start(
        *, tokens: tuple[bytes, ...] = (), api_token: bytes | None = None, loopback: bool = True
    ) -> Served:
        cache = Cache(store)
        stop = asyncio.Event()
        task = asyncio.create_task(cache.run(stop))

        async def status() -> dict[str, Any]:
            return (await build_status_report(objects)).to_dict()

        served: Served
        dashboard = Dashboard(
            objects,
            cache,
            status=status,
            on_sync=lambda: served.syncs.append(1),
            suspend=lambda: suspend(objects, reason="from the web page"),
            resume=lambda: resume(objects),
            tokens=tokens,
            api_token=api_token,
        )
        http = HttpServer(
            metrics=Metrics(),
            branch="main",
            on_push=lambda _rev: None,
            status=status,
            secret=WEBHOOK_SECRET if WEBHOOK_SECRET in tokens else None,
            api_token=api_token,
            dashboard=dashboard,
        )
        await http.start("127.0.0.1", 0)
        http.loopback = loopback  # as if it listened beyond loopback
        served = Served(objects, cache, http, dashboard)
        started.append((served, stop, task))
        await cache.sync()
        return served

    try:
        yield start
    finally:
        for served, stop, task in started:
            await served.http.stop()
            stop.set()
            await asyncio.wait_for(task, timeout=10)
        await store.close()
