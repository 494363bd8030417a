"""The git source: fetch a repository into a bare cache and read manifests
from a commit's tree and blobs in git's object database, never a work tree.

- The repository is a URL (``file://``, ``git://``, ``https://``, ``ssh://``,
  scp-like ``user@host:path``) or a local path, bare or not. It is fetched
  into a bare mirror under the cache directory, one per repository; only the
  tracked ref is fetched (``+refs/heads/B:refs/remotes/origin/B``).
- The ref is a branch (default ``main``), a tag (``v1``, ``tags/v1`` or
  ``refs/tags/v1``; a bare name that is not a branch is tried as a tag) or a
  pinned commit (40 hex digits; not fetched again once present).
- Manifests are the ``.yaml``, ``.yml`` and ``.json`` blobs under the
  sub-path. Symlinks (mode 120000) are not followed: they are *ignored and
  reported* in ``Snapshot.skipped`` (a warning of the sync, not an error).
  Submodules (gitlinks) are skipped and reported the same way.
- Credentials in the URL never appear in logs, status or errors: every text
  that leaves this module goes through ``redact``.
- GitPython runs in worker threads, one git operation at a time per source
  (its persistent ``cat-file`` processes are not thread-safe). Library errors
  become ``SourceError``.

An unchanged repository costs one ``git fetch`` and a ref compare.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

import git

from gitkube.errors import SourceError

log = logging.getLogger(__name__)

T = TypeVar("T")

MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
MODE_SYMLINK = "120000"
MODE_GITLINK = "160000"
_SHA = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/@\s]*)@")


# ---------------------------------------------------------------- redaction


def url_secrets(url: str) -> list[str]:
    """The secrets a URL carries: a password, or a user name used as a token
    on http(s) (``https://TOKEN@host``), raw and percent-decoded."""
    if "://" not in url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    if parts.password:
        found.append(parts.password)
    if parts.username and parts.password is None and parts.scheme in ("http", "https"):
        found.append(parts.username)
    out: list[str] = []
    for secret in found:
        for form in {secret, unquote(secret)}:
            if form and form not in out:
                out.append(form)
    return sorted(out, key=len, reverse=True)


def redact(text: str, *urls: str) -> str:
    """``text`` with credentials of any URL in it masked, and the secrets of
    ``urls`` (wherever they appear, e.g. in git's messages) replaced by ``***``."""

    def mask(match: re.Match[str]) -> str:
        scheme, userinfo = match["scheme"], match["userinfo"]
        user, sep, _password = userinfo.partition(":")
        if sep:
            return f"{scheme}{user}:***@"
        if scheme.lower() in ("http://", "https://"):
            return f"{scheme}***@"
        return match.group(0)

    out = _URL_USERINFO.sub(mask, text)
    for url in urls:
        for secret in url_secrets(url):
            out = out.replace(secret, "***")
    return out


# ---------------------------------------------------------------- data


@dataclass(frozen=True)
class Entry:
    """One file of a commit's tree under the sub-path."""

    path: str
    sha: str
    mode: str

    #: the tracked sub-path ("" for the root); only what lies below it is judged
    base: str = ""

    @property
    def is_manifest(self) -> bool:
        # as `gitkube validate` decides: no hidden files or directories (.github/)
        # below the tracked sub-path (which may itself be hidden, e.g. .deploy/)
        if self.mode in (MODE_SYMLINK, MODE_GITLINK):
            return False
        rel = self.path[len(self.base) + 1 :] if self.base else self.path
        if any(part.startswith(".") for part in rel.split("/")):
            return False
        return rel.lower().endswith(MANIFEST_SUFFIXES)


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass
class Snapshot:
    """The files of a commit under the sub-path."""

    commit: str
    #: path -> Entry, every file under the sub-path (manifests and others)
    entries: dict[str, Entry] = field(default_factory=dict)

    def manifests(self) -> list[Entry]:
        return [e for p, e in sorted(self.entries.items()) if e.is_manifest]

    def skipped(self) -> list[Skipped]:
        out = []
        for path, entry in sorted(self.entries.items()):
            if entry.mode == MODE_SYMLINK:
                out.append(Skipped(path, "symlink not followed"))
            elif entry.mode == MODE_GITLINK:
                out.append(Skipped(path, "submodule skipped"))
        return out


@dataclass(frozen=True)
class Change:
    """One file changed between two commits (``status``: A, M, D, T)."""

    status: str
    path: str
    sha: str
    mode: str


# ---------------------------------------------------------------- the source


def _normal_subpath(path: str) -> str:
    parts = [p for p in path.replace("\\", "/").split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise SourceError(f"path {path!r}: '..' is not allowed")
    return "/".join(parts)


def normal_url(url: str) -> str:
    """A URL as given; a local path made absolute."""
    if "://" in url or re.match(r"^[^/\s]+@[^/\s]+:", url):
        return url
    # a local path (bare or not)
    return str(Path(url).expanduser().resolve())


class GitSource:
    """One repository, ref and sub-path; see the module docstring."""

    def __init__(
        self,
        url: str,
        *,
        ref: str = "main",
        path: str = "",
        cache_dir: str | os.PathLike[str],
        timeout_seconds: float = 120.0,
    ) -> None:
        if not url:
            raise SourceError("no repository given")
        self.url = normal_url(url)
        self.ref = ref or "main"
        self.path = _normal_subpath(path)
        self.timeout_seconds = timeout_seconds
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        self.cache_dir = Path(cache_dir)
        self.mirror = self.cache_dir / f"{digest}.git"
        self._lock = threading.Lock()
        self._repo: git.Repo | None = None
        #: "branch", "tag" or "commit" once known
        self._kind: str | None = "commit" if _SHA.match(self.ref) else None
        if self.ref.startswith("refs/tags/") or self.ref.startswith("tags/"):
            self._kind = "tag"
            self.ref = self.ref.removeprefix("refs/").removeprefix("tags/")
        elif self.ref.startswith("refs/heads/"):
            self._kind = "branch"
            self.ref = self.ref.removeprefix("refs/heads/")

    # ------------------------------------------------------------ presentation

    @property
    def display_url(self) -> str:
        return redact(self.url, self.url)

    def redact(self, text: str) -> str:
        return redact(text, self.url)

    def describe(self) -> str:
        where = f" path {self.path}" if self.path else ""
        return f"{self.display_url} {self.kind_of_ref()} {self.ref}{where}"

    def kind_of_ref(self) -> str:
        return self._kind or "branch"

    # ------------------------------------------------------------ async API

    async def fetch(self) -> str:
        """Fetch the tracked ref; the commit it points at."""
        return await self._run(self._fetch)

    async def snapshot(self, commit: str) -> Snapshot:
        """Every file of ``commit`` under the sub-path (one ``ls-tree``)."""
        return await self._run(lambda: self._snapshot(commit))

    async def changes(self, old: str, new: str) -> list[Change] | None:
        """Files under the sub-path changed from ``old`` to ``new`` (a tree diff),
        or None when ``old`` is gone or not an ancestor of ``new`` (history was
        rewritten: resync in full)."""
        return await self._run(lambda: self._changes(old, new))

    async def read_blobs(self, shas: Iterable[str]) -> dict[str, bytes]:
        """Blob contents from the object database, by sha."""
        wanted = list(dict.fromkeys(shas))
        return await self._run(lambda: self._read_blobs(wanted))

    async def has_commit(self, commit: str) -> bool:
        return await self._run(lambda: self._has_commit(commit))

    async def commit_info(self, commit: str) -> dict[str, str]:
        """The message (first 500 characters), author and time of ``commit``;
        empty when it cannot be read (never an error: it is for display)."""
        return await self._run(lambda: self._commit_info(commit))

    async def close(self) -> None:
        await self._run(self._close)

    async def _run(self, fn: Callable[[], T]) -> T:
        def locked() -> T:
            with self._lock:
                return fn()

        return await asyncio.to_thread(locked)

    # ------------------------------------------------------------ worker thread

    def _error(self, what: str, exc: BaseException) -> SourceError:
        if isinstance(exc, git.GitCommandError):
            detail = exc.stderr or exc.stdout or str(exc)
        else:
            detail = str(exc)
        detail = " ".join(str(detail).replace("stderr:", "").split()).strip(" '\"")
        return SourceError(self.redact(f"{self.display_url}: {what}: {detail}"))

    def _open(self) -> git.Repo:
        if self._repo is not None:
            return self._repo
        try:
            if (self.mirror / "HEAD").exists():
                repo = git.Repo(self.mirror)
            else:
                self.cache_dir.mkdir(parents=True, exist_ok=True)
                repo = git.Repo.init(self.mirror, bare=True)
                with repo.config_writer() as cfg:
                    cfg.set_value('remote "origin"', "url", self.url)
                    cfg.set_value("gc", "autoDetach", "false")
            with repo.config_reader() as reader:
                current = reader.get_value('remote "origin"', "url", default="")
            if current != self.url:
                with repo.config_writer() as cfg:
                    cfg.set_value('remote "origin"', "url", self.url)
        except (git.GitError, OSError, ValueError) as exc:
            raise self._error(f"cannot prepare the cache in {self.mirror}", exc) from exc
        repo.git.update_environment(
            GIT_TERMINAL_PROMPT="0",
            GIT_SSH_COMMAND=os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        )
        self._repo = repo
        return repo

    def _close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None

    def _git_fetch(self, repo: git.Repo, refspec: str) -> None:
        repo.git.execute(
            ["git", "fetch", "--quiet", "--no-tags", "--no-write-fetch-head", "origin", refspec],
            kill_after_timeout=self.timeout_seconds,
        )

    def _read_ref(self, repo: git.Repo, ref: str) -> str:
        # packed-refs or a loose ref, read in Python: no subprocess
        return str(git.SymbolicReference.dereference_recursive(repo, ref))

    def _fetch(self) -> str:
        repo = self._open()
        if self._kind == "commit":
            if self._has_commit(self.ref):
                return self.ref
            try:
                self._git_fetch(repo, self.ref)
            except git.GitCommandError:
                try:
                    self._git_fetch(repo, "+refs/heads/*:refs/remotes/origin/*")
                    self._git_fetch(repo, "+refs/tags/*:refs/tags/*")
                except git.GitCommandError as exc:
                    raise self._error("fetch failed", exc) from exc
            if not self._has_commit(self.ref):
                raise SourceError(
                    self.redact(f"{self.display_url}: commit {self.ref} not found in the remote")
                )
            return self.ref
        if self._kind in (None, "branch"):
            try:
                self._git_fetch(repo, f"+refs/heads/{self.ref}:refs/remotes/origin/{self.ref}")
                self._kind = "branch"
                return self._read_ref(repo, f"refs/remotes/origin/{self.ref}")
            except git.GitCommandError as exc:
                if self._kind == "branch" or "couldn't find remote ref" not in str(exc.stderr):
                    what = (
                        f"branch {self.ref!r} not found"
                        if "couldn't find remote ref" in str(exc.stderr)
                        else "fetch failed"
                    )
                    raise self._error(what, exc) from exc
            except (ValueError, OSError) as exc:
                raise self._error(f"cannot read branch {self.ref!r}", exc) from exc
        try:
            self._git_fetch(repo, f"+refs/tags/{self.ref}:refs/tags/{self.ref}")
            self._kind = "tag"
            return str(repo.rev_parse(f"refs/tags/{self.ref}^{{commit}}").hexsha)
        except git.GitCommandError as exc:
            what = (
                f"no branch or tag {self.ref!r}"
                if "couldn't find remote ref" in str(exc.stderr)
                else "fetch failed"
            )
            raise self._error(what, exc) from exc
        except (ValueError, OSError, git.BadName) as exc:
            raise self._error(f"cannot read tag {self.ref!r}", exc) from exc

    def _has_commit(self, commit: str) -> bool:
        repo = self._open()
        try:
            # GitCmdObjectDB.has_object sees loose objects only; info() asks git
            return bool(repo.odb.info(bytes.fromhex(commit)).type == b"commit")
        except (ValueError, git.GitError):
            return False

    def _commit_info(self, commit: str) -> dict[str, str]:
        repo = self._open()
        try:
            c = repo.commit(commit)
            raw = c.message
            message = raw if isinstance(raw, str) else raw.decode(errors="replace")
            when = datetime.fromtimestamp(c.authored_date, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            return {
                "message": self.redact(message.strip()[:500]),
                "author": self.redact(f"{c.author.name} <{c.author.email}>"),
                "time": when,
            }
        except (ValueError, git.GitError):
            return {}

    def _snapshot(self, commit: str) -> Snapshot:
        repo = self._open()
        args = ["git", "ls-tree", "-r", "-z", "--full-tree", commit]
        if self.path:
            args += ["--", self.path]
        try:
            out = repo.git.execute(args, strip_newline_in_stdout=False)
            if self.path and not out:
                kind = repo.git.execute(["git", "cat-file", "-t", f"{commit}:{self.path}"])
                if kind != "tree":
                    raise SourceError(f"path {self.path!r} in {commit[:12]} is not a directory")
        except git.GitCommandError as exc:
            if "does not exist" in str(exc.stderr) or "Not a valid object" in str(exc.stderr):
                raise SourceError(
                    self.redact(
                        f"{self.display_url}: path {self.path!r} not found in commit {commit[:12]}"
                    )
                ) from exc
            raise self._error(f"cannot list commit {commit[:12]}", exc) from exc
        snap = Snapshot(commit)
        for record in str(out).split("\0"):
            if not record:
                continue
            info, _, path = record.partition("\t")
            mode, _type, sha = info.split(" ")
            snap.entries[path] = Entry(path, sha, mode, self.path)
        return snap

    def _changes(self, old: str, new: str) -> list[Change] | None:
        repo = self._open()
        if not self._has_commit(old):
            return None
        try:
            repo.git.execute(["git", "merge-base", "--is-ancestor", old, new])
        except git.GitCommandError:
            return None
        args = ["git", "diff-tree", "-r", "-z", "--no-renames", old, new]
        if self.path:
            args += ["--", self.path]
        try:
            out = str(repo.git.execute(args, strip_newline_in_stdout=False))
        except git.GitCommandError as exc:
            raise self._error(f"cannot diff {old[:12]}..{new[:12]}", exc) from exc
        fields = out.split("\0")
        changes: list[Change] = []
        i = 0
        while i + 1 < len(fields):
            header, path = fields[i], fields[i + 1]
            i += 2
            if not header.startswith(":"):
                continue
            _old_mode, new_mode, _old_sha, new_sha, status = header[1:].split(" ")
            changes.append(Change(status[:1], path, new_sha, new_mode))
        return changes

    def _read_blobs(self, shas: list[str]) -> dict[str, bytes]:
        repo = self._open()
        out: dict[str, bytes] = {}
        try:
            for sha in shas:
                out[sha] = repo.odb.stream(bytes.fromhex(sha)).read()
        except (ValueError, git.GitError) as exc:
            raise self._error("cannot read a blob", exc) from exc
        return out
