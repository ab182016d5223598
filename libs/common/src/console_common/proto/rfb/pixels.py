"""Pixel conversion between packed RGB888 (3 bytes a pixel: R, G, B) and a PixelFormat.

The common case (32 bpp true colour, 8-bit channels on byte boundaries, e.g. BGRX32 that
noVNC asks for) is done with strided slice assignment, no per-pixel Python loop. Other
true-colour formats (16 bpp, 8 bpp, odd maxima) take a correct table-driven fallback.
Colour-map formats are refused (there is no palette to map to).
"""

from __future__ import annotations

import sys
from array import array

from .events import PixelFormat

_ARRAY_CODE = {1: "B", 2: "H", 4: "I" if array("I").itemsize == 4 else "L"}


def _byte_offsets(pf: PixelFormat) -> tuple[int, int, int] | None:
    """Byte index of red, green, blue inside a 32 bpp pixel, when the fast path applies."""
    if not (pf.bits_per_pixel == 32 and pf.true_colour):
        return None
    if (pf.red_max, pf.green_max, pf.blue_max) != (255, 255, 255):
        return None
    shifts = (pf.red_shift, pf.green_shift, pf.blue_shift)
    if len(set(shifts)) != 3 or any(s % 8 or s > 24 for s in shifts):
        return None
    r, g, b = (3 - s // 8 if pf.big_endian else s // 8 for s in shifts)
    return r, g, b


def _check_true_colour(pf: PixelFormat) -> None:
    if not pf.true_colour:
        raise ValueError("colour-map pixel formats are not supported")


def _to_wire(values: list[int], pf: PixelFormat) -> bytes:
    arr = array(_ARRAY_CODE[pf.bytes_per_pixel], values)
    if pf.bytes_per_pixel > 1 and pf.big_endian != (sys.byteorder == "big"):
        arr.byteswap()
    return arr.tobytes()


def _from_wire(data: bytes, pf: PixelFormat) -> array:
    arr = array(_ARRAY_CODE[pf.bytes_per_pixel])
    arr.frombytes(data)
    if pf.bytes_per_pixel > 1 and pf.big_endian != (sys.byteorder == "big"):
        arr.byteswap()
    return arr


def rgb_to_pixels(rgb: bytes | bytearray | memoryview, pf: PixelFormat) -> bytes:
    """Convert packed RGB888 to ``pf`` pixels (the Raw encoding's payload)."""
    _check_true_colour(pf)
    if len(rgb) % 3:
        raise ValueError(f"RGB888 buffer length {len(rgb)} is not a multiple of 3")
    count = len(rgb) // 3
    if (offsets := _byte_offsets(pf)) is not None:
        out = bytearray(count * 4)
        for channel, off in enumerate(offsets):
            out[off::4] = rgb[channel::3]
        return bytes(out)
    rt = [(v * pf.red_max + 127) // 255 << pf.red_shift for v in range(256)]
    gt = [(v * pf.green_max + 127) // 255 << pf.green_shift for v in range(256)]
    bt = [(v * pf.blue_max + 127) // 255 << pf.blue_shift for v in range(256)]
    values = [rt[r] | gt[g] | bt[b] for r, g, b in zip(rgb[0::3], rgb[1::3], rgb[2::3])]
    return _to_wire(values, pf)


def pixels_to_rgb(data: bytes | bytearray | memoryview, pf: PixelFormat) -> bytes:
    """Convert ``pf`` pixels back to packed RGB888 (channels scaled up to 0..255)."""
    _check_true_colour(pf)
    bpp = pf.bytes_per_pixel
    if len(data) % bpp:
        raise ValueError(f"pixel buffer length {len(data)} is not a multiple of {bpp}")
    count = len(data) // bpp
    if (offsets := _byte_offsets(pf)) is not None:
        out = bytearray(count * 3)
        for channel, off in enumerate(offsets):
            out[channel::3] = data[off::4]
        return bytes(out)
    channels = (
        (pf.red_shift, pf.red_max),
        (pf.green_shift, pf.green_max),
        (pf.blue_shift, pf.blue_max),
    )
    out = bytearray(count * 3)
    values = _from_wire(bytes(data), pf)
    for channel, (shift, cmax) in enumerate(channels):
        if cmax == 0:
            continue
        scale = [(c * 255 + cmax // 2) // cmax for c in range(cmax + 1)]
        out[channel::3] = bytes(scale[(v >> shift) & cmax] for v in values)
    return bytes(out)


def pixel_bytes(pf: PixelFormat, red: int, green: int, blue: int) -> bytes:
    """One pixel of colour (red, green, blue) (0..255 each) in ``pf``."""
    return rgb_to_pixels(bytes((red, green, blue)), pf)
