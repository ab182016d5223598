"""The first thing a service runs (before gevent's monkey patching and every heavy
import), ``early.defer_stop_signals()``: from then on a SIGTERM/SIGINT is remembered, not acted on, until the service's
own handlers are installed (``runtime.service.Shutdown.install``), which then stop it at
once and cleanly. Without it a Ctrl-C during start-up ends a service, or one pre-fork
worker, with a KeyboardInterrupt traceback and no clean stop. Standard library only."""

from __future__ import annotations

import signal
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
stopped: list[str] = []  # the stop signals that came while starting


def _remember(sig: int, _frame: Any) -> None:
    stopped.append(signal.Signals(sig).name)


def defer_stop_signals() -> None:
    for sig in STOP_SIGNALS:
        signal.signal(sig, _remember)
