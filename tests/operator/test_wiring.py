"""How the operator wires the controllers onto the control kit.

- one cache per process: every controller reads the operator's cache;
- in the master role every controller writes through an applier that
  carries the leader's fence (and in the run role, none is needed);
- a master whose term ended behind its back: its controllers' writes fail
  with LeadershipLost and nothing lands (a real store, a real election).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gitkube.api.keys import LEADER_KEY
from gitkube.api.objects import Pod
from gitkube.election import LeaderElection
from gitkube.errors import LeadershipLost
from gitkube.operator import Operator
from tests.fixtures.git import GitRemote
from tests.operator.helpers import operator_settings
from tests.planner.builders import node, pod


def loops_of(op: Operator) -> dict[str, Any]:
    return {name: getattr(fn, "__self__", None) for name, fn in op._controllers()}


async def test_master_controllers_share_one_cache_and_carry_the_fence(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    op = Operator(operator_settings(git_remote.url, tmp_path / "state"), role="master")
    await op._build()
    assert op.store is not None and op.objects is not None
    try:
        op.election = LeaderElection(op.store, "m1", ttl=5)
        assert await op.election._campaign()
        loops = loops_of(op)
        controllers = {k: v for k, v in loops.items() if k != "sync"}
        assert set(controllers) == {
            "scheduler",
            "replication",
            "node-lifecycle",
            "endpoints",
            "load-balancers",
        }
        for name, loop in controllers.items():
            assert loop.cache is op.cache, name
            assert loop.applier.fence is not None, name
            assert loop.applier.fence() == op.election.fence(), name

        # the term ends behind this master's back: its scheduler binds nothing
        await op.objects.create(node("n1"))
        await op.objects.create(pod("waiting"))
        await op.store.revoke_lease(op.election.lease)
        assert await LeaderElection(op.store, "m2", ttl=5)._campaign()
        revision = await op.store.revision()
        try:
            await controllers["scheduler"].reconcile_once()
            raise AssertionError("a deposed master's scheduler wrote")
        except LeadershipLost:
            pass
        waiting = await op.objects.get(Pod, "default", "waiting")
        assert waiting is not None and not waiting.spec.node_name
        assert await op.store.revision() == revision
        held = await op.store.get(LEADER_KEY)
        assert held is not None and held.value == b"m2"
    finally:
        await op.sync.source.close()
        await op.store.close()


async def test_run_role_controllers_share_one_cache_without_a_fence(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    op = Operator(operator_settings(git_remote.url, tmp_path / "state"), role="run")
    await op._build()
    assert op.store is not None
    try:
        for name, loop in loops_of(op).items():
            if name != "sync":
                assert loop.cache is op.cache and loop.applier.fence is None, name
    finally:
        await op.sync.source.close()
        await op.store.close()
