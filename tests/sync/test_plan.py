"""The sync plan (pure core, plain objects, no fixtures):

- creates, updates with the fields that differ and why, deletes;
- prune only deletes objects gitkube created (never RC pods, Endpoints of the
  controller, nodes), and can be turned off;
- self-heal puts back live changes, and can be turned off (drift reported);
- no diff noise: status, defaults, system metadata, provenance annotations,
  fields the system fills in (nodeName, clusterIP) and a new commit that does
  not change an object are not differences;
- Node manifests only set labels and unschedulable, keeping the agent's status;
- property: after applying a plan, planning again yields an empty plan;
- the fast wire form (wire_of) is exactly ApiObject.to_dict().
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api import annotations as ann
from gitkube.api.objects import (
    ApiObject,
    Container,
    Endpoints,
    Node,
    NodeCondition,
    ObjectMeta,
    OwnerReference,
    Pod,
    PodSpec,
    ReplicationController,
    ReplicationControllerSpec,
    Service,
    ServicePort,
    ServiceSpec,
)
from gitkube.sync.diff import Live, SyncPlan, plan_sync, recorded_diff, render_diff, wire_of


@dataclass
class M:
    """A manifest-like input: the file and the typed object."""

    path: str
    obj: ApiObject


def pod(name: str, image: str = "nginx:1", **labels: str) -> Pod:
    return Pod(
        metadata=ObjectMeta(name=name, labels=dict(labels)),
        spec=PodSpec(containers=[Container(name="c", image=image)]),
    )


def service(name: str, port: int = 80) -> Service:
    return Service(
        metadata=ObjectMeta(name=name),
        spec=ServiceSpec(ports=[ServicePort(port=port)], selector={"app": name}),
    )


def rc(name: str, replicas: int = 2) -> ReplicationController:
    return ReplicationController(
        metadata=ObjectMeta(name=name),
        spec=ReplicationControllerSpec(replicas=replicas, selector={"app": name}),
    )


def apply(live: dict[str, Live], plan: SyncPlan, *, revision: int = 100) -> dict[str, Live]:
    """What the store holds after ``plan``, as apply_plan writes it (JSON round trip)."""
    out = dict(live)
    for c in plan.creates:
        wire = json.loads(json.dumps(c.wire))
        wire["metadata"].update(uid="u-" + c.name, generation=1, creationTimestamp="t")
        out[c.key] = Live.from_wire(wire, key=c.key, mod_revision=revision)
    for u in plan.updates:
        wire = json.loads(json.dumps(u.wire))
        out[u.key] = Live.from_wire(wire, key=u.key, mod_revision=revision)
    for p in plan.deletes:
        del out[p.key]
    return out


def sync(
    desired: list[M], live: dict[str, Live], *, revision: str = "c1", **kw: Any
) -> tuple[SyncPlan, dict[str, Live]]:
    plan = plan_sync(desired, list(live.values()), revision=revision, **kw)
    return plan, apply(live, plan)


def live_of(*objs: ApiObject) -> dict[str, Live]:
    return {o.key: Live.of(o) for o in objs}


# ---------------------------------------------------------------- creates, updates, deletes


def test_everything_new_is_created_with_provenance() -> None:
    plan = plan_sync([M("a.yaml", pod("a")), M("b.yaml", service("b"))], [], revision="abc")
    assert [c.name for c in plan.creates] == ["a", "b"]
    annotations = plan.creates[0].wire["metadata"]["annotations"]
    assert annotations[ann.MANAGED_BY] == "gitkube"
    assert annotations[ann.SOURCE_COMMIT] == "abc"
    assert annotations[ann.SOURCE_PATH] == "a.yaml"
    assert annotations[ann.DESIRED_HASH]
    assert not plan.updates and not plan.deletes


def test_a_change_in_git_is_an_update_naming_the_fields() -> None:
    _, live = sync([M("a.yaml", pod("a", "nginx:1"))], {})
    plan, _ = sync([M("a.yaml", pod("a", "nginx:2", app="x"))], live, revision="c2")
    [update] = plan.updates
    assert update.reason == "changed in git"
    assert set(update.fields) == {"spec.containers[0].image", "metadata.labels"}
    assert update.wire["metadata"]["annotations"][ann.SOURCE_COMMIT] == "c2"
    assert not update.drift


def test_an_object_git_no_longer_declares_is_pruned() -> None:
    _, live = sync([M("a.yaml", pod("a")), M("a.yaml", pod("b"))], {})
    plan, after = sync([M("a.yaml", pod("a"))], live)
    assert [p.name for p in plan.deletes] == ["b"]
    assert set(after) == {pod("a").key}


def test_prune_off_keeps_orphans_and_reports_them() -> None:
    _, live = sync([M("a.yaml", pod("a")), M("a.yaml", pod("b"))], {})
    plan = plan_sync([M("a.yaml", pod("a"))], list(live.values()), prune=False)
    assert not plan.deletes
    assert [o.name for o in plan.orphans] == ["b"]


def test_objects_gitkube_did_not_create_are_never_pruned() -> None:
    rc_pod = pod("web-x1z2")
    rc_pod.metadata.owner_references = [
        OwnerReference(kind="ReplicationController", name="web", controller=True)
    ]
    rc_pod.metadata.annotations = {ann.MANAGED_BY: "gitkube"}  # even if copied from a template
    endpoints = Endpoints(
        metadata=ObjectMeta(name="web", annotations={ann.ENDPOINTS_CONTROLLER: "true"})
    )
    hand_made = pod("by-hand")
    node = Node(metadata=ObjectMeta(name="n1", annotations={ann.MANAGED_BY: "gitkube"}))
    plan = plan_sync([], [Live.of(o) for o in (rc_pod, endpoints, hand_made, node)])
    assert plan.empty
    assert not plan.orphans


# ---------------------------------------------------------------- no diff noise


def test_a_new_commit_that_does_not_change_an_object_is_not_a_difference() -> None:
    _, live = sync([M("a.yaml", pod("a"))], {}, revision="c1")
    plan = plan_sync([M("a.yaml", pod("a"))], list(live.values()), revision="c2")
    assert plan.empty and plan.unchanged == 1


def test_status_defaults_and_system_metadata_do_not_count() -> None:
    _, live = sync([M("a.yaml", pod("a")), M("s.yaml", service("s"))], {})
    key_a, key_s = pod("a").key, service("s").key
    # the system writes status, binds the pod, allocates a cluster IP and a node port
    wire = json.loads(json.dumps(live[key_a].wire))
    wire["status"] = {"phase": "Running", "podIP": "10.0.0.5"}
    wire["spec"]["nodeName"] = "node-1"
    wire["metadata"].update(generation=7, uid="other", resourceVersion="55")
    live[key_a] = Live.from_wire(wire, key=key_a, mod_revision=55)
    swire = json.loads(json.dumps(live[key_s].wire))
    swire["spec"]["clusterIP"] = "10.96.0.10"
    swire["spec"]["ports"][0]["nodePort"] = 30080
    live[key_s] = Live.from_wire(swire, key=key_s, mod_revision=56)
    # defaults spelled out in git are the same object as defaults left out
    explicit = pod("a")
    explicit.spec.restart_policy = "Always"
    explicit.spec.termination_grace_period_seconds = 30
    plan = plan_sync([M("a.yaml", explicit), M("s.yaml", service("s"))], list(live.values()))
    assert plan.empty, render_diff(plan)


def test_an_update_keeps_status_and_system_filled_fields() -> None:
    _, live = sync([M("a.yaml", pod("a", "nginx:1"))], {})
    key = pod("a").key
    wire = json.loads(json.dumps(live[key].wire))
    wire["status"] = {"phase": "Running"}
    wire["spec"]["nodeName"] = "node-1"
    live[key] = Live.from_wire(wire, key=key, mod_revision=9)
    plan = plan_sync([M("a.yaml", pod("a", "nginx:2"))], list(live.values()))
    [update] = plan.updates
    assert update.wire["status"] == {"phase": "Running"}
    assert update.wire["spec"]["nodeName"] == "node-1"
    assert update.wire["metadata"]["uid"] == live[key].wire["metadata"]["uid"]
    assert update.fields == ("spec.containers[0].image",)


# ---------------------------------------------------------------- self-heal


def _drifted() -> tuple[list[M], dict[str, Live]]:
    desired = [M("rc.yaml", rc("web", replicas=3))]
    _, live = sync(desired, {})
    key = rc("web").key
    wire = json.loads(json.dumps(live[key].wire))
    wire["spec"]["replicas"] = 10  # scaled by hand
    live[key] = Live.from_wire(wire, key=key, mod_revision=20)
    return desired, live


def test_self_heal_puts_back_a_change_made_outside_git() -> None:
    desired, live = _drifted()
    plan, after = sync(desired, live)
    [update] = plan.updates
    assert update.drift and update.fields == ("spec.replicas",)
    assert "outside git" in update.describe()
    assert after[rc("web").key].wire["spec"]["replicas"] == 3


def test_self_heal_off_reports_drift_and_writes_nothing() -> None:
    desired, live = _drifted()
    plan = plan_sync(desired, list(live.values()), self_heal=False)
    assert plan.empty
    assert [(d.name, d.fields) for d in plan.drifted] == [("web", ("spec.replicas",))]


def test_an_object_not_created_by_gitkube_is_adopted() -> None:
    plan = plan_sync([M("a.yaml", pod("a"))], [Live.of(pod("a"))])
    [update] = plan.updates
    assert update.reason.startswith("adopted")


def test_moving_an_object_to_another_file_updates_its_provenance() -> None:
    _, live = sync([M("a.yaml", pod("a"))], {})
    plan = plan_sync([M("b.yaml", pod("a"))], list(live.values()))
    [update] = plan.updates
    assert update.reason == "moved from a.yaml to b.yaml"
    assert update.wire["metadata"]["annotations"][ann.SOURCE_PATH] == "b.yaml"


# ---------------------------------------------------------------- nodes


def _registered_node() -> Node:
    node = Node(metadata=ObjectMeta(name="n1", labels={"kubernetes.io/hostname": "n1"}))
    node.status.conditions = [NodeCondition(type="Ready", status="True")]
    node.status.capacity = {"cpu": "4"}
    return node


def test_a_node_manifest_sets_labels_and_unschedulable_only() -> None:
    registered = _registered_node()
    from_git = Node(metadata=ObjectMeta(name="n1", labels={"disk": "ssd"}))
    from_git.spec.unschedulable = True
    from_git.status.capacity = {"cpu": "99"}  # ignored: the agent owns status
    plan, after = sync([M("nodes.yaml", from_git)], live_of(registered))
    assert len(plan.updates) == 1
    wire = after[registered.key].wire
    assert wire["metadata"]["labels"] == {"kubernetes.io/hostname": "n1", "disk": "ssd"}
    assert wire["spec"]["unschedulable"] is True
    assert wire["status"]["capacity"] == {"cpu": "4"}
    assert wire["status"]["conditions"][0]["type"] == "Ready"
    # the agent's heartbeats change status: no difference
    hb = json.loads(json.dumps(wire))
    hb["status"]["conditions"][0]["lastHeartbeatTime"] = "later"
    hb["metadata"]["labels"]["agent"] = "own-label"
    again = plan_sync(
        [M("nodes.yaml", from_git)], [Live.from_wire(hb, key=registered.key, mod_revision=3)]
    )
    assert again.empty
    # git stops declaring the label: it is removed, the agent's labels stay
    del from_git.metadata.labels["disk"]
    plan, after = sync([M("nodes.yaml", from_git)], live_of(registered) | after)
    assert after[registered.key].wire["metadata"]["labels"] == {"kubernetes.io/hostname": "n1"}


def test_nodes_are_never_pruned() -> None:
    from_git = Node(metadata=ObjectMeta(name="n1", labels={"disk": "ssd"}))
    _, live = sync([M("nodes.yaml", from_git)], live_of(_registered_node()))
    assert plan_sync([], list(live.values())).empty


# ---------------------------------------------------------------- the diff


def test_render_diff_shows_a_yaml_diff_with_the_reason() -> None:
    desired, live = _drifted()
    text = render_diff(plan_sync(desired, list(live.values())))
    assert "# update ReplicationController/default/web (from rc.yaml): changed outside git" in text
    assert "-  replicas: 10" in text and "+  replicas: 3" in text


# ---------------------------------------------------------------- property


names = st.sampled_from(["a", "b", "c", "d"])
images = st.sampled_from(["nginx:1", "nginx:2", "redis:7"])


@st.composite
def objects(draw: st.DrawFn) -> ApiObject:
    kind = draw(st.sampled_from(["Pod", "Service", "RC", "Node"]))
    name = draw(names)
    if kind == "Pod":
        p = pod(name, draw(images), **({"app": draw(names)} if draw(st.booleans()) else {}))
        if draw(st.booleans()):
            p.spec.node_name = draw(st.sampled_from(["", "n1"]))
        return p
    if kind == "Service":
        return service(name, draw(st.sampled_from([80, 8080])))
    if kind == "RC":
        return rc(name, draw(st.integers(0, 3)))
    node = Node(metadata=ObjectMeta(name=name, labels={"l": draw(names)}))
    node.spec.unschedulable = draw(st.booleans())
    return node


@st.composite
def lives(draw: st.DrawFn) -> Live:
    obj = draw(objects())
    managed = draw(st.booleans())
    if managed:
        obj.metadata.annotations[ann.MANAGED_BY] = "gitkube"
        obj.metadata.annotations[ann.DESIRED_HASH] = draw(st.sampled_from(["x", "y"]))
        obj.metadata.annotations[ann.SOURCE_PATH] = draw(st.sampled_from(["a.yaml", "b.yaml"]))
    if isinstance(obj, Pod) and draw(st.booleans()):
        obj.status.phase = "Running"
        obj.spec.node_name = "n2"
    if draw(st.booleans()):
        obj.metadata.owner_references = [OwnerReference(kind="X", name="y", controller=True)]
    return Live.of(obj)


@settings(max_examples=150, deadline=None)
@given(
    desired=st.lists(st.tuples(st.sampled_from(["a.yaml", "b.yaml"]), objects()), max_size=8),
    live=st.lists(lives(), max_size=8),
    prune=st.booleans(),
    self_heal=st.booleans(),
)
def test_after_applying_a_plan_planning_again_is_empty(
    desired: list[tuple[str, ApiObject]], live: list[Live], prune: bool, self_heal: bool
) -> None:
    unique: dict[str, M] = {}
    for path, obj in desired:
        unique[obj.key] = M(path, obj)
    state = {lv.key: lv for lv in live}
    _, after = sync(list(unique.values()), state, prune=prune, self_heal=self_heal)
    again = plan_sync(
        list(unique.values()), list(after.values()), revision="c2", prune=prune, self_heal=True
    )
    assert again.empty, render_diff(again)
    assert not again.drifted
    for key in unique:
        assert key in after


@settings(max_examples=100, deadline=None)
@given(obj=objects(), live=lives())
def test_wire_of_is_to_dict(obj: ApiObject, live: Live) -> None:
    assert wire_of(obj) == obj.to_dict()
    typed = live.to_object()
    assert wire_of(typed) == typed.to_dict()


# ---------------------------------------------------------------- controller annotations


def test_the_deployment_controllers_revision_annotation_is_not_drift_and_survives_updates() -> None:
    from gitkube.api.objects import (
        Container,
        Deployment,
        DeploymentSpec,
        LabelSelector,
        PodTemplateSpec,
    )
    from gitkube.api.objects import ObjectMeta as Meta
    from gitkube.api.objects import PodSpec as PSpec

    def web(image: str) -> Deployment:
        return Deployment(
            metadata=Meta(name="web"),
            spec=DeploymentSpec(
                selector=LabelSelector(match_labels={"app": "web"}),
                template=PodTemplateSpec(
                    metadata=Meta(labels={"app": "web"}),
                    spec=PSpec(containers=[Container(name="app", image=image)]),
                ),
            ),
        )

    _, live = sync([M("web.yaml", web("app:1"))], {})
    (key,) = live
    wire = json.loads(json.dumps(live[key].wire))
    wire["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    live = {key: Live.from_wire(wire, key=key, mod_revision=200)}
    plan, _ = sync([M("web.yaml", web("app:1"))], live)
    assert plan.empty and not plan.drifted
    plan, _ = sync([M("web.yaml", web("app:2"))], live, revision="c2")
    (update,) = plan.updates
    assert update.wire["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"


def test_a_recorded_diff_renders_only_what_it_keeps() -> None:
    """The history keeps the first bytes of a sync's diff: past them the objects
    are counted, not rendered (a cold sync of thousands of objects)."""
    plan = plan_sync([M("pods.yaml", pod(f"p{i:04}")) for i in range(3000)], [], revision="c1")
    full = render_diff(plan)
    kept = recorded_diff(plan, limit=20_000)
    assert kept["truncated"]
    text = kept["diff"]
    assert len(text.encode()) < 20_200
    assert full.startswith(text[: text.rindex("\n# create")])
    last = text.splitlines()[-1]
    assert last.startswith("# … ") and last.endswith(" more objects not recorded")
    shown = text.count("# create Pod/")
    unrendered = int(last.split(" and ")[1].split()[0])
    # every object is in the text, counted as left out, or (the last one
    # rendered) cut at the limit
    assert 0 < shown < 3000 and shown + unrendered in (2999, 3000)
    small = recorded_diff(plan_sync([M("a.yaml", pod("a"))], [], revision="c1"))
    assert small == {
        "diff": render_diff(plan_sync([M("a.yaml", pod("a"))], [], revision="c1")),
        "truncated": False,
    }
