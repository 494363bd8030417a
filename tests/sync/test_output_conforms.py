"""What gitkube writes conforms to the official Kubernetes schema too.

A real `gitkube run` (in process, process runtime, SQLite store) syncs a
repository holding every kind gitkube reads; once pods run and are ready,
every item of `gitkube get KIND -o json`, for every kind, passes the
official schema gitkube ships, in strict mode, and kubernetes-validate
(strict) agrees. In particular a Pod's containerStatuses[].imageID, a Node's
nodeInfo.systemUUID and no ``lastUpdateTime`` in RC conditions.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import kubernetes_validate
from typer.testing import CliRunner

from gitkube.api.schema import Sink, kubernetes_version, official_check
from gitkube.cli import app
from gitkube.cli.get_cmd import RESOURCE_ALIASES
from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    eventually,
    kill_processes_under,
    operator_settings,
    start_operator,
)

REPO = {
    "ns.yaml": "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n",
    "config.yaml": """\
apiVersion: v1
kind: ConfigMap
metadata: {name: settings}
data: {MODE: production}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
stringData: {password: s3cret}
""",
    "web.yaml": """\
apiVersion: v1
kind: ReplicationController
metadata: {name: web}
spec:
  replicas: 2
  selector: {app: web}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: web
        image: python:3.11-alpine
        command: ["python3", "-m", "http.server", "--bind", "127.0.0.1", "$(PORT)"]
        ports: [{name: http, containerPort: 8000}]
        readinessProbe: {httpGet: {path: /, port: http}, periodSeconds: 1}
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 18081, targetPort: http}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api, namespace: shop}
spec:
  replicas: 0
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: busybox, command: [sleep, "3600"]}]
""",
}

runner = CliRunner()


async def get_items(resource: str, store: str) -> list[dict[str, Any]]:
    args = ["get", resource, "-A", "-o", "json", "--store", store]
    # the CLI runs its own event loop: in a thread, beside the operator's
    result = await asyncio.to_thread(runner.invoke, app, args)
    assert result.exit_code == 0, result.stdout + result.stderr
    items: list[dict[str, Any]] = json.loads(result.stdout)["items"]
    return items


def official_errors(item: dict[str, Any]) -> list[str]:
    check = official_check(item["apiVersion"], item["kind"])
    assert check is not None, item["kind"]
    sink = Sink()
    check(item, (), sink)
    return [f"{'.'.join(map(str, path))}: {message}" for path, message in sink.errors]


async def test_every_item_of_get_o_json_passes_the_official_schema(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write_many(REPO)
    git_remote.commit_and_push("every kind")
    state = tmp_path / "state"
    settings = operator_settings(git_remote.url, state, interval="1s", proxy="false")
    store = f"sqlite:///{state}/state.db"
    running = await start_operator(settings)
    try:

        async def ready() -> bool:
            pods = await get_items("pods", store)
            rcs = await get_items("rc", store)
            return (
                len(pods) == 2
                and all(p.get("status", {}).get("containerStatuses") for p in pods)
                and all(cs["ready"] for p in pods for cs in p["status"]["containerStatuses"])
                and bool(rcs and rcs[0].get("status", {}).get("readyReplicas") == 2)
                and bool(await get_items("endpoints", store))
            )

        await eventually(ready, timeout=90, what="2 ready pods behind the RC")
        seen: dict[str, int] = {}
        for resource in RESOURCE_ALIASES:
            for item in await get_items(resource, store):
                seen[item["kind"]] = seen.get(item["kind"], 0) + 1
                assert official_errors(item) == [], (resource, item)
                kubernetes_validate.validate(item, kubernetes_version(), strict=True)
        assert seen.keys() >= {
            "Pod", "ReplicationController", "Service", "Endpoints", "Node",
            "Namespace", "ConfigMap", "Secret", "Deployment",
        }  # fmt: skip
        pod = (await get_items("pods", store))[0]
        assert all(cs["imageID"] for cs in pod["status"]["containerStatuses"])
        node = (await get_items("nodes", store))[0]
        assert node["status"]["nodeInfo"]["systemUUID"]
        for rc in await get_items("rc", store):
            for condition in rc["status"].get("conditions", []):
                assert "lastUpdateTime" not in condition
    finally:
        await running.shutdown()
        kill_processes_under(tmp_path)
