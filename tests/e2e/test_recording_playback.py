"""A console session recorded by novncproxy, watched live in headless Chromium (the fake
host's moving test pattern, keys typed), then played back in Chromium through
`consolectl recordings play` with the real noVNC: the last frame is the live session's
last frame, a seek to the middle shows what the live session showed then, and a truncated
file plays to its end and says so. A session with TigerVNC's Xvnc (Tight encoding) replays
to the same last frame too."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from console_common.net.bus import BusClient
from console_common.proto.recording import decode
from fakecompute.pattern import NAME_BG, TestPattern

from tests.e2e.cdp import Browser
from tests.e2e.conftest import require
from tests.integration._consoles import start_compute, start_consoleauth
from tests.support import VENV_BIN, ServiceProcess, free_port, remember_secret, wait_tcp

pytestmark = pytest.mark.browser

READ_CANVAS = """(() => {
    const c = %s;
    const data = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let s = "";
    for (let i = 0; i < data.length; i += 0x8000) {
        s += String.fromCharCode.apply(null, data.subarray(i, i + 0x8000));
    }
    return [c.width, c.height, btoa(s)];
})()"""
LIVE = "document.querySelector('#screen canvas')"


def pixels(browser: Browser, canvas: str = LIVE) -> tuple[int, int, str]:
    """(width, height, base64 RGBA) of a canvas: compared whole, pixel for pixel."""
    w, h, data = browser.evaluate(READ_CANVAS % canvas)
    return int(w), int(h), data


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, novnc_dir: Path) -> Iterator[dict]:
    logs = tmp_path_factory.mktemp("playback")
    record_dir = logs / "recordings"
    ca, bus = start_consoleauth(logs)
    services = [ca]
    try:
        port = free_port()
        compute = start_compute(logs, bus, "vm-1", "--novncproxy-base-url",
                                f"http://127.0.0.1:{port}/vnc_auto.html", builtin=1)
        services.append(compute.proc)
        proxy = ServiceProcess.start("novncproxy", [
            "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(port),
            "--consoleauth-url", bus, "--web", str(novnc_dir), "--record-dir", str(record_dir)],
            logs)
        services.append(proxy)
        wait_tcp("127.0.0.1", port)
        yield {"bus": bus, "compute": compute.control, "proxy": proxy, "dir": record_dir,
               "port": port}
    finally:
        for svc in reversed(services):
            svc.stop()


@contextmanager
def player(*args: str) -> Iterator[str]:
    """`consolectl recordings play ...` running; yields the URL it printed."""
    proc = subprocess.Popen([str(VENV_BIN / "consolectl"), "recordings", "play", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 20)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        match = re.search(r"at (http://127\.0\.0\.1:\d+/) ", line)
        assert match, f"no URL printed: {line!r} {proc.poll()}"
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]


def open_player(browser: Browser, url: str) -> None:
    browser.navigate(url + "?autoplay=0")
    browser.wait_for("['paused', 'failed'].includes(document.body.dataset.state)", timeout=20)
    assert browser.evaluate("document.body.dataset.state") == "paused"


def settled_pixels(browser: Browser, timeout: float = 5.0) -> tuple[int, int, str]:
    """The canvas once two reads 0.2 s apart agree (the viewer has drawn what it was fed)."""
    deadline = time.monotonic() + timeout
    seen = pixels(browser)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = pixels(browser)
        if now == seen:
            return now
        seen = now
    return seen


def seek(browser: Browser, t: float) -> tuple[int, int, str]:
    browser.evaluate(f"window.player.seek({t!r}).then(() => true)", timeout=30)
    browser.wait_for("document.body.dataset.state === 'paused'", timeout=10)
    return pixels(browser)


def test_recorded_session_plays_back_in_the_browser(browser: Browser, stack: dict,
                                                    tmp_path: Path) -> None:
    # --- the live session ---------------------------------------------------------------
    with BusClient([stack["compute"]], timeout=5) as compute:
        console = compute.call("get_vnc_console", instance_id="vm-1", console_type="novnc")
    remember_secret(console["token"])
    before = len(stack["proxy"].lines())
    browser.navigate(console["access_url"])
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    pattern = TestPattern("vm-1")
    x, y, _, h = pattern.name_band
    probe = ((y + h // 2) * pattern.width + x + 2) * 4
    browser.wait_for(f"(() => {{ const c = {LIVE}; if (!c || c.width !== 640) return false;"
                     f" const d = c.getContext('2d').getImageData(0, 0, 640, 480).data;"
                     f" return [d[{probe}], d[{probe + 1}], d[{probe + 2}]].join() ==="
                     f" '{','.join(map(str, NAME_BG))}'; }})()", timeout=20)
    browser.click(300, 300)  # focus the console
    browser.type_text("q")
    time.sleep(1.0)
    t1 = time.time()
    middle = pixels(browser)
    t2 = time.time()
    time.sleep(1.0)
    browser.type_text("w")
    time.sleep(1.0)
    # noVNC drops its canvas from the page when the session ends: keep hold of it
    browser.evaluate(f"window.liveCanvas = {LIVE}; true")
    start = stack["proxy"].wait_for_log("session.start")
    session_id = start["session_id"]
    with BusClient([stack["bus"]], timeout=5) as bus:
        assert bus.call("disconnect", session_ids=[session_id])["matched"] == 1
    end = stack["proxy"].wait_for_log("session.end", session_id=session_id)
    assert len([ln for ln in stack["proxy"].lines()[before:]
                if ln.get("event") == "session.start"]) >= 1
    browser.wait_for("document.body.dataset.state !== 'connected'", timeout=10)
    last = pixels(browser, "window.liveCanvas")
    assert last[:2] == (640, 480) and last != middle  # the pattern moved, keys changed it
    path = Path(end["recording"])
    recording = decode(path.read_bytes())
    started = recording.header["started"]

    # --- played back -----------------------------------------------------------------------
    cut = path.read_bytes()[: int(path.stat().st_size * 0.6)]
    cut_duration = decode(cut).duration
    with player(session_id, "--record-dir", str(stack["dir"])) as url:
        open_player(browser, url)
        meta = browser.evaluate("document.getElementById('meta').textContent")
        assert session_id in meta and "vm-1 640×480" in meta and "disconnected" in meta
        duration = browser.evaluate("window.player.duration")
        assert abs(duration - recording.duration) < 1e-6 and duration > 2.5

        # a click in the middle of the timeline seeks there
        left, top, width, height = browser.evaluate(
            "(() => { const r = document.getElementById('timeline').getBoundingClientRect();"
            " return [r.left, r.top, r.width, r.height]; })()")
        browser.click(left + width / 2, top + height / 2)
        browser.wait_for("document.body.dataset.state === 'paused' && "
                         "Math.abs(window.player.position / window.player.duration - 0.5)"
                         " < 0.02", timeout=15)

        # what the live session showed between t1 and t2 is the state after one of the
        # frames recorded about then (the browser got each a moment after the proxy)
        times = browser.evaluate("window.player.times")
        lo, hi = t1 - started - 0.3, t2 - started + 0.05
        candidates = sorted({t for t in times if lo <= t <= hi} | {max(t for t in times
                                                                       if t < lo)})
        assert 0.5 < lo < duration - 1.0 and len(candidates) < 40
        matched = [t for t in candidates if seek(browser, t) == middle]
        assert matched, f"no recorded state in {lo:.2f}..{hi:.2f}s shows the live frame"

        # played to the end at 16x: the last frame is the live session's last frame
        browser.evaluate("window.player.seek(0).then(() => true)")
        browser.wait_for("document.body.dataset.state === 'paused'")
        browser.evaluate("document.querySelector('#speeds [data-speed=\"16\"]').click(); "
                         "document.getElementById('play').click(); true")
        assert browser.evaluate("document.body.dataset.state") == "playing"
        browser.wait_for("document.body.dataset.state === 'ended'", timeout=duration / 16 + 10)
        final = settled_pixels(browser)
        # The live session's last frame is the state after the recording's last frame, or
        # one just before: the session was cut while the pattern kept moving, so a chunk
        # already recorded may still have been on its way to the browser (seen under load).
        tail = [t for t in times if times[-1] - 1.0 <= t < duration][-15:]
        assert final == last or any(seek(browser, t) == last for t in reversed(tail)), \
            "the live session's last frame is none of the recording's last states"
        at_cut = seek(browser, cut_duration)

    # --- a truncated file plays to its end and says so ---------------------------------
    damaged = tmp_path / "cut.rec"
    damaged.write_bytes(cut)
    with player(str(damaged)) as url:
        open_player(browser, url)
        assert browser.evaluate("document.body.dataset.damaged") == "true"
        assert "damaged" in browser.evaluate("document.getElementById('message').textContent")
        browser.evaluate("window.player.setSpeed(16); window.player.play(); true")
        browser.wait_for("document.body.dataset.state === 'ended'", timeout=duration / 16 + 10)
        message = browser.evaluate("document.getElementById('message').textContent")
        assert "reached the damage" in message and "truncated at byte" in message
        assert abs(browser.evaluate("window.player.position") - cut_duration) < 1e-6
        assert pixels(browser) == at_cut


@pytest.fixture
def xvnc(tmp_path: Path) -> Iterator[int]:
    """TigerVNC's Xvnc with an xterm: a real server with Tight encoding (zlib streams whose
    state a replay must rebuild from the start)."""
    for tool in ("Xvnc", "xterm"):
        require(shutil.which(tool) is not None, f"{tool} is missing: run scripts/install-system.sh")
    display = next(n for n in range(600, 700) if not Path(f"/tmp/.X{n}-lock").exists()
                   and not Path(f"/tmp/.X11-unix/X{n}").exists())
    port = free_port()
    procs = [subprocess.Popen(["Xvnc", f":{display}", "-geometry", "400x300", "-depth", "24",
                               "-SecurityTypes", "None", "-rfbport", str(port), "-localhost",
                               "-AlwaysShared", "-desktop", "rec-xvnc"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        wait_tcp("127.0.0.1", port)
        procs.append(subprocess.Popen(
            ["xterm", "-geometry", "40x10+0+0", "-bg", "black", "-fg", "white"],
            env={**os.environ, "DISPLAY": f":{display}"}, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL))
        time.sleep(1.0)  # let the xterm map
        yield port
    finally:
        for proc in reversed(procs):
            proc.kill()
            proc.wait(10)


def test_a_real_vnc_server_session_replays_to_the_same_last_frame(
        browser: Browser, stack: dict, xvnc: int) -> None:
    with BusClient([stack["bus"]], timeout=5) as bus:
        token = remember_secret(bus.call("authorize_console", console_type="novnc",
                                         host="127.0.0.1", port=xvnc,
                                         instance_uuid="rec-xvnc")["token"])
    browser.navigate(f"http://127.0.0.1:{stack['port']}/vnc_auto.html?token={token}")
    browser.wait_for("document.body.dataset.state === 'connected'", timeout=30)
    browser.click(100, 60)  # into the xterm
    browser.type_text("echo recorded\n")
    time.sleep(1.5)
    browser.evaluate(f"window.liveCanvas = {LIVE}; true")
    start = stack["proxy"].wait_for_log("session.start", instance_uuid="rec-xvnc")
    with BusClient([stack["bus"]], timeout=5) as bus:
        bus.call("disconnect", session_ids=[start["session_id"]])
    end = stack["proxy"].wait_for_log("session.end", session_id=start["session_id"])
    browser.wait_for("document.body.dataset.state !== 'connected'", timeout=10)
    last = pixels(browser, "window.liveCanvas")
    assert last[:2] == (400, 300)
    with player(end["recording"]) as url:
        open_player(browser, url)
        assert "rec-xvnc 400×300" in browser.evaluate("document.getElementById('meta').textContent")
        browser.evaluate("window.player.setSpeed(16); window.player.play(); true")
        browser.wait_for("document.body.dataset.state === 'ended'", timeout=20)
        assert pixels(browser) == last
