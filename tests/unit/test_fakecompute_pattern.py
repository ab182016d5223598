"""The fake instance's test pattern: size, the name in big letters, input, damage (pure)."""

from __future__ import annotations

import time

from fakecompute.pattern import (
    FONT,
    KEY_FG,
    NAME_BG,
    NAME_FG,
    TestPattern,
    keysym_name,
    region_of,
    text_rows,
)

W, H = 640, 480


def pixels(frame: bytes, rect: tuple[int, int, int, int]) -> list[tuple[int, int, int]]:
    data = region_of(frame, W, rect)
    return list(zip(data[0::3], data[1::3], data[2::3]))


def test_frame_size_and_name_drawn_in_the_name_box() -> None:
    p = TestPattern("vm-1")
    frame, damage = p.render(0.0)
    assert len(frame) == W * H * 3
    assert damage == [(0, 0, W, H)]
    box = pixels(frame, p.name_box)
    fg = box.count(NAME_FG)
    # Glyph cells lit: V, M, -, 1 of the 5x7 font, each cell scale x scale pixels.
    lit = sum("".join(FONT[ch]).count("1") for ch in "VM-1") * p.name_scale ** 2
    assert fg == lit
    assert box.count(NAME_BG) == len(box) - lit
    assert p.name_scale >= 4  # big letters


def test_names_differ_and_long_names_fit() -> None:
    a, _ = TestPattern("vm-1").render(0.0)
    b, _ = TestPattern("vm-2").render(0.0)
    assert a != b
    p = TestPattern("a-very-long-instance-name-that-goes-on")
    x, _y, w, _h = p.name_box
    assert 0 <= x and x + w <= W and p.name_scale >= 2


def test_text_rows_glyph_exact() -> None:
    w, h, rows = text_rows("I", 1, (255, 255, 255), (0, 0, 0))
    assert (w, h) == (5, 7)
    bits = ["".join("1" if row[i * 3] else "0" for i in range(5)) for row in rows]
    assert bits == list(FONT["I"])


def test_sweep_moves_and_damage_is_small() -> None:
    p = TestPattern("vm-1")
    first, _ = p.render(0.0)
    second, damage = p.render(0.1)
    assert first != second
    area = sum(w * h for _x, _y, w, h in damage)
    assert 0 < area < W * H // 4
    changed = [i for i in range(0, len(first), 3) if first[i:i + 3] != second[i:i + 3]]
    for i in changed:  # every changed pixel is inside a damage rectangle
        x, y = (i // 3) % W, (i // 3) // W
        assert any(rx <= x < rx + rw and ry <= y < ry + rh for rx, ry, rw, rh in damage)


def test_last_key_and_pointer_are_shown() -> None:
    p = TestPattern("vm-1")
    before, _ = p.render(0.0)
    p.key(ord("a"), down=True)
    p.key(ord("a"), down=False)
    p.pointer(100, 200, 1)
    after, damage = p.render(0.0)
    assert p.key_text() == "last key: a (0x0061)"
    assert p.pointer_text() == "pointer: 100,200  buttons: 1  clicks: 1"
    assert pixels(before, p.key_box) != pixels(after, p.key_box)
    assert KEY_FG in pixels(after, p.key_box)
    assert p.key_box in damage and p.pointer_box in damage
    assert pixels(after, (100, 200, 1, 1)) == [(255, 0, 0)]  # pressed crosshair centre
    assert keysym_name(0xFF0D) == "Return" and keysym_name(0x1008FF13) == "0x1008ff13"


def test_render_is_cheap() -> None:
    p = TestPattern("vm-1")
    started = time.perf_counter()
    for i in range(60):
        p.render(i / 15)
    assert (time.perf_counter() - started) / 60 < 0.01  # well under 10 ms a frame
