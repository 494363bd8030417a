"""An allocated cluster IP is shown by `gitkube get svc`, `gitkube status`
(table and JSON) and the Kubernetes API (a real SQLite store, the CLI through
typer, the API through aiohttp's test server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from typer.testing import CliRunner

from gitkube.api import annotations as ann
from gitkube.api.keys import HEARTBEAT_PREFIX, SERVICE_IP_PREFIX
from gitkube.api.objects import ObjectMeta, Service, ServicePort, ServiceSpec
from gitkube.cli import app
from gitkube.control import Cache
from gitkube.server.kubeapi import KubeApi
from gitkube.services.allocator import ClusterIPAllocator
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.report import build_status_report


async def _allocated(url: str) -> str:
    store = await open_store(url)
    try:
        objects = ObjectStore(store)
        await objects.create(
            Service(
                # as the sync writes it (so that status lists it)
                metadata=ObjectMeta(name="web", annotations={ann.MANAGED_BY: ann.MANAGED_BY_VALUE}),
                spec=ServiceSpec(selector={"app": "web"}, ports=[ServicePort(port=80)]),
            )
        )
        cache = Cache(store, raw_prefixes=(HEARTBEAT_PREFIX, SERVICE_IP_PREFIX))
        done = await ClusterIPAllocator(
            objects, cache=cache, service_cidr="10.100.0.0/24"
        ).reconcile_once()
        return done.allocated["default/web"]
    finally:
        await store.close()


def test_get_svc_shows_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    ip = asyncio.run(_allocated(url))
    assert ip.startswith("10.100.0.")
    result = CliRunner().invoke(app, ["get", "svc", "--store", url])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.splitlines()[:2]
    assert "CLUSTER-IP" in header and row.split()[:3] == ["web", "ClusterIP", ip]


async def test_status_and_the_kubernetes_api_show_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    ip = await _allocated(url)
    store = await open_store(url)
    try:
        objects = ObjectStore(store)
        report = await build_status_report(objects)
        [svc] = [o for o in report.objects if o.kind == "Service"]
        assert svc.to_dict()["clusterIP"] == ip
        status = await asyncio.to_thread(CliRunner().invoke, app, ["status", "--store", url])
        assert f"clusterIP {ip}" in status.stdout, status.stdout

        application = web.Application()
        KubeApi(objects).register(application)
        async with TestClient(TestServer(application)) as client:
            resp = await client.get("/api/v1/namespaces/default/services/web")
            assert resp.status == 200
            body = json.loads(await resp.text())
            assert body["spec"]["clusterIP"] == ip
    finally:
        await store.close()
