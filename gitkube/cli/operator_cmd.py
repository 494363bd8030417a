"""`gitkube run`, `gitkube master`, `gitkube config`, `gitkube install-hook`
and `gitkube doctor`.

Settings come from flags, ``GITKUBE_*`` variables or ``--config FILE``, in
that order of precedence (see ``gitkube.config``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from gitkube.cli.app import Output, app, console, err_console, print_data, run_async
from gitkube.config import Settings, masked, resolve_settings
from gitkube.errors import ConfigError

Opt = typer.Option

Repo = Annotated[
    str | None,
    Opt("--repo", help="git repository URL or local path (default: the current checkout)"),
]
Branch = Annotated[str | None, Opt("--branch", "--ref", help="branch, tag or commit (main)")]
SubPath = Annotated[str | None, Opt("--path", help="sub-path holding the manifests")]
Store = Annotated[
    str | None, Opt("--store", "-s", help="sqlite:///path/state.db or etcd://host:2379[,…]")
]
Listen = Annotated[str | None, Opt("--listen", help="HTTP server HOST:PORT (127.0.0.1:9080)")]
Interval = Annotated[str | None, Opt("--interval", help="poll interval: 30, 30s, 5m (60s)")]
SecretFile = Annotated[
    str | None, Opt("--webhook-secret-file", help="file holding the webhook secret")
]
ApiTokenFile = Annotated[
    str | None,
    Opt("--api-token-file", help="bearer token of the Kubernetes API (needed beyond loopback)"),
]
TlsCert = Annotated[str | None, Opt("--tls-cert-file", help="TLS certificate (PEM) for HTTP")]
TlsKey = Annotated[str | None, Opt("--tls-key-file", help="TLS private key (PEM) for HTTP")]
StateDir = Annotated[str | None, Opt("--state-dir", help="state directory (.gitkube)")]
StatusBranch = Annotated[str | None, Opt("--status-branch", help="status branch (gitkube/status)")]
Config = Annotated[Path | None, Opt("--config", help="settings file (YAML, keys as flag names)")]
Writeback = Annotated[
    bool | None, Opt("--writeback/--no-writeback", help="commit status to the status branch")
]
Prune = Annotated[bool | None, Opt("--prune/--no-prune", help="delete what git no longer has")]
UnsupportedKinds = Annotated[
    str | None,
    Opt(
        "--unsupported-kinds",
        help="kinds gitkube does not run (Ingress, custom resources, ...): store or error (store)",
    ),
]
SelfHeal = Annotated[
    bool | None, Opt("--self-heal/--no-self-heal", help="put back what changed behind git")
]
Verbose = Annotated[bool | None, Opt("--verbose", "-v", help="debug logging")]
EvictionRate = Annotated[
    float | None, Opt("--node-eviction-rate", help="nodes/s whose pods are evicted, per zone (0.1)")
]
SecondaryEvictionRate = Annotated[
    float | None,
    Opt("--secondary-node-eviction-rate", help="eviction rate in an unhealthy zone (0.01)"),
]
UnhealthyZoneThreshold = Annotated[
    float | None,
    Opt(
        "--unhealthy-zone-threshold",
        help="share of NotReady nodes that makes a zone unhealthy (0.55)",
    ),
]
LargeClusterSizeThreshold = Annotated[
    int | None,
    Opt(
        "--large-cluster-size-threshold",
        help="an unhealthy zone of at most this many nodes stops evicting (50)",
    ),
]
Ui = Annotated[bool | None, Opt("--ui/--no-ui", help="the web page at / of the HTTP server")]


def _checkout_defaults(settings: Settings, sources: dict[str, str]) -> None:
    """With no repository given, a command run inside a git checkout syncs that
    checkout (its current branch), as docker-compose reads the current folder."""
    if settings.repo:
        return
    top = subprocess.run(
        ["git", "rev-parse", "--show-toplevel", "--abbrev-ref", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = top.stdout.splitlines()
    if top.returncode != 0 or len(lines) != 2:
        return
    settings.repo = lines[0]
    if sources.get("branch") == "default" and lines[1] != "HEAD":
        settings.branch = lines[1]


def _settings(
    flags: dict[str, Any],
    config: Path | None,
    *,
    checkout: bool = False,
    agents: bool = False,
) -> Settings:
    try:
        settings, sources = resolve_settings(flags, config_file=config)
        if checkout:
            _checkout_defaults(settings, sources)
        settings.listen_host_port()
        settings.node_grace_seconds()
        settings.eviction_timeout_seconds()
        settings.unsupported_kinds_mode()
        if agents:
            from gitkube.agent_factory import AgentOptions

            AgentOptions.from_settings(settings)  # the local agents' settings, as `agent` checks
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    if settings.runtime not in ("docker", "process", "auto"):
        err_console.print(
            f"[red]error:[/red] --runtime {settings.runtime!r}: docker, process, auto"
        )
        raise typer.Exit(2)
    return settings


def _logging(verbose: bool) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
    for noisy in ("aiohttp.access", "git.cmd", "watchdog", "docker", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _serve(settings: Settings, role: str) -> None:
    from gitkube.operator import Operator

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(ThreadPoolExecutor(max_workers=32, thread_name_prefix="gitkube"))
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        operator = Operator(settings, role="master" if role == "master" else "run")
        await operator.run(stop)
        logging.getLogger("gitkube.operator").info("stopped; pods keep running")

    # Not uvloop here: the process runtime's supervisor launch hangs under it
    # (see the note in gitkube/nodes/runtime/process.py); `gitkube proxy` uses it.
    run_async(main)


@app.command("run")
def run_command(
    repo: Repo = None,
    branch: Branch = None,
    path: SubPath = None,
    store: Store = None,
    runtime: Annotated[
        str | None, Opt("--runtime", help="docker, process or auto (docker if it answers)")
    ] = None,
    nodes: Annotated[int | None, Opt("--nodes", help="local agents to start (1)")] = None,
    listen: Listen = None,
    interval: Interval = None,
    webhook_secret_file: SecretFile = None,
    api_token_file: ApiTokenFile = None,
    tls_cert_file: TlsCert = None,
    tls_key_file: TlsKey = None,
    ui: Ui = None,
    state_dir: StateDir = None,
    address: Annotated[str | None, Opt("--address", help="node address (127.0.0.1)")] = None,
    proxy_address: Annotated[
        str | None, Opt("--proxy-address", help="service proxy address (127.0.0.1)")
    ] = None,
    proxy_relay: Annotated[
        str | None,
        Opt("--proxy-relay", help="proxy data path: auto, native (C threads), asyncio (auto)"),
    ] = None,
    run_as: Annotated[str | None, Opt("--run-as", help="user for the process runtime")] = None,
    labels: Annotated[str | None, Opt("--labels", help="node labels k=v,k2=v2")] = None,
    cpu: Annotated[
        str | None, Opt("--cpu", help="CPU capacity of each node, e.g. 4 or 3500m (host)")
    ] = None,
    memory: Annotated[
        str | None, Opt("--memory", help="memory capacity of each node, e.g. 8Gi (host)")
    ] = None,
    max_pods: Annotated[int | None, Opt("--max-pods", help="pods each node accepts (110)")] = None,
    restart_backoff: Annotated[
        str | None, Opt("--restart-backoff", help="first restart back-off, doubles (10s)")
    ] = None,
    restart_backoff_max: Annotated[
        str | None, Opt("--restart-backoff-max", help="longest restart back-off (5m)")
    ] = None,
    proxy: Annotated[
        bool | None, Opt("--proxy/--no-proxy", help="run the service proxy (on)")
    ] = None,
    status_branch: StatusBranch = None,
    writeback: Writeback = None,
    prune: Prune = None,
    self_heal: SelfHeal = None,
    unsupported_kinds: UnsupportedKinds = None,
    node_grace: Annotated[str | None, Opt("--node-grace", help="heartbeat grace (50s)")] = None,
    eviction_timeout: Annotated[
        str | None, Opt("--eviction-timeout", help="NotReady time before eviction (300s)")
    ] = None,
    node_eviction_rate: EvictionRate = None,
    secondary_node_eviction_rate: SecondaryEvictionRate = None,
    unhealthy_zone_threshold: UnhealthyZoneThreshold = None,
    large_cluster_size_threshold: LargeClusterSizeThreshold = None,
    config: Config = None,
    verbose: Verbose = None,
) -> None:
    """Run everything in one process: sync, controllers, local agents, proxy, HTTP.

    Without --repo, inside a git checkout, the checkout's current branch is synced.
    """
    settings = _settings(
        {k: v for k, v in locals().items() if k != "config"}, config, checkout=True, agents=True
    )
    _logging(settings.verbose)
    _serve(settings, "run")


@app.command("master")
def master_command(
    repo: Repo = None,
    branch: Branch = None,
    path: SubPath = None,
    store: Store = None,
    listen: Listen = None,
    interval: Interval = None,
    webhook_secret_file: SecretFile = None,
    api_token_file: ApiTokenFile = None,
    tls_cert_file: TlsCert = None,
    tls_key_file: TlsKey = None,
    ui: Ui = None,
    state_dir: StateDir = None,
    status_branch: StatusBranch = None,
    writeback: Writeback = None,
    prune: Prune = None,
    self_heal: SelfHeal = None,
    unsupported_kinds: UnsupportedKinds = None,
    leader_ttl: Annotated[int | None, Opt("--leader-ttl", help="leader lease TTL (10)")] = None,
    node_grace: Annotated[str | None, Opt("--node-grace", help="heartbeat grace (50s)")] = None,
    eviction_timeout: Annotated[
        str | None, Opt("--eviction-timeout", help="NotReady time before eviction (300s)")
    ] = None,
    node_eviction_rate: EvictionRate = None,
    secondary_node_eviction_rate: SecondaryEvictionRate = None,
    unhealthy_zone_threshold: UnhealthyZoneThreshold = None,
    large_cluster_size_threshold: LargeClusterSizeThreshold = None,
    config: Config = None,
    verbose: Verbose = None,
) -> None:
    """Sync, controllers and HTTP for agents on other machines; one master leads."""
    settings = _settings({k: v for k, v in locals().items() if k != "config"}, config)
    if settings.store_url().startswith("sqlite:"):
        err_console.print(
            "[yellow]warning:[/yellow] master on the embedded SQLite store: agents on other "
            "machines cannot reach it; use --store etcd://…",
            highlight=False,
        )
    _logging(settings.verbose)
    _serve(settings, "master")


@app.command("config")
def config_command(
    config: Config = None,
    output: Annotated[Output, Opt("--output", "-o", help="table, json or yaml")] = Output.table,
) -> None:
    """Print the settings as run/master/agent would see them, secrets masked."""
    settings = _settings({}, config)
    _, sources = resolve_settings({}, config_file=config)
    shown = masked(settings)
    if output in (Output.json, Output.yaml):
        print_data({"settings": shown, "sources": sources}, output)
        return
    table = Table("SETTING", "VALUE", "FROM", "ENVIRONMENT", box=None)
    for f in fields(Settings):
        table.add_row(
            f.name.replace("_", "-"),
            str(shown[f.name]),
            sources[f.name],
            "GITKUBE_" + f.name.upper(),
        )
    console.print(table)


@app.command("install-hook")
def install_hook_command(
    repository: Annotated[Path, typer.Argument(help="the repository (bare or not) to hook")],
    url: Annotated[str, Opt("--url", help="the operator's HTTP address")] = "http://127.0.0.1:9080",
    state_dir: Annotated[
        Path, Opt("--state-dir", help="the operator's state directory (holds notify.token)")
    ] = Path(".gitkube"),
    validate: Annotated[
        bool, Opt("--validate", help="also reject pushes of invalid manifests (pre-receive)")
    ] = False,
    branch: Annotated[str, Opt("--branch", help="the branch gitkube tracks")] = "main",
    path: Annotated[str, Opt("--path", help="sub-path holding the manifests")] = "",
    force: Annotated[bool, Opt("--force", help="replace hooks gitkube did not install")] = False,
) -> None:
    """Install git hooks so a push to REPOSITORY is synced at once (no polling)."""
    from gitkube.hooks import TOKEN_FILE, ensure_notify_token, install_hooks

    if not repository.is_dir():
        err_console.print(f"[red]error:[/red] {repository} is not a directory")
        raise typer.Exit(2)
    try:
        ensure_notify_token(state_dir)
        written = install_hooks(
            repository,
            url=url,
            token_file=state_dir / TOKEN_FILE,
            validate=validate,
            branch=branch,
            path=path,
            force=force,
        )
    except ConfigError as exc:
        err_console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(1) from None
    for hook in written:
        console.print(f"installed {hook}", highlight=False)


@app.command("doctor")
def doctor_command(
    repo: Repo = None,
    branch: Branch = None,
    store: Store = None,
    runtime: Annotated[str | None, Opt("--runtime", help="docker, process or auto")] = None,
    listen: Listen = None,
    config: Config = None,
    output: Annotated[Output, Opt("--output", "-o", help="table or json")] = Output.table,
) -> None:
    """Check what early Kubernetes installs tripped on, and say what to do."""
    from gitkube.doctor import run_checks

    settings = _settings(
        {"repo": repo, "branch": branch, "store": store, "runtime": runtime, "listen": listen},
        config,
    )
    checks = asyncio.run(run_checks(settings))
    failed = any(c.level == "fail" for c in checks)
    if output in (Output.json, Output.yaml):
        print_data([c.to_dict() for c in checks], output)
    else:
        marks = {
            "ok": "[green]ok[/green]",
            "warn": "[yellow]warn[/yellow]",
            "fail": "[red]FAIL[/red]",
        }
        for c in checks:
            console.print(f"{marks[c.level]:<20} {c.name}: {c.detail}", highlight=False)
            if c.fix and c.level != "ok":
                console.print(f"{'':>8} fix: {c.fix}", highlight=False)
    raise typer.Exit(1 if failed else 0)
