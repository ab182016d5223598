"""consoleauth as a real process, driven by the real `consolectl` and a real BusClient."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import time
import uuid

import gevent
import pytest
import zmq
from console_common.net.bus import BusClient
from console_common.proto.bus import BadRequest, BusUnavailable, InvalidToken

from tests.integration._consoles import (
    consolectl,
    ctl_json,
    start_compute,
    start_consoleauth,
    wait_until,
)
from tests.support import free_port, remember_secret, wait_bus

UUID = "5d3c7b9e-2a41-4c1f-8f0e-0c6d9b1a7e21"


def authorize(ep: str, *extra: str) -> dict:
    return ctl_json("authorize", "--consoleauth-url", ep, "--host", "10.0.0.5", "--port", "5901",
                    "--instance-uuid", UUID, *extra)


def test_authorize_check_revoke(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        auth = authorize(ep, "--console-type", "xvpvnc",
                         "--xvpvncproxy-base-url", "http://172.24.1.1:6081/console")
        token = auth["token"]
        assert len(token) >= 32
        assert auth["access_url"] == f"http://172.24.1.1:6081/console?token={token}"
        assert auth["expires_at"] > time.time() + 500

        info = ctl_json("check", token, "--consoleauth-url", ep)
        assert info == {"console_type": "xvpvnc", "host": "10.0.0.5", "port": 5901,
                        "instance_uuid": UUID, "internal_access_path": None,
                        "expires_at": auth["expires_at"]}
        human = consolectl("--consoleauth-url", ep, "check", "-", stdin=token + "\n")
        assert human.returncode == 0 and "| host " in human.stdout and "10.0.0.5" in human.stdout

        revoked = consolectl("revoke", UUID, "--consoleauth-url", ep)
        assert revoked.returncode == 0, revoked.stderr
        assert revoked.stdout.strip() == f"Revoked 1 token of instance {UUID}"
        refused = consolectl("check", token, "--consoleauth-url", ep)
        assert refused.returncode == 1
        assert refused.stderr.strip() == "consolectl: error: invalid or expired token"
        assert refused.stdout == ""


def test_expiry_and_purge(tmp_path) -> None:
    args = ("--console-token-ttl", "1", "--state-dir", str(tmp_path / "state"))
    ca, ep = start_consoleauth(tmp_path, *args, store="sqlite")
    with ca, BusClient([ep], timeout=2) as client:
        tokens = [remember_secret(client.call(
            "authorize_console", console_type="novnc", host="h", port=5900,
            instance_uuid=UUID)["token"]) for _ in range(2)]
        first = tokens[0]
        assert client.call("check_token", token=first).host == "h"
        time.sleep(1.2)
        expired = consolectl("check", first, "--consoleauth-url", ep)
        assert expired.returncode == 1 and "invalid or expired token" in expired.stderr
        # The expired token was dropped when checked; the other waits for the purge.
        assert wait_bus(ep)["tokens"] == 1
    # A restart purges what expired meanwhile, from the sqlite file too.
    ca, ep = start_consoleauth(tmp_path, *args, store="sqlite", endpoint=ep)
    with ca:
        assert wait_bus(ep)["tokens"] == 0
        with sqlite3.connect(tmp_path / "state" / "consoleauth.sqlite3") as db:
            assert db.execute("SELECT COUNT(*) FROM tokens").fetchone() == (0,)


def test_sqlite_store_keeps_tokens_across_restart(tmp_path) -> None:
    args = ("--state-dir", str(tmp_path / "state"))
    ca, ep = start_consoleauth(tmp_path, *args, store="sqlite")
    with ca:
        token = authorize(ep)["token"]
        assert ca.stop() == 0
    ca, ep = start_consoleauth(tmp_path, *args, store="sqlite", endpoint=ep)
    with ca:
        assert ctl_json("check", token, "--consoleauth-url", ep)["port"] == 5901
        assert wait_bus(ep)["store"] == "sqlite"


def test_killed_consoleauth_fails_fast_then_recovers(tmp_path) -> None:
    args = ("--state-dir", str(tmp_path / "state"))
    ca, ep = start_consoleauth(tmp_path, *args, store="sqlite")
    client = BusClient([ep], timeout=1.0)  # one long-lived client, as a proxy holds it
    try:
        token = authorize(ep)["token"]
        assert client.call("check_token", token=token).port == 5901
        ca.kill()

        started = time.monotonic()  # baseline: start-up and imports, then a usage error
        assert consolectl("check", token, "--consoleauth-timeout", "0").returncode == 2
        startup = time.monotonic() - started
        started = time.monotonic()
        down = consolectl("check", token, "--consoleauth-url", ep, "--consoleauth-timeout", "1")
        elapsed = time.monotonic() - started
        assert down.returncode == 3
        assert down.stderr.count("\n") == 1 and "Traceback" not in down.stderr
        assert down.stderr.startswith(f"consolectl: error: consoleauth unreachable: no reply from {ep}")
        assert elapsed - startup < 1.0 + 1.0  # the timeout +1 s, besides interpreter start-up

        started = time.monotonic()
        with pytest.raises(BusUnavailable) as info:
            client.call("check_token", token=token)
        assert time.monotonic() - started < 2.0 and ep in str(info.value)

        ca, _ = start_consoleauth(tmp_path, *args, store="sqlite", endpoint=ep)
        with ca:
            assert ctl_json("check", token, "--consoleauth-url", ep)["host"] == "10.0.0.5"
            assert client.call("check_token", token=token).host == "10.0.0.5"
    finally:
        client.close()


def test_garbage_on_the_bus_port(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    host, port = "127.0.0.1", int(ep.rsplit(":", 1)[1])
    ctx = zmq.Context()
    sent = 0
    try:
        with ca:
            for i in range(300):  # raw TCP junk, not even ZMTP
                with socket.create_connection((host, port), timeout=2) as s:
                    s.sendall(os.urandom(64 + i) if i % 2 else b"GET / HTTP/1.1\r\n\r\n")
                sent += 1
            req_junk = (
                [b"not json at all"] * 150
                + [json.dumps({"v": 2, "method": "ping", "args": {}}).encode()] * 100
                + [json.dumps({"v": 1, "method": "format_disk", "args": {}}).encode()] * 100
                + [json.dumps({"v": 1, "method": "check_token", "args": {"token": 5}}).encode()] * 100
                + [json.dumps({"v": 1, "method": "check_token", "args": {}, "x": 1}).encode()] * 50
                + [b"[1, 2, 3]"] * 50
                + [b'{"v": 1, "method": "ping", "pad": "' + b"x" * 70_000 + b'"}'] * 50
            )
            expected = ({"BadRequest"},) * 150 + ({"BadRequest"},) * 100 + ({"UnknownMethod"},) * 100 \
                + ({"BadRequest"},) * 200 + ({"BadRequest"},) * 50
            req = ctx.socket(zmq.REQ)
            req.setsockopt(zmq.LINGER, 0)
            req.connect(ep)
            for body, types in zip(req_junk, expected, strict=True):
                req.send(body)
                assert req.poll(2000), "no error reply to junk"
                reply = json.loads(req.recv())
                assert reply["ok"] is False and reply["error"]["type"] in types
                sent += 1
            req.close()
            dealer = ctx.socket(zmq.DEALER)
            dealer.setsockopt(zmq.LINGER, 0)
            dealer.connect(ep)
            for i in range(99):  # multipart junk: no envelope, several bodies, empty
                dealer.send_multipart([b"a", b"b", b"c"] if i % 3 == 0 else
                                      [b"", b"x", b"y"] if i % 3 == 1 else [b"", b""])
                sent += 1
            dealer.send(b"\0" * (2 << 20))  # beyond the 1 MiB hard cap: disconnected
            sent += 1
            dealer.close()
            assert sent == 1000
            time.sleep(0.2)
            assert ca.alive()
            assert wait_bus(ep, timeout=5)["service"] == "consoleauth"
            assert authorize(ep)["token"]
    finally:
        ctx.term()


def test_failover_along_consoleauth_url(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        dead = f"tcp://127.0.0.1:{free_port()}"
        both = f"{dead},{ep}"
        for _ in range(3):  # whichever endpoint a call starts with, it gets through
            started = time.monotonic()
            token = ctl_json("authorize", "--consoleauth-url", both, "--consoleauth-timeout", "3",
                             "--host", "h", "--port", "5900", "--instance-uuid", UUID)["token"]
            assert ctl_json("check", token, "--consoleauth-url", both,
                            "--consoleauth-timeout", "3")["host"] == "h"
            assert time.monotonic() - started < 10


def test_caller_supplied_tokens(tmp_path) -> None:
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        given = remember_secret(str(uuid.uuid4()))
        assert authorize(ep, "--token", given)["token"] == given
        assert ctl_json("check", given, "--consoleauth-url", ep)["instance_uuid"] == UUID
        # too short to be a token; not hex either, so the secrets scan cannot find it by
        # chance inside some session id
        short = consolectl("authorize", "--consoleauth-url", ep, "--host", "h", "--port", "1",
                           "--instance-uuid", UUID, "--token", remember_secret("short-token"))
        assert short.returncode == 2
        assert "refused the request" in short.stderr and "32-256" in short.stderr
        with BusClient([ep], timeout=2) as client, pytest.raises(BadRequest):
            client.call("authorize_console", token=remember_secret("x" * 31),
                        console_type="novnc", host="h", port=1, instance_uuid=UUID)


def test_check_consults_the_compute_host(tmp_path) -> None:
    """validate_console_port: a token outlives neither its instance nor its port."""
    ca, ep = start_consoleauth(tmp_path)
    with ca:
        compute = start_compute(tmp_path, ep, "vm-1,vm-2")
        with compute.proc:
            with BusClient([compute.control], timeout=2) as cc:
                uuids = {i["name"]: i["uuid"] for i in cc.call("list_instances")["instances"]}
                console = cc.call("get_vnc_console", instance_id="vm-1", console_type="novnc")
            token = remember_secret(console["token"])
            with BusClient([ep], timeout=2) as client:
                assert client.call("check_token", token=token).port == compute.vnc_base
                # Same instance, wrong port: the compute host says no.
                wrong = client.call("authorize_console", console_type="novnc", host="127.0.0.1",
                                    port=compute.vnc_base + 1, instance_uuid=uuids["vm-1"],
                                    compute_url=compute.control)["token"]
                with pytest.raises(InvalidToken):
                    client.call("check_token", token=remember_secret(wrong))
                # Coalesced: checks made together go out as one check_tokens message, the
                # compute-validated ones included, each answered on its own.
                bogus = remember_secret("b" * 43)
                calls = [gevent.spawn(client.check_token, t)
                         for t in [token, remember_secret(wrong), bogus] * 5]
                gevent.joinall(calls, timeout=5)
                for i, call in enumerate(calls):
                    if i % 3 == 0:
                        assert call.value.port == compute.vnc_base
                    else:
                        assert isinstance(call.exception, InvalidToken)
            compute.proc.stop()
        # The host comes back without vm-1 (deleted while consoleauth kept the token).
        again = start_compute(tmp_path, ep, "vm-2", control=compute.control)
        with again.proc:
            refused = consolectl("check", token, "--consoleauth-url", ep)
            assert refused.returncode == 1 and "invalid or expired" in refused.stderr
            ca.wait_for_log("token.port_invalid", instance_uuid=uuids["vm-1"])


def test_sigterm_stops_cleanly(tmp_path) -> None:
    ca, _ep = start_consoleauth(tmp_path)
    assert ca.stop(signal.SIGTERM) == 0
    ca.wait_for_log("service.stop")
    wait_until(lambda: not ca.alive())
