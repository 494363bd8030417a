"""What the sync loop records in the store, and what `gitkube status` and the
git write-back read: the sync state (one key) and the history (one key, the
last 10 syncs). Plain dataclasses with JSON round-trips.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

SyncPhase = Literal["Unknown", "Synced", "OutOfSync", "Failed", "Suspended"]
HISTORY_LENGTH = 10


@dataclass
class ObjectSyncStatus:
    kind: str
    namespace: str
    name: str
    #: the file in git that declares it, relative to the repository root
    path: str = ""
    #: "Synced" | "OutOfSync" | "Failed"
    sync: str = "Synced"


@dataclass
class SyncError:
    """One error of a failed sync; ``str()`` is the validate format."""

    message: str
    file: str = ""
    line: int = 0
    kind: str = ""
    name: str = ""
    field: str = ""
    document: int = 0

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file else ""
        what = f"{self.kind}/{self.name}: " if self.kind else ""
        fld = f"{self.field}: " if self.field else ""
        return f"{where}{what}{fld}{self.message}"


@dataclass
class SyncState:
    #: the repository, with any credentials removed
    repo: str = ""
    ref: str = "main"
    path: str = ""
    #: the last commit applied whole
    revision: str = ""
    #: the commit of the last attempt (== revision after a success)
    attempted_revision: str = ""
    phase: SyncPhase = "Unknown"
    #: ISO-8601 UTC of the last successful apply, and of the last attempt
    synced_at: str = ""
    attempted_at: str = ""
    message: str = ""
    errors: list[SyncError] = field(default_factory=list)
    objects: list[ObjectSyncStatus] = field(default_factory=list)
    suspended: bool = False
    #: the synced commit's message, author and time (for display)
    commit: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> SyncState:
        data: dict[str, Any] = json.loads(raw)
        data["errors"] = [SyncError(**e) for e in data.get("errors", [])]
        data["objects"] = [ObjectSyncStatus(**o) for o in data.get("objects", [])]
        return cls(**data)


@dataclass
class SyncRecord:
    revision: str
    started_at: str
    finished_at: str
    #: "Succeeded" | "Failed" | "Unchanged"
    outcome: str
    created: int = 0
    updated: int = 0
    deleted: int = 0
    errors: int = 0
    duration_seconds: float = 0.0
    message: str = ""
    #: the first line of the commit's message
    commit_message: str = ""


def history_to_json(records: list[SyncRecord]) -> bytes:
    return json.dumps([asdict(r) for r in records[-HISTORY_LENGTH:]]).encode()


def history_from_json(raw: bytes | str) -> list[SyncRecord]:
    return [SyncRecord(**r) for r in json.loads(raw)]


@dataclass
class SyncControl:
    """``gitkube suspend`` / ``resume``: whether the sync may apply (SYNC_CONTROL_KEY)."""

    suspended: bool = False
    #: why, as given to ``gitkube suspend --reason``
    reason: str = ""
    #: ISO-8601 UTC of the last change
    changed_at: str = ""

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> SyncControl:
        data: dict[str, Any] = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in ("suspended", "reason", "changed_at")})
