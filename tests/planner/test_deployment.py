"""The Deployment controller's pure core, and the ReplicaSet core it drives.

- the new ReplicaSet: ``<deployment>-<pod-template-hash>``, the hash label on
  its labels, selector and template, revision 1, owned by the Deployment;
- the hash: FNV-32a, Kubernetes' safe encoding, collisionCount;
- maxSurge rounds up, maxUnavailable down, both 0 means one unavailable;
- a rolling update runs to completion; a failing template stops within the
  maxUnavailable budget, old pods keep serving, and the Progressing condition
  turns False with ProgressDeadlineExceeded after the deadline;
- Recreate waits for the old pods to be gone before it creates the new ReplicaSet;
- paused Deployments do not roll; a rollback to an old template reuses its
  ReplicaSet with a new revision; revisionHistoryLimit; minReadySeconds;
  scaling; hash collisions; ReplicaFailure copied from a ReplicaSet;
- properties: during a rollout of healthy pods, available pods never drop
  below replicas - maxUnavailable and pods never exceed replicas + maxSurge;
  every rollout completes; planning again at rest changes nothing.
"""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from gitkube.api.annotations import SOURCE_COMMIT
from gitkube.api.objects import (
    Container,
    Deployment,
    DeploymentSpec,
    DeploymentStrategy,
    LabelSelector,
    LabelSelectorRequirement,
    ObjectMeta,
    Pod,
    PodCondition,
    PodSpec,
    PodTemplateSpec,
    ReplicaSet,
    ReplicaSetCondition,
    ReplicaSetSpec,
    RollingUpdateDeployment,
)
from gitkube.api.rollout import rollout_state
from gitkube.planner.deployment import (
    DESIRED_REPLICAS,
    NEW_RS_AVAILABLE,
    POD_TEMPLATE_HASH,
    REVISION,
    REVISION_COMMIT,
    REVISION_HISTORY,
    TIMED_OUT,
    DeploymentPlan,
    compute_hash,
    fnv32a,
    plan_deployment,
    rollout_limits,
    safe_encode,
)
from gitkube.planner.replication import (
    REPLICA_FAILURE,
    format_time,
    plan_replicaset,
)
from tests.planner.builders import node

T0 = 1_700_000_000.0
NODES = [node("n1")]


def deployment(
    name: str = "web",
    *,
    replicas: int | None = 3,
    image: str = "app:1",
    surge: int | str | None = None,
    unavailable: int | str | None = None,
    strategy: str = "RollingUpdate",
    history: int | None = None,
    deadline: int | None = None,
    min_ready: int = 0,
) -> Deployment:
    rolling = (
        RollingUpdateDeployment(max_surge=surge, max_unavailable=unavailable)
        if strategy == "RollingUpdate" and (surge is not None or unavailable is not None)
        else None
    )
    return Deployment(
        metadata=ObjectMeta(
            name=name,
            uid=f"uid-{name}",
            generation=1,
            annotations={SOURCE_COMMIT: "c0ffee1"},
        ),
        spec=DeploymentSpec(
            replicas=replicas,
            selector=LabelSelector(match_labels={"app": name}),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": name}),
                spec=PodSpec(containers=[Container(name="app", image=image)]),
            ),
            strategy=DeploymentStrategy(type=strategy, rolling_update=rolling),
            revision_history_limit=history,
            progress_deadline_seconds=deadline,
            min_ready_seconds=min_ready,
        ),
    )


class Cluster:
    """The Deployment core, the ReplicaSet core and a kubelet, in memory.

    ``step`` plans the Deployment, applies the plan, then lets every
    ReplicaSet create and delete its pods; pods of a healthy image turn Ready
    one step after they were created."""

    def __init__(self, d: Deployment, *, bad_images: set[str] | None = None) -> None:
        self.d = d
        self.rs: dict[str, ReplicaSet] = {}
        self.pods: dict[str, Pod] = {}
        self.now = T0
        self.bad_images = bad_images or set()
        self.counter = 0
        self.rand = random.Random(0)

    def set_template(self, image: str, commit: str = "") -> None:
        self.d.spec.template.spec.containers[0].image = image
        self.d.metadata.generation += 1
        if commit:
            self.d.metadata.annotations[SOURCE_COMMIT] = commit

    def plan(self) -> DeploymentPlan:
        return plan_deployment(self.d, list(self.rs.values()), list(self.pods.values()), self.now)

    def step(self, seconds: float = 1.0) -> DeploymentPlan:
        plan = self.plan()
        for rs in plan.creates:
            rs = rs.copy()
            self.counter += 1
            rs.metadata.uid = f"rs-uid-{self.counter}"
            rs.metadata.creation_timestamp = format_time(self.now + self.counter * 1e-3)
            rs.metadata.generation = 1
            self.rs[rs.name] = rs
        for rs in plan.updates:
            self.rs[rs.name] = rs.copy()
        for rs in plan.deletes:
            del self.rs[rs.name]
        self.d.metadata.annotations = dict(plan.annotations)
        self.d.status = plan.status
        for rs in sorted(self.rs.values(), key=lambda r: r.name):
            rs_plan = plan_replicaset(
                rs, list(self.pods.values()), NODES, now=self.now, rand=self.rand
            )
            for delete in rs_plan.deletes:
                self.pods.pop(delete.pod.name, None)
            for pod in rs_plan.creates:
                pod.metadata.uid = f"pod-uid-{pod.name}"
                pod.metadata.creation_timestamp = format_time(self.now)
                pod.spec.node_name = "n1"
                pod.status.phase = "Running"
                self.pods[pod.name] = pod
            rs.status = rs_plan.status
        self.now += seconds
        for pod in self.pods.values():
            if pod.spec.containers[0].image not in self.bad_images and not pod.is_ready():
                pod.status.conditions = [
                    PodCondition(
                        type="Ready", status="True", last_transition_time=format_time(self.now)
                    )
                ]
        return plan

    def run(self, steps: int = 60) -> None:
        for _ in range(steps):
            self.step()

    def available(self) -> int:
        return sum(1 for p in self.pods.values() if p.is_ready())

    def pods_of(self, image: str) -> list[Pod]:
        return [p for p in self.pods.values() if p.spec.containers[0].image == image]

    def condition(self, type_: str) -> tuple[str, str]:
        for c in self.d.status.conditions:
            if c.type == type_:
                return c.status, c.reason
        return "", ""

    def complete(self) -> bool:
        return rollout_state(self.d).done


# ---------------------------------------------------------------- hashing, limits


class TestHash:
    def test_fnv32a_matches_the_published_test_vectors(self) -> None:
        assert fnv32a(b"") == 0x811C9DC5
        assert fnv32a(b"a") == 0xE40C292C
        assert fnv32a(b"foobar") == 0xBF9CF968

    def test_safe_encoding_is_kubernetes_alphabet_by_byte(self) -> None:
        # rand.SafeEncodeString: "0".."9" are bytes 48..57, mod 27 into the alphabet
        assert safe_encode("0123456789") == "456789bcdf"

    def test_hash_is_stable_and_moves_with_the_template_and_collision_count(self) -> None:
        d = deployment()
        h = compute_hash(d.spec.template)
        assert h == compute_hash(d.spec.template.__class__(**vars(d.spec.template)))
        assert set(h) <= set("bcdfghjklmnpqrstvwxz2456789")
        assert compute_hash(d.spec.template, 1) != h
        assert compute_hash(deployment(image="app:2").spec.template) != h


class TestLimits:
    def test_defaults_are_25_percent_surge_up_unavailable_down(self) -> None:
        assert rollout_limits(deployment(replicas=10)) == (3, 2)
        assert rollout_limits(deployment(replicas=3)) == (1, 0)

    def test_absolute_and_percent(self) -> None:
        assert rollout_limits(deployment(replicas=10, surge=2, unavailable="50%")) == (2, 5)
        assert rollout_limits(deployment(replicas=5, surge="10%", unavailable="10%")) == (1, 0)

    def test_both_zero_means_one_unavailable(self) -> None:
        assert rollout_limits(deployment(replicas=4, surge=0, unavailable="10%")) == (0, 1)

    def test_recreate_has_no_surge(self) -> None:
        assert rollout_limits(deployment(strategy="Recreate")) == (0, 0)


# ---------------------------------------------------------------- creation


class TestNewReplicaSet:
    def test_named_after_the_hash_labelled_owned_revision_one(self) -> None:
        d = deployment(replicas=3)
        plan = plan_deployment(d, [], [], T0)
        (rs,) = plan.creates
        h = compute_hash(d.spec.template)
        assert rs.name == f"web-{h}"
        assert rs.metadata.labels == {"app": "web", POD_TEMPLATE_HASH: h}
        assert rs.spec.selector.match_labels == {"app": "web", POD_TEMPLATE_HASH: h}
        assert rs.spec.template.metadata.labels[POD_TEMPLATE_HASH] == h
        assert rs.spec.replicas == 3
        assert rs.metadata.annotations[REVISION] == "1"
        assert rs.metadata.annotations[REVISION_COMMIT] == "c0ffee1"
        ref = rs.metadata.controller_ref()
        assert ref is not None and (ref.kind, ref.name, ref.uid) == ("Deployment", "web", "uid-web")
        assert plan.annotations[REVISION] == "1"
        assert ("Progressing", "True", "NewReplicaSetCreated") in [
            (c.type, c.status, c.reason) for c in plan.status.conditions
        ]
        # gitkube's provenance annotations stay on the Deployment
        assert not any(k.startswith("gitkube.io/managed") for k in rs.metadata.annotations)

    def test_rs_pods_carry_the_hash_and_are_owned_by_the_rs(self) -> None:
        c = Cluster(deployment(replicas=2))
        c.step()
        (rs,) = c.rs.values()
        assert len(c.pods) == 2
        for p in c.pods.values():
            assert p.name.startswith(rs.name + "-")
            assert p.metadata.labels[POD_TEMPLATE_HASH] == rs.metadata.labels[POD_TEMPLATE_HASH]
            ref = p.metadata.controller_ref()
            assert ref is not None and (ref.kind, ref.uid) == ("ReplicaSet", rs.metadata.uid)

    def test_a_name_taken_by_another_template_bumps_the_collision_count(self) -> None:
        d = deployment()
        squatter = ReplicaSet(
            metadata=ObjectMeta(name=f"web-{compute_hash(d.spec.template)}", labels={"x": "y"}),
            spec=ReplicaSetSpec(selector=LabelSelector(match_labels={"x": "y"})),
        )
        plan = plan_deployment(d, [squatter], [], T0)
        assert plan.creates == [] and plan.status.collision_count == 1
        d.status = plan.status
        (rs,) = plan_deployment(d, [squatter], [], T0).creates
        assert rs.name == f"web-{compute_hash(d.spec.template, 1)}"


# ---------------------------------------------------------------- rolling update


class TestRollingUpdate:
    def test_rollout_completes_and_reports_it(self) -> None:
        c = Cluster(deployment(replicas=4))
        c.run(10)
        assert c.complete() and c.available() == 4
        first = next(iter(c.rs.values())).name
        c.set_template("app:2", commit="beef002")
        c.run(30)
        assert c.complete()
        assert {p.spec.containers[0].image for p in c.pods.values()} == {"app:2"}
        assert c.rs[first].spec.replicas == 0
        new = next(rs for rs in c.rs.values() if rs.name != first)
        assert new.metadata.annotations[REVISION] == "2"
        assert new.metadata.annotations[REVISION_COMMIT] == "beef002"
        assert c.d.metadata.annotations[REVISION] == "2"
        assert c.condition("Available") == ("True", "MinimumReplicasAvailable")
        assert c.condition("Progressing") == ("True", NEW_RS_AVAILABLE)
        s = c.d.status
        assert (s.replicas, s.updated_replicas, s.ready_replicas, s.available_replicas) == (
            4,
            4,
            4,
            4,
        )
        assert s.unavailable_replicas == 0 and s.observed_generation == c.d.metadata.generation

    def test_a_failing_template_stops_and_old_pods_keep_serving(self) -> None:
        c = Cluster(deployment(replicas=4, deadline=30), bad_images={"bad:1"})
        c.run(10)
        c.set_template("bad:1")
        for _ in range(25):
            c.step()
            assert c.available() >= 3  # replicas - maxUnavailable (25% of 4)
        assert len(c.pods_of("app:1")) == 3 and len(c.pods_of("bad:1")) == 2
        assert rollout_state(c.d).failed is False
        c.run(20)
        assert c.condition("Progressing") == ("False", TIMED_OUT)
        state = rollout_state(c.d)
        assert state.failed and "exceeded its progress deadline" in state.message
        assert len(c.pods_of("app:1")) == 3  # still serving

    def test_rollback_reuses_the_old_replicaset_with_a_new_revision(self) -> None:
        c = Cluster(deployment(replicas=2))
        c.run(5)
        first = next(iter(c.rs))
        c.set_template("app:2")
        c.run(20)
        c.set_template("app:1", commit="r011bac")
        c.run(20)
        assert c.complete() and len(c.rs) == 2
        assert c.rs[first].spec.replicas == 2
        ann = c.rs[first].metadata.annotations
        assert ann[REVISION] == "3" and ann[REVISION_HISTORY] == "1"
        assert ann[REVISION_COMMIT] == "r011bac"
        assert c.d.metadata.annotations[REVISION] == "3"

    def test_revision_history_limit_deletes_the_oldest_empty_replicasets(self) -> None:
        c = Cluster(deployment(replicas=1, history=2))
        c.run(3)
        for i in range(2, 7):
            c.set_template(f"app:{i}")
            c.run(10)
        assert c.complete()
        revisions = sorted(int(rs.metadata.annotations[REVISION]) for rs in c.rs.values())
        assert revisions == [4, 5, 6]

    def test_min_ready_seconds_holds_availability_back(self) -> None:
        c = Cluster(deployment(replicas=2, min_ready=10))
        c.run(3)
        assert c.d.status.ready_replicas == 2 and c.d.status.available_replicas == 0
        assert not c.complete()
        c.run(15)
        assert c.complete()

    def test_paused_does_not_roll_and_resume_does(self) -> None:
        c = Cluster(deployment(replicas=2))
        c.run(5)
        c.d.spec.paused = True
        c.set_template("app:2")
        c.run(5)
        assert len(c.rs) == 1 and not c.pods_of("app:2")
        assert c.condition("Progressing") == ("Unknown", "DeploymentPaused")
        c.d.spec.paused = False
        c.run(20)
        assert c.complete() and len(c.pods_of("app:2")) == 2

    def test_scaling_a_complete_deployment(self) -> None:
        c = Cluster(deployment(replicas=2))
        c.run(5)
        c.d.spec.replicas = 5
        c.d.metadata.generation += 1
        c.run(5)
        assert c.complete() and c.available() == 5 and len(c.rs) == 1
        (rs,) = c.rs.values()
        assert rs.metadata.annotations[DESIRED_REPLICAS] == "5"

    def test_scaling_during_a_rollout_is_proportional_and_completes(self) -> None:
        c = Cluster(deployment(replicas=10), bad_images={"slow:1"})
        c.run(5)
        c.set_template("slow:1")
        c.run(3)
        c.d.spec.replicas = 20
        c.d.metadata.generation += 1
        c.step()
        sizes = sorted(rs.spec.replicas or 0 for rs in c.rs.values())
        assert sum(sizes) <= 20 + 5 and sizes[0] > 0
        c.bad_images.clear()
        c.run(40)
        assert c.complete() and len(c.pods_of("slow:1")) == 20

    def test_replica_failure_is_copied_from_the_replicaset(self) -> None:
        c = Cluster(deployment(replicas=1))
        c.step()
        (rs,) = c.rs.values()
        rs.status.conditions = [
            ReplicaSetCondition(
                type=REPLICA_FAILURE, status="True", reason="FailedCreate", message="quota"
            )
        ]
        plan = c.plan()
        failure = next(x for x in plan.status.conditions if x.type == REPLICA_FAILURE)
        assert failure.reason == "FailedCreate" and "quota" in failure.message

    def test_planning_again_at_rest_changes_nothing(self) -> None:
        c = Cluster(deployment(replicas=3))
        c.run(10)
        plan = c.plan()
        assert not plan, plan

    def test_orphan_replicasets_are_adopted_and_others_left_alone(self) -> None:
        d = deployment()
        h = compute_hash(d.spec.template)
        orphan = ReplicaSet(
            metadata=ObjectMeta(name=f"web-{h}", labels={"app": "web", POD_TEMPLATE_HASH: h}),
            spec=ReplicaSetSpec(
                replicas=3,
                selector=LabelSelector(match_labels={"app": "web", POD_TEMPLATE_HASH: h}),
                template=d.spec.template,
            ),
        )
        other = ReplicaSet(metadata=ObjectMeta(name="db", labels={"app": "db"}))
        plan = plan_deployment(d, [orphan, other], [], T0)
        assert plan.creates == []
        (adopted,) = plan.updates
        assert adopted.name == orphan.name
        ref = adopted.metadata.controller_ref()
        assert ref is not None and ref.uid == "uid-web"


class TestRecreate:
    def test_old_pods_are_gone_before_the_new_replicaset_exists(self) -> None:
        c = Cluster(deployment(replicas=3, strategy="Recreate"))
        c.run(5)
        c.set_template("app:2")
        plan = c.step()
        assert plan.creates == [] and all(rs.spec.replicas == 0 for rs in plan.updates)
        assert not c.pods_of("app:1") and not c.pods_of("app:2")
        for _ in range(10):
            c.step()
            assert not (c.pods_of("app:1") and c.pods_of("app:2"))
        assert c.complete() and len(c.pods_of("app:2")) == 3

    def test_waits_while_an_old_pod_is_still_terminating(self) -> None:
        c = Cluster(deployment(replicas=1, strategy="Recreate"))
        c.run(3)
        (old_pod,) = c.pods.values()
        c.set_template("app:2")
        plan = c.plan()
        # the old RS scaled to 0, but its pod is still there (terminating)
        c.rs = {rs.name: rs for rs in plan.updates}
        old_pod.metadata.deletion_timestamp = format_time(c.now)
        assert c.plan().creates == []
        c.pods.clear()
        assert len(c.plan().creates) == 1


class TestRolloutState:
    def test_waiting_for_the_spec_to_be_observed(self) -> None:
        d = deployment()
        d.metadata.generation = 2
        assert "spec update to be observed" in rollout_state(d).message


# ---------------------------------------------------------------- properties

limits = st.one_of(st.integers(0, 4), st.sampled_from(["0%", "10%", "25%", "50%", "100%"]))


@settings(max_examples=60, deadline=None)
@given(replicas=st.integers(1, 12), surge=limits, unavailable=limits)
def test_rollouts_of_healthy_pods_keep_availability_and_bound_pods(
    replicas: int, surge: int | str, unavailable: int | str
) -> None:
    d = deployment(replicas=replicas, surge=surge, unavailable=unavailable)
    max_surge, max_unavailable = rollout_limits(d)
    c = Cluster(d)
    c.run(8)
    assert c.complete()
    c.set_template("app:2")
    for _ in range(4 * replicas + 10):
        c.step()
        assert c.available() >= replicas - max_unavailable
        assert len(c.pods) <= replicas + max_surge
        assert sum(rs.spec.replicas or 0 for rs in c.rs.values()) <= replicas + max_surge
        if c.complete():
            break
    assert c.complete() and len(c.pods_of("app:2")) == replicas
    assert not c.plan()


@settings(max_examples=40, deadline=None)
@given(replicas=st.integers(1, 8), surge=limits, unavailable=limits)
def test_a_failing_template_never_takes_more_than_max_unavailable(
    replicas: int, surge: int | str, unavailable: int | str
) -> None:
    d = deployment(replicas=replicas, surge=surge, unavailable=unavailable)
    _, max_unavailable = rollout_limits(d)
    c = Cluster(d, bad_images={"bad:1"})
    c.run(8)
    c.set_template("bad:1")
    for _ in range(30):
        c.step()
        assert c.available() >= replicas - max_unavailable


# ---------------------------------------------------------------- the ReplicaSet core


def replicaset(replicas: int = 2) -> ReplicaSet:
    return ReplicaSet(
        metadata=ObjectMeta(name="web-abc", uid="rs-1", generation=3),
        spec=ReplicaSetSpec(
            replicas=replicas,
            selector=LabelSelector(
                match_labels={"app": "web"},
                match_expressions=[
                    LabelSelectorRequirement(key="tier", operator="In", values=["front"])
                ],
            ),
            template=PodTemplateSpec(
                metadata=ObjectMeta(labels={"app": "web", "tier": "front"}),
                spec=PodSpec(containers=[Container(name="app", image="app:1")]),
            ),
        ),
    )


class TestReplicaSetCore:
    def test_creates_pods_from_its_template_owned_by_it(self) -> None:
        plan = plan_replicaset(replicaset(2), [], NODES, now=T0, rand=random.Random(1))
        assert len(plan.creates) == 2
        for p in plan.creates:
            assert p.name.startswith("web-abc-")
            assert p.metadata.labels == {"app": "web", "tier": "front"}
            ref = p.metadata.controller_ref()
            assert ref is not None and (ref.kind, ref.uid) == ("ReplicaSet", "rs-1")
        assert plan.status.observed_generation == 3

    def test_adopts_by_set_based_selector_and_scales_down_least_useful_first(self) -> None:
        rs = replicaset(1)
        ready = Pod(metadata=ObjectMeta(name="a", labels={"app": "web", "tier": "front"}))
        ready.spec.node_name = "n1"
        ready.status.phase = "Running"
        ready.status.conditions = [PodCondition(type="Ready", status="True")]
        pending = Pod(metadata=ObjectMeta(name="b", labels={"app": "web", "tier": "front"}))
        stranger = Pod(metadata=ObjectMeta(name="c", labels={"app": "web", "tier": "back"}))
        plan = plan_replicaset(rs, [ready, pending, stranger], NODES, now=T0, rand=random.Random(1))
        assert {p.name for p in plan.adoptions} == {"a", "b"}
        assert [d.pod.name for d in plan.deletes] == ["b"]
        assert plan.status.replicas == 2 and plan.status.ready_replicas == 1

    def test_a_create_failure_is_a_replica_failure_condition(self) -> None:
        plan = plan_replicaset(
            replicaset(1), [], NODES, now=T0, rand=random.Random(1), create_failure="no room"
        )
        (cond,) = plan.status.conditions
        assert (cond.type, cond.reason) == (REPLICA_FAILURE, "FailedCreate")
        assert cond.message == "no room"


def test_a_new_spec_after_a_timed_out_rollout_restarts_the_deadline() -> None:
    c = Cluster(
        deployment(replicas=2, surge="100%", unavailable=0, deadline=5), bad_images={"bad:1"}
    )
    c.run(5)
    first = next(iter(c.rs))
    c.set_template("bad:1")
    c.run(15)
    assert c.condition("Progressing") == ("False", TIMED_OUT)
    # back to the old template: its ReplicaSet is found, not created, and no
    # count moves in the first pass (2 updated pods before and after)
    c.set_template("app:1")
    c.step()
    assert c.condition("Progressing") == ("True", "ReplicaSetUpdated")
    c.run(10)
    assert c.complete() and c.rs[first].spec.replicas == 2
