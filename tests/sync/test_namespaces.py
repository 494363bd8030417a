"""Namespaces through the sync loop, from real git pushes into a real SQLite store:

- objects live in their namespaces; a namespace neither ``default`` nor
  declared in git fails the revision (nothing written) with an error naming
  the object and the namespace;
- when a Namespace is removed from git with its objects, the objects are
  deleted before the Namespace (store watch order), in one sync.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from gitkube.api.keys import PREFIX
from gitkube.api.objects import ConfigMap, Deployment, Namespace
from gitkube.store.objects import ObjectStore
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop

NAMESPACE = "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n"
CONFIG = (
    "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings, namespace: shop}\ndata: {A: b}\n"
)
DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, image: nginx}]
"""


async def test_objects_in_a_declared_namespace_then_the_namespace_is_pruned_last(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write_many(
        {"ns.yaml": NAMESPACE, "shop/config.yaml": CONFIG, "shop/web.yaml": DEPLOYMENT}
    )
    git_remote.commit_and_push("shop")
    loop = make_loop(objects, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result
    assert await objects.get(Namespace, "", "shop") is not None
    assert await objects.get(ConfigMap, "shop", "settings") is not None
    deploy = await objects.get(Deployment, "shop", "web")
    assert deploy is not None and deploy.spec.selector.match_labels == {"app": "web"}

    start = await objects.store.revision()
    git_remote.remove("ns.yaml")
    git_remote.remove("shop/config.yaml")
    git_remote.remove("shop/web.yaml")
    git_remote.commit_and_push("shop goes")
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.deleted == 3

    deleted: list[str] = []

    async def collect() -> None:
        async for event in objects.store.watch(PREFIX, start_revision=start + 1):
            if event.type == "DELETE":
                deleted.append(event.kv.key)
            if len(deleted) == 3:
                return

    await asyncio.wait_for(collect(), timeout=30)
    assert deleted[-1] == "/gitkube/namespaces/shop"
    assert sorted(deleted[:2]) == [
        "/gitkube/configmaps/shop/settings",
        "/gitkube/deployments/shop/web",
    ]


async def test_an_undeclared_namespace_fails_the_revision_naming_both(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write_many(
        {"shop/config.yaml": CONFIG, "other.yaml": NAMESPACE.replace("shop", "other")}
    )
    git_remote.commit_and_push("no shop namespace")
    loop = make_loop(objects, git_remote, tmp_path)
    before = await objects.store.revision()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    assert [str(e.message) for e in result.errors] == [
        "ConfigMap 'settings' is in namespace 'shop', which is not declared in git: "
        "add a Namespace 'shop' (or use the default namespace)"
    ]
    # the line of the namespace field (the third), not the object's first
    assert (result.errors[0].file, result.errors[0].line, result.errors[0].field) == (
        "shop/config.yaml",
        3,
        "metadata.namespace",
    )
    assert await objects.get(Namespace, "", "other") is None
    # only the sync state and history were written
    kvs, _ = await objects.store.range(PREFIX + "namespaces/")
    assert kvs == [] and await objects.store.revision() >= before


async def test_a_change_to_an_immutable_config_map_fails_the_revision(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    frozen = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: frozen}\nimmutable: true\n"
    git_remote.write_many({"frozen.yaml": frozen + "data: {A: '1'}\n", "c.yaml": CONFIG})
    git_remote.write("ns.yaml", NAMESPACE)
    first = git_remote.commit_and_push("frozen")
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    git_remote.write_many(
        {"frozen.yaml": frozen + "data: {A: '2'}\n", "c.yaml": CONFIG.replace("A: b", "A: c")}
    )
    git_remote.commit_and_push("thaw")
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    [error] = result.errors
    assert (error.file, error.kind, error.name, error.field) == (
        "frozen.yaml",
        "ConfigMap",
        "frozen",
        "data",
    )
    assert "is immutable" in error.message and f"still at {first[:12]}" in result.message
    # nothing applied: the other ConfigMap of the same revision is as it was
    config = await objects.get(ConfigMap, "shop", "settings")
    assert config is not None and config.data == {"A": "b"}
