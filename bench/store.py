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
(free loopback port, temporary data dir) and SQLite file, and removes both;
the raw loop runs on the same server after the store's keys are deleted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aetcd  # noqa: E402

from gitkube.store.base import Compare, Delete, Put, Store  # noqa: E402
from gitkube.store.etcd import _CHANNEL_OPTIONS  # noqa: E402
from gitkube.store.factory import open_store  # noqa: E402
from tests.fixtures.etcd import EtcdServer, etcd_binary  # noqa: E402

PREFIX = "/gitkube/pods/bench/"


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


def keys(n: int) -> list[str]:
    return [f"{PREFIX}web-{i:05}" for i in range(n)]


async def in_flight(count: int, concurrency: int, work: Callable[[int], Awaitable[None]]) -> None:
    """Run ``work(i)`` for every i < count with ``concurrency`` calls in flight."""
    next_index = 0

    async def worker() -> None:
        nonlocal next_index
        while next_index < count:
            i = next_index
            next_index += 1
            await work(i)

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def timed(what: Callable[[], Awaitable[Any]]) -> tuple[float, Any]:
    began = time.perf_counter()
    result = await what()
    return time.perf_counter() - began, result


# ---------------------------------------------------------------- through the store


async def bench_store(store: Store, n: int, batch: int, concurrency: int) -> dict[str, float]:
    names = keys(n)

    async def create(i: int) -> None:
        result = await store.txn([Compare(names[i], 0)], [Put(names[i], object_value(i, 1))])
        assert result.succeeded

    async def create_all() -> None:
        await in_flight(n, concurrency, create)

    async def range_all() -> dict[str, int]:
        kvs, _ = await store.range(PREFIX)
        assert len(kvs) == n
        return {kv.key: kv.mod_revision for kv in kvs}

    async def update_all(revisions: dict[str, int]) -> None:
        for start in range(0, n, batch):
            chunk = names[start : start + batch]
            result = await store.txn(
                [Compare(k, revisions[k]) for k in chunk],
                [Put(k, object_value(start + j, 2)) for j, k in enumerate(chunk)],
            )
            assert result.succeeded

    create_s, _ = await timed(create_all)
    range_s, revisions = await timed(range_all)
    update_s, _ = await timed(lambda: update_all(revisions))
    return {"create": create_s, "range": range_s, "update": update_s}


# ---------------------------------------------------------------- raw aetcd


async def bench_raw(
    endpoint: tuple[str, int], n: int, batch: int, concurrency: int
) -> dict[str, float]:
    names = [k.encode() for k in keys(n)]
    client = aetcd.Client(host=endpoint[0], port=endpoint[1], options=dict(_CHANNEL_OPTIONS))
    tx = client.transactions
    try:

        async def create(i: int) -> None:
            succeeded, _ = await client.transaction(
                compare=[tx.mod(names[i]) == 0],
                success=[tx.put(names[i], object_value(i, 1))],
                failure=[],
            )
            assert succeeded

        async def create_all() -> None:
            await in_flight(n, concurrency, create)

        async def range_all() -> dict[bytes, int]:
            result = await client.get_prefix(PREFIX.encode())
            assert len(result.kvs) == n
            return {kv.key: kv.mod_revision for kv in result.kvs}

        async def update_all(revisions: dict[bytes, int]) -> None:
            for start in range(0, n, batch):
                chunk = names[start : start + batch]
                succeeded, _ = await client.transaction(
                    compare=[tx.mod(k) == revisions[k] for k in chunk],
                    success=[tx.put(k, object_value(start + j, 2)) for j, k in enumerate(chunk)],
                    failure=[],
                )
                assert succeeded

        create_s, _ = await timed(create_all)
        range_s, revisions = await timed(range_all)
        update_s, _ = await timed(lambda: update_all(revisions))
        return {"create": create_s, "range": range_s, "update": update_s}
    finally:
        await client.close()


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
                report("sqlite", n, await bench_store(sqlite, n, batch, concurrency))
            finally:
                await sqlite.close()

        if args.skip_etcd:
            return 0
        binary = etcd_binary()
        if binary is None:
            print("etcd not found: install it or pass --skip-etcd", file=sys.stderr)
            return 1
        # one server: the store's run, then its keys deleted, then raw aetcd's run
        server = EtcdServer(binary, root / "etcd")
        server.start()
        try:
            store = await open_store(server.url)
            try:
                results = {"store": await bench_store(store, n, batch, concurrency)}
                await store.txn([], [Delete(PREFIX, prefix=True)])
                await store.compact(await store.revision())
            finally:
                await store.close()
            results["raw"] = await bench_raw(
                ("127.0.0.1", server.client_port), n, batch, concurrency
            )
        finally:
            server.stop()
        report("etcd", n, results["store"], results["raw"])
        update_rate = n / results["store"]["update"]
        print(
            f"  goal: batched txns into etcd >= 5000 obj/s: {update_rate:.0f} obj/s "
            f"{'ok' if update_rate >= 5000 else 'MISSED'}"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
