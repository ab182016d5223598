"""A console password given to authorize_console is kept sealed: a dump of the sqlite file
(WAL included) or of every key of a real redis-server shows neither the password nor the
token, while check_token (no CURVE: every caller trusted) still answers the password."""

from __future__ import annotations

import subprocess
from pathlib import Path

from console_common.net.bus import BusClient

from tests.integration._consoles import consolectl, start_consoleauth
from tests.support import RedisServer, remember_secret

PASSWORD = "Otp-7q2Z"


def authorize_and_check(bus: str) -> tuple[str, str | None]:
    with BusClient([bus], timeout=5) as client:
        token = client.call("authorize_console", console_type="novnc", host="127.0.0.1",
                            port=5901, instance_uuid="vm-sealed", password=PASSWORD)["token"]
        remember_secret(token)
        info = client.check_token(token)
        plain = client.call("authorize_console", console_type="novnc", host="127.0.0.1",
                            port=5902, instance_uuid="vm-plain")["token"]
        remember_secret(plain)
        assert client.check_token(plain).password is None
    return token, info.password


def assert_absent(dump: bytes, token: str) -> None:
    for secret in (PASSWORD, token):
        assert secret.encode() not in dump
    assert b"v1." in dump  # the sealed form is there (so the dump did reach the record)


def test_sqlite_file_holds_neither_password_nor_token(tmp_path: Path) -> None:
    remember_secret(PASSWORD)
    state = tmp_path / "state"
    proc, bus = start_consoleauth(tmp_path, "--state-dir", str(state), store="sqlite")
    with proc:
        token, answered = authorize_and_check(bus)
        assert answered == PASSWORD
        dump = b"".join(p.read_bytes() for p in sorted(state.rglob("*")) if p.is_file())
    assert dump  # the store's file (and WAL) were read
    assert_absent(dump, token)


def _redis_dump(port: int) -> bytes:
    def cli(*args: str) -> bytes:
        return subprocess.run(["redis-cli", "-p", str(port), "--raw", *args],
                              capture_output=True, check=True, timeout=10).stdout

    out = []
    for key in cli("--scan").split():
        kind = cli("TYPE", key.decode()).strip().decode()
        read = {"string": ("GET",), "hash": ("HGETALL",), "list": ("LRANGE", "0", "-1"),
                "set": ("SMEMBERS",), "zset": ("ZRANGE", "0", "-1", "WITHSCORES"),
                "stream": ("XRANGE", "-", "+")}[kind]
        out += [key, cli(read[0], key.decode(), *read[1:])]
    return b"\n".join(out)


def test_redis_keys_hold_neither_password_nor_token(tmp_path: Path) -> None:
    remember_secret(PASSWORD)
    with RedisServer(tmp_path / "redis") as redis:
        proc, bus = start_consoleauth(tmp_path, "--redis-url", redis.url, store="redis")
        with proc:
            token, answered = authorize_and_check(bus)
            assert answered == PASSWORD
            dump = _redis_dump(redis.port)
    assert b"console:token:" in dump
    assert_absent(dump, token)


def test_consolectl_check_shows_that_there_is_a_password_not_which(tmp_path: Path) -> None:
    remember_secret(PASSWORD)
    proc, bus = start_consoleauth(tmp_path)
    with proc:
        secret_file = tmp_path / "pw"
        secret_file.write_text(PASSWORD + "\n")
        out = consolectl("authorize", "--host", "127.0.0.1", "--port", "5901",
                         "--instance-uuid", "vm-ctl", "--password-file", str(secret_file),
                         "--consoleauth-url", bus, "--json")
        assert out.returncode == 0, out.stderr
        token = out.stdout.split('"token": "')[1].split('"')[0]
        checked = consolectl("check", token, "--consoleauth-url", bus, "--json")
        assert checked.returncode == 0, checked.stderr
        assert '"password": "***"' in checked.stdout
        assert PASSWORD not in checked.stdout + checked.stderr
