"""QEMU's monitor protocol (QMP) over its unix socket, just enough for one-time passwords.

    set_vnc_password("/run/qemu/vm-1.qmp", "Xk3p9QzA", timeout=2.0)

QEMU is started with ``-qmp unix:PATH,server=on,wait=off`` and ``-vnc ...,password=on``;
each call opens the socket, reads the greeting, enters command mode and runs
``set_password`` (protocol vnc). Bounded in time; QmpError says why, never the password.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import gevent

MAX_LINE = 64 * 1024


class QmpError(Exception):
    """QMP could not set the password; the message is safe to log."""


def set_vnc_password(path: str, password: str, timeout: float = 2.0) -> None:
    try:
        with gevent.Timeout(timeout, TimeoutError), \
                socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(path)
            reader = sock.makefile("rb")
            _reply(reader, greeting=True)
            _execute(sock, reader, {"execute": "qmp_capabilities"})
            _execute(sock, reader, {"execute": "set_password",
                                    "arguments": {"protocol": "vnc", "password": password}})
    except TimeoutError:
        raise QmpError(f"QMP {path}: no answer in {timeout:g}s") from None
    except OSError as exc:
        raise QmpError(f"QMP {path}: {exc.strerror or exc}") from exc


def _execute(sock: socket.socket, reader: Any, command: dict[str, Any]) -> None:
    sock.sendall(json.dumps(command).encode() + b"\n")
    reply = _reply(reader)
    if "error" in reply:
        error = reply["error"]
        raise QmpError(f"QMP {command['execute']} failed: "
                       f"{error.get('desc', error) if isinstance(error, dict) else error}")


def _reply(reader: Any, greeting: bool = False) -> dict[str, Any]:
    """The next answer (skipping asynchronous events)."""
    while True:
        line = reader.readline(MAX_LINE)
        if not line:
            raise QmpError("QMP closed the connection")
        try:
            message = json.loads(line)
        except ValueError as exc:
            raise QmpError(f"QMP sent garbage: {exc}") from exc
        if not isinstance(message, dict) or "event" in message:
            continue
        if greeting and "QMP" in message:
            return message
        if "return" in message or "error" in message:
            return message
