"""The git source against real repositories and real `git push`:

- a local bare path, a file:// URL and a non-bare local path are fetched into
  a bare cache; only the tracked ref is fetched;
- a branch (default main), a tag, a pinned commit, a sub-path;
- files are read from the commit's tree and blobs (a dirty work tree of the
  remote does not matter); symlinks are not followed and submodules skipped;
- tree diffs between commits; a rewritten history is detected;
- a deleted branch and an unreachable remote are SourceErrors;
- credentials in URLs never appear in errors (``redact``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gitkube.errors import SourceError
from gitkube.sync.source import GitSource, redact, url_secrets
from tests.fixtures.git import GitRemote, git


def source(remote: GitRemote | str, tmp_path: Path, **kw: str) -> GitSource:
    url = remote.url if isinstance(remote, GitRemote) else remote
    return GitSource(url, cache_dir=tmp_path / "cache", **kw)


async def read(src: GitSource, commit: str) -> dict[str, bytes]:
    snap = await src.snapshot(commit)
    blobs = await src.read_blobs(e.sha for e in snap.manifests())
    return {e.path: blobs[e.sha] for e in snap.manifests()}


# ---------------------------------------------------------------- fetching


async def test_a_bare_local_path_is_fetched_and_read(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "kind: Pod\n")
    git_remote.write("notes.txt", "not a manifest")
    commit = git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    assert await src.fetch() == commit
    assert await read(src, commit) == {"a.yaml": b"kind: Pod\n"}
    assert (src.mirror / "HEAD").exists() and not (src.mirror / "a.yaml").exists()
    await src.close()


async def test_file_url_and_non_bare_path(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "x: 1\n")
    commit = git_remote.commit_and_push()
    for url in (git_remote.file_url, str(git_remote.work)):
        src = GitSource(url, cache_dir=tmp_path / "c")
        assert await src.fetch() == commit
        await src.close()


async def test_a_new_push_is_seen_by_the_next_fetch(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    first = git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    assert await src.fetch() == first
    git_remote.write("a.yaml", "v: 2\n")
    second = git_remote.commit_and_push()
    assert await src.fetch() == second
    assert (await read(src, second))["a.yaml"] == b"v: 2\n"
    await src.close()


async def test_only_the_tracked_branch_is_fetched(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    git_remote.commit_and_push()
    git_remote.write("b.yaml", "v: 2\n")
    other = git_remote.commit()
    git_remote.push(branch="feature")
    src = source(git_remote, tmp_path)
    await src.fetch()
    assert not await src.has_commit(other)
    await src.close()


async def test_a_tag_and_a_pinned_commit(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    first = git_remote.commit_and_push()
    git_remote.tag("v1")
    git_remote.write("a.yaml", "v: 2\n")
    git_remote.commit_and_push()
    tagged = source(git_remote, tmp_path, ref="v1")
    assert await tagged.fetch() == first
    assert tagged.kind_of_ref() == "tag"
    pinned = GitSource(git_remote.url, ref=first, cache_dir=tmp_path / "pinned")
    assert await pinned.fetch() == first
    assert pinned.kind_of_ref() == "commit"
    await tagged.close()
    await pinned.close()


async def test_a_sub_path(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("deploy/prod/a.yaml", "v: 1\n")
    git_remote.write("deploy/prod/nested/b.yml", "v: 2\n")
    git_remote.write("deploy/dev/c.yaml", "v: 3\n")
    commit = git_remote.commit_and_push()
    src = source(git_remote, tmp_path, path="deploy/prod/")
    await src.fetch()
    assert set(await read(src, commit)) == {"deploy/prod/a.yaml", "deploy/prod/nested/b.yml"}
    missing = source(git_remote, tmp_path, path="nowhere")
    with pytest.raises(SourceError, match="nowhere"):
        await missing.snapshot(commit)
    await src.close()
    await missing.close()


async def test_symlinks_are_not_followed_and_submodules_are_skipped(
    git_remote: GitRemote, tmp_path: Path
) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    git_remote.symlink("link.yaml", "/etc/passwd")
    git_remote.symlink("inner.yaml", "a.yaml")
    sub = GitRemote(tmp_path / "sub")
    sub.write("s.yaml", "v: 9\n")
    sub.commit_and_push()
    git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", sub.url, "vendor",
        cwd=git_remote.work)  # fmt: skip
    commit = git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    await src.fetch()
    snap = await src.snapshot(commit)
    assert [e.path for e in snap.manifests()] == ["a.yaml"]
    assert {(s.path, s.reason) for s in snap.skipped()} == {
        ("inner.yaml", "symlink not followed"),
        ("link.yaml", "symlink not followed"),
        ("vendor", "submodule skipped"),
    }
    await src.close()


# ---------------------------------------------------------------- tree diffs and history


async def test_tree_diff_between_commits(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write_many({"a.yaml": "v: 1\n", "b.yaml": "v: 1\n", "c.yaml": "v: 1\n"})
    first = git_remote.commit_and_push()
    git_remote.write("a.yaml", "v: 2\n")
    git_remote.remove("b.yaml")
    git_remote.write("d.yaml", "v: 1\n")
    second = git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    await src.fetch()
    changes = await src.changes(first, second)
    assert changes is not None
    assert {(c.status, c.path) for c in changes} == {("M", "a.yaml"), ("D", "b.yaml"),
                                                     ("A", "d.yaml")}  # fmt: skip
    await src.close()


async def test_a_force_push_is_a_rewritten_history(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    base = git_remote.commit_and_push()
    git_remote.write("a.yaml", "v: 2\n")
    old = git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    await src.fetch()
    git_remote.reset_hard(base)
    git_remote.write("a.yaml", "v: 3\n")
    git_remote.commit()
    git_remote.push(force=True)
    new = await src.fetch()
    assert await src.changes(old, new) is None
    assert await src.changes("0" * 40, new) is None
    await src.close()


# ---------------------------------------------------------------- failures


async def test_a_deleted_branch_is_a_source_error(git_remote: GitRemote, tmp_path: Path) -> None:
    git_remote.write("a.yaml", "v: 1\n")
    git_remote.commit_and_push()
    src = source(git_remote, tmp_path)
    await src.fetch()
    git_remote.delete_branch()
    with pytest.raises(SourceError, match="branch 'main' not found"):
        await src.fetch()
    await src.close()


async def test_an_unreachable_remote_is_a_source_error_without_credentials(
    tmp_path: Path,
) -> None:
    url = "http://deploy:s3cr%40t-token@127.0.0.1:9/team/repo.git"
    src = GitSource(url, cache_dir=tmp_path / "cache", timeout_seconds=20)
    with pytest.raises(SourceError) as info:
        await src.fetch()
    text = str(info.value)
    assert "s3cr" not in text and "s3cr@t-token" not in text
    assert "127.0.0.1:9" in text
    assert "s3cr" not in src.display_url and "s3cr" not in src.describe()
    await src.close()


# ---------------------------------------------------------------- redaction


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://user:pa55@host/r.git", "https://user:***@host/r.git"),
        ("https://ghp_TOKEN@github.com/o/r", "https://***@github.com/o/r"),
        (
            "fatal: unable to access 'https://x:y@h/r/': refused",
            "fatal: unable to access 'https://x:***@h/r/': refused",
        ),
        ("ssh://git@host/r.git", "ssh://git@host/r.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("/srv/git/r.git", "/srv/git/r.git"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def test_redact_masks_a_urls_secrets_wherever_they_appear() -> None:
    url = "https://bot:p%40ss@host/r.git"
    assert url_secrets(url) == ["p%40ss", "p@ss"]
    assert redact("auth failed for p@ss and p%40ss", url) == "auth failed for *** and ***"
