"""A producer that is not this project's: stable bytes for the same content, but not the canonical ones.

Markets come in reverse order, outcomes in reverse order of their names, the keys of a market in another
order, and whole odds (3.0) as msgpack integers, as a JavaScript or Go scraper might send them.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack
import redis

from shared.keys import Keys, shard_of
from shared.wire import Market, Snapshot, envelope_fields

_PREFIX = b"\x81" + msgpack.packb("markets")


class ForeignPublisher:
    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self._client = client
        self._keys = keys
        # By the market object: the simulator keeps an unchanged market's object, so this scraper too
        # encodes each market once (a reference is kept, so an id is never reused while remembered).
        self._packed: dict[int, tuple[Market, bytes]] = {}

    def publish_cycle(self, snapshots: Iterable[Snapshot]) -> None:
        pipe = self._client.pipeline(transaction=False)
        for s in snapshots:
            stream = self._keys.shard(shard_of(s.event, s.bookmaker, self._keys.shards))
            pipe.xadd(stream, envelope_fields(s, self.data(s)))  # type: ignore[arg-type]
            if len(pipe) >= 500:
                pipe.execute()
        pipe.execute()

    def data(self, s: Snapshot) -> bytes:
        markets = sorted(s.markets, key=lambda m: (m.market, m.specifier), reverse=True)
        return _PREFIX + _array_header(len(markets)) + b"".join(map(self._market, markets))

    def _market(self, m: Market) -> bytes:
        known = self._packed.get(id(m))
        if known is not None and known[0] is m:
            return known[1]
        outcomes = {
            n: int(o) if float(o).is_integer() else o for n, o in sorted(m.outcomes.items(), reverse=True)
        }
        packed = msgpack.packb({"outcomes": outcomes, "specifier": m.specifier, "market": m.market})
        self._packed[id(m)] = (m, packed)
        return packed


def _array_header(n: int) -> bytes:
    return bytes((0x90 | n,)) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
