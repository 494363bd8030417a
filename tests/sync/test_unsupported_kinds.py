"""Kinds gitkube does not run, through the sync loop (real git, real SQLite store):

- with store (the default), an Ingress, a ClusterRole and a custom resource
  are stored under their own resource keys with provenance, in the same
  all-or-nothing revision as the rest; `gitkube status` shows them as
  NotActedOn and the whole set stays Healthy when the rest is;
- removed from git, they are pruned like the rest;
- with error, the revision fails and nothing is written;
- a CustomResourceDefinition pushed later moves its resources to the scope it
  declares, and they move back when it is removed.
"""

from __future__ import annotations

import json
from pathlib import Path

from gitkube.api import annotations as ann
from gitkube.store.objects import ObjectStore
from gitkube.sync.report import build_status_report
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop
from tests.validate.test_unsupported_kinds import CRD as CRDS

FILES = {
    "ingress.yaml": """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
""",
    "rbac.yaml": """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get]}]
""",
    "cert.yaml": """\
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: shop-tls}
spec: {secretName: shop-tls}
""",
    "config.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n",
}
KEYS = [
    "/gitkube/ingresses/default/web",
    "/gitkube/clusterroles/reader",
    "/gitkube/certificates.cert-manager.io/default/shop-tls",
]


async def test_stored_shown_as_not_acted_on_and_pruned(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write_many(FILES)
    commit = git_remote.commit_and_push("real repository")
    loop = make_loop(objects, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.created == 4, result
    for key in KEYS:
        kv = await objects.store.get(key)
        assert kv is not None, key
        data = json.loads(kv.value)
        assert data["metadata"]["annotations"][ann.SOURCE_COMMIT] == commit
    ingress = json.loads((await objects.store.get(KEYS[0])).value)  # type: ignore[union-attr]
    assert ingress["spec"]["defaultBackend"]["service"]["name"] == "web"

    report = await build_status_report(objects)
    health = {(o.kind, o.name): (o.health, o.message) for o in report.objects}
    assert health[("Ingress", "web")][0] == "NotActedOn"
    assert "not acted on" in health[("Certificate", "shop-tls")][1]
    assert health[("ConfigMap", "c")][0] == "Healthy"
    assert report.health == "Healthy"

    # a second pass finds nothing to do
    again = await loop.reconcile_once()
    assert again.outcome == "Unchanged"

    for path in ("ingress.yaml", "rbac.yaml", "cert.yaml"):
        git_remote.remove(path)
    git_remote.commit_and_push("drop them")
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.deleted == 3
    for key in KEYS:
        assert await objects.store.get(key) is None


async def test_error_mode_fails_the_revision(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write_many(FILES)
    git_remote.commit_and_push("real repository")
    loop = make_loop(objects, git_remote, tmp_path, unsupported_kinds="error")
    result = await loop.reconcile_once()
    assert result.outcome == "Failed"
    assert sorted(e.kind for e in result.errors) == ["Certificate", "ClusterRole", "Ingress"]
    assert await objects.store.get("/gitkube/configmaps/default/c") is None


def test_the_setting_comes_from_flag_environment_or_config_file(tmp_path: Path) -> None:
    import pytest

    from gitkube.config import resolve_settings
    from gitkube.errors import ConfigError

    settings, _ = resolve_settings({}, environ={})
    assert settings.unsupported_kinds_mode() == "store"
    settings, _ = resolve_settings({}, environ={"GITKUBE_UNSUPPORTED_KINDS": "error"})
    assert settings.unsupported_kinds_mode() == "error"
    config = tmp_path / "gitkube.yaml"
    config.write_text("unsupported-kinds: error\n")
    settings, _ = resolve_settings({}, config_file=config, environ={})
    assert settings.unsupported_kinds_mode() == "error"
    settings, _ = resolve_settings({"unsupported_kinds": "store"}, config_file=config, environ={})
    assert settings.unsupported_kinds_mode() == "store"
    settings, _ = resolve_settings({"unsupported_kinds": "maybe"}, environ={})
    with pytest.raises(ConfigError, match="expected store or error"):
        settings.unsupported_kinds_mode()


ISSUER = """\
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: letsencrypt}
spec: {acme: {server: https://acme.example.com/directory}}
"""


async def test_a_definition_pushed_later_moves_its_resources_to_their_scope(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    """Without its CustomResourceDefinition in git a custom resource is taken
    as namespaced; the push that adds a cluster-scoped definition re-keys it
    (the unchanged file is read again), and one that removes it moves it back."""
    git_remote.write_many({"issuer.yaml": ISSUER})
    git_remote.commit_and_push("an issuer")
    loop = make_loop(objects, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result
    namespaced = "/gitkube/clusterissuers.cert-manager.io/default/letsencrypt"
    cluster = "/gitkube/clusterissuers.cert-manager.io/letsencrypt"
    assert await objects.store.get(namespaced) is not None

    git_remote.write_many({"crds/issuers.yaml": CRDS})  # ClusterIssuer and NetworkChaos
    git_remote.commit_and_push("its definition")
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result
    assert (result.created, result.deleted) == (3, 1)  # two definitions, the issuer moved
    assert await objects.store.get(namespaced) is None
    kv = await objects.store.get(cluster)
    assert kv is not None and "namespace" not in json.loads(kv.value)["metadata"]
    assert (await loop.reconcile_once()).outcome == "Unchanged"
    report = await build_status_report(objects)
    assert {(o.kind, o.namespace, o.name) for o in report.objects} >= {
        ("ClusterIssuer", "", "letsencrypt"),
        ("CustomResourceDefinition", "", "clusterissuers.cert-manager.io"),
    }

    git_remote.remove("crds/issuers.yaml")
    git_remote.commit_and_push("no definition")
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result
    assert await objects.store.get(cluster) is None
    assert await objects.store.get(namespaced) is not None
