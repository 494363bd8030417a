"""Validating files and directories, and the `gitkube validate` command.

- directories searched recursively for .yaml/.yml/.json; hidden directories, other
  files and symlinks inside directories skipped; a file named explicitly is read
- unreadable and oversized files are errors, not exceptions
- the same object declared twice: one error naming both places
- CLI: one error per line, summary line, exit codes 0/1/2, -o json, --verbose, --max-size
"""

# ruff: noqa: E501 (expected messages are kept whole, as the CLI prints them)

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gitkube.api.manifests import is_manifest_path
from gitkube.api.validation import find_duplicates, load_manifests, validate_paths
from gitkube.cli import app
from tests.validate.helpers import VALID_POD

runner = CliRunner()

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80}]
"""


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """manifests/ with two valid files in nested directories and files to skip."""
    root = tmp_path / "manifests"
    write(root / "a" / "pod.yaml", VALID_POD)
    write(root / "a" / "b" / "svc.yml", SERVICE)
    write(root / "README.md", "# not a manifest: {")
    write(root / ".github" / "workflows" / "ci.yaml", "on: push\njobs: {}\n")
    write(root / ".hidden.yaml", "not: [valid")
    return root


# ---------------------------------------------------------------- finding files


def test_directories_are_searched_recursively_for_manifests(tree: Path) -> None:
    report = validate_paths([tree])
    assert report.errors == []
    assert [Path(f).relative_to(tree).as_posix() for f in report.files] == [
        "a/b/svc.yml",
        "a/pod.yaml",
    ]
    assert sorted(m.obj.KIND for m in report.manifests) == ["Pod", "Service"]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a/pod.yaml", True),
        ("pod.YML", True),
        ("x.json", True),
        ("README.md", False),
        (".github/workflows/ci.yaml", False),
        ("a/.hidden.yaml", False),
        ("kustomization.yaml.bak", False),
    ],
)
def test_is_manifest_path(path: str, expected: bool) -> None:
    assert is_manifest_path(path) is expected


def test_symlinks_inside_directories_are_not_followed(tree: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "outside" / "secret.yaml", "apiVersion: v1\nkind: Pod\n")
    os.symlink(outside, tree / "link.yaml")
    os.symlink(outside.parent, tree / "linkdir")
    report = validate_paths([tree])
    assert report.errors == []
    assert sorted(Path(p).name for p in report.skipped) == ["link.yaml", "linkdir"]
    assert not any("outside" in f for f in report.files)
    # Named explicitly, a symlink is read: the caller chose it.
    report = validate_paths([tree / "link.yaml"])
    assert [e.field for e in report.errors] == ["metadata", "spec"]


def test_a_file_named_explicitly_is_read_whatever_its_name(tmp_path: Path) -> None:
    report = validate_paths([write(tmp_path / "pod.txt", VALID_POD)])
    assert report.errors == [] and len(report.manifests) == 1


def test_oversized_files_are_not_read(tmp_path: Path) -> None:
    big = write(tmp_path / "big.yaml", VALID_POD + "#" * 2000 + "\n")
    report = validate_paths([big], max_bytes=1000)
    assert [str(e) for e in report.errors] == [
        f"{big}: file is {big.stat().st_size} bytes, over the 1000-byte limit (--max-size)"
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_unreadable_files_are_errors(tmp_path: Path) -> None:
    path = write(tmp_path / "pod.yaml", VALID_POD)
    path.chmod(0)
    report = validate_paths([path])
    assert [str(e) for e in report.errors] == [f"{path}: cannot read: Permission denied"]


def test_a_directory_named_like_a_manifest_is_searched(tmp_path: Path) -> None:
    folder = tmp_path / "dir.yaml"
    folder.mkdir()
    write(folder / "pod.yaml", VALID_POD)
    report = validate_paths([tmp_path])
    assert report.errors == [] and len(report.manifests) == 1


# ---------------------------------------------------------------- duplicates


def test_the_same_object_twice_is_one_error_naming_both_places(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", VALID_POD)
    write(tmp_path / "b.yaml", SERVICE + "---\n" + VALID_POD)
    report = validate_paths([tmp_path])
    assert [str(e) for e in report.errors] == [
        f"{tmp_path}/b.yaml:9: Pod/web: metadata.name: Pod 'web' in namespace 'default' is declared twice: first at {tmp_path}/a.yaml:1 (document 1)"
    ]


def test_same_name_in_other_namespaces_or_kinds_is_not_a_duplicate() -> None:
    data = (
        VALID_POD
        + "---\n"
        + VALID_POD.replace("  name: web\n", "  name: web\n  namespace: other\n")
        + "---\n"
        + SERVICE
    ).encode()
    manifests, errors, _ = load_manifests(data, "m.yaml")
    assert errors == [] and len(manifests) == 3
    assert find_duplicates(manifests) == []


def test_three_copies_give_two_errors() -> None:
    manifests, _, _ = load_manifests(
        f"{VALID_POD}---\n{VALID_POD}---\n{VALID_POD}".encode(), "m.yaml"
    )
    assert [(e.line, e.document) for e in find_duplicates(manifests)] == [(10, 2), (19, 3)]


# ---------------------------------------------------------------- the command


def test_cli_valid_tree_prints_a_summary_and_exits_0(tree: Path) -> None:
    result = runner.invoke(app, ["validate", str(tree)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "2 files, 2 objects valid\n"


def test_cli_reports_every_error_one_per_line_and_exits_1(tree: Path) -> None:
    write(tree / "bad.yaml", VALID_POD.replace("image: nginx", "imag: nginx") + "---\nkind: Pod\n")
    write(tree / "z" / "broken.json", '{"kind": }')
    result = runner.invoke(app, ["validate", str(tree)])
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        f"{tree}/bad.yaml:7: Pod/web: spec.containers[0].image: required field is missing",
        f"{tree}/bad.yaml:8: Pod/web: spec.containers[0].imag: unknown field 'imag' (did you mean 'image'?)",
        f"{tree}/bad.yaml:10: Pod/?: apiVersion: required field is missing; gitkube supports v1 Pod, ReplicationController, Service, Endpoints, Node, Namespace, ConfigMap, Secret; apps/v1 Deployment, ReplicaSet",
        f"{tree}/z/broken.json:1: invalid JSON: Expecting value (column 10)",
        "4 errors in 2 of 4 files",
    ]


def test_cli_json_output_lists_the_errors(tree: Path) -> None:
    write(tree / "bad.yaml", VALID_POD.replace("  name: web\n", "  name: Web\n"))
    result = runner.invoke(app, ["validate", "-o", "json", str(tree / "bad.yaml")])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == [
        {
            "file": f"{tree}/bad.yaml",
            "line": 4,
            "document": 1,
            "kind": "Pod",
            "name": "Web",
            "field": "metadata.name",
            "message": "invalid name: 'Web' is not a valid DNS-1123 subdomain: at most 253 lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
        }
    ]
    result = runner.invoke(app, ["validate", "-o", "json", str(tree / "a")])
    assert (result.exit_code, json.loads(result.stdout)) == (0, [])


def test_cli_verbose_lists_ignored_fields_and_skipped_symlinks(tree: Path) -> None:
    write(tree / "a" / "pod.yaml", VALID_POD + "    imagePullPolicy: Always\n")
    os.symlink(tree / "a" / "pod.yaml", tree / "link.yaml")
    quiet = runner.invoke(app, ["validate", str(tree)])
    assert quiet.exit_code == 0
    assert quiet.stdout == "2 files, 2 objects valid (1 ignored field; --verbose lists them)\n"
    loud = runner.invoke(app, ["validate", "--verbose", str(tree)])
    assert loud.exit_code == 0
    assert loud.stdout.splitlines() == [
        f"{tree}/a/pod.yaml:9: Pod/web: spec.containers[0].imagePullPolicy: ignored: images are pulled when missing",
        f"{tree}/link.yaml: skipped: symlinks inside directories are not followed",
        "2 files, 2 objects valid (1 ignored field)",
    ]


def test_cli_max_size(tree: Path) -> None:
    result = runner.invoke(app, ["validate", "--max-size", "10", str(tree / "a" / "pod.yaml")])
    assert result.exit_code == 1
    assert "over the 10-byte limit (--max-size)" in result.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["validate"],
        ["validate", "/does/not/exist"],
        ["validate", "--max-size", "0", "."],
        ["validate", "-o", "xml", "."],
    ],
)
def test_cli_usage_errors_exit_2(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output


def test_cli_help_documents_the_exit_codes() -> None:
    result = runner.invoke(app, ["validate", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    assert "2 usage error, including a PATH that does not exist" in text
