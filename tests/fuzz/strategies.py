"""Input shapes shared by the fuzz targets: random bytes, valid seeds mutated, chunkings."""

from __future__ import annotations

from hypothesis import strategies as st


@st.composite
def mutated(draw: st.DrawFn, seed: bytes, max_edits: int = 8) -> bytes:
    """``seed`` with a few random edits: byte flips, insertions, deletions, a truncation."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(0, max_edits))):
        kind = draw(st.sampled_from(("flip", "set", "insert", "delete", "truncate", "dup")))
        pos = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[pos] = draw(st.sampled_from((0x00, 0x7F, 0x80, 0xFF, 0x0A, 0x0D, 0x20,
                                              draw(st.integers(0, 255)))))
        elif kind == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete" and data:
            del data[pos:pos + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[pos:]
        elif kind == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 32)))
            data[pos:pos] = data[pos:end]
    return bytes(data)


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at random places (one piece, single bytes, or anything between)."""
    if not data:
        return []
    style = draw(st.sampled_from(("whole", "bytes", "random")))
    if style == "whole" or len(data) == 1:
        return [data]
    if style == "bytes":
        return [data[i:i + 1] for i in range(len(data))]
    cuts = sorted(set(draw(st.lists(st.integers(1, len(data) - 1), max_size=12))))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


def inputs(seeds: list[bytes], max_random: int = 512) -> st.SearchStrategy[bytes]:
    """Random bytes, or one of ``seeds`` mutated, or seeds glued together and mutated."""
    seed = st.sampled_from(seeds)
    return st.one_of(
        st.binary(max_size=max_random),
        seed.flatmap(mutated),
        st.lists(seed, min_size=2, max_size=4).map(b"".join).flatmap(mutated),
        seed,
    )
