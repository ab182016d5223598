"""What each token store declares about waiting, held to: ``lookup`` never waits on any
store (consoleauth answers token checks in its receive loop), and ``reads_wait`` says
whether get/count may (then consoleauth serves ping in a greenlet)."""

from __future__ import annotations

import time

import gevent
import pytest
from consoleauth.stores import Pending, StoreUnavailable, TokenRecord, open_store

from tests.support import free_port


def _record() -> TokenRecord:
    return TokenRecord(console_type="novnc", host="h", port=5900, instance_uuid="vm",
                       expires_at=time.time() + 60)


def _ran_meanwhile(fn) -> tuple[object, bool]:
    """fn()'s result, and whether another greenlet got to run while it did (it waited)."""
    flag = []
    gevent.spawn(flag.append, True)
    result = fn()
    return result, bool(flag)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_memory_backed_stores_answer_reads_at_once(kind: str, tmp_path) -> None:
    store = open_store(kind, str(tmp_path), "redis://unused")
    try:
        assert store.reads_wait is False
        store.add("a" * 64, _record())
        found, waited = _ran_meanwhile(lambda: store.lookup(["a" * 64, "b" * 64], time.time()))
        assert not waited
        assert isinstance(found, list) and found[0].host == "h" and found[1] is None
        count, waited = _ran_meanwhile(store.count)
        assert count == 1 and not waited
    finally:
        store.close()


def test_redis_lookup_hands_back_a_pending_at_once_even_with_redis_down() -> None:
    store = open_store("redis", "", f"redis://127.0.0.1:{free_port()}/0", 0.3)
    try:
        assert store.reads_wait is True
        started = time.monotonic()
        pending, waited = _ran_meanwhile(lambda: store.lookup(["a" * 64], time.time()))
        assert not waited and isinstance(pending, Pending) and not pending.ready()
        assert pending.wait(2)  # settled within the store's bound
        with pytest.raises(StoreUnavailable, match="cannot connect"):
            pending.get(block=False)
        assert time.monotonic() - started < 1.0
        with pytest.raises(StoreUnavailable):  # get waits, bounded too
            store.count()
    finally:
        store.close()
