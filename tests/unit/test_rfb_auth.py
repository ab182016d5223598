"""VNC Authentication DES, checked against vncdotool's independent implementation."""

from __future__ import annotations

import pytest
from console_common.proto.rfb import vnc_check_response, vnc_des_key, vnc_des_response

CHALLENGE = bytes(range(16))


@pytest.mark.parametrize(
    ("password", "expected"),
    [
        # computed with vncdotool.rfb.des_encrypt(_vnc_des(password), CHALLENGE)
        (b"secret", "ee22539f33a5983ec12f9c2edbc995dd"),
        (b"longerthan8", "76543820b2c358fe359083c192fa77c9"),
        (b"", "491e890de9ace932838a49792f2213f3"),
    ],
)
def test_known_responses(password: bytes, expected: str) -> None:
    assert vnc_des_response(password, CHALLENGE).hex() == expected


def test_key_bits_are_reversed_and_padded() -> None:
    assert vnc_des_key(b"\x01\x80") == b"\x80\x01" + b"\0" * 6
    assert vnc_des_key(b"123456789") == vnc_des_key(b"12345678")


def test_check() -> None:
    good = vnc_des_response(b"pw", CHALLENGE)
    assert vnc_check_response(b"pw", CHALLENGE, good)
    assert not vnc_check_response(b"px", CHALLENGE, good)
    with pytest.raises(ValueError, match="16 bytes"):
        vnc_des_response(b"pw", b"short")
