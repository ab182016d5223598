"""VNC Authentication (RFC 6143 7.2.2): DES of a 16-byte challenge with the password."""

from __future__ import annotations

import hmac

from Crypto.Cipher import DES

CHALLENGE_SIZE = 16

# VNC uses the password bytes as a DES key with the bit order of each byte reversed.
_REVERSED_BITS = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def vnc_des_key(password: bytes) -> bytes:
    """The DES key for ``password``: truncated or NUL-padded to 8 bytes, bits reversed."""
    return password[:8].ljust(8, b"\0").translate(_REVERSED_BITS)


def vnc_des_response(password: bytes, challenge: bytes) -> bytes:
    """The 16-byte response a client sends for ``challenge``."""
    if len(challenge) != CHALLENGE_SIZE:
        raise ValueError(f"VNC challenge must be {CHALLENGE_SIZE} bytes, got {len(challenge)}")
    return DES.new(vnc_des_key(password), DES.MODE_ECB).encrypt(challenge)


def vnc_check_response(password: bytes, challenge: bytes, response: bytes) -> bool:
    """True when ``response`` answers ``challenge`` for ``password`` (constant-time compare)."""
    return hmac.compare_digest(vnc_des_response(password, challenge), bytes(response))
