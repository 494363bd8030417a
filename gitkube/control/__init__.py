"""The control kit: what every gitkube control loop is built from.

After client-go (shared informer, indexer, workqueue) and controller-runtime
(the Reconcile contract). It imports only ``gitkube.api``, ``gitkube.store``
and ``gitkube.errors``.

Cache (``gitkube.control.cache``)
    ``Cache(store, raw_prefixes=(HEARTBEAT_PREFIX,))``: one list, then one
    watch of ``/gitkube/``; exact at ``cache.revision``; one per process,
    shared by every loop. ``await cache.run(stop)`` keeps it current
    (re-lists after ``Compacted``, resumes after outages).

    - ``get(cls, namespace, name)``, ``get_key(store_key)``,
      ``list(cls, namespace=None)``
    - ``select(cls, namespace, {"app": "web"})`` (label index),
      ``pods_on(node)`` (``""``: unbound pods), ``owned_by(uid, cls=None)``,
      ``index(name, value)``, ``indices()``, ``index_values(name)`` and
      ``add_index(name, func)`` (``func(resource, obj) -> values``)
    - ``raw(prefix)``: raw keys, e.g. node heartbeats, as ``KeyValue``
    - ``add_handler(fn, replay=True)``: ``fn(CacheEvent)`` on every change
    - ``await sync()``: catch up with the store's current revision;
      ``await wait_for_revision(rev)``: read your own writes (both raise
      ``StoreUnavailable`` when the watch cannot get there in time)
    - objects are shared: never change them in place, ``obj.copy()`` first.

Queue (``gitkube.control.queue``)
    ``WorkQueue(base_delay, max_delay, rate, burst)``: keys; a key added
    twice while waiting runs once, never in two workers at once;
    ``add``, ``add_after(key, s)``, ``add_rate_limited(key)`` (per-key
    exponential back-off and an overall token bucket), ``forget(key)``,
    ``await get()`` / ``done(key)``, ``shutdown()``. ``Backoff`` too.

Contract (``gitkube.control.contract``)
    ``reconcile(key) -> Result(requeue_after=None | seconds) | None``;
    raise ``Retry`` (back-off), ``RetryAfter(msg, delay=s)`` or ``Terminal``
    (not again until an event maps to the key); any other error backs off.
    ``Controller(name, reconcile, cache, watches={"pods": fn, ...},
    workers=1, initial_keys=(), resync_seconds=None)`` and
    ``await controller.run(stop)``. Keys: ``ref(namespace, name)`` is
    ``"namespace/name"`` (``"name"`` when cluster-scoped), ``split_ref``;
    key functions ``own_key`` and ``constant_key("all")``.

Applier (``gitkube.control.applier``)
    ``Applier(objects, fence=election.fence, batch=64)``;
    ``await applier.apply([create(obj), update(new, old), delete(obj)],
    atomic=False) -> Applied(revision, applied, conflicts, gone)``: guarded
    batches within the store's 128-operation limit; the fence (a compare on
    the leader key) is on EVERY transaction, and a failed fence raises
    ``LeadershipLost`` with nothing of that batch written.
    ``await replan(attempt, what=..., attempts=3, cache=cache)``: plan and
    apply again on ``Conflict``, then ``Retry``.

Example: a controller that labels every pod of a Service::

    cache = Cache(objects.store)          # one per process
    applier = Applier(objects, fence=election.fence)

    async def reconcile(key: str) -> Result | None:
        namespace, name = split_ref(key)
        service = cache.get(Service, namespace, name)
        if service is None:
            return None                   # gone: nothing to do
        writes = []
        for pod in cache.select(Pod, namespace, service.spec.selector):
            if pod.metadata.labels.get("exposed") != "yes":
                new = pod.copy()
                new.metadata.labels["exposed"] = "yes"
                writes.append(update(new, pod))
        done = await applier.apply(writes)
        await cache.wait_for_revision(done.revision)   # read our own writes
        if done.conflicts:
            raise Retry(f"{len(done.conflicts)} pods changed meanwhile")
        return Result(requeue_after=None)

    def services_of_pod(event: CacheEvent) -> list[str]:
        pod = event.obj
        return [ref(s.namespace, s.name) for s in cache.list(Service, pod.namespace)
                if s.spec.selector and selector_matches(s.spec.selector, pod.metadata.labels)]

    controller = Controller("labeler", reconcile, cache,
                            watches={"services": own_key, "pods": services_of_pod})
    await asyncio.gather(cache.run(stop), controller.run(stop))
"""

from gitkube.control.applier import (
    MAX_TXN_OPS,
    Applied,
    Applier,
    Encoded,
    Fence,
    Write,
    create,
    delete,
    replan,
    update,
    update_status,
)
from gitkube.control.cache import (
    LABEL,
    NAMESPACE,
    NODE,
    OWNER,
    Cache,
    CacheEvent,
)
from gitkube.control.contract import (
    Controller,
    ControllerStats,
    KeyFunc,
    Result,
    Retry,
    RetryAfter,
    Terminal,
    constant_key,
    own_key,
    ref,
    split_ref,
)
from gitkube.control.queue import Backoff, TokenBucket, WorkQueue

__all__ = [
    "LABEL",
    "MAX_TXN_OPS",
    "NAMESPACE",
    "NODE",
    "OWNER",
    "Applied",
    "Applier",
    "Backoff",
    "Cache",
    "CacheEvent",
    "Controller",
    "ControllerStats",
    "Encoded",
    "Fence",
    "KeyFunc",
    "Result",
    "Retry",
    "RetryAfter",
    "Terminal",
    "TokenBucket",
    "WorkQueue",
    "Write",
    "constant_key",
    "create",
    "delete",
    "own_key",
    "ref",
    "replan",
    "split_ref",
    "update",
    "update_status",
]
