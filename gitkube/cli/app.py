"""The typer application and what every command shares: output formats,
error presentation (no tracebacks for errors a user can cause), exit codes
(0 ok, 1 invalid input or failed operation, 2 usage error).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Annotated, Any, NoReturn, TypeVar

import typer
import yaml
from rich.console import Console

from gitkube import __version__
from gitkube.errors import GitkubeError

app = typer.Typer(
    name="gitkube",
    help=(
        "A GitOps container orchestrator: git holds the desired state, "
        "gitkube drives the cluster to it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

console = Console()
err_console = Console(stderr=True)

T = TypeVar("T")

DEFAULT_STATE_DIR = os.environ.get("GITKUBE_STATE_DIR", ".gitkube")


def default_store_url() -> str:
    """The embedded default: a SQLite file in the state directory."""
    return (
        os.environ.get("GITKUBE_STORE")
        or f"sqlite:///{os.path.abspath(DEFAULT_STATE_DIR)}/state.db"
    )


StoreOpt = Annotated[
    str,
    typer.Option(
        "--store",
        "-s",
        envvar="GITKUBE_STORE",
        help="sqlite:///path/state.db or etcd://host:2379[,host:2379]; "
        "default: the embedded SQLite file in ./.gitkube/",
        show_default=False,
    ),
]


def resolve_store(url: str) -> str:
    """The store URL a command should use (empty means the embedded default)."""
    return url or default_store_url()


class Output(StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"


def fail(message: str, *, code: int = 1) -> NoReturn:
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run_async(factory: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine; user errors become a message and exit status 1."""
    try:
        return asyncio.run(factory())
    except GitkubeError as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def print_data(data: Any, output: Output | str) -> None:
    fmt = output.value if isinstance(output, Output) else output
    if fmt == "json":
        sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    elif fmt == "yaml":
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False, default_flow_style=False))
    else:
        raise ValueError(fmt)


@app.callback()
def _root() -> None:
    """A GitOps container orchestrator: git holds the desired state, gitkube runs it."""


@app.command()
def version() -> None:
    """Print the version."""
    typer.echo(f"gitkube {__version__}")


OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, wide, json or yaml")]


class UnsupportedKinds(StrEnum):
    store = "store"
    error = "error"


UnsupportedKindsOpt = Annotated[
    UnsupportedKinds,
    typer.Option(
        "--unsupported-kinds",
        envvar="GITKUBE_UNSUPPORTED_KINDS",
        help="Kinds gitkube does not run (Ingress, ServiceAccount, custom resources): store "
        "them (validated against the official schema where known, not acted on) or refuse them.",
    ),
]
