"""The sync loop from real git pushes into a real store (SQLite; one test on etcd):

- a cold sync creates every object with provenance, records Synced and history;
- a no-op sync writes nothing; a commit that changes no object moves the
  revision only; an incremental sync parses only the changed files;
- a revision with any invalid manifest (or a duplicate across files) writes
  nothing, keeps the last good revision, and records Failed with file:line;
- prune on deletion from git, never objects gitkube did not create;
- self-heal (and drift reported when it is off);
- a force-push gets a full resync; a deleted branch leaves the cluster as it
  is, records the failure once, and is retried with back-off until it is back;
- history of the last 10 syncs; suspend and resume;
- triggers coalesce; a lost compare re-reads and plans again; the after-sync
  hook runs and cannot break the loop; node manifests merge into registered nodes.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from gitkube.api import annotations as ann
from gitkube.api.keys import LEADER_KEY, SYNC_HISTORY_KEY, SYNC_STATE_KEY
from gitkube.api.objects import Node, NodeCondition, ObjectMeta, Pod, ReplicationController, Service
from gitkube.election import LeaderElection
from gitkube.errors import LeadershipLost
from gitkube.store.base import Compare, Op, Put, Store, TxnResult
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncResult, resume, suspend
from gitkube.sync.state import SyncState, history_from_json
from tests.fixtures.git import GitRemote
from tests.sync.conftest import make_loop, pod_yaml, rc_yaml, service_yaml


async def state_of(objects: ObjectStore) -> SyncState:
    kv = await objects.store.get(SYNC_STATE_KEY)
    assert kv is not None
    return SyncState.from_json(kv.value)


async def names(objects: ObjectStore, cls: type[Any] = Pod) -> list[str]:
    items, _ = await objects.list(cls)
    return sorted(o.name for o in items)


def seed(remote: GitRemote) -> str:
    remote.write_many(
        {
            "pods/a.yaml": pod_yaml("a"),
            "pods/b.yaml": pod_yaml("b") + "---\n" + pod_yaml("c"),
            "svc.yaml": service_yaml("web"),
            "rc.json": '{"apiVersion": "v1", "kind": "ReplicationController", "metadata": '
            '{"name": "web"}, "spec": {"replicas": 2, "selector": {"app": "web"}, "template": '
            '{"metadata": {"labels": {"app": "web"}}, "spec": {"containers": '
            '[{"name": "m", "image": "nginx:1"}]}}}}',
            "README.md": "not a manifest\n",
        }
    )
    return remote.commit_and_push("seed")


# ---------------------------------------------------------------- cold, no-op, incremental


async def test_a_cold_sync_creates_everything_with_provenance(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    commit = seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.ok
    assert (result.created, result.updated, result.deleted) == (5, 0, 0)
    assert result.full and result.files == 4 and result.parsed_files == 4
    assert await names(objects) == ["a", "b", "c"]
    c = await objects.get(Pod, "default", "c")
    assert c is not None
    assert c.metadata.annotations[ann.SOURCE_COMMIT] == commit
    assert c.metadata.annotations[ann.SOURCE_PATH] == "pods/b.yaml"
    assert c.metadata.annotations[ann.MANAGED_BY] == "gitkube"
    assert c.metadata.uid and c.metadata.generation == 1
    state = await state_of(objects)
    assert (state.phase, state.revision, state.attempted_revision) == ("Synced", commit, commit)
    assert len(state.objects) == 5 and state.repo == git_remote.url
    kv = await objects.store.get(SYNC_HISTORY_KEY)
    assert kv is not None
    [record] = history_from_json(kv.value)
    assert (record.outcome, record.created, record.revision) == ("Succeeded", 5, commit)


async def test_a_no_op_sync_writes_nothing(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    before = await objects.store.revision()
    for _ in range(3):
        result = await loop.reconcile_once()
        assert result.outcome == "Unchanged"
    assert await objects.store.revision() == before
    # a fresh process (new loop, empty caches) finds nothing to do either
    fresh = make_loop(objects, git_remote, tmp_path)
    result = await fresh.reconcile_once()
    assert result.outcome == "Unchanged" and result.unchanged == 5
    assert await objects.store.revision() == before


async def test_a_commit_that_changes_no_object_moves_only_the_revision(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    first = seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    git_remote.write("README.md", "edited\n")
    second = git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded"
    assert (result.created, result.updated, result.deleted, result.unchanged) == (0, 0, 0, 5)
    assert result.parsed_files == 0 and not result.full
    assert (await state_of(objects)).revision == second
    a = await objects.get(Pod, "default", "a")
    assert a is not None and a.metadata.annotations[ann.SOURCE_COMMIT] == first


async def test_an_incremental_sync_parses_only_changed_files(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    git_remote.write("pods/a.yaml", pod_yaml("a", image="nginx:2"))
    git_remote.write("pods/d.yaml", pod_yaml("d"))
    commit = git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert (result.parsed_files, result.full) == (2, False)
    assert (result.created, result.updated, result.deleted) == (1, 1, 0)
    a = await objects.get(Pod, "default", "a")
    assert a is not None and a.spec.containers[0].image == "nginx:2"
    assert a.metadata.annotations[ann.SOURCE_COMMIT] == commit
    assert a.metadata.generation == 2


# ---------------------------------------------------------------- whole or nothing


async def test_an_invalid_revision_changes_nothing_and_reports_every_error(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    good = seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    git_remote.write("pods/a.yaml", pod_yaml("a", image="nginx:2"))  # valid change
    git_remote.write("pods/d.yaml", pod_yaml("d"))  # valid new object
    git_remote.write("pods/bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec: {}\n")
    git_remote.write("broken.yaml", "a: [1, 2\n")
    git_remote.remove("svc.yaml")
    bad = git_remote.commit_and_push()
    before = await objects.store.revision()
    result = await loop.reconcile_once()
    assert result.outcome == "Failed" and not result.ok and not result.retryable
    files = {(e.file, e.line > 0) for e in result.errors}
    assert ("pods/bad.yaml", True) in files and ("broken.yaml", True) in files
    assert all(str(e).startswith(f"{e.file}:{e.line}:") for e in result.errors)
    # nothing written but the state
    assert await names(objects) == ["a", "b", "c"]
    assert await names(objects, Service) == ["web"]
    a = await objects.get(Pod, "default", "a")
    assert a is not None and a.spec.containers[0].image == "nginx:1"
    state = await state_of(objects)
    assert (state.phase, state.revision, state.attempted_revision) == ("Failed", good, bad)
    assert len(state.errors) == len(result.errors) >= 2
    assert await objects.store.revision() == before + 1  # the state write only
    # polling the same bad revision again is a no-op
    assert (await loop.reconcile_once()).outcome == "Unchanged"
    # fixing it applies the whole revision
    git_remote.remove("pods/bad.yaml")
    git_remote.remove("broken.yaml")
    fixed = git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await names(objects) == ["a", "b", "c", "d"]
    assert await names(objects, Service) == []
    state = await state_of(objects)
    assert (state.phase, state.revision, state.errors) == ("Synced", fixed, [])


async def test_an_object_declared_twice_fails_the_revision(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("one.yaml", pod_yaml("same"))
    git_remote.write("two.yaml", pod_yaml("same", image="redis:7"))
    git_remote.commit_and_push()
    result = await make_loop(objects, git_remote, tmp_path).reconcile_once()
    assert result.outcome == "Failed"
    [error] = result.errors
    assert error.file == "two.yaml" and "one.yaml:1" in error.message
    assert await names(objects) == []


# ---------------------------------------------------------------- prune and self-heal


async def test_prune_deletes_only_what_gitkube_created(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    await objects.create(Pod(metadata=ObjectMeta(name="by-hand")))
    git_remote.remove("pods/b.yaml")
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.deleted == 2
    assert await names(objects) == ["a", "by-hand"]


async def test_prune_off_keeps_objects_and_warns(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path, prune=False)
    await loop.reconcile_once()
    git_remote.remove("pods/b.yaml")
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.deleted == 0 and await names(objects) == ["a", "b", "c"]
    assert any("prune off" in w for w in result.warnings)


async def test_self_heal_puts_back_a_change_made_outside_git(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    web = await objects.get(ReplicationController, "default", "web")
    assert web is not None
    web.spec.replicas = 9
    web.status.replicas = 2  # a controller's write: status never counts
    await objects.update(web)
    await objects.store.delete("/gitkube/pods/default/a")
    result = await loop.reconcile_once()
    assert (result.outcome, result.created, result.updated) == ("Succeeded", 1, 1)
    assert result.plan is not None and result.plan.updates[0].fields == ("spec.replicas",)
    healed = await objects.get(ReplicationController, "default", "web")
    assert healed is not None and healed.spec.replicas == 2 and healed.status.replicas == 2
    assert await names(objects) == ["a", "b", "c"]


async def test_self_heal_off_records_out_of_sync(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path, self_heal=False)
    await loop.reconcile_once()
    web = await objects.get(ReplicationController, "default", "web")
    assert web is not None
    web.spec.replicas = 9
    await objects.update(web)
    result = await loop.reconcile_once()
    assert result.updated == 0 and any("self-heal off" in w for w in result.warnings)
    state = await state_of(objects)
    assert state.phase == "OutOfSync"
    assert [o.sync for o in state.objects if o.name == "web" and o.kind != "Service"] == [
        "OutOfSync"
    ]


# ---------------------------------------------------------------- history rewrites and failures


async def test_a_force_push_gets_a_full_resync(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    base = seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    git_remote.write("pods/e.yaml", pod_yaml("e"))
    git_remote.commit_and_push()
    await loop.reconcile_once()
    git_remote.reset_hard(base)
    git_remote.write("pods/f.yaml", pod_yaml("f"))
    rewritten = git_remote.commit()
    git_remote.push(force=True)
    result = await loop.reconcile_once()
    assert result.full and result.parsed_files == 5
    assert any("history rewritten" in w for w in result.warnings)
    assert await names(objects) == ["a", "b", "c", "f"]
    assert (await state_of(objects)).revision == rewritten


async def test_a_deleted_branch_leaves_the_cluster_and_is_retried_with_back_off(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    good = seed(git_remote)
    loop = make_loop(
        objects,
        git_remote,
        tmp_path,
        interval_seconds=30.0,
        backoff_base_seconds=0.05,
        backoff_cap_seconds=0.2,
    )
    await loop.reconcile_once()
    git_remote.delete_branch()
    before = await objects.list(Pod)
    result = await loop.reconcile_once()
    assert (result.outcome, result.retryable) == ("Failed", True)
    assert "branch 'main' not found" in result.errors[0].message
    assert [p.metadata.resource_version for p in (await objects.list(Pod))[0]] == [
        p.metadata.resource_version for p in before[0]
    ]
    state = await state_of(objects)
    assert (state.phase, state.revision) == ("Failed", good)

    # run() retries on its back-off (the poll interval is 30 s) until the branch is back
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    await asyncio.sleep(0.6)
    assert loop.passes >= 4
    git_remote.write("pods/g.yaml", pod_yaml("g"))
    back = git_remote.commit_and_push()
    for _ in range(100):
        if (await state_of(objects)).revision == back:
            break
        await asyncio.sleep(0.05)
    stop.set()
    await task
    state = await state_of(objects)
    assert (state.phase, state.revision) == ("Synced", back)
    kv = await objects.store.get(SYNC_HISTORY_KEY)
    assert kv is not None
    outcomes = [r.outcome for r in history_from_json(kv.value)]
    assert outcomes == ["Succeeded", "Failed", "Succeeded"]  # retried failures are one entry


async def test_history_keeps_the_last_ten_syncs(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    loop = make_loop(objects, git_remote, tmp_path)
    commits = []
    for i in range(12):
        git_remote.write("p.yaml", pod_yaml("p", image=f"nginx:{i}"))
        commits.append(git_remote.commit_and_push())
        assert (await loop.reconcile_once()).outcome == "Succeeded"
    kv = await objects.store.get(SYNC_HISTORY_KEY)
    assert kv is not None
    history = history_from_json(kv.value)
    assert [r.revision for r in history] == commits[-10:]
    assert all(r.finished_at and r.outcome == "Succeeded" for r in history)


async def test_suspend_and_resume(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    first = seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path)
    await loop.reconcile_once()
    await suspend(objects, reason="maintenance")
    git_remote.write("pods/h.yaml", pod_yaml("h"))
    second = git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert result.outcome == "Suspended" and "maintenance" in result.message
    assert (await loop.reconcile_once()).outcome == "Suspended"
    state = await state_of(objects)
    assert (state.phase, state.suspended, state.revision) == ("Suspended", True, first)
    assert "h" not in await names(objects)
    await resume(objects)
    result = await loop.reconcile_once()
    assert result.outcome == "Succeeded" and result.created == 1
    state = await state_of(objects)
    assert (state.phase, state.suspended, state.revision) == ("Synced", False, second)


# ---------------------------------------------------------------- triggers, conflicts, hooks


async def test_triggers_coalesce_into_one_pending_sync(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    loop = make_loop(objects, git_remote, tmp_path, interval_seconds=60.0)
    stop = asyncio.Event()
    task = asyncio.create_task(loop.run(stop))
    for _ in range(100):
        if loop.passes == 1 and await objects.store.get(SYNC_STATE_KEY):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.1)
    git_remote.write("pods/i.yaml", pod_yaml("i"))
    newest = git_remote.commit_and_push()
    for n in range(50):  # webhooks, a watcher and a poll all at once
        loop.trigger(newest if n % 2 else None)
    for _ in range(200):
        if (await state_of(objects)).revision == newest:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    stop.set()
    await task
    assert loop.triggers == 50
    assert loop.passes == 2
    assert "i" in await names(objects)


class InterleavedWriter:
    """A real store with another writer that changes an object right before
    the sync's first transaction (so its compare loses)."""

    def __init__(self, store: Store, objects: ObjectStore) -> None:
        self._store = store
        self._objects = objects
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)

    async def txn(
        self, compares: Sequence[Compare], success: Sequence[Op], failure: Sequence[Op] = ()
    ) -> TxnResult:
        if not self.fired and any(isinstance(op, Put) and "/pods/" in op.key for op in success):
            self.fired = True
            a = await self._objects.get(Pod, "default", "a")
            assert a is not None
            a.spec.containers[0].image = "someone:else"
            await self._objects.update(a)
        return await self._store.txn(compares, success, failure)


async def test_a_lost_compare_re_reads_and_plans_again(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    await make_loop(objects, git_remote, tmp_path).reconcile_once()
    git_remote.write("pods/a.yaml", pod_yaml("a", image="nginx:3"))
    git_remote.commit_and_push()
    wrapped = InterleavedWriter(objects.store, objects)
    racing = ObjectStore(wrapped)  # type: ignore[arg-type]
    loop = make_loop(racing, git_remote, tmp_path)
    result = await loop.reconcile_once()
    assert wrapped.fired and result.outcome == "Succeeded"
    a = await objects.get(Pod, "default", "a")
    assert a is not None and a.spec.containers[0].image == "nginx:3"


async def test_a_deposed_leaders_sync_writes_nothing(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    election = LeaderElection(objects.store, "m1", ttl=5)
    assert await election._campaign()
    loop = make_loop(objects, git_remote, tmp_path)
    loop.fence = election.fence
    assert (await loop.reconcile_once()).outcome == "Succeeded"  # leading: it lands
    # the term ends behind this leader's back (its lease lapsed; another won)
    await objects.store.delete(LEADER_KEY)
    assert await LeaderElection(objects.store, "m2", ttl=5)._campaign()
    git_remote.write("pods/a.yaml", pod_yaml("a", image="nginx:9"))
    git_remote.commit_and_push()
    state_before = await objects.store.get(SYNC_STATE_KEY)
    with pytest.raises(LeadershipLost, match="leadership was lost"):
        await loop.reconcile_once()
    a = await objects.get(Pod, "default", "a")
    assert a is not None and a.spec.containers[0].image != "nginx:9"
    # not even the sync state is written by a leader that no longer leads
    assert await objects.store.get(SYNC_STATE_KEY) == state_before


async def test_the_after_sync_hook_runs_and_cannot_break_the_loop(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    seen: list[SyncResult] = []

    async def hook(result: SyncResult) -> None:
        seen.append(result)
        raise RuntimeError("write-back exploded")

    loop = make_loop(objects, git_remote, tmp_path)
    loop.after_sync = hook
    assert (await loop.reconcile_once()).outcome == "Succeeded"
    assert (await loop.reconcile_once()).outcome == "Unchanged"
    assert [r.outcome for r in seen] == ["Succeeded", "Unchanged"]


async def test_a_node_manifest_merges_into_the_registered_node(
    objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    registered = Node(metadata=ObjectMeta(name="n1", labels={"hostname": "n1"}))
    registered.status.conditions = [NodeCondition(type="Ready", status="True")]
    registered.status.capacity = {"cpu": "2"}
    await objects.create(registered)
    git_remote.write(
        "nodes.yaml",
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: n1\n  labels:\n    disk: ssd\n"
        "spec:\n  unschedulable: true\n",
    )
    git_remote.commit_and_push()
    loop = make_loop(objects, git_remote, tmp_path)
    assert (await loop.reconcile_once()).updated == 1
    node = await objects.get(Node, "", "n1")
    assert node is not None
    assert node.metadata.labels == {"hostname": "n1", "disk": "ssd"}
    assert node.spec.unschedulable and node.status.capacity == {"cpu": "2"}
    assert node.status.conditions[0].status == "True"
    git_remote.remove("nodes.yaml")
    git_remote.commit_and_push()
    await loop.reconcile_once()
    assert await objects.get(Node, "", "n1") is not None  # never pruned


# ---------------------------------------------------------------- etcd


@pytest.fixture
async def etcd_loop_objects(etcd_objects: ObjectStore) -> AsyncIterator[ObjectStore]:
    yield etcd_objects


@pytest.mark.etcd
async def test_sync_into_etcd_in_small_batches(
    etcd_loop_objects: ObjectStore, git_remote: GitRemote, tmp_path: Path
) -> None:
    objects = etcd_loop_objects
    files = {f"pods/p{i:02}.yaml": pod_yaml(f"p{i:02}") for i in range(25)}
    files["rc.yaml"] = rc_yaml("web")
    git_remote.write_many(files)
    git_remote.commit_and_push()
    loop = make_loop(objects, git_remote, tmp_path, batch_size=4)
    result = await loop.reconcile_once()
    assert (result.outcome, result.created) == ("Succeeded", 26)
    assert len(await names(objects)) == 25
    assert (await loop.reconcile_once()).outcome == "Unchanged"
    for i in range(10):
        git_remote.remove(f"pods/p{i:02}.yaml")
    git_remote.write("pods/p20.yaml", pod_yaml("p20", image="nginx:9"))
    git_remote.commit_and_push()
    result = await loop.reconcile_once()
    assert (result.deleted, result.updated, result.parsed_files) == (10, 1, 1)
    assert len(await names(objects)) == 15
    assert (await state_of(objects)).phase == "Synced"
