"""Pure helpers both backends share: key ranges, transaction checks, fast KeyValues.

- prefix_end: the first key after a prefix, b"" for "no end";
- check_txn: etcd's per-branch operation limit and its duplicate-key rules;
- make_kv: indistinguishable from ``KeyValue(...)`` (equality, hash, repr, frozen).
"""

from __future__ import annotations

import dataclasses

import pytest

from gitkube.errors import StoreError, TxnTooLarge
from gitkube.store._common import check_txn, make_kv, prefix_end
from gitkube.store.base import Compare, Delete, Get, KeyValue, Put


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"\xff\xff", b""), (b"", b""), (b"z", b"{")],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert prefix_end(prefix) == end


def test_each_branch_may_hold_the_limit_and_no_more() -> None:
    puts = [Put(f"/k/{i}", b"") for i in range(128)]
    compares = [Compare(f"/k/{i}", 0) for i in range(128)]
    check_txn(compares, puts, [Get(f"/k/{i}") for i in range(128)])
    for args in (
        ([*compares, Compare("/x", 0)], puts, []),
        (compares, [*puts, Put("/x", b"")], []),
        ([], [], [Get(f"/k/{i}") for i in range(129)]),
    ):
        with pytest.raises(TxnTooLarge, match="at most 128"):
            check_txn(*args)
    with pytest.raises(TxnTooLarge, match="at most 3"):
        check_txn([], puts[:4], [], max_ops=3)


def test_a_key_may_be_written_once_per_branch() -> None:
    check_txn([], [Put("/a", b"")], [Put("/a", b"")])
    check_txn([], [Put("/a", b""), Get("/a"), Delete("/b")], [])
    with pytest.raises(StoreError, match="twice"):
        check_txn([], [Put("/a", b""), Put("/a", b"")], [])
    with pytest.raises(StoreError, match="puts and deletes"):
        check_txn([], [Put("/a", b""), Delete("/a")], [])
    with pytest.raises(StoreError, match="puts and deletes"):
        check_txn([], [], [Put("/p/a", b""), Delete("/p/", prefix=True)])


def test_make_kv_is_a_keyvalue() -> None:
    fast, slow = make_kv("/k", b"v", 1, 2, 3, 4), KeyValue("/k", b"v", 1, 2, 3, 4)
    assert type(fast) is KeyValue
    assert fast == slow and hash(fast) == hash(slow) and repr(fast) == repr(slow)
    assert dataclasses.asdict(fast) == dataclasses.asdict(slow)
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.value = b"other"  # type: ignore[misc]
