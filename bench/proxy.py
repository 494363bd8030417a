"""Service proxy throughput and latency: gitkube proxy vs HAProxy vs no proxy.

    python bench/proxy.py [--duration 3] [--rounds 10] [--threads 2]
                          [--connections 50] [--rate 10000] [--workers 0]
                          [--relay auto] [--haproxy-threads 0]
                          [--no-asyncio-reference] [--no-closed-loop]

Three identical HTTP endpoints on loopback (a minimal keep-alive responder on
uvloop, one process each). The paths:

- straight to one endpoint (no proxy; the throughput reference of the goals),
- through the gitkube proxy (``gitkube proxy --proxy-mode userspace`` with
  its defaults: the native relay, one process with one relay thread per
  CPU), in its own process group, over a SQLite store holding the Service
  and its Endpoints,
- for reference, through the gitkube proxy's asyncio relay (``--relay
  asyncio`` with its default workers, one process per CPU),
- through HAProxy (mode tcp, balance roundrobin, the same three endpoints;
  nbthread defaults to HAProxy's own default, one thread per CPU),
- through the kernel (``gitkube proxy --proxy-mode nftables --cleanup``
  programs a cluster IP that DNATs to the three endpoints, round robin;
  the client connects to the cluster IP). How 50 connections land on the
  endpoints is printed first (``ss`` at the endpoints).

Each round measures every path in turn, the proxies taking turns at going
first (so that load from elsewhere on a shared machine falls on all of
them; many short rounds follow the machine's drift better than a few long
ones), three ways, each ``--duration`` seconds with ``--connections``
keep-alive connections:

1. **Saturation** (wrk ``-t2 -c50 --latency``, a closed loop: each
   connection sends its next request when the answer came). Requests/s is
   the path's capacity. Its p50/p99 are latencies at each path's OWN
   maximum rate, so they compare paths at different loads: a faster path
   drives the endpoints harder, and on 2 shared CPUs its tail is then set by
   how the endpoint processes and wrk are time-sliced, not by the proxy.
2. **At a fixed rate** (``--rate``, 10,000 requests/s by default, a third of
   HAProxy's capacity here, below every path's): ``bench/loadgen.c``, an
   open-loop client that times each request from when it was due (no
   coordinated omission, as wrk2). This is the latency comparison at equal
   load, how proxies' latency is normally compared. It also measures
   "direct (3 endpoints)": no proxy, the client's connections spread over
   the three endpoints.
3. **Saturation from one client thread** (loadgen with rate 0, a closed
   loop as wrk's), for direct to the three endpoints, the kernel path and
   HAProxy (``--no-closed-loop`` leaves it out): whether the kernel path's
   tail at saturation is its own or the three endpoints' (wrk cannot spread
   over three ports).

Why the kernel path's p99 at saturation is above HAProxy's, measured on
2026-12-03 (2 shared CPUs, load 4-8 from other work):

- spreading: ``numgen random`` put wrk's 50 connections on the three
  endpoints as unevenly as 11/16/23; round robin (``numgen inc``, now) puts
  17/17/16, as HAProxy does. Same endpoints, 12 paired rounds of wrk:
  round robin had 9% more throughput and its p99 was lower in 9 of 12
  (random/round robin per-round median 1.11x). Still 1.5x HAProxy's;
- where the time goes (``/proc/PID/schedstat``, a 3 s wrk run): the three
  endpoints waited on the run queue 6 s in all through the kernel path
  (HAProxy's path 4.7 s) and wrk 3.9 s (2.8 s): nothing is pinned; at
  saturation five busy threads (wrk's two, three endpoints) share two CPUs,
  and whoever waits holds up its connections;
- the same without any proxy: from one client thread (phase 3), direct to
  the three endpoints had a p99 1.2-1.3x HAProxy's too; the kernel path
  1.2x direct to the three (its DNAT and masquerade cost per packet:
  0.87-0.95x their throughput). HAProxy, slower, drives the endpoints at
  about 0.6x the kernel path's rate, which is what keeps its tail shorter;
- at equal load (10,000 requests/s) the kernel path's p99 was 0.46-0.56x
  HAProxy's over all rounds (per-round median 0.23-0.51x).

CPU per 10,000 requests: of the proxy (psutil ``cpu_times`` summed over
its process, its threads and all its children; the nftables proxier does
nothing per request) and of the whole path (the client, the endpoints and
the proxy; the kernel's work is charged to the processes whose packets it
handles, which is how the kernel path's cost shows).

Each round is printed, then the totals (requests/s over all rounds, median
p50/p99) and the per-round ratios to HAProxy, each path's run against the
HAProxy run of the same round. A goal is met when it holds both over all
rounds and as the per-round median. Goals: the gitkube proxy >= 1.0x
HAProxy's throughput and p99 no worse than HAProxy's; the kernel path >=
0.9x direct (one endpoint), >= 1.5x HAProxy and p99 no worse than
HAProxy's; each p99 goal is judged at saturation and at the fixed rate,
and both verdicts are printed.

The kernel path is measured when running as root with ``nft`` (``--kernel
auto``, the default; ``--kernel no`` leaves it out): then the whole benchmark
(every path, so that they stay comparable) re-runs itself inside a network
namespace it creates, with only ``lo`` and no route out, and deletes it at the
end.

Then the programming latency: ``--services`` Services (1,000) with two
endpoints each in a store, the proxier running; ``--changes`` times an
endpoint of a random Service changes and the time from the store write to
the end of the ``nft -f`` transaction that holds it is measured (each change
then checked in the kernel with ``nft list chain``). Goal: p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BODY = b"hello from endpoint\n"
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + BODY
)


# ------------------------------------------------------------------ endpoint


def serve_endpoint(port: int) -> None:
    """A minimal HTTP/1.1 keep-alive responder: one fixed answer per request."""
    import uvloop

    class Responder(asyncio.Protocol):
        __slots__ = ("buf", "transport")

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            buf = self.buf + data if self.buf else data
            count = buf.count(b"\r\n\r\n")
            if count:
                self.transport.write(RESPONSE * count)  # type: ignore[attr-defined]
                buf = buf[buf.rfind(b"\r\n\r\n") + 4 :]
            self.buf = buf

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Responder, "127.0.0.1", port, backlog=1024)
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        async with server:
            await stop.wait()

    uvloop.run(main())


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_http(port: int, timeout: float = 15.0, host: str = "127.0.0.1") -> None:
    """Until a request through ``port`` gets an answer (the proxy has endpoints)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1.0) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                if sock.recv(100).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"no HTTP answer through {host}:{port} after {timeout}s")


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process group leader; check that its whole group is gone after."""
    import psutil

    members = [proc.pid, *(c.pid for c in psutil.Process(proc.pid).children(recursive=True))]
    stop_process(proc)
    deadline = time.monotonic() + 5
    alive = members
    while time.monotonic() < deadline:
        alive = [pid for pid in members if _not_zombie(pid)]
        if not alive:
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    raise SystemExit(f"gitkube proxy left processes behind: {alive}")


def _not_zombie(pid: int) -> bool:
    import psutil

    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def cpu_seconds(pid: int) -> float:
    """CPU seconds of a process and every live descendant (and their reaped children)."""
    import psutil

    root = psutil.Process(pid)
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return float(total)


@dataclass
class Result:
    name: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    #: CPU of the proxy's processes (None: no proxy)
    cpu_per_10k: float | None = None
    #: CPU of every process of the path: the client, the endpoints and the proxy
    path_cpu_per_10k: float | None = None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected latency {text!r} in wrk output")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _children_cpu() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass
class Path_:
    """One way to the endpoints: where the client connects, and the
    processes whose CPU is counted (the proxy's and the endpoints')."""

    name: str
    host: str
    port: int
    proxy_pid: int | None
    endpoint_pids: list[int]
    #: loadgen only: the client's connections go to these ports in turn
    #: (direct to every endpoint: wrk cannot)
    spread_ports: list[int] | None = None


def _measure(path: Path_, load: list[str], parse: object) -> Result:
    """Run the client ``load`` against ``path``; its figures with the CPU of
    the proxy and of the whole path (client, endpoints, proxy)."""
    proxy_before = cpu_seconds(path.proxy_pid) if path.proxy_pid else 0.0
    endpoints_before = sum(cpu_seconds(pid) for pid in path.endpoint_pids)
    client_before = _children_cpu()
    out = subprocess.run(load, capture_output=True, text=True, check=True).stdout
    client = _children_cpu() - client_before
    endpoints = sum(cpu_seconds(pid) for pid in path.endpoint_pids) - endpoints_before
    proxy = (cpu_seconds(path.proxy_pid) - proxy_before) if path.proxy_pid else 0.0
    result: Result = parse(out)  # type: ignore[operator]
    if result.requests:
        if path.proxy_pid:
            result.cpu_per_10k = proxy / result.requests * 10_000
        result.path_cpu_per_10k = (client + endpoints + proxy) / result.requests * 10_000
    return result


def run_wrk(name: str, path: Path_, args: argparse.Namespace) -> Result:
    """Saturation: wrk's connections send a request as soon as the last
    answer came (closed loop); requests/s is the path's capacity here."""
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        f"http://{path.host}:{path.port}/",
    ]

    def parse(out: str) -> Result:
        total = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
        p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
        if not (total and rps and p50 and p99):
            raise SystemExit(f"cannot read wrk output for {name}:\n{out}")
        errors = 0
        sock_err = re.search(
            r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
        )
        if sock_err:
            errors += sum(int(x) for x in sock_err.groups())
        non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
        if non2xx:
            errors += int(non2xx.group(1))
        return Result(
            name,
            int(total.group(1)),
            _ms(total.group(2) + total.group(3)) / 1000.0,
            float(rps.group(1)),
            _ms(p50.group(1)),
            _ms(p99.group(1)),
            errors,
        )

    return _measure(path, cmd, parse)


LOADGEN = Path(__file__).with_name("loadgen.c")


def build_loadgen(workdir: Path) -> Path | None:
    """``bench/loadgen.c`` compiled into ``workdir``; None without a C compiler."""
    from gitkube.services.native import compiler

    cc = compiler()
    if cc is None:
        return None
    binary = workdir / "loadgen"
    subprocess.run([cc, "-O2", "-Wall", "-o", str(binary), str(LOADGEN)], check=True)
    return binary


def run_loadgen(
    name: str, path: Path_, args: argparse.Namespace, loadgen: Path, rate: int
) -> Result:
    """``bench/loadgen.c``: at a fixed ``rate`` below saturation (open loop,
    each request timed from when it was due), or with ``rate`` 0 a closed
    loop as wrk's but from one client thread."""
    ports = path.spread_ports or [path.port]
    cmd = [
        str(loadgen),
        path.host,
        ",".join(map(str, ports)),
        str(args.connections),
        str(rate),
        str(args.duration),
        str(len(RESPONSE)),
    ]

    def parse(out: str) -> Result:
        data = json.loads(out)
        return Result(
            name,
            int(data["done"]),
            float(data["seconds"]),
            float(data["rate"]),
            float(data["p50_us"]) / 1000,
            float(data["p99_us"]) / 1000,
            int(data["errors"]),
        )

    return _measure(path, cmd, parse)


# ------------------------------------------------------------------ proxies


async def _write_state(url: str, listen_port: int, targets: list[int]) -> None:
    from gitkube.api.objects import (
        EndpointAddress,
        EndpointPort,
        Endpoints,
        EndpointSubset,
        ObjectMeta,
        Service,
        ServicePort,
        ServiceSpec,
    )
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    store = await open_store(url)
    try:
        objects = ObjectStore(store)
        await objects.create(
            Service(
                metadata=ObjectMeta(name="bench"),
                spec=ServiceSpec(
                    selector={"app": "bench"},
                    ports=[ServicePort(name="http", port=listen_port, target_port=8080)],
                ),
            )
        )
        await objects.create(
            Endpoints(
                metadata=ObjectMeta(name="bench"),
                subsets=[
                    EndpointSubset(
                        addresses=[EndpointAddress(ip="127.0.0.1")],
                        ports=[EndpointPort(name="http", port=port)],
                    )
                    for port in targets
                ],
            )
        )
    finally:
        await store.close()


def start_gitkube_proxy(
    workdir: Path, targets: list[int], *, workers: int = 0, relay: str = "auto"
) -> tuple[subprocess.Popen[bytes], int]:
    url = f"sqlite:///{workdir}/state.db"
    port = free_port()
    asyncio.run(_write_state(url, port, targets))
    cmd = [sys.executable, "-m", "gitkube", "proxy", "--store", url, "--node", "bench"]
    proc = subprocess.Popen(
        [*cmd, "--proxy-mode", "userspace", "--workers", str(workers), "--relay", relay],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "gitkube-proxy.log", "wb"),  # noqa: SIM115
        # its own process group (workers included), but not its own session:
        # with autogroup scheduling (kernel.sched_autogroup_enabled) a new
        # session is a new scheduling group, which HAProxy, wrk and the
        # endpoints are not in; all of them share the bench's session
        process_group=0,
    )
    return proc, port


def wait_listeners(proc: subprocess.Popen[bytes], port: int, count: int) -> None:
    """Until ``count`` sockets of the proxy's processes listen on ``port``."""
    import psutil

    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        found = 0
        root = psutil.Process(proc.pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                found += sum(
                    1
                    for c in p.net_connections("tcp")
                    if c.status == psutil.CONN_LISTEN and c.laddr.port == port
                )
        if found >= count:
            return
        time.sleep(0.1)
    raise SystemExit(f"the gitkube proxy has not {count} listeners on {port} after 15s")


def start_haproxy(
    workdir: Path, targets: list[int], *, threads: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    servers = "\n".join(f"    server e{i} 127.0.0.1:{target}" for i, target in enumerate(targets))
    config = workdir / "haproxy.cfg"
    nbthread = f"\n    nbthread {threads}" if threads else ""
    config.write_text(
        f"""global
    maxconn 4096{nbthread}

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend bench
    bind 127.0.0.1:{port}
    default_backend endpoints

backend endpoints
    balance roundrobin
{servers}
"""
    )
    subprocess.run(["haproxy", "-c", "-q", "-f", str(config)], check=True)
    proc = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "haproxy.log", "wb"),  # noqa: SIM115
    )
    return proc, port


# ------------------------------------------------------------------ the kernel path

VIP = "10.96.0.10"
BENCH_NETNS = "GITKUBE_BENCH_NETNS"


def kernel_available() -> tuple[bool, str]:
    if os.geteuid() != 0:
        return False, "not root"
    if shutil.which("nft") is None or shutil.which("ip") is None:
        return False, "nft or ip is not installed"
    return True, ""


def rerun_in_netns() -> int:
    """Run this benchmark again inside a new network namespace (lo only, no
    route out); delete the namespace after."""
    name = f"gkbench-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        env = dict(os.environ, **{BENCH_NETNS: name})
        cmd = ["ip", "netns", "exec", name, sys.executable, __file__, *sys.argv[1:]]
        return subprocess.run(cmd, env=env, check=False).returncode
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


async def _write_kernel_state(url: str, port: int, targets: list[int]) -> None:
    from gitkube.api.objects import (
        EndpointAddress,
        EndpointPort,
        Endpoints,
        EndpointSubset,
        ObjectMeta,
        Service,
        ServicePort,
        ServiceSpec,
    )
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    store = await open_store(url)
    try:
        objects = ObjectStore(store)
        await objects.create(
            Service(
                metadata=ObjectMeta(name="bench"),
                spec=ServiceSpec(
                    selector={"app": "bench"},
                    cluster_ip=VIP,
                    ports=[ServicePort(name="http", port=port, target_port=8080)],
                ),
            )
        )
        await objects.create(
            Endpoints(
                metadata=ObjectMeta(name="bench"),
                subsets=[
                    EndpointSubset(
                        addresses=[EndpointAddress(ip="127.0.0.1")],
                        ports=[EndpointPort(name="http", port=t)],
                    )
                    for t in targets
                ],
            )
        )
    finally:
        await store.close()


def start_nft_proxier(workdir: Path, targets: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    """``gitkube proxy --proxy-mode nftables --cleanup`` (in the benchmark's
    namespace), its own process group in the bench's session as the others."""
    url = f"sqlite:///{workdir}/kernel.db"
    port = 80
    asyncio.run(_write_kernel_state(url, port, targets))
    cmd = [sys.executable, "-m", "gitkube", "proxy", "--store", url, "--node", "bench-nft"]
    proc = subprocess.Popen(
        [*cmd, "--proxy-mode", "nftables", "--cleanup"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "nft-proxier.log", "wb"),  # noqa: SIM115
        process_group=0,
    )
    return proc, port


async def measure_programming(
    workdir: Path, services: int, changes: int, breakdown: list[tuple[float, float]]
) -> list[float]:
    """Seconds from an Endpoints write to the end of the nft transaction holding it."""
    import random

    from gitkube.api.objects import (
        EndpointAddress,
        EndpointPort,
        Endpoints,
        EndpointSubset,
        ObjectMeta,
        Service,
        ServicePort,
        ServiceSpec,
    )
    from gitkube.services.nftables import NftablesProxier
    from gitkube.services.nftrules import service_fragment
    from gitkube.store.factory import open_store
    from gitkube.store.objects import ObjectStore

    def endpoints(name: str, a: int, b: int) -> Endpoints:
        return Endpoints(
            metadata=ObjectMeta(name=name),
            subsets=[
                EndpointSubset(
                    addresses=[EndpointAddress(ip="127.0.0.1")],
                    ports=[EndpointPort(name="http", port=port)],
                )
                for port in (a, b)
            ],
        )

    store = await open_store(f"sqlite:///{workdir}/many.db")
    objects = ObjectStore(store)
    rng = random.Random(1)
    for i in range(services):
        base = 10_000 + 2 * i
        await objects.create(
            Service(
                metadata=ObjectMeta(name=f"s{i}"),
                spec=ServiceSpec(
                    selector={"app": f"s{i}"},
                    cluster_ip=f"10.97.{i // 250}.{i % 250 + 1}",
                    ports=[ServicePort(name="http", port=80)],
                ),
            )
        )
        await objects.create(endpoints(f"s{i}", base, base + 1))
    proxier = NftablesProxier(objects, node_addresses=[], cleanup=True)
    done = asyncio.Event()
    passes: list[object] = []

    def programmed(p: object) -> None:
        passes.append(p)
        done.set()

    proxier.on_programmed.append(programmed)
    stop = asyncio.Event()
    await proxier.read_kernel()
    task = asyncio.gather(proxier.cache.run(stop), proxier.controller().run(stop))
    samples: list[float] = []
    try:
        await asyncio.wait_for(done.wait(), timeout=120)  # the first, full transaction
        for n in range(changes):
            name = f"s{rng.randrange(services)}"
            new_port = 40_000 + n
            have = await objects.get(Endpoints, "default", name)
            assert have is not None
            changed = endpoints(name, have.subsets[0].ports[0].port, new_port)
            changed.metadata = have.metadata
            done.clear()
            started = time.perf_counter()
            await objects.update(changed)
            await asyncio.wait_for(done.wait(), timeout=30)
            samples.append(time.perf_counter() - started)
            last = passes[-1]
            breakdown.append((last.compute_seconds, last.kernel_seconds))  # type: ignore[attr-defined]
            # in the kernel: the service's chain jumps to an endpoint chain DNATing to it
            service = await objects.get(Service, "default", name)
            assert service is not None
            fragment = service_fragment(service, changed)
            ep_chains = [c for c, _ in fragment.chains if c.startswith("ep-")]
            listing = subprocess.run(
                ["nft", "list", "chain", "ip", "gitkube", ep_chains[-1]],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            assert f"dnat to 127.0.0.1:{new_port}" in listing, listing
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await proxier.remove()
        await store.close()
    return samples


# ------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=int, default=3, help="seconds per run (wrk, and at the fixed rate)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument(
        "--rounds", type=int, default=10, help="measure the paths in turn this many times"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="gitkube proxy --workers (default 0: the proxy's default)",
    )
    parser.add_argument(
        "--relay",
        default="auto",
        choices=["auto", "native", "asyncio"],
        help="gitkube proxy --relay (default auto: native if it can be built)",
    )
    parser.add_argument(
        "--no-asyncio-reference",
        action="store_true",
        help="do not also measure the asyncio relay (with its default workers)",
    )
    parser.add_argument(
        "--haproxy-threads",
        type=int,
        default=0,
        help="HAProxy nbthread (default: HAProxy's own, one per CPU)",
    )
    parser.add_argument(
        "--rate",
        type=int,
        default=10_000,
        help="requests/s of the fixed-rate latency runs (0: none); below every path's capacity",
    )
    parser.add_argument(
        "--no-closed-loop",
        dest="closed_loop",
        action="store_false",
        help="do not measure the kernel path, HAProxy and direct to the three endpoints "
        "at saturation from one client thread (loadgen)",
    )
    parser.add_argument("--json", action="store_true", help="print results as JSON too")
    parser.add_argument(
        "--kernel",
        default="auto",
        choices=["auto", "yes", "no"],
        help="measure the nftables path, in a network namespace (auto: when root with nft)",
    )
    parser.add_argument("--services", type=int, default=1000, help="for programming latency")
    parser.add_argument("--changes", type=int, default=200, help="endpoint changes timed")
    parser.add_argument(
        "--programming-only",
        action="store_true",
        help="only the programming latency of the kernel path",
    )
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_endpoint(args.serve)
        return
    kernel = False
    if args.kernel != "no":
        kernel, why = kernel_available()
        if not kernel and args.kernel == "yes":
            raise SystemExit(f"--kernel yes: {why}")
        if not kernel:
            print(f"(kernel path not measured: {why})")
    if kernel and not os.environ.get(BENCH_NETNS):
        raise SystemExit(rerun_in_netns())
    if args.programming_only:
        if not kernel:
            raise SystemExit("--programming-only needs the kernel path (root, nft)")
        with tempfile.TemporaryDirectory(prefix="gitkube-bench-nft-") as tmp:
            parts: list[tuple[float, float]] = []
            timed = asyncio.run(measure_programming(Path(tmp), args.services, args.changes, parts))
        print_programming(args, timed, parts)
        return
    for tool in ("wrk", "haproxy"):
        if shutil.which(tool) is None:
            raise SystemExit(f"`{tool}` is not installed (Debian package {tool})")
    from gitkube.services import native
    from gitkube.services.workers import default_workers

    relay = args.relay
    if relay != "asyncio":
        try:
            native.build()
            relay = "native"
        except native.NativeUnavailable as exc:
            if relay == "native":
                raise SystemExit(str(exc)) from exc
            print(f"(native relay unavailable: {exc}; measuring the asyncio relay)")
            relay = "asyncio"
    # the proxy's own defaults: one process with the native relay, else one per CPU
    workers = args.workers or (1 if relay == "native" else default_workers())
    threads = native.default_threads() if relay == "native" else 0
    reference = relay == "native" and not args.no_asyncio_reference

    procs: list[subprocess.Popen[bytes]] = []
    groups: list[subprocess.Popen[bytes]] = []
    latencies: list[float] = []
    breakdown: list[tuple[float, float]] = []
    rounds: list[dict[str, Result]] = []
    fixed: list[dict[str, Result]] = []
    closed: list[dict[str, Result]] = []
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gitkube-bench-proxy-") as tmp:
        workdir = Path(tmp)
        loadgen = build_loadgen(workdir) if args.rate or args.closed_loop else None
        if args.rate and loadgen is None:
            print("(no C compiler for bench/loadgen.c: no fixed-rate latency)")
        try:
            targets = [free_port() for _ in range(3)]
            for port in targets:
                procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(port)]))
            for port in targets:
                wait_port(port)
            endpoint_pids = [p.pid for p in procs]

            paths: dict[str, Path_] = {
                "direct": Path_("direct", "127.0.0.1", targets[0], None, endpoint_pids[:1])
            }
            # no proxy, the client's connections over the three endpoints
            # (loadgen only): the reference for a path that spreads
            direct3 = Path_("direct3", "127.0.0.1", targets[0], None, endpoint_pids, targets)
            gk, gk_port = start_gitkube_proxy(workdir, targets, workers=workers, relay=relay)
            groups.append(gk)
            wait_listeners(gk, gk_port, workers)
            paths["gitkube"] = Path_("gitkube", "127.0.0.1", gk_port, gk.pid, endpoint_pids)
            if reference:
                ref_dir = workdir / "asyncio"
                ref_dir.mkdir()
                ref_workers = default_workers()
                ref, ref_port = start_gitkube_proxy(
                    ref_dir, targets, workers=ref_workers, relay="asyncio"
                )
                groups.append(ref)
                wait_listeners(ref, ref_port, ref_workers)
                paths["asyncio"] = Path_("asyncio", "127.0.0.1", ref_port, ref.pid, endpoint_pids)
            if kernel:
                nft, nft_port = start_nft_proxier(workdir, targets)
                groups.append(nft)
                paths["nftables"] = Path_("nftables", VIP, nft_port, nft.pid, endpoint_pids)
            ha, ha_port = start_haproxy(workdir, targets, threads=args.haproxy_threads)
            procs.append(ha)
            paths["haproxy"] = Path_("haproxy", "127.0.0.1", ha_port, ha.pid, endpoint_pids)
            for path in paths.values():
                wait_http(path.port, host=path.host)
            if kernel:
                spread = kernel_spread(paths["nftables"], targets, args)
                print(f"kernel path: {args.connections} connections over the endpoints: {spread}")

            # a short warm-up of each path, then the measured rounds
            warm = argparse.Namespace(**{**vars(args), "duration": 1})
            for path in paths.values():
                run_wrk("warm-up", path, warm)

            proxies = [name for name in paths if name != "direct"]
            every = {**paths, "direct3": direct3}
            for number in range(args.rounds):
                loads.append(os.getloadavg()[0])
                # the proxies take turns at going first
                shift = number % len(proxies)
                order = ["direct", *proxies[shift:], *proxies[:shift]]
                rounds.append({name: run_wrk(LABELS[name], paths[name], args) for name in order})
                if loadgen is None:
                    continue
                fixed.append(
                    {
                        name: run_loadgen(LABELS[name], every[name], args, loadgen, args.rate)
                        for name in ["direct3", *order]
                    }
                )
                if kernel and args.closed_loop:
                    turn = ["direct3", "nftables", "haproxy"]
                    turn = turn[number % 3 :] + turn[: number % 3]
                    closed.append(
                        {
                            name: run_loadgen(LABELS[name], every[name], args, loadgen, 0)
                            for name in turn
                        }
                    )
            if kernel:
                latencies = asyncio.run(
                    measure_programming(workdir, args.services, args.changes, breakdown)
                )
        finally:
            for group in groups:
                stop_group(group)
            for proc in reversed(procs):
                stop_process(proc)

    print(
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency"
        + (f" and {args.rate} req/s over {args.connections} connections" if fixed else "")
        + f", {args.rounds} rounds; 3 endpoints on loopback; {os.cpu_count()} CPUs; "
        f"gitkube proxy --relay {relay} --workers {workers}"
        + (f" ({threads} relay threads)" if threads else "")
        + (f"; asyncio relay --workers {default_workers()}" if reference else "")
        + f"; HAProxy nbthread {args.haproxy_threads or 'default'}; "
        + "load average at round starts "
        + " ".join(f"{x:.1f}" for x in loads)
    )
    order = [name for name in LABELS if name in rounds[0]]
    order_fixed = [name for name in LABELS if fixed and name in fixed[0]]
    order_closed = [name for name in LABELS if closed and name in closed[0]]
    for number, results in enumerate(rounds, 1):
        print(f"\nround {number}, saturation (wrk)")
        print_table([results[name] for name in order])
        if fixed:
            print(f"round {number}, at {args.rate} req/s (loadgen)")
            print_table([fixed[number - 1][name] for name in order_fixed])
        if closed:
            print(f"round {number}, saturation from one client thread (loadgen, closed loop)")
            print_table([closed[number - 1][name] for name in order_closed])
    total = {name: combine(LABELS[name], [r[name] for r in rounds]) for name in order}
    print(f"\nall {args.rounds} rounds, saturation (req/s over all requests; median p50/p99)")
    print_table([total[name] for name in order])
    if fixed:
        at_rate = {name: combine(LABELS[name], [r[name] for r in fixed]) for name in order_fixed}
        print(f"all {args.rounds} rounds at {args.rate} req/s (median p50/p99)")
        print_table([at_rate[name] for name in order_fixed])
    if closed:
        one = {name: combine(LABELS[name], [r[name] for r in closed]) for name in order_closed}
        print(f"all {args.rounds} rounds, saturation from one client thread (median p50/p99)")
        print_table([one[name] for name in order_closed])
    gk_result, haproxy = total["gitkube"], total["haproxy"]
    if gk_result.cpu_per_10k and haproxy.cpu_per_10k:
        print(
            f"CPU per request, gitkube / HAProxy: "
            f"{gk_result.cpu_per_10k / haproxy.cpu_per_10k:.2f}x"
        )

    def p99_verdict(name: str, results: list[dict[str, Result]], what: str) -> tuple[str, bool]:
        """Over the rounds' median p99 and the per-round median of the paired ratios."""
        ratios = [r[name].p99_ms / r["haproxy"].p99_ms for r in results]
        pooled = statistics.median(r[name].p99_ms for r in results) / statistics.median(
            r["haproxy"].p99_ms for r in results
        )
        paired = statistics.median(ratios)
        return (
            f"p99 {what} {pooled:.2f}x HAProxy's (per-round median {paired:.2f}x, "
            f"<= 1.0 in {sum(1 for x in ratios if x <= 1.0)} of {len(ratios)})",
            pooled <= 1.0 and paired <= 1.0,
        )

    # paired: each round's figure against the HAProxy run of the same round
    rps_ratios = [r["gitkube"].rps / r["haproxy"].rps for r in rounds]
    won = sum(1 for x in rps_ratios if x >= 1.0)
    sat_text, sat_ok = p99_verdict("gitkube", rounds, "at saturation")
    print(
        f"per round, gitkube / HAProxy: throughput median {statistics.median(rps_ratios):.2f}x "
        f"(>= 1.0 in {won} of {len(rounds)}); {sat_text}"
    )
    verdicts = {
        "throughput >= 1.0x HAProxy": gk_result.rps >= haproxy.rps
        and statistics.median(rps_ratios) >= 1.0,
        "p99 <= HAProxy at saturation": sat_ok,
    }
    if fixed:
        fixed_text, fixed_ok = p99_verdict("gitkube", fixed, f"at {args.rate} req/s")
        print(f"  {fixed_text}")
        verdicts[f"p99 <= HAProxy at {args.rate} req/s"] = fixed_ok
    print(
        "gitkube proxy goals (over all rounds and per-round median): "
        + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in verdicts.items())
    )
    if kernel:
        kern = total["nftables"]
        direct = total["direct"]
        nft_rps = [r["nftables"].rps / r["haproxy"].rps for r in rounds]
        nft_direct = [r["nftables"].rps / r["direct"].rps for r in rounds]
        sat_text, sat_ok = p99_verdict("nftables", rounds, "at saturation")
        print(
            f"kernel path (nftables): {kern.rps / direct.rps:.2f}x direct "
            f"(per-round median {statistics.median(nft_direct):.2f}x), "
            f"{kern.rps / haproxy.rps:.2f}x HAProxy (per-round median "
            f"{statistics.median(nft_rps):.2f}x); {sat_text}"
        )
        goals = {
            ">= 0.9x direct": kern.rps >= 0.9 * direct.rps and statistics.median(nft_direct) >= 0.9,
            ">= 1.5x HAProxy": kern.rps >= 1.5 * haproxy.rps and statistics.median(nft_rps) >= 1.5,
            "p99 <= HAProxy at saturation": sat_ok,
        }
        if fixed:
            fixed_text, fixed_ok = p99_verdict("nftables", fixed, f"at {args.rate} req/s")
            print(f"  {fixed_text}")
            goals[f"p99 <= HAProxy at {args.rate} req/s"] = fixed_ok
        if closed:
            own = [r["nftables"].p99_ms / r["direct3"].p99_ms for r in closed]
            ha_own = [r["haproxy"].p99_ms / r["direct3"].p99_ms for r in closed]
            rps_own = [r["nftables"].rps / r["direct3"].rps for r in closed]
            print(
                f"  saturation from one client thread: p99 nftables / direct to the three "
                f"endpoints per-round median {statistics.median(own):.2f}x, HAProxy / direct to "
                f"the three {statistics.median(ha_own):.2f}x; throughput nftables / direct to "
                f"the three {statistics.median(rps_own):.2f}x"
            )
        if kern.path_cpu_per_10k and haproxy.path_cpu_per_10k and direct.path_cpu_per_10k:
            print(
                f"  CPU per request of the whole path (client, endpoints, proxy): "
                f"{kern.path_cpu_per_10k / direct.path_cpu_per_10k:.2f}x direct's, "
                f"{kern.path_cpu_per_10k / haproxy.path_cpu_per_10k:.2f}x HAProxy's"
            )
        print(
            "kernel goals (over all rounds and per-round median): "
            + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in goals.items())
        )
        print_programming(args, latencies, breakdown)
    if args.json:
        print(
            json.dumps(
                {
                    "saturation": [{k: r.__dict__ for k, r in x.items()} for x in rounds],
                    "fixed_rate": [{k: r.__dict__ for k, r in x.items()} for x in fixed],
                    "closed_loop": [{k: r.__dict__ for k, r in x.items()} for x in closed],
                },
                indent=2,
            )
        )


def kernel_spread(path: Path_, targets: list[int], args: argparse.Namespace) -> dict[int, int]:
    """How ``--connections`` connections to the cluster IP land on the
    endpoints (conntrack's DNAT, as ``ss`` sees them at the endpoints)."""
    socks = [socket.create_connection((path.host, path.port)) for _ in range(args.connections)]
    try:
        found = {}
        for port in targets:
            out = subprocess.run(
                ["ss", "-Htn", "state", "established", f"( sport = :{port} )"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            found[port] = sum(1 for line in out.splitlines() if line.strip())
        return found
    finally:
        for sock in socks:
            sock.close()


LABELS = {
    "direct": "direct (one endpoint)",
    "direct3": "direct (3 endpoints)",
    "gitkube": "gitkube proxy",
    "asyncio": "  (asyncio relay)",
    "nftables": "gitkube nftables",
    "haproxy": "haproxy",
}


def print_programming(
    args: argparse.Namespace, latencies: list[float], breakdown: list[tuple[float, float]]
) -> None:
    ms = sorted(x * 1000 for x in latencies)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, round(0.99 * (len(ms) - 1)))]
    print(
        f"programming latency, endpoint change -> rule in the kernel, {args.services} "
        f"Services, {len(ms)} changes: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {ms[-1]:.1f} ms"
        f" (goal p99 < 100 ms: {'met' if p99 < 100 else 'NOT met'})"
    )
    compute = sorted(c * 1000 for c, _ in breakdown)
    kernel_ms = sorted(k * 1000 for _, k in breakdown)
    print(
        f"  of which computing the ruleset and transaction: p50 "
        f"{statistics.median(compute):.1f} ms, max {compute[-1]:.1f} ms; nft: p50 "
        f"{statistics.median(kernel_ms):.1f} ms, max {kernel_ms[-1]:.1f} ms"
    )


def combine(name: str, results: list[Result]) -> Result:
    requests = sum(r.requests for r in results)
    seconds = sum(r.seconds for r in results)
    cpu = [r.cpu_per_10k * r.requests for r in results if r.cpu_per_10k is not None]
    path_cpu = [r.path_cpu_per_10k * r.requests for r in results if r.path_cpu_per_10k is not None]
    return Result(
        name,
        requests,
        seconds,
        requests / seconds,
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(cpu) / requests if cpu else None,
        sum(path_cpu) / requests if path_cpu else None,
    )


def print_table(results: list[Result]) -> None:
    haproxy = results[-1]
    header = f"{'path':<24}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>10}{'errors':>7}"
    header += f"{'CPU s/10k req: proxy':>22}{'path':>7}{'req/s vs HAProxy':>18}"
    header += f"{'p99 vs HAProxy':>16}"
    print(header)
    for r in results:
        cpu = f"{r.cpu_per_10k:.3f}" if r.cpu_per_10k is not None else "-"
        path_cpu = f"{r.path_cpu_per_10k:.2f}" if r.path_cpu_per_10k is not None else "-"
        print(
            f"{r.name:<24}{r.rps:>10.0f}{r.p50_ms:>9.3f}{r.p99_ms:>10.3f}{r.errors:>7}"
            f"{cpu:>22}{path_cpu:>7}{r.rps / haproxy.rps:>17.2f}x"
            f"{r.p99_ms / haproxy.p99_ms:>15.2f}x"
        )


if __name__ == "__main__":
    main()
