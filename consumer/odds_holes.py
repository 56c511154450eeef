"""A market's bytes as a template: fixed bytes, with a hole for each outcome's odds.

When a line moves, only odds change, and a float64 is 0xcb and 8 bytes however it moves. So bytes that
match a market's template, all but the holes, are that market with new odds, which one struct call reads:
no msgpack decode and, for canonical bytes, no re-encoding to prove them canonical. A template depends on
the labels (name, specifier, outcome names) and the shape (the order of the market's keys and of its
outcomes, canonical or the producer's own), so the feeds of one catalogue share them.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence

import msgpack

from shared.wire import CANONICAL_KEYS
from shared.wire_data import Labels

# The order of a market's keys and of its outcome names in a producer's bytes; None for canonical bytes.
Shape = tuple[tuple[str, ...], tuple[str, ...]] | None

_LIMIT = 100_000
_PLACEHOLDER = 1.5
_HOLE = b"\xcb" + struct.pack(">d", _PLACEHOLDER)


class Template:
    __slots__ = ("size", "fixed", "reader", "order", "canonical")

    def __init__(
        self, pack: Callable[[Sequence[float]], bytes], names: Sequence[str], canonical: bool
    ) -> None:
        """pack: the market's bytes in its shape with the given odds, in the order of names, its outcome
        names in that shape's order."""
        full = pack([_PLACEHOLDER] * len(names))
        tails = [msgpack.packb(name, use_bin_type=True) + b"\xcb" for name in names]
        # Each outcome is its name and then its odds; the last hole may be followed by keys after outcomes.
        fixed, at = [], full.index(tails[0] + _HOLE[1:])
        start = 0
        for tail in tails:
            end = full.index(tail + _HOLE[1:], at) + len(tail)
            fixed.append(full[start:end])
            start = at = end + 8
        fixed.append(full[start:])
        self.fixed = tuple(fixed)  # the bytes around the holes
        self.reader = struct.Struct(">" + "".join(f"{len(f)}sd" for f in fixed[:-1]) + f"{len(fixed[-1])}s")
        self.size = self.reader.size
        # Where each sorted outcome's odds lie among the holes; None when they are in sorted order.
        order = tuple(sorted(range(len(names)), key=list(names).__getitem__))
        self.order = None if order == tuple(range(len(names))) else order
        self.canonical = canonical
        # Distinct odds in every hole must give the very bytes msgpack gives: each hole is its outcome's.
        probe = [2.0 + i for i in range(len(names))]
        if self.reader.pack(*_interleave(self.fixed, probe)) != pack(probe):
            raise RuntimeError(f"no odds template for {names!r}")  # a bug here, not in the input

    def odds(self, raw: bytes) -> tuple[float, ...] | None:
        """The odds in raw, in the order of the sorted outcome names, when raw matches; else None."""
        if len(raw) != self.size:
            return None
        values = self.reader.unpack(raw)
        if values[::2] != self.fixed:
            return None
        odds: tuple[float, ...] = values[1::2]
        return odds if self.order is None else tuple(map(odds.__getitem__, self.order))


class OddsHoles:
    def __init__(self) -> None:
        self._templates: dict[tuple[Labels, Shape], Template] = {}

    def template(self, labels: Labels, shape: Shape) -> Template:
        """The template of a market with these (valid) labels, its outcome names sorted, in this shape."""
        return self._templates.get((labels, shape)) or self._learn(labels, shape)

    def _learn(self, labels: Labels, shape: Shape) -> Template:
        market, specifier, names = labels
        keys, shown = shape if shape is not None else (CANONICAL_KEYS, names)

        def pack(odds: Sequence[float]) -> bytes:
            values = {
                "market": market,
                "specifier": specifier,
                "outcomes": dict(zip(shown, odds, strict=True)),
            }
            return msgpack.packb({k: values[k] for k in keys}, use_bin_type=True)  # type: ignore[no-any-return]

        template = Template(pack, shown, canonical=shape is None)
        if len(self._templates) >= _LIMIT:
            self._templates.clear()  # unusual labels cannot grow it without bound
        self._templates[labels, shape] = template
        return template


def _interleave(fixed: Sequence[bytes], odds: Sequence[float]) -> list[bytes | float]:
    values: list[bytes | float] = []
    for segment, value in zip(fixed, odds, strict=False):
        values += (segment, value)
    values.append(fixed[-1])
    return values
