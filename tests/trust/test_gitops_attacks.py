"""The classic GitOps vulnerability classes, each against the real sync
(real git repositories, the `gitkube` command or the loop on SQLite): a
clear refusal within bounded time and memory, nothing applied, nothing
leaked.

- path traversal through --path and through object names;
- symlinks pointing out of the repository, at any depth, and as --path;
- submodules (skipped, never fetched), and a submodule as --path;
- YAML alias bombs and deep nesting;
- a repository of 100,000 small files;
- a 1 GiB blob (never read into memory);
- credentials in repository URLs, in every output of sync, diff, status, config;
- secrets in error messages (webhook tokens).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gitkube.api.objects import Pod
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.loop import SyncLoop, SyncSettings
from gitkube.sync.source import GitSource
from tests.fixtures.git import GitRemote, git
from tests.sync.conftest import pod_yaml


@pytest.fixture
async def objects(tmp_path: Path) -> AsyncIterator[ObjectStore]:
    store = await open_store(f"sqlite://{tmp_path}/state/state.db")
    try:
        yield ObjectStore(store)
    finally:
        await store.close()


def make_loop(objects: ObjectStore, url: str, tmp_path: Path, path: str = "") -> SyncLoop:
    source = GitSource(url, path=path, cache_dir=tmp_path / "cache")
    return SyncLoop(objects, source, SyncSettings())


async def pod_names(objects: ObjectStore) -> set[str]:
    pods, _ = await objects.list(Pod)
    return {p.metadata.name for p in pods}


def gitkube(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "gitkube", *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        cwd=cwd,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("GITKUBE_")},
            **(env or {}),
        },
    )
    return proc.returncode, proc.stdout + proc.stderr


# ---------------------------------------------------------------- path traversal


def test_path_traversal_through_path(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", pod_yaml("a"))
    git_remote.commit_and_push("a")
    store = f"sqlite://{tmp_path}/s.db"
    for given in ("../../etc", "k8s/../../..", "..", "a/../../b"):
        code, out = gitkube(
            "sync", "--once", "--repo", git_remote.url, "--path", given, "--store", store,
            "--cache-dir", str(tmp_path / "c"), "--no-writeback",
        )  # fmt: skip
        assert code != 0 and "'..' is not allowed" in out, (given, out)
        assert "Traceback" not in out
    # an absolute path is inside the repository, never the machine's /etc
    code, out = gitkube(
        "sync", "--once", "--repo", git_remote.url, "--path", "/etc", "--store", store,
        "--cache-dir", str(tmp_path / "c"), "--no-writeback",
    )  # fmt: skip
    assert code == 1 and "'etc' not found in commit" in out
    code, out = gitkube("get", "pods", "-o", "json", "--store", store)
    assert code == 0 and '"a"' not in out


async def test_names_cannot_traverse(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    git_remote.write("ok.yaml", pod_yaml("fine"))
    git_remote.write("evil.yaml", pod_yaml("../../etc/passwd"))
    git_remote.write(
        "evil-ns.yaml",
        pod_yaml("x").replace("metadata:\n", "metadata:\n  namespace: ../kube-system\n", 1),
    )
    git_remote.commit_and_push("traversal in names")
    result = await make_loop(objects, git_remote.url, tmp_path).reconcile_once()
    assert result.outcome == "Failed"
    files = {e.file for e in result.errors}
    assert {"evil.yaml", "evil-ns.yaml"} <= files, result.errors
    assert all(e.line > 0 for e in result.errors if e.file in ("evil.yaml", "evil-ns.yaml"))
    assert await pod_names(objects) == set(), "nothing of the revision is applied"


# ---------------------------------------------------------------- symlinks


async def test_symlinks_out_of_the_repository_at_any_depth(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "stolen.yaml").write_text(pod_yaml("stolen"))
    git_remote.write("k8s/ok.yaml", pod_yaml("fine"))
    git_remote.symlink("k8s/direct.yaml", str(outside / "stolen.yaml"))
    git_remote.symlink("k8s/a/b/c/d/e/deep.yaml", "../../../../../../../../outside/stolen.yaml")
    git_remote.symlink("k8s/dir", str(outside))
    git_remote.symlink("k8s/up", "..")
    git_remote.symlink("linked", str(outside))
    git_remote.commit_and_push("symlinks")

    result = await make_loop(objects, git_remote.url, tmp_path, path="k8s").reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"fine"}
    skipped = [w for w in result.warnings if "symlink not followed" in w]
    assert len(skipped) == 4, result.warnings

    # a symlink as --path is refused, not read as an empty tree (which would prune)
    other = make_loop(objects, git_remote.url, tmp_path / "2", path="linked")
    result = await other.reconcile_once()
    assert result.outcome == "Failed" and "is a symlink, not a directory" in result.message
    assert await pod_names(objects) == {"fine"}, "nothing pruned, nothing read outside"


# ---------------------------------------------------------------- submodules


async def test_submodules_are_skipped(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    inner = GitRemote(tmp_path / "inner")
    inner.write("pod.yaml", pod_yaml("from-submodule"))
    inner.commit_and_push("inner")
    git_remote.write("k8s/ok.yaml", pod_yaml("fine"))
    git(
        "-c", "protocol.file.allow=always", "submodule", "add", "--quiet", inner.url, "k8s/sub",
        cwd=git_remote.work,
    )  # fmt: skip
    git_remote.commit_and_push("with a submodule")

    result = await make_loop(objects, git_remote.url, tmp_path, path="k8s").reconcile_once()
    assert result.outcome == "Succeeded", result.errors
    assert await pod_names(objects) == {"fine"}
    assert any("k8s/sub: submodule skipped" in w for w in result.warnings), result.warnings

    result = await make_loop(
        objects, git_remote.url, tmp_path / "2", path="k8s/sub"
    ).reconcile_once()
    assert result.outcome == "Failed" and "is a submodule, not a directory" in result.message


# ---------------------------------------------------------------- YAML


async def test_alias_bombs_and_deep_nesting(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    levels = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        levels.append(f"{chr(ord('a') + i)}: &{chr(ord('a') + i)} [{', '.join(['*' + prev] * 10)}]")
    git_remote.write("bomb.yaml", "\n".join(levels) + "\n")
    git_remote.write("deep.yaml", "a: " + "[" * 50_000 + "]" * 50_000 + "\n")
    git_remote.write("deepmap.yaml", "".join("  " * i + f"k{i}:\n" for i in range(2_000)))
    git_remote.write("ok.yaml", pod_yaml("fine"))
    git_remote.commit_and_push("bombs")
    started = time.monotonic()
    result = await make_loop(objects, git_remote.url, tmp_path).reconcile_once()
    assert time.monotonic() - started < 30
    assert result.outcome == "Failed"
    messages = {e.file: e.message for e in result.errors}
    assert "alias bomb" in messages["bomb.yaml"]
    assert "nested deeper" in messages["deep.yaml"]
    assert "deepmap.yaml" in messages
    assert await pod_names(objects) == set()


# ---------------------------------------------------------------- size


def _commit_many(bare: Path, count: int, tmp_path: Path) -> None:
    """A commit of ``count`` small .yaml files (and one Pod) written with git
    plumbing straight into the bare repository."""
    empty = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], input=b"# nothing here\n", cwd=bare,
        capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    pod = subprocess.run(
        ["git", "hash-object", "-w", "--stdin"], input=pod_yaml("fine").encode(), cwd=bare,
        capture_output=True, check=True,
    ).stdout.decode().strip()  # fmt: skip
    lines = [f"100644 {pod}\tpod.yaml"]
    lines += [f"100644 {empty}\tfiles/d{i % 100}/f{i}.yaml" for i in range(count)]
    env = {**os.environ, "GIT_INDEX_FILE": str(tmp_path / "index")}
    subprocess.run(
        ["git", "update-index", "--add", "--index-info"], input="\n".join(lines).encode(),
        cwd=bare, env=env, check=True,
    )  # fmt: skip
    tree = subprocess.run(
        ["git", "write-tree"], cwd=bare, env=env, capture_output=True, check=True, text=True
    ).stdout.strip()
    commit = git("commit-tree", tree, "-m", "many files", cwd=bare)
    git("update-ref", "refs/heads/main", commit, cwd=bare)


def test_a_repository_of_100000_files(git_remote: GitRemote, tmp_path: Path) -> None:
    _commit_many(git_remote.bare, 100_000, tmp_path)
    store = f"sqlite://{tmp_path}/s.db"
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    started = time.monotonic()
    code, out = gitkube(
        "sync", "--once", "--repo", git_remote.url, "--store", store,
        "--cache-dir", str(tmp_path / "c"), "--no-writeback",
    )  # fmt: skip
    elapsed = time.monotonic() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert code == 0, out
    assert "1 created" in out
    assert elapsed < 120, f"{elapsed:.1f}s for 100,000 files"
    assert max(peak_kib, before) < 600 * 1024, f"{peak_kib // 1024} MiB"


@pytest.mark.slow
async def test_a_1_gib_blob_is_not_read(
    git_remote: GitRemote, objects: ObjectStore, tmp_path: Path
) -> None:
    huge = git_remote.work / "huge.yaml"
    with open(huge, "wb") as fh:
        fh.truncate(1 << 30)  # sparse: no disk, and git compresses zeros to ~1 MiB
    git_remote.write("ok.yaml", pod_yaml("fine"))
    fast = ["-c", "core.compression=1", "-c", "pack.compression=1"]
    git(*fast, "add", "-A", cwd=git_remote.work)
    git(*fast, "commit", "-q", "-m", "a 1 GiB blob", cwd=git_remote.work)
    git(*fast, "push", "-q", "origin", "HEAD:refs/heads/main", cwd=git_remote.work)
    huge.unlink()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = await make_loop(objects, git_remote.url, tmp_path).reconcile_once()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert result.outcome == "Failed"
    assert [(e.file, e.message) for e in result.errors] == [
        ("huge.yaml", f"file is {1 << 30} bytes, over the 1048576-byte limit (--max-size)")
    ]
    assert await pod_names(objects) == set()
    assert after - before < 200 * 1024, f"RSS grew {(after - before) // 1024} MiB"


# ---------------------------------------------------------------- leaks


def test_credentials_in_repository_urls_never_shown(tmp_path: Path) -> None:
    token = "S3cr3t-T0ken_x9"
    store = f"sqlite://{tmp_path}/s.db"
    urls = [
        f"https://alice:{token}@127.0.0.1:9/ops/cluster.git",
        f"https://{token}@127.0.0.1:9/ops/cluster.git",
        f"https://alice:{token.replace('-', '%2D')}@127.0.0.1:9/x.git",
    ]
    outputs = []
    for url in urls:
        outputs.append(gitkube("sync", "--once", "--repo", url, "--store", store,
                               "--cache-dir", str(tmp_path / "c"))[1])  # fmt: skip
        outputs.append(gitkube("sync", "--once", "-o", "json", "--repo", url, "--store", store,
                               "--cache-dir", str(tmp_path / "c"))[1])  # fmt: skip
        outputs.append(gitkube("diff", "--repo", url, "--store", store,
                               "--cache-dir", str(tmp_path / "c"))[1])  # fmt: skip
        outputs.append(gitkube("config", "-o", "json", env={"GITKUBE_REPO": url})[1])
        outputs.append(gitkube("config", env={"GITKUBE_REPO": url})[1])
    outputs.append(gitkube("status", "-o", "json", "--store", store)[1])
    outputs.append(gitkube("status", "--store", store)[1])
    text = "\n".join(outputs)
    assert "127.0.0.1:9" in text, "the commands did report on the repository"
    assert token not in text and token.replace("-", "%2D") not in text
    assert "Traceback" not in text


async def test_webhook_secrets_are_not_echoed() -> None:
    import aiohttp

    from gitkube.server.http import HttpServer
    from gitkube.server.metrics import Metrics

    secret = b"gitlab-Tok3n-value"

    async def status() -> dict[str, object]:
        return {}

    server = HttpServer(
        metrics=Metrics(), branch="main", on_push=lambda _r: None, status=status, secret=secret
    )
    port = await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session:
            for given in ("gitlab-Tok3n-valuX", "gitlab-Tok3n-value-and-more"):
                async with session.post(
                    f"http://127.0.0.1:{port}/hooks/gitlab",
                    data=b"{}",
                    headers={"X-Gitlab-Token": given, "X-Gitlab-Event": "Push Hook"},
                ) as resp:
                    assert resp.status == 401
                    body = await resp.text()
                assert "Tok3n" not in body
        assert "Tok3n" not in str(server.deliveries.to_list())
    finally:
        await server.stop()
