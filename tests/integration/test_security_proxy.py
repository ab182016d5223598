"""The RFB security proxy in both proxies, against real VNC servers with authentication.

Real processes: consoleauth, a fake compute host whose instances are QEMU with VeNCrypt
X509None, QEMU with VeNCrypt X509Vnc (client certificate required, one-time password set
over QMP per get_vnc_console), QEMU with VNC authentication (one-time password over QMP)
and TigerVNC Xvnc (X509Vnc and VncAuth with a password file); novncproxy and xvpvncproxy
with the test CA (novncproxy ``auth_schemes=vencrypt,vnc``, xvpvncproxy ``vnc,vencrypt``,
and a second novncproxy trusting another CA). vncdotool (a third-party client that
is given no password) reaches each one through ``consolectl vnc-bridge`` and the right
pixels come back; the failures (no common scheme, wrong password, wrong CA) give the
documented close and log line, never the password.
"""

from __future__ import annotations

import socket
import subprocess
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from tests.integration._consoles import ctl_json, start_compute, start_consoleauth
from tests.integration._secure_servers import (XVNC_NAME, XVNC_PASSWORD, XVNC_SIZE, Pki,
                                               Servers, make_pki, start_servers)
from tests.integration.test_novnc_protocol import WsClient
from tests.integration.test_vnc_bridge import Bridge, vncdo_capture
from tests.support import VENV_BIN, ServiceProcess, free_port, remember_secret, wait_tcp

FAILED = "console security negotiation failed"


@dataclass
class Stack:
    pki: Pki
    servers: Servers
    bus: str
    compute: str
    novnc: ServiceProcess
    novnc_port: int
    xvp: ServiceProcess
    xvp_port: int
    wrong_ca: ServiceProcess
    wrong_ca_port: int
    log_dir: Path

    def console(self, instance: str, kind: str) -> dict:
        got = ctl_json("get-vnc-console", instance, kind, "--compute-url", self.compute,
                       "--consoleauth-url", self.bus)
        remember_secret(got["token"])
        return got


def _proxy_args(pki: Pki, ca: Path, schemes: str = "vencrypt,vnc") -> list[str]:
    return ["--auth-schemes", schemes, "--vencrypt-ca-certs", str(ca),
            "--vencrypt-client-cert", str(pki.client_cert),
            "--vencrypt-client-key", str(pki.client_key)]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("secproxy")
    remember_secret(XVNC_PASSWORD)
    pki = make_pki(root / "pki")
    with start_servers(root, pki) as servers:
        services: list[ServiceProcess] = []
        try:
            ca, bus = start_consoleauth(root)
            services.append(ca)
            novnc_port, xvp_port, wrong_port = free_port(), free_port(), free_port()
            s = servers
            # vm-open: the built-in console, security None only
            instances = ",".join(["vm-open", *s.instances()])
            compute = start_compute(
                root, bus, instances, "--novncproxy-base-url",
                f"http://127.0.0.1:{novnc_port}/vnc_auto.html", "--xvpvncproxy-base-url",
                f"http://127.0.0.1:{xvp_port}/console", builtin=1)
            services.append(compute.proc)
            novnc = ServiceProcess.start("novncproxy", [
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(novnc_port),
                "--consoleauth-url", bus, *_proxy_args(pki, pki.ca)], root)
            services.append(novnc)
            # VNC authentication first: Xvnc offers both (VeNCrypt-only QEMUs still work)
            xvp = ServiceProcess.start("xvpvncproxy", [
                "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(xvp_port),
                "--xvpvncproxy-metrics-port", "0", "--consoleauth-url", bus,
                *_proxy_args(pki, pki.ca, "vnc,vencrypt")], root)
            services.append(xvp)
            wrong = ServiceProcess.start("novncproxy", [  # a CA that signs nothing here
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(wrong_port),
                "--consoleauth-url", bus, *_proxy_args(pki, pki.wrong_ca)],
                root, name="novncproxy-wrong-ca")
            services.append(wrong)
            for port in (novnc_port, xvp_port, wrong_port):
                wait_tcp("127.0.0.1", port)
            yield Stack(pki, servers, bus, compute.control, novnc, novnc_port, xvp, xvp_port,
                        wrong, wrong_port, root)
        finally:
            for svc in reversed(services):
                svc.stop()


# --- the right pixels, with no password given to the client ----------------------------


def assert_qemu_screen(image: Image.Image) -> None:
    """SeaBIOS in VGA text mode (720x400): black, with light grey text."""
    assert image.size == (720, 400), image.size
    data = image.tobytes()
    pixels = [data[i:i + 3] for i in range(0, len(data), 3 * 5)]
    black = sum(p == b"\0\0\0" for p in pixels)
    grey = sum(p[0] > 150 and p[0] == p[1] == p[2] for p in pixels)
    assert black > len(pixels) * 0.8 and grey > 50, (black, grey, len(pixels))


def assert_xvnc_screen(image: Image.Image) -> None:
    """Our Xvnc's screen: the white xterm filling it."""
    assert image.size == XVNC_SIZE
    data = image.tobytes()
    white = sum(data[i:i + 3] == b"\xff\xff\xff" for i in range(0, len(data), 3 * 7))
    assert white > len(data) // (3 * 7) * 0.9, white


SCREENS = {"q-x509none": assert_qemu_screen, "q-x509vnc": assert_qemu_screen,
           "q-vnc": assert_qemu_screen, "xv": assert_xvnc_screen}


@pytest.mark.parametrize(("instance", "kind", "scheme"), [
    ("q-x509none", "xvpvnc", "VeNCrypt/X509None"),
    ("q-x509vnc", "xvpvnc", "VeNCrypt/X509Vnc"),
    ("q-vnc", "xvpvnc", "VncAuth"),
    ("xv", "xvpvnc", "VncAuth"),  # xvpvncproxy prefers vnc
    ("xv", "novnc", "VeNCrypt/X509Vnc"),  # Chromium covers novncproxy to QEMU (tests/e2e)
])
def test_vncdotool_through_the_bridge_sees_the_console(stack: Stack, tmp_path: Path,
                                                       instance: str, kind: str,
                                                       scheme: str) -> None:
    console = stack.console(instance, kind)
    with Bridge(console["access_url"], stack.log_dir) as bridge:
        image = vncdo_capture(bridge.port, tmp_path / f"{instance}.png")
    SCREENS[instance](image)
    proxy = stack.xvp if kind == "xvpvnc" else stack.novnc
    end = proxy.wait_for_log("session.end", instance_uuid=console["instance_uuid"],
                             security_scheme=scheme)
    assert end["security_type"] == "None"  # what the client was offered
    assert end["rfb_version"] == "3.8"
    if instance == "xv":
        assert end["desktop_name"] == XVNC_NAME
    assert end["bytes_down"] > 100_000


# --- failures: the documented close and log line -------------------------------------------


def ws_close(port: int, token: str) -> tuple[int, str]:
    """Open the console WebSocket; the close frame's code and reason (data skipped)."""
    ws = WsClient(port, f"/websockify?token={token}")
    try:
        assert ws.reply.status == 101
        while True:
            op, payload = ws.recv_frame()
            if op == 0x8:
                return struct.unpack("!H", payload[:2])[0], payload[2:].decode()
    finally:
        ws.close()


def test_no_common_scheme_closes_1011(stack: Stack) -> None:
    console = stack.console("vm-open", "novnc")  # offers None; auth_schemes=vencrypt,vnc
    assert ws_close(stack.novnc_port, console["token"]) == (1011, FAILED)
    end = stack.novnc.wait_for_log("session.end", instance_uuid=console["instance_uuid"],
                                   close_reason="security_failed")
    assert end["close_detail"] == ("no common security scheme: the server offers None, "
                                   "auth_schemes allows vencrypt, vnc")


def test_a_replaced_one_time_password_is_refused(stack: Stack) -> None:
    stale = stack.console("q-vnc", "novnc")
    stack.console("q-vnc", "novnc")  # sets a new one-time password on QEMU
    assert ws_close(stack.novnc_port, stale["token"]) == (1011, FAILED)
    end = stack.novnc.wait_for_log("session.end", instance_uuid=stale["instance_uuid"],
                                   close_reason="security_failed")
    assert end["close_detail"].startswith("the VNC server refused authentication (VncAuth)")


def test_a_server_not_signed_by_the_ca_closes_1011(stack: Stack) -> None:
    console = stack.console("q-x509none", "novnc")
    assert ws_close(stack.wrong_ca_port, console["token"]) == (1011, FAILED)
    end = stack.wrong_ca.wait_for_log("session.end", close_reason="security_failed")
    assert end["close_detail"] == ("TLS verification of the VNC server failed: "
                                   "unable to get local issuer certificate")


def test_xvp_viewer_gets_an_rfb_failure_reason(stack: Stack) -> None:
    console = stack.console("vm-open", "xvpvnc")
    with socket.create_connection(("127.0.0.1", stack.xvp_port), timeout=15) as sock:
        sock.sendall(f"CONNECT /console?token={console['token']} HTTP/1.0\r\n\r\n".encode())
        got = b""
        expected = (b"HTTP/1.1 200 OK\r\n\r\nRFB 003.008\n")
        while len(got) < len(expected):
            got += sock.recv(100)
        assert got == expected
        sock.sendall(b"RFB 003.008\n")
        rest = b""
        while chunk := sock.recv(100):
            rest += chunk
    assert rest == b"\x00" + struct.pack(">I", len(FAILED)) + FAILED.encode()
    end = stack.xvp.wait_for_log("session.end", instance_uuid=console["instance_uuid"],
                                 close_reason="security_failed")
    assert end["close_detail"].startswith("no common security scheme")


def test_the_password_never_reaches_a_log(stack: Stack) -> None:
    stack.console("xv", "novnc")
    text = "".join(p.log_path.read_text(errors="replace")
                   for p in (stack.novnc, stack.xvp, stack.wrong_ca))
    assert XVNC_PASSWORD not in text
    assert "security_failed" in text or "security_scheme" in text  # the logs were read


# --- bad settings: one line naming the option ------------------------------------------------


@pytest.mark.parametrize(("command", "args", "line"), [
    ("novncproxy", ["--auth-schemes", "vencrypt,tls"],
     "novncproxy: error: option auth_schemes: bad value 'vencrypt,tls' from flag "
     "--auth-schemes: expected vencrypt, vnc or none"),
    ("xvpvncproxy", ["--auth-schemes", "vencrypt"],
     "xvpvncproxy: error: option vencrypt_ca_certs: needed when auth_schemes has vencrypt"),
    ("novncproxy", ["--auth-schemes", "vencrypt", "--vencrypt-ca-certs", "/nonexistent.pem"],
     "novncproxy: error: option vencrypt_ca_certs: cannot load /nonexistent.pem"),
    ("xvpvncproxy", ["--auth-schemes", "vnc", "--vencrypt-client-cert", "/c.pem"],
     "xvpvncproxy: error: option vencrypt_client_key: vencrypt_client_cert and "
     "vencrypt_client_key go together (from default)"),
])
def test_bad_settings_stop_the_proxy_with_one_line(command: str, args: list[str],
                                                   line: str) -> None:
    done = subprocess.run([str(VENV_BIN / command), *args], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 2
    lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), done.stderr
