"""The ReplicationController manager's pure core.

- creates: names ``<rc>-<5 chars>`` from Kubernetes' alphabet, template labels
  plus the template hash, the RC as controller owner; burst limit; slow start;
- keeps replicas: failed pods and pods on lost nodes are replaced;
- scale down: least useful first (unscheduled, pending, not ready, restarts, newest);
- adoption of matching orphans, release of pods that stop matching;
- status: replicas, ready, available (minReadySeconds), observedGeneration;
- rolling update: surge and unavailability limits, completion, a stalled
  rollout that turns Degraded after the progress deadline;
- properties: planning again after applying a plan changes nothing; ready
  pods never drop below replicas - maxUnavailable during a rollout.
"""

from __future__ import annotations

import random
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.annotations import (
    MAX_SURGE,
    MAX_UNAVAILABLE,
    PROGRESS_DEADLINE,
    TEMPLATE_HASH_LABEL,
)
from gitkube.api.objects import Pod, PodCondition, ReplicationController
from gitkube.planner.replication import (
    DELETE_FAILED,
    DELETE_NODE_LOST,
    NAME_ALPHABET,
    ReplicationPlan,
    ReplicationSettings,
    deletion_order,
    format_time,
    parse_time,
    plan_replication,
    rollout_limits,
    slow_start_batches,
    template_hash,
)
from tests.planner.builders import node, pod, rc

NODES = [node("n1"), node("n2")]
T0 = 1_700_000_000.0


def plan(
    controller: ReplicationController,
    pods: list[Pod],
    *,
    now: float = T0,
    seed: int = 0,
    **kw: float,
) -> ReplicationPlan:
    return plan_replication(
        controller,
        pods,
        NODES,
        now=now,
        rand=random.Random(seed),
        settings=ReplicationSettings(**kw),  # type: ignore[arg-type]
    )


def owned(controller: ReplicationController, name: str, **kw: object) -> Pod:
    """A pod of ``controller``'s current template."""
    p = pod(name, owner_uid=controller.metadata.uid, labels=dict(controller.spec.selector), **kw)  # type: ignore[arg-type]
    p.metadata.labels[TEMPLATE_HASH_LABEL] = template_hash(controller)
    return p


class Cluster:
    """Applies plans to an in-memory pod list, and plays a kubelet."""

    def __init__(self, controller: ReplicationController, pods: list[Pod] | None = None) -> None:
        self.rc = controller
        self.pods = list(pods or [])
        self.now = T0
        self.counter = 0

    def step(self, *, ready_hashes: set[str], seconds: float = 1.0, **kw: float) -> ReplicationPlan:
        result = plan(self.rc, self.pods, now=self.now, seed=self.counter, **kw)
        self.counter += 1
        gone = {d.pod.key for d in result.deletes}
        changed = {p.key: p for p in [*result.adoptions, *result.releases]}
        self.pods = [changed.get(p.key, p) for p in self.pods if p.key not in gone]
        for created in result.creates:
            created.metadata.creation_timestamp = format_time(self.now)
            created.spec.node_name = "n1"
            created.status.phase = "Running"
            self.pods.append(created)
        self.rc.status = result.status
        self.now += seconds
        for p in self.pods:  # the kubelet: pods of a good template turn ready
            if p.metadata.labels.get(TEMPLATE_HASH_LABEL) in ready_hashes and not p.is_ready():
                p.status.conditions = [PodCondition(type="Ready", status="True")]
        return result

    def ready(self) -> int:
        return sum(1 for p in self.pods if p.is_ready())


# ---------------------------------------------------------------- creates


class TestCreates:
    def test_pods_from_the_template_owned_by_the_rc(self) -> None:
        controller = rc("web", replicas=3)
        result = plan(controller, [])
        assert len(result.creates) == 3
        names = {p.name for p in result.creates}
        assert len(names) == 3
        for p in result.creates:
            assert re.fullmatch(f"web-[{NAME_ALPHABET}]{{5}}", p.name)
            assert p.metadata.labels == {
                "app": "web",
                TEMPLATE_HASH_LABEL: template_hash(controller),
            }
            [ref] = p.metadata.owner_references
            assert (ref.kind, ref.name, ref.uid, ref.controller) == (
                "ReplicationController",
                "web",
                "rc-uid",
                True,
            )
            assert p.spec.containers[0].image == "nginx:1"
            assert not p.spec.node_name

    def test_names_follow_the_random_source_and_avoid_existing_pods(self) -> None:
        controller = rc("web", replicas=2)
        first = [p.name for p in plan(controller, [], seed=4).creates]
        assert first == [p.name for p in plan(controller, [], seed=4).creates]
        taken = pod(first[0], labels={"other": "x"})
        again = [p.name for p in plan(controller, [taken], seed=4).creates]
        assert first[0] not in again

    def test_burst_limit(self) -> None:
        result = plan(rc(replicas=1200), [], burst_replicas=500)
        assert len(result.creates) == 500

    def test_slow_start_batches(self) -> None:
        assert slow_start_batches(0) == []
        assert slow_start_batches(1) == [1]
        assert slow_start_batches(10) == [1, 2, 4, 3]
        assert slow_start_batches(50) == [1, 2, 4, 8, 16, 19]


# ---------------------------------------------------------------- keeping replicas


class TestKeepsReplicas:
    def test_failed_pods_are_replaced(self) -> None:
        controller = rc(replicas=2)
        pods = [
            owned(controller, "a", node_name="n1", ready=True),
            owned(controller, "b", node_name="n1", phase="Failed"),
        ]
        result = plan(controller, pods)
        assert [(d.pod.name, d.reason) for d in result.deletes] == [("b", DELETE_FAILED)]
        assert len(result.creates) == 1

    def test_pods_on_lost_nodes_are_replaced(self) -> None:
        controller = rc(replicas=2)
        pods = [
            owned(controller, "a", node_name="n1", ready=True),
            owned(controller, "b", node_name="gone", ready=True),
        ]
        result = plan(controller, pods)
        assert [(d.pod.name, d.reason) for d in result.deletes] == [("b", DELETE_NODE_LOST)]
        assert len(result.creates) == 1

    def test_pods_being_deleted_do_not_count(self) -> None:
        controller = rc(replicas=1)
        leaving = owned(controller, "a", node_name="n1", ready=True)
        leaving.metadata.deletion_timestamp = "2024-01-01T00:00:00Z"
        result = plan(controller, [leaving])
        assert not result.deletes and len(result.creates) == 1

    def test_steady_state_plans_nothing(self) -> None:
        controller = rc(replicas=2)
        pods = [owned(controller, n, node_name="n1", ready=True) for n in "ab"]
        first = plan(controller, pods)
        controller.status = first.status
        assert not plan(controller, pods, now=T0 + 5000)


class TestScaleDown:
    def test_least_useful_first(self) -> None:
        controller = rc(replicas=1)
        pods = [
            owned(
                controller, "ready-old", node_name="n1", ready=True, created="2024-01-01T00:00:00Z"
            ),
            owned(
                controller, "ready-new", node_name="n1", ready=True, created="2024-01-01T00:00:05Z"
            ),
            owned(controller, "restarts", node_name="n1", ready=True, restarts=5),
            owned(controller, "not-ready", node_name="n1", phase="Running"),
            owned(controller, "pending", node_name="n1"),
            owned(controller, "unscheduled"),
        ]
        result = plan(controller, pods)
        assert [d.pod.name for d in result.deletes] == [
            "unscheduled",
            "pending",
            "not-ready",
            "restarts",
            "ready-new",
        ]
        assert [p.name for p in deletion_order(pods)][-1] == "ready-old"


class TestOwnership:
    def test_orphans_that_match_are_adopted_and_counted(self) -> None:
        controller = rc(replicas=2)
        orphan = pod("orphan", labels={"app": "web"}, node_name="n1", ready=True)
        theirs = pod("theirs", labels={"app": "web"}, owner_uid="someone-else")
        result = plan(controller, [orphan, theirs])
        [adopted] = result.adoptions
        assert adopted.name == "orphan"
        assert adopted.metadata.controller_ref().uid == "rc-uid"  # type: ignore[union-attr]
        assert orphan.metadata.owner_references == []  # inputs are not mutated
        # the orphan counts, but has no template hash: it is "old", so two new pods
        # come (replicas + surge 1 - 1 existing) and it goes once they are ready
        assert len(result.creates) == 2
        assert not result.deletes

    def test_pods_that_stop_matching_are_released(self) -> None:
        controller = rc(replicas=1)
        relabelled = owned(controller, "a", node_name="n1", ready=True)
        relabelled.metadata.labels["app"] = "debug"
        result = plan(controller, [relabelled])
        [released] = result.releases
        assert released.metadata.owner_references == []
        assert len(result.creates) == 1

    def test_other_namespaces_are_ignored(self) -> None:
        controller = rc(replicas=1)
        elsewhere = pod("x", labels={"app": "web"}, namespace="other")
        assert not plan(controller, [elsewhere]).adoptions


class TestStatus:
    def test_counts_and_observed_generation(self) -> None:
        controller = rc(replicas=3, generation=4)
        controller.spec.min_ready_seconds = 10
        just_ready = owned(controller, "b", node_name="n1", ready=True)
        just_ready.status.conditions[0].last_transition_time = format_time(T0 - 2)
        long_ready = owned(controller, "a", node_name="n1", ready=True)
        long_ready.status.conditions[0].last_transition_time = format_time(T0 - 60)
        pods = [long_ready, just_ready, owned(controller, "c", node_name="n1")]
        status = plan(controller, pods).status
        assert (status.replicas, status.ready_replicas, status.available_replicas) == (3, 2, 1)
        assert (status.updated_replicas, status.observed_generation) == (3, 4)
        assert status.fully_labeled_replicas == 3
        [progressing] = status.conditions
        assert progressing.type == "Progressing" and progressing.status == "True"
        assert "updated 3 of 3" in progressing.message

    def test_time_round_trip(self) -> None:
        assert parse_time(format_time(T0 + 0.25)) == T0 + 0.25
        assert parse_time("2024-01-01T00:00:00Z") is not None
        assert parse_time("yesterday") is None


# ---------------------------------------------------------------- rolling update


def _rolled(controller: ReplicationController, image: str) -> None:
    controller.spec.template.spec.containers[0].image = image
    controller.metadata.generation += 1


class TestRollingUpdate:
    def start(self, replicas: int = 3, **annotations: str) -> Cluster:
        controller = rc(replicas=replicas, annotations=annotations)
        cluster = Cluster(controller)
        for _ in range(3):
            cluster.step(ready_hashes={template_hash(controller)})
        assert cluster.ready() == replicas
        return cluster

    def test_completes_without_dropping_ready_pods(self) -> None:
        cluster = self.start()
        old_hash = template_hash(cluster.rc)
        _rolled(cluster.rc, "nginx:2")
        new_hash = template_hash(cluster.rc)
        assert new_hash != old_hash
        for _ in range(30):
            cluster.step(ready_hashes={old_hash, new_hash})
            assert cluster.ready() >= 3
            assert len(cluster.pods) <= 4
        assert {p.metadata.labels[TEMPLATE_HASH_LABEL] for p in cluster.pods} == {new_hash}
        assert len(cluster.pods) == 3
        progressing = cluster.rc.status.conditions[0]
        assert (progressing.status, progressing.reason) == ("True", "RolloutComplete")
        assert progressing.message.startswith("updated 3 of 3")

    def test_surge_and_unavailable_from_annotations(self) -> None:
        cluster = self.start(4, **{MAX_SURGE: "0", MAX_UNAVAILABLE: "50%"})
        assert rollout_limits(cluster.rc)[:2] == (0, 2)
        old_hash = template_hash(cluster.rc)
        _rolled(cluster.rc, "nginx:2")
        result = cluster.step(ready_hashes={old_hash, template_hash(cluster.rc)})
        assert len(result.deletes) == 2 and not result.creates
        for _ in range(20):
            cluster.step(ready_hashes={old_hash, template_hash(cluster.rc)})
            assert cluster.ready() >= 2 and len(cluster.pods) <= 4
        assert cluster.rc.status.updated_replicas == 4

    def test_progress_is_reported(self) -> None:
        cluster = self.start()
        _rolled(cluster.rc, "nginx:2")
        cluster.step(ready_hashes=set())  # status is what was observed: 0 updated
        cluster.step(ready_hashes=set())
        progressing = cluster.rc.status.conditions[0]
        assert progressing.reason == "RollingUpdate"
        assert progressing.message == "updated 1 of 3, ready 3 of 3, 3 on the old template"

    def test_a_template_that_never_becomes_ready_stalls_and_is_degraded(self) -> None:
        cluster = self.start(**{PROGRESS_DEADLINE: "30"})
        old_hash = template_hash(cluster.rc)
        _rolled(cluster.rc, "nginx:broken")
        for _ in range(10):
            cluster.step(ready_hashes={old_hash}, seconds=1)
        conditions = {c.type: c for c in cluster.rc.status.conditions}
        assert "Degraded" not in conditions
        for _ in range(40):
            cluster.step(ready_hashes={old_hash}, seconds=1)
            assert cluster.ready() == 3
        conditions = {c.type: c for c in cluster.rc.status.conditions}
        assert conditions["Progressing"].status == "False"
        assert conditions["Progressing"].reason == "ProgressDeadlineExceeded"
        degraded = conditions["Degraded"]
        assert degraded.status == "True" and degraded.reason == "ProgressDeadlineExceeded"
        assert "old pods keep serving" in degraded.message
        # old pods keep serving; one surge pod exists and nothing more is created
        hashes = [p.metadata.labels[TEMPLATE_HASH_LABEL] for p in cluster.pods]
        assert hashes.count(old_hash) == 3 and len(hashes) == 4
        # the status is stable once degraded: no write loop
        again = plan(cluster.rc, cluster.pods, now=cluster.now)
        assert not again

    def test_a_fixed_template_resumes_a_degraded_rollout(self) -> None:
        cluster = self.start(**{PROGRESS_DEADLINE: "5"})
        old_hash = template_hash(cluster.rc)
        _rolled(cluster.rc, "nginx:broken")
        for _ in range(10):
            cluster.step(ready_hashes={old_hash})
        assert any(c.type == "Degraded" for c in cluster.rc.status.conditions)
        _rolled(cluster.rc, "nginx:3")
        for _ in range(20):
            cluster.step(ready_hashes={old_hash, template_hash(cluster.rc)})
            assert cluster.ready() >= 3
        assert cluster.rc.status.updated_replicas == 3
        assert [c.type for c in cluster.rc.status.conditions] == ["Progressing"]

    def test_bad_annotations_fall_back_and_are_reported(self) -> None:
        controller = rc(annotations={MAX_SURGE: "lots"})
        assert rollout_limits(controller)[:2] == (1, 0)
        conditions = {c.type: c for c in plan(controller, []).status.conditions}
        assert "max-surge" in conditions["ReplicaFailure"].message


# ---------------------------------------------------------------- properties


@settings(max_examples=80, deadline=None)
@given(
    replicas=st.integers(0, 12),
    existing=st.integers(0, 15),
    ready=st.lists(st.booleans(), min_size=15, max_size=15),
    failed=st.lists(st.booleans(), min_size=15, max_size=15),
)
def test_planning_again_after_applying_changes_nothing(
    replicas: int, existing: int, ready: list[bool], failed: list[bool]
) -> None:
    controller = rc(replicas=replicas)
    pods = [
        owned(
            controller,
            f"p{i}",
            node_name="n1",
            ready=ready[i],
            phase="Failed" if failed[i] and not ready[i] else "Pending",
        )
        for i in range(existing)
    ]
    cluster = Cluster(controller, pods)
    cluster.step(ready_hashes=set())
    active = [p for p in cluster.pods if p.status.phase != "Failed"]
    assert len(active) == replicas == len(cluster.pods)
    second = cluster.step(ready_hashes=set())
    assert not second.has_pod_changes()


@settings(max_examples=60, deadline=None)
@given(
    replicas=st.integers(1, 8),
    surge=st.integers(0, 3),
    unavailable=st.integers(0, 3),
    seed=st.integers(0, 1000),
)
def test_rollout_keeps_availability_and_finishes(
    replicas: int, surge: int, unavailable: int, seed: int
) -> None:
    controller = rc(
        replicas=replicas, annotations={MAX_SURGE: str(surge), MAX_UNAVAILABLE: str(unavailable)}
    )
    cluster = Cluster(controller)
    cluster.counter = seed
    for _ in range(3):
        cluster.step(ready_hashes={template_hash(controller)})
    old_hash = template_hash(controller)
    _rolled(controller, "nginx:2")
    new_hash = template_hash(controller)
    max_surge, max_unavailable, _ = rollout_limits(controller)
    for _ in range(4 * replicas + 6):
        cluster.step(ready_hashes={old_hash, new_hash})
        assert cluster.ready() >= replicas - max_unavailable
        assert len(cluster.pods) <= replicas + max_surge
    assert (
        sorted(p.metadata.labels[TEMPLATE_HASH_LABEL] for p in cluster.pods)
        == [new_hash] * replicas
    )
