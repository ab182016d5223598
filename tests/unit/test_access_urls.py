"""Access URLs, exactly as DESIGN.md and Nova build them (shared by fake-compute and consolectl)."""

from __future__ import annotations

import pytest
from console_common.proto.urls import access_url

T = "0b6e3c36-4f8e-4c2b-9a39-6a8d8d3a1c2e"
NOVNC = "http://127.0.0.1:6080/vnc_auto.html"
XVP = "http://172.24.1.1:6081/console"


@pytest.mark.parametrize("build", [access_url])
@pytest.mark.parametrize(("kind", "novnc", "xvp", "expected"), [
    ("novnc", NOVNC, XVP, f"{NOVNC}?path=%3Ftoken%3D{T}&token={T}"),
    ("xvpvnc", NOVNC, XVP, f"{XVP}?token={T}"),
    ("novnc", "https://c.example/vnc_lite.html?scale=1", XVP,
     f"https://c.example/vnc_lite.html?scale=1&path=%3Ftoken%3D{T}&token={T}"),
    ("novnc", "https://c.example/vnc.html?", XVP,
     f"https://c.example/vnc.html?path=%3Ftoken%3D{T}&token={T}"),
    ("novnc", "https://c.example/vnc.html#top", XVP,
     f"https://c.example/vnc.html?path=%3Ftoken%3D{T}&token={T}#top"),
])
def test_exact_strings(build, kind: str, novnc: str, xvp: str, expected: str) -> None:
    assert build(kind, T, novnc, xvp) == expected


@pytest.mark.parametrize("build", [access_url])
def test_unknown_type_refused(build) -> None:
    with pytest.raises(ValueError):
        build("spice", T, NOVNC, XVP)
