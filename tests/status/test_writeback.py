"""Status written back to git, against real repositories and real pushes:

- the status branch is created when absent, holds status.json and STATUS.md,
  and the synced branch is never touched;
- a commit only when the outcome changed: same outcome at a later time (also
  from a fresh writer with an empty cache) writes nothing; a change does, on
  top of the previous status commit;
- the synced branch (or an invalid name) is refused as the status branch;
- a push rejected because another writer pushed meanwhile is rebased onto
  the new tip (keeping that writer's files) and retried, a bounded number of
  times; nothing is pushed when the other writer already wrote our outcome;
- a remote that refuses pushes (a pre-receive hook exiting 1) and an
  unreachable remote raise StatusWriteError with no credentials in it; the
  sync loop's hook records the failure in the store and never raises;
- STATUS.md content: revision, time, the objects table, the errors.
"""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gitkube.api.keys import STATUS_WRITEBACK_KEY, SYNC_STATE_KEY
from gitkube.api.objects import ReplicationController
from gitkube.errors import ConfigError
from gitkube.store.base import Compare
from gitkube.store.objects import ObjectStore
from gitkube.sync.report import StatusReport, WritebackOutcome, build_status_report
from gitkube.sync.state import SyncState
from gitkube.sync.writeback import (
    StatusWriteback,
    StatusWriteError,
    StatusWriter,
    redact,
    render_status_markdown,
)
from tests.status.conftest import REVISION, fill_cluster, git

NOW = datetime(2026, 1, 1, 1, 0, 0, tzinfo=UTC)
BRANCH = "gitkube/status"


def make_writer(remote: Path, tmp_path: Path, name: str = "cache", **kw: Any) -> StatusWriter:
    return StatusWriter(f"file://{remote}", cache_dir=tmp_path / name, synced_branch="main", **kw)


def tip(remote: Path, branch: str) -> str:
    return git(
        "--git-dir", str(remote), "rev-parse", "--verify", "-q", f"refs/heads/{branch}", check=False
    )


def show(remote: Path, rev: str, path: str) -> str:
    return git("--git-dir", str(remote), "show", f"{rev}:{path}")


def push_from_other_writer(remote: Path, workdir: Path, files: dict[str, str]) -> str:
    """Another writer commits to the status branch and pushes, as a person or a
    second gitkube would."""
    if not workdir.exists():
        git("clone", "-q", "-b", BRANCH, str(remote), str(workdir))
    else:
        git("pull", "-q", "origin", BRANCH, cwd=workdir)
    for name, text in files.items():
        (workdir / name).write_text(text)
        git("add", name, cwd=workdir)
    git("commit", "-q", "-m", "other writer", cwd=workdir)
    git("push", "-q", "origin", f"HEAD:refs/heads/{BRANCH}", cwd=workdir)
    return git("rev-parse", "HEAD", cwd=workdir)


async def report_at(objects: ObjectStore, now: datetime = NOW) -> StatusReport:
    return await build_status_report(objects, now=now)


class TestCommitsOnTheStatusBranch:
    async def test_creates_the_branch_with_both_files_and_leaves_main(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        main_before = tip(remote, "main")
        assert tip(remote, BRANCH) == ""
        sha = await make_writer(remote, tmp_path).write(await report_at(objects))
        assert sha is not None and tip(remote, BRANCH) == sha
        assert tip(remote, "main") == main_before
        files = git("--git-dir", str(remote), "ls-tree", "--name-only", sha).splitlines()
        assert files == ["STATUS.md", "status.json"]
        status = json.loads(show(remote, sha, "status.json"))
        assert status["revision"] == REVISION
        assert status["phase"] == "Failed"
        assert {(o["kind"], o["name"], o["sync"], o["health"]) for o in status["objects"]} >= {
            ("Service", "cache", "OutOfSync", "Missing"),
            ("ReplicationController", "web", "Synced", "Progressing"),
        }
        assert status["errors"][0]["file"] == "apps/web.yaml"
        assert status["errors"][0]["line"] == 12
        message = git("--git-dir", str(remote), "log", "-1", "--format=%an <%ae>%n%B", sha)
        assert message.startswith("gitkube <gitkube@localhost>\nstatus: Failed aaaaaaaaaaaa")
        assert "apps/web.yaml:12" in message

    async def test_same_outcome_later_writes_nothing(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = make_writer(remote, tmp_path)
        first = await writer.write(await report_at(objects))
        assert first is not None
        later = await report_at(objects, NOW + timedelta(minutes=10))
        assert await writer.write(later) is None
        # a fresh writer (a restarted operator, an empty cache) compares with the branch
        assert await make_writer(remote, tmp_path, "cache2").write(later) is None
        assert tip(remote, BRANCH) == first

    async def test_a_changed_outcome_is_a_new_commit_on_top(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = make_writer(remote, tmp_path)
        first = await writer.write(await report_at(objects))
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        second = await writer.write(await report_at(objects))
        assert second is not None and second != first
        assert git("--git-dir", str(remote), "rev-parse", f"{second}^") == first
        status = json.loads(show(remote, second, "status.json"))
        (web,) = [o for o in status["objects"] if o["kind"] == "ReplicationController"]
        assert (web["health"], web["replicas"]) == ("Healthy", {"ready": 3, "desired": 3})

    async def test_a_configured_branch_name_is_used(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = make_writer(remote, tmp_path, branch="refs/heads/ops/cluster-status")
        sha = await writer.write(await report_at(objects))
        assert tip(remote, "ops/cluster-status") == sha
        assert tip(remote, BRANCH) == ""

    async def test_a_local_path_remote(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = StatusWriter(str(remote), cache_dir=tmp_path / "c", synced_branch="main")
        sha = await writer.write(await report_at(objects))
        assert sha is not None and tip(remote, BRANCH) == sha


class TestNeverTheSyncedBranch:
    @pytest.mark.parametrize("branch", ["main", "refs/heads/main", " main "])
    def test_the_synced_branch_is_refused(self, tmp_path: Path, branch: str) -> None:
        with pytest.raises(ConfigError, match="is the branch being synced"):
            StatusWriter("file:///x.git", branch=branch, cache_dir=tmp_path, synced_branch="main")

    @pytest.mark.parametrize("branch", ["", "has space", "a..b", "-x", "x.lock", "a:b", "end/"])
    def test_invalid_names_are_refused(self, tmp_path: Path, branch: str) -> None:
        with pytest.raises(ConfigError, match="not a valid git branch name"):
            StatusWriter("file:///x.git", branch=branch, cache_dir=tmp_path, synced_branch="main")


class TestRejectedPushIsRebased:
    async def test_another_writer_pushed_meanwhile(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = make_writer(remote, tmp_path)
        first = await writer.write(await report_at(objects))
        assert first is not None
        other: dict[str, str] = {}
        build = writer._build_commit

        def build_then_race(*args: Any) -> str:
            # between reading the tip and pushing, someone else pushes
            commit = build(*args)
            if not other:
                other["sha"] = push_from_other_writer(
                    remote, tmp_path / "other", {"README.md": "status lives here\n"}
                )
            return commit

        writer._build_commit = build_then_race  # type: ignore[method-assign]
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        sha = await writer.write(await report_at(objects))
        assert sha is not None and tip(remote, BRANCH) == sha
        assert git("--git-dir", str(remote), "rev-parse", f"{sha}^") == other["sha"]
        assert show(remote, sha, "README.md") == "status lives here"
        assert '"ready": 3' in show(remote, sha, "status.json")

    async def test_nothing_is_pushed_when_the_other_writer_wrote_our_outcome(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        ours = make_writer(remote, tmp_path, "ours")
        theirs = make_writer(remote, tmp_path, "theirs")
        await ours.write(await report_at(objects))
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        changed = await report_at(objects)
        build = ours._build_commit
        raced: list[str | None] = []

        def build_then_race(*args: Any) -> str:
            commit = build(*args)
            if not raced:
                # this runs in ours' worker thread, where no event loop runs
                raced.append(asyncio.run(theirs.write(changed)))
            return commit

        ours._build_commit = build_then_race  # type: ignore[method-assign]
        assert await ours.write(await report_at(objects, NOW + timedelta(seconds=5))) is None
        assert raced[0] is not None and tip(remote, BRANCH) == raced[0]

    async def test_the_retries_are_bounded(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        writer = make_writer(remote, tmp_path, max_attempts=3)
        await writer.write(await report_at(objects))
        build = writer._build_commit
        races = 0

        def build_then_race(*args: Any) -> str:
            nonlocal races
            commit = build(*args)
            races += 1
            push_from_other_writer(remote, tmp_path / "other", {"n.txt": str(races)})
            return commit

        writer._build_commit = build_then_race  # type: ignore[method-assign]
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        with pytest.raises(StatusWriteError, match="rejected 3 times"):
            await writer.write(await report_at(objects))
        assert races == 3


def install_refusing_hook(remote: Path) -> None:
    hook = remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'status pushes are not allowed here' >&2\nexit 1\n")
    hook.chmod(hook.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestRefusingRemotes:
    async def test_pre_receive_hook_refusal_is_an_error_naming_it(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        install_refusing_hook(remote)
        with pytest.raises(StatusWriteError) as info:
            await make_writer(remote, tmp_path).write(await report_at(objects))
        assert "refused the push" in str(info.value)
        assert "pre-receive hook declined" in str(info.value)
        assert tip(remote, BRANCH) == ""

    async def test_the_hook_records_the_failure_and_does_not_raise(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        install_refusing_hook(remote)
        hook = StatusWriteback(make_writer(remote, tmp_path), objects, clock=lambda: NOW)
        outcome = await hook(object())
        assert outcome.outcome == "Failed"
        assert "pre-receive hook declined" in outcome.error
        kv = await objects.store.get(STATUS_WRITEBACK_KEY)
        assert kv is not None
        assert WritebackOutcome.from_json(kv.value) == outcome
        report = await report_at(objects)
        assert report.to_dict()["writeback"]["outcome"] == "Failed"
        # the remote accepts again: the next sync's hook commits
        (remote / "hooks" / "pre-receive").unlink()
        outcome = await hook(object())
        assert outcome.outcome == "Committed" and tip(remote, BRANCH) == outcome.commit
        assert (await hook(object())).outcome == "Unchanged"

    async def test_unreachable_remote_with_credentials_never_shows_them(
        self, tmp_path: Path, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        url = f"http://deploy-bot:s3cr3t-t0ken@127.0.0.1:{closed_port()}/cluster.git"
        writer = StatusWriter(url, cache_dir=tmp_path / "c", synced_branch="main")
        with pytest.raises(StatusWriteError) as info:
            await writer.write(await report_at(objects))
        text = str(info.value)
        assert "cannot reach the remote" in text
        assert "127.0.0.1" in text
        assert "s3cr3t" not in text and "deploy-bot" not in text
        hook = StatusWriteback(writer, objects)
        outcome = await hook(None)
        assert outcome.outcome == "Failed" and "s3cr3t" not in outcome.error

    def test_redact(self) -> None:
        url = "https://user:pa55word@git.example.invalid/r.git"
        assert redact(f"fatal: unable to access '{url}/': refused", url) == (
            "fatal: unable to access 'https://git.example.invalid/r.git/': refused"
        )
        assert redact("password pa55word echoed", url) == "password *** echoed"
        assert redact("ssh://git@host/x and plain text") == "ssh://host/x and plain text"


class TestOnlyTheLeaderWrites:
    LEADER_KEY = "/gitkube-test/leader"

    async def leading_hook(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> StatusWriteback:
        """A write-back fenced on a leader key this test holds."""
        await fill_cluster(objects)
        term = await objects.store.put(self.LEADER_KEY, b"me")
        hook = StatusWriteback(make_writer(remote, tmp_path), objects, clock=lambda: NOW)
        hook.fence = lambda: Compare(self.LEADER_KEY, term)
        return hook

    async def test_a_deposed_leader_writes_nothing_to_git_or_the_store(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        store = objects.store
        hook = await self.leading_hook(remote, tmp_path, objects)
        outcome = await hook(object())
        assert outcome is not None and outcome.outcome == "Committed"
        recorded = await store.get(STATUS_WRITEBACK_KEY)
        assert recorded is not None
        # another master leads now; the outcome changes, and nothing is written
        await store.put(self.LEADER_KEY, b"other")
        rc = await objects.get(ReplicationController, "default", "web")
        assert rc is not None
        rc.status.ready_replicas = 3
        await objects.update(rc)
        assert await hook(object()) is None
        assert tip(remote, BRANCH) == outcome.commit
        assert await store.get(STATUS_WRITEBACK_KEY) == recorded

    async def test_leadership_lost_during_the_push_records_no_outcome(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        store = objects.store
        hook = await self.leading_hook(remote, tmp_path, objects)
        real_write = hook.writer.write

        async def write_then_lose(report: StatusReport) -> str | None:
            sha = await real_write(report)
            await store.put(self.LEADER_KEY, b"other")  # another master leads from here
            return sha

        hook.writer.write = write_then_lose  # type: ignore[method-assign]
        outcome = await hook(object())
        assert outcome is not None and outcome.outcome == "Committed"
        assert tip(remote, BRANCH) == outcome.commit  # the push was made while it led
        assert await store.get(STATUS_WRITEBACK_KEY) is None  # the record is refused


class TestStatusMarkdown:
    async def test_revision_time_objects_table_and_errors(self, objects: ObjectStore) -> None:
        await fill_cluster(objects)
        text = render_status_markdown(await report_at(objects))
        assert f"| Revision | `{REVISION}` |" in text
        assert "| Written | 2026-01-01T01:00:00Z |" in text
        assert "| Kind | Name | Sync | Health | Replicas (ready/desired) | Endpoints " in text
        assert (
            "| ReplicationController | default/web | Synced | ⏳ Progressing | 2/3 |   "
            "| apps/web.yaml | 2/3 replicas ready; pod web-2: Running, not ready |" in text
        )
        assert "| Service | default/web | Synced | ✅ Healthy |   | 2 | apps/web.yaml |" in text
        assert "| Service | default/cache | OutOfSync | ❓ Missing |" in text
        assert (
            "- `apps/web.yaml:12`: ReplicationController/web: `spec.replicas`: "
            "must be at least 0" in text
        )

    async def test_a_long_table_keeps_the_objects_that_need_attention(
        self, objects: ObjectStore
    ) -> None:
        await fill_cluster(objects)
        report = await report_at(objects)
        text = render_status_markdown(report, max_rows=3)
        rows = [line for line in text.splitlines() if line.startswith("| Service |")]
        rows += [line for line in text.splitlines() if line.startswith("| Pod |")]
        rows += [line for line in text.splitlines() if line.startswith("| Replication")]
        assert len(rows) == 3
        assert "| Service | default/web | Synced | ✅ Healthy |" not in text
        assert "… and 2 more objects" in text

    def test_table_cells_are_escaped(self) -> None:
        report = StatusReport(generated_at="t", message="a | b\nc")
        assert "| Message | a \\| b c |" in render_status_markdown(report)

    async def test_an_empty_state_still_renders(self, objects: ObjectStore) -> None:
        await objects.store.put(SYNC_STATE_KEY, SyncState(phase="Synced").to_json())
        text = render_status_markdown(await report_at(objects))
        assert "No objects are declared." in text and "## Errors (0)" in text
