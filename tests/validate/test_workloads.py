"""Validation of the kinds beyond the 2015 core: Namespace, ConfigMap, Secret
(v1) and Deployment, ReplicaSet (apps/v1).

- each validates and builds its typed object; the wrong apiVersion names the right one
- Deployment/ReplicaSet: a non-empty selector that matches the template labels,
  matchExpressions operators and values, the strategy (Recreate without
  rollingUpdate, maxSurge and maxUnavailable not both 0, int or percent)
- Secret: base64 data; stringData merged into data when the object is built;
  keys valid; the keys a typed Secret needs
- ConfigMap: keys valid, data and binaryData disjoint
- pod templates: env valueFrom/envFrom, volumes and mounts, initContainers
- a namespaced object's namespace is default or a Namespace declared in git
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gitkube.api.objects import (
    ConfigMap,
    Deployment,
    Namespace,
    ReplicaSet,
    Secret,
)
from gitkube.api.validation import validate_paths
from tests.validate.helpers import errors, load

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
  strategy:
    type: RollingUpdate
    rollingUpdate: {maxSurge: 25%, maxUnavailable: 0}
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      containers:
      - name: web
        image: nginx
"""


def test_deployment_builds_its_typed_object() -> None:
    manifests, found, ignored = load(DEPLOYMENT)
    assert found == [] and ignored == []
    deploy = manifests[0].obj
    assert isinstance(deploy, Deployment)
    assert (deploy.api_version, deploy.namespace, deploy.spec.replicas) == ("apps/v1", "shop", 3)
    assert deploy.spec.selector.match_labels == {"app": "web"}
    assert deploy.spec.strategy.rolling_update is not None
    assert deploy.spec.strategy.rolling_update.max_surge == "25%"
    assert deploy.spec.strategy.rolling_update.max_unavailable == 0
    assert deploy.key == "/gitkube/deployments/shop/web"


def test_replicaset_with_match_expressions() -> None:
    text = """\
        apiVersion: apps/v1
        kind: ReplicaSet
        metadata: {name: web}
        spec:
          selector:
            matchExpressions:
            - {key: app, operator: In, values: [web, www]}
            - {key: canary, operator: DoesNotExist}
          template:
            metadata: {labels: {app: www}}
            spec:
              containers: [{name: web, image: nginx}]
        """
    manifests, found, _ = load(text)
    assert found == []
    rs = manifests[0].obj
    assert isinstance(rs, ReplicaSet) and rs.namespace == "default"
    assert rs.spec.selector.matches({"app": "www"})
    assert not rs.spec.selector.matches({"app": "www", "canary": "1"})


@pytest.mark.parametrize(
    ("kind", "api_version", "use"),
    [("Deployment", "v1", "apps/v1"), ("Deployment", "extensions/v1beta1", "apps/v1"),
     ("ReplicaSet", "apps/v1beta2", "apps/v1"), ("Namespace", "apps/v1", "v1")],
)  # fmt: skip
def test_wrong_api_version_names_the_right_one(kind: str, api_version: str, use: str) -> None:
    text = f"apiVersion: {api_version}\nkind: {kind}\nmetadata: {{name: web}}\n"
    [message] = errors(text)
    assert message.startswith(
        f"m.yaml:1: {kind}/web: apiVersion: apiVersion {api_version!r} is not supported for "
        f"{kind} (use {use}); gitkube supports v1 Pod,"
    )


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    matchLabels: {app: web}\n",
            "    matchLabels: {app: api}\n",
            "m.yaml:8: Deployment/web: spec.selector: selector does not match the template labels (app=web, tier=front): the Deployment would never see its pods",
        ),
        (
            "    matchLabels: {app: web}\n",
            "    matchLabels: {}\n",
            "m.yaml:8: Deployment/web: spec.selector: the selector is empty: it would match every pod in the namespace; give matchLabels or matchExpressions",
        ),
        (
            "    matchLabels: {app: web}\n",
            "    matchExpressions: [{key: app, operator: Like, values: [web]}]\n",
            "m.yaml:9: Deployment/web: spec.selector.matchExpressions[0].operator: must be one of In, NotIn, Exists, DoesNotExist; got a string ('Like')",
        ),
        (
            "    matchLabels: {app: web}\n",
            "    matchExpressions: [{key: app, operator: In}]\n",
            "m.yaml:9: Deployment/web: spec.selector.matchExpressions[0].values: operator In needs at least one value",
        ),
        (
            "    matchLabels: {app: web}\n",
            "    matchExpressions: [{key: app, operator: Exists, values: [web]}]\n",
            "m.yaml:9: Deployment/web: spec.selector.matchExpressions[0].values: operator Exists takes no values",
        ),
        (
            "  selector:\n    matchLabels: {app: web}\n",
            "",
            "m.yaml:6: Deployment/web: spec.selector: required field is missing",
        ),
        (
            "    type: RollingUpdate\n",
            "    type: Recreate\n",
            "m.yaml:12: Deployment/web: spec.strategy.rollingUpdate: may not be given when strategy type is Recreate",
        ),
        (
            "{maxSurge: 25%, maxUnavailable: 0}",
            "{maxSurge: 0%, maxUnavailable: 0}",
            "m.yaml:12: Deployment/web: spec.strategy.rollingUpdate.maxUnavailable: maxUnavailable and maxSurge may not both be 0: the rollout could never make progress",
        ),
        (
            "{maxSurge: 25%, maxUnavailable: 0}",
            "{maxSurge: 25, maxUnavailable: 'half'}",
            "m.yaml:12: Deployment/web: spec.strategy.rollingUpdate.maxUnavailable: must be a count or a percentage such as '25%', not 'half'",
        ),
        (
            "{maxSurge: 25%, maxUnavailable: 0}",
            "{maxSurge: -1}",
            "m.yaml:12: Deployment/web: spec.strategy.rollingUpdate.maxSurge: must not be negative, not -1",
        ),
        (
            "{maxSurge: 25%, maxUnavailable: 0}",
            "{maxUnavailable: 150%}",
            "m.yaml:12: Deployment/web: spec.strategy.rollingUpdate.maxUnavailable: may not be more than 100%",
        ),
        (
            "    type: RollingUpdate\n",
            "    type: BlueGreen\n",
            "m.yaml:11: Deployment/web: spec.strategy.type: must be one of RollingUpdate, Recreate; got a string ('BlueGreen')",
        ),
        (
            "  replicas: 3\n",
            "  replicas: 3\n  minReadySeconds: 10\n  progressDeadlineSeconds: 10\n",
            "m.yaml:9: Deployment/web: spec.progressDeadlineSeconds: must be more than minReadySeconds (10), not 10",
        ),
        (
            "      containers:\n",
            "      restartPolicy: Never\n      containers:\n",
            "m.yaml:17: Deployment/web: spec.template.spec.restartPolicy: must be Always in a Deployment, not 'Never'",
        ),
    ],
)
def test_deployment_semantics(old: str, new: str, expected: str) -> None:
    assert old in DEPLOYMENT
    assert errors(DEPLOYMENT.replace(old, new)) == [expected]


SECRET = """\
apiVersion: v1
kind: Secret
metadata: {name: db}
type: Opaque
data:
  user: YWRtaW4=
stringData:
  password: s3cret
  user: root
"""


def test_secret_string_data_is_merged_into_data_and_wins() -> None:
    manifests, found, _ = load(SECRET)
    assert found == []
    secret = manifests[0].obj
    assert isinstance(secret, Secret)
    assert secret.string_data == {}
    assert secret.data == {
        "user": base64.b64encode(b"root").decode(),
        "password": base64.b64encode(b"s3cret").decode(),
    }
    assert "stringData" not in secret.to_dict()


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "  user: YWRtaW4=\n",
            "  user: not base64!\n",
            # the value is never quoted: it is a Secret's
            "m.yaml:6: Secret/db: data.user: must be base64-encoded; this value (11 characters) "
            "is not valid base64",
        ),
        (
            "  user: YWRtaW4=\n",
            "  bad/key: YWRtaW4=\n",
            "m.yaml:6: Secret/db: data['bad/key']: 'bad/key' is not a valid key: at most 253 letters, digits, '-', '_' and '.'",
        ),
        (
            "type: Opaque\n",
            "type: kubernetes.io/tls\n",
            "m.yaml:5: Secret/db: data: a Secret of type kubernetes.io/tls needs the key 'tls.crt'",
        ),
        (
            "  password: s3cret\n",
            "  password: 5\n",
            "m.yaml:8: Secret/db: stringData.password: must be a string, not an integer (5)",
        ),
    ],
)
def test_secret_checks(old: str, new: str, expected: str) -> None:
    found = errors(SECRET.replace(old, new))
    assert found[0] == expected


def test_config_map_and_namespace() -> None:
    text = """\
        apiVersion: v1
        kind: Namespace
        metadata: {name: shop, labels: {team: a}}
        ---
        apiVersion: v1
        kind: ConfigMap
        metadata: {name: settings, namespace: shop}
        immutable: true
        data:
          app.properties: "color=blue\\n"
          MODE: production
        binaryData:
          logo.png: iVBORw0KGgo=
        """
    manifests, found, _ = load(text)
    assert found == []
    ns, cm = (m.obj for m in manifests)
    assert isinstance(ns, Namespace) and ns.namespace == "" and ns.key == "/gitkube/namespaces/shop"
    assert isinstance(cm, ConfigMap) and cm.immutable is True
    assert cm.data["MODE"] == "production" and cm.binary_data == {"logo.png": "iVBORw0KGgo="}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: x}\nbinaryData: {a: eA==}\n",
            "m.yaml:5: ConfigMap/c: binaryData.a: key 'a' is also in data: a key may be in only one",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {'..a': x}\n",
            "m.yaml:4: ConfigMap/c: data['..a']: '..a' is not a valid key: it may not be '.' or start with '..'",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: 1}\n",
            "m.yaml:4: ConfigMap/c: data.a: must be a string, not an integer (1)",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\nimmutable: yes please\n",
            "m.yaml:4: ConfigMap/c: immutable: must be a boolean, not a string ('yes please')",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: My.Space}\n",
            "m.yaml:3: Namespace/My.Space: metadata.name: invalid name: 'My.Space' is not a valid DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        ),
        (
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: my.space}\n",
            "m.yaml:3: Namespace/my.space: metadata.name: invalid Namespace name: 'my.space' is not a valid DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
        ),
    ],
)
def test_config_map_and_namespace_errors(text: str, expected: str) -> None:
    assert errors(text)[0] == expected


POD_WITH_CONFIG = """\
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  volumes:
  - name: settings
    configMap:
      name: settings
      items: [{key: app.properties, path: app.properties, mode: 0644}]
      defaultMode: 0400
  - name: creds
    secret: {secretName: db, optional: true}
  - name: scratch
    emptyDir: {medium: Memory, sizeLimit: 64Mi}
  initContainers:
  - name: migrate
    image: busybox
    command: [sh, -c, "echo migrate"]
  containers:
  - name: app
    image: busybox
    env:
    - name: MODE
      valueFrom: {configMapKeyRef: {name: settings, key: MODE}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: db, key: password, optional: false}}
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    envFrom:
    - configMapRef: {name: settings}
      prefix: CFG_
    - secretRef: {name: db}
    volumeMounts:
    - {name: settings, mountPath: /etc/app, readOnly: true}
    - {name: creds, mountPath: /etc/creds}
    - {name: scratch, mountPath: /tmp/scratch}
"""


def test_pod_with_config_volumes_env_and_init_containers() -> None:
    manifests, found, ignored = load(POD_WITH_CONFIG)
    assert found == [], [str(e) for e in found]
    assert ignored == []
    pod = manifests[0].obj
    spec = pod.spec  # type: ignore[attr-defined]
    assert [v.name for v in spec.volumes] == ["settings", "creds", "scratch"]
    assert spec.volumes[0].config_map.items[0].mode == 0o644
    assert spec.volumes[0].config_map.default_mode == 0o400
    assert spec.volumes[1].secret.secret_name == "db"
    assert spec.init_containers[0].name == "migrate"
    env = spec.containers[0].env
    assert env[0].value_from.config_map_key_ref.key == "MODE"
    assert env[1].value_from.secret_key_ref.optional is False
    assert spec.containers[0].env_from[0].prefix == "CFG_"
    assert spec.containers[0].volume_mounts[0].read_only is True


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "    - {name: creds, mountPath: /etc/creds}\n",
            "    - {name: cred, mountPath: /etc/creds}\n",
            "m.yaml:35: Pod/app: spec.containers[0].volumeMounts[1].name: no volume named 'cred' in this pod (volumes: creds, scratch, settings)",
        ),
        (
            "    - {name: creds, mountPath: /etc/creds}\n",
            "    - {name: creds, mountPath: /etc/app}\n",
            "m.yaml:35: Pod/app: spec.containers[0].volumeMounts[1].mountPath: '/etc/app' is mounted twice (also volumeMounts[0])",
        ),
        (
            "    emptyDir: {medium: Memory, sizeLimit: 64Mi}\n",
            "    hostPath: {path: /var}\n",
            "m.yaml:14: Pod/app: spec.volumes[2].hostPath: volume source hostPath is not supported: gitkube mounts configMap, secret and emptyDir volumes",
        ),
        (
            "    emptyDir: {medium: Memory, sizeLimit: 64Mi}\n",
            "    emptyDir: {}\n    secret: {secretName: x}\n",
            "m.yaml:13: Pod/app: spec.volumes[2]: a volume needs exactly one source, this one has emptyDir, secret",
        ),
        (
            "      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}\n",
            "      valueFrom: {}\n",
            "m.yaml:28: Pod/app: spec.containers[0].env[2].valueFrom: needs exactly one of configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef (given: none)",
        ),
        (
            "      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}\n",
            "      value: x\n      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}\n",
            "m.yaml:29: Pod/app: spec.containers[0].env[2].valueFrom: may not be given with value",
        ),
        (
            "    - secretRef: {name: db}\n",
            "    - secretRef: {name: db}\n      configMapRef: {name: c}\n",
            "m.yaml:32: Pod/app: spec.containers[0].envFrom[1]: needs exactly one of configMapRef or secretRef",
        ),
        (
            "      valueFrom: {configMapKeyRef: {name: settings, key: MODE}}\n",
            "      valueFrom: {configMapKeyRef: {name: settings, keys: MODE}}\n",
            "m.yaml:24: Pod/app: spec.containers[0].env[0].valueFrom.configMapKeyRef.keys: unknown field 'keys' (did you mean 'key'?)",
        ),
        (
            '    command: [sh, -c, "echo migrate"]\n',
            "    readinessProbe: {exec: {command: [x]}}\n",
            "m.yaml:18: Pod/app: spec.initContainers[0].readinessProbe: init containers may not have probes",
        ),
        (
            "  - name: migrate\n",
            "  - name: app\n",
            "m.yaml:20: Pod/app: spec.containers[0].name: duplicate container name 'app' (also initContainers[0])",
        ),
        (
            "      defaultMode: 0400\n",
            "      defaultMode: 01000\n",
            "m.yaml:10: Pod/app: spec.volumes[0].configMap.defaultMode: 512 is out of range 0-511",
        ),
    ],
)
def test_pod_config_errors(old: str, new: str, expected: str) -> None:
    assert old in POD_WITH_CONFIG
    assert errors(POD_WITH_CONFIG.replace(old, new))[0] == expected


def test_generate_name_beside_a_name_is_ignored_as_kubectl_apply_does() -> None:
    text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, generateName: c-}\n"
    manifests, found, ignored = load(text)
    assert found == [] and manifests[0].obj.name == "c"
    assert [i.field for i in ignored] == ["metadata.generateName"]


def test_a_namespace_must_be_default_or_declared(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(DEPLOYMENT + "---\n" + SECRET)
    report = validate_paths([tmp_path])
    assert [str(e) for e in report.errors] == [
        f"{tmp_path}/app.yaml:5: Deployment/web: metadata.namespace: Deployment 'web' is in "
        "namespace 'shop', which is not declared in git: add a Namespace 'shop' (or use the "
        "default namespace)"
    ]
    (tmp_path / "ns.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n")
    report = validate_paths([tmp_path])
    assert report.errors == []
    assert sorted((m.obj.KIND, m.obj.namespace) for m in report.manifests) == [
        ("Deployment", "shop"),
        ("Namespace", ""),
        ("Secret", "default"),
    ]
