"""Rollback through git: a commit on the tracked branch that puts an old
revision's pod template back into the manifest that declares the Deployment.

gitkube never changes the cluster behind git: a rollback is a commit, so the
sync applies it like any other change and automatic sync stays on.

- **What to put back.** Revision N's template is the one of the ReplicaSet
  whose ``deployment.kubernetes.io/revision`` is N, without its
  ``pod-template-hash`` label. When the commit that made revision N
  (``gitkube.io/revision-commit``) is in the repository and declares the
  same template there, that text is put back as it was written (comments and
  key order kept); otherwise the template is written from the ReplicaSet.
- **Where.** The file in the Deployment's ``gitkube.io/source-path``
  annotation, at the tip of the tracked branch. Only the ``spec.template``
  block of the one YAML document declaring that Deployment changes; every
  other byte of the file stays. JSON files are rewritten whole.
- **How.** A clone of the branch in a temporary directory; a commit whose
  message names the Deployment, both revisions and commits, and the reason;
  a push. A repository that is a checkout on this machine (the quick start
  syncs the clone it runs in) has its work tree updated with the push
  (``receive.denyCurrentBranch=updateInstead``), and refuses it when that
  work tree has uncommitted changes. A push refused because the branch
  moved is retried on the new tip a bounded number of times.

``replace_template`` and ``find_template`` are pure (text in, text out).
GitPython runs in a worker thread; credentials never appear in messages.
"""

from __future__ import annotations

import asyncio
import difflib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from gitkube.api.objects import Deployment, PodTemplateSpec
from gitkube.api.rollout import POD_TEMPLATE_HASH
from gitkube.api.serde import from_dict, to_dict
from gitkube.errors import GitkubeError, SourceError
from gitkube.sync.source import redact

#: pushes tried when the branch keeps moving under the rollback
PUSH_ATTEMPTS = 3
COMMITTER = ("gitkube", "gitkube@localhost")


class RollbackError(GitkubeError):
    """The rollback cannot be written: no such revision, no declaring file, …"""


# ---------------------------------------------------------------- the template, pure


def template_dict(template: PodTemplateSpec) -> dict[str, Any]:
    """A ReplicaSet's template as a manifest would have it (no hash label)."""
    data: dict[str, Any] = to_dict(template)
    meta = data.get("metadata", {})
    labels = meta.get("labels", {})
    labels.pop(POD_TEMPLATE_HASH, None)
    if not labels:
        meta.pop("labels", None)
    for key in ("namespace",):
        if meta.get(key) == "default":
            meta.pop(key)
    if not meta:
        data.pop("metadata", None)
    return data


def _build(data: Any) -> PodTemplateSpec:
    """A template through gitkube's types, so two spellings of one template
    compare equal (defaults filled in the same way)."""
    return from_dict(PodTemplateSpec, data if isinstance(data, dict) else {})


@dataclass
class TemplateSpan:
    """Where ``spec.template`` of one document lies in a file's text."""

    start: int
    end: int
    #: the column its block starts at; -1 when it sits on the key's line (flow style)
    column: int
    key_column: int
    data: Any
    line: int


def _get(node: Node, key: str) -> tuple[ScalarNode, Node] | None:
    if not isinstance(node, MappingNode):
        return None
    for k, v in node.value:
        if isinstance(k, ScalarNode) and k.value == key:
            return k, v
    return None


def _scalar(node: Node, *keys: str) -> str:
    for key in keys:
        found = _get(node, key)
        if found is None:
            return ""
        node = found[1]
    return str(node.value) if isinstance(node, ScalarNode) else ""


def _last_end(node: Node) -> int:
    """Where the text of ``node`` really ends (block nodes' own end marks run
    on over blank lines and comments up to the next key)."""
    if isinstance(node, MappingNode) and node.value and not node.flow_style:
        return _last_end(node.value[-1][1])
    if isinstance(node, SequenceNode) and node.value and not node.flow_style:
        return _last_end(node.value[-1])
    return int(node.end_mark.index)


def _documents(text: str, path: str) -> Iterator[Node]:
    try:
        for doc in yaml.compose_all(text, Loader=yaml.SafeLoader):
            if doc is not None:
                yield doc
    except yaml.YAMLError as exc:
        raise RollbackError(f"{path}: not valid YAML: {exc}") from None


def _objects(text: str, path: str) -> Iterator[Node]:
    """Each document, and each item of a ``List`` kind (``List``, ``DeploymentList``…)."""
    for doc in _documents(text, path):
        yield doc
        items = _get(doc, "items") if _scalar(doc, "kind").endswith("List") else None
        if items is not None and isinstance(items[1], SequenceNode):
            yield from items[1].value


def find_template(text: str, path: str, *, namespace: str, name: str) -> TemplateSpan:
    """The span of ``spec.template`` of the Deployment ``namespace/name`` in ``text``."""
    for doc in _objects(text, path):
        if _scalar(doc, "kind") != Deployment.KIND or _scalar(doc, "metadata", "name") != name:
            continue
        if (_scalar(doc, "metadata", "namespace") or "default") != (namespace or "default"):
            continue
        spec = _get(doc, "spec")
        found = _get(spec[1], "template") if spec else None
        if found is None:
            line = doc.start_mark.line + 1
            raise RollbackError(f"{path}:{line}: Deployment/{name}: spec.template not found")
        key, value = found
        end = _last_end(value)
        newline = text.find("\n", end)
        end = len(text) if newline < 0 else newline
        inline = value.start_mark.line == key.start_mark.line
        loader = yaml.SafeLoader("")
        try:
            data = loader.construct_document(value)
        finally:
            loader.dispose()
        return TemplateSpan(
            start=int(value.start_mark.index),
            end=end,
            column=-1 if inline else int(value.start_mark.column),
            key_column=int(key.start_mark.column),
            data=data,
            line=key.start_mark.line + 1,
        )
    where = f" in namespace {namespace}" if namespace and namespace != "default" else ""
    raise RollbackError(f"{path}: no Deployment named {name!r}{where} in this file")


def _indent(block: str, column: int) -> str:
    lines = block.rstrip("\n").split("\n")
    pad = " " * column
    return "\n".join([lines[0], *[(pad + line) if line else line for line in lines[1:]]])


def _block_text(text: str, span: TemplateSpan) -> str:
    """The template's own text, its lines de-indented to column 0."""
    lines = text[span.start : span.end].split("\n")
    pad = span.column
    return "\n".join(
        [lines[0], *[line[pad:] if line[:pad].strip() == "" else line for line in lines[1:]]]
    )


def replace_template(
    text: str,
    path: str,
    *,
    namespace: str,
    name: str,
    template: dict[str, Any],
    written: str = "",
) -> str:
    """``text`` with the Deployment's ``spec.template`` replaced: by
    ``written`` (a block as it was written, de-indented, from an older
    version of the file) when given, else by ``template`` dumped as YAML."""
    if path.endswith(".json"):
        return _replace_json(text, path, namespace=namespace, name=name, template=template)
    span = find_template(text, path, namespace=namespace, name=name)
    block = written or yaml.safe_dump(template, sort_keys=False, default_flow_style=False)
    if span.column < 0:
        column = span.key_column + 2
        new = "\n" + " " * column + _indent(block, column)
        start = span.start
        # the flow mapping sits after "template: " on the key's line
        while start > 0 and text[start - 1] == " ":
            start -= 1
        return text[:start] + new + text[span.end :]
    return text[: span.start] + _indent(block, span.column) + text[span.end :]


def _replace_json(
    text: str, path: str, *, namespace: str, name: str, template: dict[str, Any]
) -> str:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise RollbackError(f"{path}: not valid JSON: {exc}") from None
    items = data.get("items") if isinstance(data, dict) and "items" in data else [data]
    for item in items if isinstance(items, list) else []:
        meta = item.get("metadata", {}) if isinstance(item, dict) else {}
        if (
            isinstance(item, dict)
            and item.get("kind") == Deployment.KIND
            and meta.get("name") == name
            and (meta.get("namespace") or "default") == (namespace or "default")
        ):
            item.setdefault("spec", {})["template"] = template
            return json.dumps(data, indent=2) + "\n"
    raise RollbackError(f"{path}: no Deployment named {name!r} in this file")


def unified_diff(path: str, old: str, new: str) -> str:
    return "".join(
        difflib.unified_diff(
            old.splitlines(keepends=True),
            new.splitlines(keepends=True),
            fromfile=f"a/{path}",
            tofile=f"b/{path}",
        )
    )


# ---------------------------------------------------------------- the commit


@dataclass
class RollbackRequest:
    repo: str
    branch: str
    #: the manifest file, relative to the repository root
    path: str
    namespace: str
    name: str
    #: the revision to put back, and its template as the ReplicaSet holds it
    revision: int
    template: dict[str, Any]
    #: the commit that made ``revision`` ("" when unknown)
    revision_commit: str = ""
    current_revision: int = 0
    current_commit: str = ""
    reason: str = ""

    def message(self) -> str:
        made = f" (commit {self.revision_commit[:12]})" if self.revision_commit else ""
        current = (
            f", replacing revision {self.current_revision}"
            + (f" (commit {self.current_commit[:12]})" if self.current_commit else "")
            if self.current_revision
            else ""
        )
        lines = [
            f"Roll back deployment/{self.name} to revision {self.revision}",
            "",
            f"gitkube rollback: spec.template of Deployment {self.namespace}/{self.name} in "
            f"{self.path} is put back to revision {self.revision}{made}{current}.",
        ]
        if self.reason:
            lines += ["", f"Reason: {self.reason}"]
        return "\n".join(lines) + "\n"


@dataclass
class RollbackResult:
    path: str
    diff: str
    message: str
    #: the commit pushed ("" for a dry run or when nothing changed)
    commit: str = ""
    #: the template came from the commit that made the revision (as written)
    as_written: bool = False
    unchanged: bool = False


class RollbackWriter:
    """Clones the branch, edits the one document, commits and pushes."""

    def __init__(self, request: RollbackRequest) -> None:
        self.request = request

    def _redact(self, text: str) -> str:
        return redact(text, self.request.repo)

    async def run(self, *, dry_run: bool) -> RollbackResult:
        return await asyncio.to_thread(self._run, dry_run)

    def _run(self, dry_run: bool) -> RollbackResult:
        req = self.request
        with tempfile.TemporaryDirectory(prefix="gitkube-rollback-") as tmp:
            try:
                repo = git.Repo.clone_from(
                    req.repo,
                    tmp,
                    branch=req.branch,
                    single_branch=True,
                    env={"GIT_TERMINAL_PROMPT": "0"},
                )
            except git.GitCommandError as exc:
                raise SourceError(
                    self._redact(
                        f"cannot clone {req.repo} (branch {req.branch}): "
                        f"{str(exc.stderr).strip() or exc}"
                    )
                ) from None
            try:
                for attempt in range(PUSH_ATTEMPTS):
                    result = self._edit(repo, Path(tmp))
                    if dry_run or result.unchanged:
                        return result
                    self._commit(repo, result)
                    try:
                        repo.git.push(*self._push_args())
                        result.commit = repo.head.commit.hexsha
                        return result
                    except git.GitCommandError as exc:
                        if attempt + 1 == PUSH_ATTEMPTS:
                            raise SourceError(
                                self._redact(
                                    f"cannot push the rollback to {req.branch}: "
                                    f"{str(exc.stderr).strip() or exc}"
                                )
                            ) from None
                        repo.git.fetch("origin", req.branch)
                        repo.git.reset("--hard", f"origin/{req.branch}")
            finally:
                repo.close()
        raise AssertionError("unreachable")

    def _push_args(self) -> list[str]:
        args = ["origin", f"HEAD:refs/heads/{self.request.branch}"]
        local = Path(self.request.repo.removeprefix("file://")).expanduser()
        if (local / ".git").exists():
            # a checkout on this machine (gitkube run in a clone): its branch is
            # checked out, so update its work tree too — git refuses when that
            # work tree has uncommitted changes, and nothing is lost
            args.insert(
                0, "--receive-pack=git -c receive.denyCurrentBranch=updateInstead receive-pack"
            )
        return args

    def _edit(self, repo: git.Repo, root: Path) -> RollbackResult:
        req = self.request
        file = root / req.path
        if not req.path or not file.is_file():
            raise RollbackError(
                f"the Deployment {req.namespace}/{req.name} is declared in {req.path or '?'}, "
                f"which is not in branch {req.branch} any more"
            )
        text = file.read_text()
        written = self._as_written(repo)
        new = replace_template(
            text,
            req.path,
            namespace=req.namespace,
            name=req.name,
            template=req.template,
            written=written,
        )
        result = RollbackResult(
            path=req.path,
            diff=unified_diff(req.path, text, new),
            message=req.message(),
            as_written=bool(written),
            unchanged=new == text,
        )
        file.write_text(new)
        return result

    def _as_written(self, repo: git.Repo) -> str:
        """The template block as the commit that made the revision has it, if
        that commit declares the same template."""
        req = self.request
        if not req.revision_commit or req.path.endswith(".json"):
            return ""
        try:
            old = repo.git.show(f"{req.revision_commit}:{req.path}")
        except git.GitCommandError:
            return ""
        try:
            span = find_template(old, req.path, namespace=req.namespace, name=req.name)
        except RollbackError:
            return ""
        if span.column < 0 or _build(span.data or {}) != _build(req.template):
            return ""
        return _block_text(old, span)

    def _commit(self, repo: git.Repo, result: RollbackResult) -> None:
        reader = repo.config_reader()
        name = reader.get_value("user", "name", default="") or COMMITTER[0]
        email = reader.get_value("user", "email", default="") or COMMITTER[1]
        actor = git.Actor(str(name), str(email))
        repo.index.add([result.path])
        repo.index.commit(result.message, author=actor, committer=actor)
