"""The write-back plugged into the real sync loop (``after_sync``), with real
git pushes:

- a successful sync commits Synced to the status branch; a sync that
  changes nothing commits nothing; the status commit does not trigger a sync
  (the loop tracks the synced branch only);
- an invalid revision is a new status commit, Failed, with the errors'
  file and line in status.json and STATUS.md;
- a remote that refuses status pushes (a pre-receive hook) does not stop
  syncing: the sync succeeds, the failure is recorded in the store and shown
  by the status report.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from gitkube.api.keys import STATUS_WRITEBACK_KEY
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop
from gitkube.sync.report import WritebackOutcome, build_status_report
from gitkube.sync.source import GitSource
from gitkube.sync.writeback import StatusWriteback, StatusWriter
from tests.status.conftest import git

BRANCH = "gitkube/status"

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
"""

BAD_RC = """\
apiVersion: v1
kind: ReplicationController
metadata:
  name: broken
spec:
  replicas: -1
  template:
    metadata:
      labels:
        app: broken
    spec:
      containers:
      - name: c
        image: busybox
"""


def push_file(work: Path, name: str, text: str) -> str:
    (work / name).write_text(text)
    git("add", name, cwd=work)
    git("commit", "-q", "-m", f"change {name}", cwd=work)
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=work)
    return git("rev-parse", "HEAD", cwd=work)


def status_tip(remote: Path) -> str:
    return git(
        "--git-dir",
        str(remote),
        "rev-parse",
        "--verify",
        "-q",
        f"refs/heads/{BRANCH}",
        check=False,
    )


def make_loop(remote: Path, tmp_path: Path, objects: ObjectStore) -> tuple[SyncLoop, GitSource]:
    source = GitSource(f"file://{remote}", ref="main", cache_dir=tmp_path / "cache")
    writer = StatusWriter(
        source.url, cache_dir=tmp_path / "cache" / "status", synced_branch=source.ref
    )
    return SyncLoop(objects, source, after_sync=StatusWriteback(writer, objects)), source


class TestAfterSync:
    async def test_commits_on_changed_outcomes_only(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        work = tmp_path / "work"
        git("clone", "-q", str(remote), str(work))
        git("rm", "-q", "app.yaml", cwd=work)
        good = push_file(work, "web.yaml", SERVICE)
        loop, source = make_loop(remote, tmp_path, objects)
        try:
            result = await loop.reconcile_once()
            assert result.outcome == "Succeeded", result
            first = status_tip(remote)
            assert first
            status = json.loads(git("--git-dir", str(remote), "show", f"{first}:status.json"))
            assert (status["revision"], status["phase"]) == (good, "Synced")
            assert [(o["kind"], o["name"], o["sync"], o["health"]) for o in status["objects"]] == [
                ("Service", "web", "Synced", "Degraded")  # no pods behind it
            ]

            # nothing changed: no commit; the status branch is not a trigger
            assert (await loop.reconcile_once()).outcome == "Unchanged"
            assert status_tip(remote) == first

            bad = push_file(work, "broken.yaml", BAD_RC)
            result = await loop.reconcile_once()
            assert result.outcome == "Failed"
            second = status_tip(remote)
            assert second != first
            assert git("--git-dir", str(remote), "rev-parse", f"{second}^") == first
            status = json.loads(git("--git-dir", str(remote), "show", f"{second}:status.json"))
            assert status["phase"] == "Failed"
            assert (status["revision"], status["attemptedRevision"]) == (good, bad)
            assert status["errors"] and status["errors"][0]["file"] == "broken.yaml"
            assert status["errors"][0]["line"] > 0
            markdown = git("--git-dir", str(remote), "show", f"{second}:STATUS.md")
            assert f"`broken.yaml:{status['errors'][0]['line']}`" in markdown
            assert git("--git-dir", str(remote), "rev-parse", "main") == bad
        finally:
            await source.close()

    async def test_a_refusing_remote_does_not_stop_syncing(
        self, remote: Path, tmp_path: Path, objects: ObjectStore
    ) -> None:
        hook = remote / "hooks" / "pre-receive"
        hook.write_text(
            "#!/bin/sh\n"
            "while read old new ref; do\n"
            f'  if [ "$ref" = "refs/heads/{BRANCH}" ]; then\n'
            "    echo 'status commits are not accepted' >&2; exit 1\n"
            "  fi\n"
            "done\n"
        )
        hook.chmod(hook.stat().st_mode | stat.S_IXUSR)
        work = tmp_path / "work"
        git("clone", "-q", str(remote), str(work))
        git("rm", "-q", "app.yaml", cwd=work)
        push_file(work, "web.yaml", SERVICE)  # main still accepts pushes
        loop, source = make_loop(remote, tmp_path, objects)
        try:
            result = await loop.reconcile_once()
            assert result.outcome == "Succeeded"
            assert status_tip(remote) == ""
            kv = await objects.store.get(STATUS_WRITEBACK_KEY)
            assert kv is not None
            outcome = WritebackOutcome.from_json(kv.value)
            assert outcome.outcome == "Failed"
            assert "pre-receive hook declined" in outcome.error
            report = await build_status_report(objects)
            assert report.phase == "Synced"
            assert report.to_dict()["writeback"]["outcome"] == "Failed"
        finally:
            await source.close()
