"""Redis stream entry ids ("<ms>-<sequence>") as comparable pairs, parsed and written in one place."""

from __future__ import annotations

StreamId = tuple[int, int]


def stream_id(raw: bytes | str) -> StreamId:
    """Parse an id as Redis returns it; a bare "<ms>" means sequence 0."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_id(point: StreamId) -> str:
    return f"{point[0]}-{point[1]}"


def next_id(point: StreamId) -> StreamId:
    """The smallest id after point: the bound that excludes it in XRANGE, XTRIM MINID and the like."""
    return point[0], point[1] + 1
