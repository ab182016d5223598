"""Our console page and the CDP harness, checked before our own proxy exists.

A real TigerVNC Xvnc with an xterm on it, the third-party websockify (from PyPI, in a
throwaway virtualenv under /tmp, never part of the workspace) serving a web root laid out
the way novncproxy serves it (/static/..., /novnc/..., /vnc_lite.html) and relaying
/websockify to Xvnc, and headless Chromium running the page with the real noVNC library.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from .cdp import Browser
from .conftest import require

pytestmark = pytest.mark.browser

WEBSOCKIFY_VENV = Path("/tmp/console-e2e-websockify-venv")
XVNC = "/usr/bin/Xvnc"
XTERM = "/usr/bin/xterm"
VNCPASSWD = "/usr/bin/vncpasswd"
START_TIMEOUT = 20.0

INVALID_LINK = "This console link is invalid or has expired. Ask for a new console link."
PROXY_UNREACHABLE = "The console proxy cannot be reached."


# ---- processes ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{proc.args[0]} exited with {proc.returncode}:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(
        f"nothing listens on 127.0.0.1:{port} after {timeout:g}s:\n"
        f"{log.read_text(errors='replace')[-3000:]}"
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate a process started in its own session, and its process group."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=5)
            return
        except subprocess.TimeoutExpired:
            continue


def spawn(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def free_display() -> int:
    """An X display number with no socket, no lock file and a free VNC port."""
    candidates = list(range(40, 100))
    random.shuffle(candidates)
    for n in candidates:
        if not (Path(f"/tmp/.X11-unix/X{n}").exists() or Path(f"/tmp/.X{n}-lock").exists()):
            return n
    raise RuntimeError("no free X display number in :40-:99")


@dataclass(frozen=True)
class Desktop:
    display: int
    rfb_port: int


@pytest.fixture(scope="module")
def websockify_bin(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """websockify from PyPI in a throwaway virtualenv (reused between runs)."""
    exe = WEBSOCKIFY_VENV / "bin" / "websockify"
    if exe.exists():
        return exe
    log = tmp_path_factory.mktemp("websockify-install") / "install.log"
    uv = shutil.which("uv")
    if uv:
        steps = [
            [uv, "venv", "--quiet", str(WEBSOCKIFY_VENV)],
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(WEBSOCKIFY_VENV / "bin" / "python"),
                "websockify",
            ],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(WEBSOCKIFY_VENV)],
            [str(WEBSOCKIFY_VENV / "bin" / "pip"), "install", "--quiet", "websockify"],
        ]
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "UV_PROJECT")}
    for step in steps:
        with open(log, "ab") as out:
            done = subprocess.run(
                step,
                check=False,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=300,
            )
        if done.returncode != 0:
            shutil.rmtree(WEBSOCKIFY_VENV, ignore_errors=True)
            pytest.fail(f"installing websockify failed: {step}\n{log.read_text()[-3000:]}")
    return exe


@pytest.fixture(scope="module")
def web_root(tmp_path_factory: pytest.TempPathFactory, static_dir: Path, novnc_dir: Path) -> Path:
    """Files laid out as novncproxy serves them."""
    root = tmp_path_factory.mktemp("webroot")
    shutil.copytree(static_dir, root / "static")
    shutil.copytree(novnc_dir, root / "novnc")
    for page in ("vnc_lite.html", "vnc_auto.html", "index.html"):
        shutil.copy(static_dir / "console.html", root / page)
    return root


def start_xvnc(
    logs: Path, name: str, security: list[str]
) -> tuple[Desktop, subprocess.Popen[bytes]]:
    require(os.access(XVNC, os.X_OK), f"{XVNC} is absent: run scripts/install-system.sh")
    display, rfb_port = free_display(), free_port()
    log = logs / f"xvnc-{name}.log"
    xvnc = spawn(
        [
            XVNC,
            f":{display}",
            "-geometry",
            "400x300",
            "-depth",
            "24",
            *security,
            "-rfbport",
            str(rfb_port),
            "-localhost",
            "-AlwaysShared",
            "-retro",
            "-desktop",
            name,
        ],
        log,
    )
    try:
        wait_for_port(rfb_port, xvnc, log, START_TIMEOUT)
    except BaseException:
        stop(xvnc)
        raise
    return Desktop(display, rfb_port), xvnc


def start_websockify(
    websockify_bin: Path, web_root: Path, desktop: Desktop, log: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    port = free_port()
    proc = spawn(
        [
            str(websockify_bin),
            "--web",
            str(web_root),
            f"127.0.0.1:{port}",
            f"127.0.0.1:{desktop.rfb_port}",
        ],
        log,
    )
    try:
        wait_for_port(port, proc, log, START_TIMEOUT)
    except BaseException:
        stop(proc)
        raise
    return port, proc


@pytest.fixture(scope="module")
def desktop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Desktop]:
    """Xvnc 400x300 with a black 40x10 xterm in the top-left corner.

    ``-retro`` gives the root window the classic stipple, so the xterm's solid black
    region can be told apart from the desktop behind it.
    """
    require(os.access(XTERM, os.X_OK), f"{XTERM} is absent: run scripts/install-system.sh")
    logs = tmp_path_factory.mktemp("desktop")
    desk, xvnc = start_xvnc(logs, "e2e-xterm", ["-SecurityTypes", "None"])
    procs = [xvnc]
    try:
        home = logs / "home"
        home.mkdir()
        env = {
            "PATH": "/usr/bin:/bin",
            "DISPLAY": f":{desk.display}",
            "HOME": str(home),
            "SHELL": "/bin/sh",
            "PS1": "$ ",
            "LANG": "C.UTF-8",
            "TERM": "xterm",
        }
        xterm = spawn(
            [XTERM, "-geometry", "40x10+0+0", "-bg", "black", "-fg", "white"],
            logs / "xterm.log",
            env,
        )
        procs.append(xterm)
        time.sleep(0.5)
        if xterm.poll() is not None:
            raise RuntimeError(f"xterm exited: {(logs / 'xterm.log').read_text()[-2000:]}")
        yield desk
    finally:
        for proc in reversed(procs):
            stop(proc)


@pytest.fixture(scope="module")
def password_websockify(
    websockify_bin: Path, web_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """websockify in front of an Xvnc that wants the VNC password "s3cret"."""
    require(os.access(VNCPASSWD, os.X_OK), f"{VNCPASSWD} is absent: run scripts/install-system.sh")
    logs = tmp_path_factory.mktemp("password-desktop")
    passwd = logs / "passwd"
    with open(passwd, "wb") as out:
        subprocess.run([VNCPASSWD, "-f"], input=b"s3cret\n", stdout=out, check=True, timeout=10)
    desk, xvnc = start_xvnc(
        logs, "e2e-locked", ["-SecurityTypes", "VncAuth", "-PasswordFile", str(passwd)]
    )
    try:
        port, proc = start_websockify(websockify_bin, web_root, desk, logs / "websockify.log")
        try:
            yield port
        finally:
            stop(proc)
    finally:
        stop(xvnc)


@pytest.fixture(scope="module")
def websockify(
    websockify_bin: Path, web_root: Path, desktop: Desktop, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    """websockify serving the web root and relaying /websockify to Xvnc; yields its port."""
    log = tmp_path_factory.mktemp("websockify") / "websockify.log"
    port, proc = start_websockify(websockify_bin, web_root, desktop, log)
    try:
        yield port
    finally:
        stop(proc)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def static_site(web_root: Path) -> Iterator[int]:
    """Plain static hosting of the web root (no WebSocket at all); yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=web_root))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-site", daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---- helpers on the page -------------------------------------------------------------------


def page_point(browser: Browser, fb_x: float, fb_y: float) -> tuple[float, float]:
    """Viewport coordinates of a framebuffer pixel (the canvas may be scaled)."""
    rect = browser.evaluate("""(() => {
        const c = document.querySelector("#screen canvas");
        const r = c.getBoundingClientRect();
        return [r.left, r.top, r.width, r.height, c.width, c.height];
    })()""")
    left, top, width, height, cw, ch = rect
    return left + fb_x * width / cw, top + fb_y * height / ch


def bright_pixels(rgba: bytes) -> int:
    return sum(1 for i in range(0, len(rgba), 4) if min(rgba[i : i + 3]) > 160)


def dark_pixels(rgba: bytes) -> int:
    return sum(1 for i in range(0, len(rgba), 4) if max(rgba[i : i + 3]) < 40)


# ---- tests ---------------------------------------------------------------------------------


def test_console_connects_shows_xterm_and_types(
    browser: Browser, websockify: int, tmp_path: Path
) -> None:
    url = f"http://127.0.0.1:{websockify}/vnc_lite.html?path=%3Ftoken%3Dx&token=x"
    browser.navigate(url)
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    assert browser.evaluate("document.body.dataset.reason") == ""
    assert (
        browser.evaluate("document.getElementById('status').textContent")
        == "Connected to e2e-xterm"
    )
    assert browser.evaluate("window.consoleRfb.scaleViewport") is True
    assert browser.evaluate("document.getElementById('ctrl-alt-del').disabled") is False

    # The first framebuffer update arrives just after the connect event.
    browser.wait_for(
        """(() => {
        const c = document.querySelector("#screen canvas");
        if (!c || c.width !== 400) { return false; }
        const d = c.getContext("2d").getImageData(0, 0, 200, 100).data;
        for (let i = 0; i < d.length; i += 4) { if (d[i] > 160) { return true; } }
        return false;
    })()""",
        timeout=20,
    )
    assert browser.canvas_size() == (400, 300)

    # The xterm (about 244x134 pixels at the top left) is solid black around its text:
    # its right half holds no text yet, and it is black there, unlike the stippled root.
    xterm_blank = browser.canvas_pixels(150, 40, 80, 80)
    assert dark_pixels(xterm_blank) == 80 * 80
    root = browser.canvas_pixels(300, 200, 60, 60)
    assert 0 < dark_pixels(root) < 60 * 60 and bright_pixels(root) > 0
    # ...and shows white text (the prompt and the cursor block) near its top left.
    before = browser.canvas_pixels(0, 0, 240, 130)
    assert bright_pixels(before) > 20
    browser.screenshot(tmp_path / "connected.png")

    # Put the pointer over the xterm (no window manager: focus follows the pointer) and
    # type into it through noVNC.
    x, y = page_point(browser, 120, 60)
    browser.click(x, y)
    browser.type_text("echo hi")
    browser.press_key("Enter")
    browser.wait_for(
        f"""(() => {{
        const d = document.querySelector("#screen canvas").getContext("2d")
            .getImageData(0, 0, 240, 130).data;
        let bright = 0;
        for (let i = 0; i < d.length; i += 4) {{
            if (Math.min(d[i], d[i + 1], d[i + 2]) > 160) {{ bright++; }}
        }}
        return bright > {bright_pixels(before)} + 40;
    }})()""",
        timeout=20,
    )
    after = browser.canvas_pixels(0, 0, 240, 130)
    assert after != before
    screenshot = browser.screenshot(tmp_path / "typed.png")
    assert screenshot.stat().st_size > 1000
    shots = os.environ.get("E2E_SCREENSHOT_DIR")
    if shots:
        shutil.copy(screenshot, Path(shots) / "console-websockify.png")


def test_no_token_says_the_link_is_invalid(browser: Browser, static_site: int) -> None:
    browser.navigate(f"http://127.0.0.1:{static_site}/vnc_auto.html")
    browser.wait_for("document.body.dataset.state === 'failed'", timeout=15)
    assert browser.evaluate("document.body.dataset.reason") == "invalid_token"
    assert browser.evaluate("document.getElementById('status').textContent") == INVALID_LINK
    assert browser.evaluate("window.consoleRfb") is None


def test_empty_token_in_path_says_the_link_is_invalid(browser: Browser, static_site: int) -> None:
    browser.navigate(f"http://127.0.0.1:{static_site}/?path=%3Ftoken%3D")
    browser.wait_for("document.body.dataset.state === 'failed'", timeout=15)
    assert browser.evaluate("document.body.dataset.reason") == "invalid_token"


def test_unreachable_proxy_is_reported(browser: Browser, static_site: int) -> None:
    # host/port name a port where nothing listens: the WebSocket never opens and the
    # admission probe cannot connect either.
    closed_port = free_port()
    browser.navigate(
        f"http://127.0.0.1:{static_site}/vnc_lite.html?token=x&host=127.0.0.1&port={closed_port}"
    )
    browser.wait_for("document.body.dataset.state === 'failed'", timeout=20)
    assert browser.evaluate("document.body.dataset.reason") == "proxy_unreachable"
    assert browser.evaluate("document.getElementById('status').textContent") == PROXY_UNREACHABLE


def state_of(browser: Browser) -> list[str]:
    return browser.evaluate(
        "[document.body.dataset.state, document.body.dataset.reason, "
        "document.getElementById('status').textContent]"
    )


def test_reconnect_and_scale_toggle(browser: Browser, websockify: int) -> None:
    browser.navigate(f"http://127.0.0.1:{websockify}/vnc_auto.html?path=%3Ftoken%3Dx&token=x")
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    browser.evaluate("window.firstRfb = window.consoleRfb; true")  # not the object by value
    browser.evaluate("document.getElementById('scale').click()")
    assert browser.evaluate("window.consoleRfb.scaleViewport") is False
    browser.evaluate("document.getElementById('reconnect').click()")
    browser.wait_for(
        "window.consoleRfb !== window.firstRfb && document.body.dataset.state === 'connected'",
        timeout=30,
    )
    assert state_of(browser) == ["connected", "", "Connected to e2e-xterm"]
    # the new session keeps the toggle; the old one is gone from the page
    assert browser.evaluate("window.consoleRfb.scaleViewport") is False
    assert browser.evaluate("document.querySelectorAll('#screen canvas').length") == 1


def test_password_prompt_then_connected(browser: Browser, password_websockify: int) -> None:
    browser.navigate(f"http://127.0.0.1:{password_websockify}/vnc_lite.html?token=x")
    browser.wait_for("!document.getElementById('credentials').hidden", timeout=30)
    assert browser.evaluate("document.body.dataset.state") == "connecting"
    assert browser.evaluate("document.getElementById('username-field').hidden") is True
    browser.evaluate("document.getElementById('password').focus()")
    browser.type_text("s3cret")
    browser.press_key("Enter")
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    assert state_of(browser) == ["connected", "", "Connected to e2e-locked"]
    assert browser.evaluate("document.getElementById('credentials').hidden") is True
    assert browser.evaluate("document.getElementById('password').value") == ""


def test_wrong_password_is_a_security_failure(browser: Browser, password_websockify: int) -> None:
    browser.navigate(f"http://127.0.0.1:{password_websockify}/vnc_lite.html?token=x")
    browser.wait_for("!document.getElementById('credentials').hidden", timeout=30)
    browser.evaluate(
        "document.getElementById('password').value = 'wrong';"
        "document.getElementById('send-credentials').click()"
    )
    browser.wait_for("document.body.dataset.state === 'failed'", timeout=30)
    state, reason, text = state_of(browser)
    assert state == "failed"
    assert reason == "security"
    assert text.startswith("The machine's console refused the connection: ")
