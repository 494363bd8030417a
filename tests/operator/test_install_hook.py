"""`gitkube install-hook`: a real `git push` to a bare repository notifies the
operator's HTTP server at once (post-receive), and with --validate a push of
invalid manifests is rejected with the errors in the pusher's terminal.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path
from typing import Any

import pytest

from gitkube.errors import ConfigError
from gitkube.hooks import ensure_notify_token, install_hooks
from gitkube.server.http import HttpServer
from gitkube.server.metrics import Metrics
from tests.fixtures.require import require_binary

VALID = """\
apiVersion: v1
kind: Pod
metadata:
  name: hello
spec:
  containers:
  - name: main
    image: busybox
    command: ["sleep", "3600"]
"""

INVALID = VALID.replace("    image: busybox\n", "    image: busybox\n    imagee: typo\n")


def git(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.fixture
def repos(tmp_path: Path) -> tuple[Path, Path]:
    require_binary("git", "apt-get install git")
    bare = tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    work = tmp_path / "work"
    subprocess.run(["git", "clone", "-q", str(bare), str(work)], check=True, capture_output=True)
    git("checkout", "-q", "-b", "main", cwd=work)
    return bare, work


async def test_push_notifies_the_operator(repos: tuple[Path, Path], tmp_path: Path) -> None:
    bare, work = repos
    token = ensure_notify_token(tmp_path / "state")
    pushes: list[str | None] = []

    async def status() -> dict[str, Any]:
        return {}

    server = HttpServer(
        metrics=Metrics(),
        branch="main",
        on_push=pushes.append,
        status=status,
        secret=None,
        notify_token=token,
    )
    port = await server.start("127.0.0.1", 0)
    try:
        install_hooks(
            bare,
            url=f"http://127.0.0.1:{port}",
            token_file=tmp_path / "state" / "notify.token",
            validate=False,
            branch="main",
        )
        (work / "pod.yaml").write_text(VALID)
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", "pod", cwd=work)
        head = git("rev-parse", "HEAD", cwd=work).stdout.strip()
        push = await asyncio.to_thread(git, "push", "-q", "origin", "main", cwd=work)
        assert push.returncode == 0, push.stderr
        assert "gitkube: push of" in push.stderr
        assert pushes == [head]
    finally:
        await server.stop()


async def test_operator_down_does_not_fail_the_push(
    repos: tuple[Path, Path], tmp_path: Path
) -> None:
    bare, work = repos
    ensure_notify_token(tmp_path / "state")
    install_hooks(
        bare,
        url="http://127.0.0.1:9",
        token_file=tmp_path / "state" / "notify.token",
        validate=False,
        branch="main",
    )
    (work / "pod.yaml").write_text(VALID)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "pod", cwd=work)
    push = git("push", "-q", "origin", "main", cwd=work)
    assert push.returncode == 0
    assert "not reachable" in push.stderr


def test_pre_receive_rejects_invalid_manifests(repos: tuple[Path, Path], tmp_path: Path) -> None:
    bare, work = repos
    ensure_notify_token(tmp_path / "state")
    install_hooks(
        bare,
        url="http://127.0.0.1:9",
        token_file=tmp_path / "state" / "notify.token",
        validate=True,
        branch="main",
        path="k8s",
    )
    (work / "k8s").mkdir()
    (work / "k8s" / "pod.yaml").write_text(INVALID)
    git("add", "-A", cwd=work)
    git("commit", "-q", "-m", "bad pod", cwd=work)
    push = git("push", "origin", "main", cwd=work)
    assert push.returncode != 0
    assert "push rejected" in push.stderr
    assert "k8s/pod.yaml:9" in push.stderr and "imagee" in push.stderr
    assert git("rev-parse", "--verify", "-q", "refs/heads/main", cwd=bare).returncode != 0

    (work / "k8s" / "pod.yaml").write_text(VALID)
    git("commit", "-q", "-am", "fixed", cwd=work)
    push = git("push", "origin", "main", cwd=work)
    assert push.returncode == 0, push.stderr


def test_foreign_hook_is_not_overwritten(repos: tuple[Path, Path], tmp_path: Path) -> None:
    bare, _ = repos
    (bare / "hooks" / "post-receive").write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(ConfigError, match="--force"):
        install_hooks(
            bare, url="http://127.0.0.1:9", token_file=tmp_path / "t", validate=False, branch="main"
        )
