"""Reading manifest files safely, keeping the line of every field.

A file's bytes become documents (one per ``---``); each document keeps its
YAML node tree so that a problem found later at a field path
(``spec.containers[0].image``) is reported at that field's line, not at the
start of the document. Lines are looked up only when there is something to
report, so valid documents cost one parse and one walk.

What is refused, with a message and a line, never a traceback:

- files over a size limit (1 MiB unless told), binary files (NUL bytes),
  bytes that are not UTF-8;
- malformed YAML or JSON;
- duplicate keys in a mapping (both lines named);
- YAML alias bombs: aliases are allowed, but a file may not expand to more
  nodes than it has bytes (plus a small allowance), and nesting is bounded;
- keys that are not strings and explicit tags gitkube does not construct
  (``!!binary``, ``!!set``, custom ``!tags``).

Empty documents are skipped. Whether a document is a mapping, and what it
must contain, is for ``gitkube.api.validation``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

#: file name endings that hold manifests
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")
DEFAULT_MAX_BYTES = 1 << 20
#: deeper than any real manifest (a Pod template is about 10 levels)
MAX_DEPTH = 100
#: bracket nesting refused before parsing (libyaml itself would crash far deeper)
MAX_FLOW_DEPTH = 1000
#: nodes a file may expand to beyond one per byte (aliases are bounded by this)
NODE_ALLOWANCE = 10_000

FieldPath = tuple[str | int, ...]

_CLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_T = "tag:yaml.org,2002:"
_STR, _NULL, _BOOL, _INT, _FLOAT = _T + "str", _T + "null", _T + "bool", _T + "int", _T + "float"
_TIMESTAMP, _MERGE, _MAP, _SEQ = _T + "timestamp", _T + "merge", _T + "map", _T + "seq"


class _FastResolver:
    """Resolves plain scalars' tags with a cache: manifests repeat the same
    keys and values, and tag resolution is the composer's Python-side cost.
    No path resolvers are registered, so descend/ascend have nothing to do.
    """

    _tags: dict[str, str] = {}

    def resolve(self, kind: type[Node], value: Any, implicit: tuple[bool, bool]) -> str:
        if kind is ScalarNode:
            if not implicit[0]:
                return _STR
            tag = self._tags.get(value)
            if tag is None:
                tag = super().resolve(kind, value, implicit)  # type: ignore[misc]
                if len(value) <= 64:
                    if len(self._tags) > 50_000:
                        self._tags.clear()
                    self._tags[value] = tag
            return tag
        return _SEQ if kind is SequenceNode else _MAP

    def descend_resolver(self, current_node: Any, current_index: Any) -> None:
        return None

    def ascend_resolver(self) -> None:
        return None


class _Loader(_FastResolver, _CLoader):
    pass


@dataclass
class ParseProblem:
    """Something wrong in a file: ``document`` 0 and ``line`` 0 mean the whole file."""

    line: int
    document: int
    message: str
    path: FieldPath = ()


@dataclass
class Document:
    """One non-empty document of a file."""

    index: int  #: 1-based position in the file, counting empty documents
    line: int  #: where the document's content starts
    data: Any
    node: Node | None = field(default=None, repr=False)
    problems: list[ParseProblem] = field(default_factory=list)

    def line_of(self, path: FieldPath) -> int:
        """The line of the field at ``path``, or of its nearest existing parent."""
        node = self.node
        if node is None:
            return self.line
        line = node.start_mark.line + 1
        for part in path:
            found = _child(node, part)
            if found is None:
                break
            key_node, node = found
            line = (key_node or node).start_mark.line + 1
        return line


def _child(node: Node, part: str | int) -> tuple[Node | None, Node] | None:
    """(key node, value node) of ``part`` in ``node``; merge keys are followed."""
    if isinstance(node, SequenceNode) and isinstance(part, int):
        return (None, node.value[part]) if 0 <= part < len(node.value) else None
    if isinstance(node, MappingNode):
        merged: list[Node] = []
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE:
                merged.extend(
                    value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                )
            elif isinstance(key_node, ScalarNode) and key_node.value == str(part):
                return key_node, value_node
        for source in merged:
            found = _child(source, part)
            if found is not None:
                return found
    return None


class _Abort(Exception):
    """Stop building a document: too deep, or the node budget is spent."""

    def __init__(self, line: int, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.line = line
        self.message = message
        self.fatal = fatal  # True: the rest of the file cannot be read either


class _Builder:
    """Builds Python values from a composed node tree, counting every node built."""

    _constructor = SafeConstructor()
    _scalars: dict[str, Any] = {
        _NULL: SafeConstructor.construct_yaml_null,
        _BOOL: SafeConstructor.construct_yaml_bool,
        _INT: SafeConstructor.construct_yaml_int,
        _FLOAT: SafeConstructor.construct_yaml_float,
    }

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.problems: list[ParseProblem] = []
        self.document = 0

    def build(self, node: Node, path: FieldPath, depth: int) -> Any:
        self.budget -= 1
        if self.budget < 0:
            raise _Abort(
                node.start_mark.line + 1,
                "YAML aliases expand to more nodes than the file has bytes "
                "(an alias bomb?); refusing to expand them",
                fatal=True,
            )
        if depth > MAX_DEPTH:
            raise _Abort(
                node.start_mark.line + 1,
                f"nested deeper than {MAX_DEPTH} levels (a recursive alias?)",
                fatal=False,
            )
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            if node.tag != _SEQ:
                self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
            return [self.build(item, (*path, i), depth + 1) for i, item in enumerate(node.value)]
        assert isinstance(node, MappingNode)
        return self.mapping(node, path, depth)

    def scalar(self, node: ScalarNode, path: FieldPath) -> Any:
        tag = node.tag
        if tag in (_STR, _TIMESTAMP):  # dates stay text, as JSON has no dates
            return node.value
        construct = self._scalars.get(tag)
        if construct is None:
            self.problem(node, path, f"unsupported YAML tag {tag!r}; use plain values")
            return node.value
        try:
            return construct(self._constructor, node)
        except (ConstructorError, ValueError) as exc:
            self.problem(node, path, f"invalid {tag.rsplit(':', 1)[-1]} {node.value!r}: {exc}")
            return node.value

    def mapping(self, node: MappingNode, path: FieldPath, depth: int) -> dict[str, Any]:
        if node.tag != _MAP:
            self.problem(node, path, f"unsupported YAML tag {node.tag!r}")
        out: dict[str, Any] = {}
        merges: list[Node] = []
        for key_node, value_node in node.value:
            if type(key_node) is ScalarNode and key_node.tag == _STR:
                key = key_node.value
            elif key_node.tag == _MERGE:
                merges.append(value_node)
                continue
            else:
                raw = self.build(key_node, path, depth + 1)
                shown = json.dumps(raw) if isinstance(raw, bool | int | float | None) else "?"
                self.problem(
                    key_node,
                    path,
                    f"key {shown if shown != '?' else key_node.tag} is not a string; quote it",
                )
                continue
            if key in out:
                first = next(k for k, _ in node.value if getattr(k, "value", None) == key)
                self.problem(
                    key_node,
                    (*path, key),
                    f"duplicate key {key!r} (first at line {first.start_mark.line + 1})",
                )
                continue
            if type(value_node) is ScalarNode and value_node.tag == _STR:
                self.budget -= 1  # the common case, without a call
                out[key] = value_node.value
            else:
                out[key] = self.build(value_node, (*path, key), depth + 1)
        # Merge keys (<<): explicit keys win, then earlier sources over later.
        for source in merges:
            sources = source.value if isinstance(source, SequenceNode) else [source]
            for item in sources:
                merged = self.build(item, path, depth + 1)
                if not isinstance(merged, dict):
                    self.problem(item, path, "a merge key (<<) needs a mapping")
                    continue
                for key, value in merged.items():
                    out.setdefault(key, value)
        return out

    def problem(self, node: Node, path: FieldPath, message: str) -> None:
        self.problems.append(ParseProblem(node.start_mark.line + 1, self.document, message, path))


def _too_deep_flow(data: bytes) -> int:
    """The line where bracket nesting passes ``MAX_FLOW_DEPTH``, or 0.

    libyaml's composer recurses once per level and crashes the process
    somewhere past 20,000 levels, so deeper input never reaches it.
    Brackets inside quoted strings count too, which can only over-count.
    """
    if data.count(b"[") + data.count(b"{") <= MAX_FLOW_DEPTH:
        return 0
    depth = 0
    for match in re.finditer(rb"[\[\]{}]", data):
        if match.group() in (b"[", b"{"):
            depth += 1
            if depth > MAX_FLOW_DEPTH:
                return data.count(b"\n", 0, match.start()) + 1
        elif depth:
            depth -= 1
    return 0


def _check_bytes(data: bytes, *, max_bytes: int) -> ParseProblem | None:
    if len(data) > max_bytes:
        return ParseProblem(
            0, 0, f"file is {len(data)} bytes, over the {max_bytes}-byte limit (--max-size)"
        )
    nul = data.find(b"\0")
    if nul >= 0:
        return ParseProblem(
            data.count(b"\n", 0, nul) + 1, 0, "binary file (contains NUL bytes), not a manifest"
        )
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return ParseProblem(
            data.count(b"\n", 0, exc.start) + 1,
            0,
            f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} is invalid",
        )
    return None


def parse_documents(
    data: bytes, path: str, *, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[list[Document], list[ParseProblem]]:
    """The non-empty documents of a file, and the problems that stopped reading it.

    ``path`` only decides whether the file is JSON (for better messages).
    Problems inside a document (duplicate keys, bad tags) are on the document.
    """
    bad = _check_bytes(data, max_bytes=max_bytes)
    if bad is not None:
        return [], [bad]
    if path.endswith(".json"):
        # YAML reads more than JSON ({"kind": } is valid YAML): a .json file must be JSON.
        try:
            json.loads(data)
        except json.JSONDecodeError as exc:
            return [], [
                ParseProblem(exc.lineno, 1, f"invalid JSON: {exc.msg} (column {exc.colno})")
            ]
        except RecursionError:
            return [], [ParseProblem(0, 1, "invalid JSON: nested too deeply")]
    deep = _too_deep_flow(data)
    if deep:
        return [], [ParseProblem(deep, 0, f"nested deeper than {MAX_FLOW_DEPTH} levels")]
    builder = _Builder(len(data) + NODE_ALLOWANCE)
    documents: list[Document] = []
    problems: list[ParseProblem] = []
    index = 0
    nodes = yaml.compose_all(data, Loader=_Loader)
    while True:
        try:
            node = next(nodes)
        except StopIteration:
            break
        except yaml.YAMLError as exc:
            if path.endswith(".json"):
                return _parse_json(data)
            problems.append(_yaml_problem(exc, index + 1))
            break
        index += 1
        if node is None or (node.tag == _NULL and isinstance(node, ScalarNode)):
            continue  # an empty document
        builder.document = index
        before = len(builder.problems)
        try:
            value = builder.build(node, (), 0)
        except _Abort as exc:
            problems.append(ParseProblem(exc.line, index, exc.message))
            if exc.fatal:
                break
            continue
        doc = Document(index, node.start_mark.line + 1, value, node)
        doc.problems = builder.problems[before:]
        documents.append(doc)
    return documents, problems


def _yaml_problem(exc: yaml.YAMLError, document: int) -> ParseProblem:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    line = mark.line + 1 if mark is not None else 0
    if isinstance(exc, yaml.MarkedYAMLError):
        what = exc.problem or "syntax error"
        if exc.context:
            what = f"{what} ({exc.context}"
            if exc.context_mark is not None and exc.context_mark is not mark:
                what += f" at line {exc.context_mark.line + 1}"
            what += ")"
    else:
        what = str(exc).splitlines()[0]
    return ParseProblem(line, document, f"invalid YAML: {what}")


def _parse_json(data: bytes) -> tuple[list[Document], list[ParseProblem]]:
    """JSON that YAML cannot read (tabs, for example): no field lines, but no false errors."""
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in items:
            if key in out:
                duplicates.append(key)
            out[key] = value
        return out

    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=pairs)
    except json.JSONDecodeError as exc:
        return [], [ParseProblem(exc.lineno, 1, f"invalid JSON: {exc.msg} (column {exc.colno})")]
    except RecursionError:
        return [], [ParseProblem(0, 1, "invalid JSON: nested too deeply")]
    doc = Document(1, 1, value)
    doc.problems = [ParseProblem(1, 1, f"duplicate key {key!r}") for key in duplicates]
    return [doc], []


# ---------------------------------------------------------------- finding files


def is_manifest_path(path: str) -> bool:
    """Whether a file found under a manifest directory is a manifest.

    ``.yaml``, ``.yml`` and ``.json`` files are; files in hidden directories
    (``.git``, ``.github``) and hidden files are not.
    """
    parts = path.replace(os.sep, "/").split("/")
    if any(part.startswith(".") and part not in (".", "..") for part in parts):
        return False
    return parts[-1].lower().endswith(MANIFEST_SUFFIXES)


@dataclass
class FoundFiles:
    files: list[Path] = field(default_factory=list)
    #: symlinks met inside directories: not followed
    skipped: list[Path] = field(default_factory=list)
    #: directories that could not be listed, and why
    unreadable: list[tuple[Path, str]] = field(default_factory=list)


def find_manifest_files(paths: list[Path]) -> FoundFiles:
    """The manifest files named or found under ``paths``, in a stable order.

    A file named explicitly is read whatever its name (and through a
    symlink: the caller chose it). Directories are searched recursively
    for ``is_manifest_path`` files; symlinks inside them are not followed.
    """
    found = FoundFiles()
    seen: set[Path] = set()

    def add(file: Path) -> None:
        if file not in seen:
            seen.add(file)
            found.files.append(file)

    for root in paths:
        if not root.is_dir():
            add(root)
            continue
        for file in _walk(root, found):
            if is_manifest_path(str(file.relative_to(root))):
                add(file)
    return found


def _walk(root: Path, found: FoundFiles) -> Iterator[Path]:
    try:
        with os.scandir(root) as entries:
            ordered = sorted(entries, key=lambda e: e.name)
    except OSError as exc:
        found.unreadable.append((root, exc.strerror or str(exc)))
        return
    for entry in ordered:
        path = Path(entry.path)
        if entry.is_symlink():
            if entry.name.lower().endswith(MANIFEST_SUFFIXES) or entry.is_dir():
                found.skipped.append(path)
            continue
        if entry.is_dir(follow_symlinks=False):
            if not entry.name.startswith("."):
                yield from _walk(path, found)
        elif entry.is_file(follow_symlinks=False):
            yield path
