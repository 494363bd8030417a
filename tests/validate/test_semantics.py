"""Checks a schema cannot express, each reported at the offending field's line.

- ReplicationController: selector must match the template labels; template labels needed;
  restartPolicy Always
- names: DNS-1123 subdomain (DNS-1035 label for Services), container and port names
- label keys and values, annotations
- containers: unique names, ports 1-65535, unique host ports, requests within limits,
  quantities
- probes: exactly one handler, named ports that exist, liveness successThreshold
- Services: type, clusterIP None, sessionAffinity, ports, targetPort, nodePort range and type
- defaults: namespace "default" (none for Nodes)
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.api.validation import validate_paths
from tests.validate.helpers import VALID_POD, errors, load

RC = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 3
  selector:
    app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx
"""

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
"""

# ---------------------------------------------------------------- replication controllers


def test_valid_rc_loads_with_defaults() -> None:
    manifests, found, _ = load(RC)
    assert found == []
    rc = manifests[0].obj
    assert (rc.namespace, rc.spec.replicas, rc.effective_selector()) == (
        "default",
        3,
        {"app": "web"},
    )


def test_rc_selector_must_match_template_labels() -> None:
    text = RC.replace("    app: web\n  template", "    app: web\n    tier: front\n  template")
    assert errors(text) == [
        "m.yaml:7: ReplicationController/web: spec.selector: selector does not match the template labels "
        "(tier=front not in spec.template.metadata.labels): the controller would never see its pods"
    ]


def test_rc_selector_value_mismatch() -> None:
    text = RC.replace("        app: web\n", "        app: api\n")
    assert errors(text) == [
        "m.yaml:7: ReplicationController/web: spec.selector: selector does not match the template labels "
        "(app=web not in spec.template.metadata.labels): the controller would never see its pods"
    ]


def test_rc_without_selector_uses_template_labels() -> None:
    manifests, found, _ = load(RC.replace("  selector:\n    app: web\n", ""))
    assert found == []
    assert manifests[0].obj.effective_selector() == {"app": "web"}


def test_rc_template_needs_labels() -> None:
    text = RC.replace("  selector:\n    app: web\n", "").replace(
        "    metadata:\n      labels:\n        app: web\n", ""
    )
    assert errors(text) == [
        "m.yaml:7: ReplicationController/web: spec.template.metadata.labels: the pod template needs labels (the controller finds its pods by them)"
    ]


def test_rc_template_restart_policy_must_be_always() -> None:
    text = RC.replace(
        "    spec:\n      containers:",
        "    spec:\n      restartPolicy: OnFailure\n      containers:",
    )
    assert errors(text) == [
        "m.yaml:14: ReplicationController/web: spec.template.spec.restartPolicy: must be Always in a ReplicationController, not 'OnFailure'"
    ]


def test_rc_checks_its_pod_template_too() -> None:
    text = RC + "      - name: web\n        image: redis\n"
    assert errors(text) == [
        "m.yaml:17: ReplicationController/web: spec.template.spec.containers[1].name: duplicate container name 'web' (also containers[0])"
    ]


# ---------------------------------------------------------------- names and labels


@pytest.mark.parametrize(
    ("kind_text", "name", "message"),
    [
        (VALID_POD, "Web", "'Web' is not a valid DNS-1123 subdomain"),
        (VALID_POD, "web_1", "'web_1' is not a valid DNS-1123 subdomain"),
        (VALID_POD, "-web", "'-web' is not a valid DNS-1123 subdomain"),
        (VALID_POD, "a" * 254, "is not a valid DNS-1123 subdomain"),
        (SERVICE, "1web", "'1web' is not a valid DNS-1035 label"),
        (SERVICE, "web.front", "'web.front' is not a valid DNS-1035 label"),
        (SERVICE, "a" * 64, "is not a valid DNS-1035 label"),
    ],
)
def test_invalid_object_names(kind_text: str, name: str, message: str) -> None:
    found = load(kind_text.replace("  name: web\n", f"  name: '{name}'\n"))[1]
    assert [(e.line, e.field) for e in found] == [(4, "metadata.name")]
    assert message in found[0].message


@pytest.mark.parametrize("name", ["web", "web-1", "web.example.com", "a" * 253, "1web"])
def test_valid_pod_names(name: str) -> None:
    assert errors(VALID_POD.replace("  name: web\n", f"  name: '{name}'\n")) == []


def test_namespace_must_be_a_dns_label() -> None:
    text = VALID_POD.replace("  name: web\n", "  name: web\n  namespace: Team.A\n")
    assert errors(text) == [
        "m.yaml:5: Pod/web: metadata.namespace: 'Team.A' is not a valid DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
    ]


@pytest.mark.parametrize(
    ("labels", "field", "message"),
    [
        ("{'-app': web}", "metadata.labels['-app']", "label key '-app': the name part must be"),
        (
            "{'Example.com/app': web}",
            "metadata.labels['Example.com/app']",
            "prefix 'Example.com' must be a DNS-1123 subdomain",
        ),
        ("{'/app': web}", "metadata.labels['/app']", "has an empty prefix"),
        ("{'example.com/': web}", "metadata.labels['example.com/']", "has an empty name"),
        ("{'" + "k" * 64 + "': web}", "metadata.labels.k" + "k" * 63, "longer than 63"),
        ("{app: 'web app'}", "metadata.labels.app", "label value 'web app' must be"),
        ("{app: '" + "v" * 64 + "'}", "metadata.labels.app", "is longer than 63 characters"),
        ("{app: '-web'}", "metadata.labels.app", "label value '-web' must be"),
    ],
)
def test_invalid_labels(labels: str, field: str, message: str) -> None:
    found = load(VALID_POD.replace("  name: web\n", f"  name: web\n  labels: {labels}\n"))[1]
    assert [(e.line, e.field) for e in found] == [(5, field)]
    assert message in found[0].message


def test_valid_labels() -> None:
    labels = "{app.kubernetes.io/name: web, tier: '', version: v1.2_3-a, example.com/x: Y}"
    assert errors(VALID_POD.replace("  name: web\n", f"  name: web\n  labels: {labels}\n")) == []


def test_node_selector_uses_label_rules() -> None:
    text = VALID_POD + "  nodeSelector: {disk: 'fast ssd'}\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.nodeSelector.disk: label value 'fast ssd' must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    ]


def test_annotation_keys_follow_label_key_rules_and_values_are_free() -> None:
    text = VALID_POD.replace(
        "  name: web\n", "  name: web\n  annotations: {note: 'any text: at all', 'bad key': x}\n"
    )
    assert errors(text) == [
        "m.yaml:5: Pod/web: metadata.annotations['bad key']: label key 'bad key': the name part must be letters, digits, '-', '_' and '.', starting and ending with a letter or digit"
    ]


def test_rolling_update_annotations_are_counts_or_percentages() -> None:
    text = RC.replace(
        "  name: web\n",
        "  name: web\n  annotations:\n    gitkube.io/max-unavailable: '25%'\n    gitkube.io/max-surge: lots\n",
    )
    assert errors(text) == [
        "m.yaml:7: ReplicationController/web: metadata.annotations['gitkube.io/max-surge']: must be a count or a percentage such as '25%', not 'lots'"
    ]


# ---------------------------------------------------------------- containers


def test_container_names_unique_and_dns_labels() -> None:
    text = VALID_POD + "  - name: web\n    image: redis\n  - name: Side_Car\n    image: busybox\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.containers[1].name: duplicate container name 'web' (also containers[0])",
        "m.yaml:11: Pod/web: spec.containers[2].name: 'Side_Car' is not a valid DNS-1123 label: at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit",
    ]


def test_container_ports() -> None:
    text = (
        VALID_POD
        + """\
    ports:
    - {containerPort: 0}
    - {containerPort: 65536}
    - {containerPort: 80, name: http, hostPort: 8080}
    - {containerPort: 81, name: http}
    - {containerPort: 82, name: HTTP}
    - {containerPort: 83, name: a-very-long-port-name}
    - {containerPort: 84, name: '8080'}
    - {containerPort: 85, hostPort: 8080}
    - {containerPort: 86, protocol: tcp}
"""
    )
    assert errors(text) == [
        "m.yaml:10: Pod/web: spec.containers[0].ports[0].containerPort: 0 is out of range 1-65535",
        "m.yaml:11: Pod/web: spec.containers[0].ports[1].containerPort: 65536 is out of range 1-65535",
        "m.yaml:13: Pod/web: spec.containers[0].ports[3].name: duplicate port name 'http' (also ports[2])",
        "m.yaml:14: Pod/web: spec.containers[0].ports[4].name: 'HTTP' is not a valid port name: only lowercase letters, digits and '-'",
        "m.yaml:15: Pod/web: spec.containers[0].ports[5].name: 'a-very-long-port-name' is not a valid port name: at most 15 characters",
        "m.yaml:16: Pod/web: spec.containers[0].ports[6].name: '8080' is not a valid port name: at least one letter",
        "m.yaml:17: Pod/web: spec.containers[0].ports[7].hostPort: host port 8080/TCP is already used by spec.containers[0].ports[2]",
        "m.yaml:18: Pod/web: spec.containers[0].ports[8].protocol: must be one of TCP, UDP, SCTP; got a string ('tcp')",
    ]


def test_host_network_needs_host_port_equal_to_container_port() -> None:
    text = VALID_POD + "    ports: [{containerPort: 80, hostPort: 8080}]\n  hostNetwork: true\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.containers[0].ports[0].hostPort: with hostNetwork, hostPort must equal containerPort"
    ]


def test_resources_quantities_and_limits() -> None:
    text = (
        VALID_POD
        + """\
    resources:
      requests: {cpu: 2, memory: 64Mi, example.com/gpu: 1}
      limits: {cpu: 500m, memory: 1Gb}
"""
    )
    assert errors(text) == [
        "m.yaml:10: Pod/web: spec.containers[0].resources.requests.cpu: request 2 is more than the limit 500m",
        "m.yaml:11: Pod/web: spec.containers[0].resources.limits.memory: invalid quantity '1Gb': expected a number with an optional suffix (m, k, M, G, Ki, Mi, Gi, ...) such as '100m', '0.5', '64Mi' or '1G'",
    ]


def test_env_names() -> None:
    text = VALID_POD + "    env: [{name: GOOD_1, value: x}, {name: '1=bad', value: y}]\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.containers[0].env[1].name: '1=bad' is not a valid environment variable name: letters, digits, '_', '-' and '.', not starting with a digit"
    ]


def test_restart_policy() -> None:
    text = VALID_POD + "  restartPolicy: Sometimes\n"
    assert errors(text) == [
        "m.yaml:9: Pod/web: spec.restartPolicy: must be one of Always, OnFailure, Never; got a string ('Sometimes')"
    ]


# ---------------------------------------------------------------- probes


def test_probes_need_exactly_one_handler() -> None:
    text = (
        VALID_POD
        + """\
    ports: [{name: http, containerPort: 80}]
    livenessProbe:
      initialDelaySeconds: 5
    readinessProbe:
      httpGet: {port: http}
      tcpSocket: {port: 80}
"""
    )
    assert errors(text) == [
        "m.yaml:10: Pod/web: spec.containers[0].livenessProbe: a probe needs exactly one handler: exec, httpGet, tcpSocket or grpc",
        "m.yaml:12: Pod/web: spec.containers[0].readinessProbe: a probe needs exactly one handler, this one has 2: httpGet, tcpSocket",
    ]


def test_probe_named_port_must_exist_and_numbers_are_checked() -> None:
    text = (
        VALID_POD
        + """\
    ports: [{name: http, containerPort: 80}]
    readinessProbe:
      httpGet: {path: /healthz, port: htp}
      periodSeconds: 0
    livenessProbe:
      exec: {command: [true]}
      successThreshold: 2
"""
    )
    assert errors(text) == [
        "m.yaml:11: Pod/web: spec.containers[0].readinessProbe.httpGet.port: no port named 'htp' in this container (named ports: http)",
        "m.yaml:12: Pod/web: spec.containers[0].readinessProbe.periodSeconds: must be at least 1, not 0",
        "m.yaml:14: Pod/web: spec.containers[0].livenessProbe.exec.command[0]: must be a string, not a boolean (true)",
        "m.yaml:15: Pod/web: spec.containers[0].livenessProbe.successThreshold: must be 1 for a liveness probe",
    ]


def test_valid_probes() -> None:
    text = (
        VALID_POD
        + """\
    ports: [{name: http, containerPort: 80}]
    readinessProbe: {httpGet: {path: /, port: http, scheme: HTTP}, periodSeconds: 2}
    livenessProbe: {tcpSocket: {port: 80}, failureThreshold: 5}
"""
    )
    manifests, found, _ = load(text)
    assert found == []
    container = manifests[0].obj.spec.containers[0]
    assert container.readiness_probe.http_get.port == "http"
    assert container.liveness_probe.tcp_socket.port == 80


# ---------------------------------------------------------------- services


def test_valid_service_loads() -> None:
    manifests, found, _ = load(SERVICE)
    assert found == []
    service = manifests[0].obj
    assert (service.namespace, service.spec.type, service.spec.ports[0].port) == (
        "default",
        "ClusterIP",
        80,
    )


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "  type: ExternalName\n",
            "m.yaml:10: Service/web: spec.type: must be one of ClusterIP, NodePort, LoadBalancer; got a string ('ExternalName')",
        ),
        (
            "  sessionAffinity: Sticky\n",
            "m.yaml:10: Service/web: spec.sessionAffinity: must be one of None, ClientIP; got a string ('Sticky')",
        ),
        (
            "  clusterIP: none\n",
            "m.yaml:10: Service/web: spec.clusterIP: must be 'None' (headless), empty, or an IP address: 'none' is not an IP address",
        ),
        (
            "  clusterIP: None\n  type: NodePort\n",
            "m.yaml:10: Service/web: spec.clusterIP: a NodePort Service cannot be headless (clusterIP: None)",
        ),
        (
            "  sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}\n",
            "m.yaml:10: Service/web: spec.sessionAffinityConfig: needs sessionAffinity: ClientIP",
        ),
        (
            "    targetPort: 0\n",
            "m.yaml:10: Service/web: spec.ports[0].targetPort: port 0 is out of range 1-65535",
        ),
        (
            "    targetPort: 'http_port'\n",
            "m.yaml:10: Service/web: spec.ports[0].targetPort: must be a port number (1-65535) or a port name: 'http_port' is not a valid port name: only lowercase letters, digits and '-'",
        ),
        (
            "    targetPort: '8080'\n",
            "m.yaml:10: Service/web: spec.ports[0].targetPort: must be a port number (1-65535) or a port name: '8080' is not a valid port name: at least one letter",
        ),
        (
            "    nodePort: 30080\n",
            "m.yaml:10: Service/web: spec.ports[0].nodePort: nodePort needs type NodePort or LoadBalancer, not ClusterIP",
        ),
        (
            "    nodePort: 8080\n  type: NodePort\n",
            "m.yaml:10: Service/web: spec.ports[0].nodePort: 8080 is out of range 30000-32767 (0 means: none)",
        ),
        (
            "    port: 80\n",
            "m.yaml:10: Service/web: spec.ports[0].port: duplicate key 'port' (first at line 9)",
        ),
        (
            "  - port: 81\n",
            "m.yaml:9: Service/web: spec.ports[0].name: required when a Service has more than one port",
        ),
    ],
)
def test_service_checks(spec: str, expected: str) -> None:
    found = errors(SERVICE + spec)
    assert found[0] == expected
    assert len(found) == (2 if spec == "  - port: 81\n" else 1), found


def test_service_ports_unique() -> None:
    text = SERVICE.replace("  - port: 80\n", "  - {name: a, port: 80}\n  - {name: a, port: 80}\n")
    assert errors(text) == [
        "m.yaml:10: Service/web: spec.ports[1].name: duplicate port name 'a' (also ports[0])",
        "m.yaml:10: Service/web: spec.ports[1].port: duplicate port 80/TCP (also ports[0])",
    ]


def test_service_needs_ports_unless_headless() -> None:
    text = SERVICE.replace("  ports:\n  - port: 80\n", "")
    assert errors(text) == [
        "m.yaml:5: Service/web: spec.ports: a Service needs at least one port (or clusterIP: None)"
    ]
    assert errors(text + "  clusterIP: None\n") == []


def test_node_port_service_and_named_target_port() -> None:
    text = SERVICE.replace(
        "  - port: 80\n", "  - {port: 80, targetPort: http, nodePort: 30080}\n  type: NodePort\n"
    )
    manifests, found, _ = load(text)
    assert found == []
    port = manifests[0].obj.spec.ports[0]
    assert (port.target_port, port.node_port) == ("http", 30080)


def test_a_cluster_ip_address_is_accepted() -> None:
    manifests, found, ignored = load(SERVICE + "  clusterIP: 10.0.0.10\n")
    assert found == [] and ignored == []
    assert manifests[0].obj.spec.cluster_ip == "10.0.0.10"


def test_a_cluster_ip_two_services_declare_is_an_error_at_the_later_field(
    tmp_path: Path,
) -> None:
    (tmp_path / "a.yaml").write_text(SERVICE + "  clusterIP: 10.0.0.10\n")
    other = SERVICE.replace("name: web", "name: api") + "  clusterIP: 10.0.0.10\n"
    (tmp_path / "b.yaml").write_text("# the api\n" + other)
    report = validate_paths([tmp_path])
    assert [str(e) for e in report.errors] == [
        f"{tmp_path}/b.yaml:11: Service/api: spec.clusterIP: clusterIP 10.0.0.10 of Service "
        f"default/api is also declared by Service default/web at {tmp_path}/a.yaml:10"
    ]


# ---------------------------------------------------------------- endpoints and nodes


def test_endpoints() -> None:
    text = """\
        apiVersion: v1
        kind: Endpoints
        metadata: {name: db}
        subsets:
        - addresses: [{ip: 10.0.0.5}, {ip: not-an-ip}]
          ports: [{port: 5432}, {port: 5433}]
        """
    assert errors(text) == [
        "m.yaml:5: Endpoints/db: subsets[0].addresses[1].ip: 'not-an-ip' is not an IP address",
        "m.yaml:6: Endpoints/db: subsets[0].ports[0].name: required when a subset has more than one port",
        "m.yaml:6: Endpoints/db: subsets[0].ports[1].name: required when a subset has more than one port",
    ]


def test_nodes_are_cluster_scoped() -> None:
    text = """\
        apiVersion: v1
        kind: Node
        metadata:
          name: minion-1
          namespace: default
          labels: {disk: ssd}
        spec:
          unschedulable: true
        """
    manifests, found, ignored = load(text)
    assert found == []
    node = manifests[0].obj
    assert (node.namespace, node.spec.unschedulable, node.metadata.labels) == (
        "",
        True,
        {"disk": "ssd"},
    )
    assert [i.field for i in ignored] == ["metadata.namespace"]


def test_namespace_defaults_to_default_even_when_empty() -> None:
    manifests, found, _ = load(VALID_POD.replace("  name: web\n", "  name: web\n  namespace: ''\n"))
    assert found == [] and manifests[0].obj.namespace == "default"
    manifests, _, _ = load(VALID_POD.replace("  name: web\n", "  name: web\n  namespace: team-a\n"))
    assert manifests[0].obj.namespace == "team-a"
