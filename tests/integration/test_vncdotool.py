"""The fake host's built-in VNC servers seen by real clients: vncdotool (`vncdo`, a
third-party Twisted VNC client) captures PNGs and types keys; the tests look at pixels.
A raw client built on our sans-I/O RFB core checks incremental updates and rate."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest
from console_common.proto.rfb import (
    NEED_DATA,
    RGB565,
    FramebufferUpdate,
    FramebufferUpdateRequest,
    RFBClientConnection,
    ServerInit,
    SetEncodings,
    SetPixelFormat,
)
from fakecompute.pattern import KEY_FG, NAME_BG, NAME_FG, TestPattern
from PIL import Image

from tests.integration._consoles import start_compute, start_consoleauth, wait_until
from tests.support import VENV_BIN, remember_secret, wait_tcp

VNCDO_TIMEOUT = 60
PASSWORD = "vm2-pass"


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("vnc")
    remember_secret(PASSWORD)
    ca, ep = start_consoleauth(log_dir)
    with ca:
        compute = start_compute(log_dir, ep, f"vm-1,vm-2;password={PASSWORD}")
        with compute.proc:
            wait_tcp("127.0.0.1", compute.vnc_base)
            wait_tcp("127.0.0.1", compute.vnc_base + 1)
            yield compute


def vncdo(port: int, *commands: str, password: str | None = None) -> subprocess.CompletedProcess:
    argv = [str(VENV_BIN / "vncdo"), "-s", f"127.0.0.1::{port}"]
    if password is not None:
        argv += ["-p", password]
    return subprocess.run([*argv, *commands], capture_output=True, text=True,
                          timeout=VNCDO_TIMEOUT, check=False)


def capture(port: int, path: Path, password: str | None = None) -> Image.Image:
    result = vncdo(port, "capture", str(path), password=password)
    assert result.returncode == 0, result.stderr[-2000:]
    with Image.open(path) as image:
        return image.convert("RGB")


def box_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> list[tuple[int, int, int]]:
    x, y, w, h = box
    data = image.crop((x, y, x + w, y + h)).tobytes()
    return list(zip(data[0::3], data[1::3], data[2::3]))


def test_capture_shows_the_instance_name(host, tmp_path) -> None:
    vm1 = capture(host.vnc_base, tmp_path / "vm1.png")
    vm2 = capture(host.vnc_base + 1, tmp_path / "vm2.png", password=PASSWORD)
    for image, name in ((vm1, "vm-1"), (vm2, "vm-2")):
        assert image.size == (640, 480)
        layout = TestPattern(name)
        pixels = box_pixels(image, layout.name_box)
        lit = pixels.count(NAME_FG)
        assert lit > 1000, f"{name}: only {lit} name-coloured pixels"
        assert lit + pixels.count(NAME_BG) == len(pixels)  # nothing else in the name box
    one, two = TestPattern("vm-1").name_box, TestPattern("vm-2").name_box
    assert one == two
    assert box_pixels(vm1, one) != box_pixels(vm2, two)


def test_wrong_or_missing_password_is_refused_and_server_keeps_serving(host, tmp_path) -> None:
    wrong = vncdo(host.vnc_base + 1, "capture", str(tmp_path / "x.png"),
                  password=remember_secret("not-it"))
    assert wrong.returncode != 0 and not (tmp_path / "x.png").exists()
    host.proc.wait_for_log("vnc.client_disconnected", instance="vm-2",
                           reason="authentication failed")
    assert capture(host.vnc_base + 1, tmp_path / "ok.png", password=PASSWORD).size == (640, 480)


def test_key_typed_shows_as_last_key(host, tmp_path) -> None:
    layout = TestPattern("vm-1")
    before = capture(host.vnc_base, tmp_path / "before.png")
    typed = vncdo(host.vnc_base, "key", "a", "pause", "0.3", "capture", str(tmp_path / "a.png"))
    assert typed.returncode == 0, typed.stderr[-2000:]
    with Image.open(tmp_path / "a.png") as image:
        after = image.convert("RGB")
    assert box_pixels(before, layout.key_box) != box_pixels(after, layout.key_box)
    assert KEY_FG in box_pixels(after, layout.key_box)
    moved = vncdo(host.vnc_base, "move", "200", "150", "click", "1", "pause", "0.3",
                  "capture", str(tmp_path / "click.png"))
    assert moved.returncode == 0, moved.stderr[-2000:]
    with Image.open(tmp_path / "click.png") as image:
        clicked = image.convert("RGB")
    assert box_pixels(clicked, layout.pointer_box) != box_pixels(after, layout.pointer_box)
    assert clicked.getpixel((200 + 3, 150 + 3)) == (255, 0, 255)  # the click mark


def test_garbage_closes_only_that_connection(host, tmp_path) -> None:
    with socket.create_connection(("127.0.0.1", host.vnc_base), timeout=5) as s:
        assert s.recv(12) == b"RFB 003.008\n"
        s.sendall(b"HELLO THERE\n")
        assert s.recv(100) == b""
    with socket.create_connection(("127.0.0.1", host.vnc_base), timeout=5) as s:
        s.recv(12)
        s.sendall(b"RFB 003.008\n\x01\x00" + b"\xee" * 64)  # unknown message type
        deadline = time.monotonic() + 5
        while s.recv(65536) and time.monotonic() < deadline:
            pass
    def protocol_errors() -> list[str]:
        return [line["reason"] for line in host.proc.lines()
                if line.get("event") == "vnc.client_disconnected"
                and line["reason"].startswith("protocol error")]

    reasons = wait_until(lambda: len(protocol_errors()) >= 2 and protocol_errors())
    assert all(host.proc.alive() and "\n" not in r for r in reasons)
    assert capture(host.vnc_base, tmp_path / "still.png").size == (640, 480)


def test_incremental_updates_are_held_small_and_rate_limited(host) -> None:
    with socket.create_connection(("127.0.0.1", host.vnc_base), timeout=5) as sock:
        conn = RFBClientConnection()
        events = []

        def pump(until) -> None:
            deadline = time.monotonic() + 5
            while not until():
                assert time.monotonic() < deadline, "no update in time"
                conn.receive_data(sock.recv(1 << 20))
                while (event := conn.next_event()) is not NEED_DATA:
                    events.append(event)
                if out := conn.data_to_send():
                    sock.sendall(out)

        pump(lambda: any(isinstance(e, ServerInit) for e in events))
        sock.sendall(conn.send(SetPixelFormat(RGB565)) + conn.send(SetEncodings((0,))))
        sock.sendall(conn.send(FramebufferUpdateRequest(False, 0, 0, 640, 480)))
        pump(lambda: any(isinstance(e, FramebufferUpdate) for e in events))
        full = next(e for e in events if isinstance(e, FramebufferUpdate))
        assert [(r.width, r.height, len(r.data)) for r in full.rects] == [(640, 480, 640 * 480 * 2)]

        updates, started = [], time.monotonic()
        while time.monotonic() - started < 1.0:
            events.clear()
            sock.sendall(conn.send(FramebufferUpdateRequest(True, 0, 0, 640, 480)))
            pump(lambda: any(isinstance(e, FramebufferUpdate) for e in events))
            updates += [e for e in events if isinstance(e, FramebufferUpdate)]
        assert 5 <= len(updates) <= 21  # the screen moves; at most ~20 updates a second
        for update in updates:
            area = sum(r.width * r.height for r in update.rects)
            assert 0 < area < 640 * 480 // 3  # only what changed, not the whole screen
            assert all(len(r.data) == r.width * r.height * 2 for r in update.rects)
