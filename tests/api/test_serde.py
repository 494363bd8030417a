"""Wire form of the API objects: Kubernetes v1 camelCase names both ways.

- round trips for every kind (to_dict -> from_dict gives the same object)
- irregular wire names (clusterIP, hostIP, podIP, containerID, exec)
- empty values omitted on the wire; unknown keys and nulls ignored when reading
- int-or-string fields keep their type; nested optionals
- property: any Pod built from generated values survives a round trip
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.objects import (
    Container,
    ContainerPort,
    Endpoints,
    HTTPGetAction,
    Node,
    ObjectMeta,
    Pod,
    PodSpec,
    Probe,
    ReplicationController,
    ResourceRequirements,
    Service,
    ServicePort,
    object_from_dict,
)
from gitkube.api.serde import camel, from_dict, to_dict

# ---------------------------------------------------------------- names


def test_camel_case() -> None:
    assert camel("termination_grace_period_seconds") == "terminationGracePeriodSeconds"
    assert camel("name") == "name"


def test_irregular_wire_names() -> None:
    service = Service.from_dict(
        {"kind": "Service", "metadata": {"name": "s"}, "spec": {"clusterIP": "None"}}
    )
    assert service.spec.cluster_ip == "None" and service.spec.headless
    assert to_dict(service)["spec"]["clusterIP"] == "None"
    pod = Pod.from_dict(
        {
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {
                        "name": "c",
                        "ports": [{"containerPort": 80, "hostIP": "127.0.0.1"}],
                        "livenessProbe": {"exec": {"command": ["true"]}},
                    }
                ]
            },
            "status": {
                "podIP": "10.0.0.1",
                "hostIP": "10.0.0.2",
                "containerStatuses": [{"name": "c", "containerID": "docker://abc"}],
            },
        }
    )
    assert pod.spec.containers[0].ports[0].host_ip == "127.0.0.1"
    assert pod.spec.containers[0].liveness_probe is not None
    assert pod.spec.containers[0].liveness_probe.exec is not None
    assert (pod.status.pod_ip, pod.status.host_ip) == ("10.0.0.1", "10.0.0.2")
    assert pod.status.container_statuses[0].container_id == "docker://abc"
    wire = pod.to_dict()
    assert wire["status"]["podIP"] == "10.0.0.1"
    assert wire["spec"]["containers"][0]["livenessProbe"] == {
        "exec": {"command": ["true"]},
        "initialDelaySeconds": 0,
        "periodSeconds": 10,
        "timeoutSeconds": 1,
        "successThreshold": 1,
        "failureThreshold": 3,
    }


# ---------------------------------------------------------------- round trips


def _pod() -> Pod:
    return Pod(
        metadata=ObjectMeta(
            name="web", namespace="team", labels={"app": "web"}, annotations={"a": "b"}
        ),
        spec=PodSpec(
            containers=[
                Container(
                    name="web",
                    image="nginx",
                    command=["nginx", "-g", "daemon off;"],
                    ports=[ContainerPort(container_port=80, name="http", host_port=8080)],
                    readiness_probe=Probe(http_get=HTTPGetAction(path="/", port="http")),
                )
            ],
            restart_policy="OnFailure",
            node_selector={"disk": "ssd"},
            node_name="minion-1",
        ),
    )


def test_every_kind_round_trips() -> None:
    objects = [
        _pod(),
        ReplicationController.from_dict(
            {
                "metadata": {"name": "rc"},
                "spec": {
                    "replicas": 2,
                    "selector": {"a": "b"},
                    "template": {
                        "metadata": {"labels": {"a": "b"}},
                        "spec": _pod().to_dict()["spec"],
                    },
                },
            }
        ),
        Service.from_dict(
            {
                "metadata": {"name": "svc"},
                "spec": {
                    "type": "NodePort",
                    "sessionAffinity": "ClientIP",
                    "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                    "ports": [
                        {"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080}
                    ],
                },
            }
        ),
        Endpoints.from_dict(
            {
                "metadata": {"name": "svc"},
                "subsets": [
                    {
                        "addresses": [
                            {"ip": "10.0.0.1", "targetRef": {"kind": "Pod", "name": "p"}}
                        ],
                        "ports": [{"port": 80}],
                    }
                ],
            }
        ),
        Node.from_dict(
            {
                "metadata": {"name": "n1"},
                "spec": {"unschedulable": True, "podCIDR": "10.1.0.0/24"},
                "status": {
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": 110},
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.9"}],
                },
            }
        ),
    ]
    for obj in objects:
        wire = obj.to_dict()
        assert wire["apiVersion"] == "v1" and wire["kind"] == obj.KIND
        again = object_from_dict(wire)
        assert again == obj, obj.KIND
        assert again.to_dict() == wire


def test_empty_values_are_omitted_on_the_wire() -> None:
    wire = Pod(metadata=ObjectMeta(name="p")).to_dict()
    # None, "", [] and {} are omitted; zeros are kept.
    assert wire["metadata"] == {"name": "p", "namespace": "default", "generation": 0}
    assert "labels" not in wire["metadata"]


def test_unknown_keys_and_nulls_are_ignored_when_reading() -> None:
    pod = Pod.from_dict(
        {
            "metadata": {"name": "p", "labels": None, "bogus": 1},
            "spec": {"containers": [{"name": "c", "imagePullPolicy": "Always", "env": None}]},
        }
    )
    assert pod.metadata.labels == {}
    assert pod.spec.containers[0].env == []


def test_int_or_string_keeps_its_type() -> None:
    port = from_dict(ServicePort, {"port": 80, "targetPort": 8080})
    named = from_dict(ServicePort, {"port": 80, "targetPort": "http"})
    unset = from_dict(ServicePort, {"port": 80})
    assert (port.target_port, named.target_port, unset.target_port) == (8080, "http", None)


def test_wrong_shapes_fall_back_to_defaults() -> None:
    # from_dict trusts validation; a wrong shape must still not raise.
    pod = Pod.from_dict({"metadata": "oops", "spec": {"containers": "nope", "nodeSelector": []}})
    assert pod.metadata.name == "" and pod.spec.containers == [] and pod.spec.node_selector == {}


def test_unsupported_kind() -> None:
    try:
        object_from_dict({"kind": "StatefulSet"})
    except ValueError as exc:
        assert "unsupported kind 'StatefulSet'" in str(exc)
    else:  # pragma: no cover
        raise AssertionError("no error")


# ---------------------------------------------------------------- property

names = st.from_regex(r"[a-z][a-z0-9-]{0,10}[a-z0-9]", fullmatch=True)
labels = st.dictionaries(names, names, max_size=3)


@st.composite
def pods(draw: st.DrawFn) -> Pod:
    containers = [
        Container(
            name=draw(names),
            image=draw(names),
            args=draw(st.lists(st.text(max_size=5), max_size=3)),
            ports=[
                ContainerPort(
                    container_port=draw(st.integers(1, 65535)),
                    name=draw(st.sampled_from(["", "http"])),
                )
            ],
            resources=from_dict(
                ResourceRequirements,
                {"requests": {"cpu": draw(st.sampled_from(["100m", "1", 2])), "memory": "64Mi"}},
            ),
        )
        for _ in range(draw(st.integers(1, 3)))
    ]
    return Pod(
        metadata=ObjectMeta(name=draw(names), labels=draw(labels)),
        spec=PodSpec(
            containers=containers,
            restart_policy=draw(st.sampled_from(["Always", "Never"])),
            node_selector=draw(labels),
            host_network=draw(st.booleans()),
        ),
    )


@settings(max_examples=25, deadline=None)
@given(pods())
def test_generated_pods_round_trip(pod: Pod) -> None:
    assert Pod.from_dict(pod.to_dict()) == pod
