"""Console tokens: generation, the hash stores keep, and the short id logs show.

Pure: no I/O. A token is a bearer secret; nothing but the WebSocket/preamble and the
bus request ever carries it. Stores keep ``token_hash`` (SHA-256), logs ``token_id``.
"""

from __future__ import annotations

import hashlib
import re
import secrets

# 32 bytes from the OS CSPRNG: 256 bits, URL-safe base64 (43 characters).
TOKEN_BYTES = 32
# Nova's compute hosts send a UUID4 (36 chars); we accept any URL-safe token of 32-256.
_GIVEN_TOKEN = re.compile(r"\A[A-Za-z0-9_\-.~]{32,256}\Z")


def generate_token() -> str:
    # Never a leading "-": a token is pasted into command lines (`consolectl check T`),
    # where it would read as an option. Redrawing 1 token in 64 costs < 0.03 bits.
    while (token := secrets.token_urlsafe(TOKEN_BYTES)).startswith("-"):
        pass
    return token


def is_acceptable_token(token: str) -> bool:
    """A caller-chosen token must be long enough to be unguessable and URL-safe."""
    return bool(_GIVEN_TOKEN.match(token))


def token_hash(token: str) -> str:
    """What stores keep: a copied database reveals no live token."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def token_id(token: str) -> str:
    """Short, non-reversible id for logs (a prefix of the stored hash, so operators can
    match a log line to a store row without ever seeing the token)."""
    return token_hash(token)[:12]
