"""Benchmark the sync: a repository of 10,000 objects (1,000 RCs, 1,000
Services, 8,000 Pods in 2,000 files) into each store (SQLite; etcd started
here on a free loopback port with a temporary data dir).

For each store, in a fresh subprocess (so peak RSS is the sync's own):
- cold: the first full sync into an empty store;
- no-op: nothing changed (median of several polls), and its ratio to a
  plain ``git fetch`` of the same repository measured in the same run
  (the limit);
- incremental: after a commit touching 10 files;
- peak RSS (ru_maxrss of the subprocess).

Goals: no-op <= 2x git fetch and < 0.5 s; incremental < 1 s; cold < 15 s;
RSS < 300 MB.

    python bench/sync.py [--files 2000] [--stores sqlite,etcd] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GOALS = {"noop_s": 0.5, "noop_ratio": 2.0, "incremental_s": 1.0, "cold_s": 15.0, "rss_mb": 300}

GIT_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.com",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.com",
    "GIT_CONFIG_NOSYSTEM": "1",
}


def git(*args: str, cwd: Path | None = None) -> str:
    out = subprocess.run(
        ["git", *args], cwd=cwd, env=GIT_ENV, check=True, capture_output=True, text=True
    )
    return out.stdout.strip()


# ---------------------------------------------------------------- the repository


def rc(i: int, image: str = "nginx:1.25") -> str:
    return f"""apiVersion: v1
kind: ReplicationController
metadata:
  name: app-{i}
  labels: {{app: app-{i}, tier: web}}
spec:
  replicas: 3
  selector: {{app: app-{i}}}
  template:
    metadata:
      labels: {{app: app-{i}, tier: web}}
    spec:
      containers:
      - name: main
        image: {image}
        ports:
        - containerPort: 8080
        resources:
          requests: {{cpu: 100m, memory: 64Mi}}
"""


def service(i: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata:
  name: app-{i}
spec:
  selector: {{app: app-{i}}}
  ports:
  - port: 80
    targetPort: 8080
"""


def pod(name: str, image: str = "redis:7") -> str:
    return f"""apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: {name}, tier: cache}}
spec:
  containers:
  - name: main
    image: {image}
    ports:
    - containerPort: 6379
    env:
    - {{name: ROLE, value: cache}}
"""


def file_text(n: int, files: int, *, image: str = "redis:7") -> str:
    """File n: the first half hold an RC, a Service and 4 Pods; the rest 4 Pods."""
    half = files // 2
    docs = []
    if n < half:
        docs += [rc(n), service(n)]
    docs += [pod(f"pod-{n}-{k}", image) for k in range(4)]
    return "---\n".join(docs)


def make_repository(root: Path, files: int) -> tuple[Path, Path]:
    bare, work = root / "remote.git", root / "work"
    git("init", "--quiet", "--bare", "--initial-branch=main", str(bare))
    git("init", "--quiet", "--initial-branch=main", str(work))
    for n in range(files):
        path = work / "apps" / f"group-{n // 100:02}" / f"app-{n:04}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(file_text(n, files))
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "10k objects", cwd=work)
    git("remote", "add", "origin", str(bare), cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)
    return bare, work


def touch_files(work: Path, files: int, count: int, round_: int) -> None:
    for n in range(count):
        k = (n * 97 + round_) % files
        path = work / "apps" / f"group-{k // 100:02}" / f"app-{k:04}.yaml"
        path.write_text(file_text(k, files, image=f"redis:7.{round_}-{os.getpid()}"))
    git("commit", "--quiet", "-am", f"touch {count} files", cwd=work)
    git("push", "--quiet", "origin", "HEAD:refs/heads/main", cwd=work)


def time_git_fetch(bare: Path, root: Path, rounds: int) -> float:
    clone = root / "plain-clone"
    if not clone.exists():
        git("clone", "--quiet", "--bare", str(bare), str(clone))
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        git("fetch", "--quiet", "origin", "+refs/heads/main:refs/heads/main", cwd=clone)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# ---------------------------------------------------------------- etcd


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = "/usr/bin/etcd" if os.access("/usr/bin/etcd", os.X_OK) else shutil.which("etcd")
    if not binary:
        raise SystemExit("etcd not found")
    client, peer = free_port(), free_port()
    curl, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [
            binary, "--name", "bench", "--data-dir", str(root / "etcd"),
            "--listen-client-urls", curl, "--advertise-client-urls", curl,
            "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
            "--initial-cluster", f"bench={purl}", "--log-level", "error", "--logger", "zap",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{curl}/health", timeout=1) as r:
                if b"true" in r.read():
                    return proc, f"etcd://127.0.0.1:{client}"
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("etcd did not start")


# ---------------------------------------------------------------- one store, in a subprocess


async def worker(args: argparse.Namespace) -> dict[str, Any]:
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore
    from gitkube.sync.loop import SyncLoop, SyncSettings
    from gitkube.sync.source import GitSource

    store = await open_store(args.store)
    objects = ObjectStore(store)
    source = GitSource(args.repo, cache_dir=args.cache)
    loop = SyncLoop(objects, source, SyncSettings())
    out: dict[str, Any] = {}
    profiler = None
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    t, cpu = time.perf_counter(), time.process_time()
    result = await loop.reconcile_once()
    out["cold_s"] = time.perf_counter() - t
    out["cold_cpu_s"] = time.process_time() - cpu
    assert result.outcome == "Succeeded", (result.message, result.errors[:3])
    out["created"] = result.created
    if profiler:
        profiler.disable()
        profiler.dump_stats(str(Path(args.cache) / "cold.prof"))
    noops = []
    for _ in range(args.rounds):
        t = time.perf_counter()
        result = await loop.reconcile_once()
        noops.append(time.perf_counter() - t)
        assert result.outcome == "Unchanged", result.message
    out["noop_s"] = statistics.median(noops)
    incs, inc_cpu = [], []
    for round_ in range(3):
        touch_files(Path(args.work), args.files, 10, round_ + 1)
        t, cpu = time.perf_counter(), time.process_time()
        result = await loop.reconcile_once()
        incs.append(time.perf_counter() - t)
        inc_cpu.append(time.process_time() - cpu)
        assert result.outcome == "Succeeded" and result.parsed_files == 10, (
            result.message,
            result.parsed_files,
            result.full,
        )
        out["updated"] = result.updated
    out["incremental_s"] = statistics.median(incs)
    out["incremental_cpu_s"] = statistics.median(inc_cpu)
    # a fresh process's first sync of an unchanged repository (e.g. `sync --once`):
    # the first loop's caches go first, as they would with its process (the
    # peak RSS is then one sync's, not two loops' side by side)
    await source.close()
    del loop, result
    gc.collect()
    fresh = SyncLoop(objects, GitSource(args.repo, cache_dir=args.cache), SyncSettings())
    t = time.perf_counter()
    result = await fresh.reconcile_once()
    out["fresh_unchanged_s"] = time.perf_counter() - t
    assert result.outcome == "Unchanged", result.message
    await fresh.source.close()
    await store.close()
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_worker(store: str, repo: Path, work: Path, cache: Path, a: argparse.Namespace) -> Any:
    cmd = [
        sys.executable, __file__, "--worker", "--store", store, "--repo", str(repo),
        "--work", str(work), "--cache", str(cache), "--files", str(a.files),
        "--rounds", str(a.rounds),
    ]  # fmt: skip
    if a.profile:
        cmd.append("--profile")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"worker for {store} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def verdict(value: float, goal: float) -> str:
    return "ok" if value <= goal else "OVER"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--stores", default="sqlite,etcd")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="cProfile the cold sync")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--store", help=argparse.SUPPRESS)
    parser.add_argument("--repo", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--cache", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(asyncio.run(worker(args))))
        return

    root = Path(tempfile.mkdtemp(prefix="gitkube-bench-sync-"))
    etcd: subprocess.Popen[bytes] | None = None
    try:
        t = time.perf_counter()
        bare, work = make_repository(root, args.files)
        objects = args.files // 2 * 6 + (args.files - args.files // 2) * 4
        print(
            f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
            "(wall times on a shared machine vary; python CPU times less so)"
        )
        print(f"repository: {args.files} files, {objects} objects "
              f"(generated in {time.perf_counter() - t:.1f}s)")  # fmt: skip
        for name in args.stores.split(","):
            if name == "sqlite":
                url = f"sqlite://{root}/sqlite/state.db"
            elif name == "etcd":
                etcd, url = start_etcd(root)
            else:
                raise SystemExit(f"unknown store {name}")
            fetch_s = time_git_fetch(bare, root, args.rounds)
            r = run_worker(url, bare, work, root / f"cache-{name}", args)
            ratio = r["noop_s"] / fetch_s
            print(f"\n[{name}] created {r['created']} objects")
            print(
                f"  cold sync         {r['cold_s']:7.2f} s    goal < {GOALS['cold_s']} s "
                f"{verdict(r['cold_s'], GOALS['cold_s'])}   (python CPU {r['cold_cpu_s']:.2f} s)"
            )
            print(f"  plain git fetch   {fetch_s * 1000:7.1f} ms   (the limit)")
            print(
                f"  no-op sync        {r['noop_s'] * 1000:7.1f} ms   = {ratio:.2f}x git fetch; "
                f"goal <= {GOALS['noop_ratio']}x {verdict(ratio, GOALS['noop_ratio'])}, "
                f"< {GOALS['noop_s'] * 1000:.0f} ms {verdict(r['noop_s'], GOALS['noop_s'])}"
            )
            print(
                f"  incremental (10)  {r['incremental_s'] * 1000:7.1f} ms   goal < "
                f"{GOALS['incremental_s'] * 1000:.0f} ms "
                f"{verdict(r['incremental_s'], GOALS['incremental_s'])}"
                f"   ({r['updated']} objects updated; python CPU "
                f"{r['incremental_cpu_s'] * 1000:.0f} ms)"
            )
            print(
                f"  fresh-process sync, unchanged repo {r['fresh_unchanged_s']:.2f} s "
                "(no caches: full read and compare)"
            )
            print(f"  peak RSS          {r['rss_mb']:7.0f} MB   goal < {GOALS['rss_mb']} MB "
                  f"{verdict(r['rss_mb'], GOALS['rss_mb'])}")  # fmt: skip
            if etcd is not None:
                etcd.send_signal(signal.SIGTERM)
                etcd.wait(timeout=10)
                etcd = None
    finally:
        if etcd is not None:
            etcd.kill()
            etcd.wait()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
