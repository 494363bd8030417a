"""Namespaces, ConfigMaps, Secrets, Deployments and ReplicaSets through the sync
and `gitkube get`:

- the plan creates, updates and prunes them like the v1 kinds; a Namespace
  removed from git is deleted after the objects in it;
- applied to a real SQLite store, `gitkube get` lists each kind by its name
  and short name, with -n NS and -A, and -o json items carry the apiVersion.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from gitkube.api.validation import load_manifests
from gitkube.cli import app
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.apply import apply_plan
from gitkube.sync.diff import SYNCED_RESOURCES, Live, plan_sync

REPO = b"""\
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data: {MODE: production, LEVEL: debug}
---
apiVersion: v1
kind: Secret
metadata: {name: db, namespace: shop}
stringData: {password: s3cret}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
---
apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: batch}
spec:
  replicas: 1
  selector:
    matchExpressions: [{key: app, operator: In, values: [batch]}]
  template:
    metadata: {labels: {app: batch}}
    spec:
      containers: [{name: b, image: busybox}]
"""


def manifests(data: bytes = REPO) -> list:  # type: ignore[type-arg]
    found, errors, _ = load_manifests(data, "apps.yaml")
    assert errors == [], [str(e) for e in errors]
    return found


def test_every_kind_is_synced() -> None:
    assert set(SYNCED_RESOURCES) >= {
        "namespaces",
        "configmaps",
        "secrets",
        "deployments",
        "replicasets",
    }


def test_plan_creates_then_is_empty_then_prunes_namespace_last() -> None:
    plan = plan_sync(manifests(), [], revision="abc")
    assert sorted(c.key for c in plan.creates) == [
        "/gitkube/configmaps/shop/settings",
        "/gitkube/deployments/shop/web",
        "/gitkube/namespaces/shop",
        "/gitkube/replicasets/default/batch",
        "/gitkube/secrets/shop/db",
    ]
    live = [
        Live.from_wire(json.loads(json.dumps(c.wire)), key=c.key, mod_revision=5)
        for c in plan.creates
    ]
    again = plan_sync(manifests(), live, revision="def")
    assert again.empty and again.unchanged == 5
    # the Namespace and everything in it leave git
    gone = plan_sync([], live, revision="ghi")
    assert [p.key for p in gone.deletes] == [
        "/gitkube/configmaps/shop/settings",
        "/gitkube/deployments/shop/web",
        "/gitkube/replicasets/default/batch",
        "/gitkube/secrets/shop/db",
        "/gitkube/namespaces/shop",
    ]


def test_a_changed_config_map_is_an_update() -> None:
    plan = plan_sync(manifests(), [], revision="abc")
    live = [Live.from_wire(c.wire, key=c.key, mod_revision=5) for c in plan.creates]
    changed = manifests(REPO.replace(b"LEVEL: debug", b"LEVEL: info"))
    update = plan_sync(changed, live, revision="def")
    assert [(u.key, u.fields) for u in update.updates] == [
        ("/gitkube/configmaps/shop/settings", ("data.LEVEL",))
    ]


runner = CliRunner()


def _cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def test_get_lists_the_new_kinds(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"

    async def sync() -> None:
        store = await open_store(url)
        try:
            await apply_plan(ObjectStore(store), plan_sync(manifests(), [], revision="abc"))
        finally:
            await store.close()

    asyncio.run(sync())

    code, out, _ = _cli("get", "ns", "--store", url)
    assert code == 0
    assert out.split("\n")[0].split() == ["NAME", "STATUS", "AGE"]
    assert out.split("\n")[1].split()[:2] == ["shop", "Active"]

    code, out, _ = _cli("get", "configmaps", "-n", "shop", "--store", url)
    assert code == 0 and out.split("\n")[1].split()[:2] == ["settings", "2"]

    code, out, _ = _cli("get", "secret", "-n", "shop", "--store", url)
    assert code == 0 and out.split("\n")[1].split()[:3] == ["db", "Opaque", "1"]

    code, out, _ = _cli("get", "deploy", "-n", "shop", "-o", "wide", "--store", url)
    assert code == 0
    assert out.split("\n")[0].split() == [
        "NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE", "CONTAINERS", "IMAGES", "SELECTOR",
    ]  # fmt: skip
    row = out.split("\n")[1].split()
    assert row[:4] == ["web", "0/2", "0", "0"] and row[-3:] == ["web", "nginx", "app=web"]

    code, out, err = _cli("get", "deployments", "--store", url)
    assert code == 0 and out == "" and "No resources found in default namespace." in err

    code, out, _ = _cli("get", "rs", "-A", "-o", "wide", "--store", url)
    assert code == 0
    assert out.split("\n")[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert out.split("\n")[1].split()[:3] == ["default", "batch", "1"]
    assert out.split("\n")[1].rstrip().endswith("app in (batch)")

    code, out, _ = _cli("get", "deployment", "web", "-n", "shop", "-o", "json", "--store", url)
    assert code == 0
    data = json.loads(out)
    assert (data["apiVersion"], data["kind"], data["spec"]["replicas"]) == (
        "apps/v1",
        "Deployment",
        2,
    )

    code, _, err = _cli("get", "all-the-things", "--store", url)
    assert code == 2 and "deployments (deploy), replicasets (rs)" in err


IMMUTABLE = b"""\
apiVersion: v1
kind: ConfigMap
metadata: {name: frozen, labels: {a: b}}
immutable: true
data: {A: "1"}
"""


def test_an_immutable_config_map_s_data_is_refused_not_planned() -> None:
    plan = plan_sync(manifests(IMMUTABLE), [], revision="abc")
    live = [Live.from_wire(c.wire, key=c.key, mod_revision=5) for c in plan.creates]
    # labels may change
    relabelled = plan_sync(manifests(IMMUTABLE.replace(b"{a: b}", b"{a: c}")), live)
    assert [u.key for u in relabelled.updates] == ["/gitkube/configmaps/default/frozen"]
    assert relabelled.refused == []
    # data may not, nor may it become mutable
    for change in (b'data: {A: "2"}', b"immutable: false"):
        old = b'data: {A: "1"}' if change.startswith(b"data") else b"immutable: true"
        refused = plan_sync(manifests(IMMUTABLE.replace(old, change)), live)
        assert refused.updates == []
        [refusal] = refused.refused
        assert refusal.key == "/gitkube/configmaps/default/frozen"
        assert refusal.message.startswith(
            "ConfigMap 'frozen' is immutable: its data cannot change (Kubernetes refuses it too"
        )
