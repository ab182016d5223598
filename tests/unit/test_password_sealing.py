"""Console passwords at rest: sealed with a key derived from the token, bound to the token's
hash; stores written before passwords existed are still read (sqlite gains the column,
Redis arrays without it decode by name)."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import astuple
from pathlib import Path

import pytest
from console_common.proto.bus.messages import ConnectInfo
from console_common.proto.tokens import token_hash
from consoleauth.sealing import PREFIX, seal, unseal
from consoleauth.stores.base import TokenRecord
from consoleauth.stores.redis import _decode_record, _encode_record
from consoleauth.stores.sqlite import SqliteStore

TOKEN = "a" * 20 + "-token-of-the-console-" + "b" * 20
PASSWORD = "Otp-7q2Z"


def test_seal_and_unseal() -> None:
    hashed = token_hash(TOKEN)
    sealed = seal(TOKEN, hashed, PASSWORD)
    assert sealed.startswith(PREFIX) and PASSWORD not in sealed and TOKEN not in sealed
    assert unseal(TOKEN, hashed, sealed) == PASSWORD
    assert seal(TOKEN, hashed, PASSWORD) != sealed  # a fresh nonce each time


@pytest.mark.parametrize("spoil", [
    lambda t, h, s: (t[:-1] + "c", h, s),  # another token
    lambda t, h, s: (t, token_hash("other"), s),  # moved to another record
    lambda t, h, s: (t, h, s[:-2] + ("AA" if s[-2:] != "AA" else "BB")),  # altered
    lambda t, h, s: (t, h, s[:10]),  # truncated
    lambda t, h, s: (t, h, "v0." + s[3:]),  # not our format
    lambda t, h, s: (t, h, PREFIX + "!!!"),  # not base64
])
def test_a_spoiled_seal_does_not_open(spoil) -> None:
    hashed = token_hash(TOKEN)
    assert unseal(*spoil(TOKEN, hashed, seal(TOKEN, hashed, PASSWORD))) is None


def record(password: str | None = None) -> TokenRecord:
    return TokenRecord(console_type="novnc", host="10.0.0.5", port=5901,
                       instance_uuid="vm-1", expires_at=2e9, internal_access_path=None,
                       password=password, compute_url="tcp://10.0.0.5:6095", access_url=None)


def test_the_password_is_secret_in_reprs() -> None:
    assert PASSWORD not in repr(record(PASSWORD))
    info = ConnectInfo("novnc", "h", 1, "vm", 1.0, None, PASSWORD)
    assert PASSWORD not in repr(info) and PASSWORD not in str(info)


def test_redis_reads_arrays_written_before_passwords() -> None:
    new = record("v1.sealed")
    assert _decode_record(_encode_record(new).encode()) == new
    old = [v for k, v in zip(TokenRecord.__dataclass_fields__, astuple(record()), strict=True)
           if k != "password"]
    assert _decode_record(json.dumps(old).encode()) == record()


def test_sqlite_file_of_an_older_version_gains_the_column(tmp_path: Path) -> None:
    path = tmp_path / "tokens.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, console_type TEXT NOT NULL, "
               "host TEXT NOT NULL, port INTEGER NOT NULL, instance_uuid TEXT NOT NULL, "
               "expires_at REAL NOT NULL, internal_access_path TEXT, compute_url TEXT, "
               "access_url TEXT)")
    db.execute("INSERT INTO tokens VALUES ('old', 'novnc', 'h', 5900, 'vm-0', 2e9, NULL, "
               "NULL, NULL)")
    db.commit()
    db.close()
    store = SqliteStore(str(path))
    try:
        assert store.get("old", 0).password is None
        store.add("new", record("v1.sealed"))
    finally:
        store.close()
    store = SqliteStore(str(path))
    try:
        assert store.get("new", 0) == record("v1.sealed")
    finally:
        store.close()


def test_replies_carry_the_password_only_when_there_is_one() -> None:
    from console_common.proto.bus.protocol import decode_reply, encode_result

    plain = ConnectInfo("novnc", "h", 5901, "vm", 1.0, None)
    wire = json.loads(encode_result("check_token", plain))
    assert "password" not in wire["result"]  # as before passwords: older proxies read it
    assert decode_reply(encode_result("check_token", plain), "check_token") == plain
    secret = ConnectInfo("novnc", "h", 5901, "vm", 1.0, None, PASSWORD)
    assert json.loads(encode_result("check_token", secret))["result"]["password"] == PASSWORD
    assert decode_reply(encode_result("check_token", secret), "check_token") == secret
