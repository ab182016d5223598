"""Pixel conversion: RGB888 <-> PixelFormat, fast path and fallback."""

from __future__ import annotations

import pytest
from console_common.proto.rfb import (
    BGR233,
    BGRX32,
    RGB565,
    PixelFormat,
    pixel_bytes,
    pixels_to_rgb,
    rgb_to_pixels,
)

RGB = bytes([255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 255, 255, 255, 0, 0, 0])
XRGB_BE = PixelFormat(32, 24, True, True, 255, 255, 255, 16, 8, 0)
RGBX_LE = PixelFormat(32, 24, False, True, 255, 255, 255, 0, 8, 16)


def test_bgrx32_layout() -> None:
    assert rgb_to_pixels(b"\x01\x02\x03", BGRX32) == b"\x03\x02\x01\x00"
    assert rgb_to_pixels(b"\x01\x02\x03", XRGB_BE) == b"\x00\x01\x02\x03"
    assert rgb_to_pixels(b"\x01\x02\x03", RGBX_LE) == b"\x01\x02\x03\x00"


@pytest.mark.parametrize("pf", [BGRX32, XRGB_BE, RGBX_LE])
def test_32bpp_round_trip_is_exact(pf: PixelFormat) -> None:
    rgb = bytes(range(256)) * 3 * 40
    assert pixels_to_rgb(rgb_to_pixels(rgb, pf), pf) == rgb


def test_32bpp_matches_the_general_formula() -> None:
    data = rgb_to_pixels(RGB, BGRX32)
    for i in range(len(RGB) // 3):
        r, g, b = RGB[3 * i : 3 * i + 3]
        assert int.from_bytes(data[4 * i : 4 * i + 4], "little") == r << 16 | g << 8 | b


def test_rgb565() -> None:
    out = rgb_to_pixels(RGB, RGB565)
    assert len(out) == 12
    assert out[:6] == (0xF800).to_bytes(2, "little") + (0x07E0).to_bytes(2, "little") + (
        0x001F
    ).to_bytes(2, "little")
    back = pixels_to_rgb(out, RGB565)
    assert back[:9] == RGB[:9]  # pure colours survive
    assert all(abs(a - b) <= 4 for a, b in zip(back, RGB))


def test_rgb565_big_endian_and_bgr233() -> None:
    be = PixelFormat(16, 16, True, True, 31, 63, 31, 11, 5, 0)
    assert rgb_to_pixels(b"\xff\x00\x00", be) == b"\xf8\x00"
    assert rgb_to_pixels(b"\xff\xff\xff\x00\x00\xff", BGR233) == b"\xff\xc0"
    assert pixels_to_rgb(b"\xff\xc0", BGR233) == b"\xff\xff\xff\x00\x00\xff"


def test_pixel_bytes_and_errors() -> None:
    assert pixel_bytes(BGRX32, 1, 2, 3) == b"\x03\x02\x01\x00"
    with pytest.raises(ValueError, match="multiple of 3"):
        rgb_to_pixels(b"\x00\x00", BGRX32)
    palette = PixelFormat(8, 8, False, False, 0, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError, match="colour-map"):
        rgb_to_pixels(RGB, palette)


def test_a_large_frame_is_fast_enough() -> None:
    rgb = bytes(1920 * 1080 * 3)
    assert len(rgb_to_pixels(rgb, BGRX32)) == 1920 * 1080 * 4
