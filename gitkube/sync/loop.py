"""The sync loop: git revision -> validate -> plan -> apply, whole or not at all.

``SyncLoop.reconcile_once()`` runs one sync and returns a ``SyncResult``:

1. ``gitkube suspend`` (``SYNC_CONTROL_KEY``) stops everything but recording
   the phase ``Suspended``.
2. Fetch the tracked ref. A fetch that fails (unreachable remote, deleted
   branch) leaves the cluster as it is, records ``Failed`` with the reason,
   and is retried by ``run`` with exponential back-off.
3. No-op: the same commit as the last pass and a store that has not moved
   since (its global revision) cost only the fetch, the ref compare and one
   revision read: no tree, no range.
4. Read the commit's files: from the last commit this loop read, a git tree
   diff; after a history rewrite (the last commit gone or not an ancestor) or
   in a fresh process, the full tree. Blobs are parsed and validated once
   per (path, blob sha) and cached, so only changed files are parsed again.
5. Every manifest of the revision is valid and no object is declared twice,
   or nothing is written: the last good revision stays, and the state is
   ``Failed`` with every error (file:line, as ``gitkube validate`` prints).
6. Plan (``gitkube.sync.diff.plan_sync``) against the live objects and apply
   in guarded transactions through the control kit's ``Applier``
   (``gitkube.sync.apply``; in a master, each carries the leader's fence); a
   lost compare catches the cache up and plans again, a bounded number of
   times.
7. The sync state and history are written last (fenced too), so a crash
   mid-apply is repaired by the next pass.

The live objects are read from the process's shared cache
(``gitkube.control.Cache``, fed by the store watch), never by listing the
store: an incremental sync costs the changed files, not the repository.
An object's wire form (what the plan compares) is made only when the plan
compares it: objects verified at their revision by an earlier pass are not.

``after_sync`` (e.g. the status write-back) is called after every pass with
its result, "Unchanged" ones included; it decides what is worth doing, and
an exception from it is logged, never raised.

``trigger()`` coalesces any number of requests (webhooks, a watched local
repository, polls) into one pending sync of the newest revision; ``run()``
drives passes on triggers and on the poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from gitkube.api import annotations as ann
from gitkube.api.keys import (
    SYNC_CONTROL_KEY,
    SYNC_DIFFS_KEY,
    SYNC_DRIFT_KEY,
    SYNC_HISTORY_KEY,
    SYNC_STATE_KEY,
)
from gitkube.api.objects import KINDS, ObjectMeta, Service
from gitkube.api.validation import (
    DEFAULT_MAX_BYTES,
    DEFAULT_UNSUPPORTED,
    CustomKind,
    IgnoredField,
    Manifest,
    ManifestError,
    check_across_files,
    crd_summary,
    custom_kinds_of,
    load_manifests,
)
from gitkube.control import Applier, Backoff, Cache, Encoded, Fence
from gitkube.errors import Conflict, GitkubeError, LeadershipLost, SourceError
from gitkube.store.base import Put
from gitkube.store.objects import ObjectStore, now_iso
from gitkube.sync.apply import DEFAULT_BATCH_SIZE, ApplyResult, apply_plan
from gitkube.sync.diff import (
    Desired,
    Live,
    SyncPlan,
    cluster_ip_conflicts,
    plan_sync,
    recorded_diff,
    recorded_drift,
)
from gitkube.sync.sops import SopsDecryptor, open_manifest
from gitkube.sync.source import Entry, GitSource
from gitkube.sync.state import (
    HISTORY_LENGTH,
    ObjectSyncStatus,
    SyncControl,
    SyncError,
    SyncRecord,
    SyncState,
    history_from_json,
    history_to_json,
)
from gitkube.sync.verify import CommitVerifier, Refusal

log = logging.getLogger(__name__)

#: "Succeeded" | "Failed" | "Unchanged" | "Suspended"
Outcome = str
#: (stage, done, total): stages "parse", "apply"
ProgressFn = Callable[[str, int, int], None]


@dataclass
class SyncSettings:
    prune: bool = True
    self_heal: bool = True
    #: poll interval of ``run``
    interval_seconds: float = 60.0
    #: objects per store transaction (etcd refuses more than 128 operations)
    batch_size: int = DEFAULT_BATCH_SIZE
    #: plan again this many times when a guarded write loses
    max_conflict_retries: int = 5
    #: back-off of ``run`` after a failed fetch or an unreachable store
    backoff_base_seconds: float = 1.0
    backoff_cap_seconds: float = 300.0
    #: per-object sync state goes into the state key up to this many objects
    #: (beyond, ``gitkube status`` reads the objects' provenance annotations)
    max_state_objects: int = 2000
    max_file_bytes: int = DEFAULT_MAX_BYTES
    #: kinds gitkube does not run: "store" (validated, stored, not acted on) or "error"
    unsupported_kinds: str = DEFAULT_UNSUPPORTED


@dataclass
class SyncResult:
    outcome: Outcome
    revision: str = ""
    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0
    errors: list[SyncError] = field(default_factory=list)
    #: not errors: symlinks and submodules skipped, fields ignored, drift left alone
    warnings: list[str] = field(default_factory=list)
    duration_seconds: float = 0.0
    message: str = ""
    #: manifest files in the revision, and those parsed in this pass
    files: int = 0
    parsed_files: int = 0
    #: True when the whole tree was read (cold start, history rewritten)
    full: bool = False
    #: True when trying again later may succeed (fetch or store failure)
    retryable: bool = False
    #: the revision was refused by signature verification (``Refusal.to_dict()``)
    refusal: dict[str, str] | None = None
    plan: SyncPlan | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.outcome in ("Succeeded", "Unchanged", "Suspended")

    def counts(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "revision": self.revision,
            **self.counts(),
            "errors": [{**asdict(e), "text": str(e)} for e in self.errors],
            "warnings": list(self.warnings),
            "durationSeconds": round(self.duration_seconds, 4),
            "message": self.message,
            "files": self.files,
            "parsedFiles": self.parsed_files,
            "full": self.full,
            **({"refusal": self.refusal} if self.refusal else {}),
        }


@dataclass
class _Parsed:
    """One blob at one path, parsed and validated."""

    manifests: list[Manifest]
    desired: list[Desired]
    errors: list[ManifestError]
    ignored: list[IgnoredField]


def _slim(manifest: Manifest) -> Manifest:
    """What the cache keeps of a manifest for ``check_across_files``: where it is
    and which object it names (the parsed data and the full object are in
    ``Desired``; keeping both doubled the memory of a 10,000-object sync)."""
    obj = manifest.obj
    if obj.KIND == "CustomResourceDefinition":
        # what custom_kinds_of reads (its kinds' scope, plural, versions)
        return Manifest(
            manifest.path,
            manifest.document,
            manifest.line,
            {},
            crd_summary(obj),
            manifest.field_lines,
        )
    meta = ObjectMeta(name=obj.metadata.name, namespace=obj.metadata.namespace)
    slim = type(obj)(metadata=meta)
    if isinstance(obj, Service) and isinstance(slim, Service):
        slim.spec.cluster_ip = obj.spec.cluster_ip  # for the duplicate clusterIP check
    return Manifest(manifest.path, manifest.document, manifest.line, {}, slim, manifest.field_lines)


def _refusal_error(refusal: Refusal) -> SyncError:
    return SyncError(
        message=f"signature verification refused commit {refusal.commit[:12]} "
        f"(signer: {refusal.signer}): {refusal.reason}",
    )


def _sync_error(err: ManifestError) -> SyncError:
    return SyncError(
        message=err.message,
        file=err.file,
        line=err.line,
        kind=err.kind,
        name=err.name,
        field=err.field,
        document=err.document,
    )


def _refusal_errors(plan: SyncPlan, manifests: list[Manifest]) -> list[SyncError]:
    """The plan's refused changes as errors located at their manifests."""
    where = {m.obj.key: m for m in manifests}
    errors = []
    for r in plan.refused:
        manifest = where.get(r.key)
        errors.append(
            SyncError(
                message=r.message,
                file=r.path,
                line=manifest.line if manifest is not None else 0,
                kind=r.kind,
                name=r.name,
                field=r.field,
                document=manifest.document if manifest is not None else 0,
            )
        )
    return errors


_gc_holders = 0


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Cyclic garbage collection paused for one pass. A pass allocates tens
    of thousands of small objects while the caches hold hundreds of
    thousands; the collector re-scanning them made a 10,000-object sync
    several times slower (measured: bench/sync.py). Reference counting still
    frees everything; cycles are collected when the pass ends."""
    global _gc_holders
    paused = gc.isenabled() or _gc_holders > 0
    if paused:
        _gc_holders += 1
        gc.disable()
    try:
        yield
    finally:
        if paused:
            _gc_holders -= 1
            if _gc_holders == 0:
                gc.enable()


class SyncLoop:
    """One repository synced into one store; see the module docstring."""

    def __init__(
        self,
        objects: ObjectStore,
        source: GitSource,
        settings: SyncSettings | None = None,
        *,
        after_sync: Callable[[SyncResult], Awaitable[Any]] | None = None,
        progress: ProgressFn | None = None,
        verifier: CommitVerifier | None = None,
        decryptor: SopsDecryptor | None = None,
        cache: Cache | None = None,
        applier: Applier | None = None,
    ) -> None:
        self.objects = objects
        self.source = source
        #: signature verification between fetch and read (``gitkube.sync.verify``)
        self.verifier = verifier
        #: SOPS-encrypted manifests are decrypted with it (``gitkube.sync.sops``)
        self.decryptor = decryptor
        self.settings = settings or SyncSettings()
        self.after_sync = after_sync
        self.progress = progress
        #: the process's shared cache (its own when none is given)
        self.cache = cache if cache is not None else Cache(objects.store)
        #: every write goes through it (with the leader's fence in a master)
        self.applier = applier if applier is not None else Applier(objects)
        # git side: the files of the last commit read, and the parse cache
        self._index_commit = ""
        self._index: dict[str, Entry] = {}
        self._parsed: dict[tuple[str, str], _Parsed] = {}
        #: the kinds the CustomResourceDefinitions of the last parse declare
        self._custom_kinds: dict[tuple[str, str], CustomKind] = {}
        # store side: the store revision up to which this loop knows every
        # write (0: unknown; someone else may have written)
        self._known_revision = 0
        #: key -> (mod_revision, desired hash) of live objects known to equal git
        self._verified: dict[str, tuple[int, str]] = {}
        # the no-op check: (commit, store revision) after the last full pass
        self._quiet: tuple[str, int] | None = None
        self._suspended = False
        #: the drift record last written (written again only when it changes)
        self._drift_written = b""
        # triggers
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: int | None = None
        self._pending_revision: str | None = None
        #: counters, for tests and metrics
        self.triggers = 0
        self.passes = 0

    @property
    def fence(self) -> Fence | None:
        """The leader's fence (``LeaderElection.fence``) on every write, or None."""
        return self.applier.fence

    @fence.setter
    def fence(self, fence: Fence | None) -> None:
        self.applier = self.applier.fenced(fence)

    # ------------------------------------------------------------ triggers

    def trigger(self, revision: str | None = None) -> None:
        """Ask for a sync (of ``revision`` if known; the tip is fetched anyway).
        Any number of calls before the next pass starts make one pass. Safe to
        call from another thread."""
        self.triggers += 1
        if revision:
            self._pending_revision = revision
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        if threading.get_ident() == self._thread:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Sync on triggers and every ``interval_seconds`` until ``stop`` is set."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._wake = wake = asyncio.Event()
        wake.set()
        backoff = Backoff(self.settings.backoff_base_seconds, self.settings.backoff_cap_seconds)
        delay = self.settings.interval_seconds
        while not stop.is_set():
            waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
            await asyncio.wait(waiters, timeout=delay, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waiters:
                waiter.cancel()
            if stop.is_set():
                break
            wake.clear()
            self._pending_revision = None
            try:
                result = await self.reconcile_once()
                retry = result.retryable
            except GitkubeError as exc:
                log.warning("sync: %s", self.source.redact(str(exc)))
                retry = True
            except Exception as exc:
                log.error("sync failed unexpectedly: %s", self.source.redact(repr(exc)))
                retry = True
            if retry:
                delay = min(backoff.next(), max(self.settings.interval_seconds, 0.001) * 10)
            else:
                backoff.reset()
                delay = self.settings.interval_seconds

    # ------------------------------------------------------------ one pass

    async def reconcile_once(self, *, full: bool = False) -> SyncResult:
        """One sync; see the module docstring. ``full`` skips the no-op check
        and the live mirror (re-reads everything)."""
        with _gc_paused():
            return await self._reconcile(full=full)

    async def _reconcile(self, *, full: bool) -> SyncResult:
        self.passes += 1
        started = time.perf_counter()
        started_at = now_iso()
        store = self.objects.store
        if full:
            self._quiet = None
            self._known_revision = 0

        store_revision = await store.revision()
        quiet = self._quiet is not None and self._quiet[1] == store_revision
        if quiet and self._suspended:
            result = SyncResult("Suspended", message="sync is suspended")
            await self._after(result)
            return result
        if not quiet:
            control = await self._read_control()
            if control.suspended:
                result = await self._record_suspended(control, started, started_at)
                await self._after(result)
                return result
            self._suspended = False

        try:
            commit = await self.source.fetch()
        except SourceError as exc:
            result = await self._record_source_failure(exc, started, started_at)
            await self._after(result)
            return result

        if quiet and self._quiet is not None and self._quiet[0] == commit:
            result = SyncResult(
                "Unchanged",
                revision=commit,
                duration_seconds=time.perf_counter() - started,
                message="nothing changed",
            )
        else:
            result = await self._sync(commit, started_at=started_at, started=started)
        await self._after(result)
        return result

    async def _after(self, result: SyncResult) -> None:
        """The ``after_sync`` hook, after every pass (an "Unchanged" one too:
        the hook decides what is worth doing); it never stops syncing."""
        if self.after_sync is None:
            return
        try:
            await self.after_sync(result)
        except Exception as exc:
            log.error("after-sync hook failed: %s", self.source.redact(repr(exc)))

    async def preview(self) -> SyncResult:
        """What a sync would do now, writing nothing (``gitkube diff``):
        ``outcome`` is "Failed" (fetch or validation; ``errors``), "Unchanged"
        (in sync) or "OutOfSync" (``plan`` holds the differences)."""
        started = time.perf_counter()
        try:
            commit = await self.source.fetch()
            result = SyncResult("Unchanged", revision=commit)
            state, _ = await self._read_state()
            refusal = await self._verify(commit, state, result)
            if refusal is not None:
                result.outcome, result.message = "Failed", str(refusal)
                result.errors = [_refusal_error(refusal)]
                return result
            manifests, desired = await self._read_revision(commit, result)
        except SourceError as exc:
            message = self.source.redact(str(exc))
            return SyncResult("Failed", errors=[SyncError(message=message)], message=message)
        errors = [e for parsed in self._current_parsed() for e in parsed.errors]
        errors += check_across_files(manifests)
        if errors:
            errors.sort(key=lambda e: (e.file, e.document, e.line))
            result.outcome = "Failed"
            result.errors = [_sync_error(e) for e in errors]
            result.message = f"{len(errors)} error(s) in {commit[:12]}"
        else:
            live, _ = await self._read_live()
            plan = plan_sync(
                desired,
                live.values(),
                revision=commit,
                prune=self.settings.prune,
                self_heal=self.settings.self_heal,
            )
            result.plan, result.unchanged = plan, plan.unchanged
            if plan.refused:
                result.outcome = "Failed"
                result.errors = _refusal_errors(plan, manifests)
                result.message = f"{len(result.errors)} error(s) in {commit[:12]}"
                result.duration_seconds = time.perf_counter() - started
                return result
            result.created, result.updated = len(plan.creates), len(plan.updates)
            result.deleted = len(plan.deletes)
            if not plan.empty or plan.drifted:
                result.outcome = "OutOfSync"
            result.message = (
                f"{commit[:12]}: {result.created} to create, {result.updated} to update, "
                f"{result.deleted} to delete, {plan.unchanged} unchanged"
            )
        result.duration_seconds = time.perf_counter() - started
        return result

    async def _sync(self, commit: str, *, started_at: str, started: float) -> SyncResult:
        state, history = await self._read_state()
        result = SyncResult("Succeeded", revision=commit)

        # ---- signatures: a refused revision is not read, nothing of it applies
        refusal = await self._verify(commit, state, result)
        if refusal is not None:
            result.outcome = "Failed"
            result.errors = [_refusal_error(refusal)]
            result.message = f"{refusal}; nothing applied" + (
                f", still at {state.revision[:12]}" if state.revision else ""
            )
            state.attempted_revision, state.attempted_at = commit, now_iso()
            state.phase, state.message, state.errors = "Failed", result.message, result.errors
            return await self._finish(result, state, history, started, started_at)

        # ---- read and validate the revision
        try:
            manifests, desired = await self._read_revision(commit, result)
        except SourceError as exc:
            return await self._record_source_failure(exc, started, started_at, state=state)
        errors = [e for parsed in self._current_parsed() for e in parsed.errors]
        errors += check_across_files(manifests)
        if errors:
            errors.sort(key=lambda e: (e.file, e.document, e.line))
            result.outcome = "Failed"
            result.errors = [_sync_error(e) for e in errors]
            result.message = f"{len(errors)} error(s) in {commit[:12]}; nothing applied" + (
                f", still at {state.revision[:12]}" if state.revision else ""
            )
            state.attempted_revision, state.attempted_at = commit, now_iso()
            state.phase, state.message, state.errors = "Failed", result.message, result.errors
            return await self._finish(result, state, history, started, started_at)

        # ---- plan and apply, re-planning after a lost compare
        applied = ApplyResult()
        plan = SyncPlan()
        for attempt in range(self.settings.max_conflict_retries + 1):
            live, read_at = await self._read_live()
            conflicts = cluster_ip_conflicts(desired, live.values())
            if conflicts:
                lines = {
                    (m.obj.KIND, m.obj.namespace, m.obj.name): (m.line, m.document)
                    for m in manifests
                }
                result.outcome = "Failed"
                result.errors = []
                for c in conflicts:
                    line, document = lines.get(
                        (c.desired.kind, c.desired.namespace, c.desired.name), (0, 0)
                    )
                    result.errors.append(
                        SyncError(
                            message=c.message,
                            file=c.desired.path,
                            line=line,
                            kind="Service",
                            name=c.desired.name,
                            field="spec.clusterIP",
                            document=document,
                        )
                    )
                result.message = f"{len(conflicts)} error(s) in {commit[:12]}; nothing applied"
                state.attempted_revision, state.attempted_at = commit, now_iso()
                state.phase, state.message, state.errors = "Failed", result.message, result.errors
                return await self._finish(result, state, history, started, started_at)
            plan = plan_sync(
                desired,
                live.values(),
                revision=commit,
                prune=self.settings.prune,
                self_heal=self.settings.self_heal,
                verified=self._verified,
            )
            self._verified = plan.verified
            if plan.refused:
                result.outcome = "Failed"
                result.errors = _refusal_errors(plan, manifests)
                result.message = (
                    f"{len(result.errors)} error(s) in {commit[:12]}; nothing applied"
                    + (f", still at {state.revision[:12]}" if state.revision else "")
                )
                state.attempted_revision, state.attempted_at = commit, now_iso()
                state.phase, state.message, state.errors = "Failed", result.message, result.errors
                return await self._finish(result, state, history, started, started_at)
            if plan.empty:
                self._known_revision = read_at
                break
            before = len(applied.revisions)
            try:
                await apply_plan(
                    self.applier,
                    plan,
                    batch_size=self.settings.batch_size,
                    progress=self._apply_progress,
                    result=applied,
                )
                self._note_writes(applied, read_at, first_txn=before)
                break
            except LeadershipLost:
                self._known_revision = 0
                raise  # a deposed leader writes nothing more, not even the sync state
            except Conflict:
                self._known_revision = 0
                if attempt == self.settings.max_conflict_retries:
                    raise
                log.info("sync: the store changed during apply; planning again")
        result.plan = plan
        result.created, result.updated, result.deleted = (
            applied.created,
            applied.updated,
            applied.deleted,
        )
        result.unchanged = plan.unchanged
        for dr in plan.drifted:
            result.warnings.append(
                f"{dr.kind}/{dr.name} differs from git (self-heal off): {', '.join(dr.fields)}"
            )
        for orphan in plan.orphans:
            result.warnings.append(f"{orphan.kind}/{orphan.name} is no longer in git (prune off)")
        wrote = applied.created or applied.updated or applied.deleted
        result.message = (
            f"synced {commit[:12]}: {applied.created} created, {applied.updated} updated, "
            f"{applied.deleted} deleted, {plan.unchanged} unchanged"
        )

        in_sync = (
            state.phase == ("OutOfSync" if plan.drifted else "Synced")
            and state.revision == commit
            and not wrote
            and not state.errors
        )
        if in_sync:
            result.outcome = "Unchanged"
            self._quiet = (commit, self._known_revision) if self._known_revision else None
            result.duration_seconds = time.perf_counter() - started
            return result
        now = now_iso()
        if state.revision != commit or not state.commit:
            state.commit = await self.source.commit_info(commit)
        state.revision, state.synced_at = commit, now
        state.attempted_revision, state.attempted_at = commit, now
        state.phase = "OutOfSync" if plan.drifted else "Synced"
        state.errors, state.message = [], result.message
        if len(desired) <= self.settings.max_state_objects:
            drifted = {dr.key for dr in plan.drifted}
            state.objects = [
                ObjectSyncStatus(
                    d.kind,
                    d.namespace,
                    d.name,
                    d.path,
                    "OutOfSync" if d.key in drifted else "Synced",
                )
                for d in sorted(desired, key=lambda d: d.key)
            ]
        else:
            state.objects = []
        return await self._finish(result, state, history, started, started_at)

    # ------------------------------------------------------------ git side

    async def _verify(self, commit: str, state: SyncState, result: SyncResult) -> Refusal | None:
        """Signature verification of ``commit`` (``gitkube.sync.verify``); records
        the outcome in ``state`` and ``result``. None when it may be applied."""
        if self.verifier is None or not self.verifier.policy.enabled:
            return None
        tag = self.source.ref if self.source.kind_of_ref() == "tag" else ""
        verifier = self.verifier
        verdict = await asyncio.to_thread(
            lambda: verifier.verify(
                self.source.mirror, commit, since=state.verified_revision, tag=tag
            )
        )
        result.warnings.extend(verdict.warnings)
        if verdict.refusal is not None:
            result.refusal = state.refusal = verdict.refusal.to_dict()
            return verdict.refusal
        state.verified_revision, state.refusal = commit, {}
        return None

    def _current_parsed(self) -> Iterable[_Parsed]:
        for entry in self._index.values():
            if entry.is_manifest:
                yield self._parsed[(entry.path, entry.sha)]

    async def _read_revision(
        self, commit: str, result: SyncResult
    ) -> tuple[list[Manifest], list[Desired]]:
        changes = None
        if self._index_commit and self._index_commit != commit:
            changes = await self.source.changes(self._index_commit, commit)
            if changes is None:
                result.warnings.append(
                    f"history rewritten: {self._index_commit[:12]} is not an ancestor of "
                    f"{commit[:12]}; full resync"
                )
                self._parsed.clear()
        if self._index_commit == commit:
            pass
        elif changes is not None:
            for change in changes:
                if change.status == "D":
                    self._index.pop(change.path, None)
                else:
                    self._index[change.path] = Entry(
                        change.path, change.sha, change.mode, self.source.path
                    )
        else:
            snapshot = await self.source.snapshot(commit)
            self._index = snapshot.entries
            result.full = True
        self._index_commit = commit

        entries = [e for _, e in sorted(self._index.items())]
        manifests_entries = [e for e in entries if e.is_manifest]
        result.files, result.parsed_files = len(manifests_entries), 0
        while True:
            await self._parse(manifests_entries, result)
            # the CustomResourceDefinitions of this revision decide how custom
            # resources are built (scope, plural): parse again when they change
            declared = custom_kinds_of(
                m
                for entry in manifests_entries
                for m in self._parsed[(entry.path, entry.sha)].manifests
            )
            if declared == self._custom_kinds:
                break
            self._custom_kinds = declared
            self._parsed.clear()

        for entry in entries:
            if entry.mode == "120000":
                result.warnings.append(f"{entry.path}: symlink not followed (ignored)")
            elif entry.mode == "160000":
                result.warnings.append(f"{entry.path}: submodule skipped")
        manifests: list[Manifest] = []
        desired: list[Desired] = []
        for entry in manifests_entries:
            parsed = self._parsed[(entry.path, entry.sha)]
            manifests.extend(parsed.manifests)
            desired.extend(parsed.desired)
            result.warnings.extend(str(i) for i in parsed.ignored)
        return manifests, desired

    async def _parse(self, manifests_entries: list[Entry], result: SyncResult) -> None:
        """Parse and validate the manifest files not parsed yet (by path and
        blob), with the custom kinds the last parse found declared."""
        todo = [e for e in manifests_entries if (e.path, e.sha) not in self._parsed]
        result.parsed_files += len(todo)
        if todo:
            blobs = await self.source.read_blobs(
                (e.sha for e in todo), max_bytes=self.settings.max_file_bytes
            )
            for i, entry in enumerate(todo):
                data, problem = open_manifest(blobs[entry.sha], entry.path, self.decryptor)
                found, errors, ignored = (
                    ([], [problem], [])
                    if problem is not None
                    else load_manifests(
                        data,
                        entry.path,
                        max_bytes=self.settings.max_file_bytes,
                        unsupported=self.settings.unsupported_kinds,
                        custom=self._custom_kinds,
                    )
                )
                self._parsed[(entry.path, entry.sha)] = _Parsed(
                    [_slim(m) for m in found], [Desired.of(m) for m in found], errors, ignored
                )
                if self.progress and (i % 50 == 0 or i == len(todo) - 1):
                    self.progress("parse", i + 1, len(todo))
        current = {(e.path, e.sha) for e in manifests_entries}
        if len(self._parsed) > len(current):
            self._parsed = {k: v for k, v in self._parsed.items() if k in current}

    # ------------------------------------------------------------ store side

    async def _read_live(self) -> tuple[dict[str, Live], int]:
        """The live objects, from the shared cache brought up to the store's
        current revision, and that revision. Nothing is copied: an object's
        wire form is made only if the plan compares it. Objects of kinds
        gitkube stores without running them (ingresses, custom resources, ...)
        are kept by the cache as raw keys: they are found too, to be pruned."""
        await self.cache.sync()
        lives = {
            obj.key: Live.cached(obj) for cls in KINDS.values() for obj in self.cache.list(cls)
        }
        for key, kv in self.cache.unknown_objects().items():
            lives[key] = Live.from_wire(json.loads(kv.value), key=key, mod_revision=kv.mod_revision)
        return lives, self.cache.revision

    def _note_writes(self, applied: ApplyResult, read_at: int, *, first_txn: int) -> None:
        """Remember what this pass wrote equals git; the loop knows every write
        up to its last one only if nobody else wrote in between (the
        revisions follow each other from the one the plan was read at)."""
        for key, (wire, revision) in applied.written.items():
            digest = (wire.get("metadata") or {}).get("annotations", {}).get(ann.DESIRED_HASH)
            if digest:
                self._verified[key] = (revision, digest)
        applied.written.clear()
        applied.removed.clear()
        revisions = applied.revisions[first_txn:]
        contiguous = bool(read_at) and revisions == list(
            range(read_at + 1, read_at + 1 + len(revisions))
        )
        self._known_revision = revisions[-1] if contiguous and revisions else 0

    def _apply_progress(self, done: int, total: int) -> None:
        if self.progress:
            self.progress("apply", done, total)

    async def _read_control(self) -> SyncControl:
        kv = await self.objects.store.get(SYNC_CONTROL_KEY)
        return SyncControl.from_json(kv.value) if kv else SyncControl()

    async def _read_state(self) -> tuple[SyncState, list[SyncRecord]]:
        store = self.objects.store
        kv = await store.get(SYNC_STATE_KEY)
        state = SyncState.from_json(kv.value) if kv else SyncState()
        hv = await store.get(SYNC_HISTORY_KEY)
        history = history_from_json(hv.value) if hv else []
        state.repo = self.source.display_url
        state.ref, state.path = self.source.ref, self.source.path
        state.suspended = False
        return state, history

    async def _finish(
        self,
        result: SyncResult,
        state: SyncState,
        history: list[SyncRecord],
        started: float,
        started_at: str,
    ) -> SyncResult:
        """Write the state and the history (last, in one transaction)."""
        result.duration_seconds = time.perf_counter() - started
        record = SyncRecord(
            revision=result.revision,
            started_at=started_at,
            finished_at=now_iso(),
            outcome=result.outcome,
            created=result.created,
            updated=result.updated,
            deleted=result.deleted,
            errors=len(result.errors),
            duration_seconds=round(result.duration_seconds, 4),
            message=result.message,
            commit_message=(state.commit.get("message", "").splitlines() or [""])[0]
            if result.revision and result.revision == state.revision
            else "",
        )
        last = history[-1] if history else None
        if (
            last is not None
            and result.outcome in ("Failed", "Suspended")
            and (last.outcome, last.revision, last.message)
            == (record.outcome, record.revision, record.message)
        ):
            # a retried failure is one entry, with the time of the last attempt
            record.started_at = last.started_at
            history[-1] = record
        else:
            history.append(record)
        history = history[-HISTORY_LENGTH:]
        before = self._known_revision
        revision = await self.applier.apply_encoded(
            [
                Encoded(SYNC_STATE_KEY, state.to_json()),
                Encoded(SYNC_HISTORY_KEY, history_to_json(history)),
                *[
                    Encoded(put.key, put.value)
                    for put in await self._record_diff(result, record, history)
                ],
            ]
        )
        self._known_revision = revision if before and revision == before + 1 else 0
        ok = result.outcome != "Failed" or not result.retryable
        self._quiet = (result.revision, revision) if self._known_revision and ok else None
        return result

    async def _record_diff(
        self, result: SyncResult, record: SyncRecord, history: list[SyncRecord]
    ) -> list[Put]:
        """The diff this sync applied (kept beside the history, bounded) and the
        objects left drifted, for the web page; nothing when neither changed."""
        writes: list[Put] = []
        plan = result.plan
        if plan is None:
            return writes
        if result.created or result.updated or result.deleted:
            kv = await self.objects.store.get(SYNC_DIFFS_KEY)
            try:
                diffs = json.loads(kv.value) if kv else []
            except ValueError:
                diffs = []
            kept = {(r.started_at, r.revision) for r in history}
            diffs = [
                d
                for d in diffs
                if isinstance(d, dict) and (d.get("startedAt"), d.get("revision")) in kept
            ]
            diffs.append(
                {"startedAt": record.started_at, "revision": record.revision, **recorded_diff(plan)}
            )
            writes.append(Put(SYNC_DIFFS_KEY, json.dumps(diffs).encode()))
        drift = json.dumps(recorded_drift(plan)).encode()
        if drift != self._drift_written:
            writes.append(Put(SYNC_DRIFT_KEY, drift))
            self._drift_written = drift
        return writes

    async def _record_suspended(
        self, control: SyncControl, started: float, started_at: str
    ) -> SyncResult:
        self._suspended = True
        result = SyncResult("Suspended", message="sync is suspended")
        if control.reason:
            result.message += f": {control.reason}"
        state, history = await self._read_state()
        result.revision = state.revision
        if state.phase == "Suspended" and state.suspended:
            self._quiet = (state.revision, await self.objects.store.revision())
            return result
        state.phase, state.suspended, state.message = "Suspended", True, result.message
        self._known_revision = 0
        await self._finish(result, state, history, started, started_at)
        self._quiet = (state.revision, await self.objects.store.revision())
        return result

    async def _record_source_failure(
        self,
        exc: SourceError,
        started: float,
        started_at: str,
        *,
        state: SyncState | None = None,
    ) -> SyncResult:
        message = self.source.redact(str(exc))
        result = SyncResult(
            "Failed",
            errors=[SyncError(message=message)],
            message=f"cannot read the repository; the cluster is left as it is: {message}",
            retryable=True,
        )
        if state is None:
            state, history = await self._read_state()
        else:
            _, history = await self._read_state()
        result.revision = state.revision
        state.phase, state.message, state.errors = "Failed", result.message, result.errors
        state.attempted_at = now_iso()
        self._quiet = None
        self._known_revision = 0
        await self._finish(result, state, history, started, started_at)
        self._quiet = None
        return result


async def suspend(objects: ObjectStore, *, reason: str = "") -> SyncControl:
    control = SyncControl(suspended=True, reason=reason, changed_at=now_iso())
    await objects.store.put(SYNC_CONTROL_KEY, control.to_json())
    return control


async def resume(objects: ObjectStore) -> SyncControl:
    control = SyncControl(suspended=False, changed_at=now_iso())
    await objects.store.put(SYNC_CONTROL_KEY, control.to_json())
    return control
