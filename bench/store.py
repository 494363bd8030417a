"""Store benchmark: the SQLite and etcd backends, and raw aetcd as the limit.

    python bench/store.py [--objects 10000] [--batch 100] [--concurrency 16]
                          [--skip-sqlite] [--skip-etcd]

On each backend, with ObjectStore-shaped JSON values (~500 bytes):

1. create N objects, each a guarded put (compare mod_revision == 0), with
   ``--concurrency`` requests in flight;
2. range them by prefix;
3. update them all in transactions of ``--batch`` objects, each put guarded
   by a compare on the object's mod_revision (etcd allows 128 per branch).

Next to each etcd figure: a raw ``aetcd`` loop doing the same requests to
the same server, and the ratio (store time / raw time; goal <= 1.5). Goal
for phase 3 on etcd: >= 5,000 objects/s. The bench starts its own etcd
(free loopback port, temporary data dir) and SQLite file, and removes both.
The store and the raw loop use the same server (each its own prefix) and
take turns slice by slice, so load from elsewhere on the machine hits both
alike; range figures are the median of 5 rounds. Both sides of the range
materialise one key-value object per key (the store's ``KeyValue``, aetcd's
``rtypes.KeyValue``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aetcd  # noqa: E402

from gitkube.store.base import Compare, Put, Store  # noqa: E402
from gitkube.store.etcd import _CHANNEL_OPTIONS  # noqa: E402
from gitkube.store.factory import open_store  # noqa: E402
from tests.fixtures.etcd import EtcdServer, etcd_binary  # noqa: E402

PREFIX = "/gitkube/pods/bench-"


def object_value(i: int, generation: int) -> bytes:
    """A pod as ObjectStore stores it, about 500 bytes."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"web-{i:05}",
            "namespace": "bench",
            "uid": f"5f0c6a52-2b51-4d1c-9c2e-{i:012}",
            "labels": {"app": "web", "tier": "frontend", "track": "stable"},
            "annotations": {"gitkube.io/source": "git@example.com:cluster.git@deadbeef"},
            "generation": generation,
            "creationTimestamp": "2024-05-01T12:00:00Z",
        },
        "spec": {
            "containers": [
                {
                    "name": "web",
                    "image": "registry.example.com/web:1.4.2",
                    "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                    "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
                }
            ],
            "restartPolicy": "Always",
            "nodeName": f"node-{i % 7}",
        },
        "status": {"phase": "Running", "podIP": f"10.0.{i // 250}.{i % 250}"},
    }
    return json.dumps(pod, separators=(",", ":"), sort_keys=True).encode()


def keys(prefix: str, n: int) -> list[str]:
    return [f"{prefix}web-{i:05}" for i in range(n)]


async def in_flight(
    indexes: range, concurrency: int, work: Callable[[int], Awaitable[None]]
) -> None:
    """Run ``work(i)`` for every i in ``indexes`` with ``concurrency`` calls in flight."""
    pending = iter(indexes)

    async def worker() -> None:
        for i in pending:
            await work(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


class StoreRunner:
    """The three phases through the gitkube store protocol."""

    def __init__(self, store: Store, prefix: str, n: int) -> None:
        self.store, self.prefix = store, prefix
        self.names = keys(prefix, n)
        self.revisions: dict[str, int] = {}

    async def create(self, i: int) -> None:
        name = self.names[i]
        result = await self.store.txn([Compare(name, 0)], [Put(name, object_value(i, 1))])
        assert result.succeeded

    async def range(self) -> int:
        kvs, _ = await self.store.range(self.prefix)
        self.revisions = {kv.key: kv.mod_revision for kv in kvs}
        return len(kvs)

    async def update(self, start: int, stop: int) -> None:
        chunk = self.names[start:stop]
        result = await self.store.txn(
            [Compare(k, self.revisions[k]) for k in chunk],
            [Put(k, object_value(start + j, 2)) for j, k in enumerate(chunk)],
        )
        assert result.succeeded


class RawRunner:
    """The same requests as plain ``aetcd`` calls: the limit the store is measured against."""

    def __init__(self, client: aetcd.Client, prefix: str, n: int) -> None:
        self.client, self.prefix = client, prefix
        self.names = [k.encode() for k in keys(prefix, n)]
        self.revisions: dict[bytes, int] = {}

    async def create(self, i: int) -> None:
        tx = self.client.transactions
        name = self.names[i]
        succeeded, _ = await self.client.transaction(
            compare=[tx.mod(name) == 0],
            success=[tx.put(name, object_value(i, 1))],
            failure=[],
        )
        assert succeeded

    async def range(self) -> int:
        result = await self.client.get_prefix(self.prefix.encode())
        # iterating a GetRange yields aetcd's KeyValue objects (every field of every
        # key), the same thing the store hands its callers
        kvs = list(result)
        self.revisions = {kv.key: kv.mod_revision for kv in kvs}
        return len(kvs)

    async def update(self, start: int, stop: int) -> None:
        tx = self.client.transactions
        chunk = self.names[start:stop]
        succeeded, _ = await self.client.transaction(
            compare=[tx.mod(k) == self.revisions[k] for k in chunk],
            success=[tx.put(k, object_value(start + j, 2)) for j, k in enumerate(chunk)],
            failure=[],
        )
        assert succeeded


Runner = StoreRunner | RawRunner


async def run_phases(
    runners: Sequence[Runner], n: int, *, batch: int, concurrency: int, slices: int = 10
) -> list[dict[str, float]]:
    """Time the phases for every runner, interleaved slice by slice.

    The machine may be busy with other work; alternating the runners every
    slice (and which goes first) spreads that noise evenly over them.
    """
    totals = [{"create": 0.0, "range": 0.0, "update": 0.0} for _ in runners]
    bounds = [(n * s // slices, n * (s + 1) // slices) for s in range(slices)]

    def order(s: int) -> list[int]:
        indexes = list(range(len(runners)))
        return indexes if s % 2 == 0 else indexes[::-1]

    for s, (lo, hi) in enumerate(bounds):
        for r in order(s):
            began = time.perf_counter()
            await in_flight(range(lo, hi), concurrency, runners[r].create)
            totals[r]["create"] += time.perf_counter() - began

    rounds = 5
    samples: list[list[float]] = [[] for _ in runners]
    for s in range(rounds):
        for r in order(s):
            began = time.perf_counter()
            count = await runners[r].range()
            samples[r].append(time.perf_counter() - began)
            assert count == n, f"range found {count} of {n}"
    for r in range(len(runners)):
        totals[r]["range"] = statistics.median(samples[r])

    for s, (lo, hi) in enumerate(bounds):
        for r in order(s):
            began = time.perf_counter()
            for start in range(lo, hi, batch):
                await runners[r].update(start, min(start + batch, hi))
            totals[r]["update"] += time.perf_counter() - began
    return totals


# ---------------------------------------------------------------- report


def report(
    backend: str, n: int, figures: dict[str, float], raw: dict[str, float] | None = None
) -> None:
    labels = {
        "create": "create (guarded put each)",
        "range": "range by prefix",
        "update": "update in guarded txns",
    }
    for phase, label in labels.items():
        seconds = figures[phase]
        line = f"  {backend:<6} {label:<26} {seconds * 1000:9.1f} ms  {n / seconds:9.0f} obj/s"
        if raw is not None:
            ratio = seconds / raw[phase]
            line += (
                f"   | raw aetcd {raw[phase] * 1000:9.1f} ms  {n / raw[phase]:9.0f} obj/s"
                f"   ratio {ratio:4.2f}x {'ok' if ratio <= 1.5 else 'OVER 1.5x'}"
            )
        print(line, flush=True)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--skip-etcd", action="store_true")
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args(argv)
    n, batch, concurrency = args.objects, args.batch, args.concurrency

    print(
        f"store bench: {n} objects of {len(object_value(0, 1))} bytes, "
        f"{concurrency} creates in flight, {batch} objects per update txn"
    )
    root = Path(tempfile.mkdtemp(prefix="gitkube-bench-store-"))
    try:
        if not args.skip_sqlite:
            sqlite = await open_store(f"sqlite://{root}/sqlite/state.db")
            try:
                runner = StoreRunner(sqlite, PREFIX + "store/", n)
                [figures] = await run_phases([runner], n, batch=batch, concurrency=concurrency)
                report("sqlite", n, figures)
            finally:
                await sqlite.close()

        if args.skip_etcd:
            return 0
        binary = etcd_binary()
        if binary is None:
            print("etcd not found: install it or pass --skip-etcd", file=sys.stderr)
            return 1
        server = EtcdServer(binary, root / "etcd")
        server.start()
        store = await open_store(server.url)
        client = aetcd.Client("127.0.0.1", server.client_port, options=dict(_CHANNEL_OPTIONS))
        try:
            ours, raw = await run_phases(
                [StoreRunner(store, PREFIX + "store/", n), RawRunner(client, PREFIX + "raw/", n)],
                n,
                batch=batch,
                concurrency=concurrency,
            )
        finally:
            await store.close()
            await client.close()
            server.stop()
        report("etcd", n, ours, raw)
        update_rate = n / ours["update"]
        print(
            f"  goal: batched txns into etcd >= 5000 obj/s: {update_rate:.0f} obj/s "
            f"{'ok' if update_rate >= 5000 else 'MISSED'}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
