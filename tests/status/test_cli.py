"""`gitkube status` and `gitkube get` against a real SQLite store, no operator:

- status: -o json (the report), -o yaml (the same content), the plain table
  (summary, objects, nodes, errors, history, deliveries), the rich table on a
  terminal, an empty store, a store that does not exist (exit 1);
- get: pods (table, wide, json List with status, one by name), rc, svc (-A
  adds NAMESPACE), ep, nodes and minions (capacity/allocated from the pods
  bound to them), -n with nothing in it, an unknown kind (exit 2 with the
  kinds), an unknown name (exit 1, not found), a name with -A (exit 2);
- the installed entry point, in a subprocess.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from gitkube.cli import app
from gitkube.cli.status_cmd import render_status_rich
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.report import build_status_report
from tests.status.conftest import REVISION, fill_cluster

runner = CliRunner()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/state.db"

    async def fill() -> None:
        store = await open_store(url)
        try:
            await fill_cluster(ObjectStore(store))
        finally:
            await store.close()

    asyncio.run(fill())
    return url


@pytest.fixture
def empty_store_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/empty.db"

    async def create() -> None:
        await (await open_store(url)).close()

    asyncio.run(create())
    return url


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


class TestStatus:
    def test_json_is_the_report(self, store_url: str) -> None:
        code, out, _ = cli("status", "--store", store_url, "-o", "json")
        assert code == 0
        data = json.loads(out)
        assert data["sync"]["phase"] == "Failed"
        assert data["sync"]["revision"] == REVISION
        assert data["sync"]["ageSeconds"] > 0
        assert data["health"]["status"] == "Degraded"
        assert [(o["name"], o["health"]) for o in data["objects"]] == [
            ("cache", "Missing"),
            ("db", "Degraded"),
            ("web", "Progressing"),
            ("web", "Healthy"),
            ("batch", "Degraded"),
        ]
        assert data["errors"][0]["location"] == "apps/web.yaml:12"
        assert len(data["history"]) == 10
        assert data["deliveries"][0]["reason"] == "push to main"

    def test_yaml_has_the_same_content(self, store_url: str) -> None:
        _, out_json, _ = cli("status", "--store", store_url, "-o", "json")
        code, out_yaml, _ = cli("status", "--store", store_url, "-o", "yaml")
        assert code == 0
        as_json, as_yaml = json.loads(out_json), yaml.safe_load(out_yaml)
        for volatile in ("generatedAt",):
            as_json.pop(volatile), as_yaml.pop(volatile)
        for d in (as_json, as_yaml):
            d["sync"].pop("ageSeconds"), d["sync"].pop("age")
        assert as_json == as_yaml

    def test_table(self, store_url: str) -> None:
        code, out, _ = cli("status", "--store", store_url)
        assert code == 0
        lines = out.splitlines()
        assert lines[0] == ("Repository:  https://git.example.invalid/team/cluster.git (ref main)")
        assert lines[1].startswith("Revision:    aaaaaaaaaaaa (synced ")
        assert lines[2] == (
            "Sync:        Failed: revision bbbbbbbbbbbb is invalid; aaaaaaaaaaaa stays applied"
        )
        assert lines[4] == (
            "Health:      Degraded (1 Healthy, 1 Progressing, 1 Missing, 2 Degraded)"
        )
        assert "OBJECTS (5)" in lines
        rc_line = next(line for line in lines if line.startswith("ReplicationController"))
        assert rc_line.split() == [
            "ReplicationController",
            "default/web",
            "Synced",
            "Progressing",
            "2/3",
            "2/3",
            "replicas",
            "ready;",
            "pod",
            "web-2:",
            "Running,",
            "not",
            "ready",
        ]
        assert (
            "apps/web.yaml:12: ReplicationController/web: spec.replicas: must be at least 0"
            in lines
        )
        assert any(line.startswith("node-2   Degraded   NotReady") for line in lines)
        assert "SYNC HISTORY" in lines and "WEBHOOK DELIVERIES" in lines

    def test_wide_adds_the_path(self, store_url: str) -> None:
        _, out, _ = cli("status", "--store", store_url, "-o", "wide")
        header = next(line for line in out.splitlines() if line.startswith("KIND"))
        assert header.split() == [
            "KIND",
            "NAME",
            "SYNC",
            "HEALTH",
            "REPLICAS",
            "ENDPOINTS",
            "PATH",
            "MESSAGE",
        ]

    def test_rich_tables_on_a_terminal(self, store_url: str) -> None:
        async def report():  # type: ignore[no-untyped-def]
            store = await open_store(store_url)
            try:
                return await build_status_report(ObjectStore(store), now=datetime.now(UTC))
            finally:
                await store.close()

        console = Console(record=True, width=200, force_terminal=True)
        render_status_rich(asyncio.run(report()), console)
        text = console.export_text()
        assert "Objects (5)" in text and "Sync history" in text
        assert "CrashLoopBackOff" in text and "apps/web.yaml:12" in text

    def test_empty_store(self, empty_store_url: str) -> None:
        code, out, _ = cli("status", "--store", empty_store_url)
        assert code == 0
        assert "Revision:    none synced yet" in out
        assert "Sync:        Unknown: no sync has run yet" in out

    def test_missing_store_is_an_error(self, tmp_path: Path) -> None:
        code, _, err = cli("status", "--store", f"sqlite:///{tmp_path}/nowhere/state.db")
        assert code == 1
        assert "no gitkube state at" in err and "nowhere/state.db" in err
        assert not (tmp_path / "nowhere").exists()


class TestGet:
    def test_pods_table(self, store_url: str) -> None:
        code, out, _ = cli("get", "pods", "--store", store_url)
        assert code == 0
        rows = [line.split() for line in out.splitlines()]
        assert rows[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
        assert [r[:4] for r in rows[1:]] == [
            ["batch", "0/1", "CrashLoopBackOff", "7"],
            ["web-0", "1/1", "Running", "0"],
            ["web-1", "1/1", "Running", "1"],
            ["web-2", "0/1", "Running", "2"],
        ]

    def test_pods_wide_adds_ip_and_node(self, store_url: str) -> None:
        _, out, _ = cli("get", "po", "-o", "wide", "--store", store_url)
        rows = [line.split() for line in out.splitlines()]
        assert rows[0][-2:] == ["IP", "NODE"]
        assert rows[2][-2:] == ["10.1.0.10", "node-1"]

    def test_json_list_items_include_status(self, store_url: str) -> None:
        code, out, _ = cli("get", "pods", "-o", "json", "--store", store_url)
        assert code == 0
        data = json.loads(out)
        assert (data["apiVersion"], data["kind"]) == ("v1", "List")
        names = [i["metadata"]["name"] for i in data["items"]]
        assert names == ["batch", "web-0", "web-1", "web-2"]
        assert data["items"][1]["status"]["phase"] == "Running"
        assert data["items"][1]["status"]["podIP"] == "10.1.0.10"

    def test_a_name_gives_the_object(self, store_url: str) -> None:
        code, out, _ = cli("get", "rc", "web", "-o", "yaml", "--store", store_url)
        assert code == 0
        data = yaml.safe_load(out)
        assert (data["kind"], data["metadata"]["name"]) == ("ReplicationController", "web")
        assert data["status"]["readyReplicas"] == 2

    def test_several_kinds_one_table_after_another(self, store_url: str) -> None:
        code, out, _ = cli("get", "rc,svc,ep", "--store", store_url)
        assert code == 0
        tables = [t.splitlines() for t in out.split("\n\n")]
        assert [t[0].split()[:2] for t in tables] == [
            ["NAME", "DESIRED"],
            ["NAME", "TYPE"],
            ["NAME", "ENDPOINTS"],
        ]
        assert tables[0][1].split()[0] == "web"
        code, _, err = cli("get", "rc,nope", "--store", store_url)
        assert code == 2 and "'nope'" in err
        code, _, err = cli("get", "rc,svc", "-o", "json", "--store", store_url)
        assert code == 2 and "several kinds" in err

    def test_kinds_stored_without_running_them(self, store_url: str, tmp_path: Path) -> None:
        """An official kind gitkube only stores, and a custom one once its
        CustomResourceDefinition is stored, by the names kubectl takes."""
        from gitkube.api.objects import unsupported_class

        async def fill() -> None:
            store = await open_store(store_url)
            objects = ObjectStore(store)
            try:
                for api_version, kind, resource, namespaced, data in [
                    ("networking.k8s.io/v1", "Ingress", "ingresses", True, {}),
                    (
                        "cert-manager.io/v1",
                        "ClusterIssuer",
                        "clusterissuers.cert-manager.io",
                        False,
                        {},
                    ),
                    (
                        "apiextensions.k8s.io/v1",
                        "CustomResourceDefinition",
                        "customresourcedefinitions",
                        False,
                        {
                            "spec": {
                                "group": "cert-manager.io",
                                "scope": "Cluster",
                                "names": {"kind": "ClusterIssuer", "plural": "clusterissuers"},
                                "versions": [{"name": "v1", "served": True}],
                            }
                        },
                    ),
                ]:
                    cls = unsupported_class(
                        api_version, kind, resource=resource, namespaced=namespaced
                    )
                    name = "clusterissuers.cert-manager.io" if data else kind.lower()
                    await objects.create(cls.from_dict({"metadata": {"name": name}, **data}))
            finally:
                await store.close()

        asyncio.run(fill())
        code, out, _ = cli("get", "ing", "--store", store_url)
        assert code == 0, out
        rows = [line.split() for line in out.splitlines()]
        assert rows[0] == ["NAME", "AGE"] and rows[1][0] == "ingress"
        code, out, _ = cli(
            "get", "clusterissuer", "clusterissuer", "-o", "json", "--store", store_url
        )
        assert code == 0 and json.loads(out)["kind"] == "ClusterIssuer"
        code, out, _ = cli("get", "rc,clusterissuers.cert-manager.io", "--store", store_url)
        assert code == 0 and out.split("\n\n")[1].splitlines()[1].split()[0] == "clusterissuer"
        code, _, err = cli("get", "issuers", "--store", store_url)
        assert code == 2 and "custom resources whose CustomResourceDefinition is in git" in err

    def test_rc_table(self, store_url: str) -> None:
        _, out, _ = cli("get", "replicationcontrollers", "--store", store_url)
        rows = [line.split() for line in out.splitlines()]
        assert rows[0] == ["NAME", "DESIRED", "CURRENT", "READY", "AGE"]
        assert rows[1][:4] == ["web", "3", "3", "2"]

    def test_services_all_namespaces(self, store_url: str) -> None:
        _, out, _ = cli("get", "svc", "-A", "--store", store_url)
        rows = [line.split() for line in out.splitlines()]
        assert rows[0] == [
            "NAMESPACE",
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
        ]
        assert rows[1][:6] == ["default", "db", "ClusterIP", "<none>", "<none>", "5432/TCP"]
        assert rows[2][:6] == ["default", "web", "ClusterIP", "10.0.0.10", "<none>", "80/TCP"]

    def test_a_load_balancer_shows_its_ingress_addresses(self) -> None:
        from gitkube.api.objects import ObjectMeta, Service, ServicePort, ServiceSpec
        from gitkube.cli.get_cmd import service_row

        svc = Service(
            metadata=ObjectMeta(name="shop"),
            spec=ServiceSpec(type="LoadBalancer", ports=[ServicePort(port=80, node_port=0)]),
        )
        now = datetime.now(UTC)
        assert service_row(svc, now, wide=False)[1:5] == [
            "LoadBalancer",
            "<none>",
            "<pending>",
            "80/TCP",
        ]
        svc.status.load_balancer.ingress = [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]
        assert service_row(svc, now, wide=False)[3] == "10.0.0.1,10.0.0.2"

    def test_endpoints(self, store_url: str) -> None:
        _, out, _ = cli("get", "ep", "--store", store_url)
        rows = [line.split() for line in out.splitlines()]
        assert rows[0] == ["NAME", "ENDPOINTS", "AGE"]
        assert rows[1][:2] == ["web", "10.1.0.10:8080,10.1.0.11:8080"]

    @pytest.mark.parametrize("kind", ["nodes", "no", "minions"])
    def test_nodes_with_capacity_and_allocation(self, store_url: str, kind: str) -> None:
        code, out, _ = cli("get", kind, "--store", store_url)
        assert code == 0
        rows = [line.split() for line in out.splitlines()]
        assert rows[0][:6] == [
            "NAME",
            "STATUS",
            "LABELS",
            "CPU(capacity/allocated)",
            "MEMORY(capacity/allocated)",
            "PODS",
        ]
        # node-1 holds web-0..2 (250m, 64Mi each); node-2 the crash-looping batch pod
        assert rows[1][:6] == ["node-1", "Ready", "zone=a", "2/750m", "4Gi/192Mi", "3/110"]
        assert rows[2][:6] == ["node-2", "NotReady", "zone=a", "2/250m", "4Gi/64Mi", "1/110"]

    def test_an_empty_namespace(self, store_url: str) -> None:
        code, out, err = cli("get", "pods", "-n", "elsewhere", "--store", store_url)
        assert (code, out) == (0, "")
        assert "No resources found in elsewhere namespace." in err

    def test_unknown_kind_is_a_usage_error_listing_the_kinds(self, store_url: str) -> None:
        code, _, err = cli("get", "gadgets", "--store", store_url)
        assert code == 2
        assert "unknown resource type 'gadgets'" in err
        assert "replicationcontrollers (rc)" in err and "minions" in err

    def test_unknown_name_is_not_found(self, store_url: str) -> None:
        code, _, err = cli("get", "svc", "nope", "--store", store_url)
        assert code == 1
        assert 'services "nope" not found in namespace "default"' in err

    def test_a_name_across_all_namespaces_is_a_usage_error(self, store_url: str) -> None:
        code, _, _ = cli("get", "pods", "web-0", "-A", "--store", store_url)
        assert code == 2


class TestEntryPoint:
    def test_status_and_get_in_a_subprocess(self, store_url: str) -> None:
        env = {**os.environ, "GITKUBE_STORE": store_url}
        status = subprocess.run(
            [sys.executable, "-m", "gitkube", "status", "-o", "json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        assert json.loads(status.stdout)["sync"]["phase"] == "Failed"
        get = subprocess.run(
            [sys.executable, "-m", "gitkube", "get", "nope"],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
        assert get.returncode == 2
        assert "Traceback" not in get.stderr
