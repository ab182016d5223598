"""In-process token store: a dict plus an instance index. Lost on restart."""

from __future__ import annotations

from consoleauth.stores.base import TokenRecord


class MemoryStore:
    name = "memory"
    reads_wait = False  # a dict lookup: safe to answer in the bus receive loop

    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._by_instance: dict[str, set[str]] = {}

    def add(self, token_hash: str, record: TokenRecord) -> None:
        self._tokens[token_hash] = record
        self._by_instance.setdefault(record.instance_uuid, set()).add(token_hash)

    def get(self, token_hash: str, now: float) -> TokenRecord | None:
        record = self._tokens.get(token_hash)
        if record is None:
            return None
        if not record.live(now):
            self.delete(token_hash)
            return None
        return record

    def get_many(self, token_hashes: list[str], now: float) -> list[TokenRecord | None]:
        return [self.get(h, now) for h in token_hashes]

    lookup = get_many  # ready at once: never a result to wait on

    def delete(self, token_hash: str) -> None:
        record = self._tokens.pop(token_hash, None)
        if record is not None:
            hashes = self._by_instance.get(record.instance_uuid)
            if hashes is not None:
                hashes.discard(token_hash)
                if not hashes:
                    del self._by_instance[record.instance_uuid]

    def delete_instance(self, instance_uuid: str) -> int:
        hashes = self._by_instance.pop(instance_uuid, set())
        for h in hashes:
            self._tokens.pop(h, None)
        return len(hashes)

    def purge(self, now: float) -> int:
        dead = [h for h, r in self._tokens.items() if not r.live(now)]
        for h in dead:
            self.delete(h)
        return len(dead)

    def count(self) -> int:
        return len(self._tokens)

    def close(self) -> None:
        self._tokens.clear()
        self._by_instance.clear()
