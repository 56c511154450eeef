"""A group's backlog on one stream, counted from the stream itself.

XINFO GROUPS reports a lag, but it goes wrong after XDEL and trimming (both of which this pipeline does),
so the entries after the group's last-delivered id are counted instead, reading only the shorter side.
The consumer's status and metrics and the producer's progress lines all use this one count.
"""

from __future__ import annotations

from typing import cast

from shared.redis_client import Client
from shared.stream_ids import StreamId, format_id, next_id, stream_id

RawEntry = tuple[bytes, dict[bytes, bytes]]
PAGE = 1000


def undelivered(client: Client, stream: str, last_delivered: StreamId, length: int) -> int:
    """Entries after the last-delivered id: not read by any consumer of the group yet."""
    return max(0, length - count_below(client, stream, next_id(last_delivered), length))


def group_backlog(client: Client, stream: str, group: str) -> tuple[int, int]:
    """(pending, undelivered) of a group on a stream.

    A group not created yet has everything still to do: consumers create it from id 0.
    """
    length = int(client.xlen(stream))
    for info in client.xinfo_groups(stream) if length else []:
        if info["name"].decode() == group:
            return int(info["pending"]), undelivered(
                client, stream, stream_id(info["last-delivered-id"]), length
            )
    return 0, length


def count_below(client: Client, stream: str, pivot: StreamId, length: int) -> int:
    """How many entries have an id below pivot, reading only the shorter side of it.

    Pages are read from both ends in turn and the first side to run out gives the answer, so the cost is
    that of the smaller side: a few entries in a healthy stream, however long it is.
    """
    if pivot <= (0, 0) or length == 0:
        return 0
    below, above = 0, 0
    low, high, at = "-", "+", format_id(pivot)
    while True:
        batch = cast(list[RawEntry], client.xrange(stream, min=low, max="(" + at, count=PAGE))
        below += len(batch)
        if len(batch) < PAGE:
            return below
        low = "(" + batch[-1][0].decode()
        batch = cast(list[RawEntry], client.xrevrange(stream, max=high, min=at, count=PAGE))
        above += len(batch)
        if len(batch) < PAGE:
            return max(0, length - above)
        high = "(" + batch[-1][0].decode()
