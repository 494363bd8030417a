"""The cluster IP allocator: gives every Service that is not headless a
``spec.clusterIP`` from the service range, through the store.

A controller on the control kit, one key per Service (``namespace/name``)
plus ``GC_KEY``. The claims are raw keys (``SERVICE_IP_PREFIX + ip``) in the
shared cache (``Cache(..., raw_prefixes=(..., SERVICE_IP_PREFIX))``). For a
Service the reconcile plans with ``plan_cluster_ip`` (pure), then:

1. creates the claim of the IP with a compare-on-absent (and the leader's
   fence): of two masters racing for one IP, one wins, the other plans again
   with the claim in its cache and takes the next free IP;
2. writes the IP into ``spec.clusterIP`` (a compare-and-swap on the Service's
   revision, through the applier);
3. deletes the claims the Service no longer uses (guarded on their revision).

A ``clusterIP`` given in git is claimed if it is free; if another Service
holds it, the Service gets a ``ClusterIPAllocated=False`` condition naming
the holder (so ``gitkube status`` shows it Degraded) and nothing else happens
until the input changes. An IP stays with its Service across updates (the sync
keeps a live ``clusterIP`` that git leaves empty, see ``gitkube.sync.diff``);
when the Service is deleted (pruned), its claims are deleted. ``GC_KEY``
sweeps claims whose Service is gone, every ``gc_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from dataclasses import dataclass, field

from gitkube.api.keys import SERVICE_IP_PREFIX
from gitkube.api.objects import PodCondition, Service
from gitkube.control import (
    Applier,
    Cache,
    CacheEvent,
    Controller,
    Result,
    Retry,
    Terminal,
    own_key,
    ref,
    split_ref,
    update,
)
from gitkube.services.clusterip import (
    DEFAULT_SERVICE_CIDR,
    Claim,
    parse_service_cidr,
    plan_cluster_ip,
)
from gitkube.store.base import Compare, Delete, Put
from gitkube.store.objects import ObjectStore, now_iso

log = logging.getLogger(__name__)

#: the queue key of the sweep of orphaned claims
GC_KEY = "_gc"
CONDITION = "ClusterIPAllocated"


def claim_key(ip: str) -> str:
    return SERVICE_IP_PREFIX + ip


@dataclass
class AllocatorPass:
    allocated: dict[str, str] = field(default_factory=dict)  # service -> ip
    released: list[str] = field(default_factory=list)  # ips
    errors: dict[str, str] = field(default_factory=dict)  # service -> message


class ClusterIPAllocator:
    def __init__(
        self,
        objects: ObjectStore,
        *,
        cache: Cache,
        applier: Applier | None = None,
        service_cidr: str = DEFAULT_SERVICE_CIDR,
        gc_seconds: float = 60.0,
    ) -> None:
        if SERVICE_IP_PREFIX not in cache.raw_prefixes:
            raise ValueError(f"the cache must keep {SERVICE_IP_PREFIX} (raw_prefixes)")
        self.objects = objects
        self.cache = cache
        self.applier = applier if applier is not None else Applier(objects)
        self.network: ipaddress.IPv4Network = parse_service_cidr(service_cidr)
        self.gc_seconds = gc_seconds
        self.last_pass = AllocatorPass()
        self._decoded: dict[str, tuple[int, Claim]] = {}

    # ------------------------------------------------------------ claims

    def claims(self) -> dict[str, Claim]:
        """Every claim in the cache, by IP (decoded once per revision)."""
        out: dict[str, Claim] = {}
        raw = self.cache.raw(SERVICE_IP_PREFIX)
        for key, kv in raw.items():
            hit = self._decoded.get(key)
            if hit is None or hit[0] != kv.mod_revision:
                ip = key[len(SERVICE_IP_PREFIX) :]
                hit = (kv.mod_revision, Claim.from_json(ip, kv.value, revision=kv.mod_revision))
                self._decoded[key] = hit
            out[hit[1].ip] = hit[1]
        for key in [k for k in self._decoded if k not in raw]:
            del self._decoded[key]
        return out

    def _fence(self) -> list[Compare]:
        fence = self.applier.fence
        return [fence()] if fence is not None else []

    async def _txn(self, compares: list[Compare], ops: list[Put | Delete]) -> int:
        """The revision written, 0 when a compare failed (fence checked)."""
        outcome = await self.objects.store.txn([*compares, *self._fence()], ops)
        if outcome.succeeded:
            return outcome.revision
        fence = self.applier.fence
        if fence is not None:
            from gitkube.errors import LeadershipLost

            held = fence()
            kv = await self.objects.store.get(held.key)
            if kv is None or kv.mod_revision != held.mod_revision:
                raise LeadershipLost("the leader key moved: not allocating")
        return 0

    # ------------------------------------------------------------ reconcile

    async def reconcile(self, key: str) -> Result | None:
        self.last_pass = result = AllocatorPass()
        if key == GC_KEY:
            await self._collect(result)
            return Result(requeue_after=self.gc_seconds)
        await self._reconcile(key, result)
        return None

    async def reconcile_once(self) -> AllocatorPass:
        """Catch the cache up, then every Service and the sweep once (for tests)."""
        await self.cache.sync()
        total = AllocatorPass()
        for key in [*self.all_keys(), GC_KEY]:
            with contextlib.suppress(Retry, Terminal):
                await self.reconcile(key)
            total.allocated.update(self.last_pass.allocated)
            total.released += self.last_pass.released
            total.errors.update(self.last_pass.errors)
        self.last_pass = total
        return total

    def all_keys(self) -> list[str]:
        return sorted(ref(s.namespace, s.name) for s in self.cache.list(Service))

    async def _reconcile(self, key: str, result: AllocatorPass) -> None:
        namespace, name = split_ref(key)
        service = self.cache.get(Service, namespace, name)
        claims = self.claims()
        if service is None:
            mine = [c for c in claims.values() if c.service == key]
            await self._release(mine, result)
            return
        plan = plan_cluster_ip(service, claims, self.network)
        if plan.error:
            result.errors[key] = plan.error
            await self._set_condition(service, False, plan.reason, plan.error)
            raise Terminal(f"service {key}: {plan.error}")
        revision = 0
        if plan.claim:
            claim = Claim(plan.ip, namespace, name, service.metadata.uid)
            revision = await self._txn(
                [Compare(claim_key(plan.ip), 0)], [Put(claim_key(plan.ip), claim.to_json())]
            )
            if not revision:
                # another Service (or master) got it first: plan again with it known
                kv = await self.objects.store.get(claim_key(plan.ip))
                await self.cache.wait_for_revision(kv.mod_revision if kv else 0)
                raise Retry(f"clusterIP {plan.ip} was taken while allocating it for {key}")
            await self.cache.wait_for_revision(revision)
        if plan.set_ip or _has_condition(service):
            new = service.copy()
            new.spec.cluster_ip = plan.ip
            new.status.conditions = [c for c in new.status.conditions if c.type != CONDITION]
            done = await self.applier.apply([update(new, service)])
            if done.conflicts:
                raise Retry(f"service {key} changed while writing its clusterIP")
            if done.revision:
                await self.cache.wait_for_revision(done.revision)
            if plan.set_ip:
                log.info("service %s: clusterIP %s", key, plan.ip)
                result.allocated[key] = plan.ip
        elif plan.claim:
            result.allocated[key] = plan.ip
        await self._release(plan.release, result)

    async def _release(self, claims: list[Claim], result: AllocatorPass) -> None:
        for claim in claims:
            key = claim_key(claim.ip)
            revision = await self._txn([Compare(key, claim.revision)], [Delete(key)])
            if revision:
                result.released.append(claim.ip)
                log.info("clusterIP %s released (was %s)", claim.ip, claim.service)
                await self.cache.wait_for_revision(revision)

    async def _collect(self, result: AllocatorPass) -> None:
        """Delete claims whose Service is gone, or holds another IP."""
        stale = []
        for claim in self.claims().values():
            service = self.cache.get(Service, claim.namespace, claim.name)
            other_ip = service is not None and service.spec.cluster_ip not in ("", claim.ip)
            if service is None or service.spec.headless or other_ip:
                stale.append(claim)
        await self._release(stale, result)

    async def _set_condition(self, service: Service, ok: bool, reason: str, message: str) -> None:
        status = "True" if ok else "False"
        for cond in service.status.conditions:
            if cond.type == CONDITION and cond.status == status and cond.message == message:
                return
        new = service.copy()
        new.status.conditions = [c for c in new.status.conditions if c.type != CONDITION]
        new.status.conditions.append(
            PodCondition(
                type=CONDITION,
                status=status,
                reason=reason,
                message=message,
                last_transition_time=now_iso(),
            )
        )
        done = await self.applier.apply([update(new, service)])
        if done.revision:
            await self.cache.wait_for_revision(done.revision)

    # ------------------------------------------------------------ running

    def keys_of(self, event: CacheEvent) -> list[str]:
        """The Service itself; and when a Service goes or changes its IP, the
        Services waiting for an IP that was taken."""
        if event.resource != "services":
            return []
        keys = own_key(event)
        old, new = event.old, event.new
        if _ip_of(old) and _ip_of(old) != _ip_of(new):
            keys += [
                ref(s.namespace, s.name)
                for s in self.cache.list(Service)
                if any(c.type == CONDITION and c.status == "False" for c in s.status.conditions)
            ]
        return keys

    def controller(self) -> Controller:
        return Controller(
            "clusterip",
            self.reconcile,
            self.cache,
            watches={"services": self.keys_of},
            initial_keys=[GC_KEY],
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self.controller().run(stop)


def _has_condition(service: Service) -> bool:
    return any(c.type == CONDITION for c in service.status.conditions)


def _ip_of(obj: object) -> str | None:
    return obj.spec.cluster_ip if isinstance(obj, Service) else None
