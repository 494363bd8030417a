"""`gitkube sync`, `gitkube diff`, `gitkube suspend`, `gitkube resume`.

- ``sync --once`` runs one sync and prints its outcome; exit 1 when it failed.
  Without ``--once`` it keeps syncing every ``--interval`` until interrupted.
  After a sync that changed something, the status is written back to git
  (``--status-branch``; ``--no-writeback`` turns it off).
- ``diff`` prints what a sync would do, as a unified YAML diff per object with
  the reason for each; exit 0 in sync, 1 with differences or on error (like
  ``kubectl diff``).
- ``suspend`` / ``resume`` stop and restart applying (the store's sync
  control key); a suspended sync records the phase Suspended.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from gitkube.cli.app import (
    DEFAULT_STATE_DIR,
    Output,
    OutputOpt,
    StoreOpt,
    UnsupportedKinds,
    UnsupportedKindsOpt,
    app,
    console,
    err_console,
    fail,
    print_data,
    resolve_store,
    run_async,
)
from gitkube.errors import ConfigError
from gitkube.store.factory import open_store
from gitkube.store.objects import ObjectStore
from gitkube.sync.diff import render_diff
from gitkube.sync.loop import SyncLoop, SyncResult, SyncSettings, resume, suspend
from gitkube.sync.sops import SopsDecryptor
from gitkube.sync.source import GitSource
from gitkube.sync.verify import CommitVerifier, VerifyPolicy

RepoOpt = Annotated[
    str,
    typer.Option(
        "--repo",
        "-r",
        envvar="GITKUBE_REPO",
        help="git repository: URL (file://, git://, https://, ssh) or local path",
        show_default=False,
    ),
]
RefOpt = Annotated[
    str, typer.Option("--ref", "--branch", help="branch, tag or commit to sync", show_default=True)
]
PathOpt = Annotated[
    str, typer.Option("--path", help="sub-path of the repository holding the manifests")
]
CacheOpt = Annotated[
    str,
    typer.Option(
        "--cache-dir",
        envvar="GITKUBE_CACHE_DIR",
        help="where the git mirror is kept (default: ./.gitkube/cache)",
        show_default=False,
    ),
]


VerifyOpt = Annotated[
    str,
    typer.Option(
        "--verify-commits",
        envvar="GITKUBE_VERIFY_COMMITS",
        help="signature verification: off, head (the synced commit), chain (every commit)",
    ),
]
SignersOpt = Annotated[
    str,
    typer.Option(
        "--allowed-signers",
        envvar="GITKUBE_ALLOWED_SIGNERS",
        help="SSH keys trusted to sign (git's allowed-signers format)",
        show_default=False,
    ),
]
GpgKeysOpt = Annotated[
    str,
    typer.Option(
        "--trusted-gpg-keys",
        envvar="GITKUBE_TRUSTED_GPG_KEYS",
        help="OpenPGP public keys trusted to sign (armored)",
        show_default=False,
    ),
]
RulesOpt = Annotated[
    str,
    typer.Option(
        "--signer-rules",
        envvar="GITKUBE_SIGNER_RULES",
        help="who may change which paths (default: .gitkube/signers in the repository)",
        show_default=False,
    ),
]


DecryptOpt = Annotated[
    str,
    typer.Option(
        "--decryption-key-file",
        envvar="GITKUBE_DECRYPTION_KEY_FILE",
        help="age or OpenPGP private key that decrypts SOPS-encrypted manifests",
        show_default=False,
    ),
]


def _decryptor(cache: Path, key_file: str) -> SopsDecryptor | None:
    if not key_file:
        return None
    try:
        return SopsDecryptor(key_file, work_dir=cache / "sops")
    except ConfigError as exc:
        fail(str(exc), code=2)


def _verifier(
    cache: Path, mode: str, allowed_signers: str, trusted_gpg_keys: str, signer_rules: str
) -> CommitVerifier | None:
    policy = VerifyPolicy(mode, allowed_signers, trusted_gpg_keys, signer_rules)
    try:
        policy.check()
    except ConfigError as exc:
        fail(str(exc), code=2)
    return CommitVerifier(policy, work_dir=cache / "verify") if policy.enabled else None


def _cache_dir(given: str) -> Path:
    return Path(given or os.path.join(DEFAULT_STATE_DIR, "cache")).resolve()


def _progress_bar() -> tuple[Progress | None, Callable[[str, int, int], None] | None]:
    """A rich progress bar on a terminal only."""
    if not err_console.is_terminal:
        return None, None
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        if total < 200:  # short work needs no bar
            return
        if stage not in tasks:
            label = {"parse": "parsing manifests", "apply": "applying"}.get(stage, stage)
            tasks[stage] = progress.add_task(label, total=total)
        progress.update(tasks[stage], completed=done, total=total)

    return progress, report


def _print_result(result: SyncResult, output: Output) -> None:
    if output in (Output.json, Output.yaml):
        print_data(result.to_dict(), output)
        return
    style = {"Succeeded": "green", "Unchanged": "green", "Failed": "red", "Suspended": "cyan"}
    colour = style.get(result.outcome, "yellow")
    console.print(
        f"[{colour}]{result.outcome}[/{colour}] {result.revision[:12] or '-'}: "
        f"{result.created} created, {result.updated} updated, {result.deleted} deleted, "
        f"{result.unchanged} unchanged ({result.duration_seconds:.2f}s)",
        highlight=False,
    )
    if result.message and result.outcome in ("Failed", "Suspended"):
        console.print(result.message, highlight=False, soft_wrap=True)
    for error in result.errors:
        console.print(f"  [red]error[/red] {error}", highlight=False, soft_wrap=True)
    for warning in result.warnings[:50]:
        console.print(f"  [yellow]warning[/yellow] {warning}", highlight=False, soft_wrap=True)
    if len(result.warnings) > 50:
        console.print(f"  … {len(result.warnings) - 50} more warnings", highlight=False)


def _writeback(
    objects: ObjectStore, source: GitSource, branch: str, cache_dir: Path, signing_key: str = ""
) -> Callable[[SyncResult], Any]:
    from gitkube.sync.writeback import StatusWriteback, StatusWriter

    writer = StatusWriter(
        source.url,
        branch=branch,
        cache_dir=cache_dir / "status",
        synced_branch=source.ref,
        signing_key=signing_key,
    )
    hook = StatusWriteback(writer, objects)

    async def after_sync(result: SyncResult) -> None:
        if result.outcome == "Unchanged":
            return
        outcome = await hook.write_status()  # None only with a leader's fence
        if outcome is not None and outcome.outcome == "Failed":
            err_console.print(
                f"[yellow]warning:[/yellow] status write-back failed: {outcome.error}",
                highlight=False,
                soft_wrap=True,
            )

    return after_sync


@app.command()
def sync(
    repo: RepoOpt,
    store: StoreOpt = "",
    ref: RefOpt = "main",
    path: PathOpt = "",
    once: Annotated[bool, typer.Option("--once", help="run one sync and exit")] = False,
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="delete objects git no longer declares")
    ] = True,
    self_heal: Annotated[
        bool,
        typer.Option("--self-heal/--no-self-heal", help="put back objects changed outside git"),
    ] = True,
    writeback: Annotated[
        bool,
        typer.Option("--writeback/--no-writeback", help="commit the status to the status branch"),
    ] = True,
    status_branch: Annotated[
        str, typer.Option("--status-branch", help="branch the status commits go to")
    ] = "gitkube/status",
    interval: Annotated[
        float, typer.Option("--interval", help="seconds between polls (without --once)")
    ] = 60.0,
    cache_dir: CacheOpt = "",
    verify_commits: VerifyOpt = "off",
    allowed_signers: SignersOpt = "",
    trusted_gpg_keys: GpgKeysOpt = "",
    signer_rules: RulesOpt = "",
    decryption_key_file: DecryptOpt = "",
    status_signing_key: Annotated[
        str,
        typer.Option(
            "--status-signing-key",
            envvar="GITKUBE_STATUS_SIGNING_KEY",
            help="SSH private key that signs the status commits",
            show_default=False,
        ),
    ] = "",
    output: OutputOpt = Output.table,
    unsupported_kinds: UnsupportedKindsOpt = UnsupportedKinds.store,
) -> None:
    """Sync the repository into the store: validate, diff, apply whole or not at all."""
    if not repo:
        fail("--repo is required", code=2)
    cache = _cache_dir(cache_dir)
    settings = SyncSettings(
        prune=prune,
        self_heal=self_heal,
        interval_seconds=interval,
        unsupported_kinds=unsupported_kinds.value,
    )
    verifier = _verifier(cache, verify_commits, allowed_signers, trusted_gpg_keys, signer_rules)
    decryptor = _decryptor(cache, decryption_key_file)

    async def main() -> SyncResult | None:
        source = GitSource(repo, ref=ref, path=path, cache_dir=cache)
        objects = ObjectStore(await open_store(resolve_store(store)))
        bar, report = _progress_bar() if output == Output.table else (None, None)
        try:
            after = (
                _writeback(objects, source, status_branch, cache, status_signing_key)
                if writeback
                else None
            )
            loop = SyncLoop(
                objects,
                source,
                settings,
                after_sync=after,
                progress=report,
                verifier=verifier,
                decryptor=decryptor,
            )
            if once:
                with bar if bar is not None else contextlib.nullcontext():
                    return await loop.reconcile_once()
            stop = asyncio.Event()
            running = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                running.add_signal_handler(sig, stop.set)

            async def show(result: SyncResult) -> None:
                if result.outcome != "Unchanged":
                    _print_result(result, output)
                    if after is not None:
                        await after(result)

            loop.after_sync = show
            await loop.run(stop)
            return None
        finally:
            await source.close()
            await objects.store.close()

    result = run_async(main)
    if result is None:
        return
    _print_result(result, output)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def diff(
    repo: RepoOpt,
    store: StoreOpt = "",
    ref: RefOpt = "main",
    path: PathOpt = "",
    prune: Annotated[
        bool, typer.Option("--prune/--no-prune", help="show objects a sync would delete")
    ] = True,
    cache_dir: CacheOpt = "",
    verify_commits: VerifyOpt = "off",
    allowed_signers: SignersOpt = "",
    trusted_gpg_keys: GpgKeysOpt = "",
    signer_rules: RulesOpt = "",
    decryption_key_file: DecryptOpt = "",
    output: OutputOpt = Output.table,
    unsupported_kinds: UnsupportedKindsOpt = UnsupportedKinds.store,
) -> None:
    """Show what a sync would do, as a YAML diff per object; exit 1 when out of sync."""
    if not repo:
        fail("--repo is required", code=2)

    cache = _cache_dir(cache_dir)
    verifier = _verifier(cache, verify_commits, allowed_signers, trusted_gpg_keys, signer_rules)
    decryptor = _decryptor(cache, decryption_key_file)

    async def main() -> SyncResult:
        source = GitSource(repo, ref=ref, path=path, cache_dir=cache)
        objects = ObjectStore(await open_store(resolve_store(store)))
        try:
            settings = SyncSettings(
                prune=prune, self_heal=True, unsupported_kinds=unsupported_kinds.value
            )
            loop = SyncLoop(objects, source, settings, verifier=verifier, decryptor=decryptor)
            return await loop.preview()
        finally:
            await source.close()
            await objects.store.close()

    result = run_async(main)
    if output in (Output.json, Output.yaml):
        data = result.to_dict()
        plan = result.plan
        if plan is not None:
            data["changes"] = (
                [{"action": "create", "kind": c.kind, "namespace": c.namespace, "name": c.name,
                  "path": c.path} for c in plan.creates]
                + [{"action": "update", "kind": u.kind, "namespace": u.namespace, "name": u.name,
                    "path": u.path, "reason": u.reason, "fields": list(u.fields)}
                   for u in plan.updates]
                + [{"action": "delete", "kind": p.kind, "namespace": p.namespace, "name": p.name,
                    "reason": p.reason} for p in plan.deletes]
            )  # fmt: skip
        print_data(data, output)
    elif result.outcome == "Failed":
        for error in result.errors:
            err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        if not result.errors:
            err_console.print(f"[red]error:[/red] {result.message}", highlight=False)
    elif result.plan is not None:
        sys.stdout.write(render_diff(result.plan))
        err_console.print(result.message, highlight=False)
    if result.outcome != "Unchanged":
        raise typer.Exit(1)


@app.command("suspend")
def suspend_cmd(
    store: StoreOpt = "",
    reason: Annotated[str, typer.Option("--reason", help="why, shown by status")] = "",
) -> None:
    """Stop applying changes from git (the running sync records Suspended)."""

    async def main() -> None:
        objects = ObjectStore(await open_store(resolve_store(store)))
        try:
            await suspend(objects, reason=reason)
        finally:
            await objects.store.close()

    run_async(main)
    typer.echo("sync suspended" + (f": {reason}" if reason else ""))


@app.command("resume")
def resume_cmd(store: StoreOpt = "") -> None:
    """Apply changes from git again after `gitkube suspend`."""

    async def main() -> None:
        objects = ObjectStore(await open_store(resolve_store(store)))
        try:
            await resume(objects)
        finally:
            await objects.store.close()

    run_async(main)
    typer.echo("sync resumed")


@app.command("verify-commits")
def verify_commits_cmd(
    revision: Annotated[str, typer.Argument(help="the commit (or tag with --tag) to verify")],
    git_dir: Annotated[
        str, typer.Option("--git-dir", help="the repository (default: $GIT_DIR or .)")
    ] = "",
    since: Annotated[
        str,
        typer.Option(
            "--since",
            help="the last verified commit (chain mode starts after it); 000… (a new branch): "
            "every commit no ref holds yet",
        ),
    ] = "",
    tag: Annotated[str, typer.Option("--tag", help="verify this tag as the ref")] = "",
    verify_commits: VerifyOpt = "chain",
    allowed_signers: SignersOpt = "",
    trusted_gpg_keys: GpgKeysOpt = "",
    signer_rules: RulesOpt = "",
    output: OutputOpt = Output.table,
) -> None:
    """Verify a revision's signatures as a sync would (the pre-receive hook uses it)."""
    import subprocess
    import tempfile

    where = git_dir or os.environ.get("GIT_DIR", "") or "."
    env = dict(os.environ)
    if git_dir:
        env.pop("GIT_DIR", None)
    found = subprocess.run(
        ["git", "-C", git_dir or ".", "rev-parse", "--absolute-git-dir"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if found.returncode != 0:
        fail(f"{where} is not a git repository", code=2)
    gd = found.stdout.strip()
    commit = subprocess.run(
        ["git", "--git-dir", gd, "rev-parse", "--verify", "--quiet", f"{revision}^{{commit}}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if not commit:
        fail(f"{revision}: no such commit", code=2)
    if since and set(since) == {"0"}:
        # a new branch: every commit the repository does not hold yet
        since = "--all"
    with tempfile.TemporaryDirectory(prefix="gitkube-verify-") as work:
        verifier = _verifier(
            Path(work), verify_commits, allowed_signers, trusted_gpg_keys, signer_rules
        )
        if verifier is None:
            fail("--verify-commits off: nothing to verify", code=2)
        try:
            verdict = verifier.verify(gd, commit, since=since, tag=tag)
        except ConfigError as exc:
            fail(str(exc))
    data = {
        "commit": commit,
        "ok": verdict.ok,
        "signer": verdict.signer,
        "checked": verdict.checked,
        "refusal": verdict.refusal.to_dict() if verdict.refusal else None,
        "warnings": verdict.warnings,
    }
    if output in (Output.json, Output.yaml):
        print_data(data, output)
    elif verdict.refusal is not None:
        err_console.print(f"refused: {verdict.refusal}", highlight=False, soft_wrap=True)
    else:
        console.print(
            f"verified {commit[:12]} (signer: {verdict.signer or '-'}; "
            f"{len(verdict.checked)} commit(s) checked)",
            highlight=False,
        )
    if verdict.refusal is not None:
        raise typer.Exit(1)


secret_app = typer.Typer(help="SOPS-encrypted Secrets kept in git", no_args_is_help=True)
app.add_typer(secret_app, name="secret")


@secret_app.command("encrypt")
def secret_encrypt(
    file: Annotated[Path, typer.Argument(help="a plaintext manifest (YAML)", exists=True)],
    age: Annotated[
        list[str] | None, typer.Option("--age", help="age recipient (age1…); repeatable")
    ] = None,
    pgp: Annotated[
        list[str] | None, typer.Option("--pgp", help="OpenPGP key fingerprint; repeatable")
    ] = None,
    encrypted_regex: Annotated[
        str, typer.Option("--encrypted-regex", help="keys whose values are encrypted")
    ] = "^(data|stringData)$",
    out: Annotated[
        Path | None, typer.Option("--output-file", "-w", help="write here (default: stdout)")
    ] = None,
) -> None:
    """Write FILE encrypted in the SOPS format (as Flux and the sops tool read it)."""
    from gitkube.sync.sops import encrypt_manifest

    try:
        data = encrypt_manifest(
            file.read_bytes(),
            age_recipients=list(age or []),
            pgp_fingerprints=list(pgp or []),
            encrypted_regex=encrypted_regex,
        )
    except ConfigError as exc:
        fail(str(exc), code=2)
    if out is None:
        sys.stdout.write(data.decode())
        return
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
