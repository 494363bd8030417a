"""The cluster store: etcd v3 through ``aetcd``'s gRPC channel and stubs.

``aetcd.Client`` opens the channel to each endpoint; requests go through its
generated stubs (``aetcd.rpc``) so that every etcd feature the protocol needs
(response header revisions, ``prev_kv`` on watches, paginated ranges at one
revision) is available and no request pays for a wrapper it does not need.

Failover: endpoints are tried in order, starting with the last one that
answered. A request that fails with UNAVAILABLE moves on to the next
endpoint; when every endpoint has failed it raises ``StoreUnavailable``.
(An UNAVAILABLE write may in rare cases have been applied before the
connection broke; retrying it is harmless for a plain put, and a guarded
transaction then fails its compare, which the caller treats as a conflict
and re-reads, as it must anyway.)

Watches survive reconnects: a watch remembers the revision after the last
event it delivered (or the last progress notification) and re-creates
itself there on any endpoint, with back-off, for as long as it is iterated;
it raises ``Compacted`` once that revision is gone.

Limits: etcd refuses a transaction with more than ``--max-txn-ops`` (default
128) compares or operations per branch, and requests over
``--max-request-bytes`` (default 1.5 MiB). The protocol's transactions are
atomic, so a transaction over the limit raises ``TxnTooLarge`` instead of
being split; the SQLite store applies the same limit so code behaves the
same on both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import aetcd
from aetcd import rpc

from gitkube.errors import (
    Compacted,
    FutureRevision,
    NotFound,
    StoreError,
    StoreUnavailable,
    TxnTooLarge,
)
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

_EQUAL = rpc.Compare.CompareResult.EQUAL
_MOD = rpc.Compare.CompareTarget.MOD
_DELETE_EVENT = rpc.Event.EventType.DELETE

#: keys per page when ranging a prefix (all pages are read at one revision)
RANGE_PAGE = 5000

_CHANNEL_OPTIONS = {
    # a restarted etcd is found again within a second, not after grpc's 2-minute back-off
    "grpc.initial_reconnect_backoff_ms": 100,
    "grpc.min_reconnect_backoff_ms": 100,
    "grpc.max_reconnect_backoff_ms": 1000,
    # a range of many objects is one large response
    "grpc.max_receive_message_length": -1,
    "grpc.keepalive_time_ms": 10_000,
    "grpc.keepalive_timeout_ms": 5_000,
}

_UNAVAILABLE = (
    rpc.StatusCode.UNAVAILABLE,
    rpc.StatusCode.DEADLINE_EXCEEDED,
    rpc.StatusCode.CANCELLED,
)


def _kv(kv: Any) -> KeyValue:
    return make_kv(
        kv.key.decode(), kv.value, kv.create_revision, kv.mod_revision, kv.version, kv.lease
    )


def _translate(exc: rpc.AioRpcError, where: str) -> StoreError:
    """The gitkube error for a gRPC failure."""
    code, details = exc.code(), exc.details() or ""
    message = f"etcd {where}: {details or code.name}"
    if code in _UNAVAILABLE:
        return StoreUnavailable(message)
    if code == rpc.StatusCode.NOT_FOUND:
        return NotFound(message)
    if "required revision has been compacted" in details:
        return Compacted(message)
    if "required revision is a future revision" in details:
        return FutureRevision(message)
    if "too many operations in txn request" in details:
        return TxnTooLarge(
            f"{message}: the server's --max-txn-ops is lower than the transaction; "
            "write fewer objects per transaction"
        )
    return StoreError(message)


def _op(op: Op) -> Any:
    if isinstance(op, Put):
        return rpc.RequestOp(
            request_put=rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease)
        )
    if isinstance(op, Delete):
        key = op.key.encode()
        if op.prefix:
            return rpc.RequestOp(
                request_delete_range=rpc.DeleteRangeRequest(
                    key=key or b"\0", range_end=prefix_end(key) or b"\0"
                )
            )
        return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key))
    if isinstance(op, Get):
        return rpc.RequestOp(request_range=rpc.RangeRequest(key=op.key.encode()))
    raise TypeError(f"not a store operation: {op!r}")


class _Endpoint:
    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self.client = aetcd.Client(host=host, port=port, options=dict(_CHANNEL_OPTIONS))

    async def stubs(self) -> aetcd.Client:
        await self.client.connect()  # creates the channel; connecting happens per call
        return self.client


#: rounds over every endpoint before a call fails with StoreUnavailable
UNAVAILABLE_ROUNDS = 3


class EtcdStore:
    """The ``Store`` protocol on an etcd v3 cluster."""

    def __init__(
        self,
        endpoints: Sequence[tuple[str, int]],
        *,
        timeout: float = 5.0,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        watch_retry: float = 0.2,
        watch_retry_cap: float = 2.0,
    ) -> None:
        if not endpoints:
            raise ValueError("EtcdStore needs at least one endpoint")
        self.url = "etcd://" + ",".join(f"{h}:{p}" for h, p in endpoints)
        self.timeout = timeout
        self.max_txn_ops = max_txn_ops
        self.watch_retry = watch_retry
        self.watch_retry_cap = watch_retry_cap
        self._endpoints = [_Endpoint(h, p) for h, p in endpoints]
        self._current = 0
        self._closed = False

    @classmethod
    async def open(cls, endpoints: Sequence[tuple[str, int]], **options: Any) -> EtcdStore:
        """A store on ``endpoints``; connects lazily, so an etcd that is down now is no error."""
        return cls(endpoints, **options)

    # ------------------------------------------------------------ plumbing

    async def _call(self, where: str, request: Callable[[aetcd.Client], Awaitable[T]]) -> T:
        """Run ``request`` on the current endpoint, failing over on UNAVAILABLE.

        Every endpoint is tried; then, after a short pause, all of them again
        (``UNAVAILABLE_ROUNDS`` in all): a connection that is still being made
        on a loaded machine ("tcp handshaker shutdown") is a blip, not an
        outage. Guarded writes are safe to send again; unguarded puts and
        deletes write the same value."""
        if self._closed:
            raise StoreUnavailable(f"the store {self.url} is closed")
        failures: list[str] = []
        for round_ in range(UNAVAILABLE_ROUNDS):
            if round_:
                await asyncio.sleep(0.2 * 2 ** (round_ - 1))
                if self._closed:
                    break
            for _ in range(len(self._endpoints)):
                index = self._current
                endpoint = self._endpoints[index]
                try:
                    return await request(await endpoint.stubs())
                except rpc.AioRpcError as exc:
                    error = _translate(exc, where)
                    if not isinstance(error, StoreUnavailable):
                        raise error from exc
                    failures.append(f"{endpoint.address}: {exc.details() or exc.code().name}")
                    if self._current == index:
                        self._current = (index + 1) % len(self._endpoints)
        raise StoreUnavailable(f"etcd {where}: no endpoint answered ({'; '.join(failures)})")

    # ------------------------------------------------------------ reads

    async def revision(self) -> int:
        async def request(c: aetcd.Client) -> int:
            # a range over one key returns the store revision in its header
            response = await c.kvstub.Range(
                rpc.RangeRequest(key=b"\0", count_only=True), timeout=self.timeout
            )
            return int(response.header.revision)

        return await self._call("revision", request)

    async def get(self, key: str) -> KeyValue | None:
        async def request(c: aetcd.Client) -> KeyValue | None:
            response = await c.kvstub.Range(
                rpc.RangeRequest(key=key.encode()), timeout=self.timeout
            )
            return _kv(response.kvs[0]) if response.kvs else None

        return await self._call(f"get {key}", request)

    async def range(self, prefix: str, *, revision: int = 0) -> tuple[list[KeyValue], int]:
        start = prefix.encode() or b"\0"
        end = prefix_end(prefix.encode()) or b"\0"
        at = revision

        async def request(c: aetcd.Client) -> tuple[list[KeyValue], int]:
            kvs: list[KeyValue] = []
            key, revision = start, at
            while True:
                response = await c.kvstub.Range(
                    rpc.RangeRequest(key=key, range_end=end, limit=RANGE_PAGE, revision=revision),
                    timeout=self.timeout,
                )
                revision = revision or response.header.revision
                kvs.extend(_kv(kv) for kv in response.kvs)
                if not response.more or not response.kvs:
                    return kvs, int(revision)
                key = response.kvs[-1].key + b"\0"

        for _ in range(0 if at else 3):
            try:
                return await self._call(f"range {prefix}", request)
            except Compacted:
                continue  # the revision of the first page was compacted meanwhile
        return await self._call(f"range {prefix}", request)

    # ------------------------------------------------------------ writes

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        async def request(c: aetcd.Client) -> int:
            response = await c.kvstub.Put(
                rpc.PutRequest(key=key.encode(), value=value, lease=lease), timeout=self.timeout
            )
            return int(response.header.revision)

        return await self._call(f"put {key}", request)

    async def delete(self, key: str) -> bool:
        async def request(c: aetcd.Client) -> bool:
            response = await c.kvstub.DeleteRange(
                rpc.DeleteRangeRequest(key=key.encode()), timeout=self.timeout
            )
            return response.deleted > 0

        return await self._call(f"delete {key}", request)

    async def txn(
        self,
        compares: Sequence[Compare],
        success: Sequence[Op],
        failure: Sequence[Op] = (),
    ) -> TxnResult:
        check_txn(compares, success, failure, max_ops=self.max_txn_ops)
        txn = rpc.TxnRequest(
            compare=[
                rpc.Compare(
                    result=_EQUAL, target=_MOD, key=c.key.encode(), mod_revision=c.mod_revision
                )
                for c in compares
            ],
            success=[_op(op) for op in success],
            failure=[_op(op) for op in failure],
        )

        async def request(c: aetcd.Client) -> TxnResult:
            response = await c.kvstub.Txn(txn, timeout=self.timeout)
            gets: list[KeyValue | None] = []
            for r in response.responses:
                if r.WhichOneof("response") == "response_range":
                    kvs = r.response_range.kvs
                    gets.append(_kv(kvs[0]) if kvs else None)
            return TxnResult(bool(response.succeeded), int(response.header.revision), gets)

        return await self._call("txn", request)

    # ------------------------------------------------------------ watch

    async def watch(self, prefix: str, *, start_revision: int) -> AsyncIterator[WatchEvent]:
        if start_revision <= 0:
            start_revision = await self.revision() + 1
        key = prefix.encode() or b"\0"
        end = prefix_end(prefix.encode()) or b"\0"
        next_revision = start_revision
        delay = self.watch_retry
        while True:
            if self._closed:
                raise StoreUnavailable(f"the store {self.url} is closed")
            endpoint = self._endpoints[self._current]
            stream = _WatchStream(key, end, next_revision)
            try:
                client = await endpoint.stubs()
                async for response in stream.run(client):
                    delay = self.watch_retry
                    if response.compact_revision:
                        raise Compacted(
                            f"etcd watch {prefix}: revision {next_revision} has been compacted "
                            f"(history starts at {response.compact_revision}); list again",
                            compact_revision=int(response.compact_revision),
                        )
                    if response.canceled:
                        raise StoreError(
                            f"etcd cancelled the watch on {prefix}: {response.cancel_reason}"
                        )
                    if response.created:
                        continue
                    if not response.events:
                        # a progress notification: everything up to here has been sent
                        next_revision = max(next_revision, response.header.revision + 1)
                        continue
                    for event in response.events:
                        # prev_kv only on DELETE, as the SQLite store keeps it
                        if event.type == _DELETE_EVENT:
                            prev = _kv(event.prev_kv) if event.prev_kv.key else None
                            yield WatchEvent("DELETE", _kv(event.kv), prev)
                        else:
                            yield WatchEvent("PUT", _kv(event.kv))
                        next_revision = event.kv.mod_revision + 1
                # the server ended the stream without an error: start it again
                await asyncio.sleep(self.watch_retry)
            except rpc.AioRpcError as exc:
                error = _translate(exc, f"watch {prefix}")
                if not isinstance(error, StoreUnavailable):
                    raise error from exc
                log.warning(
                    "etcd watch %s on %s interrupted (%s); resuming at revision %d in %.1fs",
                    prefix,
                    endpoint.address,
                    exc.details() or exc.code().name,
                    next_revision,
                    delay,
                )
                if self._endpoints[self._current] is endpoint:
                    self._current = (self._current + 1) % len(self._endpoints)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.watch_retry_cap)
            finally:
                stream.cancel()

    # ------------------------------------------------------------ leases

    async def grant_lease(self, ttl: int) -> int:
        if ttl < 1:
            raise StoreError(f"a lease TTL must be at least 1 second, not {ttl}")

        async def request(c: aetcd.Client) -> int:
            response = await c.leasestub.LeaseGrant(
                rpc.LeaseGrantRequest(TTL=ttl), timeout=self.timeout
            )
            if response.error:
                raise StoreError(f"etcd grant lease: {response.error}")
            return int(response.ID)

        return await self._call("grant lease", request)

    async def refresh_lease(self, lease: int) -> int:
        async def request(c: aetcd.Client) -> int:
            call = c.leasestub.LeaseKeepAlive(
                iter([rpc.LeaseKeepAliveRequest(ID=lease)]), timeout=self.timeout
            )
            try:
                async for reply in call:
                    return int(reply.TTL)
                return 0
            finally:
                call.cancel()

        ttl = await self._call("refresh lease", request)
        if ttl <= 0:
            raise NotFound(f"lease {lease} not found (it lapsed or was revoked)")
        return ttl

    async def revoke_lease(self, lease: int) -> None:
        """Revoke ``lease`` and delete its keys; revoking an unknown lease does nothing."""

        async def request(c: aetcd.Client) -> None:
            await c.leasestub.LeaseRevoke(rpc.LeaseRevokeRequest(ID=lease), timeout=self.timeout)

        with contextlib.suppress(NotFound):
            await self._call("revoke lease", request)

    # ------------------------------------------------------------ compaction

    async def compact(self, revision: int) -> None:
        async def request(c: aetcd.Client) -> None:
            await c.kvstub.Compact(rpc.CompactionRequest(revision=revision), timeout=self.timeout)

        with contextlib.suppress(Compacted):  # already compacted at or after ``revision``
            await self._call(f"compact {revision}", request)

    # ------------------------------------------------------------ close

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for endpoint in self._endpoints:
            with contextlib.suppress(Exception):
                await endpoint.client.close()

    async def __aenter__(self) -> EtcdStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class _WatchStream:
    """One watch stream: a create request, then responses until cancelled.

    The request side stays open for the life of the stream: etcd ends a
    watch stream whose client has half-closed it.
    """

    def __init__(self, key: bytes, end: bytes, start_revision: int) -> None:
        self.request = rpc.WatchRequest(
            create_request=rpc.WatchCreateRequest(
                key=key,
                range_end=end,
                start_revision=start_revision,
                prev_kv=True,
                progress_notify=True,
            )
        )
        self._done = asyncio.Event()
        self._call: Any = None

    async def _requests(self) -> AsyncIterator[Any]:
        yield self.request
        await self._done.wait()

    async def run(self, client: aetcd.Client) -> AsyncIterator[Any]:
        self._call = rpc.WatchStub(client.channel).Watch(self._requests())
        async for response in self._call:
            yield response

    def cancel(self) -> None:
        self._done.set()
        if self._call is not None:
            self._call.cancel()
