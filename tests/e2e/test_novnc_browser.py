"""Our console page in headless Chromium, served by OUR novncproxy, relaying to a real Xvnc
(with an xterm) through real consoleauth tokens; the page's plain messages for refusals."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import ServiceProcess, free_port, remember_secret, wait_bus, wait_tcp

from .cdp import Browser
from .test_page_websockify import Desktop, bright_pixels, dark_pixels, desktop, page_point

pytestmark = pytest.mark.browser
__all__ = ["desktop"]  # the Xvnc + xterm fixture, shared with the websockify page test

MESSAGES = {
    "invalid_token": "This console link is invalid or has expired. Ask for a new console link.",
    "consoleauth_unavailable": "The console service is unavailable right now. "
                               "Try again in a moment.",
    "origin_refused": "This page's origin is not allowed to open the console.",
    "unreachable": "The machine's console is unreachable. "
                   "It may be stopped or its host may be down.",
}


@dataclass
class Proxy:
    bus: str
    port: int
    consoleauth: ServiceProcess
    proxy: ServiceProcess

    def authorize(self, port: int, instance: str = "vm-e2e") -> str:
        from console_common.net.bus import BusClient

        with BusClient([self.bus], timeout=5) as client:
            answer = client.call("authorize_console", console_type="novnc", host="127.0.0.1",
                                 port=port, instance_uuid=instance)
        return remember_secret(answer["token"])

    def url(self, token: str, page: str = "vnc_lite.html", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}/{page}?path=%3Ftoken%3D{token}&token={token}"


def start_stack(logs: Path, ttl: int = 600) -> Proxy:
    bus = f"tcp://127.0.0.1:{free_port()}"
    ca = ServiceProcess.start("consoleauth", ["--consoleauth-listen", bus, "--token-store",
                                              "memory", "--console-token-ttl", str(ttl)], logs)
    try:
        wait_bus(bus)
        port = free_port()
        proxy = ServiceProcess.start("novncproxy", ["--novncproxy-host", "127.0.0.1",
                                                    "--novncproxy-port", str(port),
                                                    "--consoleauth-url", bus,
                                                    "--consoleauth-timeout", "1"], logs)
        proxy.wait_for_log("service.start", timeout=20)
        wait_tcp("127.0.0.1", port)
    except BaseException:
        ca.stop()
        raise
    return Proxy(bus, port, ca, proxy)


@pytest.fixture
def stack(tmp_path: Path, novnc_dir: Path) -> Iterator[Proxy]:
    s = start_stack(tmp_path / "logs")
    try:
        yield s
    finally:
        s.proxy.stop()
        s.consoleauth.stop()


def outcome(browser: Browser) -> list[str]:
    browser.wait_for("['failed', 'disconnected'].includes(document.body.dataset.state)",
                     timeout=30)
    return browser.evaluate("[document.body.dataset.reason, "
                            "document.getElementById('status').textContent]")


def test_console_through_novncproxy_shows_xterm_and_types(
        browser: Browser, stack: Proxy, desktop: Desktop, tmp_path: Path) -> None:
    token = stack.authorize(desktop.rfb_port)
    browser.navigate(stack.url(token))
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    assert browser.evaluate("document.getElementById('status').textContent") == \
        "Connected to e2e-xterm"
    browser.wait_for("""(() => {
        const c = document.querySelector("#screen canvas");
        if (!c || c.width !== 400) { return false; }
        const d = c.getContext("2d").getImageData(0, 0, 200, 100).data;
        for (let i = 0; i < d.length; i += 4) { if (d[i] > 160) { return true; } }
        return false;
    })()""", timeout=20)
    assert browser.canvas_size() == (400, 300)
    assert dark_pixels(browser.canvas_pixels(150, 40, 80, 80)) == 80 * 80  # the xterm
    before = browser.canvas_pixels(0, 0, 240, 130)
    assert bright_pixels(before) > 20  # its prompt and cursor
    x, y = page_point(browser, 120, 60)
    browser.click(x, y)
    browser.type_text("echo novncproxy")
    browser.press_key("Enter")
    browser.wait_for(f"""(() => {{
        const d = document.querySelector("#screen canvas").getContext("2d")
            .getImageData(0, 0, 240, 130).data;
        let bright = 0;
        for (let i = 0; i < d.length; i += 4) {{
            if (Math.min(d[i], d[i + 1], d[i + 2]) > 160) {{ bright++; }}
        }}
        return bright > {bright_pixels(before)} + 40;
    }})()""", timeout=20)
    assert browser.canvas_pixels(0, 0, 240, 130) != before
    browser.screenshot(tmp_path / "novncproxy-typed.png")
    start = stack.proxy.wait_for_log("session.start", instance_uuid="vm-e2e")
    assert start["token_id"] and token not in stack.proxy.log_path.read_text()


def test_expired_token_is_explained(browser: Browser, tmp_path: Path, novnc_dir: Path) -> None:
    s = start_stack(tmp_path / "logs", ttl=1)
    try:
        token = s.authorize(free_port())
        time.sleep(1.5)
        browser.navigate(s.url(token))
        assert outcome(browser) == ["invalid_token", MESSAGES["invalid_token"]]
    finally:
        s.proxy.stop()
        s.consoleauth.stop()


def test_wrong_origin_is_explained(browser: Browser, stack: Proxy, desktop: Desktop) -> None:
    token = stack.authorize(desktop.rfb_port)
    # the page comes from http://localhost:P but connects to 127.0.0.1:P: another origin
    browser.navigate(f"http://localhost:{stack.port}/vnc_lite.html?token={token}"
                     f"&host=127.0.0.1&port={stack.port}")
    assert outcome(browser) == ["origin_refused", MESSAGES["origin_refused"]]


def test_stopped_consoleauth_is_explained(browser: Browser, stack: Proxy,
                                          desktop: Desktop) -> None:
    token = stack.authorize(desktop.rfb_port)
    stack.consoleauth.stop()
    browser.navigate(stack.url(token))
    assert outcome(browser) == ["consoleauth_unavailable",
                                MESSAGES["consoleauth_unavailable"]]


def test_unreachable_machine_is_explained(browser: Browser, stack: Proxy) -> None:
    token = stack.authorize(free_port())  # nothing listens there
    browser.navigate(stack.url(token, page="vnc_auto.html"))
    assert outcome(browser) == ["unreachable", MESSAGES["unreachable"]]
    stack.proxy.wait_for_log("session.end", close_reason="connect_failed")
