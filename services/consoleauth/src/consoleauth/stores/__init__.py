"""Token stores: sqlite (default, survives restart), memory, redis (shared by replicas)."""

from __future__ import annotations

import os

from consoleauth.stores.base import Pending, StoreUnavailable, TokenRecord, TokenStore


def open_store(kind: str, state_dir: str, redis_url: str, redis_timeout: float = 0.5) -> TokenStore:
    if kind == "memory":
        from consoleauth.stores.memory import MemoryStore

        return MemoryStore()
    if kind == "redis":
        from consoleauth.stores.redis import RedisStore

        return RedisStore(redis_url, redis_timeout)
    from consoleauth.stores.sqlite import SqliteStore

    return SqliteStore(os.path.join(state_dir, "consoleauth.sqlite3"))


__all__ = ["Pending", "StoreUnavailable", "TokenRecord", "TokenStore", "open_store"]
