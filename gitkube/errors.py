"""Errors a user can cause or meet, typed by what they mean.

    GitkubeError                    base; carries a message a person can act on
    ├── ValidationError             a manifest is invalid (carries ManifestError items)
    ├── ConfigError                 a flag, file or environment variable is wrong
    ├── StoreError                  anything from a store backend
    │   ├── StoreUnavailable        the store cannot be reached; retry with back-off
    │   ├── Conflict                a compare-and-swap lost; re-read and plan again
    │   ├── NotFound                the key does not exist
    │   ├── Compacted               a watch asked for a revision that is gone; re-list
    │   └── TxnTooLarge             a transaction has more operations than the store takes
    ├── SourceError                 git: fetch, ref or remote failure; retry with back-off
    └── RuntimeErrorBase            a container runtime failure
        └── ImagePullError          the image is not present and cannot be pulled

Library exceptions (grpc, sqlite3, docker, git) are translated at the adapter
edge, so callers never see them.
"""

from __future__ import annotations

from collections.abc import Sequence


class GitkubeError(Exception):
    """Base of every error gitkube raises on purpose."""

    #: True when trying the same thing later may succeed.
    retryable: bool = False


class ValidationError(GitkubeError):
    """Manifests are invalid. ``errors`` holds ``gitkube.api.validation.ManifestError``
    items (typed loosely here: this module imports nothing of gitkube)."""

    def __init__(self, message: str, *, errors: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.errors = list(errors)

    def __str__(self) -> str:
        lines = [super().__str__(), *(str(error) for error in self.errors)]
        return "\n".join(lines)


class ConfigError(GitkubeError):
    pass


class StoreError(GitkubeError):
    pass


class StoreUnavailable(StoreError):
    retryable = True


class Conflict(StoreError):
    retryable = True


class LeadershipLost(Conflict):
    """A fenced write failed because the writer no longer leads: do not retry."""

    retryable = False


class NotFound(StoreError):
    pass


class Compacted(StoreError):
    def __init__(self, message: str, *, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class FutureRevision(StoreError):
    """A read at a revision the store has not reached."""


class TxnTooLarge(StoreError):
    """A transaction exceeds the store's operation limit; write fewer objects per transaction."""


class SourceError(GitkubeError):
    retryable = True


class RuntimeErrorBase(GitkubeError):
    retryable = True


class ImagePullError(RuntimeErrorBase):
    pass
