"""Snapshots of absurd shape, within or just past the entry size limit: what a broken or hostile publisher
could send. Built as raw msgpack, so that building them costs no more memory than the bytes themselves."""

from __future__ import annotations

import msgpack

OUTCOME = msgpack.packb({"1": 2.5})


def _market(name: bytes, outcomes: bytes) -> bytes:
    # {"market": name, "specifier": "", "outcomes": outcomes} with name already packed
    return b"\x83\xa6market" + name + b"\xa9specifier\xa0\xa8outcomes" + outcomes


def _doc(markets: list[bytes]) -> bytes:
    n = len(markets)
    header = (
        bytes((0x90 | n,))
        if n < 16
        else b"\xdc" + n.to_bytes(2, "big")
        if n < 0x10000
        else b"\xdd" + n.to_bytes(4, "big")
    )
    return b"\x81\xa7markets" + header + b"".join(markets)


def many_markets(count: int = 100_000) -> bytes:
    return _doc([_market(msgpack.packb(f"m{i}"), OUTCOME) for i in range(count)])


def many_outcomes(count: int = 10_000) -> bytes:
    return _doc([_market(msgpack.packb("Correct score"), msgpack.packb({f"{i}": 2.5 for i in range(count)}))])


def long_name(chars: int = 1_000_000) -> bytes:
    return _doc([_market(msgpack.packb("x" * chars), OUTCOME)])


def nested_empty_lists(size: int = 1_000_000) -> bytes:
    """About size bytes of lists of empty lists: each byte would become a Python list of 56 bytes."""
    per_list = 10_000
    inner = b"\xdc" + per_list.to_bytes(2, "big") + b"\x90" * per_list
    lists = size // len(inner)
    return b"\x81\xa7markets\xdc" + lists.to_bytes(2, "big") + inner * lists


SHAPES = {
    "100,000 markets": many_markets,
    "10,000 outcomes in one market": many_outcomes,
    "a 1 MB market name": long_name,
    "1 MB of nested empty lists": nested_empty_lists,
}
