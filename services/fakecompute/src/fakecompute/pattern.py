"""The test pattern a built-in fake instance shows (pure: no I/O, no clock).

    pattern = TestPattern("vm-1")
    pattern.key(0x61, down=True)          # "last key: a"
    pattern.pointer(100, 50, buttons=1)   # crosshair, click mark
    frame, damage = pattern.render(t)     # RGB888 bytes, rectangles changed since last render

The screen: the instance name in big letters (a 5x7 bitmap font scaled up), colour bars
with a bar sweeping across them (so the screen changes over time), an uptime/frame line,
the last key typed and the pointer's position, buttons and clicks. Everything is drawn
with bytes slice assignment (a row or a rectangle at a time): no per-pixel Python loop per
frame. ``render`` reports damage so a server sends only what changed.
"""

from __future__ import annotations

from collections import deque
from functools import lru_cache
from typing import Any

Rect = tuple[int, int, int, int]  # x, y, width, height
RGB = tuple[int, int, int]

WIDTH, HEIGHT = 640, 480

BACKGROUND: RGB = (32, 32, 32)
NAME_BG: RGB = (0, 0, 128)
NAME_FG: RGB = (255, 255, 255)
TEXT_FG: RGB = (255, 255, 0)
KEY_FG: RGB = (0, 255, 128)
FOOTER_FG: RGB = (160, 160, 160)
SWEEP: RGB = (255, 255, 255)
CROSS_IDLE: RGB = (255, 255, 0)
CROSS_PRESSED: RGB = (255, 0, 0)
MARK: RGB = (255, 0, 255)
BARS: tuple[RGB, ...] = ((192, 192, 192), (192, 192, 0), (0, 192, 192), (0, 192, 0),
                         (192, 0, 192), (192, 0, 0), (0, 0, 192), (0, 0, 0))

GLYPH_W, GLYPH_H = 5, 7
SWEEP_WIDTH = 24
SWEEP_SPEED = 160.0  # pixels per second
CROSS_ARM = 10
MARK_SIZE = 9
MAX_MARKS = 8

# 5x7 glyphs, one string of 7 rows of 5 bits each. Lower case is drawn as upper case.
_FONT_SRC = {
    "A": "01110 10001 10001 11111 10001 10001 10001",
    "B": "11110 10001 10001 11110 10001 10001 11110",
    "C": "01110 10001 10000 10000 10000 10001 01110",
    "D": "11100 10010 10001 10001 10001 10010 11100",
    "E": "11111 10000 10000 11110 10000 10000 11111",
    "F": "11111 10000 10000 11110 10000 10000 10000",
    "G": "01110 10001 10000 10111 10001 10001 01111",
    "H": "10001 10001 10001 11111 10001 10001 10001",
    "I": "01110 00100 00100 00100 00100 00100 01110",
    "J": "00111 00010 00010 00010 00010 10010 01100",
    "K": "10001 10010 10100 11000 10100 10010 10001",
    "L": "10000 10000 10000 10000 10000 10000 11111",
    "M": "10001 11011 10101 10101 10001 10001 10001",
    "N": "10001 10001 11001 10101 10011 10001 10001",
    "O": "01110 10001 10001 10001 10001 10001 01110",
    "P": "11110 10001 10001 11110 10000 10000 10000",
    "Q": "01110 10001 10001 10001 10101 10010 01101",
    "R": "11110 10001 10001 11110 10100 10010 10001",
    "S": "01111 10000 10000 01110 00001 00001 11110",
    "T": "11111 00100 00100 00100 00100 00100 00100",
    "U": "10001 10001 10001 10001 10001 10001 01110",
    "V": "10001 10001 10001 10001 10001 01010 00100",
    "W": "10001 10001 10001 10101 10101 10101 01010",
    "X": "10001 10001 01010 00100 01010 10001 10001",
    "Y": "10001 10001 01010 00100 00100 00100 00100",
    "Z": "11111 00001 00010 00100 01000 10000 11111",
    "0": "01110 10001 10011 10101 11001 10001 01110",
    "1": "00100 01100 00100 00100 00100 00100 01110",
    "2": "01110 10001 00001 00010 00100 01000 11111",
    "3": "11111 00010 00100 00010 00001 10001 01110",
    "4": "00010 00110 01010 10010 11111 00010 00010",
    "5": "11111 10000 11110 00001 00001 10001 01110",
    "6": "00110 01000 10000 11110 10001 10001 01110",
    "7": "11111 00001 00010 00100 01000 01000 01000",
    "8": "01110 10001 10001 01110 10001 10001 01110",
    "9": "01110 10001 10001 01111 00001 00010 01100",
    " ": "00000 00000 00000 00000 00000 00000 00000",
    ":": "00000 01100 01100 00000 01100 01100 00000",
    ".": "00000 00000 00000 00000 00000 01100 01100",
    ",": "00000 00000 00000 00000 01100 00100 01000",
    ";": "00000 01100 01100 00000 01100 00100 01000",
    "-": "00000 00000 00000 11111 00000 00000 00000",
    "_": "00000 00000 00000 00000 00000 00000 11111",
    "/": "00000 00001 00010 00100 01000 10000 00000",
    "\\": "00000 10000 01000 00100 00010 00001 00000",
    "(": "00010 00100 01000 01000 01000 00100 00010",
    ")": "01000 00100 00010 00010 00010 00100 01000",
    "[": "01110 01000 01000 01000 01000 01000 01110",
    "]": "01110 00010 00010 00010 00010 00010 01110",
    "{": "00010 00100 00100 01000 00100 00100 00010",
    "}": "01000 00100 00100 00010 00100 00100 01000",
    "<": "00010 00100 01000 10000 01000 00100 00010",
    ">": "01000 00100 00010 00001 00010 00100 01000",
    "=": "00000 00000 11111 00000 11111 00000 00000",
    "+": "00000 00100 00100 11111 00100 00100 00000",
    "*": "00000 00100 10101 01110 10101 00100 00000",
    "?": "01110 10001 00001 00010 00100 00000 00100",
    "!": "00100 00100 00100 00100 00100 00000 00100",
    "'": "01100 00100 01000 00000 00000 00000 00000",
    '"': "01010 01010 01010 00000 00000 00000 00000",
    "`": "01000 00100 00010 00000 00000 00000 00000",
    "#": "01010 01010 11111 01010 11111 01010 01010",
    "@": "01110 10001 00001 01101 10101 10101 01110",
    "%": "11000 11001 00010 00100 01000 10011 00011",
    "&": "01100 10010 10100 01000 10101 10010 01101",
    "|": "00100 00100 00100 00100 00100 00100 00100",
    "$": "00100 01111 10100 01110 00101 11110 00100",
    "^": "00100 01010 10001 00000 00000 00000 00000",
    "~": "00000 00000 01000 10101 00010 00000 00000",
}
FONT: dict[str, tuple[str, ...]] = {ch: tuple(rows.split()) for ch, rows in _FONT_SRC.items()}

_KEY_NAMES = {
    0xFF08: "BackSpace", 0xFF09: "Tab", 0xFF0D: "Return", 0xFF1B: "Escape", 0xFFFF: "Delete",
    0xFF50: "Home", 0xFF51: "Left", 0xFF52: "Up", 0xFF53: "Right", 0xFF54: "Down",
    0xFF55: "Page_Up", 0xFF56: "Page_Down", 0xFF57: "End", 0xFF63: "Insert",
    0xFF8D: "KP_Enter", 0xFFE1: "Shift_L", 0xFFE2: "Shift_R", 0xFFE3: "Control_L",
    0xFFE4: "Control_R", 0xFFE7: "Meta_L", 0xFFE8: "Meta_R", 0xFFE9: "Alt_L", 0xFFEA: "Alt_R",
    0xFFEB: "Super_L", 0xFFEC: "Super_R", 0x20: "space",
    **{0xFFBE + i: f"F{i + 1}" for i in range(12)},
}


def keysym_name(keysym: int) -> str:
    """X11 keysym -> a short readable name ("a", "Return", "F5", "0x1008ff13")."""
    if keysym in _KEY_NAMES:
        return _KEY_NAMES[keysym]
    if 0x21 <= keysym <= 0x7E:
        return chr(keysym)
    return f"0x{keysym:x}"


def _glyph(ch: str) -> tuple[str, ...]:
    return FONT.get(ch) or FONT.get(ch.upper()) or FONT["?"]


@lru_cache(maxsize=512)
def text_rows(text: str, scale: int, fg: RGB, bg: RGB) -> tuple[int, int, tuple[bytes, ...]]:
    """(width, height, RGB888 rows) of ``text`` drawn at ``scale`` (1 column gap a glyph).

    Built once per (text, scale, colours): the loop runs over glyph cells, never over the
    frame; each glyph row is then repeated ``scale`` times by reference.
    """
    on, off = bytes(fg) * scale, bytes(bg) * scale
    cell = {"1": on, "0": off}
    rows: list[bytes] = []
    for r in range(GLYPH_H):
        line = off.join(b"".join(cell[bit] for bit in _glyph(ch)[r]) for ch in text)
        rows += [line] * scale
    width = len(rows[0]) // 3 if rows and rows[0] else 0
    return width, GLYPH_H * scale, tuple(rows)


def text_size(text: str, scale: int) -> tuple[int, int]:
    n = len(text)
    return (n * (GLYPH_W + 1) - 1) * scale if n else 0, GLYPH_H * scale


class Canvas:
    """An RGB888 frame buffer with clipped rectangle fills and row blits."""

    def __init__(self, width: int, height: int, data: bytes | bytearray | None = None) -> None:
        self.width, self.height, self.stride = width, height, width * 3
        self.data = bytearray(data) if data is not None else bytearray(width * height * 3)

    def _clip(self, x: int, y: int, w: int, h: int) -> Rect:
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)

    def fill(self, x: int, y: int, w: int, h: int, rgb: RGB) -> None:
        x, y, w, h = self._clip(x, y, w, h)
        if not w or not h:
            return
        row, data, stride = bytes(rgb) * w, self.data, self.stride
        start = y * stride + x * 3
        if w == self.width:  # whole rows are contiguous: one assignment
            data[start:start + h * stride] = row * h
            return
        for offset in range(start, start + h * stride, stride):
            data[offset:offset + w * 3] = row

    def blit_rows(self, x: int, y: int, rows: tuple[bytes, ...]) -> None:
        """Paste rows of RGB888 with their top-left at (x, y), clipped to the canvas."""
        if not rows:
            return
        w = len(rows[0]) // 3
        cx, cy, cw, ch = self._clip(x, y, w, len(rows))
        if not cw or not ch:
            return
        skip_left, first = (cx - x) * 3, cy - y
        stride, data = self.stride, self.data
        offset = cy * stride + cx * 3
        for row in rows[first:first + ch]:
            data[offset:offset + cw * 3] = row[skip_left:skip_left + cw * 3]
            offset += stride

    def text(self, x: int, y: int, text: str, scale: int, fg: RGB, bg: RGB) -> Rect:
        w, h, rows = text_rows(text, scale, fg, bg)
        self.blit_rows(x, y, rows)
        return x, y, w, h

    def region(self, x: int, y: int, w: int, h: int) -> bytes:
        """RGB888 bytes of a rectangle (one slice a row)."""
        x, y, w, h = self._clip(x, y, w, h)
        stride, data = self.stride, self.data
        if x == 0 and w == self.width:
            return bytes(data[y * stride:(y + h) * stride])
        start = y * stride + x * 3
        return b"".join(data[o:o + w * 3] for o in range(start, start + h * stride, stride))


def region_of(frame: bytes, width: int, rect: Rect) -> bytes:
    """RGB888 bytes of ``rect`` inside a frame ``width`` pixels wide (rect already clipped)."""
    x, y, w, h = rect
    stride = width * 3
    if x == 0 and w == width:
        return frame[y * stride:(y + h) * stride]
    start = y * stride + x * 3
    return b"".join(frame[o:o + w * 3] for o in range(start, start + h * stride, stride))


class TestPattern:
    """State (name, last key, pointer, clicks) and the frames it renders."""

    __test__ = False  # not a pytest test class

    def __init__(self, name: str, width: int = WIDTH, height: int = HEIGHT) -> None:
        if width < 320 or height < 240:
            raise ValueError("the test pattern needs at least 320x240")
        self.name, self.width, self.height = name, width, height
        self.last_key: int | None = None
        self.keys = 0
        self.pointer_xy = (width // 2, height // 2)
        self.buttons = 0
        self.clicks = 0
        self.marks: deque[tuple[int, int]] = deque(maxlen=MAX_MARKS)
        self.frames = 0
        # Layout (fixed boxes; text inside is redrawn when it changes).
        shown = name if len(name) <= 24 else name[:23] + "~"
        self.name_scale = max(2, min(8, (width - 32) // ((GLYPH_W + 1) * len(shown))))
        nw, nh = text_size(shown, self.name_scale)
        band_h = nh + 24
        self.name_band: Rect = (0, 8, width, band_h)
        self.name_box: Rect = ((width - nw) // 2, 8 + 12, nw, nh)
        bars_y = 8 + band_h + 16
        bars_h = max(64, height * 2 // 5)
        self.bars_box: Rect = (0, bars_y, width, bars_h)
        self.clock_box: Rect = (0, bars_y + bars_h + 8, width, 7 * 2 + 4)
        self.key_box: Rect = (0, self.clock_box[1] + self.clock_box[3] + 8, width, 7 * 3 + 4)
        self.pointer_box: Rect = (0, self.key_box[1] + self.key_box[3] + 8, width, 7 * 2 + 4)
        self._shown_name = shown
        self._base = self._draw_base()
        self._previous: dict[str, Any] | None = None

    # --- input ----------------------------------------------------------------------
    def key(self, keysym: int, down: bool) -> None:
        if down:
            self.last_key = keysym
            self.keys += 1

    def pointer(self, x: int, y: int, buttons: int) -> None:
        x = min(max(0, x), self.width - 1)
        y = min(max(0, y), self.height - 1)
        pressed = buttons & ~self.buttons & 0xFF
        if pressed:
            self.clicks += pressed.bit_count()
            self.marks.append((x, y))
        self.pointer_xy, self.buttons = (x, y), buttons & 0xFF

    # --- texts ----------------------------------------------------------------------
    def key_text(self) -> str:
        if self.last_key is None:
            return "last key: (none)"
        return f"last key: {keysym_name(self.last_key)[:20]} (0x{self.last_key:04x})"

    def pointer_text(self) -> str:
        x, y = self.pointer_xy
        return f"pointer: {x},{y}  buttons: {self.buttons}  clicks: {self.clicks}"

    # --- drawing --------------------------------------------------------------------
    def _draw_base(self) -> bytes:
        c = Canvas(self.width, self.height)
        c.fill(0, 0, self.width, self.height, BACKGROUND)
        c.fill(*self.name_band, NAME_BG)
        x, y, _w, _h = self.name_box
        c.text(x, y, self._shown_name, self.name_scale, NAME_FG, NAME_BG)
        bx, by, bw, bh = self.bars_box
        step = bw // len(BARS)
        row = b"".join(bytes(colour) * step for colour in BARS)
        row += bytes(BARS[-1]) * (bw - step * len(BARS))
        c.blit_rows(bx, by, (row,) * bh)
        footer = f"fake compute console {self.width}x{self.height}"
        c.text(16, self.height - 7 * 2 - 8, footer, 2, FOOTER_FG, BACKGROUND)
        return bytes(c.data)

    def _sweep_rect(self, t: float) -> Rect:
        bx, by, bw, bh = self.bars_box
        span = bw - SWEEP_WIDTH
        pos = int(t * SWEEP_SPEED) % (2 * span)
        x = pos if pos < span else 2 * span - pos  # back and forth
        return bx + x, by, SWEEP_WIDTH, bh

    def _cross_rect(self) -> Rect:
        x, y = self.pointer_xy
        return x - CROSS_ARM, y - CROSS_ARM, 2 * CROSS_ARM + 1, 2 * CROSS_ARM + 1

    def render(self, t: float) -> tuple[bytes, list[Rect]]:
        """The frame at time ``t`` (seconds) and the rectangles that differ from the
        previous render (the whole screen the first time)."""
        self.frames += 1
        c = Canvas(self.width, self.height, self._base)
        sweep = self._sweep_rect(t)
        c.fill(*sweep, SWEEP)
        clock = f"uptime {t:7.1f}s  frame {self.frames}"
        cy = self.clock_box[1]
        c.text(16, cy + 2, clock, 2, TEXT_FG, BACKGROUND)
        key_text = self.key_text()
        c.text(16, self.key_box[1] + 2, key_text, 3, KEY_FG, BACKGROUND)
        pointer_text = self.pointer_text()
        c.text(16, self.pointer_box[1] + 2, pointer_text, 2, TEXT_FG, BACKGROUND)
        half = MARK_SIZE // 2
        marks = tuple((mx - half, my - half, MARK_SIZE, MARK_SIZE) for mx, my in self.marks)
        for mark in marks:
            c.fill(*mark, MARK)
        cross = self._cross_rect()
        colour = CROSS_PRESSED if self.buttons else CROSS_IDLE
        px, py = self.pointer_xy
        c.fill(px - CROSS_ARM, py, 2 * CROSS_ARM + 1, 1, colour)
        c.fill(px, py - CROSS_ARM, 1, 2 * CROSS_ARM + 1, colour)
        current = {"sweep": sweep, "cross": (cross, colour), "marks": marks,
                   "key": key_text, "pointer": pointer_text}
        damage = self._damage(current)
        self._previous = current
        return bytes(c.data), [self._clip(r) for r in damage if self._clip(r)[2:] != (0, 0)]

    def _damage(self, now: dict[str, Any]) -> list[Rect]:
        prev = self._previous
        if prev is None:
            return [(0, 0, self.width, self.height)]
        out: list[Rect] = [self.clock_box]
        if now["sweep"] != prev["sweep"]:
            out += [prev["sweep"], now["sweep"]]
        if now["key"] != prev["key"]:
            out.append(self.key_box)
        pointer_moved = now["cross"] != prev["cross"] or now["marks"] != prev["marks"]
        if now["pointer"] != prev["pointer"] or pointer_moved:
            out.append(self.pointer_box)
        if pointer_moved:
            out += [prev["cross"][0], now["cross"][0]]
            out += [m for m in now["marks"] if m not in prev["marks"]]
            out += [m for m in prev["marks"] if m not in now["marks"]]
        return out

    def _clip(self, r: Rect) -> Rect:
        x, y, w, h = r
        x0, y0 = max(0, x), max(0, y)
        x1, y1 = min(self.width, x + w), min(self.height, y + h)
        return x0, y0, max(0, x1 - x0), max(0, y1 - y0)
