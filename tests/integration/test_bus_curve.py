"""The bus with ZeroMQ CURVE on: real consoleauth, a real proxy, real consolectl, keys made
by `consolectl keys generate`, bytes read off loopback by a relay in the middle.

Proven here: each role may call what it is given and gets Forbidden (exit 1) beyond it; an
unknown key gets no answer at all (exit 3 within the timeout, the error says
authentication may have been refused) and changes nothing; a proxy admits sessions and
hears revocations over CURVE; a sniffed connection shows no token in clear (the same
sniffer sees it without CURVE); a key added for rotation works without a restart and a
removed one stops; bad key options stop a service with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from console_common.net.bus import BusClient
from console_common.net.bus.curve import CurveClient

from tests.integration.test_novnc_protocol import TcpServer, echo
from tests.integration.test_xvp_protocol import OK, read_exactly
from tests.support import (VENV_BIN, ServiceProcess, free_port, remember_secret, wait_bus,
                           wait_tcp)

WAIT = 10.0


def ctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([str(VENV_BIN / "consolectl"), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)


@dataclass
class Keys:
    root: Path

    def secret(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key_secret")

    def public(self, name: str) -> str:
        return str(self.root / "keys" / f"{name}.key")

    @property
    def authorized(self) -> str:
        return str(self.root / "authorized")

    def make(self, name: str, role: str) -> None:
        out = ctl("keys", "generate", name, "--dir", str(self.root / "keys"), "--role", role)
        assert out.returncode == 0, out.stderr

    def grant(self, name: str, role: str) -> None:
        folder = self.root / "authorized" / role
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.public(name), folder / f"{name}.key")


@dataclass
class Stack:
    keys: Keys
    bus: str
    events: str
    consoleauth: ServiceProcess

    def as_(self, name: str) -> tuple[str, ...]:
        return ("--consoleauth-url", self.bus, "--consoleauth-timeout", "1",
                "--bus-secret-key-file", self.keys.secret(name),
                "--bus-server-key-file", self.keys.public("consoleauth"))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("curve")
    keys = Keys(root)
    for name, role in (("consoleauth", "server"), ("proxy", "proxy"), ("compute", "compute"),
                       ("admin", "admin"), ("rogue", "admin")):
        keys.make(name, role)
    for name, role in (("proxy", "proxy"), ("compute", "compute"), ("admin", "admin")):
        keys.grant(name, role)
    bus, events = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    ca = ServiceProcess.start("consoleauth", [
        "--consoleauth-listen", bus, "--consoleauth-events-listen", events,
        "--token-store", "memory", "--bus-secret-key-file", keys.secret("consoleauth"),
        "--bus-authorized-keys-dir", keys.authorized], root)
    with ca:
        ca.wait_for_log("service.start", curve=True, authorized_keys=3)
        yield Stack(keys, bus, events, ca)


def authorize(stack: Stack, as_: str, port: int = 5900, kind: str = "xvpvnc",
              instance: str = "vm-c") -> subprocess.CompletedProcess:
    out = ctl("authorize", "--host", "127.0.0.1", "--port", str(port), "--instance-uuid",
              instance, "--console-type", kind, "--json", *stack.as_(as_))
    if out.returncode == 0:
        remember_secret(json.loads(out.stdout)["token"])
    return out


def token_count(stack: Stack) -> int:
    out = ctl("status", "--no-compute", "--json", *stack.as_("admin"))
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    return next(r for r in rows if r.get("service") == "consoleauth")["tokens"]


def test_keys_generate_writes_a_private_secret_and_never_overwrites(tmp_path: Path) -> None:
    out = ctl("keys", "generate", "k1", "--dir", str(tmp_path / "k"), "--role", "proxy")
    assert out.returncode == 0, out.stderr
    secret = tmp_path / "k" / "k1.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "    role = proxy\n" in (tmp_path / "k" / "k1.key").read_text()
    assert "secret-key" not in (tmp_path / "k" / "k1.key").read_text()
    again = ctl("keys", "generate", "k1", "--dir", str(tmp_path / "k"))
    assert again.returncode == 2 and "not overwriting" in again.stderr


def test_roles_are_enforced(stack: Stack) -> None:
    before = token_count(stack)
    assert authorize(stack, "compute").returncode == 0
    refused = authorize(stack, "proxy")
    assert refused.returncode == 1
    assert "authorize_console is not allowed for role proxy" in refused.stderr
    listed = ctl("sessions", "--json", *stack.as_("admin"))
    assert listed.returncode == 0 and json.loads(listed.stdout) == []
    forbidden = ctl("sessions", *stack.as_("compute"))
    assert forbidden.returncode == 1 and "Forbidden" not in forbidden.stdout
    assert token_count(stack) == before + 1


def test_a_console_password_is_answered_to_the_proxy_role_only(stack: Stack,
                                                               tmp_path: Path) -> None:
    password = remember_secret("Otp-curv")
    secret_file = tmp_path / "pw"
    secret_file.write_text(password + "\n")
    out = ctl("authorize", "--host", "127.0.0.1", "--port", "5901", "--instance-uuid",
              "vm-pw", "--password-file", str(secret_file), "--json", *stack.as_("compute"))
    assert out.returncode == 0, out.stderr
    token = remember_secret(json.loads(out.stdout)["token"])
    with BusClient([stack.bus], timeout=2, curve=CurveClient.load(
            stack.keys.secret("proxy"), stack.keys.public("consoleauth"))) as proxy:
        assert proxy.check_token(token).password == password
        (item,) = proxy.call("check_tokens", tokens=[token])
        assert item["result"].password == password
    with BusClient([stack.bus], timeout=2, curve=CurveClient.load(
            stack.keys.secret("admin"), stack.keys.public("consoleauth"))) as admin:
        assert admin.check_token(token).password is None  # admin may check, not read it
        (item,) = admin.call("check_tokens", tokens=[token])
        assert item["result"].password is None


def test_an_unknown_key_gets_no_answer_and_changes_nothing(stack: Stack) -> None:
    before = token_count(stack)
    started = time.monotonic()
    out = authorize(stack, "rogue")
    elapsed = time.monotonic() - started
    assert out.returncode == 3, out.stderr
    assert "authentication may have been refused" in out.stderr
    assert elapsed < 1.0 + 2.0  # the client's timeout, plus process start-up
    plain = ctl("authorize", "--host", "h", "--port", "1", "--instance-uuid", "u",
                "--consoleauth-url", stack.bus, "--consoleauth-timeout", "1")
    assert plain.returncode == 3
    assert token_count(stack) == before
    stack.consoleauth.wait_for_log("bus.key_refused", domain="bus")


class Sniffer:
    """A TCP relay on loopback that keeps every byte each way (what a tap would see)."""

    def __init__(self, target_port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self.target_port = target_port
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                self.seen += data
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.listener.close()
        for sock in self.socks:
            sock.close()


def test_a_sniffed_connection_shows_no_token(stack: Stack, tmp_path: Path) -> None:
    bus_port = int(stack.bus.rsplit(":", 1)[1])
    tapped = Sniffer(bus_port)
    try:
        url = f"tcp://127.0.0.1:{tapped.port}"
        out = ctl("authorize", "--host", "127.0.0.1", "--port", "5900", "--instance-uuid",
                  "vm-sniff", "--json", "--consoleauth-url", url,
                  "--bus-secret-key-file", stack.keys.secret("compute"),
                  "--bus-server-key-file", stack.keys.public("consoleauth"))
        assert out.returncode == 0, out.stderr
        token = remember_secret(json.loads(out.stdout)["token"])
        check = ctl("check", token, "--consoleauth-url", url, *stack.as_("admin")[2:])
        assert check.returncode == 0, check.stderr
        assert len(tapped.seen) > 200
        assert token.encode() not in tapped.seen and b"vm-sniff" not in tapped.seen
    finally:
        tapped.close()
    # the same tap on a plain consoleauth sees the token: the check above means something
    bus = f"tcp://127.0.0.1:{free_port()}"
    with ServiceProcess.start("consoleauth", ["--consoleauth-listen", bus,
                                              "--consoleauth-events-listen",
                                              f"tcp://127.0.0.1:{free_port()}",
                                              "--token-store", "memory"], tmp_path):
        wait_bus(bus)
        plain_tap = Sniffer(int(bus.rsplit(":", 1)[1]))
        try:
            out = ctl("authorize", "--host", "127.0.0.1", "--port", "5900", "--instance-uuid",
                      "vm-sniff", "--json", "--consoleauth-url",
                      f"tcp://127.0.0.1:{plain_tap.port}")
            token = remember_secret(json.loads(out.stdout)["token"])
            assert token.encode() in plain_tap.seen
        finally:
            plain_tap.close()


def test_a_proxy_admits_and_hears_revocations_over_curve(stack: Stack, tmp_path: Path) -> None:
    target = TcpServer(echo)
    port = free_port()
    proxy = ServiceProcess.start("xvpvncproxy", [
        "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(port),
        "--xvpvncproxy-metrics-port", "0", "--consoleauth-url", stack.bus,
        "--consoleauth-events-url", stack.events,
        "--bus-secret-key-file", stack.keys.secret("proxy"),
        "--bus-server-key-file", stack.keys.public("consoleauth")], tmp_path)
    try:
        wait_tcp("127.0.0.1", port)
        proxy.wait_for_log("events.link_up", timeout=WAIT)
        out = authorize(stack, "compute", port=target.port, instance="vm-curve")
        token = json.loads(out.stdout)["token"]
        with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
            sock.sendall(f"CONNECT /console?token={token} HTTP/1.0\r\n\r\n".encode())
            assert read_exactly(sock, len(OK)) == OK
            sock.sendall(b"hello")
            assert read_exactly(sock, 5) == b"hello"
            started = time.monotonic()
            assert ctl("revoke", "vm-curve", *stack.as_("compute")).returncode == 0
            assert sock.recv(16) == b""
            assert time.monotonic() - started < 3.0
        proxy.wait_for_log("session.end", close_reason="revoked")
    finally:
        proxy.stop()
        target.stop()


def test_a_rotated_key_works_without_restart_and_a_removed_one_stops(stack: Stack) -> None:
    stack.keys.make("proxy2", "proxy")
    args = ("check", "x" * 43)  # any call: InvalidToken (exit 1) means it was answered
    assert ctl(*args, *stack.as_("proxy2")).returncode == 3  # not granted yet
    time.sleep(1.1)  # the key folder is read again at most once a second
    stack.keys.grant("proxy2", "proxy")
    answered = ctl(*args, *stack.as_("proxy2"))
    assert answered.returncode == 1 and "invalid or expired token" in answered.stderr
    os.remove(Path(stack.keys.authorized) / "proxy" / "proxy2.key")
    time.sleep(1.1)
    assert ctl(*args, *stack.as_("proxy2")).returncode == 3


def test_bad_key_options_stop_a_service_with_one_line(tmp_path: Path) -> None:
    proc = subprocess.run([str(VENV_BIN / "xvpvncproxy"), "--bus-secret-key-file",
                           str(tmp_path / "missing.key_secret"), "--bus-server-key-file",
                           str(tmp_path / "missing.key")], capture_output=True, text=True,
                          timeout=30, check=False)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "xvpvncproxy: error: option bus_secret_key_file:"), proc.stderr
    half = subprocess.run([str(VENV_BIN / "consoleauth"), "--bus-authorized-keys-dir",
                           str(tmp_path)], capture_output=True, text=True, timeout=30,
                          check=False)
    assert half.returncode == 2 and "option bus_secret_key_file: needed with " \
        "bus_authorized_keys_dir" in half.stderr
