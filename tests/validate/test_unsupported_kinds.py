"""Kinds gitkube does not run (--unsupported-kinds store|error):

- store: an official kind (Ingress, ServiceAccount, PVC, HPA, NetworkPolicy)
  is validated against the official schema, strictly, and built as an object
  of its own resource (ingresses, networkpolicies, ...), cluster-scoped kinds
  without a namespace; a custom resource (a group of its own) is accepted with
  gitkube's metadata checks; a typo in a Kubernetes kind stays an error;
- a CustomResourceDefinition in git gives its kind's scope and plural, and a
  version it does not serve is an error;
- error: such objects are refused with a message that names the setting;
- `gitkube validate --unsupported-kinds` and GITKUBE_UNSUPPORTED_KINDS.
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitkube.api.objects import UnsupportedObject
from gitkube.api.validation import load_manifests, validate_paths
from gitkube.cli import app

INGRESS = """\
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: default, uid: abc}
spec:
  rules:
  - host: shop.example.com
    http:
      paths:
      - path: /
        pathType: Prefix
        backend: {service: {name: web, port: {number: 80}}}
status: {loadBalancer: {}}
"""
CERTIFICATE = """\
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: shop-tls}
spec: {secretName: shop-tls, dnsNames: [shop.example.com], anything: [1, {x: y}]}
"""
CLUSTER_ROLE = """\
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
"""
OTHERS = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: app}
---
apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: data}
spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
---
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata: {name: web}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny}
spec: {podSelector: {}, policyTypes: [Ingress]}
"""


def load(text: str, mode: str = "store") -> tuple[list, list[str]]:  # type: ignore[type-arg]
    manifests, errors, _ = load_manifests(text.encode(), "m.yaml", unsupported=mode)
    return manifests, [str(e) for e in errors]


def test_store_builds_objects_of_their_own_resources() -> None:
    manifests, errors = load("---\n".join([INGRESS, CERTIFICATE, CLUSTER_ROLE, OTHERS]))
    assert errors == []
    objs = [m.obj for m in manifests]
    assert all(isinstance(o, UnsupportedObject) for o in objs)
    assert [o.key for o in objs] == [
        "/gitkube/ingresses/default/web",
        "/gitkube/certificates.cert-manager.io/default/shop-tls",
        "/gitkube/clusterroles/reader",
        "/gitkube/serviceaccounts/default/app",
        "/gitkube/persistentvolumeclaims/default/data",
        "/gitkube/horizontalpodautoscalers/default/web",
        "/gitkube/networkpolicies/default/deny",
    ]
    ingress = objs[0]
    wire = ingress.to_dict()
    assert wire["apiVersion"] == "networking.k8s.io/v1" and wire["kind"] == "Ingress"
    assert "status" not in wire and "uid" not in wire["metadata"]
    assert wire["spec"]["rules"][0]["host"] == "shop.example.com"
    assert type(ingress).from_dict(wire).to_dict() == wire
    assert objs[2].namespace == ""


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "        pathType: Prefix\n",
            "        pathType: [Prefix]\n",
            "m.yaml:10: Ingress/web: spec.rules[0].http.paths[0].pathType: must be a string, not a list",
        ),
        (
            "  - host: shop.example.com\n",
            "  - hots: shop.example.com\n",
            "m.yaml:6: Ingress/web: spec.rules[0].hots: unknown field 'hots' (did you mean 'host'?)",
        ),
        (
            "metadata: {name: web, namespace: default, uid: abc}\n",
            "metadata: {name: Web_1}\n",
            "m.yaml:3: Ingress/Web_1: metadata.name: invalid name: 'Web_1' is not a valid DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ),
    ],
)
def test_store_checks_official_kinds_against_the_official_schema(
    old: str, new: str, expected: str
) -> None:
    assert old in INGRESS
    assert load(INGRESS.replace(old, new))[1] == [expected]


def test_store_checks_a_custom_resource_s_metadata_only() -> None:
    assert load(CERTIFICATE.replace("{name: shop-tls}", "{labels: {a: b}}"))[1] == [
        "m.yaml:3: Certificate/?: metadata.name: required field is missing"
    ]


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        ("apps/v1", "Deploymnet", "kind 'Deploymnet' is not supported"),
        ("v1", "Widget", "kind 'Widget' is not supported"),
        ("networking.k8s.io/v1", "Ingres", "kind 'Ingres' is not supported"),
        ("extensions/v1beta1", "Ingress", "kind 'Ingress' (networking.k8s.io/v1) is not supported"),
    ],
)
def test_a_typo_in_a_kubernetes_kind_stays_an_error(
    api_version: str, kind: str, expected: str
) -> None:
    text = f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: x}}\n"
    [error] = load(text)[1]
    assert expected in error


def test_error_mode_refuses_them_naming_the_setting() -> None:
    manifests, errors = load(INGRESS + "---\n" + CERTIFICATE, mode="error")
    assert manifests == []
    assert [e.split(" gitkube supports")[0] for e in errors] == [
        "m.yaml:2: Ingress/web: kind: kind 'Ingress' (networking.k8s.io/v1) is not supported;",
        "m.yaml:15: Certificate/shop-tls: kind: kind 'Certificate' (cert-manager.io/v1) is not supported;",
    ]
    assert all(
        e.endswith(
            "with --unsupported-kinds store it is validated and stored, and shown as not acted on"
        )
        for e in errors
    )


def test_validate_cli_flag_and_environment(tmp_path: Path) -> None:
    (tmp_path / "ingress.yaml").write_text(INGRESS)
    runner = CliRunner()
    assert runner.invoke(app, ["validate", str(tmp_path)]).exit_code == 0
    refused = runner.invoke(app, ["validate", "--unsupported-kinds", "error", str(tmp_path)])
    assert refused.exit_code == 1 and "kind 'Ingress'" in refused.stdout
    by_env = runner.invoke(
        app, ["validate", str(tmp_path)], env={"GITKUBE_UNSUPPORTED_KINDS": "error"}
    )
    assert by_env.exit_code == 1
    bad = runner.invoke(app, ["validate", "--unsupported-kinds", "maybe", str(tmp_path)])
    assert bad.exit_code == 2


def test_a_kustomization_file_is_named_for_what_it_is() -> None:
    text = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [a.yaml]\n"
    for mode in ("store", "error"):
        assert load(text, mode)[1] == [
            "m.yaml:2: Kustomization/?: kind: a kustomize file (Kustomization), not a Kubernetes "
            "object: gitkube reads plain manifests; commit the output of `kustomize build` (or "
            "keep this file outside the manifest path)"
        ]


def test_a_typed_list_of_a_kind_gitkube_stores() -> None:
    text = (
        "apiVersion: networking.k8s.io/v1\nkind: IngressList\nitems:\n"
        "- metadata: {name: a}\n  spec: {defaultBackend: {service: {name: web, port: {number: 80}}}}\n"
        "- metadata: {name: b}\n  spec: {rules: 5}\n"
    )
    manifests, errors = load(text)
    assert [(m.obj.KIND, m.obj.name, m.line) for m in manifests] == [("Ingress", "a", 4)]
    assert errors == ["m.yaml:7: Ingress/b: spec.rules: must be a list, not an integer (5)"]


# ---------------------------------------------------------------- custom resource definitions in git

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: clusterissuers.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Cluster
  names: {kind: ClusterIssuer, plural: clusterissuers, singular: clusterissuer}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}
  - {name: v1beta1, served: false, storage: false, schema: {openAPIV3Schema: {type: object}}}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: chaos.example.com}
spec:
  group: example.com
  scope: Namespaced
  names: {kind: NetworkChaos, plural: chaos}
  versions:
  - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object}}}
"""
CUSTOM = """\
apiVersion: cert-manager.io/v1
kind: ClusterIssuer
metadata: {name: letsencrypt, namespace: ignored}
spec: {acme: {server: https://acme.example.com/directory}}
---
apiVersion: example.com/v1
kind: NetworkChaos
metadata: {name: delay}
spec: {}
---
apiVersion: cert-manager.io/v1
kind: Certificate
metadata: {name: shop-tls}
spec: {}
"""


def test_a_custom_resource_is_stored_as_its_definition_in_git_says(tmp_path: Path) -> None:
    """A CustomResourceDefinition in git gives its kind's scope and plural, in
    whichever file or order it comes: a cluster-scoped kind has no namespace
    (one set in git is dropped, as a cluster does), a namespaced one its
    declared plural; a kind without a definition in git stays namespaced."""
    (tmp_path / "a-custom.yaml").write_text(CUSTOM)  # read before the definitions
    (tmp_path / "b-crds.yaml").write_text(CRD)
    report = validate_paths([tmp_path], unsupported="store")
    assert report.errors == []
    keys = {m.obj.KIND: m.obj.key for m in report.manifests}
    assert keys["ClusterIssuer"] == "/gitkube/clusterissuers.cert-manager.io/letsencrypt"
    assert keys["NetworkChaos"] == "/gitkube/chaos.example.com/default/delay"
    assert keys["Certificate"] == "/gitkube/certificates.cert-manager.io/default/shop-tls"
    issuer = next(m.obj for m in report.manifests if m.obj.KIND == "ClusterIssuer")
    assert issuer.namespace == "" and "namespace" not in issuer.to_dict()["metadata"]


def test_a_version_the_definition_does_not_serve_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "crds.yaml").write_text(CRD)
    (tmp_path / "issuer.yaml").write_text(
        "# an old one\n"
        + CUSTOM.split("---")[0].replace("cert-manager.io/v1", "cert-manager.io/v1beta1")
    )
    report = validate_paths([tmp_path], unsupported="store")
    assert [str(e) for e in report.errors] == [
        f"{tmp_path}/issuer.yaml:2: ClusterIssuer/letsencrypt: apiVersion: version 'v1beta1' of "
        "clusterissuers.cert-manager.io is not served by the CustomResourceDefinition "
        f"'clusterissuers.cert-manager.io' at {tmp_path}/crds.yaml:1 (it serves: v1)"
    ]
