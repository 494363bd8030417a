"""The shipped JSON Schemas and the fields they accept.

- apiVersion and kind: unsupported ones name what is supported
- unknown fields are errors at the field's own line (typos never pass), with a suggestion
- fields Kubernetes defines and gitkube ignores are accepted and reported
- fields gitkube does not support are errors
- types, required fields, enums, ranges; null means "not set"
- the schema files are valid JSON Schema, cover every field the API objects model,
  and the compiled checks agree with a reference validator (jsonschema)
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

import dataclasses
import typing
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource

from gitkube.api.objects import KINDS
from gitkube.api.schema import Sink, kind_checks, schema_documents
from gitkube.api.serde import _fields
from tests.validate.helpers import VALID_POD, errors, load

SUPPORTED = (
    "gitkube supports v1 Pod, ReplicationController, Service, Endpoints, Node, Namespace, "
    "ConfigMap, Secret; apps/v1 Deployment, ReplicaSet"
)

# ---------------------------------------------------------------- apiVersion and kind


@pytest.mark.parametrize(
    ("api_version", "kind", "expected"),
    [
        (
            "v1beta1",
            "Pod",
            f"m.yaml:1: Pod/web: apiVersion: apiVersion 'v1beta1' is not supported for Pod (use v1); {SUPPORTED}",
        ),
        (
            "v1beta3",
            "ReplicationController",
            f"m.yaml:1: ReplicationController/web: apiVersion: apiVersion 'v1beta3' is not supported for ReplicationController (use v1); {SUPPORTED}",
        ),
        (
            "extensions/v1beta1",
            "Deployment",
            f"m.yaml:1: Deployment/web: apiVersion: apiVersion 'extensions/v1beta1' is not supported for Deployment (use apps/v1); {SUPPORTED}",
        ),
        (
            "v1",
            "ReplicaSet",
            f"m.yaml:1: ReplicaSet/web: apiVersion: apiVersion 'v1' is not supported for ReplicaSet (use apps/v1); {SUPPORTED}",
        ),
        (
            "apps/v1",
            "ConfigMap",
            f"m.yaml:1: ConfigMap/web: apiVersion: apiVersion 'apps/v1' is not supported for ConfigMap (use v1); {SUPPORTED}",
        ),
        (
            "apps/v1",
            "StatefulSet",
            f"m.yaml:2: StatefulSet/web: kind: kind 'StatefulSet' (apps/v1) is not supported; {SUPPORTED}; with --unsupported-kinds store it is validated and stored, and shown as not acted on",
        ),
        (
            "v1",
            "Widget",
            f"m.yaml:2: Widget/web: kind: kind 'Widget' is not supported; {SUPPORTED}",
        ),
    ],
)
def test_unsupported_api_version_or_kind_names_what_is_supported(
    api_version: str, kind: str, expected: str
) -> None:
    text = VALID_POD.replace(
        "apiVersion: v1\nkind: Pod", f"apiVersion: {api_version}\nkind: {kind}"
    )
    assert errors(text) == [expected]


def test_missing_api_version_and_kind() -> None:
    assert errors("metadata:\n  name: web\n") == [
        f"m.yaml:1: ?/web: apiVersion: required field is missing; {SUPPORTED}",
        f"m.yaml:1: ?/web: kind: required field is missing; {SUPPORTED}",
    ]


# ---------------------------------------------------------------- unknown fields


def test_unknown_fields_are_errors_at_their_own_line() -> None:
    text = """\
        apiVersion: v1
        kind: ReplicationController
        metadata:
          name: web
          lables: {app: web}
        spec:
          replicas: 2
          template:
            metadata:
              labels: {app: web}
            spec:
              containers:
              - name: web
                image: nginx
                port:
                - containerPort: 80
        """
    assert errors(text) == [
        "m.yaml:5: ReplicationController/web: metadata.lables: unknown field 'lables' (did you mean 'labels'?)",
        "m.yaml:15: ReplicationController/web: spec.template.spec.containers[0].port: unknown field 'port' (did you mean 'ports'?)",
    ]


def test_a_field_at_the_wrong_level_is_unknown() -> None:
    text = VALID_POD + "  image: nginx\n"
    assert errors(text) == ["m.yaml:9: Pod/web: spec.image: unknown field 'image'"]


# ---------------------------------------------------------------- ignored and unsupported


def test_ignored_kubernetes_fields_are_accepted_and_reported() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata:
          name: web
          uid: "1234"
          resourceVersion: "99"
        spec:
          dnsPolicy: ClusterFirst
          serviceAccountName: default
          volumes: [{name: data, emptyDir: {}}]
          tolerations: []
          containers:
          - name: web
            image: nginx
            imagePullPolicy: Always
            terminationMessagePath: /dev/termination-log
            volumeMounts: [{name: data, mountPath: /data}]
            securityContext: {runAsUser: 1000}
        status:
          phase: Running
          podIP: 10.0.0.1
        """
    manifests, found, ignored = load(text)
    assert found == []
    assert [(i.line, i.field) for i in ignored] == [
        (5, "metadata.uid"),
        (6, "metadata.resourceVersion"),
        (8, "spec.dnsPolicy"),
        (9, "spec.serviceAccountName"),
        (11, "spec.tolerations"),
        (15, "spec.containers[0].imagePullPolicy"),
        (16, "spec.containers[0].terminationMessagePath"),
        (18, "spec.containers[0].securityContext"),
        (19, "status"),
    ]
    assert str(ignored[-1]) == (
        "m.yaml:19: Pod/web: status: ignored: status is written by gitkube, never read from git"
    )
    pod = manifests[0].obj
    # Ignored fields never reach the object; the data stays as written.
    assert (
        pod.metadata.uid,
        pod.metadata.resource_version,
        pod.status.phase,
        pod.status.pod_ip,
    ) == ("", "", "Pending", "")
    assert manifests[0].data["status"]["phase"] == "Running"


def test_ignored_fields_are_still_type_checked() -> None:
    text = VALID_POD + "    imagePullPolicy: Sometimes\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.containers[0].imagePullPolicy: must be one of Always, "
        "IfNotPresent, Never; got a string ('Sometimes')"
    ]


@pytest.mark.parametrize(
    ("extra", "line", "field", "message"),
    [
        (
            "  volumes: [{name: data, hostPath: {path: /tmp}}]\n",
            9,
            "spec.volumes[0].hostPath",
            "volume source hostPath is not supported",
        ),
        (
            "  ephemeralContainers: [{name: debug, image: busybox}]\n",
            9,
            "spec.ephemeralContainers",
            "ephemeralContainers are not supported",
        ),
    ],
)
def test_unsupported_fields_are_errors(extra: str, line: int, field: str, message: str) -> None:
    found = load(VALID_POD + extra)[1]
    assert [(e.line, e.field) for e in found] == [(line, field)]
    assert found[0].message.startswith(message)


def test_generate_name_is_refused() -> None:
    text = VALID_POD.replace("  name: web\n", "  generateName: web-\n")
    assert errors(text) == [
        "m.yaml:3: Pod/?: metadata.name: required field is missing",
        "m.yaml:4: Pod/?: metadata.generateName: generateName without metadata.name is not "
        "supported: an object kept in git needs a fixed name so that the next sync finds it "
        "again (kubectl apply refuses it for the same reason); set metadata.name",
    ]


# ---------------------------------------------------------------- types


def test_type_errors_name_the_expected_and_the_found_type() -> None:
    text = """\
        apiVersion: v1
        kind: ReplicationController
        metadata: {name: web}
        spec:
          replicas: "3"
          minReadySeconds: -1
          template:
            metadata: {labels: {app: web}}
            spec:
              containers:
              - name: web
                image: nginx
                command: python3 -m http.server
                env: [{name: PORT, value: 8080}]
                ports: [{containerPort: 8080.5}]
              hostNetwork: "true"
        """
    assert errors(text) == [
        "m.yaml:5: ReplicationController/web: spec.replicas: must be an integer, not a string ('3')",
        "m.yaml:6: ReplicationController/web: spec.minReadySeconds: must be at least 0, not -1",
        "m.yaml:13: ReplicationController/web: spec.template.spec.containers[0].command: must be a list, not a string ('python3 -m http.server')",
        "m.yaml:14: ReplicationController/web: spec.template.spec.containers[0].env[0].value: must be a string, not an integer (8080)",
        "m.yaml:15: ReplicationController/web: spec.template.spec.containers[0].ports[0].containerPort: must be an integer, not a number (8080.5)",
        "m.yaml:16: ReplicationController/web: spec.template.spec.hostNetwork: must be a boolean, not a string ('true')",
    ]


def test_required_fields() -> None:
    text = """\
        apiVersion: v1
        kind: Pod
        metadata:
          labels: {app: web}
        spec:
          containers:
          - name: web
            ports:
            - name: http
        """
    assert errors(text) == [
        "m.yaml:3: Pod/?: metadata.name: required field is missing",
        "m.yaml:7: Pod/?: spec.containers[0].image: required field is missing",
        "m.yaml:9: Pod/?: spec.containers[0].ports[0].containerPort: required field is missing",
    ]


def test_empty_lists_where_items_are_needed() -> None:
    text = VALID_POD.replace(
        "  containers:\n  - name: web\n    image: nginx\n", "  containers: []\n"
    )
    assert errors(text) == ["m.yaml:6: Pod/web: spec.containers: needs at least 1 item"]


def test_null_means_not_set() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  labels:\n  annotations: ~\n")
    text += "    env:\n    resources:\n"
    manifests, found, _ = load(text)
    assert found == []
    assert manifests[0].obj.metadata.labels == {}


def test_null_for_a_required_field_is_missing() -> None:
    text = VALID_POD.replace("    image: nginx\n", "    image:\n")
    assert errors(text) == [
        "m.yaml:8: Pod/web: spec.containers[0].image: required field is missing"
    ]


# ---------------------------------------------------------------- the schema files


def _registry() -> Registry:
    return Registry().with_resources(
        (doc["$id"], Resource.from_contents(doc)) for doc in schema_documents().values()
    )


def test_schema_files_are_valid_json_schema() -> None:
    docs = schema_documents()
    assert set(docs) == {
        "defs.json",
        "pod.json",
        "replicationcontroller.json",
        "service.json",
        "endpoints.json",
        "node.json",
        "namespace.json",
        "configmap.json",
        "secret.json",
        "deployment.json",
        "replicaset.json",
    }
    for doc in docs.values():
        jsonschema.Draft202012Validator.check_schema(doc)


def _schema_for(kind: str) -> dict[str, Any]:
    return schema_documents()[f"{kind.lower()}.json"]


def _resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = schema_documents()["defs.json"]["$defs"][name]
    return schema


def _dataclass_of(tp: Any) -> type | None:
    for arg in (tp, *typing.get_args(tp)):
        if isinstance(arg, type) and dataclasses.is_dataclass(arg):
            return arg
        inner = typing.get_args(arg)
        for sub in inner:
            if isinstance(sub, type) and dataclasses.is_dataclass(sub):
                return sub
    return None


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_spec_field_the_objects_model_is_in_the_schema(kind: str) -> None:
    """A field added to objects.py and forgotten in the schema would be refused as unknown."""
    missing: list[str] = []

    def walk(cls: type, schema: dict[str, Any], where: str) -> None:
        schema = _resolve(schema)
        props = schema.get("properties", {})
        for _, wire_name, tp in _fields(cls):
            if wire_name not in props:
                missing.append(f"{where}.{wire_name}")
                continue
            sub = _dataclass_of(tp)
            if sub is not None and "x-gitkube-ignored" not in props[wire_name]:
                sub_schema = _resolve(props[wire_name])
                if sub_schema.get("type") == "array":
                    sub_schema = sub_schema["items"]
                walk(sub, sub_schema, f"{where}.{wire_name}")

    cls = KINDS[kind]
    schema = _schema_for(kind)
    for _, wire_name, tp in _fields(cls):
        if wire_name in ("status", "apiVersion", "kind"):
            continue
        if wire_name == "metadata":
            # Server-set metadata is accepted as ignored; name/namespace/labels/annotations are modelled.
            assert {"name", "namespace", "labels", "annotations", "uid"} <= set(
                _resolve(schema["properties"]["metadata"])["properties"]
            )
            continue
        sub = _dataclass_of(tp)
        prop = schema["properties"].get(wire_name)
        if prop is None:
            missing.append(wire_name)
        elif sub is not None:
            walk(
                sub,
                prop if "$ref" in prop or "properties" in prop else prop.get("items", prop),
                wire_name,
            )
    assert missing == []


def _compiled_errors(kind: str, doc: dict[str, Any]) -> list[str]:
    sink = Sink()
    kind_checks()[kind](doc, (), sink)
    return sorted("/".join(map(str, path)) for path, _ in sink.errors)


STRUCTURAL_CASES = [
    "spec: {containers: [{name: web, image: nginx}]}",
    "spec: {containers: [{name: web, image: nginx, bogus: 1}]}",
    "spec: {containers: [{name: web}]}",
    "spec: {containers: [{name: web, image: 5}]}",
    "spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 70000}]}]}",
    "spec: {containers: [{name: web, image: nginx, ports: [{containerPort: 0}]}]}",
    "spec: {restartPolicy: Sometimes, containers: [{name: web, image: nginx}]}",
    "spec: {containers: []}",
    "spec: {containers: [{name: web, image: nginx, env: [{value: x}]}]}",
    "spec: {containers: [{name: web, image: nginx, readinessProbe: {httpGet: {path: /}}}]}",
    "spec: {containers: [{name: web, image: nginx, readinessProbe: {periodSeconds: 0, tcpSocket: {port: 80}}}]}",
    "spec: {nodeSelector: {disk: ssd}, hostNetwork: true, containers: [{name: web, image: nginx}]}",
    "spec: {nodeSelector: [a], containers: [{name: web, image: nginx}]}",
    "spec: {terminationGracePeriodSeconds: -5, containers: [{name: a, image: b, args: [1]}]}",
    "bogus: 1\nspec: {containers: [{name: a, image: b}]}",
]


@pytest.mark.parametrize("body", STRUCTURAL_CASES)
def test_compiled_checks_agree_with_jsonschema(body: str) -> None:
    doc = yaml.safe_load(f"apiVersion: v1\nkind: Pod\nmetadata: {{name: web}}\n{body}\n")
    validator = jsonschema.Draft202012Validator(_schema_for("Pod"), registry=_registry())
    reference = []
    for error in validator.iter_errors(doc):
        path = [str(p) for p in error.absolute_path]
        if error.validator in ("required", "additionalProperties"):
            path.append(error.message.split("'")[1])  # the field named in the message
        reference.append("/".join(path))
    assert _compiled_errors("Pod", doc) == sorted(reference)
