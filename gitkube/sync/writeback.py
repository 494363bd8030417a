"""Status written back to git: a commit on a status branch after a sync whose
outcome changed, and only then.

The branch (default ``gitkube/status``) is never the synced branch: the
constructor refuses that. Each commit holds ``status.json`` (machine-readable,
``StatusReport.status_file()``) and ``STATUS.md`` (a report a person reads on
their git host); other files on the branch are kept. Commits are built with
git plumbing in a bare cache repository — blobs, a tree and a commit written
into the object database, no work tree — and pushed to the remote.

Whether the outcome changed is decided by comparing the fingerprint of the
new ``status.json`` (times and ages left out) with the one at the tip of the
remote branch. A push rejected because the branch moved (another writer) is
rebased: the new status goes on top of the new tip, compared again, pushed
again, a bounded number of times. A remote that refuses the push (no
permission, a pre-receive hook) raises ``StatusWriteError``;
``StatusWriteback``, the sync loop's ``after_sync`` hook, records that in the
store and in the log and never lets it reach the loop.

GitPython runs in a worker thread; credentials in the remote URL never appear
in messages.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from io import BytesIO
from pathlib import Path
from typing import Any

import git
from git.objects.fun import tree_to_stream
from gitdb import IStream  # type: ignore[import-untyped]

from gitkube.api.keys import STATUS_WRITEBACK_KEY
from gitkube.control import Cache
from gitkube.control.applier import Fence, fence_holds
from gitkube.errors import ConfigError, GitkubeError, SourceError
from gitkube.store.base import Put
from gitkube.store.objects import ObjectStore
from gitkube.sync.health import SEVERITY
from gitkube.sync.report import (
    StatusReport,
    WritebackOutcome,
    build_status_report,
    format_time,
    redact,
    status_fingerprint,
)
from gitkube.sync.source import normal_url

log = logging.getLogger(__name__)

DEFAULT_STATUS_BRANCH = "gitkube/status"
STATUS_JSON = "status.json"
STATUS_MD = "STATUS.md"

_BLOB_MODE = 0o100644
_TREE_MODE = 0o040000
#: where the cache repository keeps the last known tip of the remote status branch
_REMOTE_TIP_REF = "refs/gitkube/status-remote"


class StatusWriteError(SourceError):
    """The status branch could not be written: the remote refused or is unreachable."""


# ---------------------------------------------------------------- branch names


def _branch_name(ref: str) -> str:
    ref = ref.strip()
    return ref[len("refs/heads/") :] if ref.startswith("refs/heads/") else ref


_BAD_REF = re.compile(
    r"(^[-/.])|(\.\.)|([\x00-\x20~^:?*\[\\\x7f])|(/\.)|(@\{)|(//)|([/.]$)|(\.lock$)"
)


def check_status_branch(branch: str, *, synced_branch: str) -> str:
    """The status branch name, or ``ConfigError`` when it is unusable."""
    name = _branch_name(branch)
    if not name or name == "@" or _BAD_REF.search(name):
        raise ConfigError(f"status branch {branch!r} is not a valid git branch name")
    if synced_branch and name == _branch_name(synced_branch):
        raise ConfigError(
            f"status branch {name!r} is the branch being synced; status commits there "
            f"would change the desired state. Choose another branch "
            f"(the default is {DEFAULT_STATUS_BRANCH!r})"
        )
    return name


# ---------------------------------------------------------------- STATUS.md


def _cell(value: Any) -> str:
    text = "" if value is None else str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


_HEALTH_MARK = {
    "Healthy": "✅",
    "Progressing": "⏳",
    "Degraded": "❌",
    "Missing": "❓",
    "Unknown": "❔",
}
_PHASE_MARK = {"Synced": "✅", "OutOfSync": "⚠️", "Failed": "❌", "Suspended": "⏸️"}


#: object rows in STATUS.md; beyond, only the objects that need attention
#: (status.json always has them all)
MARKDOWN_MAX_ROWS = 500


def render_status_markdown(report: StatusReport, *, max_rows: int = MARKDOWN_MAX_ROWS) -> str:
    """``STATUS.md``: the report a person reads on their git host."""
    short = report.revision[:12] or "(none)"
    lines = [
        "# gitkube status",
        "",
        f"**{_PHASE_MARK.get(report.phase, '')} {report.phase}** at revision `{short}`"
        + (f", synced {report.synced_at}" if report.synced_at else ""),
        "",
        "| | |",
        "|---|---|",
        f"| Revision | `{report.revision or '(none)'}` |",
    ]
    if report.attempted_revision and report.attempted_revision != report.revision:
        lines.append(f"| Last attempted revision | `{report.attempted_revision}` |")
    lines += [
        f"| Source | {_cell(report.repo)} (ref `{_cell(report.ref)}`"
        + (f", path `{_cell(report.path)}`" if report.path else "")
        + ") |",
        f"| Sync | {_cell(report.phase)} |",
        f"| Health | {_HEALTH_MARK.get(report.health, '')} {report.health} |",
        f"| Written | {report.generated_at} |",
    ]
    if report.message:
        lines.append(f"| Message | {_cell(report.message)} |")
    if report.refusal:
        r = report.refusal
        lines.append(
            f"| Refused commit | `{_cell(r.get('commit', ''))}` signed by "
            f"{_cell(r.get('signer', ''))}: {_cell(r.get('reason', ''))} |"
        )
    lines += ["", f"## Objects ({len(report.objects)})", ""]
    if report.objects:
        lines += [
            "| Kind | Name | Sync | Health | Replicas (ready/desired) | Endpoints "
            "| Path | Message |",
            "|---|---|---|---|---|---|---|---|",
        ]
        shown = report.objects
        if len(shown) > max_rows:
            attention = [o for o in shown if (o.sync, o.health) != ("Synced", "Healthy")]
            fine = [o for o in shown if (o.sync, o.health) == ("Synced", "Healthy")]
            shown = (attention + fine)[:max_rows]
        for obj in shown:
            name = f"{obj.namespace}/{obj.name}" if obj.namespace else obj.name
            replicas = (
                f"{obj.replicas_ready}/{obj.replicas_desired}"
                if obj.replicas_desired is not None
                else ""
            )
            endpoints = "" if obj.endpoints is None else obj.endpoints
            lines.append(
                f"| {obj.kind} | {_cell(name)} | {_cell(obj.sync)} | "
                f"{_HEALTH_MARK.get(obj.health, '')} {obj.health} | {_cell(replicas)} | "
                f"{_cell(endpoints)} | {_cell(obj.path)} | {_cell(obj.message)} |"
            )
        if len(shown) < len(report.objects):
            lines += [
                "",
                f"… and {len(report.objects) - len(shown)} more objects, all Synced and "
                f"Healthy unless listed above: see `{STATUS_JSON}` for every object.",
            ]
    else:
        lines.append("No objects are declared.")
    lines += ["", f"## Errors ({len(report.errors)})", ""]
    if report.errors:
        for err in report.errors:
            where = f"`{err.file}:{err.line}`: " if err.file else ""
            what = f"{err.kind}/{err.name}: " if err.kind else ""
            fld = f"`{err.field}`: " if err.field else ""
            lines.append(f"- {where}{what}{fld}{err.message}")
    else:
        lines.append("None.")
    if report.history:
        lines += [
            "",
            "## Recent syncs",
            "",
            "| Finished | Revision | Outcome | Created | Updated | Deleted | Errors |",
            "|---|---|---|---|---|---|---|",
        ]
        for rec in reversed(report.history):
            lines.append(
                f"| {rec.finished_at} | `{rec.revision[:12]}` | {rec.outcome} | "
                f"{rec.created} | {rec.updated} | {rec.deleted} | {rec.errors} |"
            )
    lines += ["", "_Written by gitkube; do not edit: the next status commit replaces it._", ""]
    return "\n".join(lines)


def commit_message(report: StatusReport) -> str:
    counts = ", ".join(
        f"{n} {h}"
        for h, n in sorted(report.health_counts().items(), key=lambda hn: SEVERITY.get(hn[0], 9))
    )
    head = f"status: {report.phase} {report.revision[:12] or '(no revision)'}"
    if counts:
        head += f" ({counts})"
    body = [str(err) for err in report.errors[:20]]
    return head + ("\n\n" + "\n".join(body) if body else "") + "\n"


# ---------------------------------------------------------------- the writer


def _unwrap(text: object) -> str:
    """GitPython's ``"\n  stderr: '...'"`` wrapping, removed."""
    match = re.match(r"^\s*(?:stderr|stdout): '(.*)'\s*$", str(text or ""), re.DOTALL)
    return match.group(1) if match else str(text or "")


def _command_detail(exc: git.GitCommandError) -> str:
    """What git said about a failed command, in a line: the refs ``push
    --porcelain`` rejected and why, and the remote's own messages."""
    parts = [
        line.rsplit("\t", 1)[-1]
        for line in _unwrap(exc.stdout).splitlines()
        if line.startswith("!")
    ]
    parts += [
        line.strip()
        for line in _unwrap(exc.stderr).splitlines()
        if line.strip() and not line.startswith("error: failed to push some refs")
    ]
    return "; ".join(dict.fromkeys(parts)) or f"git exited with status {exc.status}"


@dataclass(frozen=True)
class _Files:
    status_json: bytes
    status_md: bytes
    fingerprint: str
    message: str


class StatusWriter:
    """Commits status to ``branch`` of ``remote_url`` when the outcome changed."""

    def __init__(
        self,
        remote_url: str,
        *,
        branch: str = DEFAULT_STATUS_BRANCH,
        cache_dir: str | os.PathLike[str],
        synced_branch: str,
        max_attempts: int = 5,
        timeout_seconds: float = 120.0,
        author_name: str = "gitkube",
        author_email: str = "gitkube@localhost",
        signing_key: str = "",
    ) -> None:
        if not remote_url:
            raise ConfigError("status write-back needs a remote repository URL")
        if max_attempts < 1:
            raise ConfigError("status write-back needs max_attempts >= 1")
        # a relative local path must not be read relative to the cache repository
        self.remote_url = normal_url(remote_url)
        self.branch = check_status_branch(branch, synced_branch=synced_branch)
        self.cache_dir = Path(cache_dir)
        self.max_attempts = max_attempts
        self.timeout_seconds = timeout_seconds
        self.actor = git.Actor(author_name, author_email)
        #: an SSH private key: status commits are signed with it, and commits on
        #: the branch it did not sign are reported (``unsigned_commits``)
        self.signing_key = str(Path(signing_key).expanduser().resolve()) if signing_key else ""
        self.unsigned_commits: list[str] = []
        #: the fingerprint at the tip of the remote branch, as far as we know
        self._known_fingerprint: str | None = None
        #: one write at a time through the cache repository
        self._lock = asyncio.Lock()

    @property
    def display_url(self) -> str:
        return redact(self.remote_url)

    async def write(self, report: StatusReport) -> str | None:
        """Commit and push ``report``; the commit sha, or None when the outcome
        is the same as the one on the branch. ``StatusWriteError`` when the
        remote refuses or cannot be reached."""
        status = report.status_file()
        fingerprint = status_fingerprint(status)
        if fingerprint == self._known_fingerprint:
            return None
        files = _Files(
            status_json=(json.dumps(status, indent=2, sort_keys=False) + "\n").encode(),
            status_md=render_status_markdown(report).encode(),
            fingerprint=fingerprint,
            message=commit_message(report),
        )
        async with self._lock:
            return await asyncio.to_thread(self._write_blocking, files)

    # ------------------------------------------------------------ worker thread

    def _error(self, what: str, exc: Exception) -> StatusWriteError:
        detail = _command_detail(exc) if isinstance(exc, git.GitCommandError) else str(exc)
        detail = " ".join(detail.split()) or type(exc).__name__
        return StatusWriteError(
            redact(
                f"status branch {self.branch!r} of {self.display_url}: {what}: {detail}",
                self.remote_url,
            )
        )

    def _git(self, repo: git.Repo, *args: str) -> str:
        env = {
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": os.environ.get("GIT_SSH_COMMAND", "ssh -o BatchMode=yes"),
        }
        result: str = repo.git.execute(
            ["git", *args],
            env=env,
            kill_after_timeout=self.timeout_seconds,
            with_extended_output=False,
        )
        return result

    def _open_cache(self) -> git.Repo:
        try:
            if (self.cache_dir / "HEAD").exists():
                return git.Repo(self.cache_dir)
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            return git.Repo.init(self.cache_dir, bare=True)
        except (OSError, git.GitError) as exc:
            raise StatusWriteError(
                f"cannot use {self.cache_dir} as the status write-back cache: {exc}"
            ) from exc

    def _remote_tip(self, repo: git.Repo) -> str | None:
        """The commit at the tip of the remote status branch (fetched), or None."""
        try:
            listing = self._git(
                repo, "ls-remote", "--", self.remote_url, f"refs/heads/{self.branch}"
            )
        except git.GitCommandError as exc:
            raise self._error("cannot reach the remote", exc) from exc
        tip = listing.split()[0] if listing.strip() else None
        if tip is None:
            return None
        if not self._has_commit(repo, tip):
            try:
                self._git(
                    repo,
                    "fetch",
                    "--no-tags",
                    "--",
                    self.remote_url,
                    f"+refs/heads/{self.branch}:{_REMOTE_TIP_REF}",
                )
            except git.GitCommandError as exc:
                if "couldn't find remote ref" in str(exc.stderr):
                    return None  # deleted since ls-remote
                raise self._error("cannot fetch the status branch", exc) from exc
            tip = repo.git.rev_parse(_REMOTE_TIP_REF)
        return tip

    @staticmethod
    def _has_commit(repo: git.Repo, sha: str) -> bool:
        try:
            repo.git.cat_file("-e", f"{sha}^{{commit}}")
        except git.GitCommandError:
            return False
        return True

    @staticmethod
    def _fingerprint_at(repo: git.Repo, tip: str) -> str | None:
        try:
            blob = repo.commit(tip).tree / STATUS_JSON
            data = json.loads(blob.data_stream.read())
        except (KeyError, ValueError):
            return None
        return status_fingerprint(data) if isinstance(data, dict) else None

    def _build_commit(self, repo: git.Repo, parent: str | None, files: _Files) -> str:
        """A commit of ``files`` over ``parent``'s tree, written to the object
        database only."""

        def store_blob(data: bytes) -> bytes:
            return bytes(repo.odb.store(IStream(b"blob", len(data), BytesIO(data))).binsha)

        entries: dict[str, tuple[bytes, int, str]] = {}
        parents: list[git.Commit] = []
        if parent is not None:
            parent_commit = repo.commit(parent)
            parents.append(parent_commit)
            for item in parent_commit.tree:
                entries[item.name] = (item.binsha, item.mode, item.name)
        entries[STATUS_JSON] = (store_blob(files.status_json), _BLOB_MODE, STATUS_JSON)
        entries[STATUS_MD] = (store_blob(files.status_md), _BLOB_MODE, STATUS_MD)
        # git orders tree entries by name, a tree's name compared as if it ended in "/"
        ordered = sorted(entries.values(), key=lambda e: e[2] + "/" if e[1] == _TREE_MODE else e[2])
        stream = BytesIO()
        tree_to_stream(ordered, stream.write)
        raw = stream.getvalue()
        tree_sha = repo.odb.store(IStream(b"tree", len(raw), BytesIO(raw))).binsha
        if self.signing_key:
            return self._signed_commit(repo, tree_sha.hex(), parent, files.message)
        tree = git.Tree(repo, tree_sha)
        commit = git.Commit.create_from_tree(
            repo,
            tree,
            files.message,
            parent_commits=parents,
            head=False,
            author=self.actor,
            committer=self.actor,
        )
        return str(commit.hexsha)

    def _signed_commit(self, repo: git.Repo, tree: str, parent: str | None, message: str) -> str:
        """``git commit-tree -S`` with the SSH signing key."""
        env = {
            "GIT_AUTHOR_NAME": self.actor.name or "gitkube",
            "GIT_AUTHOR_EMAIL": self.actor.email or "gitkube@localhost",
            "GIT_COMMITTER_NAME": self.actor.name or "gitkube",
            "GIT_COMMITTER_EMAIL": self.actor.email or "gitkube@localhost",
        }
        args = ["git", "-c", "gpg.format=ssh", "-c", f"user.signingKey={self.signing_key}"]
        args += ["-c", "gpg.ssh.program=ssh-keygen", "commit-tree", tree, "-S", "-m", message]
        if parent is not None:
            args += ["-p", parent]
        try:
            out: str = repo.git.execute(args, env=env, kill_after_timeout=self.timeout_seconds)
        except git.GitCommandError as exc:
            raise self._error("cannot sign the status commit", exc) from exc
        return out.strip()

    def _own_signers_file(self) -> Path:
        """An allowed-signers file holding only the signing key's public half."""
        path = self.cache_dir / "gitkube-allowed-signers"
        try:
            public = subprocess.run(
                ["ssh-keygen", "-y", "-f", self.signing_key],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError) as exc:
            raise StatusWriteError(
                f"status-signing-key: cannot read the public key of {self.signing_key}: {exc}"
            ) from exc
        path.write_text(f"gitkube {public}\n")
        return path

    def _find_unsigned(self, repo: git.Repo, tip: str) -> list[str]:
        """Commits at the tip of the branch, newest first, down to the last
        one this key signed (at most 100 looked at)."""
        signers = self._own_signers_file()
        found: list[str] = []
        for sha in repo.git.rev_list("--max-count=100", tip).split():
            try:
                repo.git.execute(
                    ["git", "-c", f"gpg.ssh.allowedSignersFile={signers}", "verify-commit", sha]
                )
                return found
            except git.GitCommandError:
                found.append(sha)
        return found

    def _push(self, repo: git.Repo, commit: str) -> bool:
        """True when pushed; False when the branch moved under us (retry)."""
        try:
            self._git(
                repo,
                "push",
                "--porcelain",
                "--",
                self.remote_url,
                f"{commit}:refs/heads/{self.branch}",
            )
        except git.GitCommandError as exc:
            text = f"{exc.stdout}\n{exc.stderr}"
            if "[remote rejected]" not in text and (
                "(fetch first)" in text or "(non-fast-forward)" in text or "stale info" in text
            ):
                return False
            raise self._error("the remote refused the push", exc) from exc
        return True

    def _write_blocking(self, files: _Files) -> str | None:
        repo = self._open_cache()
        try:
            for attempt in range(1, self.max_attempts + 1):
                tip = self._remote_tip(repo)
                if self.signing_key:
                    new = [
                        c
                        for c in (self._find_unsigned(repo, tip) if tip else [])
                        if c not in self.unsigned_commits
                    ]
                    # kept after gitkube commits on top: they are still on the branch
                    self.unsigned_commits = (new + self.unsigned_commits)[:20]
                    for sha in new:
                        log.warning(
                            "status branch %s: commit %s was not signed by gitkube",
                            self.branch,
                            sha[:12],
                        )
                if tip is not None and self._fingerprint_at(repo, tip) == files.fingerprint:
                    self._known_fingerprint = files.fingerprint
                    return None
                commit = self._build_commit(repo, tip, files)
                if self._push(repo, commit):
                    self._known_fingerprint = files.fingerprint
                    repo.git.update_ref(_REMOTE_TIP_REF, commit)
                    log.info(
                        "status %s pushed to %s of %s",
                        commit[:12],
                        self.branch,
                        self.display_url,
                    )
                    return commit
                log.info(
                    "status branch %s moved during the push (attempt %d/%d); rebasing",
                    self.branch,
                    attempt,
                    self.max_attempts,
                )
            raise StatusWriteError(
                f"status branch {self.branch!r} of {self.display_url}: the push was rejected "
                f"{self.max_attempts} times because the branch kept moving"
            )
        finally:
            repo.close()


# ---------------------------------------------------------------- the sync loop's hook


class StatusWriteback:
    """The sync loop's ``after_sync`` hook: build the report from the store,
    write it to git when the outcome changed, record what happened in the
    store. Never raises: a failed write-back must not stop syncing."""

    def __init__(
        self,
        writer: StatusWriter,
        objects: ObjectStore,
        *,
        clock: Callable[[], datetime] | None = None,
        cache: Cache | None = None,
    ) -> None:
        self.writer = writer
        self.objects = objects
        #: the process's shared cache: the report reads it instead of the store
        self.cache = cache
        self._clock = clock
        self.last: WritebackOutcome | None = None
        #: in a master, the leader's fence: a deposed leader writes nothing
        #: more to git, and its outcome record is refused by the store
        self.fence: Fence | None = None

    async def __call__(self, result: object = None) -> WritebackOutcome | None:
        return await self.write_status()

    async def write_status(self) -> WritebackOutcome | None:
        """Write the status, and record the outcome; None when this process
        no longer leads (nothing is written)."""
        now = self._clock() if self._clock else datetime.now(UTC)
        branch = self.writer.branch
        if not await self._leading():
            log.info("status write-back skipped: this master no longer leads")
            return None
        try:
            report = await build_status_report(self.objects, now=now, cache=self.cache)
            commit = await self.writer.write(report)
            outcome = WritebackOutcome(
                time=format_time(now),
                outcome="Committed" if commit else "Unchanged",
                branch=branch,
                commit=commit or (self.last.commit if self.last else ""),
                unsigned_commits=list(self.writer.unsigned_commits),
            )
        except GitkubeError as exc:
            log.warning("status write-back failed: %s", exc)
            outcome = WritebackOutcome(
                time=format_time(now), outcome="Failed", branch=branch, error=str(exc)
            )
        except Exception as exc:  # never into the sync loop
            message = redact(f"{type(exc).__name__}: {exc}", self.writer.remote_url)
            log.error("status write-back failed unexpectedly: %s", message)
            outcome = WritebackOutcome(
                time=format_time(now), outcome="Failed", branch=branch, error=message
            )
        await self._record(outcome)
        return outcome

    async def _record(self, outcome: WritebackOutcome) -> None:
        previous = self.last
        self.last = outcome
        unchanged = previous is not None and (
            previous.outcome,
            previous.commit,
            previous.error,
            previous.unsigned_commits,
        ) == (outcome.outcome, outcome.commit, outcome.error, outcome.unsigned_commits)
        if unchanged:
            return
        fenced = [self.fence()] if self.fence is not None else []
        try:
            written = await self.objects.store.txn(
                fenced, [Put(STATUS_WRITEBACK_KEY, outcome.to_json())]
            )
        except Exception as exc:
            log.warning("cannot record the status write-back outcome: %s", exc)
            return
        if not written.succeeded:
            self.last = previous
            log.info("status write-back outcome not recorded: this master no longer leads")

    async def _leading(self) -> bool:
        """Whether the fence holds (always, without one)."""
        if self.fence is None:
            return True
        try:
            return await fence_holds(self.objects.store, self.fence())
        except GitkubeError as exc:
            log.warning("status write-back: cannot read the leader key: %s", exc)
            return False


__all__ = [
    "DEFAULT_STATUS_BRANCH",
    "StatusWriteError",
    "StatusWriteback",
    "StatusWriter",
    "check_status_branch",
    "commit_message",
    "redact",
    "render_status_markdown",
]
