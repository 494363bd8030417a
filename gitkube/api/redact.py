"""Secret values never reach any output: the one place that hides them.

Two tools, used by every surface (``get``, ``diff``, ``status``, the status
branch, metrics, logs, error messages, the HTTP API):

- **Structural**: ``redact_object`` masks a Secret's ``data`` and
  ``stringData`` values (keys stay: they are names, not secrets), the
  ``kubectl.kubernetes.io/last-applied-configuration`` annotation, which
  repeats them, and gitkube's desired-hash annotation (a hash of them).
  ``redact_diff_pair`` does the same to the two sides of a diff, marking
  the keys whose value changed, so a reader learns *that* and *where*,
  never *what*.
- **Textual**: a ``Scrubber`` knows the values of the Secrets this process
  has read (each as text, as base64, and each line of a multi-line value)
  and replaces them in any text: every log record (a record factory,
  ``install_log_redaction``), error messages, reports. ``remember_secret``
  feeds the process-wide one.

No I/O; imports only ``gitkube.api``.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from gitkube.api.annotations import DESIRED_HASH

#: what a Secret's value is shown as (valid base64, so a redacted Secret
#: still has the shape of one, as Argo CD does it)
MASK = "++++++++"
#: a value that differs between the two sides of a diff
MASK_CHANGED = "++++++++ (changed)"
#: the text a scrubbed value becomes
SCRUBBED = "[redacted]"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
SECRET_FIELDS = ("data", "stringData")
#: values shorter than this are not scrubbed from free text (they would
#: eat ordinary words and digits); structural redaction hides them anyway
MIN_SCRUB_LENGTH = 4


def is_secret(data: Mapping[str, Any] | None) -> bool:
    return isinstance(data, Mapping) and data.get("kind") == "Secret"


def redact_object(data: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a wire dict with a Secret's values masked; other kinds as they are."""
    if not is_secret(data):
        return dict(data)
    out = dict(data)
    for name in SECRET_FIELDS:
        values = out.get(name)
        if isinstance(values, Mapping):
            out[name] = {k: MASK for k in values}
        elif values is not None:
            out[name] = MASK
    meta = out.get("metadata")
    if isinstance(meta, Mapping):
        annotations = meta.get("annotations")
        hidden = [k for k in (LAST_APPLIED, DESIRED_HASH) if k in (annotations or {})]
        if isinstance(annotations, Mapping) and hidden:
            # the desired hash is a hash of the values: a weak one could be guessed from it
            meta = dict(meta)
            meta["annotations"] = {**annotations, **dict.fromkeys(hidden, MASK)}
            out["metadata"] = meta
    return out


def redact_diff_pair(
    old: Mapping[str, Any] | None, new: Mapping[str, Any] | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Both sides of a diff with a Secret's values masked; on the new side a
    key whose value changed shows ``MASK_CHANGED``."""
    if not (is_secret(old) or is_secret(new)):
        return (dict(old) if old is not None else None, dict(new) if new is not None else None)
    red_old = redact_object(old) if old is not None else None
    red_new = redact_object(new) if new is not None else None
    if old is not None and new is not None and red_new is not None:
        for name in SECRET_FIELDS:
            before, after = old.get(name), new.get(name)
            if isinstance(before, Mapping) and isinstance(after, Mapping):
                red_new[name] = {
                    k: (MASK if k in before and before[k] == v else MASK_CHANGED)
                    for k, v in after.items()
                }
    return red_old, red_new


def changed_secret_keys(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> list[str]:
    """The keys of a Secret's data that were added, removed or changed."""
    keys: set[str] = set()
    for name in SECRET_FIELDS:
        before = (old or {}).get(name) or {}
        after = (new or {}).get(name) or {}
        if isinstance(before, Mapping) and isinstance(after, Mapping):
            keys |= {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
    return sorted(keys)


# ---------------------------------------------------------------- free text


def secret_values(data: Mapping[str, Any], *, min_length: int = MIN_SCRUB_LENGTH) -> set[str]:
    """The forms of a Secret's values that could appear in text: the base64
    as stored, the decoded text, each of its lines, and the base64 of
    ``stringData`` values. Works on wire dicts and raw manifests."""
    found: set[str] = set()

    def add_plain(text: str) -> None:
        found.add(text)
        found.add(base64.b64encode(text.encode()).decode())
        for line in text.splitlines():
            found.add(line.strip())

    raw = data.get("data")
    if isinstance(raw, Mapping):
        for value in raw.values():
            if not isinstance(value, str):
                found.add(str(value))
                continue
            found.add(value)
            try:
                decoded = base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                continue
            add_plain(decoded.decode("utf-8", errors="replace"))
    plain = data.get("stringData")
    if isinstance(plain, Mapping):
        for value in plain.values():
            add_plain(value if isinstance(value, str) else str(value))
    meta = data.get("metadata")
    if isinstance(meta, Mapping):
        annotations = meta.get("annotations")
        if isinstance(annotations, Mapping) and isinstance(annotations.get(LAST_APPLIED), str):
            found.add(annotations[LAST_APPLIED])
    return {v for v in found if len(v) >= min_length}


class Scrubber:
    """Replaces known secret values in text (longest first). Thread-safe."""

    def __init__(self) -> None:
        self._values: set[str] = set()
        self._ordered: tuple[str, ...] = ()
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        new = {v for v in values if len(v) >= MIN_SCRUB_LENGTH} - self._values
        if not new:
            return
        with self._lock:
            self._values |= new
            self._ordered = tuple(sorted(self._values, key=len, reverse=True))

    def __len__(self) -> int:
        return len(self._values)

    def scrub(self, text: str) -> str:
        ordered = self._ordered
        if not ordered or not text:
            return text
        for value in ordered:
            if value in text:
                text = text.replace(value, SCRUBBED)
        return text

    def scrub_object(self, value: Any) -> Any:
        """A copy of a dataclass tree (lists, dicts, strings inside) scrubbed;
        the value itself when nothing in it is known."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            changes = {}
            for f in dataclasses.fields(value):
                if not f.init:
                    continue
                old = getattr(value, f.name)
                new = self.scrub_object(old)
                if new is not old:
                    changes[f.name] = new
            return dataclasses.replace(value, **changes) if changes else value
        if isinstance(value, list):
            items = [self.scrub_object(v) for v in value]
            return items if any(a is not b for a, b in zip(items, value, strict=True)) else value
        if isinstance(value, tuple):
            items = [self.scrub_object(v) for v in value]
            return (
                tuple(items)
                if any(a is not b for a, b in zip(items, value, strict=True))
                else value
            )
        if isinstance(value, dict):
            out = {k: self.scrub_object(v) for k, v in value.items()}
            return out if any(out[k] is not value[k] for k in value) else value
        return value

    def scrub_data(self, value: Any) -> Any:
        """``scrub`` applied to every string in a JSON-like structure."""
        if not self._ordered:
            return value
        if isinstance(value, str):
            return self.scrub(value)
        if isinstance(value, list):
            return [self.scrub_data(v) for v in value]
        if isinstance(value, dict):
            return {k: self.scrub_data(v) for k, v in value.items()}
        return value


#: the process-wide scrubber: every Secret read from git or the store is remembered
SCRUBBER = Scrubber()


def remember_secret(data: Mapping[str, Any]) -> None:
    """Remember a Secret's values (wire dict or manifest) so text is scrubbed of them."""
    if is_secret(data):
        SCRUBBER.add(secret_values(data))


def scrub(text: str) -> str:
    return SCRUBBER.scrub(text)


_QUOTED = re.compile(r"'([^']*)'" + r'|"([^"]*)"')


def scrub_message(message: str, document: Mapping[str, Any] | None) -> str:
    """An error message about ``document`` without its secret values (when it
    is a Secret: whole, or any quoted piece of one, such as a value cut short
    with '...') and without any value this process already knows."""
    if is_secret(document):
        assert document is not None
        values = secret_values(document, min_length=1)
        local = Scrubber()
        local.add(values)
        message = local.scrub(message)

        def hide(match: re.Match[str]) -> str:
            inner = match.group(1) if match.group(1) is not None else match.group(2)
            piece = inner.removesuffix("...").removesuffix("…")
            if len(piece) >= 3 and any(piece in v for v in values):
                return f"'{SCRUBBED}'"
            return match.group(0)

        message = _QUOTED.sub(hide, message)
    return SCRUBBER.scrub(message)


def _scrubbed_record(record: logging.LogRecord) -> logging.LogRecord:
    if not len(SCRUBBER):
        return record
    try:
        message = record.getMessage()
    except Exception:
        return record
    cleaned = SCRUBBER.scrub(message)
    if cleaned != message:
        record.msg, record.args = cleaned, None
    if record.exc_info and record.exc_info[1] is not None:
        text = str(record.exc_info[1])
        if SCRUBBER.scrub(text) != text:
            # the traceback would repeat the value: keep the scrubbed line only
            record.msg, record.args = f"{cleaned} ({type(record.exc_info[1]).__name__})", None
            record.exc_info = None
            record.exc_text = None
    return record


_installed = False


def install_log_redaction() -> None:
    """Scrub known secret values from every log record this process creates,
    whatever handler writes it (a record factory, installed once)."""
    global _installed
    if _installed:
        return
    _installed = True
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        return _scrubbed_record(previous(*args, **kwargs))

    logging.setLogRecordFactory(factory)
