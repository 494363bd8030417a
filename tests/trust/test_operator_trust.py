"""Trust in the running operator (in-process, real git, SQLite store):

- a revision refused by signature verification counts in
  ``gitkube_sync_refused_revisions_total`` and is in /api/v1/status;
- webhook delivery IDs survive an operator restart (kept in the store): the
  same delivery after the restart is a 200 "duplicate" and queues nothing.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.fixtures.git import GitRemote
from tests.operator.helpers import (
    eventually,
    get_json,
    github_push,
    kill_processes_under,
    operator_settings,
    start_operator,
)
from tests.sync.conftest import pod_yaml
from tests.trust.keys import Keys, make_keys, stop_agents


@pytest.fixture
async def state(tmp_path: Path) -> AsyncIterator[Path]:
    path = tmp_path / "state"
    yield path
    kill_processes_under(path)


async def metric(base: str, name: str, session: aiohttp.ClientSession) -> float:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return -1.0


async def test_refusals_are_counted_and_shown(
    git_remote: GitRemote, state: Path, tmp_path: Path
) -> None:
    keys: Keys = make_keys(tmp_path / "keys")
    signers = keys.allowed_signers(tmp_path / "allowed", {"bob@example.com": "bob"})
    git_remote.write("a.yaml", pod_yaml("a"))
    commit = keys.commit(git_remote, "unsigned")
    git_remote.push()
    settings = operator_settings(
        git_remote.url,
        state,
        nodes=0,
        writeback=False,
        watch=False,
        verify_commits="head",
        allowed_signers=str(signers),
    )
    running = await start_operator(settings)
    try:
        async with aiohttp.ClientSession() as session:

            async def refused() -> float:
                n = await metric(running.base, "gitkube_sync_refused_revisions_total", session)
                return n if n >= 1 else 0

            assert await eventually(refused, what="a counted refusal") == 1.0
            status = await get_json(running.base, "/api/v1/status", session=session)
            assert status["sync"]["phase"] == "Failed"
            assert status["sync"]["refusal"]["commit"] == commit
            assert status["sync"]["refusal"]["signer"] == "unsigned"
    finally:
        await running.shutdown()
        stop_agents(keys.gnupg)


async def test_delivery_ids_survive_a_restart(git_remote: GitRemote, state: Path) -> None:
    git_remote.write("a.yaml", pod_yaml("a"))
    revision = git_remote.commit_and_push("a")
    settings = operator_settings(git_remote.url, state, nodes=0, writeback=False, watch=False)
    body, headers = github_push("main", revision)
    headers["X-GitHub-Delivery"] = "72d3162e-cc78-11e3-81ab-4c9367dc0958"

    async def deliver(base: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.post(base + "/hooks/github", data=io.BytesIO(body), headers=headers) as r,
        ):
            return r.status, (await r.json())["outcome"]

    running = await start_operator(settings)
    try:
        assert await deliver(running.base) == (202, "accepted")
        assert await deliver(running.base) == (200, "duplicate")
        http = running.operator.http
        assert http is not None

        async def persisted() -> bool:
            assert running.operator.store is not None
            from gitkube.operator import SEEN_DELIVERIES_KEY

            kv = await running.operator.store.get(SEEN_DELIVERIES_KEY)
            return kv is not None and b"72d3162e" in kv.value

        await eventually(persisted, what="the delivery ID in the store")
    finally:
        await running.shutdown()

    running = await start_operator(settings)
    try:
        triggers = running.operator.sync.triggers if running.operator.sync else 0
        assert await deliver(running.base) == (200, "duplicate")
        assert running.operator.sync is None or running.operator.sync.triggers == triggers
    finally:
        await running.shutdown()


async def test_a_delivery_answered_by_one_operator_is_a_duplicate_at_another(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    """Two processes on one store (as masters behind a load balancer): the IDs
    one answered are read from the store by the other."""
    git_remote.write("a.yaml", pod_yaml("a"))
    revision = git_remote.commit_and_push("a")
    store = f"sqlite://{tmp_path}/shared.db"
    first = await start_operator(
        operator_settings(
            git_remote.url, tmp_path / "s1", nodes=0, writeback=False, watch=False, store=store
        )
    )
    second = await start_operator(
        operator_settings(
            git_remote.url, tmp_path / "s2", nodes=0, writeback=False, watch=False, store=store
        )
    )
    body, headers = github_push("main", revision)
    try:
        async with aiohttp.ClientSession() as session:

            async def deliver(base: str, delivery: str) -> str:
                async with session.post(
                    base + "/hooks/github",
                    data=io.BytesIO(body),
                    headers={**headers, "X-GitHub-Delivery": delivery},
                ) as r:
                    return str((await r.json())["outcome"])

            assert await deliver(first.base, "d-1") == "accepted"
            assert await deliver(second.base, "d-2") == "accepted"

            async def both_stored() -> bool:
                assert first.operator.store is not None
                from gitkube.operator import SEEN_DELIVERIES_KEY

                kv = await first.operator.store.get(SEEN_DELIVERIES_KEY)
                return kv is not None and b"d-1" in kv.value and b"d-2" in kv.value

            await eventually(both_stored, what="both IDs merged in the store")
            assert await deliver(second.base, "d-1") == "duplicate"
            assert await deliver(first.base, "d-2") == "duplicate"
    finally:
        await first.shutdown()
        await second.shutdown()
        kill_processes_under(tmp_path / "s1")
        kill_processes_under(tmp_path / "s2")
