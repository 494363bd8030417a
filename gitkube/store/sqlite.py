"""The embedded store: etcd's semantics in one SQLite file.

Tables: ``kv`` (current value of every key), ``log`` (one row per event, the
history watches read; bounded by auto-compaction), ``leases`` (deadline in
wall-clock seconds, so every process sharing the file agrees), ``meta``
(global revision, compact revision, lease id sequence).

Every write is one ``BEGIN IMMEDIATE`` transaction that bumps the revision
once, so several processes (the CLI and ``gitkube run``) can share the file
in WAL mode. All SQL runs on one dedicated thread per store: the event loop
never blocks on the file lock, and the connection is never shared between
threads. ``synchronous=NORMAL``: a commit survives a process crash; a power
loss may lose the last commits but never corrupts the file.

A watch wakes at once for writes made through this ``SQLiteStore`` and, for
writes made by other processes, when a housekeeping task sees the stored
revision move (every ``poll_interval``). The same task expires leases (any
process holding the file open does it; the delete is a guarded transaction,
so doing it twice is harmless) and compacts history older than ``history``
revisions.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from gitkube.errors import Compacted, FutureRevision, NotFound, StoreError, StoreUnavailable
from gitkube.store._common import DEFAULT_MAX_TXN_OPS, check_txn, make_kv, prefix_end
from gitkube.store.base import (
    Compare,
    Delete,
    Get,
    KeyValue,
    Op,
    Put,
    TxnResult,
    WatchEvent,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value)
    VALUES ('revision', 1), ('compact_revision', 0), ('lease_seq', 0);
CREATE TABLE IF NOT EXISTS kv (
    key BLOB PRIMARY KEY,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS log (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    revision INTEGER NOT NULL,
    type INTEGER NOT NULL,
    key BLOB NOT NULL,
    value BLOB NOT NULL,
    create_revision INTEGER NOT NULL,
    version INTEGER NOT NULL,
    lease INTEGER NOT NULL,
    prev_mod_revision INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS log_revision ON log (revision);
CREATE TABLE IF NOT EXISTS leases (
    id INTEGER PRIMARY KEY,
    ttl INTEGER NOT NULL,
    expires_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires_at);
"""

_PUT, _DELETE = 0, 1
_KV_COLUMNS = "key, value, create_revision, mod_revision, version, lease"
_LOG_INSERT = (
    "INSERT INTO log (revision, type, key, value, create_revision, version, lease, "
    "prev_mod_revision) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
#: how many queued writes share one commit
_WRITE_BATCH = 256
#: how many events one read of the log hands a watch
_WATCH_BATCH = 1000


def _kv(row: Sequence[Any]) -> KeyValue:
    return make_kv(row[0].decode(), row[1], row[2], row[3], row[4], row[5])


def _under(prefix: str) -> tuple[str, tuple[bytes, ...]]:
    """The SQL condition on ``key`` for the keys under ``prefix``, and its parameters."""
    start = prefix.encode()
    end = prefix_end(start)
    return ("key >= ? AND key < ?", (start, end)) if end else ("key >= ?", (start,))


@dataclass
class _WatchCursor:
    start_revision: int
    #: the next revision this watch needs (older ones have been delivered or skipped)
    next_revision: int
    #: the last log row read (None until the first read positions it)
    last_seq: int | None = None


class _Write:
    """The changes of one write transaction, all at ``revision``."""

    def __init__(self, conn: sqlite3.Connection, revision: int) -> None:
        self.conn = conn
        self.revision = revision
        self.changed = False

    def put(self, key: str, value: bytes, lease: int) -> None:
        if lease and not _lease_alive(self.conn, lease):
            raise NotFound(f"lease {lease} not found (it lapsed or was revoked)")
        k = key.encode()
        row = self.conn.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision, version, lease) "
            "VALUES (?1, ?2, ?3, ?3, 1, ?4) ON CONFLICT (key) DO UPDATE SET "
            "value = excluded.value, mod_revision = excluded.mod_revision, "
            "version = version + 1, lease = excluded.lease "
            "RETURNING create_revision, version",
            (k, value, self.revision, lease),
        ).fetchone()
        self.conn.execute(_LOG_INSERT, (self.revision, _PUT, k, value, row[0], row[1], lease, 0))
        self.changed = True

    def delete(self, key: str, *, prefix: bool = False) -> int:
        if prefix:
            where, keys = _under(key)
            rows = self.conn.execute(
                f"DELETE FROM kv WHERE {where} RETURNING {_KV_COLUMNS}", keys
            ).fetchall()
        else:
            rows = self.conn.execute(
                f"DELETE FROM kv WHERE key = ? RETURNING {_KV_COLUMNS}", (key.encode(),)
            ).fetchall()
        self._log_deletes(rows)
        return len(rows)

    def delete_lease_keys(self, lease: int) -> None:
        rows = self.conn.execute(
            f"DELETE FROM kv WHERE lease = ? RETURNING {_KV_COLUMNS}", (lease,)
        ).fetchall()
        self.conn.execute("DELETE FROM leases WHERE id = ?", (lease,))
        self._log_deletes(rows)

    def _log_deletes(self, rows: list[Any]) -> None:
        # etcd reports the keys of one delete in key order
        rows.sort(key=lambda r: r[0])
        self.conn.executemany(
            _LOG_INSERT,
            [(self.revision, _DELETE, r[0], r[1], r[2], r[4], r[5], r[3]) for r in rows],
        )
        if rows:
            self.changed = True


def _lease_alive(conn: sqlite3.Connection, lease: int) -> bool:
    row = conn.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
    return row is not None and row[0] > time.time()


class SQLiteStore:
    """The ``Store`` protocol on one SQLite file shared by processes on one machine."""

    def __init__(
        self,
        path: Path,
        *,
        poll_interval: float = 0.05,
        history: int = 50_000,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        busy_timeout: float = 5.0,
    ) -> None:
        if history < 1:
            raise ValueError(f"history must keep at least one revision, not {history}")
        self.path = Path(path)
        self.url = f"sqlite://{self.path}"
        self.poll_interval = poll_interval
        #: revisions of history kept for watches; older ones are compacted away
        self.history = history
        self.max_txn_ops = max_txn_ops
        self.busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gitkube-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._known_revision = 0
        self._changed: asyncio.Future[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._closed = False
        self._queue_lock = threading.Lock()
        self._write_queue: list[tuple[Callable[[_Write], Any], asyncio.Future[Any]]] = []
        self._drain_scheduled = False

    @classmethod
    async def open(cls, path: Path, **options: Any) -> SQLiteStore:
        store = cls(path, **options)
        await store._call(store._connect)
        await store._housekeep_once()
        store._housekeeping = asyncio.create_task(store._housekeep(), name=f"{store.url} keeper")
        return store

    # ------------------------------------------------------------ plumbing

    def _connect(self) -> None:
        # Switching a new file to WAL takes an exclusive lock and does not wait
        # on the busy handler: two first opens at once (the CLI beside `gitkube
        # run`) get "database is locked". Retry until the busy timeout.
        deadline = time.monotonic() + self.busy_timeout
        delay = 0.01
        while True:
            conn: sqlite3.Connection | None = None
            try:
                conn = sqlite3.connect(
                    self.path,
                    isolation_level=None,
                    check_same_thread=False,
                    timeout=self.busy_timeout,
                )
                conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
                break
            except sqlite3.OperationalError as exc:
                if conn is not None:
                    conn.close()
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 0.2)
            except sqlite3.Error as exc:
                if conn is not None:
                    conn.close()
                raise StoreUnavailable(f"cannot open the store at {self.path}: {exc}") from exc
        self._conn = conn
        self._known_revision = self._meta(conn, "revision")

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise StoreUnavailable(f"the store {self.url} is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except sqlite3.Error as exc:
            raise self._translate(exc) from exc
        except RuntimeError as exc:  # the executor was shut down by close()
            if self._closed:
                raise StoreUnavailable(f"the store {self.url} is closed") from exc
            raise

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreUnavailable(f"the store {self.url} is not open")
        return self._conn

    @staticmethod
    def _meta(conn: sqlite3.Connection, name: str) -> int:
        row = conn.execute("SELECT value FROM meta WHERE name = ?", (name,)).fetchone()
        return int(row[0])

    async def _submit_write(self, body: Callable[[_Write], T]) -> tuple[T, int]:
        """Run ``body`` as one write (one revision if it changed anything).

        Writes queue up while the SQL thread is busy and are then committed
        together, each in its own savepoint at its own revision: concurrent
        writers share one commit and one thread hand-off (group commit).
        """
        if self._closed:
            raise StoreUnavailable(f"the store {self.url} is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._queue_lock:
            self._write_queue.append((body, future))
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            try:
                self._executor.submit(self._drain, loop)
            except RuntimeError as exc:  # shut down by close()
                raise StoreUnavailable(f"the store {self.url} is closed") from exc
        result: tuple[T, int] = await future
        return result

    def _drain(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._queue_lock:
            batch, self._write_queue = (
                self._write_queue[:_WRITE_BATCH],
                self._write_queue[_WRITE_BATCH:],
            )
        outcomes = self._write_batch(batch)
        with self._queue_lock:
            if self._write_queue:
                try:
                    # behind whatever reads queued up meanwhile
                    self._executor.submit(self._drain, loop)
                except RuntimeError:  # shut down by close(): fail what is left
                    closed = StoreUnavailable(f"the store {self.url} is closed")
                    outcomes += [(f, None, closed) for _, f in self._write_queue]
                    self._write_queue = []
                    self._drain_scheduled = False
            else:
                self._drain_scheduled = False
        with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
            loop.call_soon_threadsafe(self._deliver, outcomes)

    def _write_batch(
        self, batch: list[tuple[Callable[[_Write], Any], asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        try:
            conn = self.conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                revision = self._meta(conn, "revision")
                # alone, a write needs no savepoint: its failure rolls everything back
                alone = len(batch) == 1
                for body, future in batch:
                    if not alone:
                        conn.execute("SAVEPOINT one_write")
                    write = _Write(conn, revision + 1)
                    try:
                        result = body(write)
                        if write.changed:
                            revision += 1
                            conn.execute(
                                "UPDATE meta SET value = ? WHERE name = 'revision'", (revision,)
                            )
                        if not alone:
                            conn.execute("RELEASE one_write")
                        outcomes.append((future, (result, revision), None))
                    except Exception as exc:
                        if alone:
                            raise
                        conn.execute("ROLLBACK TO one_write")
                        conn.execute("RELEASE one_write")
                        outcomes.append((future, None, exc))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:
            # nothing of the batch was committed
            return [(future, None, exc) for _, future in batch]
        return outcomes

    def _deliver(
        self, outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]
    ) -> None:
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(self._translate(error))

    def _translate(self, error: BaseException) -> BaseException:
        if isinstance(error, sqlite3.OperationalError):
            return StoreUnavailable(f"store {self.url}: {error}")
        if isinstance(error, sqlite3.Error):
            return StoreError(f"store {self.url}: {error}")
        return error

    def _read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``body`` on one consistent snapshot."""
        conn = self.conn
        conn.execute("BEGIN")
        try:
            return body(conn)
        finally:
            conn.execute("COMMIT")

    def _wrote(self, revision: int) -> None:
        if revision > self._known_revision:
            self._known_revision = revision
            if self._changed is not None and not self._changed.done():
                self._changed.set_result(None)
            self._changed = None

    def _change_future(self) -> asyncio.Future[None]:
        if self._changed is None:
            self._changed = asyncio.get_running_loop().create_future()
        return self._changed

    # ------------------------------------------------------------ reads

    async def revision(self) -> int:
        revision = await self._call(self._meta, self.conn, "revision")
        self._wrote(revision)
        return revision

    async def get(self, key: str) -> KeyValue | None:
        return await self._call(self._get, key)

    def _get(self, key: str) -> KeyValue | None:
        row = self.conn.execute(
            f"SELECT {_KV_COLUMNS} FROM kv WHERE key = ?", (key.encode(),)
        ).fetchone()
        return _kv(row) if row else None

    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        if revision:
            return await self._call(self._read, lambda conn: self._range_at(conn, prefix, revision))
        return await self._call(self._read, lambda conn: self._range(conn, prefix))

    def _range_at(
        self, conn: sqlite3.Connection, prefix: str, revision: int
    ) -> tuple[list[KeyValue], int]:
        """The keys under ``prefix`` as they were at ``revision``: those not
        changed since, as they are; the others from the log. A key's first
        change after ``revision`` says what it was: a delete keeps what it
        deleted; a put that starts a new life (version 1) finds it absent;
        another put replaced the key's last put at or before ``revision``,
        which the log holds unless it was compacted away (then ``Compacted``,
        as etcd answers a read there)."""
        current = self._meta(conn, "revision")
        if revision > current:
            raise FutureRevision(
                f"revision {revision} of {self.url} is a future revision (it is at {current})"
            )
        compacted = self._meta(conn, "compact_revision")
        if revision < compacted:
            raise self._compacted(revision, compacted)
        where, keys = _under(prefix)
        rows = conn.execute(
            f"SELECT {_KV_COLUMNS} FROM kv WHERE {where} AND mod_revision <= ?", (*keys, revision)
        ).fetchall()
        found = {row[0]: _kv(row) for row in rows}
        # SQLite takes the bare columns from the row min() or max() picks
        changes = conn.execute(
            "SELECT key, type, value, create_revision, version, lease, prev_mod_revision, "
            f"min(revision) FROM log WHERE revision > ? AND {where} GROUP BY key",
            (revision, *keys),
        ).fetchall()
        replaced = set()
        for key, kind, value, create_rev, version, lease, prev_mod, _ in changes:
            if kind == _DELETE:
                found[key] = make_kv(key.decode(), value, create_rev, prev_mod, version, lease)
            elif version > 1:
                replaced.add(key)
        if replaced:
            last_puts = conn.execute(
                "SELECT key, value, create_revision, version, lease, max(revision) FROM log "
                f"WHERE revision <= ? AND type = ? AND {where} GROUP BY key",
                (revision, _PUT, *keys),
            ).fetchall()
            for key, value, create_rev, version, lease, mod in last_puts:
                if key in replaced:
                    replaced.discard(key)
                    found[key] = make_kv(key.decode(), value, create_rev, mod, version, lease)
            if replaced:
                raise self._compacted(revision, compacted)
        return [found[k] for k in sorted(found)], revision

    def _range(self, conn: sqlite3.Connection, prefix: str) -> tuple[list[KeyValue], int]:
        where, keys = _under(prefix)
        rows = conn.execute(
            f"SELECT {_KV_COLUMNS} FROM kv WHERE {where} ORDER BY key", keys
        ).fetchall()
        return [_kv(r) for r in rows], self._meta(conn, "revision")

    def _compacted(self, revision: int, compact_revision: int) -> Compacted:
        return Compacted(
            f"revision {revision} of {self.url} has been compacted "
            f"(history starts at {compact_revision}); list again",
            compact_revision=compact_revision,
        )

    # ------------------------------------------------------------ writes

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        _, revision = await self._submit_write(lambda w: w.put(key, value, lease))
        self._wrote(revision)
        return revision

    async def delete(self, key: str) -> bool:
        count, revision = await self._submit_write(lambda w: w.delete(key))
        self._wrote(revision)
        return count > 0

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure, max_ops=self.max_txn_ops)
        (succeeded, gets), revision = await self._submit_write(
            lambda w: self._txn(w, compares, success, failure)
        )
        self._wrote(revision)
        return TxnResult(succeeded, revision, gets)

    def _txn(
        self,
        write: _Write,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op],
    ) -> tuple[bool, list[KeyValue | None]]:
        conn = write.conn
        succeeded = True
        for compare in compares:
            row = conn.execute(
                "SELECT mod_revision FROM kv WHERE key = ?", (compare.key.encode(),)
            ).fetchone()
            if (row[0] if row else 0) != compare.mod_revision:
                succeeded = False
                break
        gets: list[KeyValue | None] = []
        for op in success if succeeded else failure:
            if isinstance(op, Put):
                write.put(op.key, op.value, op.lease)
            elif isinstance(op, Delete):
                write.delete(op.key, prefix=op.prefix)
            elif isinstance(op, Get):
                gets.append(self._get(op.key))
            else:  # pragma: no cover - Op is a closed union
                raise TypeError(f"not a store operation: {op!r}")
        return succeeded, gets

    # ------------------------------------------------------------ watch

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        if start_revision <= 0:
            start_revision = await self.revision() + 1
        cursor = _WatchCursor(start_revision, start_revision)
        under = _under(prefix)
        while True:
            # take the wake-up future before reading, so no write slips between
            changed = self._change_future()
            events, caught_up = await self._call(
                self._read, lambda c: self._events(c, cursor, under)
            )
            for event in events:
                yield event
            if caught_up:
                if self._closed:
                    raise StoreUnavailable(f"the store {self.url} is closed")
                await asyncio.shield(changed)

    def _events(
        self, conn: sqlite3.Connection, cursor: _WatchCursor, under: tuple[str, tuple[bytes, ...]]
    ) -> tuple[list[WatchEvent], bool]:
        revision = self._meta(conn, "revision")
        compact_revision = self._meta(conn, "compact_revision")
        if cursor.next_revision < compact_revision:
            raise self._compacted(cursor.next_revision, compact_revision)
        if cursor.last_seq is None:
            first = conn.execute(
                "SELECT min(seq) FROM log WHERE revision >= ?", (cursor.start_revision,)
            ).fetchone()[0]
            if first is None:
                latest = conn.execute("SELECT max(seq) FROM log").fetchone()[0]
                cursor.last_seq = latest or 0
                return [], True
            cursor.last_seq = first - 1
        where, keys = under
        rows = conn.execute(
            "SELECT seq, revision, type, key, value, create_revision, version, lease, "
            f"prev_mod_revision FROM log WHERE seq > ? AND revision >= ? AND {where} "
            f"ORDER BY seq LIMIT {_WATCH_BATCH}",
            (cursor.last_seq, cursor.start_revision, *keys),
        ).fetchall()
        events = []
        for seq, rev, kind, key, value, create_rev, version, lease, prev_mod in rows:
            k = key.decode()
            if kind == _PUT:
                events.append(WatchEvent("PUT", make_kv(k, value, create_rev, rev, version, lease)))
            else:
                prev = make_kv(k, value, create_rev, prev_mod, version, lease)
                events.append(WatchEvent("DELETE", KeyValue(k, b"", 0, rev, 0, 0), prev))
            cursor.last_seq = seq
        if len(rows) == _WATCH_BATCH:
            cursor.next_revision = rows[-1][1]
            return events, False
        cursor.last_seq = conn.execute("SELECT max(seq) FROM log").fetchone()[0] or 0
        cursor.next_revision = max(cursor.next_revision, revision + 1)
        return events, True

    # ------------------------------------------------------------ leases

    async def grant_lease(self, ttl: int) -> int:
        if ttl < 1:
            raise StoreError(f"a lease TTL must be at least 1 second, not {ttl}")
        return await self._call(self._grant, ttl)

    def _grant(self, ttl: int) -> int:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute("UPDATE meta SET value = value + 1 WHERE name = 'lease_seq'")
            lease = self._meta(conn, "lease_seq")
            conn.execute(
                "INSERT INTO leases (id, ttl, expires_at) VALUES (?, ?, ?)",
                (lease, ttl, time.time() + ttl),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return lease

    async def refresh_lease(self, lease: int) -> int:
        ttl, revision = await self._submit_write(lambda w: self._refresh(w, lease))
        self._wrote(revision)
        if ttl is None:
            raise NotFound(f"lease {lease} not found (it lapsed or was revoked)")
        return ttl

    def _refresh(self, write: _Write, lease: int) -> int | None:
        row = write.conn.execute(
            "SELECT ttl, expires_at FROM leases WHERE id = ?", (lease,)
        ).fetchone()
        if row is None:
            return None
        ttl, expires_at = row
        now = time.time()
        if expires_at <= now:
            write.delete_lease_keys(lease)
            return None
        write.conn.execute("UPDATE leases SET expires_at = ? WHERE id = ?", (now + ttl, lease))
        return int(ttl)

    async def revoke_lease(self, lease: int) -> None:
        """Revoke ``lease`` and delete its keys; revoking an unknown lease does nothing."""
        _, revision = await self._submit_write(lambda w: w.delete_lease_keys(lease))
        self._wrote(revision)

    async def expire_leases(self) -> int:
        """Revoke every lease past its deadline (one revision each); how many lapsed."""
        expired: list[int] = await self._call(
            lambda: [
                r[0]
                for r in self.conn.execute(
                    "SELECT id FROM leases WHERE expires_at <= ?", (time.time(),)
                )
            ]
        )
        for lease in expired:
            _, revision = await self._submit_write(partial(self._expire, lease=lease))
            self._wrote(revision)
        return len(expired)

    def _expire(self, write: _Write, *, lease: int) -> None:
        # another process may have refreshed or expired it since it was listed
        row = write.conn.execute("SELECT expires_at FROM leases WHERE id = ?", (lease,)).fetchone()
        if row is not None and row[0] <= time.time():
            write.delete_lease_keys(lease)

    # ------------------------------------------------------------ compaction

    async def compact(self, revision: int) -> None:
        await self._call(self._compact, revision)

    def _compact(self, revision: int) -> None:
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = self._meta(conn, "revision")
            if revision > current:
                raise StoreError(
                    f"cannot compact {self.url} at revision {revision}: "
                    f"the current revision is {current}"
                )
            if revision > self._meta(conn, "compact_revision"):
                conn.execute("DELETE FROM log WHERE revision < ?", (revision,))
                conn.execute(
                    "UPDATE meta SET value = ? WHERE name = 'compact_revision'", (revision,)
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------ housekeeping

    def _status(self) -> tuple[int, int, float | None]:
        row = self.conn.execute(
            "SELECT (SELECT value FROM meta WHERE name = 'revision'), "
            "(SELECT value FROM meta WHERE name = 'compact_revision'), "
            "(SELECT min(expires_at) FROM leases)"
        ).fetchone()
        return row[0], row[1], row[2]

    async def _housekeep_once(self) -> None:
        revision, compact_revision, next_expiry = await self._call(self._status)
        self._wrote(revision)
        if next_expiry is not None and next_expiry <= time.time():
            await self.expire_leases()
        if revision - compact_revision > self.history + self.history // 10:
            await self.compact(revision - self.history)

    async def _housekeep(self) -> None:
        while not self._closed:
            await asyncio.sleep(self.poll_interval)
            try:
                await self._housekeep_once()
            except StoreError as exc:
                log.warning("%s: housekeeping failed (%s); trying again", self.url, exc)

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        if self._closed:
            return
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        loop = asyncio.get_running_loop()
        self._closed = True
        if self._conn is not None:
            await loop.run_in_executor(self._executor, self._conn.close)
            self._conn = None
        # wake the watches, which end with StoreUnavailable
        if self._changed is not None and not self._changed.done():
            self._changed.set_result(None)
        self._executor.shutdown(wait=False)

    async def __aenter__(self) -> SQLiteStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
