"""Console passwords at rest: sealed with a key only the token can give.

    sealed = seal(token, hashed, "pw")     # what a store keeps (with the token's SHA-256)
    unseal(token, hashed, sealed)           # -> "pw"; None when it does not open

The key is HKDF-SHA256 of the token (salt and info fixed here), so the stores' token hash
(plain SHA-256, a different function) does not give it: a dump of sqlite or Redis has
neither the token nor a usable password. AES-256-GCM with a random 96-bit nonce; the
token's hash is the associated data, so a sealed value moved to another record does not
open. Format: ``v1.`` + base64url(nonce | ciphertext | tag), unpadded.
"""

from __future__ import annotations

import base64
import binascii
import os

import hashlib
import hmac

from Crypto.Cipher import AES

PREFIX = "v1."
_SALT = b"console-proxy/password-seal/v1"
_NONCE = 12
_TAG = 16


def _key(token: str) -> bytes:
    """HKDF-SHA256 (RFC 5869) for one 32-byte block: extract, then expand with info."""
    prk = hmac.digest(_SALT, token.encode("utf-8"), hashlib.sha256)
    return hmac.digest(prk, b"aes-256-gcm\x01", hashlib.sha256)


def seal(token: str, token_hash: str, password: str) -> str:
    nonce = os.urandom(_NONCE)
    cipher = AES.new(_key(token), AES.MODE_GCM, nonce=nonce, mac_len=_TAG)
    cipher.update(token_hash.encode("ascii"))
    data, tag = cipher.encrypt_and_digest(password.encode("utf-8"))
    return PREFIX + base64.urlsafe_b64encode(nonce + data + tag).rstrip(b"=").decode("ascii")


def unseal(token: str, token_hash: str, sealed: str) -> str | None:
    """The password, or None when ``sealed`` is not ours or was altered."""
    if not sealed.startswith(PREFIX):
        return None
    text = sealed[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) < _NONCE + _TAG:
        return None
    nonce, data, tag = raw[:_NONCE], raw[_NONCE:-_TAG], raw[-_TAG:]
    cipher = AES.new(_key(token), AES.MODE_GCM, nonce=nonce, mac_len=_TAG)
    cipher.update(token_hash.encode("ascii"))
    try:
        return cipher.decrypt_and_verify(data, tag).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
