"""Headless Chromium opens the console link (the real console page, the real noVNC) of
each real VNC server that wants authentication, through novncproxy with
``auth_schemes=vnc,vencrypt``: Xvnc with VncAuth (its password file's password, given to
the fake compute host), QEMU with VNC authentication (a one-time password the fake compute
host set over QMP), QEMU with VeNCrypt X509None (TLS verified against our CA) and QEMU with
VeNCrypt X509Vnc (a client certificate, and a one-time password over QMP). novncproxy
authenticates; the page connects with no password prompt (noVNC never fires
``credentialsrequired``) and shows the server's screen."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.e2e.cdp import Browser
from tests.e2e.test_novnc_compute_consoles import wait_pixels
from tests.integration._consoles import ctl_json, start_compute, start_consoleauth
from tests.integration._secure_servers import (XVNC_NAME, XVNC_PASSWORD, XVNC_SIZE, make_pki,
                                               start_servers)
from tests.support import ServiceProcess, free_port, remember_secret, wait_tcp

pytestmark = pytest.mark.browser

# Runs before the page's own scripts: console.js publishes its noVNC RFB object as
# window.consoleRfb, so a setter there subscribes to credentialsrequired before the
# WebSocket can deliver a byte. The credentials form alone cannot tell: a connect hides it.
COUNT_PROMPTS = """
(() => {
    let current = null;
    window.credentialsRequired = 0;
    Object.defineProperty(window, "consoleRfb", {
        configurable: true,
        get() { return current; },
        set(rfb) {
            current = rfb;
            if (rfb) {
                rfb.addEventListener("credentialsrequired", () => {
                    window.credentialsRequired += 1;
                });
            }
        },
    });
})();
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, novnc_dir: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("secproxy-e2e")
    remember_secret(XVNC_PASSWORD)
    pki = make_pki(root / "pki")
    with start_servers(root, pki) as s:
        services: list[ServiceProcess] = []
        try:
            ca, bus = start_consoleauth(root)
            services.append(ca)
            port = free_port()
            instances = ",".join(s.instances())
            compute = start_compute(
                root, bus, instances, "--novncproxy-base-url",
                f"http://127.0.0.1:{port}/vnc_auto.html", builtin=0)
            services.append(compute.proc)
            # VNC authentication first, so Xvnc (which offers X509Vnc and VncAuth) is
            # reached with VncAuth; the QEMUs offering only VeNCrypt fall back to it
            proxy = ServiceProcess.start("novncproxy", [
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
                "--consoleauth-url", bus, "--web", str(novnc_dir),
                "--auth-schemes", "vnc,vencrypt", "--vencrypt-ca-certs", str(pki.ca),
                "--vencrypt-client-cert", str(pki.client_cert),
                "--vencrypt-client-key", str(pki.client_key)], root)
            services.append(proxy)
            wait_tcp("127.0.0.1", port)
            yield {"bus": bus, "compute": compute.control, "proxy": proxy}
        finally:
            for svc in reversed(services):
                svc.stop()


def console_link(stack: dict, instance: str) -> dict:
    got = ctl_json("get-vnc-console", instance, "novnc", "--compute-url", stack["compute"],
                   "--consoleauth-url", stack["bus"])
    remember_secret(got["token"])
    return got


def qemu_screen(w: int, h: int, d: bytes) -> bool:
    """SeaBIOS in VGA text mode (720x400): mostly black, light grey text."""
    if (w, h) != (720, 400):
        return False
    reds = d[0::4 * 7]
    return sum(r > 150 for r in reds) > 50 and reds.count(0) > len(reds) * 0.8


def xvnc_screen(w: int, h: int, d: bytes) -> bool:
    """Our Xvnc: the white xterm filling its screen (Xvnc's own root is black)."""
    if (w, h) != XVNC_SIZE:
        return False
    whites = sum(d[i:i + 3] == b"\xff\xff\xff" for i in range(0, len(d), 4 * 7))
    return whites > len(d) // (4 * 7) * 0.9


@pytest.mark.parametrize(("instance", "scheme", "screen", "name"), [
    ("xv", "VncAuth", xvnc_screen, XVNC_NAME),
    ("q-vnc", "VncAuth", qemu_screen, "QEMU"),
    ("q-x509none", "VeNCrypt/X509None", qemu_screen, "QEMU"),
    ("q-x509vnc", "VeNCrypt/X509Vnc", qemu_screen, "QEMU"),
])
def test_chromium_reaches_the_server_without_a_password_prompt(
        browser: Browser, stack: dict, instance: str, scheme: str,
        screen: Callable[[int, int, bytes], bool], name: str) -> None:
    browser.send("Page.addScriptToEvaluateOnNewDocument", {"source": COUNT_PROMPTS})
    console = console_link(stack, instance)
    browser.navigate(console["access_url"])
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=40)
    wait_pixels(browser, screen, timeout=40)
    assert browser.evaluate("window.consoleRfb !== null")  # the setter saw the RFB
    assert browser.evaluate("window.credentialsRequired") == 0
    assert browser.evaluate("document.getElementById('credentials').hidden") is True
    assert browser.evaluate("document.getElementById('status').textContent") == \
        f"Connected to {name}"
    browser.navigate("about:blank")  # ends the session, so session.end is written
    end = stack["proxy"].wait_for_log("session.end", instance_uuid=console["instance_uuid"])
    assert end["security_scheme"] == scheme  # how the proxy authenticated to the server
    assert end["security_type"] == "None"  # all the browser was offered


def test_a_replaced_one_time_password_is_explained(browser: Browser, stack: dict) -> None:
    stale = console_link(stack, "q-x509vnc")
    console_link(stack, "q-x509vnc")  # QEMU now has a newer one-time password
    browser.navigate(stale["access_url"])
    browser.wait_for("document.body.dataset.reason === 'security_failed'", timeout=30)
    assert "could not authenticate" in browser.evaluate(
        "document.getElementById('status').textContent")
    end = stack["proxy"].wait_for_log("session.end", instance_uuid=stale["instance_uuid"],
                                      close_reason="security_failed")
    assert end["close_detail"].startswith("the VNC server refused authentication "
                                          "(VeNCrypt/X509Vnc)")
