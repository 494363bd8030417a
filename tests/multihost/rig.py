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

    @property
    def bridge_address(self) -> str:
        return f"{SUBNET}.{self.k}.1"

    # ------------------------------------------------------------ making it

    @classmethod
    def create(cls, root: Path, names: Sequence[str]) -> NetLab:
        k = _free_subnet()
        lab = cls(k=k, bridge=f"{PREFIX}{k}", root=root)
        try:
            run("ip", "link", "add", lab.bridge, "type", "bridge")
            run("ip", "addr", "add", f"{lab.bridge_address}/24", "dev", lab.bridge)
            run("ip", "link", "set", lab.bridge, "up")
            rule = [
                "FORWARD", "-i", lab.bridge, "-o", lab.bridge,
                "-m", "comment", "--comment", f"gitkube multihost {lab.bridge}", "-j", "ACCEPT",
            ]  # fmt: skip
            run("iptables", "-I", *rule)
            lab.iptables_rule = rule
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
        run("ip", "netns", "add", netns)
        self.hosts[name] = host
        run("ip", "link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", netns)
        run("ip", "link", "set", link, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", netns)
        run(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        run(*inside, "ip", "link", "set", "eth0", "up")
        run(*inside, "ip", "link", "set", "lo", "up")

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
        for host in self.hosts.values():
            run("ip", "netns", "del", host.netns, check=False)
            run("ip", "link", "del", host.link, check=False)
        run("ip", "link", "del", self.bridge, check=False)
        if self.iptables_rule:
            run("iptables", "-D", *self.iptables_rule, check=False)
        self.hosts.clear()


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

    def cleanup(self) -> None:
        """After the lab ended the engine: its files (containers died with their namespace)."""
        for sub in ("exec", "data"):
            # an engine killed hard can leave mounts (shm, overlay) behind
            for line in reversed(Path("/proc/mounts").read_text().splitlines()):
                mountpoint = line.split()[1]
                if mountpoint.startswith(str(self.dir / sub)):
                    subprocess.run(["umount", "-l", mountpoint], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)
