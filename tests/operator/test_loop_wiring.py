"""How the operator wires the sync, the agents and the proxy onto the control
kit (a real SQLite store and git remote; nothing is started):

- `gitkube run`: the sync loop, every local agent and the proxy read the
  operator's one cache; nothing is fenced;
- `gitkube master`: the sync's writes carry the leader's fence (the sync
  state too: a deposed master's state write fails with LeadershipLost and
  writes nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.api.keys import SYNC_STATE_KEY
from gitkube.control import Encoded
from gitkube.election import LeaderElection
from gitkube.errors import LeadershipLost
from gitkube.operator import Operator
from tests.fixtures.git import GitRemote
from tests.operator.helpers import operator_settings


async def test_run_role_sync_agents_and_proxy_share_the_cache(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    op = Operator(operator_settings(git_remote.url, tmp_path / "state", nodes=2), role="run")
    await op._build()
    assert op.store is not None and op.cache is not None
    try:
        tasks = dict(await op._local_agents())
        assert sorted(tasks) == ["agent local-1", "agent local-2", "proxy"]
        assert len(op.agents) == 2
        for agent in op.agents:
            assert agent.cache is op.cache
        proxy = getattr(tasks["proxy"], "proxy", None)
        assert proxy is not None and proxy.cache is op.cache
        assert op.sync.cache is op.cache
        assert op.sync.fence is None
    finally:
        for runtime in op._runtimes:
            await runtime.close()
        await op.sync.source.close()
        await op.store.close()


async def test_master_sync_writes_carry_the_leaders_fence(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    op = Operator(operator_settings(git_remote.url, tmp_path / "state"), role="master")
    await op._build()
    assert op.store is not None
    try:
        assert op.sync.cache is op.cache
        op.election = LeaderElection(op.store, "m1", ttl=5)
        assert await op.election._campaign()
        op.sync.fence = op.election.fence  # what the operator does when it leads
        assert op.sync.applier.fence is not None
        assert op.sync.applier.fence() == op.election.fence()
        await op.sync.applier.apply_encoded([Encoded(SYNC_STATE_KEY, b"{}")])
        assert await op.store.get(SYNC_STATE_KEY) is not None

        # deposed: the next write of the sync (even its state) lands nowhere
        await op.store.revoke_lease(op.election.lease)
        assert await LeaderElection(op.store, "m2", ttl=5)._campaign()
        revision = await op.store.revision()
        with pytest.raises(LeadershipLost):
            await op.sync.applier.apply_encoded([Encoded(SYNC_STATE_KEY, b'{"x": 1}')])
        assert await op.store.revision() == revision
    finally:
        await op.sync.source.close()
        await op.store.close()
