"""A market's canonical bytes as a template: fixed bytes, with a hole for each outcome's odds.

In canonical msgpack a market is its labels (name, specifier, outcome names) in a fixed encoding, and each
odds value is a float64: 0xcb and 8 bytes. When a line moves, only those 8-byte holes change. So bytes that
match a market's template, all but the holes, are that market's canonical encoding with new odds, which
one struct call reads: no msgpack decode, no re-encoding to prove the bytes canonical. Templates depend on
the labels alone, so the feeds of one catalogue share them.
"""

from __future__ import annotations

import struct

import msgpack

from shared.wire import Labels, MarketRow, pack_row

_LIMIT = 100_000
_FLOAT64 = b"\xcb"
_PLACEHOLDER = 1.5


class _Template:
    __slots__ = ("size", "fixed", "reader")

    def __init__(self, fixed: tuple[bytes, ...]) -> None:
        self.fixed = fixed  # the bytes before each hole
        self.reader = struct.Struct(">" + "".join(f"{len(f)}sd" for f in fixed))
        self.size = self.reader.size


class OddsHoles:
    def __init__(self) -> None:
        self._templates: dict[Labels, _Template] = {}

    def odds(self, raw: bytes, labels: Labels) -> tuple[float, ...] | None:
        """The odds in raw when raw is the canonical encoding of a market with these (valid) labels and
        float odds, in the order of the outcome names; None when it is anything else."""
        template = self._templates.get(labels) or self._learn(labels)
        if len(raw) != template.size:
            return None
        values = template.reader.unpack(raw)
        return values[1::2] if values[::2] == template.fixed else None

    def _learn(self, labels: Labels) -> _Template:
        market, specifier, names = labels
        full = pack_row(MarketRow(market, specifier, names, (_PLACEHOLDER,) * len(names)))
        # The outcomes map ends the market: each name's encoding, then its odds.
        tails = [msgpack.packb(name, use_bin_type=True) + _FLOAT64 for name in names]
        head = full[: len(full) - sum(len(t) + 8 for t in tails)]
        template = _Template((head + tails[0], *tails[1:]))
        holes = [v for pair in zip(template.fixed, (_PLACEHOLDER,) * len(names)) for v in pair]
        if template.reader.pack(*holes) != full:
            raise RuntimeError(f"no odds template for {labels!r}")  # a bug here, not in the input
        if len(self._templates) >= _LIMIT:
            self._templates.clear()  # unusual labels cannot grow it without bound
        self._templates[labels] = template
        return template
