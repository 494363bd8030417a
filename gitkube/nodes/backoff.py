"""kubelet's per-container back-off for restarts and failed starts.

One entry per key (pod uid, container name): the agent counts every failed
attempt of a container there, on both runtimes (see ``gitkube.nodes.podplan``).
The first restart after a failure is immediate; each further one waits
``initial``, then twice that, up to ``cap`` (kubelet: 10 s doubling to 5 min).
An entry is forgotten when the container has not needed a restart for
``reset_after`` seconds (kubelet: twice the cap), so a container that crashes
once a day does not wait 5 min.

Pure: every method takes the time as an argument.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffSettings:
    initial: float = 10.0
    cap: float = 300.0
    #: forget an entry after this long without a restart; default twice the cap
    reset_after: float | None = None

    @property
    def reset_seconds(self) -> float:
        return self.reset_after if self.reset_after is not None else 2 * self.cap


@dataclass
class _Entry:
    delay: float
    #: when the back-off was last advanced (the failure it was advanced for)
    since: float


class RestartBackoff:
    """Back-off state for many keys; see the module docstring."""

    def __init__(self, settings: BackoffSettings | None = None) -> None:
        self.settings = settings or BackoffSettings()
        self._entries: dict[Hashable, _Entry] = {}

    def delay(self, key: Hashable) -> float:
        """The delay the next failure of ``key`` will wait (0 when there is no entry)."""
        entry = self._entries.get(key)
        return entry.delay if entry else 0.0

    def remaining(self, key: Hashable, *, since: float, now: float) -> float:
        """Seconds ``key`` must still wait after a failure at ``since`` (0: go ahead)."""
        self._expire(key, now)
        entry = self._entries.get(key)
        if entry is None:
            return 0.0
        return max(0.0, since + entry.delay - now)

    def advance(self, key: Hashable, *, now: float) -> float:
        """Record a restart of ``key`` now; returns the delay the next one will wait."""
        self._expire(key, now)
        entry = self._entries.get(key)
        if entry is None:
            entry = _Entry(delay=self.settings.initial, since=now)
        else:
            entry = _Entry(delay=min(self.settings.cap, entry.delay * 2), since=now)
        self._entries[key] = entry
        return entry.delay

    def forget(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def tracked_keys(self) -> list[Hashable]:
        return list(self._entries)

    def _expire(self, key: Hashable, now: float) -> None:
        entry = self._entries.get(key)
        if entry is not None and now - entry.since > self.settings.reset_seconds:
            del self._entries[key]
