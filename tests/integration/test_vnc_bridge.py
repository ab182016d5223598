"""`consolectl vnc-bridge` with a real third-party VNC client (vncdotool's `vncdo`).

consoleauth, xvpvncproxy, novncproxy and a fake compute host run as real processes; the
console link comes from `consolectl get-vnc-console`, exactly as a user gets it. vncdo
connects to the bridge's local port and captures a screenshot whose pixels must show the
built-in instance's test pattern.
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import pytest
from console_common.net.bus import BusClient
from fakecompute.pattern import BARS, NAME_BG, TestPattern
from PIL import Image

from tests.e2e.conftest import require
from tests.support import VENV_BIN, ServiceProcess, free_port, remember_secret, wait_bus, wait_tcp

INSTANCE = "vm-bridge"
REFUSED = "the console link was refused: invalid or expired token"
UNREACHABLE = "machine unreachable"
_LISTENING = re.compile(r"Forwarding VNC connections on (\S+):(\d+) to the")


def novncproxy_missing() -> str | None:
    """Why novncproxy cannot be used here (None when it can)."""
    exe = VENV_BIN / "novncproxy"
    if not exe.exists():
        return f"{exe} does not exist"
    probe = subprocess.run([str(exe), "--version"], check=False, capture_output=True, timeout=60)
    if probe.returncode != 0:
        return f"`novncproxy --version` failed: {probe.stderr.decode(errors='replace')[-300:]}"
    return None


# --- helpers shared with tests/netns ---------------------------------------------------------


def consolectl(*args: str, netns: str | None = None, timeout: float = 30
               ) -> subprocess.CompletedProcess[str]:
    argv = [str(VENV_BIN / "consolectl"), *args]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)


def get_console_url(compute_url: str, consoleauth_url: str, instance: str, kind: str,
                    netns: str | None = None) -> str:
    done = consolectl("--compute-url", compute_url, "--consoleauth-url", consoleauth_url,
                      "--json", "get-vnc-console", instance, kind, netns=netns)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    remember_secret(result["token"])
    return result["access_url"]


class Bridge:
    """A running `consolectl vnc-bridge - --listen HOST:0` (the URL on stdin, out of `ps`)
    and the port it chose."""

    def __init__(self, url: str, log_dir: Path, netns: str | None = None,
                 extra: Sequence[str] = ()) -> None:
        argv = [str(VENV_BIN / "consolectl"), "vnc-bridge", "-", "--listen", "127.0.0.1:0",
                "--connect-timeout", "5", *extra]
        if netns:
            argv = ["ip", "netns", "exec", netns, *argv]
        log_dir.mkdir(parents=True, exist_ok=True)
        self.stderr_path = log_dir / f"vnc-bridge-{uuid.uuid4().hex[:8]}.stderr"
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=err, text=True, start_new_session=True)
        assert self.proc.stdin is not None
        self.proc.stdin.write(url + "\n")
        self.proc.stdin.close()
        first = self.proc.stdout.readline() if self.proc.stdout else ""
        match = _LISTENING.search(first)
        if match is None:
            self.proc.wait(10)
            raise AssertionError(f"vnc-bridge did not start (exit {self.proc.returncode}): "
                                 f"{first!r} {self.stderr()!r}")
        self.host, self.port = match[1], int(match[2])

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def vncdo_capture(port: int, out: Path, netns: str | None = None, timeout: float = 60
                  ) -> Image.Image:
    argv = [str(VENV_BIN / "vncdo"), "-s", f"127.0.0.1::{port}", "capture", str(out)]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    done = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"vncdo failed: {done.stdout}{done.stderr}"
    return Image.open(out).convert("RGB")


def assert_builtin_screen(image: Image.Image, instance: str) -> None:
    """The fake compute host's test pattern for ``instance``: size, name band, colour bars."""
    pattern = TestPattern(instance)
    assert image.size == (pattern.width, pattern.height)
    band_x, band_y, _, band_h = pattern.name_band
    assert image.getpixel((band_x + 2, band_y + 2)) == NAME_BG
    assert image.getpixel((band_x + 2, band_y + band_h - 3)) == NAME_BG
    bx, by, bw, bh = pattern.bars_box
    step = bw // len(BARS)
    seen = [image.getpixel((bx + i * step + step // 2, by + bh // 2)) for i in range(len(BARS))]
    # The sweeping white bar may cover one bar at capture time; the rest must be exact.
    assert sum(got == want for got, want in zip(seen, BARS, strict=True)) >= len(BARS) - 1, seen


# --- the suite on loopback ---------------------------------------------------------------------


@dataclass
class Suite:
    bus_url: str
    compute_url: str
    xvp_port: int
    novnc_port: int | None
    novnc_skip: str | None
    log_dir: Path

    def url(self, kind: str) -> str:
        return get_console_url(self.compute_url, self.bus_url, INSTANCE, kind)

    def authorize(self, kind: str, host: str, port: int) -> str:
        with BusClient([self.bus_url], timeout=5) as bus:
            token = bus.call("authorize_console", console_type=kind, host=host, port=port,
                             instance_uuid=str(uuid.uuid4()))["token"]
        return remember_secret(token)


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Suite]:
    tmp = tmp_path_factory.mktemp("bridge")
    bus_url = f"tcp://127.0.0.1:{free_port()}"
    compute_url = f"tcp://127.0.0.1:{free_port()}"
    xvp_port, novnc_port, vnc_port = free_port(), free_port(), free_port()
    procs: list[ServiceProcess] = []
    try:
        procs.append(ServiceProcess.start("consoleauth", [
            "--consoleauth-listen", bus_url, "--token-store", "memory"], log_dir=tmp))
        wait_bus(bus_url)
        procs.append(ServiceProcess.start("xvpvncproxy", [
            "--xvpvncproxy-host", "127.0.0.1", "--xvpvncproxy-port", str(xvp_port),
            "--xvpvncproxy-metrics-port", "0", "--consoleauth-url", bus_url], log_dir=tmp))
        novnc_skip = novncproxy_missing()
        if novnc_skip is None:
            procs.append(ServiceProcess.start("novncproxy", [
                "--novncproxy-host", "127.0.0.1", "--novncproxy-port", str(novnc_port),
                "--consoleauth-url", bus_url], log_dir=tmp))
        procs.append(ServiceProcess.start("fake-compute", [
            "--consoleauth-url", bus_url, "--compute-listen", compute_url,
            "--instances", INSTANCE, "--vnc-port-base", str(vnc_port),
            "--xvpvncproxy-base-url", f"http://127.0.0.1:{xvp_port}/console",
            "--novncproxy-base-url", f"http://127.0.0.1:{novnc_port}/vnc_auto.html",
        ], log_dir=tmp))
        wait_tcp("127.0.0.1", xvp_port)
        if novnc_skip is None:
            wait_tcp("127.0.0.1", novnc_port)
        wait_bus(compute_url)
        yield Suite(bus_url, compute_url, xvp_port, novnc_port if novnc_skip is None else None,
                    novnc_skip, tmp)
    finally:
        for proc in reversed(procs):
            proc.stop()


def need_novnc(suite: Suite) -> None:
    require(suite.novnc_skip is None, f"novncproxy is not usable yet: {suite.novnc_skip}")


@pytest.mark.parametrize("kind", ["xvpvnc", "novnc"])
def test_screenshot_through_bridge(suite: Suite, kind: str, tmp_path: Path) -> None:
    if kind == "novnc":
        need_novnc(suite)
    url = suite.url(kind)
    with Bridge(url, tmp_path) as bridge:
        image = vncdo_capture(bridge.port, tmp_path / "screen.png")
        assert_builtin_screen(image, INSTANCE)
        # A second viewer through the same bridge gets its own session.
        again = vncdo_capture(bridge.port, tmp_path / "again.png")
        assert_builtin_screen(again, INSTANCE)
        assert bridge.proc.poll() is None
    assert "ended after" in bridge.stderr()
    assert url.split("token=")[-1] not in bridge.stderr()  # the token is never printed


@pytest.mark.parametrize("kind", ["xvpvnc", "novnc"])
def test_rejected_token_is_a_clear_error(suite: Suite, kind: str) -> None:
    if kind == "novnc":
        need_novnc(suite)
        url = (f"http://127.0.0.1:{suite.novnc_port}/vnc_auto.html?"
               f"path=%3Ftoken%3D{'r' * 40}&token={'r' * 40}")
    else:
        url = f"http://127.0.0.1:{suite.xvp_port}/console?token={'r' * 40}"
    remember_secret("r" * 40)
    done = consolectl("vnc-bridge", url, "--listen", "127.0.0.1:0")
    assert done.returncode == 1, done
    assert REFUSED in done.stderr
    assert done.stdout == ""  # it never started listening


def test_token_of_the_other_kind_is_refused(suite: Suite) -> None:
    novnc_url = suite.url("novnc")
    token = novnc_url.split("token=")[-1]
    done = consolectl("vnc-bridge", f"http://127.0.0.1:{suite.xvp_port}/console?token={token}",
                      "--listen", "127.0.0.1:0")
    assert done.returncode == 1
    assert REFUSED in done.stderr


def test_unreachable_machine_through_xvp(suite: Suite) -> None:
    dead = free_port()
    token = suite.authorize("xvpvnc", "127.0.0.1", dead)
    done = consolectl("vnc-bridge", f"http://127.0.0.1:{suite.xvp_port}/console?token={token}",
                      "--listen", "127.0.0.1:0")
    assert done.returncode == 3
    assert UNREACHABLE in done.stderr


def test_unreachable_machine_through_novnc(suite: Suite, tmp_path: Path) -> None:
    need_novnc(suite)
    dead = free_port()
    token = suite.authorize("novnc", "127.0.0.1", dead)
    url = f"http://127.0.0.1:{suite.novnc_port}/vnc_auto.html?token={token}"
    with Bridge(url, tmp_path) as bridge:  # the token is fine: the bridge starts
        done = subprocess.run([str(VENV_BIN / "vncdo"), "-s", f"127.0.0.1::{bridge.port}",
                               "capture", str(tmp_path / "never.png")],
                              check=False, capture_output=True, text=True, timeout=60)
        assert done.returncode != 0
        assert not (tmp_path / "never.png").exists()
    assert UNREACHABLE in bridge.stderr()
