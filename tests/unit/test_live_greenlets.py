"""live_greenlets (``/healthz?greenlets=1``): counts the greenlets alive, not the dead ones
still referenced."""

from __future__ import annotations

import gevent
from console_common.runtime.service import live_greenlets


def test_counts_live_greenlets_only() -> None:
    gevent.sleep(0)  # the hub (a greenlet too) exists from here on
    before = live_greenlets()
    sleepers = [gevent.spawn(gevent.sleep, 10) for _ in range(5)]
    done = gevent.spawn(lambda: None)
    gevent.sleep(0)  # all started; one already finished (and still referenced here)
    assert done.dead
    assert live_greenlets() == before + 5
    gevent.killall(sleepers)
    assert live_greenlets() == before
