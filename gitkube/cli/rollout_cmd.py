"""`gitkube rollout status|history` and `gitkube rollback`: Deployments'
rollouts, read from the store; a rollback written to git.

- ``rollout status deployment/NAME`` follows the rollout until it is
  complete (exit 0), its progress deadline is exceeded or ``--timeout``
  passes (exit 1), printing each new state as ``kubectl rollout status`` does.
- ``rollout history deployment/NAME``: one line per revision, starting with
  the revision number, with the git commit that made it, its ReplicaSet and
  images; ``-o json`` too.
- ``rollback deployment/NAME [--to-revision N] [--dry-run]``: never changes
  the cluster. It writes a commit on the tracked branch (from the sync state
  in the store, or ``--repo``/``--branch``) that puts revision N's template
  (default: the revision before the current one) back into the file that
  declares the Deployment; the sync applies it. ``--dry-run`` prints the
  patch and the commit message instead.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from dataclasses import dataclass
from typing import Annotated, Any

import typer

from gitkube.api.annotations import SOURCE_COMMIT, SOURCE_PATH
from gitkube.api.keys import SYNC_STATE_KEY
from gitkube.api.objects import Deployment, ReplicaSet
from gitkube.api.rollout import (
    PROGRESSING,
    REVISION,
    REVISION_COMMIT,
    revision_of,
    rollout_state,
)
from gitkube.cli.app import (
    Output,
    OutputOpt,
    StoreOpt,
    app,
    console,
    fail,
    print_data,
    resolve_store,
    run_async,
)
from gitkube.cli.status_cmd import format_columns, open_existing_store
from gitkube.errors import ConfigError
from gitkube.store.objects import ObjectStore
from gitkube.sync.rollback import RollbackRequest, RollbackWriter, template_dict
from gitkube.sync.state import SyncState

rollout_app = typer.Typer(
    help="Follow and list Deployment rollouts (read from the store).",
    no_args_is_help=True,
)
app.add_typer(rollout_app, name="rollout")

NamespaceOpt = Annotated[
    str, typer.Option("--namespace", "-n", help="namespace (default: default)")
]
_DEPLOYMENT_TYPES = ("deployment", "deployments", "deploy", "deployment.apps", "deployments.apps")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")


def parse_target(target: str) -> str:
    """The Deployment name of ``deployment/NAME``; a usage error (exit 2) otherwise."""
    kind, slash, name = target.partition("/")
    if not slash:
        fail(f"{target!r}: give the Deployment as deployment/NAME", code=2)
    if kind.lower() not in _DEPLOYMENT_TYPES:
        fail(f"{target!r}: rollouts are of Deployments only (deployment/NAME)", code=2)
    if not name:
        fail(f"{target!r}: no name after 'deployment/'", code=2)
    return name


def parse_duration(text: str) -> float:
    """``100s``, ``2m``, ``1h``, ``500ms`` or plain seconds; 0 means no limit."""
    match = _DURATION.match(text)
    if not match:
        fail(f"--timeout {text!r}: give a duration such as 100s, 5m or 1h", code=2)
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}[unit]


async def _deployment(objects: ObjectStore, namespace: str, name: str) -> Deployment:
    d = await objects.get(Deployment, namespace, name)
    if d is None:
        raise ConfigError(f'deployment "{name}" not found in namespace "{namespace}"')
    return d


async def _replicasets(objects: ObjectStore, d: Deployment) -> list[ReplicaSet]:
    rses, _ = await objects.list(ReplicaSet, d.namespace)
    owned = []
    for rs in rses:
        ref = rs.metadata.controller_ref()
        if ref is not None and ref.kind == Deployment.KIND and ref.uid == d.metadata.uid:
            owned.append(rs)
    return sorted(owned, key=lambda rs: (revision_of(rs), rs.name))


# ---------------------------------------------------------------- rollout status


@rollout_app.command("status")
def rollout_status(
    target: Annotated[str, typer.Argument(help="deployment/NAME")],
    namespace: NamespaceOpt = "default",
    timeout: Annotated[
        str, typer.Option("--timeout", help="give up after this long (100s, 5m); 0: never")
    ] = "0",
    watch: Annotated[
        bool, typer.Option("--watch/--no-watch", "-w", help="follow until done")
    ] = True,
    store: StoreOpt = "",
) -> None:
    """Follow a Deployment's rollout: exit 0 when complete, 1 when its
    progress deadline is exceeded or --timeout passes."""
    name = parse_target(target)
    limit = parse_duration(timeout)

    async def follow() -> int:
        st = await open_existing_store(resolve_store(store))
        objects = ObjectStore(st)
        try:
            deadline = time.monotonic() + limit if limit > 0 else None
            last = ""
            while True:
                d = await _deployment(objects, namespace, name)
                state = rollout_state(d)
                if state.message != last:
                    typer.echo(state.message)
                    last = state.message
                if state.done:
                    return 0
                if state.failed:
                    return 1
                if not watch:
                    return 1
                if deadline is not None and time.monotonic() >= deadline:
                    typer.echo(f"error: timed out waiting for the condition ({timeout})", err=True)
                    return 1
                await asyncio.sleep(0.5)
        finally:
            await st.close()

    code = run_async(follow)
    raise typer.Exit(code)


# ---------------------------------------------------------------- rollout history


@dataclass
class Revision:
    revision: int
    commit: str
    replicaset: str
    images: list[str]
    replicas: int
    created: str
    current: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "commit": self.commit,
            "replicaSet": self.replicaset,
            "images": self.images,
            "replicas": self.replicas,
            "created": self.created,
            "current": self.current,
        }


def revisions_of(d: Deployment, rses: list[ReplicaSet]) -> list[Revision]:
    current = d.metadata.annotations.get(REVISION, "")
    out = []
    for rs in rses:
        rev = revision_of(rs)
        if rev <= 0:
            continue
        out.append(
            Revision(
                revision=rev,
                commit=rs.metadata.annotations.get(REVISION_COMMIT, ""),
                replicaset=rs.name,
                images=[c.image for c in rs.spec.template.spec.containers],
                replicas=rs.spec.replicas if rs.spec.replicas is not None else 1,
                created=rs.metadata.creation_timestamp,
                current=str(rev) == current,
            )
        )
    return sorted(out, key=lambda r: r.revision)


@rollout_app.command("history")
def rollout_history(
    target: Annotated[str, typer.Argument(help="deployment/NAME")],
    namespace: NamespaceOpt = "default",
    output: OutputOpt = Output.table,
    store: StoreOpt = "",
) -> None:
    """One line per revision of a Deployment: revision, the git commit that
    made it, its ReplicaSet, images."""
    name = parse_target(target)

    async def read() -> tuple[Deployment, list[Revision]]:
        st = await open_existing_store(resolve_store(store))
        try:
            objects = ObjectStore(st)
            d = await _deployment(objects, namespace, name)
            return d, revisions_of(d, await _replicasets(objects, d))
        finally:
            await st.close()

    d, revisions = run_async(read)
    if output in (Output.json, Output.yaml):
        print_data(
            {
                "deployment": f"{d.namespace}/{d.name}",
                "revisions": [r.to_dict() for r in revisions],
            },
            output,
        )
        return
    rows = [
        (
            r.revision,
            r.commit or "<unknown>",
            r.replicaset,
            r.replicas,
            ",".join(r.images),
            "*" if r.current else "",
        )
        for r in revisions
    ]
    typer.echo(
        format_columns(("REVISION", "COMMIT", "REPLICASET", "REPLICAS", "IMAGES", "CURRENT"), rows)
    )


# ---------------------------------------------------------------- rollback


def _reason(d: Deployment, current: int, user_reason: str) -> str:
    parts = [user_reason] if user_reason else []
    for cond in d.status.conditions:
        if cond.type == PROGRESSING and cond.status == "False":
            parts.append(f"revision {current}: {cond.reason}: {cond.message}")
    if not parts:
        parts.append(f"requested with gitkube rollback (revision {current} was current)")
    return "; ".join(parts)


@app.command()
def rollback(
    target: Annotated[str, typer.Argument(help="deployment/NAME")],
    namespace: NamespaceOpt = "default",
    to_revision: Annotated[
        int, typer.Option("--to-revision", help="the revision to put back; 0: the previous one")
    ] = 0,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print the patch and the message; change nothing")
    ] = False,
    repo: Annotated[
        str, typer.Option("--repo", help="the repository (default: the one the sync tracks)")
    ] = "",
    branch: Annotated[
        str, typer.Option("--branch", help="the branch (default: the one the sync tracks)")
    ] = "",
    reason: Annotated[str, typer.Option("--reason", help="why, for the commit message")] = "",
    store: StoreOpt = "",
) -> None:
    """Roll a Deployment back by a commit on the tracked branch that puts an
    old revision's template back (never by changing the cluster)."""
    name = parse_target(target)
    if to_revision < 0:
        fail("--to-revision must be 0 (the previous revision) or a revision number", code=2)

    async def prepare() -> RollbackRequest:
        st = await open_existing_store(resolve_store(store))
        try:
            objects = ObjectStore(st)
            d = await _deployment(objects, namespace, name)
            rses = await _replicasets(objects, d)
            raw = await st.get(SYNC_STATE_KEY)
            state = SyncState.from_json(raw.value) if raw is not None else None
        finally:
            await st.close()
        current = revision_of(d)
        revisions = {revision_of(rs): rs for rs in rses if revision_of(rs) > 0}
        if not revisions:
            raise ConfigError(f'deployment "{name}" has no revisions yet')
        wanted = to_revision
        if wanted == 0:
            earlier = sorted(r for r in revisions if r < (current or max(revisions)))
            if not earlier:
                raise ConfigError(
                    f'deployment "{name}": no revision before {current} to go back to'
                )
            wanted = earlier[-1]
        if wanted not in revisions:
            known = ", ".join(str(r) for r in sorted(revisions))
            raise ConfigError(
                f'deployment "{name}": unable to find revision {wanted} in its history '
                f"(revisions: {known})"
            )
        source_repo = repo or (state.repo if state else "")
        source_branch = branch or (state.ref if state else "")
        if not source_repo or not source_branch:
            raise ConfigError(
                "no repository or branch: the store has no sync state; pass --repo and --branch"
            )
        path = d.metadata.annotations.get(SOURCE_PATH, "")
        if not path:
            raise ConfigError(
                f'deployment "{name}" does not come from git (no {SOURCE_PATH} annotation); '
                "gitkube rolls back only what git declares"
            )
        target_rs = revisions[wanted]
        current_rs = revisions.get(current)
        return RollbackRequest(
            repo=source_repo,
            branch=source_branch,
            path=path,
            namespace=d.namespace,
            name=d.name,
            revision=wanted,
            template=template_dict(target_rs.spec.template),
            revision_commit=target_rs.metadata.annotations.get(REVISION_COMMIT, ""),
            current_revision=current,
            current_commit=(
                current_rs.metadata.annotations.get(REVISION_COMMIT, "")
                if current_rs is not None
                else d.metadata.annotations.get(SOURCE_COMMIT, "")
            ),
            reason=_reason(d, current, reason),
        )

    request = run_async(prepare)
    result = run_async(lambda: RollbackWriter(request).run(dry_run=dry_run))
    if result.unchanged:
        typer.echo(
            f"skipped rollback: {result.path} already declares revision {request.revision}'s "
            f"template for deployment/{name}"
        )
        return
    if dry_run:
        sys.stdout.write(result.diff)
        typer.echo("")
        typer.echo("commit message (dry run, nothing written):")
        for line in result.message.splitlines():
            typer.echo(f"    {line}")
        return
    console.print(
        f"deployment/{name} rolled back to revision {request.revision}: commit "
        f"{result.commit[:12]} on {request.branch} ({result.path}); the sync applies it",
        highlight=False,
    )
