"""The kernel proxy: Services as nftables rules (``--proxy-mode nftables``).

``NftablesProxier`` keeps the table ``ip gitkube`` (and nothing else) equal to
``compute_ruleset(services, endpoints)`` (``gitkube.services.nftrules``, pure)
and the cluster IPs on a dummy interface (``gitkube0``; a bridge without
ports where the kernel has no dummy driver), so the service range
is routable on this host with no route to anywhere: as kube-proxy's IPVS
mode, each cluster IP is a local address, and the nat chains DNAT it.

- it watches Services and Endpoints through a cache (its own, or the
  process's) and reconciles one constant key. The first pass (and any pass
  after a failure) computes the whole desired ruleset and diffs it against
  the kernel's; after that a pass recomputes only the Services that changed
  since (noted from the cache's events) and diffs their old fragments against
  their new ones. Either way ONE ``nft -f`` transaction with only the
  changes: atomic, never a flush of the table;
- transactions go through libnftables in this process when it loads
  (``gitkube.services.libnft``: no fork and exec per change), else through
  the ``nft`` command; the ``ip`` command manages the interface;
- on start it reads the table as it is in the kernel (``nft -j list table``)
  and resyncs: chains it does not know the content of are refilled, map
  elements replaced, leftovers deleted, in one transaction;
- on stop it leaves the table (connections keep flowing while the agent
  restarts); with ``cleanup=True`` it deletes the table and the interface;
- ``netns``: run every ``nft``/``ip`` command in that network namespace
  (``ip netns exec``), which is how the tests and the benchmark run it.

``choose_proxy_mode(requested)`` decides userspace or nftables, with the reason
(``gitkube doctor`` shows it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from gitkube.api.keys import object_key
from gitkube.api.objects import Endpoints, Service
from gitkube.control import Cache, CacheEvent, Controller, Result
from gitkube.errors import ConfigError, GitkubeError
from gitkube.services.libnft import Libnft, LibnftError
from gitkube.services.nftrules import (
    FAMILY,
    TABLE,
    Fragment,
    Ruleset,
    applied,
    compute_ruleset,
    owners_of_ips,
    plan_transaction,
    service_fragment,
    static_ruleset,
)
from gitkube.store.objects import ObjectStore

log = logging.getLogger(__name__)

INTERFACE = "gitkube0"
KEY = "all"


class NftError(GitkubeError):
    """nft or ip failed."""

    retryable = True


# ------------------------------------------------------------ mode


def nft_works(netns: str | None = None) -> tuple[bool, str]:
    """Whether nft can list the ruleset here, and if not why."""
    if shutil.which("nft") is None:
        return False, "the nft command is not installed (apt-get install nftables)"
    try:
        done = subprocess.run(
            [*_prefix(netns), "nft", "list", "tables"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, f"nft failed: {exc}"
    if done.returncode != 0:
        return False, f"nft failed: {done.stderr.strip() or done.returncode}"
    return True, "nft works"


def choose_proxy_mode(requested: str) -> tuple[str, str]:
    """``(mode, why)``: ``userspace`` or ``nftables``. ``nftables`` asked for
    but impossible is a ``ConfigError``; ``auto`` falls back to userspace."""
    if requested == "userspace":
        return "userspace", "--proxy-mode userspace"
    root = os.geteuid() == 0
    works, why = nft_works() if root else (False, "not root")
    if requested == "nftables":
        if not root:
            raise ConfigError("--proxy-mode nftables needs root (or use --proxy-mode userspace)")
        if not works:
            raise ConfigError(f"--proxy-mode nftables: {why}")
        return "nftables", "--proxy-mode nftables"
    if requested != "auto":
        raise ConfigError(f"--proxy-mode: {requested!r} is not one of auto, userspace, nftables")
    if works:
        return "nftables", "auto: running as root and nft works"
    return "userspace", f"auto: {why}"


# ------------------------------------------------------------ commands


def _prefix(netns: str | None) -> list[str]:
    return ["ip", "netns", "exec", netns] if netns else []


@dataclass
class ProgramPass:
    """What one pass did."""

    lines: int = 0
    addresses_added: list[str] = field(default_factory=list)
    addresses_removed: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: of which: computing the desired ruleset and the transaction
    compute_seconds: float = 0.0
    #: of which: nft and ip
    kernel_seconds: float = 0.0
    script: list[str] = field(default_factory=list)


class NftablesProxier:
    def __init__(
        self,
        objects: ObjectStore,
        *,
        node_addresses: Sequence[str],
        cache: Cache | None = None,
        cleanup: bool = False,
        netns: str | None = None,
        interface: str = INTERFACE,
        use_libnft: bool = True,
    ) -> None:
        self.objects = objects
        self.own_cache = cache is None
        self.cache = cache if cache is not None else Cache(objects.store)
        self.node_addresses = list(node_addresses)
        self.cleanup = cleanup
        self.netns = netns
        self.interface = interface
        #: what the kernel holds (as we last programmed or read it)
        self.current: Ruleset | None = None
        self.addresses: set[str] | None = None
        self._interface_up = False
        #: libnftables in-process (None: not loaded yet, or not available)
        self.use_libnft = use_libnft
        self._libnft: Libnft | None = None
        self._libnft_tried = False
        self._fragments: dict[str, tuple[tuple[str, str], Fragment]] = {}
        #: the fragment of each Service as the kernel holds it (incremental passes)
        self._in_kernel: dict[str, Fragment] = {}
        #: Services changed since the last pass; None: recompute everything
        self._dirty: set[str] | None = None
        #: the kernel holds what ``current`` says, rule by rule
        self._complete = False
        #: cluster IP by Service, and the Services that serve theirs
        self._ip_of: dict[str, str] = {}
        self._owned: set[str] = set()
        self.cache.add_handler(self._note, replay=False)
        self.last_pass = ProgramPass()
        self.passes = 0
        #: called after each transaction that changed something (benchmarks, tests)
        self.on_programmed: list[object] = []

    # ------------------------------------------------------------ kernel

    async def _nft(self, script: str) -> None:
        """One nft transaction: through libnftables in-process when it loads
        (no fork and exec per change), else the nft command."""
        if self._libnft is None and not self._libnft_tried:
            self._libnft_tried = True
            self._libnft = Libnft.load(self.netns) if self.use_libnft else None
        if self._libnft is not None:
            try:
                await self._libnft.run(script)
            except LibnftError as exc:
                raise NftError(f"nft -f: {exc}") from None
            return
        await self._run(["nft", "-f", "-"], script)

    async def _run(self, argv: list[str], stdin: str | None = None) -> str:
        proc = await asyncio.create_subprocess_exec(
            *_prefix(self.netns),
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await proc.communicate(stdin.encode() if stdin is not None else None)
        if proc.returncode != 0:
            raise NftError(f"{' '.join(argv)}: {err.decode().strip() or proc.returncode}")
        return out.decode()

    async def read_kernel(self) -> None:
        """What the table and the interface hold now (the resync's starting point)."""
        try:
            listing = json.loads(await self._run(["nft", "-j", "list", "table", FAMILY, TABLE]))
        except NftError:
            listing = None  # no table yet
        if listing is None:
            self.current = None
        else:
            current = Ruleset()
            for item in listing.get("nftables", []):
                if "chain" in item:
                    chain = item["chain"]
                    if "hook" in chain:
                        current.base_chains[chain["name"]] = ""
                    current.chains[chain["name"]] = None
                elif "set" in item:
                    current.sets[item["set"]["name"]] = ""
                elif "map" in item:
                    current.maps[item["map"]["name"]] = ""
                    current.elements[item["map"]["name"]] = None
            self.current = current
        self.addresses = await self._read_addresses()
        self._interface_up = False
        self._complete = False

    async def _read_addresses(self) -> set[str] | None:
        """The IPv4 addresses of the interface, None when it does not exist."""
        try:
            shown = json.loads(await self._run(["ip", "-j", "addr", "show", "dev", self.interface]))
        except NftError:
            return None
        return {
            a["local"]
            for link in shown
            for a in link.get("addr_info", [])
            if a.get("family") == "inet"
        }

    async def _ensure_interface(self) -> None:
        """The interface holding the cluster IPs: a dummy one, or where the
        kernel has no dummy driver, a bridge without ports (which behaves as one)."""
        if self._interface_up:
            return
        if self.addresses is None:
            self.addresses = await self._read_addresses()
        if self.addresses is None:
            try:
                await self._run(["ip", "link", "add", self.interface, "type", "dummy"])
            except NftError:
                await self._run(["ip", "link", "add", self.interface, "type", "bridge"])
            self.addresses = set()
        await self._run(["ip", "link", "set", self.interface, "up"])
        self._interface_up = True

    async def program(self, desired: Ruleset, *, script: list[str] | None = None) -> ProgramPass:
        """Make the kernel hold ``desired``: one nft transaction, then addresses.
        When a command fails, what the kernel holds is read again, so that the
        next pass (the controller retries with back-off) starts from the truth."""
        try:
            return await self._program(desired, script)
        except NftError:
            await self.read_kernel()
            raise

    async def _program(self, desired: Ruleset, partial: list[str] | None) -> ProgramPass:
        started = time.perf_counter()
        done = ProgramPass()
        await self._ensure_interface()
        assert self.addresses is not None
        add = sorted(desired.addresses - self.addresses)
        remove = sorted(self.addresses - desired.addresses)
        # new addresses before the rules that use them, old ones after
        if add:
            await self._run(
                ["ip", "-batch", "-"],
                "".join(f"addr add {ip}/32 dev {self.interface}\n" for ip in add),
            )
            self.addresses.update(add)
        planned = time.perf_counter()
        script = plan_transaction(self.current, desired) if partial is None else partial
        done.compute_seconds = time.perf_counter() - planned
        if script:
            await self._nft("\n".join(script) + "\n")
            if partial is None:
                self.current = applied(self.current, desired)
        if remove:
            await self._run(
                ["ip", "-batch", "-"],
                "".join(f"addr del {ip}/32 dev {self.interface}\n" for ip in remove),
            )
            self.addresses.difference_update(remove)
        done.lines, done.script = len(script), script
        done.addresses_added, done.addresses_removed = add, remove
        done.seconds = time.perf_counter() - started
        done.kernel_seconds = done.seconds - done.compute_seconds
        return done

    async def remove(self) -> None:
        """Delete the table and the interface (``--cleanup``)."""
        with contextlib.suppress(NftError):
            await self._run(["nft", "delete", "table", FAMILY, TABLE])
        with contextlib.suppress(NftError):
            await self._run(["ip", "link", "del", self.interface])
        self.current, self.addresses = None, None
        self._interface_up = False

    # ------------------------------------------------------------ desired

    def desired(self) -> Ruleset:
        services = self.cache.list(Service)
        fragments: dict[str, Fragment] = {}
        keep: dict[str, tuple[tuple[str, str], Fragment]] = {}
        for service in services:
            ep = self.cache.get(Endpoints, service.namespace, service.name)
            version = (
                service.metadata.resource_version,
                ep.metadata.resource_version if ep else "",
            )
            hit = self._fragments.get(service.key)
            if hit is None or hit[0] != version:
                hit = (version, service_fragment(service, ep))
            keep[service.key] = hit
            fragments[service.key] = hit[1]
        self._fragments = keep
        return compute_ruleset(
            services, {}, node_addresses=self.node_addresses, fragments=fragments
        )

    def _note(self, event: CacheEvent) -> None:
        if event.resource in ("services", "endpoints") and self._dirty is not None:
            obj = event.obj
            if obj is not None:
                self._dirty.add(f"{obj.namespace}/{obj.name}")

    def _known(self) -> bool:
        """Whether the kernel's table is known rule by rule (else: a full pass)."""
        return self.current is not None and self._dirty is not None and self._complete

    async def reconcile_once(self) -> ProgramPass:
        await self.cache.sync()
        return await self._pass()

    async def _pass(self) -> ProgramPass:
        started = time.perf_counter()
        if self._known():
            return await self._incremental_pass(started)
        self._dirty = set()
        desired = self.desired()
        computed = time.perf_counter() - started
        try:
            done = await self.program(desired)
        except NftError:
            self._dirty = None
            raise
        services = self.cache.list(Service)
        owners = owners_of_ips(services)
        self._complete = True
        self._ip_of = {f"{x.namespace}/{x.name}": x.spec.cluster_ip for x in services}
        self._owned = {
            f"{x.namespace}/{x.name}" for x in services if owners.get(x.spec.cluster_ip) == x.key
        }
        self._in_kernel = {}
        for service in services:
            hit = self._fragments.get(service.key)
            owner = owners.get(service.spec.cluster_ip) == service.key
            frag = hit[1] if hit is not None and owner else Fragment()
            self._in_kernel[f"{service.namespace}/{service.name}"] = frag
        done.compute_seconds += computed
        done.seconds += computed
        return self._finish(done)

    async def _incremental_pass(self, started: float) -> ProgramPass:
        """Only the Services that changed: their old fragments against their new."""
        assert self._dirty is not None and self.current is not None
        dirty, self._dirty = self._dirty, set()
        services = {}
        for key in dirty:
            found = self.cache.get(Service, *key.split("/", 1))
            if found is not None:
                services[key] = found
        affected = set(dirty)
        ips_moved = any(
            self._ip_of.get(key) != (services[key].spec.cluster_ip if key in services else None)
            for key in dirty
        )
        if ips_moved:
            # who serves which cluster IP may have changed: recompute it, and a
            # Service that gained or lost its IP to another counts as changed
            every = self.cache.list(Service)
            owners = owners_of_ips(every)
            self._ip_of = {f"{x.namespace}/{x.name}": x.spec.cluster_ip for x in every}
            self._owned = {
                f"{x.namespace}/{x.name}" for x in every if owners.get(x.spec.cluster_ip) == x.key
            }
            for x in every:
                services.setdefault(f"{x.namespace}/{x.name}", x)
            owned = self._owned
            affected.update(k for k in owned if not self._in_kernel.get(k, Fragment()).address)
            affected.update(k for k, f in self._in_kernel.items() if f.address and k not in owned)
        owned = self._owned
        static = static_ruleset(self.node_addresses)
        have = Ruleset(base_chains=dict(static.base_chains), maps=dict(static.maps))
        want = Ruleset(base_chains=dict(static.base_chains), maps=dict(static.maps))
        have.elements = {name: {} for name in static.maps}
        want.elements = {name: {} for name in static.maps}
        new_fragments: dict[str, Fragment] = {}
        for key in affected:
            service = services.get(key)
            if service is None or key not in owned:
                new = Fragment()
            else:
                ep = self.cache.get(Endpoints, service.namespace, service.name)
                new = service_fragment(service, ep)
                version = (
                    service.metadata.resource_version,
                    ep.metadata.resource_version if ep else "",
                )
                self._fragments[service.key] = (version, new)
            new_fragments[key] = new
            _add_fragment(have, self._in_kernel.get(key, Fragment()))
            _add_fragment(want, new)
        addresses = set(self.addresses or ())
        for key in new_fragments:
            old = self._in_kernel.get(key, Fragment())
            if old.address:
                addresses.discard(old.address)
        for new in new_fragments.values():
            if new.address:
                addresses.add(new.address)
        want.addresses = frozenset(addresses)
        computed = time.perf_counter() - started
        try:
            done = await self.program(want, script=plan_transaction(have, want))
        except NftError:
            self._dirty = None  # read again: the next pass is a full one
            raise
        # what the kernel holds now
        current = self.current
        assert current is not None
        for key in new_fragments:
            _remove_fragment(current, self._in_kernel.get(key, Fragment()))
        for key, new in new_fragments.items():
            _put_fragment(current, new)
            self._in_kernel[key] = new
        for key in affected:
            if key not in services and key in self._in_kernel:
                del self._in_kernel[key]
                self._fragments.pop(object_key("services", *key.split("/", 1)), None)
        done.compute_seconds += computed
        done.seconds += computed
        return self._finish(done)

    def _finish(self, done: ProgramPass) -> ProgramPass:
        self.last_pass = done
        self.passes += 1
        if done.lines or done.addresses_added or done.addresses_removed:
            log.debug("nftables: %d lines in %.1f ms", done.lines, done.seconds * 1000)
            for hook in self.on_programmed:
                hook(done)  # type: ignore[operator]
        return done

    async def reconcile(self, key: str) -> Result | None:
        await self._pass()
        return None

    # ------------------------------------------------------------ running

    def controller(self) -> Controller:
        def all_(event: CacheEvent) -> list[str]:
            return [KEY]

        return Controller(
            "nftables",
            self.reconcile,
            self.cache,
            watches={"services": all_, "endpoints": all_},
            initial_keys=[KEY],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.read_kernel()
        log.info(
            "service proxy: nftables (table %s %s, interface %s)", FAMILY, TABLE, self.interface
        )
        tasks = [asyncio.create_task(self.controller().run(stop))]
        if self.own_cache:
            tasks.append(asyncio.create_task(self.cache.run(stop)))
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.cleanup:
                await self.remove()
                log.info("nftables: table %s and interface %s removed", TABLE, self.interface)
            self.close()

    def close(self) -> None:
        """Free the in-process nft context (its thread)."""
        if self._libnft is not None:
            self._libnft.close()
            self._libnft = None
            self._libnft_tried = False


def _add_fragment(ruleset: Ruleset, fragment: Fragment) -> None:
    for name, rules in fragment.chains:
        ruleset.chains[name] = rules
    for name, decl in fragment.sets:
        ruleset.sets[name] = decl
    for map_name, key, verdict in fragment.elements:
        elements = ruleset.elements.setdefault(map_name, {})
        assert elements is not None
        elements[key] = verdict


def _remove_fragment(ruleset: Ruleset, fragment: Fragment) -> None:
    for name, _ in fragment.chains:
        ruleset.chains.pop(name, None)
    for name, _ in fragment.sets:
        ruleset.sets.pop(name, None)
    for map_name, key, _ in fragment.elements:
        elements = ruleset.elements.get(map_name)
        if elements is not None:
            elements.pop(key, None)


def _put_fragment(ruleset: Ruleset, fragment: Fragment) -> None:
    _add_fragment(ruleset, fragment)
