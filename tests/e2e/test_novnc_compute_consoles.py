"""The URL `consolectl get-vnc-console SERVER novnc` prints, opened in headless Chromium,
for the three kinds of console a compute host serves: its built-in RFB server, a TigerVNC
Xvnc and QEMU's VNC server — each reached through the fake compute host and novncproxy.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakecompute.pattern import NAME_BG, TestPattern

from tests.e2e.cdp import Browser
from tests.e2e.conftest import require
from tests.integration._consoles import ctl_json, start_compute, start_consoleauth
from tests.support import ServiceProcess, free_port, wait_tcp

pytestmark = pytest.mark.browser


def _free_display() -> int:
    for n in range(500, 600):
        if not Path(f"/tmp/.X{n}-lock").exists() and not Path(f"/tmp/.X11-unix/X{n}").exists():
            return n
    raise RuntimeError("no free X display")


@pytest.fixture(scope="module")
def consoles(tmp_path_factory: pytest.TempPathFactory, novnc_dir: Path) -> Iterator[dict]:
    for tool in ("Xvnc", "qemu-system-x86_64", "xterm"):
        require(shutil.which(tool) is not None, f"{tool} is missing: run scripts/install-system.sh")
    logs = tmp_path_factory.mktemp("consoles")
    procs: list[subprocess.Popen] = []
    services: list[ServiceProcess] = []
    try:
        display = _free_display()
        xvnc_port, qemu_port = free_port(), 5900 + _free_display()
        procs.append(subprocess.Popen(
            ["Xvnc", f":{display}", "-geometry", "400x300", "-depth", "24", "-SecurityTypes",
             "None", "-rfbport", str(xvnc_port), "-localhost", "-AlwaysShared",
             "-desktop", "e2e-xvnc"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_tcp("127.0.0.1", xvnc_port)
        procs.append(subprocess.Popen(
            ["xterm", "-geometry", "40x10+0+0", "-bg", "black", "-fg", "white"],
            env={**os.environ, "DISPLAY": f":{display}"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        procs.append(subprocess.Popen(
            ["qemu-system-x86_64", "-display", "none", "-vnc", f"127.0.0.1:{qemu_port - 5900}",
             "-machine", "accel=tcg", "-nodefaults", "-vga", "std", "-m", "64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        wait_tcp("127.0.0.1", qemu_port)
        ca, bus = start_consoleauth(logs)
        services.append(ca)
        port = free_port()
        base = f"http://127.0.0.1:{port}/vnc_auto.html"
        compute = start_compute(
            logs, bus, f"vm-1,xv=vnc://127.0.0.1:{xvnc_port},qe=vnc://127.0.0.1:{qemu_port}",
            "--novncproxy-base-url", base, builtin=1)
        services.append(compute.proc)
        services.append(ServiceProcess.start("novncproxy", [
            "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
            "--consoleauth-url", bus, "--web", str(novnc_dir)], logs))
        wait_tcp("127.0.0.1", port)
        time.sleep(1.0)  # let the xterm map
        yield {"bus": bus, "compute": compute.control}
    finally:
        for svc in reversed(services):
            svc.stop()
        for proc in procs:
            proc.kill()
            proc.wait(10)


def open_console(browser: Browser, consoles: dict, server: str) -> None:
    url = ctl_json("get-vnc-console", server, "novnc", "--compute-url", consoles["compute"],
                   "--consoleauth-url", consoles["bus"])["access_url"]
    assert "?path=%3Ftoken%3D" in url and "&token=" in url  # Nova's form, as printed
    browser.navigate(url)
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=40)


def wait_pixels(browser: Browser, check, timeout: float = 20.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        w, h = browser.canvas_size()
        data = browser.canvas_pixels(0, 0, w, h) if w and h else b""
        if data and check(w, h, data):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"canvas {w}x{h} never matched")
        time.sleep(0.25)


def screenshot_dir(tmp_path: Path) -> Path:
    """Where the pictures go: the README's (``make screenshots`` sets CONSOLE_SCREENSHOTS
    to docs/screenshots), else the test's own directory."""
    out = Path(os.environ.get("CONSOLE_SCREENSHOTS") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def test_builtin_console_and_typing(browser: Browser, consoles: dict, tmp_path: Path) -> None:
    open_console(browser, consoles, "vm-1")
    pattern = TestPattern("vm-1")
    x, y, _, h = pattern.name_band

    def name_band(w: int, _h: int, data: bytes) -> bool:
        i = ((y + h // 2) * w + x + 2) * 4
        return w == pattern.width and tuple(data[i:i + 3]) == NAME_BG

    wait_pixels(browser, name_band)
    browser.click(300, 300)  # focus the console
    time.sleep(1.0)
    before = wait_pixels(browser, name_band)
    browser.type_text("q")
    # the built-in console draws the last key on its "LAST KEY" line (rows ~322-362 of
    # 480, between the uptime line and the pointer line)
    band = slice(640 * 4 * 322, 640 * 4 * 362)
    wait_pixels(browser, lambda w, hh, d: d[band] != before[band])
    shot = browser.screenshot(screenshot_dir(tmp_path) / "console-vm-1.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_xvnc_console_shows_the_xterm(browser: Browser, consoles: dict) -> None:
    open_console(browser, consoles, "xv")
    assert browser.evaluate("document.getElementById('status').textContent") == \
        "Connected to e2e-xvnc"
    # the xterm at the top left is black with white text
    wait_pixels(browser, lambda w, h, d: (w, h) == (400, 300)
                and any(d[i] > 200 for i in range(0, 200 * 100 * 4, 4)))


def test_qemu_console_shows_the_bios_screen(browser: Browser, consoles: dict) -> None:
    open_console(browser, consoles, "qe")
    # SeaBIOS text mode: mostly black with grey text somewhere
    wait_pixels(browser, lambda w, h, d: w >= 640 and h >= 400
                and sum(1 for i in range(0, len(d), 4 * 7) if d[i] > 100) > 50, timeout=40)
