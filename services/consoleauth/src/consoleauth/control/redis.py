"""The control log and session book in Redis, shared by every consoleauth replica.

Keys: ``console:events:epoch`` (the log's epoch: set once, new if Redis lost it),
``console:events:seq`` (INCR), ``console:events`` (sorted set: score seq, member
``seq|json``; the last EVENTS_KEPT kept). Sessions: ``console:session:<id>`` (JSON row,
expires SESSION_TTL after its proxy's last report), ``console:sessions`` (sorted set of
ids by expiry) and, for the cluster-wide limits, the same per instance and per token id
(``console:sessions:i:<instance>``, ``console:sessions:t:<token id>``). Writes touching
several keys are Lua scripts (atomic).
"""

from __future__ import annotations

import json
import os
from typing import Any

from consoleauth.control import EVENTS_KEPT, SESSION_TTL

_EPOCH, _SEQ, _LOG = "console:events:epoch", "console:events:seq", "console:events"
_S, _SESSIONS = "console:session:", "console:sessions"
_SI, _ST = "console:sessions:i:", "console:sessions:t:"

# KEYS: seq, log, epoch. ARGV: event JSON (without seq), kept, a new epoch (used if none).
_APPEND = """
redis.call('SET', KEYS[3], ARGV[3], 'NX')
local seq = redis.call('INCR', KEYS[1])
redis.call('ZADD', KEYS[2], seq, seq .. '|' .. ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[2]) - 1)
return {redis.call('GET', KEYS[3]), seq}
"""
# KEYS: sessions index. ARGV: ttl ms, expiry, n open, then n (id, row JSON, instance,
# token id or ""), then ended ids (their index entries found from their rows).
_REPORT = """
local n = tonumber(ARGV[3])
for i = 0, n - 1 do
  local id, row, inst, tok = ARGV[4 + 4 * i], ARGV[5 + 4 * i], ARGV[6 + 4 * i], ARGV[7 + 4 * i]
  redis.call('SET', 'console:session:' .. id, row, 'PX', ARGV[1])
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  redis.call('ZADD', 'console:sessions:i:' .. inst, ARGV[2], id)
  redis.call('PEXPIRE', 'console:sessions:i:' .. inst, ARGV[1])
  if tok ~= '' then
    redis.call('ZADD', 'console:sessions:t:' .. tok, ARGV[2], id)
    redis.call('PEXPIRE', 'console:sessions:t:' .. tok, ARGV[1])
  end
end
for i = 4 + 4 * n, #ARGV do
  local raw = redis.call('GET', 'console:session:' .. ARGV[i])
  if raw then
    local row = cjson.decode(raw)
    redis.call('ZREM', 'console:sessions:i:' .. row['instance_uuid'], ARGV[i])
    if type(row['token_id']) == 'string' then
      redis.call('ZREM', 'console:sessions:t:' .. row['token_id'], ARGV[i])
    end
  end
  redis.call('DEL', 'console:session:' .. ARGV[i])
  redis.call('ZREM', KEYS[1], ARGV[i])
end
return 1
"""
# KEYS: sessions index, the instance's index, the token's index (or a dummy key).
# ARGV: now, expiry, ttl ms, id, row JSON, per token, per instance.
# -> {granted 0/1, limit hit or "", count}
_CLAIM = """
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[1])
local by_token = redis.call('ZCARD', KEYS[3]) - (redis.call('ZSCORE', KEYS[3], ARGV[4]) and 1 or 0)
local by_inst = redis.call('ZCARD', KEYS[2]) - (redis.call('ZSCORE', KEYS[2], ARGV[4]) and 1 or 0)
if tonumber(ARGV[6]) > 0 and by_token >= tonumber(ARGV[6]) then
  return {0, 'limit_token', by_token}
end
if tonumber(ARGV[7]) > 0 and by_inst >= tonumber(ARGV[7]) then
  return {0, 'limit_instance', by_inst}
end
redis.call('SET', 'console:session:' .. ARGV[4], ARGV[5], 'PX', ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[4])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[4])
-- an index lives while one of its sessions is reported (refreshed well within the TTL)
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
return {1, '', by_inst}
"""
_NO_TOKEN = "console:sessions:t:-"  # a session without a token id: counted under none


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class RedisControlLog:
    def __init__(self, store: Any, kept: int = EVENTS_KEPT) -> None:
        self._store, self._kept = store, kept

    def append(self, event: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        body = json.dumps(event, separators=(",", ":"))
        epoch, seq = self._store.command("EVAL", _APPEND, 3, _SEQ, _LOG, _EPOCH, body,
                                         self._kept, os.urandom(8).hex())
        return _text(epoch), {**event, "seq": int(seq)}

    def head(self) -> tuple[str, int]:
        epoch, seq = self._store.command("MGET", _EPOCH, _SEQ)
        if epoch is None:  # a new Redis (or one that lost its data): a new log
            self._store.command("SET", _EPOCH, os.urandom(8).hex(), "NX")
            epoch, seq = self._store.command("MGET", _EPOCH, _SEQ)
        return _text(epoch), int(seq or 0)

    def since(self, epoch: str | None, seq: int, limit: int) -> dict[str, Any]:
        current, head = self.head()
        result: dict[str, Any] = {"epoch": current, "seq": head, "events": [], "more": False,
                                  "truncated": False}
        if epoch is None:
            return result
        after = seq if epoch == current else 0
        if after >= head:
            return result
        members = self._store.command("ZRANGEBYSCORE", _LOG, f"({after}", "+inf",
                                      "LIMIT", 0, limit + 1)
        events = []
        for member in members:
            number, _, body = _text(member).partition("|")
            events.append({**json.loads(body), "seq": int(number)})
        first = events[0]["seq"] if events else head + 1
        result["truncated"] = first > after + 1
        result["events"], result["more"] = events[:limit], len(events) > limit
        return result


class RedisSessionBook:
    def __init__(self, store: Any, ttl: float = SESSION_TTL) -> None:
        self._store, self.ttl = store, ttl

    def report(self, proxy: dict[str, Any], open_: list[dict[str, Any]],
               ended: list[str], now: float) -> None:
        argv: list[Any] = [int(self.ttl * 1000), repr(now + self.ttl), len(open_)]
        for session in open_:
            argv += [session["session_id"],
                     json.dumps({**session, "proxy": proxy}, separators=(",", ":")),
                     session["instance_uuid"], session.get("token_id") or ""]
        argv += ended
        self._store.command("EVAL", _REPORT, 1, _SESSIONS, *argv)

    def claim(self, proxy: dict[str, Any], session: dict[str, Any], per_token: int,
              per_instance: int, now: float) -> tuple[bool, str | None, int]:
        token = session.get("token_id")
        granted, limit, count = self._store.command(
            "EVAL", _CLAIM, 3, _SESSIONS, _SI + session["instance_uuid"],
            _ST + token if token else _NO_TOKEN,
            repr(now), repr(now + self.ttl), int(self.ttl * 1000), session["session_id"],
            json.dumps({**session, "proxy": proxy}, separators=(",", ":")),
            per_token if token else 0, per_instance)
        return bool(granted), _text(limit) or None, int(count)

    def rows(self, now: float) -> list[dict[str, Any]]:
        self._store.command("ZREMRANGEBYSCORE", _SESSIONS, "-inf", repr(now))
        ids = self._store.command("ZRANGE", _SESSIONS, 0, -1)
        if not ids:
            return []
        raws = self._store.command("MGET", *(_S + _text(i) for i in ids))
        return [json.loads(raw) for raw in raws if raw is not None]
