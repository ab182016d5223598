"""Session recording through both proxies, real processes: consoleauth, the fake compute
host's moving test pattern, novncproxy (record_dir, input off) and xvpvncproxy (Nova's old
`--record` name, record_input on, a small record_max_bytes). A client built on our RFB core
drives each session; the files and `consolectl recordings list` are checked."""

from __future__ import annotations

import json
import os
import socket
import stat
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from console_common.proto.recording import CLIENT, NOTE, SERVER, decode
from console_common.proto.rfb import (NEED_DATA, RGB565, FramebufferUpdate,
                                      FramebufferUpdateRequest, KeyEvent, PointerEvent,
                                      RFBClientConnection, ServerInit, SetEncodings,
                                      SetPixelFormat)

from tests.integration._consoles import ctl_json, start_compute, start_consoleauth
from tests.integration.test_novnc_protocol import WsClient, frame
from tests.support import ServiceProcess, console_token, free_port, wait_tcp

MAX_BYTES = 300_000
KEY_A = b"\x04\x01\x00\x00\x00\x00\x00\x61"


@dataclass
class Stack:
    compute: str
    bus: str
    novnc: ServiceProcess
    novnc_port: int
    novnc_dir: Path
    xvp: ServiceProcess
    xvp_port: int
    xvp_dir: Path

    def token(self, console_type: str) -> str:
        return console_token(self.compute, console_type)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    logs = tmp_path_factory.mktemp("recording")
    novnc_dir, xvp_dir = logs / "novnc-rec", logs / "xvp-rec"
    ca, bus = start_consoleauth(logs)
    services = [ca]
    try:
        compute = start_compute(logs, bus, "vm-1", builtin=1)
        services.append(compute.proc)
        novnc_port, xvp_port = free_port(), free_port()
        novnc = ServiceProcess.start("novncproxy", [
            "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(novnc_port),
            "--consoleauth-url", bus, "--record-dir", str(novnc_dir)], logs)
        services.append(novnc)
        xvp = ServiceProcess.start("xvpvncproxy", [
            "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(xvp_port),
            "--xvpvncproxy-metrics-port", "0", "--consoleauth-url", bus,
            "--record", str(xvp_dir), "--record-input", "--record-max-bytes", str(MAX_BYTES)],
            logs)
        services.append(xvp)
        wait_tcp("127.0.0.1", novnc_port)
        wait_tcp("127.0.0.1", xvp_port)
        yield Stack(compute.control, bus, novnc, novnc_port, novnc_dir, xvp, xvp_port, xvp_dir)
    finally:
        for svc in reversed(services):
            svc.stop()


def drive(send: Callable[[bytes], None], recv: Callable[[], bytes], seconds: float,
          early_input: bool = False) -> int:
    """An RFB viewer for ``seconds``: handshake, RGB565 raw, a key and a pointer move,
    incremental updates. Returns how many updates it saw."""
    conn = RFBClientConnection()
    events: list[object] = []

    def pump(until: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not until():
            assert time.monotonic() < deadline, "nothing from the console in time"
            conn.receive_data(recv())
            while (event := conn.next_event()) is not NEED_DATA:
                events.append(event)
            if out := conn.data_to_send():
                send(out)

    pump(lambda: any(isinstance(e, ServerInit) for e in events))
    send(conn.send(SetPixelFormat(RGB565)) + conn.send(SetEncodings((0,))))
    user_input = (conn.send(KeyEvent(True, 0x61)) + conn.send(KeyEvent(False, 0x61))
                  + conn.send(PointerEvent(0, 100, 50)))
    if early_input:
        send(user_input)
    updates, started = 0, time.monotonic()
    incremental = False
    while time.monotonic() - started < seconds:
        events.clear()
        send(conn.send(FramebufferUpdateRequest(incremental, 0, 0, 640, 480)))
        incremental = True
        pump(lambda: any(isinstance(e, FramebufferUpdate) for e in events))
        updates += 1
        if updates == 3 and not early_input:
            send(user_input)
    return updates


def _end_of(proxy: ServiceProcess, before: int) -> dict:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        ends = [ln for ln in proxy.lines()[before:] if ln.get("event") == "session.end"]
        if ends:
            return ends[0]
        time.sleep(0.05)
    raise AssertionError(f"no session.end in {proxy.log_path}")


def test_novnc_session_is_recorded_without_input(stack: Stack) -> None:
    before = len(stack.novnc.lines())
    ws = WsClient(stack.novnc_port, f"/websockify?token={stack.token('novnc')}")
    assert ws.reply.status == 101

    def recv() -> bytes:
        op, payload = ws.recv_frame()
        assert op == 0x2
        return payload

    assert drive(lambda data: ws.send(frame(0x2, data)), recv, 1.5) >= 5
    ws.send(frame(0x8, struct.pack("!H", 1000)))
    ws.recv_close()
    ws.close()
    end = _end_of(stack.novnc, before)
    path = Path(end["recording"])
    assert path.parent == stack.novnc_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rec = decode(path.read_bytes())
    assert rec.damage is None
    h = rec.header
    assert (h["format"], h["version"], h["kind"]) == ("console-recording", 1, "novnc")
    assert h["session_id"] == end["session_id"] and h["instance_uuid"] == end["instance_uuid"]
    assert h["client"] == "127.0.0.1" and h["record_input"] is False
    assert (h["desktop_name"], h["width"], h["height"]) == ("vm-1", 640, 480)
    assert h["rfb_version"] == "3.8" and abs(h["started"] - time.time()) < 60
    assert "token" not in json.dumps(h).replace("token_id", "")
    kinds = {f.kind for f in rec.frames}
    assert CLIENT not in kinds  # record_input is off: the key and pointer are not kept
    # everything the console sent the client is in the file, in order, with rising times
    server = [f for f in rec.frames if f.kind == SERVER]
    assert sum(len(f.data) for f in server) == end["bytes_down"]
    assert all(a.offset <= b.offset for a, b in zip(server, server[1:], strict=False))
    assert server[-1].offset >= 1.0
    assert rec.notes[-1]["note"] == "end"
    assert rec.notes[-1]["close_reason"] == end["close_reason"]


def test_xvp_session_records_input_and_stops_at_max_bytes(stack: Stack) -> None:
    before = len(stack.xvp.lines())
    sock = socket.create_connection(("127.0.0.1", stack.xvp_port), timeout=10)
    sock.sendall(f"CONNECT /console?token={stack.token('xvpvnc')} HTTP/1.0\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 200")
    updates = drive(sock.sendall, lambda: sock.recv(1 << 20), 1.5, early_input=True)
    assert updates >= 5  # the session went on after the recording stopped
    sock.close()
    end = _end_of(stack.xvp, before)
    assert end["bytes_down"] > MAX_BYTES
    path = Path(end["recording"])
    assert path.parent == stack.xvp_dir  # Nova's `--record` names record_dir
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    rec = decode(path.read_bytes())
    assert rec.damage is None and rec.header["record_input"] is True
    assert rec.header["kind"] == "xvpvnc"
    up = b"".join(f.data for f in rec.frames if f.kind == CLIENT)
    assert KEY_A in up  # the typed key is there, with record_input
    assert [n["note"] for n in rec.notes] == ["limit", "end"]
    frames = sum(13 + len(f.data) for f in rec.frames if f.kind != NOTE)
    assert frames <= MAX_BYTES
    assert path.stat().st_size < MAX_BYTES + 4096
    stopped = [ln for ln in stack.xvp.lines()[before:] if ln.get("event") == "recording.stopped"]
    assert len(stopped) == 1 and stopped[0]["reason"] == "limit"


def test_consolectl_lists_recordings(stack: Stack) -> None:
    rows = ctl_json("recordings", "list", "--record-dir", str(stack.novnc_dir))
    assert rows and all(r["kind"] == "novnc" and r["status"] == "complete" for r in rows)
    row = rows[-1]
    assert row["file"].startswith(str(stack.novnc_dir)) and row["duration_s"] >= 1.0
    assert row["desktop_name"] == "vm-1"
    assert ctl_json("recordings", "list", "--record-dir", str(stack.novnc_dir),
                    "--instance", "no-such-instance") == []
    assert ctl_json("recordings", "list", "--record-dir", str(stack.novnc_dir),
                    "--since", "2h") == rows
    env_rows = ctl_json("recordings", "list", "--record-dir", str(stack.xvp_dir))
    assert env_rows[0]["stopped"] == "limit"
    assert os.listdir(stack.xvp_dir)
