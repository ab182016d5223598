"""Connections that stay up and connections that do not hang, on real proxies: WebSocket
pings and dead peers, a client that stops reading, TCP keepalive on the console sockets,
and the certificate reloaded on SIGHUP without dropping sessions.
"""

from __future__ import annotations

import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.test_limits import xvp_open, xvp_token
from tests.integration.test_novnc_protocol import (WAIT, Stack, TcpServer, WsClient, echo,
                                                   frame, rss_kib, start_consoleauth,
                                                   start_proxy)
from tests.integration.test_xvp_protocol import OK, read_exactly, start_xvp


def blast(conn: socket.socket) -> None:
    """A console that always has more to send (until its peer is gone)."""
    chunk = b"\x00" * (1 << 16)
    while True:
        conn.sendall(chunk)


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[TcpServer, TcpServer]]:
    echo_server, blaster = TcpServer(echo), TcpServer(blast)
    yield echo_server, blaster
    echo_server.stop()
    blaster.stop()


def test_pings_keep_answering_clients_and_end_dead_peers(
        tmp_path: Path, servers: tuple[TcpServer, TcpServer]) -> None:
    echo_server, _ = servers
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--websocket-ping-interval", "0.5",
                                  "--websocket-ping-timeout", "2")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            ws = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}")
            ws.sock.settimeout(WAIT)
            pings, started = 0, time.monotonic()
            while time.monotonic() - started < 3:  # 3 s answering every ping: kept
                op, payload = ws.recv_frame()
                assert op == 0x9, f"expected only pings on an idle session, got {op}"
                pings += 1
                ws.send(frame(0xA, payload))
            assert 4 <= pings <= 8
            ws.send(frame(0x2, b"alive"))
            while (got := ws.recv_frame())[0] == 0x9:
                ws.send(frame(0xA, got[1]))
            assert got == (0x2, b"alive")
            # now the peer is dead: it reads (sees the pings) but never answers
            stopped = time.monotonic()
            ops = []
            try:
                while True:
                    op, _ = ws.recv_frame()
                    ops.append(op)
            except (ConnectionError, OSError):
                pass
            waited = time.monotonic() - stopped
            assert set(ops) <= {0x9}  # no close frame: nobody hears it
            assert 2.0 <= waited < 5.0, waited
            end = proxy.wait_for_log("session.end", close_reason="peer_dead")
            assert end["duration_s"] >= 5


def test_a_client_that_stops_reading_is_cut_without_memory_growth(
        tmp_path: Path, servers: tuple[TcpServer, TcpServer]) -> None:
    _, blaster = servers
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        port, proxy = start_proxy(tmp_path, bus, "--client-send-timeout", "1.5")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            before = rss_kib(proxy.popen.pid)
            ws = WsClient(port, f"/websockify?token={stack.authorize(port=blaster.port)}")
            assert ws.reply.status == 101
            opened = time.monotonic()  # and never read again
            peak = before
            while not [ln for ln in proxy.lines() if ln.get("event") == "session.end"]:
                peak = max(peak, rss_kib(proxy.popen.pid))
                assert time.monotonic() - opened < WAIT, "stalled client never cut"
                time.sleep(0.1)
            cut_after = time.monotonic() - opened
            end = proxy.wait_for_log("session.end", close_reason="client_stalled")
            assert end["bytes_down"] > 0
            assert 1.5 <= cut_after < 4.5, cut_after
            # back-pressure, not a queue: socket buffers only
            assert peak - before < 16 * 1024, (before, peak)
            print(f"\nstalled client: cut after {cut_after:.2f} s, proxy RSS {before} KiB "
                  f"-> peak {peak} KiB, {end['bytes_down']} bytes sent before the stall")
            ws.close()
        xvp, xport, _ = start_xvp(tmp_path, bus, "--client-send-timeout", "1.5")
        with xvp:
            sock = xvp_open(xport, xvp_token(Stack(bus, ca, xvp, xport), blaster.port,
                                             "vm-stall"))
            with sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                assert read_exactly(sock, len(OK)) == OK
                xvp.wait_for_log("session.end", timeout=WAIT, close_reason="client_stalled")


def test_console_sockets_use_tcp_keepalive(tmp_path: Path,
                                           servers: tuple[TcpServer, TcpServer]) -> None:
    echo_server, _ = servers
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        xvp, xport, _ = start_xvp(tmp_path, bus)
        with xvp:
            sock = xvp_open(xport, xvp_token(Stack(bus, ca, xvp, xport), echo_server.port,
                                             "vm-keepalive"))
            with sock:
                assert read_exactly(sock, len(OK)) == OK
                sock.sendall(b"x")
                assert read_exactly(sock, 1) == b"x"
                # ss shows a keepalive timer on the proxy's end of both connections (once
                # no other timer is running on them: ss shows one)
                deadline, out = time.monotonic() + 5, ""
                while time.monotonic() < deadline:
                    out = subprocess.run(["ss", "-tnoH", "state", "established"],
                                         capture_output=True, text=True, timeout=10).stdout
                    timers = {tuple(ln.split()[2:4]): ln for ln in out.splitlines()
                              if "timer:(keepalive" in ln}
                    client_side = [k for k in timers if k[0] == f"127.0.0.1:{xport}"]
                    target_side = [k for k in timers if k[1] == f"127.0.0.1:{echo_server.port}"]
                    if client_side and target_side:
                        break
                    time.sleep(0.2)
                else:
                    raise AssertionError(f"no keepalive timers on xvp {xport} / target "
                                         f"{echo_server.port}:\n{out}")


def _cert(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.crt", directory / f"{name}.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def _served_cert(port: int) -> bytes:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return der


def _der(cert: Path) -> bytes:
    return ssl.PEM_cert_to_DER_cert(cert.read_text())


def _wait_count(proxy, event: str, count: int) -> None:
    deadline = time.monotonic() + WAIT
    while sum(ln.get("event") == event for ln in proxy.lines()) < count:
        assert time.monotonic() < deadline, f"fewer than {count} {event} lines"
        time.sleep(0.05)


def test_sighup_reloads_the_certificate_and_keeps_sessions(
        tmp_path: Path, servers: tuple[TcpServer, TcpServer]) -> None:
    echo_server, _ = servers
    old_cert, old_key = _cert(tmp_path, "old")
    new_cert, new_key = _cert(tmp_path, "new")
    cert, key = tmp_path / "console.crt", tmp_path / "console.key"
    shutil.copy(old_cert, cert)
    shutil.copy(old_key, key)
    bus, ca = start_consoleauth(tmp_path)
    with ca:
        # two workers: the signal goes to the main process, which tells both
        port, proxy = start_proxy(tmp_path, bus, "--cert", str(cert), "--key", str(key),
                                  "--workers", "2")
        with proxy:
            stack = Stack(bus, ca, proxy, port)
            assert _served_cert(port) == _der(old_cert)
            ws = WsClient(port, f"/websockify?token={stack.authorize(port=echo_server.port)}",
                          tls=True, origin=f"https://127.0.0.1:{port}")
            assert ws.reply.status == 101
            ws.send(frame(0x2, b"before"))
            assert ws.recv_bytes(6) == b"before"
            shutil.copy(new_cert, cert)
            shutil.copy(new_key, key)
            proxy.popen.send_signal(signal.SIGHUP)
            _wait_count(proxy, "tls.reloaded", 2)
            for _ in range(4):  # whichever worker takes the connection
                assert _served_cert(port) == _der(new_cert)
            ws.send(frame(0x2, b"after reload"))
            assert ws.recv_bytes(12) == b"after reload"  # the open session goes on
            cert.write_text("-----BEGIN CERTIFICATE-----\nnot a certificate\n")
            proxy.popen.send_signal(signal.SIGHUP)
            _wait_count(proxy, "tls.reload_failed", 2)
            assert _served_cert(port) == _der(new_cert)  # the good one is kept
            ws.send(frame(0x2, b"still"))
            assert ws.recv_bytes(5) == b"still"
            assert proxy.alive()
            ws.close()
