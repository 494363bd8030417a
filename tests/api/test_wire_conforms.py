"""The wire form of the objects gitkube writes conforms to the official schema:

- gitkube's own status (a Pod's published host ports, an RC's updated replicas
  and the time its rollout last progressed) travels in annotations, and comes
  back into the same attributes when read;
- fields v1 requires are written even when empty (imageID, nodeInfo);
- the result passes the official schema in strict mode.
"""

from __future__ import annotations

from typing import Any

from gitkube.api import annotations as ann
from gitkube.api.objects import (
    Container,
    ContainerStatus,
    Node,
    NodeStatus,
    ObjectMeta,
    Pod,
    PodSpec,
    PodStatus,
    ReplicationController,
    ReplicationControllerCondition,
    ReplicationControllerStatus,
)
from gitkube.api.schema import Sink, official_check
from gitkube.sync.diff import wire_of


def official_errors(data: dict[str, Any]) -> list[tuple[Any, str]]:
    check = official_check(data["apiVersion"], data["kind"])
    assert check is not None
    sink = Sink()
    check(data, (), sink)
    return sink.errors


def test_pod_host_ports_travel_in_an_annotation() -> None:
    pod = Pod(
        metadata=ObjectMeta(name="p", annotations={"team": "a"}),
        spec=PodSpec(containers=[Container(name="web", image="nginx")]),
        status=PodStatus(
            phase="Running",
            host_ports={"web/80/TCP": 31001},
            container_statuses=[ContainerStatus(name="web", image="nginx")],
        ),
    )
    wire = pod.to_dict()
    assert "hostPorts" not in wire["status"]
    assert wire["metadata"]["annotations"] == {
        "team": "a",
        ann.HOST_PORTS: '{"web/80/TCP":31001}',
    }
    assert wire["status"]["containerStatuses"][0]["imageID"] == ""
    assert official_errors(wire) == []
    back = Pod.from_dict(wire)
    assert back.status.host_ports == {"web/80/TCP": 31001}
    assert back.metadata.annotations == {"team": "a"}
    assert wire_of(pod) == wire


def test_rc_rollout_status_travels_in_an_annotation() -> None:
    rc = ReplicationController(
        metadata=ObjectMeta(name="web"),
        status=ReplicationControllerStatus(
            replicas=3,
            updated_replicas=2,
            conditions=[
                ReplicationControllerCondition(
                    type="Progressing",
                    status="True",
                    reason="NewPodsReady",
                    last_transition_time="2026-01-01T00:00:00Z",
                    last_update_time="2026-01-01T00:01:00Z",
                )
            ],
        ),
    )
    rc.spec.template.spec.containers = []
    wire = rc.to_dict()
    assert "updatedReplicas" not in wire["status"]
    assert "lastUpdateTime" not in wire["status"]["conditions"][0]
    assert ann.RC_ROLLOUT in wire["metadata"]["annotations"]
    back = ReplicationController.from_dict(wire)
    assert back.status.updated_replicas == 2
    assert back.status.conditions[0].last_update_time == "2026-01-01T00:01:00Z"
    assert back.metadata.annotations == {}
    assert back.to_dict() == wire
    # a broken annotation is ignored, never a crash
    wire["metadata"]["annotations"][ann.RC_ROLLOUT] = "{not json"
    assert ReplicationController.from_dict(wire).status.updated_replicas == 0


def test_node_info_has_every_required_field() -> None:
    node = Node(metadata=ObjectMeta(name="n"), status=NodeStatus())
    node.status.node_info.kernel_version = "6.1"
    wire = node.to_dict()
    assert wire["status"]["nodeInfo"]["systemUUID"] == ""
    assert official_errors(wire) == []
