"""Fixtures for end-to-end tests in a real headless Chromium."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cdp import CHROMIUM, Browser

REPO = Path(__file__).resolve().parents[2]
NOVNC_DIR = REPO / "services" / "novnc" / "web" / "node_modules" / "@novnc" / "novnc"
STATIC_DIR = REPO / "services" / "novnc" / "src" / "novncproxy" / "static"


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """Skip when a tool is missing on a developer machine; fail in CI, which installs it."""
    if condition:
        return
    if in_ci():
        pytest.fail(f"{what} (CI=true: .ci/run must install it)", pytrace=False)
    pytest.skip(what)


@pytest.fixture(scope="session")
def novnc_dir() -> Path:
    """The pinned noVNC client library installed by scripts/install-novnc.sh."""
    require(
        (NOVNC_DIR / "core" / "rfb.js").is_file(),
        f"noVNC is not installed at {NOVNC_DIR}: run scripts/install-novnc.sh",
    )
    return NOVNC_DIR


@pytest.fixture(scope="session")
def static_dir() -> Path:
    """Our console page (console.html, console.js, console.css)."""
    return STATIC_DIR


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    """A fresh headless Chromium with one page; killed after the test."""
    require(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} is absent: run scripts/install-system.sh")
    b = Browser.launch(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        b.close()
