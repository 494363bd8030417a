"""The multi-host rig: "hosts" are network namespaces on a bridge this test makes.

``NetLab`` makes a Linux bridge ``gkmh<k>`` with ``10.213.<k>.1/24`` in the
test's own namespace, and for each host a namespace ``gkmh<k>-<name>`` joined
to the bridge by a veth pair, with ``10.213.<k>.<n>/24`` on its ``eth0`` and no
default route: a packet from a host reaches the bridge's subnet and nothing
else, so no traffic leaves the machine. ``k`` is the first subnet no address
or link on this machine uses. Docker sets the FORWARD policy to DROP, so one
``ACCEPT`` rule (tagged with a comment) lets frames cross the bridge.

Processes run inside a host with ``ip netns exec`` (plain processes) or
``nsenter --net`` (dockerd: ``ip netns exec`` remounts /sys, which breaks it).
``close()`` undoes everything, in reverse, even after a failure: every process
it started and every process left in its namespaces (ended by PID), the
namespaces (their veth ends go with them), the bridge, the iptables rule.
A lab also records what it made in ``/run/gitkube-multihost/<bridge>.json``
with its owner's PID, so that the next lab removes what a test run killed
before its teardown (SIGKILL, a CI timeout) left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.fixtures.require import missing
from tests.operator.helpers import REPO_ROOT, gitkube_env

PREFIX = "gkmh"
SUBNET = "10.213"
RECORDS = Path("/run/gitkube-multihost")


def run(*args: str, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(list(args), capture_output=True, input=input, check=False, timeout=60)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.decode(errors='replace')}"
        )
    return proc.stdout.decode(errors="replace")


def require_netlab() -> None:
    """Root, ip, iptables and nsenter, or a failure under CI=true (a skip elsewhere)."""
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            missing(f"`{tool}`", f"install {package} (bash .ci/run does)")
    if os.geteuid() != 0:
        missing("root", "the multi-host tests make network namespaces; run them as root")
    probe = f"{PREFIX}-probe-{os.getpid()}"
    try:
        run("ip", "netns", "add", probe)
    except RuntimeError as exc:
        missing("network namespaces", str(exc))
    finally:
        run("ip", "netns", "del", probe, check=False)


@dataclass
class Host:
    name: str
    netns: str
    address: str
    #: the veth end on the bridge, in the test's namespace
    link: str

    @property
    def netns_path(self) -> str:
        return f"/var/run/netns/{self.netns}"


@dataclass
class NetLab:
    k: int
    bridge: str
    root: Path
    hosts: dict[str, Host] = field(default_factory=dict)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    iptables_rule: list[str] = field(default_factory=list)
    #: directories to remove at the end (a dockerd's), recorded for a sweep
    dirs: list[Path] = field(default_factory=list)

    @property
    def bridge_address(self) -> str:
        return f"{SUBNET}.{self.k}.1"

    # ------------------------------------------------------------ making it

    @classmethod
    def create(cls, root: Path, names: Sequence[str]) -> NetLab:
        sweep_stale_labs()
        k = _free_subnet()
        lab = cls(k=k, bridge=f"{PREFIX}{k}", root=root)
        try:
            lab.record()
            run("ip", "link", "add", lab.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{lab.bridge_address}/24", "dev", lab.bridge)
            run("ip", "link", "set", lab.bridge, "up")
            rule = [
                "FORWARD", "-i", lab.bridge, "-o", lab.bridge,
                "-m", "comment", "--comment", f"gitkube multihost {lab.bridge}", "-j", "ACCEPT",
            ]  # fmt: skip
            lab.iptables_rule = rule
            lab.record()
            run("iptables", "-I", *rule)
            for n, name in enumerate(names, start=10):
                lab._add_host(name, n)
        except BaseException:
            lab.close()
            raise
        return lab

    def _add_host(self, name: str, n: int) -> None:
        netns = f"{self.bridge}-{name}"
        link = f"{self.bridge}v{n}"
        host = Host(name, netns, f"{SUBNET}.{self.k}.{n}", link)
        self.hosts[name] = host
        self.record()
        run("ip", "netns", "add", netns)
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", link, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", netns)
        run(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")

    def record(self) -> None:
        """Write down what this lab has made (before making it)."""
        RECORDS.mkdir(parents=True, exist_ok=True)
        me = psutil.Process()
        (RECORDS / f"{self.bridge}.json").write_text(
            json.dumps(
                {
                    "pid": me.pid,
                    "started": me.create_time(),
                    "bridge": self.bridge,
                    "namespaces": [h.netns for h in self.hosts.values()],
                    "links": [h.link for h in self.hosts.values()],
                    "iptables": self.iptables_rule,
                    "dirs": [str(d) for d in self.dirs],
                }
            )
        )

    # ------------------------------------------------------------ links

    def link_down(self, name: str) -> None:
        run("ip", "link", "set", self.hosts[name].link, "down")

    def link_up(self, name: str) -> None:
        run("ip", "link", "set", self.hosts[name].link, "up")

    def detach(self, name: str) -> None:
        """A silent partition: the host's veth end leaves the bridge, its own
        side keeps its carrier, and what it sends is dropped without an error
        (TCP retransmits, and delivers late after ``attach``)."""
        run("ip", "link", "set", self.hosts[name].link, "nomaster")

    def attach(self, name: str) -> None:
        run("ip", "link", "set", self.hosts[name].link, "master", self.bridge)

    # ------------------------------------------------------------ processes

    def spawn(
        self,
        host: str,
        argv: Sequence[str],
        *,
        log: str,
        env: dict[str, str] | None = None,
        nsenter: bool = False,
    ) -> subprocess.Popen[bytes]:
        """``argv`` in ``host``'s namespace, in a session of its own, output to ``log``."""
        h = self.hosts[host]
        prefix = (
            ["nsenter", f"--net={h.netns_path}", "--"]
            if nsenter
            else ["ip", "netns", "exec", h.netns]
        )
        path = self.root / log
        self.logs.append(path)
        with open(path, "ab") as out:
            proc = subprocess.Popen(
                [*prefix, *argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env or gitkube_env(),
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        self.processes.append(proc)
        return proc

    def spawn_gitkube(
        self, host: str, args: Sequence[str], *, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        return self.spawn(host, [sys.executable, "-m", "gitkube", *args], log=log, env=env)

    def pids(self, host: str) -> list[int]:
        """Every process in ``host``'s network namespace."""
        out = run("ip", "netns", "pids", self.hosts[host].netns, check=False)
        return [int(p) for p in out.split() if p.isdigit()]

    def kill_host(self, host: str) -> int:
        """SIGKILL every process of ``host`` until none is left; how many there were."""
        killed: set[int] = set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = [p for p in self.pids(host) if p != os.getpid()]
            if not pids:
                return len(killed)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            for proc in self.processes:
                proc.poll()  # reap our direct children
            time.sleep(0.05)
        raise AssertionError(f"processes of {host} still alive: {self.pids(host)}")

    def pods_running(self, host: str, state_dir: Path) -> list[str]:
        """The pods the process runtime runs on ``host``: processes of its
        namespace whose working directory is under the agent's state dir, by
        their HOSTNAME (the pod's name)."""
        names: list[str] = []
        for pid in self.pids(host):
            try:
                proc = psutil.Process(pid)
                if not proc.cwd().startswith(str(state_dir)):
                    continue
                env = proc.environ()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            if "HOSTNAME" in env and "PORT" in env:
                names.append(env["HOSTNAME"])
        return sorted(names)

    def log_tail(self, chars: int = 3000) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
            for p in self.logs
            if p.exists()
        )

    # ------------------------------------------------------------ undoing it

    def close(self) -> None:
        # our processes first: SIGTERM lets agents and dockerd stop cleanly
        for proc in self.processes:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in self.processes:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                kill_tree(proc.pid)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)
        # then whatever is still in our namespaces (pods, shims, containerd)
        for name in list(self.hosts):
            with contextlib.suppress(Exception):
                self.kill_host(name)
        _remove(
            namespaces=[h.netns for h in self.hosts.values()],
            links=[h.link for h in self.hosts.values()],
            bridge=self.bridge,
            rule=self.iptables_rule,
            dirs=self.dirs,
        )
        self.hosts.clear()
        (RECORDS / f"{self.bridge}.json").unlink(missing_ok=True)


def _remove(
    *,
    namespaces: Sequence[str],
    links: Sequence[str],
    bridge: str,
    rule: Sequence[str],
    dirs: Sequence[Path],
) -> None:
    for netns in namespaces:
        run("ip", "netns", "del", netns, check=False)
    for link in links:
        run("ip", "link", "del", link, check=False)
    run("ip", "link", "del", bridge, check=False)
    _kill_cgroups(f"{bridge}-")
    if rule:
        # -C first: never delete a rule that is not ours, or twice
        while subprocess.run(["iptables", "-C", *rule], capture_output=True).returncode == 0:
            run("iptables", "-D", *rule, check=False)
    for d in dirs:
        # an engine killed hard can leave mounts (shm, overlay, netns) behind
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            mountpoint = line.split()[1]
            if mountpoint.startswith(str(d) + "/"):
                subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(d, ignore_errors=True)


def _kill_cgroups(prefix: str) -> None:
    """SIGKILL the processes in cgroups named ``prefix…`` (a lab's containers),
    then remove those cgroups."""
    marker = f":/{prefix}"
    for _ in range(50):
        found = False
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cgroups = (proc / "cgroup").read_text()
            except OSError:
                continue
            if marker in cgroups:
                found = True
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(proc.name), signal.SIGKILL)
        if not found:
            break
        time.sleep(0.05)
    # os.walk skips directories that vanish while it walks (other engines'
    # containers come and go under /sys/fs/cgroup); Path.glob raises instead
    found_dirs: list[Path] = []
    for root, subdirs, _ in os.walk("/sys/fs/cgroup", onerror=lambda _err: None):
        for name in subdirs:
            if name.startswith(prefix):
                found_dirs.append(Path(root, name))
    dirs = sorted(found_dirs, key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        subs = [Path(r) for r, _, _ in os.walk(d, onerror=lambda _err: None)]
        for sub in sorted(subs, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):
                sub.rmdir()


def sweep_stale_labs() -> None:
    """Remove what labs whose test process is gone left behind."""
    if not RECORDS.is_dir():
        return
    for record in RECORDS.glob(f"{PREFIX}*.json"):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        try:
            alive = psutil.Process(data["pid"]).create_time() == data["started"]
        except psutil.NoSuchProcess:
            alive = False
        if alive:
            continue
        for netns in data["namespaces"]:
            out = run("ip", "netns", "pids", netns, check=False)
            for pid in (int(p) for p in out.split() if p.isdigit()):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _remove(
            namespaces=data["namespaces"],
            links=data["links"],
            bridge=data["bridge"],
            rule=data["iptables"],
            dirs=[Path(d) for d in data["dirs"]],
        )
        record.unlink(missing_ok=True)


def kill_tree(pid: int) -> int:
    """SIGKILL ``pid`` and its descendants (by PID); how many there were."""
    try:
        parent = psutil.Process(pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        return 0
    for proc in family:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            proc.kill()
    return len(family)


def _free_subnet() -> int:
    used = run("ip", "-o", "addr", "show") + run("ip", "-o", "link", "show")
    namespaces = run("ip", "netns", "list", check=False)
    for k in range(0, 250):
        if f"{SUBNET}.{k}." in used or f"{PREFIX}{k}:" in used or f"{PREFIX}{k}-" in namespaces:
            continue
        return k
    raise RuntimeError(f"no free {SUBNET}.x.0/24 subnet for the multi-host rig")


# ---------------------------------------------------------------- etcd on the bridge


class BridgeEtcd:
    """etcd in the test's namespace, serving clients on the bridge address."""

    def __init__(self, binary: str, data_dir: Path, address: str, port: int) -> None:
        self.binary = binary
        self.data_dir = data_dir
        self.address = address
        self.port = port
        self.log_path = data_dir.with_suffix(".log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"etcd://{self.address}:{self.port}"

    def start(self, peer_port: int) -> None:
        client = f"http://{self.address}:{self.port}"
        peer = f"http://127.0.0.1:{peer_port}"
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [
                    self.binary, "--name", "mh", "--data-dir", str(self.data_dir),
                    "--listen-client-urls", client, "--advertise-client-urls", client,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"mh={peer}", "--initial-cluster-state", "new",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                    "--log-level", "warn", "--logger", "zap",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        deadline = time.monotonic() + 20
        last = ""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"etcd exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{client}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError) as exc:
                last = str(exc)
            time.sleep(0.05)
        raise RuntimeError(f"etcd on {client} not healthy: {last}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


# ---------------------------------------------------------------- a dockerd per host


class HostDockerd:
    """A Docker engine inside one host's namespace, with its own data-root,
    exec-root, pidfile, socket and bridge (``10.214.<n>.1/24``)."""

    def __init__(self, lab: NetLab, host: str, index: int) -> None:
        self.lab = lab
        self.host = host
        # short: the socket path must stay under the unix socket length limit
        self.dir = Path(tempfile.mkdtemp(prefix=f"gkd{index}-", dir="/tmp"))
        lab.dirs.append(self.dir)  # removed (and recorded for a sweep) by the lab
        lab.record()
        self.socket = self.dir / "docker.sock"
        self.index = index
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def docker_host(self) -> str:
        return f"unix://{self.socket}"

    def start(self) -> None:
        self.process = self.lab.spawn(
            self.host,
            [
                "dockerd",
                "--data-root", str(self.dir / "data"),
                "--exec-root", str(self.dir / "exec"),
                "--pidfile", str(self.dir / "docker.pid"),
                "-H", self.docker_host,
                "--bip", f"10.214.{self.index}.1/24",
                "--containerd-namespace", f"gkmh-{self.index}",
                "--containerd-plugins-namespace", f"gkmh-{self.index}-plugins",
                # its containers' processes are found by this cgroup, even
                # after the engine is gone (they live in namespaces of their own)
                "--cgroup-parent", f"{self.lab.bridge}-{self.host}",
                "--log-level", "warn",
            ],
            log=f"dockerd-{self.host}.log",
            env={k: v for k, v in os.environ.items() if not k.startswith("DOCKER_")},
            nsenter=True,
        )  # fmt: skip

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dockerd of {self.host} exited: {self.lab.log_tail()}")
            proc = subprocess.run(
                ["docker", "-H", self.docker_host, "version", "--format", "{{.Server.Version}}"],
                capture_output=True,
                check=False,
            )
            if proc.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"dockerd of {self.host} did not answer in {timeout}s")

    def docker(self, *args: str) -> str:
        return run("docker", "-H", self.docker_host, *args)

    def running_pods(self) -> list[str]:
        """Names of the pods whose (non-sandbox) containers run in this engine."""
        out = self.docker(
            "ps", "--format",
            '{{.Label "io.kubernetes.pod.name"}} {{.Label "io.gitkube.sandbox"}}',
        )  # fmt: skip
        names = []
        for line in out.splitlines():
            name, _, sandbox = line.partition(" ")
            if name and sandbox.strip() != "true":
                names.append(name)
        return sorted(names)

    def container_pids(self) -> list[int]:
        ids = self.docker("ps", "-q").split()
        if not ids:
            return []
        out = self.docker("inspect", "--format", "{{.State.Pid}}", *ids)
        return [int(p) for p in out.split() if p.isdigit() and int(p) > 0]

    def load(self, images_tar: bytes) -> None:
        run("docker", "-H", self.docker_host, "load", input=images_tar)
