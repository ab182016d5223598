"""Headless Chromium opens the console link of a QEMU whose VNC server wants VeNCrypt
X509Vnc (TLS verified against our CA, a client certificate, and a one-time password the
fake compute host set over QMP): novncproxy authenticates, the page connects with no
password prompt and shows QEMU's screen."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cdp import Browser
from tests.e2e.test_novnc_compute_consoles import wait_pixels
from tests.integration._consoles import ctl_json, start_compute, start_consoleauth
from tests.integration._secure_servers import make_pki, start_servers
from tests.support import ServiceProcess, free_port, remember_secret, wait_tcp

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, novnc_dir: Path) -> Iterator[dict]:
    root = tmp_path_factory.mktemp("secproxy-e2e")
    pki = make_pki(root / "pki")
    with start_servers(root, pki, kinds=("x509vnc",)) as servers:
        services: list[ServiceProcess] = []
        try:
            ca, bus = start_consoleauth(root)
            services.append(ca)
            port = free_port()
            compute = start_compute(
                root, bus, f"vm-1,qemu-tls=vnc://127.0.0.1:{servers.qemu_x509vnc};"
                f"qmp={servers.qemu_x509vnc_qmp}", "--novncproxy-base-url",
                f"http://127.0.0.1:{port}/vnc_auto.html", builtin=1)
            services.append(compute.proc)
            proxy = ServiceProcess.start("novncproxy", [
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
                "--consoleauth-url", bus, "--web", str(novnc_dir),
                "--auth-schemes", "vencrypt", "--vencrypt-ca-certs", str(pki.ca),
                "--vencrypt-client-cert", str(pki.client_cert),
                "--vencrypt-client-key", str(pki.client_key)], root)
            services.append(proxy)
            wait_tcp("127.0.0.1", port)
            yield {"bus": bus, "compute": compute.control, "proxy": proxy}
        finally:
            for svc in reversed(services):
                svc.stop()


def test_chromium_reaches_qemu_vencrypt_without_a_password_prompt(browser: Browser,
                                                                  stack: dict) -> None:
    console = ctl_json("get-vnc-console", "qemu-tls", "novnc", "--compute-url",
                       stack["compute"], "--consoleauth-url", stack["bus"])
    remember_secret(console["token"])
    browser.navigate(console["access_url"])
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=40)
    # SeaBIOS in VGA text mode: mostly black, light grey text
    wait_pixels(browser, lambda w, h, d: (w, h) == (720, 400)
                and sum(1 for i in range(0, len(d), 4 * 7) if d[i] > 150) > 50, timeout=40)
    assert browser.evaluate("document.getElementById('credentials').hidden") is True
    assert browser.evaluate("document.getElementById('status').textContent") == \
        "Connected to QEMU"


def test_a_replaced_one_time_password_is_explained(browser: Browser, stack: dict) -> None:
    def link() -> dict:
        got = ctl_json("get-vnc-console", "qemu-tls", "novnc", "--compute-url",
                       stack["compute"], "--consoleauth-url", stack["bus"])
        remember_secret(got["token"])
        return got

    stale = link()
    link()  # QEMU now has a newer one-time password
    browser.navigate(stale["access_url"])
    browser.wait_for("document.body.dataset.reason === 'security_failed'", timeout=30)
    assert "could not authenticate" in browser.evaluate(
        "document.getElementById('status').textContent")
    end = stack["proxy"].wait_for_log("session.end", instance_uuid=stale["instance_uuid"],
                                      close_reason="security_failed")
    assert end["close_detail"].startswith("the VNC server refused authentication "
                                          "(VeNCrypt/X509Vnc)")
