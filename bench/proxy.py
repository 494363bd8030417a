"""Service proxy throughput and latency: gitkube proxy vs HAProxy vs no proxy.

    python bench/proxy.py [--duration 3] [--rounds 10] [--threads 2]
                          [--connections 50] [--workers 0] [--relay auto]
                          [--haproxy-threads 0] [--no-asyncio-reference]

Three identical HTTP endpoints on loopback (a minimal keep-alive responder on
uvloop, one process each). In one run, wrk (``wrk -t2 -c50 -d3s --latency``)
measures requests/s and p50/p99 latency

- straight to one endpoint (the ceiling: no proxy),
- through the gitkube proxy (``gitkube proxy`` with its defaults: the native
  relay, one process with one relay thread per CPU), in its own process
  group, over a SQLite store holding the Service and its Endpoints,
- for reference, through the gitkube proxy's asyncio relay (``--relay
  asyncio`` with its default workers, one process per CPU),
- through HAProxy (mode tcp, balance roundrobin, the same three endpoints;
  nbthread defaults to HAProxy's own default, one thread per CPU),
- through the kernel (``--proxy-mode nftables``: the gitkube nftables
  proxier in its own process programs a cluster IP that DNATs to the three
  endpoints; wrk connects to the cluster IP),

and the CPU seconds each proxy spends per 10,000 requests (psutil
``cpu_times`` summed over the proxy's process, its threads and all its
children). The paths are measured in turn, ``--rounds`` times, the proxies
taking turns at going first, so that load from elsewhere on a shared machine
falls on all of them; many short rounds follow the machine's drift better
than a few long ones. Each round is printed, then the totals (requests/s over
all rounds, median p50/p99) and the per-round ratios gitkube/HAProxy (each
gitkube run against the HAProxy run next to it). Goals: throughput >= 1.0x
HAProxy and p99 no worse than HAProxy's, both over all rounds and as the
per-round median; for the kernel path >= 0.9x direct, >= 1.5x HAProxy and
p99 no worse than HAProxy's.

The kernel path is measured when running as root with ``nft`` (``--kernel
auto``, the default; ``--kernel no`` leaves it out): then the whole benchmark
(every path, so that they stay comparable) re-runs itself inside a network
namespace it creates, with only ``lo`` and no route out, and deletes it at the
end. The proxier's CPU is its process's; the kernel's work is charged to the
processes whose packets it handles (wrk, the endpoints), as for direct.

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
    cpu_per_10k: float | None = None


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not match:
        raise ValueError(f"unexpected latency {text!r} in wrk output")
    return float(match.group(1)) * _UNITS[match.group(2)]


def run_wrk(
    name: str,
    port: int,
    args: argparse.Namespace,
    cpu_pid: int | None = None,
    host: str = "127.0.0.1",
) -> Result:
    before = cpu_seconds(cpu_pid) if cpu_pid else 0.0
    cmd = [
        "wrk",
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{args.duration}s",
        "--latency",
        f"http://{host}:{port}/",
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = cpu_seconds(cpu_pid) if cpu_pid else 0.0
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
    requests = int(total.group(1))
    result = Result(
        name,
        requests,
        _ms(total.group(2) + total.group(3)) / 1000.0,
        float(rps.group(1)),
        _ms(p50.group(1)),
        _ms(p99.group(1)),
        errors,
    )
    if cpu_pid and requests:
        result.cpu_per_10k = (after - before) / requests * 10_000
    return result


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
        [*cmd, "--workers", str(workers), "--relay", relay],
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


def run_nft_proxier(url: str) -> None:
    """The nftables proxier alone until SIGTERM (a process of the benchmark)."""

    async def main() -> None:
        from gitkube.services.nftables import NftablesProxier
        from gitkube.store.factory import open_store
        from gitkube.store.objects import ObjectStore

        store = await open_store(url)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            await NftablesProxier(ObjectStore(store), node_addresses=[], cleanup=True).run(stop)
        finally:
            await store.close()

    asyncio.run(main())


def start_nft_proxier(workdir: Path, targets: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    url = f"sqlite:///{workdir}/kernel.db"
    port = 80
    asyncio.run(_write_kernel_state(url, port, targets))
    proc = subprocess.Popen(
        [sys.executable, __file__, "--nft-proxier", url],
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
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run")
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
    parser.add_argument("--nft-proxier", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_endpoint(args.serve)
        return
    if args.nft_proxier:
        run_nft_proxier(args.nft_proxier)
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
            timed = asyncio.run(
                measure_programming(Path(tmp), args.services, args.changes, parts)
            )
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
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="gitkube-bench-proxy-") as tmp:
        workdir = Path(tmp)
        try:
            targets = [free_port() for _ in range(3)]
            for port in targets:
                procs.append(subprocess.Popen([sys.executable, __file__, "--serve", str(port)]))
            for port in targets:
                wait_port(port)

            # name -> (port, pid whose process tree's CPU is counted)
            paths: dict[str, tuple[int, int | None]] = {"direct": (targets[0], None)}
            gk, gk_port = start_gitkube_proxy(workdir, targets, workers=workers, relay=relay)
            groups.append(gk)
            wait_listeners(gk, gk_port, workers)
            paths["gitkube"] = (gk_port, gk.pid)
            if reference:
                ref_dir = workdir / "asyncio"
                ref_dir.mkdir()
                ref_workers = default_workers()
                ref, ref_port = start_gitkube_proxy(
                    ref_dir, targets, workers=ref_workers, relay="asyncio"
                )
                groups.append(ref)
                wait_listeners(ref, ref_port, ref_workers)
                paths["asyncio"] = (ref_port, ref.pid)
            hosts = dict.fromkeys(paths, "127.0.0.1")
            if kernel:
                nft, nft_port = start_nft_proxier(workdir, targets)
                groups.append(nft)
                paths["nftables"] = (nft_port, nft.pid)
                hosts["nftables"] = VIP
            ha, ha_port = start_haproxy(workdir, targets, threads=args.haproxy_threads)
            procs.append(ha)
            paths["haproxy"] = (ha_port, ha.pid)
            hosts["haproxy"] = "127.0.0.1"
            for name, (port, _) in paths.items():
                wait_http(port, host=hosts[name])

            # a short warm-up of each path, then the measured rounds
            warm = argparse.Namespace(**{**vars(args), "duration": 1})
            for name, (port, _) in paths.items():
                run_wrk("warm-up", port, warm, host=hosts[name])

            proxies = [name for name in paths if name != "direct"]
            for number in range(args.rounds):
                loads.append(os.getloadavg()[0])
                results = {"direct": run_wrk(LABELS["direct"], targets[0], args)}
                # the proxies take turns at going first
                shift = number % len(proxies)
                for name in proxies[shift:] + proxies[:shift]:
                    port, pid = paths[name]
                    results[name] = run_wrk(LABELS[name], port, args, pid, host=hosts[name])
                rounds.append(results)
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
        f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency, "
        f"{args.rounds} rounds; 3 endpoints on loopback; {os.cpu_count()} CPUs; "
        f"gitkube proxy --relay {relay} --workers {workers}"
        + (f" ({threads} relay threads)" if threads else "")
        + (f"; asyncio relay --workers {default_workers()}" if reference else "")
        + f"; HAProxy nbthread {args.haproxy_threads or 'default'}; "
        + "load average at round starts "
        + " ".join(f"{x:.1f}" for x in loads)
    )
    order = [name for name in LABELS if name in rounds[0]]
    for number, results in enumerate(rounds, 1):
        print(f"\nround {number}")
        print_table([results[name] for name in order])
    total = {name: combine(LABELS[name], [r[name] for r in rounds]) for name in order}
    print(f"\nall {args.rounds} rounds (req/s over all requests; median p50/p99)")
    print_table([total[name] for name in order])
    gk_result, haproxy = total["gitkube"], total["haproxy"]
    if gk_result.cpu_per_10k and haproxy.cpu_per_10k:
        print(
            f"CPU per request, gitkube / HAProxy: "
            f"{gk_result.cpu_per_10k / haproxy.cpu_per_10k:.2f}x"
        )
    # paired: each round's gitkube figure against the HAProxy run next to it
    rps_ratios = [r["gitkube"].rps / r["haproxy"].rps for r in rounds]
    p99_ratios = [r["gitkube"].p99_ms / r["haproxy"].p99_ms for r in rounds]
    won = sum(1 for x in rps_ratios if x >= 1.0)
    print(
        f"per round, gitkube / HAProxy: throughput median {statistics.median(rps_ratios):.2f}x "
        f"(>= 1.0 in {won} of {len(rounds)}), p99 median {statistics.median(p99_ratios):.2f}x "
        f"(<= 1.0 in {sum(1 for x in p99_ratios if x <= 1.0)} of {len(rounds)})"
    )
    throughput_ok = gk_result.rps >= haproxy.rps and statistics.median(rps_ratios) >= 1.0
    p99_ok = gk_result.p99_ms <= haproxy.p99_ms and statistics.median(p99_ratios) <= 1.0
    print(
        f"goal throughput >= 1.0x HAProxy (over all requests and per-round median): "
        f"{'met' if throughput_ok else 'NOT met'}; goal p99 <= HAProxy (median of rounds "
        f"and per-round median): {'met' if p99_ok else 'NOT met'}"
    )
    if kernel:
        kern = total["nftables"]
        direct = total["direct"]
        nft_rps = [r["nftables"].rps / r["haproxy"].rps for r in rounds]
        nft_direct = [r["nftables"].rps / r["direct"].rps for r in rounds]
        nft_p99 = [r["nftables"].p99_ms / r["haproxy"].p99_ms for r in rounds]
        print(
            f"kernel path (nftables): {kern.rps / direct.rps:.2f}x direct "
            f"(per-round median {statistics.median(nft_direct):.2f}x), "
            f"{kern.rps / haproxy.rps:.2f}x HAProxy (per-round median "
            f"{statistics.median(nft_rps):.2f}x), p99 {kern.p99_ms / haproxy.p99_ms:.2f}x "
            f"HAProxy's (per-round median {statistics.median(nft_p99):.2f}x)"
        )
        goals = {
            ">= 0.9x direct": kern.rps >= 0.9 * direct.rps,
            ">= 1.5x HAProxy": kern.rps >= 1.5 * haproxy.rps,
            "p99 <= HAProxy": kern.p99_ms <= haproxy.p99_ms,
        }
        print(
            "kernel goals: "
            + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in goals.items())
        )
        print_programming(args, latencies, breakdown)
    if args.json:
        print(json.dumps([{k: r.__dict__ for k, r in x.items()} for x in rounds], indent=2))


LABELS = {
    "direct": "direct (one endpoint)",
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
    return Result(
        name,
        requests,
        seconds,
        requests / seconds,
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        sum(r.errors for r in results),
        sum(cpu) / requests if cpu else None,
    )


def print_table(results: list[Result]) -> None:
    haproxy = results[-1]
    header = f"{'path':<24}{'req/s':>12}{'p50 ms':>10}{'p99 ms':>10}{'errors':>8}"
    header += f"{'CPU s/10k req':>16}{'req/s vs HAProxy':>18}{'p99 vs HAProxy':>16}"
    print(header)
    for r in results:
        cpu = f"{r.cpu_per_10k:.3f}" if r.cpu_per_10k is not None else "-"
        print(
            f"{r.name:<24}{r.rps:>12.0f}{r.p50_ms:>10.3f}{r.p99_ms:>10.3f}{r.errors:>8}"
            f"{cpu:>16}{r.rps / haproxy.rps:>17.2f}x{r.p99_ms / haproxy.p99_ms:>15.2f}x"
        )


if __name__ == "__main__":
    main()
