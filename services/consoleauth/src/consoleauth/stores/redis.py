"""Redis token store, shared by several consoleauth replicas (a cluster).

Each token is one key ``console:token:<sha256>`` holding JSON, with Redis expiring it at
the token's expiry; ``console:instance:<uuid>`` is a set of hashes for revocation.
"""

from __future__ import annotations

import json
import math

from consoleauth.stores.base import StoreUnavailable, TokenRecord

try:
    import redis
except ImportError:  # pragma: no cover - optional dependency
    redis = None

_T, _I = "console:token:", "console:instance:"


class RedisStore:
    name = "redis"

    def __init__(self, url: str, timeout: float = 1.0) -> None:
        if redis is None:
            raise StoreUnavailable("token_store=redis needs the 'redis' package (pip install redis)")
        self.url = url
        self._r = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)

    def _do(self, fn, *args):
        try:
            return fn(*args)
        except redis.RedisError as exc:
            raise StoreUnavailable(f"redis store: {exc}") from exc

    def add(self, token_hash: str, record: TokenRecord) -> None:
        import time

        ttl_ms = max(1, math.ceil((record.expires_at - time.time()) * 1000))
        pipe = self._r.pipeline()
        pipe.set(_T + token_hash, json.dumps(record.to_dict()), px=ttl_ms)
        pipe.sadd(_I + record.instance_uuid, token_hash)
        pipe.pexpire(_I + record.instance_uuid, ttl_ms, gt=True)
        pipe.pexpire(_I + record.instance_uuid, ttl_ms, nx=True)
        self._do(pipe.execute)

    def get(self, token_hash: str, now: float) -> TokenRecord | None:
        raw = self._do(self._r.get, _T + token_hash)
        if raw is None:
            return None
        record = TokenRecord(**json.loads(raw))
        return record if record.live(now) else None

    def delete(self, token_hash: str) -> None:
        self._do(self._r.delete, _T + token_hash)

    def delete_instance(self, instance_uuid: str) -> int:
        hashes = self._do(self._r.smembers, _I + instance_uuid)
        if not hashes:
            return 0
        pipe = self._r.pipeline()
        pipe.delete(*[_T + h.decode() for h in hashes])
        pipe.delete(_I + instance_uuid)
        deleted, _ = self._do(pipe.execute)
        return int(deleted)

    def purge(self, now: float) -> int:
        return 0  # Redis expires keys itself

    def count(self) -> int:
        n = 0
        for _ in self._r.scan_iter(match=_T + "*", count=1000):
            n += 1
        return n

    def close(self) -> None:
        self._r.close()
