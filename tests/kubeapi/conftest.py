"""An HTTP server with the read-only Kubernetes API on a real SQLite store,
seeded with plain objects (no operator): the API's reads, watches and refusals
are checked against it with a plain HTTP client and with kubectl."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gitkube.api.annotations import SOURCE_PATH
from gitkube.api.objects import (
    Container,
    ContainerStatus,
    Node,
    NodeCondition,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodStatus,
    Secret,
)
from gitkube.server.http import HttpServer
from gitkube.server.kubeapi import GitLocation, KubeApi
from gitkube.server.metrics import Metrics
from gitkube.store.objects import ObjectStore
from gitkube.store.sqlite import SQLiteStore


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_pod(
    name: str, *, namespace: str = "default", node: str = "", phase: str = "Running", **labels: str
) -> Pod:
    return Pod(
        metadata=ObjectMeta(
            name=name,
            namespace=namespace,
            labels=labels,
            annotations={SOURCE_PATH: f"k8s/{name}.yaml"},
        ),
        spec=PodSpec(containers=[Container(name="c", image="busybox")], node_name=node),
        status=PodStatus(
            phase=phase,
            pod_ip="127.0.0.1" if node else "",
            conditions=[PodCondition(type="Ready", status="True")],
            container_statuses=[ContainerStatus(name="c", ready=True, image="busybox")],
        ),
    )


@dataclass
class Api:
    server: HttpServer
    objects: ObjectStore
    session: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    async def get(self, path: str, **headers: str) -> tuple[int, Any]:
        async with self.session.get(self.base + path, headers=headers) as resp:
            return resp.status, await resp.json(content_type=None)


def _no_push(_: str | None) -> None:
    return None


async def _status() -> dict[str, Any]:
    return {}


async def _git() -> GitLocation:
    return GitLocation("https://git.example.com/ops/cluster.git", "main", "k8s")


@pytest.fixture
async def api_factory(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[HttpServer, SQLiteStore, aiohttp.ClientSession]] = []

    async def make(
        *, host: str = "127.0.0.1", token: bytes | None = None, bookmark_seconds: float = 10.0
    ) -> Api:
        store = await SQLiteStore.open(tmp_path / f"state{len(made)}.db")
        objects = ObjectStore(store)
        server = HttpServer(
            metrics=Metrics(),
            branch="main",
            on_push=_no_push,
            status=_status,
            secret=None,
            kubeapi=KubeApi(objects, git=_git, bookmark_seconds=bookmark_seconds),
            api_token=token,
        )
        await server.start(host, 0)
        session = aiohttp.ClientSession()
        made.append((server, store, session))
        return Api(server, objects, session)

    yield make
    for server, store, session in made:
        await session.close()
        await server.stop()
        await store.close()


@pytest.fixture
async def api(api_factory: Callable[..., Any]) -> Api:
    api: Api = await api_factory()
    objects = api.objects
    await objects.create(Node(metadata=ObjectMeta(name="n1"), status=_ready()))
    await objects.create(Node(metadata=ObjectMeta(name="n2"), status=_ready()))
    await objects.create(make_pod("web-1", node="n1", app="web", tier="front"))
    await objects.create(make_pod("web-2", node="n2", app="web", tier="front"))
    await objects.create(make_pod("db-1", node="n1", app="db", tier="back"))
    await objects.create(make_pod("pending-1", phase="Pending", app="batch"))
    await objects.create(make_pod("other-1", namespace="other", node="n2", app="web"))
    await objects.create(
        Secret(metadata=ObjectMeta(name="creds"), data={"password": "c2VjcmV0LXZhbHVl"})
    )
    return api


def _ready() -> Any:
    from gitkube.api.objects import NodeStatus

    return NodeStatus(
        capacity={"cpu": "2", "memory": "4Gi", "pods": 110},
        conditions=[NodeCondition(type="Ready", status="True")],
    )
