"""Network namespaces for the kernel path's tests: created by the test, no
default route (a packet to a virtual IP cannot leave the machine), deleted
afterwards. Servers and clients run inside with ``ip netns exec``."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from tests.fixtures.require import missing, require_binary

_counter = itertools.count()

#: a TCP server that answers every connection with its name and closes
SERVER = r"""
import socket, sys
host, port, name = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(512)
print("ready", flush=True)
while True:
    c, _ = s.accept()
    try:
        c.sendall(name + b"\n")
    finally:
        c.close()
"""

#: N connections to host:port (from source, if given); prints counts by answer
CLIENT = r"""
import collections, json, socket, sys, time
host, port, n, source = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pause = float(sys.argv[5])
seen = collections.Counter()
for _ in range(n):
    started = time.monotonic()
    try:
        bind = (source, 0) if source else None
        c = socket.create_connection((host, port), timeout=3, source_address=bind)
        seen[c.makefile().readline().strip() or "empty"] += 1
        c.close()
    except OSError as exc:
        seen[type(exc).__name__] += 1
    seen["_slowest_ms"] = max(seen["_slowest_ms"], int((time.monotonic() - started) * 1000))
    if pause:
        time.sleep(pause)
print(json.dumps(seen))
"""


def require_kernel_path() -> None:
    if os.geteuid() != 0:
        missing("root", "the nftables tests create network namespaces")
    require_binary("nft", "apt-get install nftables")
    require_binary("ip", "apt-get install iproute2")


@dataclass
class Netns:
    name: str
    servers: list[subprocess.Popen[str]] = field(default_factory=list)

    def run(self, *argv: str, check: bool = True, stdin: str | None = None) -> str:
        done = subprocess.run(
            ["ip", "netns", "exec", self.name, *argv],
            capture_output=True,
            text=True,
            input=stdin,
            timeout=120,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def serve(self, host: str, port: int, name: str) -> None:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.name, sys.executable, "-c", SERVER, host, str(port), name],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", f"server {name} did not start"
        self.servers.append(proc)

    def connect(
        self, host: str, port: int, n: int = 1, *, source: str = "", pause: float = 0.0
    ) -> dict[str, int]:
        out = self.run(sys.executable, "-c", CLIENT, host, str(port), str(n), source, str(pause))
        return dict(json.loads(out))

    def connect_async(
        self, host: str, port: int, n: int, *, pause: float = 0.0
    ) -> subprocess.Popen[str]:
        argv = [sys.executable, "-c", CLIENT, host, str(port), str(n), "", str(pause)]
        return subprocess.Popen(
            ["ip", "netns", "exec", self.name, *argv],
            stdout=subprocess.PIPE,
            text=True,
        )

    def table(self) -> dict[str, object]:
        listing = self.run("nft", "-j", "list", "table", "ip", "gitkube")
        found: dict[str, object] = json.loads(listing)
        return found

    def has_table(self, family: str = "ip", name: str = "gitkube") -> bool:
        return f"table {family} {name}" in self.run("nft", "list", "tables")

    def stop_servers(self) -> None:
        for proc in self.servers:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self.servers.clear()


@contextmanager
def netns(*addresses: str) -> Iterator[Netns]:
    """A fresh namespace with ``lo`` up and ``addresses`` (the node addresses,
    /24) on an interface; no default route."""
    name = f"gknft-{os.getpid()}-{next(_counter)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    ns = Netns(name)
    try:
        ns.run("ip", "link", "set", "lo", "up")
        # (a veth pair: some kernels have no dummy driver)
        ns.run("ip", "link", "add", "node0", "type", "veth", "peer", "name", "node0p")
        ns.run("ip", "link", "set", "node0", "up")
        ns.run("ip", "link", "set", "node0p", "up")
        for address in addresses:
            ns.run("ip", "addr", "add", f"{address}/24", "dev", "node0")
        routes = ns.run("ip", "route", "show", "default")
        assert routes.strip() == "", f"a default route in {name}: {routes}"
        yield ns
    finally:
        ns.stop_servers()
        subprocess.run(["ip", "netns", "del", name], check=False)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/run/netns/{name}") and time.monotonic() < deadline:
            time.sleep(0.05)
