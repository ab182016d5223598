"""The token store interface and the expiry rule every store follows.

Stores are keyed by the token's SHA-256 (``token_hash``): none ever sees or keeps a token.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class TokenRecord:
    console_type: str
    host: str
    port: int
    instance_uuid: str
    expires_at: float
    internal_access_path: str | None = None
    compute_url: str | None = None
    access_url: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def live(self, now: float) -> bool:
        """A token is valid strictly before its expiry instant."""
        return now < self.expires_at


class StoreUnavailable(Exception):
    """The backing store cannot be reached (redis down, disk error)."""


class TokenStore(Protocol):
    name: str

    def add(self, token_hash: str, record: TokenRecord) -> None: ...
    def get(self, token_hash: str, now: float) -> TokenRecord | None: ...
    def delete(self, token_hash: str) -> None: ...
    def delete_instance(self, instance_uuid: str) -> int: ...
    def purge(self, now: float) -> int: ...
    def count(self) -> int: ...
    def close(self) -> None: ...
