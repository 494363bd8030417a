"""The shared cache: one list, then one watch of ``/gitkube/``, after client-go's
shared informer and indexer.

The cache is exact at ``cache.revision``: it holds what the store held at
that revision, for every API object and for the raw keys under
``raw_prefixes`` (node heartbeats by default). Every loop of a process reads
the same cache; none lists the store on each pass.

- ``run(stop)`` keeps it current: list, then watch from the list's revision;
  a compacted watch re-lists (and reports the differences as events), a
  store outage backs off and resumes the watch where it stopped.
- ``sync()`` brings it to the store's current revision: it waits for the
  running watch, or (no watch running, as in a test) reads the missing
  events once. ``wait_for_revision(rev)`` waits for a revision the caller
  wrote, so a loop reads its own writes.
- handlers (``add_handler``) see every change, as a ``CacheEvent``; they
  should only map it to keys (``WorkQueue.add``) and return.

Objects handed out are shared with every reader: never change them in
place; ``obj.copy()`` first.

Every write gitkube makes is under ``/gitkube/``, so every store revision is
seen by the watch; in an etcd shared with other programs ``sync`` still
works, after a short wait, by re-listing.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from gitkube.api.keys import HEARTBEAT_PREFIX, PREFIX, SYSTEM
from gitkube.api.objects import RESOURCES, WORKLOAD_KINDS, ApiObject, Pod
from gitkube.control.queue import Backoff
from gitkube.errors import Compacted, GitkubeError, StoreUnavailable
from gitkube.store.base import KeyValue, Store, WatchEvent
from gitkube.store.objects import decode

log = logging.getLogger(__name__)

O = TypeVar("O", bound=ApiObject)

#: every resource the cache decodes, by name
KNOWN_RESOURCES: dict[str, type[ApiObject]] = {
    **RESOURCES,
    **{cls.RESOURCE: cls for cls in WORKLOAD_KINDS.values()},
}

#: built-in indices (see ``Cache.index``)
NAMESPACE = "namespace"  # "<resource>/<namespace>"
LABEL = "label"  # "<resource>/<namespace>/<label>=<value>"
NODE = "node"  # pods by spec.nodeName ("" for pods not bound yet)
OWNER = "owner"  # objects by the uid of each owner reference

IndexFunc = Callable[[str, ApiObject], Iterable[str]]


@dataclass(frozen=True)
class CacheEvent:
    """One change of the cache. For an object: ``resource`` and ``old``/``new``
    (None when absent before/after). For a raw key: ``resource`` is "" and
    ``kv`` is the key's new value (None when deleted)."""

    type: Literal["PUT", "DELETE"]
    key: str
    resource: str
    revision: int
    old: ApiObject | None = None
    new: ApiObject | None = None
    kv: KeyValue | None = None

    @property
    def obj(self) -> ApiObject | None:
        """The object after the change, or the last known one for a delete."""
        return self.new if self.new is not None else self.old


Handler = Callable[[CacheEvent], None]


def _namespace_index(resource: str, obj: ApiObject) -> Iterable[str]:
    return (f"{resource}/{obj.namespace}",)


def _label_index(resource: str, obj: ApiObject) -> Iterable[str]:
    ns = obj.namespace
    return [f"{resource}/{ns}/{k}={v}" for k, v in obj.metadata.labels.items()]


def _node_index(resource: str, obj: ApiObject) -> Iterable[str]:
    if isinstance(obj, Pod):
        return (obj.spec.node_name,)
    return ()


def _owner_index(resource: str, obj: ApiObject) -> Iterable[str]:
    return [ref.uid for ref in obj.metadata.owner_references if ref.uid]


class Cache:
    """API objects and raw keys at one store revision; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        raw_prefixes: Iterable[str] = (HEARTBEAT_PREFIX,),
        lag_timeout: float = 2.0,
    ) -> None:
        self.store = store
        self.raw_prefixes = tuple(raw_prefixes)
        for prefix in self.raw_prefixes:
            if not prefix.startswith(PREFIX):
                raise ValueError(f"raw prefix {prefix!r} is not under {PREFIX}")
        #: how long ``sync`` waits for the watch before re-listing instead
        self.lag_timeout = lag_timeout
        #: the store revision the cache is exact at (0: not listed yet)
        self.revision = 0
        self.synced = asyncio.Event()
        #: how many times the cache listed the store (1 + re-lists)
        self.lists = 0
        self.events = 0
        self._objects: dict[str, ApiObject] = {}
        self._resource_of: dict[str, str] = {}
        self._by_resource: dict[str, dict[str, ApiObject]] = {r: {} for r in KNOWN_RESOURCES}
        self._raw: dict[str, KeyValue] = {}
        self._index_funcs: dict[str, IndexFunc] = {
            NAMESPACE: _namespace_index,
            LABEL: _label_index,
            NODE: _node_index,
            OWNER: _owner_index,
        }
        self._indices: dict[str, dict[str, set[str]]] = {n: {} for n in self._index_funcs}
        self._indexed: dict[str, dict[str, tuple[str, ...]]] = {n: {} for n in self._index_funcs}
        self._handlers: list[Handler] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._running = False
        self._relist = asyncio.Event()
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------ reading

    def get(self, cls: type[O], namespace: str, name: str) -> O | None:
        from gitkube.api.keys import object_key

        key = object_key(cls.RESOURCE, namespace, name, namespaced=cls.NAMESPACED)
        return cast("O | None", self._objects.get(key))

    def get_key(self, key: str) -> ApiObject | None:
        """The object stored under ``key`` (a store key)."""
        return self._objects.get(key)

    def list(self, cls: type[O], namespace: str | None = None) -> builtins.list[O]:
        """Every object of ``cls`` (in ``namespace`` if given), in key order."""
        if namespace is None or not cls.NAMESPACED:
            found = self._by_resource.get(cls.RESOURCE, {})
            return cast("builtins.list[O]", [found[k] for k in sorted(found)])
        return cast("builtins.list[O]", self.index(NAMESPACE, f"{cls.RESOURCE}/{namespace}"))

    def index(self, name: str, value: str) -> builtins.list[ApiObject]:
        """Objects whose index ``name`` has ``value``, in key order."""
        keys = self._indices[name].get(value, ())
        return [self._objects[k] for k in sorted(keys)]

    def select(self, cls: type[O], namespace: str, selector: Mapping[str, str]) -> builtins.list[O]:
        """Objects of ``cls`` in ``namespace`` whose labels match ``selector``
        (equality; an empty selector selects every object)."""
        if not selector:
            return self.list(cls, namespace)
        sets = [
            self._indices[LABEL].get(f"{cls.RESOURCE}/{namespace}/{k}={v}", set())
            for k, v in selector.items()
        ]
        keys = set.intersection(*sorted(sets, key=len))
        return cast("builtins.list[O]", [self._objects[k] for k in sorted(keys)])

    def pods_on(self, node: str) -> builtins.list[Pod]:
        """Pods bound to ``node`` ("" for pods not bound yet)."""
        return cast("builtins.list[Pod]", self.index(NODE, node))

    def owned_by(self, uid: str, cls: type[O] | None = None) -> builtins.list[O]:
        """Objects with an owner reference to ``uid`` (of ``cls`` if given)."""
        found = self.index(OWNER, uid)
        if cls is not None:
            found = [o for o in found if isinstance(o, cls)]
        return cast("builtins.list[O]", found)

    def unknown_objects(self) -> dict[str, KeyValue]:
        """Object keys of resources gitkube stores but does not run, by key."""
        return {k: kv for k, kv in self._raw.items() if not k.startswith(SYSTEM)}

    def raw(self, prefix: str) -> dict[str, KeyValue]:
        """Raw keys under ``prefix`` (one of ``raw_prefixes``), by key."""
        return {k: kv for k, kv in self._raw.items() if k.startswith(prefix)}

    def indices(self) -> builtins.list[str]:
        """The names of the indices the cache keeps."""
        return builtins.list(self._index_funcs)

    def index_values(self, name: str) -> builtins.list[str]:
        """Every value index ``name`` has objects for."""
        return sorted(self._indices[name])

    def add_index(self, name: str, func: IndexFunc) -> None:
        """A custom index: ``func(resource, obj)`` gives its values for ``obj``."""
        if name in self._index_funcs:
            raise ValueError(f"index {name!r} exists")
        self._index_funcs[name] = func
        self._indices[name] = {}
        self._indexed[name] = {}
        for key, obj in self._objects.items():
            self._index_one(name, key, self._resource_of[key], obj)

    def __len__(self) -> int:
        return len(self._objects)

    # ------------------------------------------------------------ handlers

    def add_handler(self, handler: Handler, *, replay: bool = True) -> Callable[[], None]:
        """Call ``handler`` on every change; with ``replay``, first with a PUT of
        every object and raw key held now. Returns a function that removes it."""
        self._handlers.append(handler)
        if replay:
            for event in self.snapshot_events():
                handler(event)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._handlers.remove(handler)

        return remove

    def snapshot_events(self) -> builtins.list[CacheEvent]:
        """A PUT event for everything the cache holds (what a resync replays)."""
        events = [
            CacheEvent("PUT", key, self._resource_of[key], self.revision, None, obj)
            for key, obj in self._objects.items()
        ]
        events.extend(
            CacheEvent("PUT", key, "", self.revision, kv=kv) for key, kv in self._raw.items()
        )
        return events

    # ------------------------------------------------------------ keeping current

    @property
    def running(self) -> bool:
        return self._running

    async def run(self, stop: asyncio.Event) -> None:
        """List, then follow the watch until ``stop``; survives outages and compaction."""
        if self._running:
            raise RuntimeError("this cache is already running")
        self._running = True
        backoff = Backoff(base=0.2, cap=5.0)
        relist = not self.revision
        try:
            while not stop.is_set():
                try:
                    if relist:
                        await self._list()
                        relist = False
                    backoff.reset()
                    await self._follow(stop)
                except Compacted as exc:
                    log.info("cache: %s; listing again", exc)
                    relist = True
                except GitkubeError as exc:
                    delay = backoff.next()
                    log.warning("cache: watch interrupted (%s); again in %.1fs", exc, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
        finally:
            self._running = False

    async def _follow(self, stop: asyncio.Event) -> None:
        """Apply watch events until ``stop`` or a re-list is asked for."""
        events = self.store.watch(PREFIX, start_revision=self.revision + 1)
        self._relist.clear()
        pump = asyncio.ensure_future(self._pump(events))
        stopping = asyncio.ensure_future(stop.wait())
        relist = asyncio.ensure_future(self._relist.wait())
        try:
            await asyncio.wait({pump, stopping, relist}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # raises what ended the watch
            elif relist.done() and not stop.is_set():
                pump.cancel()
                await asyncio.gather(pump, return_exceptions=True)
                await self._list()
        finally:
            for task in (pump, stopping, relist):
                task.cancel()
            await asyncio.gather(pump, stopping, relist, return_exceptions=True)
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]

    async def _pump(self, events: Any) -> None:
        async for event in events:
            self._apply(event)
        raise StoreUnavailable("the store ended the watch")

    async def sync(self) -> int:
        """Bring the cache to the store's current revision; returns it."""
        target = await self.store.revision()
        if self._running:
            await self.synced.wait()
            try:
                await self.wait_for_revision(target, timeout=self.lag_timeout)
            except StoreUnavailable:
                # revisions outside /gitkube/ (a shared etcd) never reach the watch
                self._relist.set()
                await self.wait_for_revision(target, timeout=max(self.lag_timeout, 10.0))
            return self.revision
        async with self._lock:
            if not self.revision:
                await self._list()
                return self.revision
            if self.revision >= target:
                return self.revision
            try:
                await self._catch_up(target)
            except Compacted:
                await self._list()
        return self.revision

    async def _catch_up(self, target: int) -> None:
        """Read the events up to ``target`` (every event of that revision: a store
        yields one revision's events without pausing, and this method wakes
        only when the reader pauses)."""
        events = self.store.watch(PREFIX, start_revision=self.revision + 1)
        pump = asyncio.ensure_future(self._pump(events))
        reached: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((target, reached))
        try:
            await asyncio.wait(
                {pump, reached}, timeout=self.lag_timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not reached]
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
        if reached.done():
            return
        if pump.done() and not pump.cancelled() and isinstance(pump.exception(), Compacted):
            raise cast(Compacted, pump.exception())
        # nothing up to ``target`` under /gitkube/ (a shared etcd): list instead
        await self._list()

    async def wait_for_revision(self, revision: int, *, timeout: float | None = 10.0) -> None:
        """Return once the cache is exact at ``revision`` or later; ``StoreUnavailable``
        (retryable) if not within ``timeout``. Without a running watch, reads the
        missing events."""
        if self.revision >= revision:
            return
        if not self._running:
            await self.sync()
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((revision, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout=timeout)
        except TimeoutError:
            raise StoreUnavailable(
                f"the cache is at revision {self.revision}, not at {revision} "
                f"after {timeout}s: is the store's watch down?"
            ) from None
        finally:
            self._waiters = [(r, f) for r, f in self._waiters if f is not future]

    # ------------------------------------------------------------ applying

    async def _list(self) -> None:
        kvs, revision = await self.store.range(PREFIX)
        self.lists += 1
        seen: set[str] = set()
        for kv in kvs:
            seen.add(kv.key)
            current = self._objects.get(kv.key)
            if current is not None and current.metadata.resource_version == str(kv.mod_revision):
                continue
            if kv.key in self._raw and self._raw[kv.key].mod_revision == kv.mod_revision:
                continue
            self._put(kv, revision)
        for key in [k for k in (*self._objects, *self._raw) if k not in seen]:
            self._delete(key, None, revision)
        self._advance(revision)
        self.synced.set()
        log.debug("cache: listed %d keys at revision %d", len(kvs), revision)

    def _apply(self, event: WatchEvent) -> None:
        self.events += 1
        if event.type == "PUT":
            self._put(event.kv, event.revision)
        else:
            self._delete(event.kv.key, event.prev_kv, event.revision)
        self._advance(event.revision)

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        if self._waiters:
            keep = []
            for wanted, future in self._waiters:
                if wanted <= revision:
                    if not future.done():
                        future.set_result(None)
                else:
                    keep.append((wanted, future))
            self._waiters = keep

    def _classify(self, key: str) -> str | None:
        """The resource of an object key, "" for a raw key, None for keys not kept.

        Objects of resources gitkube does not run (kinds it only stores:
        ingresses, custom resources) are kept as raw keys, so the sync finds
        them (to prune them) without listing the store."""
        if key.startswith(SYSTEM):
            return "" if any(key.startswith(p) for p in self.raw_prefixes) else None
        resource = key[len(PREFIX) :].split("/", 1)[0]
        return resource if resource in KNOWN_RESOURCES else ""

    def _put(self, kv: KeyValue, revision: int) -> None:
        resource = self._classify(kv.key)
        if resource is None:
            return
        if resource == "":
            self._raw[kv.key] = kv
            self._emit(CacheEvent("PUT", kv.key, "", revision, kv=kv))
            return
        try:
            obj = decode(KNOWN_RESOURCES[resource], kv)
        except (ValueError, TypeError, KeyError, json.JSONDecodeError) as exc:
            log.warning("cache: cannot read %s (%s); ignoring it", kv.key, exc)
            return
        old = self._objects.get(kv.key)
        self._store(kv.key, resource, obj)
        self._emit(CacheEvent("PUT", kv.key, resource, revision, old, obj))

    def _delete(self, key: str, prev: KeyValue | None, revision: int) -> None:
        if key in self._raw:
            del self._raw[key]
            self._emit(CacheEvent("DELETE", key, "", revision, kv=None))
            return
        old = self._objects.pop(key, None)
        if old is None:
            return
        resource = self._resource_of.pop(key)
        self._by_resource[resource].pop(key, None)
        for name in self._index_funcs:
            self._unindex(name, key)
        self._emit(CacheEvent("DELETE", key, resource, revision, old, None))

    def _store(self, key: str, resource: str, obj: ApiObject) -> None:
        self._objects[key] = obj
        self._resource_of[key] = resource
        self._by_resource[resource][key] = obj
        for name in self._index_funcs:
            self._index_one(name, key, resource, obj)

    def _index_one(self, name: str, key: str, resource: str, obj: ApiObject) -> None:
        values = tuple(self._index_funcs[name](resource, obj))
        if self._indexed[name].get(key) == values:
            return
        self._unindex(name, key)
        index = self._indices[name]
        for value in values:
            index.setdefault(value, set()).add(key)
        if values:
            self._indexed[name][key] = values

    def _unindex(self, name: str, key: str) -> None:
        index = self._indices[name]
        for value in self._indexed[name].pop(key, ()):
            keys = index.get(value)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del index[value]

    def _emit(self, event: CacheEvent) -> None:
        for handler in list(self._handlers):
            try:
                handler(event)
            except Exception:  # a handler's bug must not stop the cache
                log.exception("cache: event handler failed on %s", event.key)
