"""`gitkube validate`: check manifests before they are pushed."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from gitkube.api.manifests import DEFAULT_MAX_BYTES
from gitkube.api.validation import ValidationReport, validate_paths
from gitkube.cli.app import (
    Output,
    OutputOpt,
    UnsupportedKinds,
    UnsupportedKindsOpt,
    app,
    err_console,
    print_data,
)


@app.command(
    epilog=(
        "Exit status: 0 every manifest is valid; 1 any is invalid or cannot be read; "
        "2 usage error, including a PATH that does not exist."
    )
)
def validate(
    paths: Annotated[
        list[Path],
        typer.Argument(
            exists=True,
            help="Manifest files, or directories searched recursively for .yaml, .yml "
            "and .json files (hidden directories skipped, symlinks inside not followed).",
            show_default=False,
        ),
    ],
    output: OutputOpt = Output.table,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            help="Also list the Kubernetes fields gitkube accepts but ignores, "
            "and skipped symlinks.",
        ),
    ] = False,
    max_size: Annotated[
        int,
        typer.Option("--max-size", min=1, help="Largest manifest file accepted, in bytes."),
    ] = DEFAULT_MAX_BYTES,
    unsupported_kinds: UnsupportedKindsOpt = UnsupportedKinds.store,
) -> None:
    """Validate manifests: every error in one pass, one per line as
    FILE:LINE: KIND/NAME: FIELD: message (-o json: a list of objects with
    file, line, document, kind, name, field and message)."""
    report = validate_paths(paths, max_bytes=max_size, unsupported=unsupported_kinds.value)
    if output in (Output.json, Output.yaml):
        print_data([error.to_dict() for error in report.errors], output)
        if verbose:
            for note in _notes(report):
                err_console.print(note, highlight=False, soft_wrap=True, markup=False)
    else:
        for error in report.errors:
            sys.stdout.write(f"{error}\n")
        if verbose:
            for note in _notes(report):
                sys.stdout.write(f"{note}\n")
        sys.stdout.write(_summary(report, verbose=verbose) + "\n")
    if report.errors:
        raise typer.Exit(1)


def _notes(report: ValidationReport) -> list[str]:
    notes = [str(item) for item in report.ignored]
    notes += [
        f"{path}: skipped: symlinks inside directories are not followed" for path in report.skipped
    ]
    return notes


def _plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def _summary(report: ValidationReport, *, verbose: bool) -> str:
    files = _plural(len(report.files), "file")
    objects = _plural(len(report.manifests), "object")
    if report.errors:
        bad_files = len({error.file for error in report.errors})
        return f"{_plural(len(report.errors), 'error')} in {bad_files} of {files}"
    summary = f"{files}, {objects} valid"
    if report.ignored:
        summary += f" ({_plural(len(report.ignored), 'ignored field')}"
        summary += ")" if verbose else "; --verbose lists them)"
    return summary
