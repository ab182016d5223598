"""The seed's multi-host layout: a client that reaches only the proxy host, compute hosts
on a private LAN behind it, built-in consoles and real VNC servers (Xvnc, QEMU).

Everything a user does happens in the client namespace: `consolectl vnc-bridge` plus
vncdotool, and headless Chromium on the console page. Console links come from
`consolectl get-vnc-console` run on the proxy host (it reaches the compute hosts).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from fakecompute.pattern import NAME_BG, TestPattern
from PIL import Image

from tests.e2e.cdp import CHROMIUM, Browser
from tests.e2e.conftest import require
from tests.integration.test_vnc_bridge import (
    UNREACHABLE,
    Bridge,
    assert_builtin_screen,
    consolectl,
    get_console_url,
    vncdo_capture,
)
from tests.netns.conftest import BUS, COMPUTE1, COMPUTE2, REAL_VNC_PORT, UNROUTABLE, Layout
from tests.support import REPO, VENV_BIN

pytestmark = pytest.mark.netns

NO_NOVNC_LIB = "noVNC is not installed: run scripts/install-novnc.sh"
NOVNC_LIB = REPO / "services" / "novnc" / "web" / "node_modules" / "@novnc" / "novnc" / "core"


def console_url(lay: Layout, compute: str, instance: str, kind: str, port: int = 6095) -> str:
    return get_console_url(f"tcp://{compute}:{port}", BUS, instance, kind, netns=lay.proxy)


def need_novnc(lay: Layout) -> None:
    require(lay.novnc_skip is None, f"novncproxy is not usable yet: {lay.novnc_skip}")


def assert_xvnc_screen(image: Image.Image) -> None:
    """Xvnc -retro with no X client: the classic root weave, one pixel in four white."""
    assert image.size == (800, 600)
    colours = {rgb: n for n, rgb in image.getcolors(1 << 20)}
    assert set(colours) == {(0, 0, 0), (255, 255, 255)}, list(colours)[:5]
    assert 0.2 < colours[(255, 255, 255)] / (800 * 600) < 0.3


def assert_qemu_screen(image: Image.Image) -> None:
    """SeaBIOS in VGA text mode: grey text on black, 720x400."""
    assert image.size == (720, 400)
    colours = {rgb: n for n, rgb in image.getcolors(1 << 20)}
    assert (0, 0, 0) in colours and (168, 168, 168) in colours, list(colours)[:5]
    assert 0.001 < colours[(168, 168, 168)] / (720 * 400) < 0.2


SCREENS = {
    "c1-builtin": (COMPUTE1, lambda image: assert_builtin_screen(image, "c1-builtin")),
    "c1-xvnc": (COMPUTE1, assert_xvnc_screen),
    "c2-builtin": (COMPUTE2, lambda image: assert_builtin_screen(image, "c2-builtin")),
    "c2-qemu": (COMPUTE2, assert_qemu_screen),
}


def test_client_reaches_only_the_proxy_host(layout: Layout) -> None:
    def reachable(host: str, port: int) -> bool:
        probe = ["ip", "netns", "exec", layout.client, "timeout", "3", "bash", "-c",
                 f"exec 3<>/dev/tcp/{host}/{port}"]
        return subprocess.run(probe, check=False, capture_output=True).returncode == 0

    assert reachable("10.231.1.1", 6081)
    assert not reachable(COMPUTE1, 5900)
    assert not reachable(COMPUTE2, REAL_VNC_PORT)
    assert not reachable("10.231.0.1", 6085)  # the bus is on the private LAN only


@pytest.mark.parametrize("kind", ["xvpvnc", "novnc"])
@pytest.mark.parametrize("instance", sorted(SCREENS))
def test_screenshot_from_the_client(layout: Layout, instance: str, kind: str,
                                    tmp_path: Path) -> None:
    if kind == "novnc":
        need_novnc(layout)
    compute, check = SCREENS[instance]
    url = console_url(layout, compute, instance, kind)
    assert url.startswith("http://10.231.1.1:")
    with Bridge(url, tmp_path, netns=layout.client) as bridge:
        check(vncdo_capture(bridge.port, tmp_path / "screen.png", netns=layout.client))


def test_browser_in_the_client_sees_the_console(layout: Layout, tmp_path: Path) -> None:
    need_novnc(layout)
    require((NOVNC_LIB / "rfb.js").is_file(), NO_NOVNC_LIB)
    require(Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: run scripts/install-system.sh")
    url = console_url(layout, COMPUTE2, "c2-builtin", "novnc")
    pattern = TestPattern("c2-builtin")
    with Browser.launch(tmp_path / "profile", netns=layout.client) as browser:
        browser.navigate(url)
        browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
        browser.wait_for(f"(() => {{ const c = document.querySelector('#screen canvas');"
                         f" return c && c.width === {pattern.width}"
                         f" && c.height === {pattern.height}; }})()", timeout=20)
        x, y, _, h = pattern.name_band
        for _ in range(50):  # the first full update may still be drawing
            pixels = browser.canvas_pixels(x + 2, y + h // 2, 1, 1)
            if tuple(pixels[:3]) == NAME_BG:
                break
            browser.pump_events(0.1)
        assert tuple(pixels[:3]) == NAME_BG


MISCONFIGURED = {
    # vncserver_proxyclient_address the proxy host has no route to
    "c2-badaddr": (COMPUTE2, f"{UNROUTABLE}:5920"),
    # vncserver_listen on the compute host's loopback: nothing answers on its LAN address
    "c1-loopback": (COMPUTE1, f"{COMPUTE1}:5920"),
}


@pytest.mark.parametrize("instance", sorted(MISCONFIGURED))
def test_misconfigured_host_via_xvp(layout: Layout, instance: str) -> None:
    compute, target = MISCONFIGURED[instance]
    url = console_url(layout, compute, instance, "xvpvnc", port=6096)
    done = consolectl("vnc-bridge", url, "--listen", "127.0.0.1:0", netns=layout.client)
    assert done.returncode == 3, done
    assert UNREACHABLE in done.stderr
    xvp = next(p for p in layout.procs if p.name == "xvpvncproxy")
    line = xvp.wait_for_log("session.end", target=target)
    assert line["close_reason"] == "connect_failed"


@pytest.mark.parametrize("instance", sorted(MISCONFIGURED))
def test_misconfigured_host_via_novnc(layout: Layout, instance: str, tmp_path: Path) -> None:
    need_novnc(layout)
    compute, target = MISCONFIGURED[instance]
    url = console_url(layout, compute, instance, "novnc", port=6096)
    with Bridge(url, tmp_path, netns=layout.client) as bridge:
        done = subprocess.run(["ip", "netns", "exec", layout.client, str(VENV_BIN / "vncdo"), "-s",
                               f"127.0.0.1::{bridge.port}", "capture", str(tmp_path / "x.png")],
                              check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
    assert UNREACHABLE in bridge.stderr()
    novnc = next(p for p in layout.procs if p.name == "novncproxy")
    line = novnc.wait_for_log("session.end", target=target)
    assert line["close_reason"] == "connect_failed"


@pytest.mark.parametrize("instance", sorted(MISCONFIGURED))
def test_misconfigured_host_in_the_browser(layout: Layout, instance: str,
                                           tmp_path: Path) -> None:
    need_novnc(layout)
    require((NOVNC_LIB / "rfb.js").is_file(), NO_NOVNC_LIB)
    compute, _target = MISCONFIGURED[instance]
    url = console_url(layout, compute, instance, "novnc", port=6096)
    with Browser.launch(tmp_path / "profile", netns=layout.client) as browser:
        browser.navigate(url)
        browser.wait_for("document.body.dataset.state === 'failed'", timeout=30)
        assert browser.evaluate("document.body.dataset.reason") == "unreachable"
        assert "unreachable" in browser.evaluate("document.body.innerText")
