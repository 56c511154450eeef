"""Each feed's last encoded snapshot, so that encoding the next one costs only what changed.

A scraper that keeps an unchanged book's Market objects between cycles (Markets are immutable; the
simulator does this) publishes mostly the same objects again. The new canonical data is then the previous
data with the changed markets' encodings spliced in: one contiguous bytes object is cut and joined,
where joining forty separate market encodings was the memory-bound bulk of encoding a changed snapshot.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate, compress, pairwise
from operator import attrgetter, is_not

from shared.wire import Market, packed_in_order

_market_key = attrgetter("market", "specifier")


@dataclass(frozen=True, slots=True)
class FeedEncoding:
    markets: tuple[Market, ...]  # as the scraper passed them
    data: bytes  # their canonical data
    ranks: tuple[int, ...]  # ranks[i]: the position of markets[i] in canonical order
    offsets: tuple[int, ...]  # where each canonical position starts in data, then where data ends

    @classmethod
    def of(cls, markets: tuple[Market, ...]) -> FeedEncoding:
        keys = list(map(_market_key, markets))
        # Stable, as canonical_markets' sort is, so markets with equal keys keep their relative order.
        order = sorted(range(len(markets)), key=keys.__getitem__)
        data = packed_in_order([markets[i] for i in order])
        lengths = [len(markets[i].packed) for i in order]
        start = len(data) - sum(lengths)  # the document's header: {"markets": [ with the array length
        ranks = tuple(sorted(range(len(order)), key=order.__getitem__))
        return cls(markets, data, ranks, tuple(accumulate(lengths, initial=start)))

    def next(self, markets: tuple[Market, ...]) -> FeedEncoding:
        """The encoding of the feed's next snapshot."""
        if markets is self.markets:
            return self
        n = len(markets)
        if n != len(self.markets):
            return FeedEncoding.of(markets)
        changed = list(compress(range(n), map(is_not, markets, self.markets)))
        # Splicing keeps the canonical order only if every changed market kept its key, and it pays only
        # while few markets changed.
        if len(changed) > n // 4 or any(
            _market_key(markets[i]) != _market_key(self.markets[i]) for i in changed
        ):
            return FeedEncoding.of(markets)
        spliced = sorted((self.ranks[i], markets[i].packed) for i in changed)
        parts: list[bytes] = []
        kept_from = 0
        for rank, packed in spliced:
            parts += (self.data[kept_from : self.offsets[rank]], packed)
            kept_from = self.offsets[rank + 1]
        parts.append(self.data[kept_from:])
        offsets = self.offsets
        if any(len(packed) != offsets[rank + 1] - offsets[rank] for rank, packed in spliced):
            lengths = [end - start for start, end in pairwise(offsets)]
            for rank, packed in spliced:
                lengths[rank] = len(packed)
            offsets = tuple(accumulate(lengths, initial=offsets[0]))
        return FeedEncoding(markets, b"".join(parts), self.ranks, offsets)
