"""`gitkube status`: the synced revision and its age, the sync phase, each
object's health, the last errors, the sync history and the webhook delivery
log — read from the store alone, so it works while the operator is down.

Also the presentation helpers `gitkube get` shares: opening a store that
must already exist, and kubectl-style plain columns.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from rich.console import Console
from rich.table import Table
from rich.text import Text

from gitkube.cli.app import Output as OutputFormat
from gitkube.cli.app import OutputOpt, StoreOpt, app, console, print_data, resolve_store, run_async
from gitkube.errors import ConfigError
from gitkube.store.base import Store
from gitkube.store.factory import open_store, parse_sqlite_url
from gitkube.store.objects import ObjectStore
from gitkube.sync.health import SEVERITY
from gitkube.sync.report import StatusReport, build_status_report, human_duration

#: webhook deliveries shown in the table (-o json has them all)
DELIVERIES_SHOWN = 10

HEALTH_STYLE = {
    "Healthy": "green",
    "Progressing": "yellow",
    "Degraded": "red",
    "Missing": "magenta",
    "Unknown": "dim",
}
PHASE_STYLE = {"Synced": "green", "OutOfSync": "yellow", "Failed": "red", "Suspended": "cyan"}


async def open_existing_store(url: str) -> Store:
    """Open the store at ``url``; an embedded store that does not exist yet is
    an error naming the path, rather than a new empty file."""
    if url.startswith("sqlite://"):
        path = parse_sqlite_url(url)
        if not path.exists():
            raise ConfigError(
                f"no gitkube state at {path}: nothing has been synced into this store "
                "(run `gitkube sync --once` or `gitkube run` first, or pass --store)"
            )
    return await open_store(url)


def format_columns(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl prints them."""
    cells = [[str(h) for h in headers], *[["" if c is None else str(c) for c in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        padded = [cell.ljust(widths[i]) for i, cell in enumerate(row)]
        lines.append("   ".join(padded).rstrip())
    return "\n".join(lines)


# ---------------------------------------------------------------- status, as text


def _summary(report: StatusReport) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if report.repo:
        where = f"ref {report.ref or 'main'}" + (f", path {report.path}" if report.path else "")
        lines.append(("Repository", f"{report.repo} ({where})"))
    if report.revision:
        age = human_duration(report.age_seconds)
        lines.append(("Revision", f"{report.revision[:12]} (synced {age} ago, {report.synced_at})"))
    else:
        lines.append(("Revision", "none synced yet"))
    phase = report.phase + (f": {report.message}" if report.message else "")
    lines.append(("Sync", phase))
    if report.attempted_revision and report.attempted_revision != report.revision:
        lines.append(
            ("Attempted", f"{report.attempted_revision[:12]} at {report.attempted_at or '?'}")
        )
    counts = ", ".join(
        f"{n} {h}"
        for h, n in sorted(report.health_counts().items(), key=lambda hn: SEVERITY.get(hn[0], 9))
    )
    lines.append(("Health", report.health + (f" ({counts})" if counts else "")))
    if report.writeback is not None:
        wb = report.writeback
        what = f"{wb.outcome} at {wb.time} on {wb.branch}"
        if wb.commit:
            what += f", commit {wb.commit[:12]}"
        if wb.error:
            what += f": {wb.error}"
        lines.append(("Write-back", what))
        if wb.unsigned_commits:
            lines.append(
                (
                    "Not signed",
                    f"{len(wb.unsigned_commits)} commit(s) on {wb.branch} not signed by gitkube: "
                    + ", ".join(c[:12] for c in wb.unsigned_commits[:5]),
                )
            )
    return lines


def _object_rows(report: StatusReport, *, wide: bool) -> list[list[object]]:
    rows: list[list[object]] = []
    for o in report.objects:
        replicas = (
            f"{o.replicas_ready}/{o.replicas_desired}" if o.replicas_desired is not None else ""
        )
        row: list[object] = [
            o.kind,
            f"{o.namespace}/{o.name}" if o.namespace else o.name,
            o.sync,
            o.health,
            replicas,
            "" if o.endpoints is None else o.endpoints,
        ]
        if wide:
            row.append(o.path)
        row.append(f"clusterIP {o.cluster_ip}; {o.message}" if o.cluster_ip else o.message)
        rows.append(row)
    return rows


def _object_headers(*, wide: bool) -> list[str]:
    headers = ["KIND", "NAME", "SYNC", "HEALTH", "REPLICAS", "ENDPOINTS"]
    return [*headers, *(["PATH"] if wide else []), "MESSAGE"]


def _history_rows(report: StatusReport) -> list[list[object]]:
    return [
        [
            r.finished_at,
            r.revision[:12],
            r.outcome,
            r.created,
            r.updated,
            r.deleted,
            r.errors,
            f"{r.duration_seconds:.2f}s",
            r.message,
        ]
        for r in reversed(report.history)
    ]


HISTORY_HEADERS = [
    "FINISHED",
    "REVISION",
    "OUTCOME",
    "CREATED",
    "UPDATED",
    "DELETED",
    "ERRORS",
    "DURATION",
    "MESSAGE",
]
DELIVERY_HEADERS = ["TIME", "HOOK", "EVENT", "OUTCOME", "REASON"]


def _delivery_rows(report: StatusReport) -> list[list[object]]:
    shown = report.deliveries[-DELIVERIES_SHOWN:]
    return [
        [
            d.get("time", ""),
            d.get("hook", ""),
            d.get("event", ""),
            d.get("outcome", ""),
            d.get("reason", ""),
        ]
        for d in reversed(shown)
    ]


def render_status_text(report: StatusReport, *, wide: bool = False) -> str:
    """`gitkube status` for a pipe or a file: plain text, no colour."""
    out = [f"{label + ':':<12} {value}" for label, value in _summary(report)]
    out += ["", f"OBJECTS ({len(report.objects)})"]
    out.append(
        format_columns(_object_headers(wide=wide), _object_rows(report, wide=wide))
        if report.objects
        else "none declared"
    )
    if report.nodes:
        out += ["", f"NODES ({len(report.nodes)})"]
        out.append(
            format_columns(
                ["NAME", "HEALTH", "MESSAGE"], [[n.name, n.health, n.message] for n in report.nodes]
            )
        )
    out += ["", f"ERRORS ({len(report.errors)})"]
    out += [str(e) for e in report.errors] or ["none"]
    out += ["", "SYNC HISTORY"]
    out.append(format_columns(HISTORY_HEADERS, _history_rows(report)) if report.history else "none")
    if report.deliveries:
        more = len(report.deliveries) - DELIVERIES_SHOWN
        title = "WEBHOOK DELIVERIES" + (
            f" (latest {DELIVERIES_SHOWN} of {len(report.deliveries)})" if more > 0 else ""
        )
        out += ["", title, format_columns(DELIVERY_HEADERS, _delivery_rows(report))]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- status, on a terminal


def _styled(value: object, styles: dict[str, str]) -> Text:
    text = str(value)
    return Text(text, style=styles.get(text, ""))


def render_status_rich(report: StatusReport, out: Console, *, wide: bool = False) -> None:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in _summary(report):
        if label == "Sync":
            summary.add_row(
                label, _styled(report.phase, PHASE_STYLE) + Text(value[len(report.phase) :])
            )
        elif label == "Health":
            summary.add_row(
                label, _styled(report.health, HEALTH_STYLE) + Text(value[len(report.health) :])
            )
        else:
            summary.add_row(label, value)
    out.print(summary)

    objects = Table(title=f"Objects ({len(report.objects)})", title_justify="left")
    for header in _object_headers(wide=wide):
        objects.add_column(header, overflow="fold")
    for row in _object_rows(report, wide=wide):
        cells = [str(c) for c in row]
        objects.add_row(
            *cells[:2], _styled(cells[2], PHASE_STYLE), _styled(cells[3], HEALTH_STYLE), *cells[4:]
        )
    out.print(objects if report.objects else "[dim]No objects declared.[/dim]")

    if report.nodes:
        nodes = Table(title=f"Nodes ({len(report.nodes)})", title_justify="left")
        for header in ("NAME", "HEALTH", "MESSAGE"):
            nodes.add_column(header)
        for n in report.nodes:
            nodes.add_row(n.name, _styled(n.health, HEALTH_STYLE), n.message)
        out.print(nodes)

    if report.errors:
        out.print(f"[bold red]Errors ({len(report.errors)})[/bold red]")
        for err in report.errors:
            out.print(f"  {err}", highlight=False, markup=False)

    if report.history:
        history = Table(title="Sync history", title_justify="left")
        for header in HISTORY_HEADERS:
            history.add_column(header)
        for row in _history_rows(report):
            history.add_row(*[str(c) for c in row])
        out.print(history)

    if report.deliveries:
        deliveries = Table(title="Webhook deliveries", title_justify="left")
        for header in DELIVERY_HEADERS:
            deliveries.add_column(header, overflow="fold")
        for row in _delivery_rows(report):
            deliveries.add_row(*[str(c) for c in row])
        out.print(deliveries)


# ---------------------------------------------------------------- the command


async def read_status(url: str) -> StatusReport:
    store = await open_existing_store(url)
    try:
        return await build_status_report(ObjectStore(store), now=datetime.now(UTC))
    finally:
        await store.close()


@app.command("status")
def status_command(store: StoreOpt = "", output: OutputOpt = OutputFormat.table) -> None:
    """Show the synced revision and its age, the sync state, each object's
    health, the last errors, the sync history and webhook deliveries.

    Reads the store only: works while the operator is down.
    """
    url = resolve_store(store)
    report = run_async(lambda: read_status(url))
    if output in (OutputFormat.json, OutputFormat.yaml):
        print_data(report.to_dict(), output)
        return
    wide = output == OutputFormat.wide
    if console.is_terminal:
        render_status_rich(report, console, wide=wide)
    else:
        sys.stdout.write(render_status_text(report, wide=wide))
