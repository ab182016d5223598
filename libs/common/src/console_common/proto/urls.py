"""Access URLs handed to users, built exactly as DESIGN.md (after Nova) says (pure).

    novnc:  <novncproxy_base_url>?path=%3Ftoken%3D<T>&token=<T>
    xvpvnc: <xvpvncproxy_base_url>?token=<T>

A base URL that already has a query gets ``&`` instead of ``?``; a fragment stays last.
(Shared by the compute host and consolectl.)
"""

from __future__ import annotations

from urllib.parse import quote


def access_url(console_type: str, token: str, novncproxy_base_url: str,
               xvpvncproxy_base_url: str) -> str:
    quoted = quote(token, safe="")
    if console_type == "novnc":
        base, query = novncproxy_base_url, f"path={quote('?token=', safe='')}{quoted}&token={quoted}"
    elif console_type == "xvpvnc":
        base, query = xvpvncproxy_base_url, f"token={quoted}"
    else:
        raise ValueError(f"unknown console type {console_type!r}")
    base, hash_, fragment = base.partition("#")
    joiner = "" if base.endswith(("?", "&")) else "&" if "?" in base else "?"
    return f"{base}{joiner}{query}{hash_}{fragment}"
