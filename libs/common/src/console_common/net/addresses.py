"""Small helpers on network addresses shared by the bus client and the target connector."""

from __future__ import annotations

import socket


def ip_family(host: str) -> int | None:
    """AF_INET or AF_INET6 when ``host`` is an IP address literal, else None (a name)."""
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return family
        except OSError:
            pass
    return None
