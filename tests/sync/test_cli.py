"""`gitkube sync`, `gitkube diff`, `gitkube suspend` / `resume` on real repos
and a real SQLite store:

- diff: exit 0 in sync, 1 with differences (a unified YAML diff per object
  with the reason), 1 with a message on invalid manifests;
- sync --once: outcome and counts (table and -o json), exit 1 when it failed
  with the errors at file:line; status written back to git (--no-writeback);
- suspend / resume;
- `kill -9` mid-apply of a large revision, then a restart: the store holds
  exactly the desired state, nothing lost or duplicated.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitkube.api import annotations as ann
from gitkube.api.keys import SYNC_STATE_KEY
from gitkube.api.objects import Pod
from gitkube.cli import app
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.state import SyncState
from tests.fixtures.git import GitRemote, git
from tests.sync.conftest import pod_yaml, service_yaml

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def common(remote: GitRemote, tmp_path: Path) -> list[str]:
    return [
        "--repo", remote.url, "--store", f"sqlite://{tmp_path}/state/state.db",
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip


def seed(remote: GitRemote) -> str:
    remote.write_many({"a.yaml": pod_yaml("a"), "svc.yaml": service_yaml("web")})
    return remote.commit_and_push()


async def read_state(tmp_path: Path) -> tuple[SyncState, list[Pod]]:
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    try:
        kv = await store.get(SYNC_STATE_KEY)
        assert kv is not None
        pods, _ = await ObjectStore(store).list(Pod)
        return SyncState.from_json(kv.value), pods
    finally:
        await store.close()


# ---------------------------------------------------------------- diff


def test_diff_exits_1_with_differences_and_0_in_sync(git_remote: GitRemote, tmp_path: Path) -> None:
    seed(git_remote)
    code, out, _ = cli("diff", *common(git_remote, tmp_path))
    assert code == 1
    assert "# create Pod/default/a (from a.yaml)" in out and "+  name: a" in out
    code, out, _ = cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    assert code == 0, out
    code, out, _ = cli("diff", *common(git_remote, tmp_path))
    assert (code, out) == (0, "")
    git_remote.write("a.yaml", pod_yaml("a", image="nginx:2"))
    git_remote.commit_and_push()
    code, out, _ = cli("diff", *common(git_remote, tmp_path))
    assert code == 1
    assert "# update Pod/default/a (from a.yaml): changed in git: spec.containers[0].image" in out
    assert "-  - image: nginx:1" in out and "+  - image: nginx:2" in out
    code, out, _ = cli("diff", "-o", "json", *common(git_remote, tmp_path))
    data = json.loads(out)
    assert code == 1 and data["changes"][0]["fields"] == ["spec.containers[0].image"]


def test_diff_of_an_invalid_revision_names_file_and_line(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\nspec: {}\n")
    git_remote.commit_and_push()
    code, _, err = cli("diff", *common(git_remote, tmp_path))
    assert code == 1 and "bad.yaml:" in err and "Pod/x" in err


# ---------------------------------------------------------------- sync --once


def test_sync_once_prints_the_outcome(git_remote: GitRemote, tmp_path: Path) -> None:
    commit = seed(git_remote)
    code, out, _ = cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    assert code == 0 and f"Succeeded {commit[:12]}: 2 created" in out
    code, out, _ = cli(
        "sync", "--once", "--no-writeback", "-o", "json", *common(git_remote, tmp_path)
    )
    data = json.loads(out)
    assert code == 0 and data["outcome"] == "Unchanged" and data["unchanged"] == 2


def test_sync_once_exits_1_with_errors_at_file_and_line(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    seed(git_remote)
    cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    git_remote.write("b.yaml", pod_yaml("b") + "---\nkind: Service\n")
    git_remote.commit_and_push()
    code, out, _ = cli(
        "sync", "--once", "--no-writeback", "-o", "json", *common(git_remote, tmp_path)
    )
    data = json.loads(out)
    assert code == 1 and data["outcome"] == "Failed"
    assert data["errors"] and all(e["text"].startswith("b.yaml:") for e in data["errors"])
    state, pods = asyncio.run(read_state(tmp_path))
    assert state.phase == "Failed" and [p.name for p in pods] == ["a"]


def test_sync_once_exits_1_when_the_repository_is_unreachable(tmp_path: Path) -> None:
    code, out, _ = cli(
        "sync", "--once", "--no-writeback", "--repo", str(tmp_path / "nowhere"),
        "--store", f"sqlite://{tmp_path}/state/state.db", "--cache-dir", str(tmp_path / "c"),
    )  # fmt: skip
    assert code == 1 and "Failed" in out and "cannot read the repository" in out


def test_sync_once_writes_the_status_back_to_git(git_remote: GitRemote, tmp_path: Path) -> None:
    seed(git_remote)
    code, out, err = cli("sync", "--once", *common(git_remote, tmp_path))
    assert code == 0, out + err
    files = git("ls-tree", "--name-only", "gitkube/status", cwd=git_remote.bare)
    assert "status.json" in files and "STATUS.md" in files


def test_suspend_and_resume(git_remote: GitRemote, tmp_path: Path) -> None:
    seed(git_remote)
    cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    store = ["--store", f"sqlite://{tmp_path}/state/state.db"]
    assert cli("suspend", "--reason", "freeze", *store)[0] == 0
    git_remote.write("b.yaml", pod_yaml("b"))
    git_remote.commit_and_push()
    code, out, _ = cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    assert code == 0 and "Suspended" in out and "freeze" in out
    assert [p.name for p in asyncio.run(read_state(tmp_path))[1]] == ["a"]
    assert cli("resume", *store)[0] == 0
    code, out, _ = cli("sync", "--once", "--no-writeback", *common(git_remote, tmp_path))
    assert code == 0 and "1 created" in out


# ---------------------------------------------------------------- crash mid-apply


@pytest.mark.slow
def test_kill_9_mid_apply_then_restart_converges(git_remote: GitRemote, tmp_path: Path) -> None:
    count = 3000
    for f in range(count // 10):
        git_remote.write(
            f"pods/f{f:03}.yaml", "---\n".join(pod_yaml(f"p{f:03}-{k}") for k in range(10))
        )
    commit = git_remote.commit_and_push()
    db = tmp_path / "state" / "state.db"
    cmd = [sys.executable, "-m", "gitkube", "sync", "--once", "--no-writeback",
           *common(git_remote, tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def pods_now() -> int:
        # read-only and without the store's own opening (which writes): the
        # sync may be stopped holding SQLite's write lock; WAL readers go on
        uri = f"file:{db}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as conn:
            (n,) = conn.execute(
                "SELECT count(*) FROM kv WHERE key >= ? AND key < ?",
                (b"/gitkube/pods/", b"/gitkube/pods0"),
            ).fetchone()
        return int(n)

    # the sync is frozen (SIGSTOP) while its progress is read, so the kill
    # lands mid-apply however slow the reading is on a busy machine
    partial = 0
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.005)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            partial = pods_now() if db.exists() else 0
        except sqlite3.OperationalError:
            partial = 0  # the file is still being made
        if partial > 0:
            os.kill(proc.pid, signal.SIGKILL)
            break
        os.kill(proc.pid, signal.SIGCONT)
    assert partial > 0, "the sync finished before it could be killed"
    proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    partial = pods_now()
    assert 0 < partial < count

    restart = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert restart.returncode == 0, restart.stdout + restart.stderr

    async def check() -> None:
        store = await open_store(f"sqlite://{db}")
        try:
            pods, _ = await ObjectStore(store).list(Pod)
            names = [p.name for p in pods]
            assert len(names) == len(set(names)) == count
            assert set(names) == {f"p{f:03}-{k}" for f in range(count // 10) for k in range(10)}
            assert {p.metadata.annotations[ann.SOURCE_COMMIT] for p in pods} == {commit}
            assert all(p.metadata.generation == 1 and p.metadata.uid for p in pods)
            assert len({p.metadata.uid for p in pods}) == count
            kv = await store.get(SYNC_STATE_KEY)
            assert kv is not None
            state = SyncState.from_json(kv.value)
            assert (state.phase, state.revision) == ("Synced", commit)
        finally:
            await store.close()

    asyncio.run(check())
