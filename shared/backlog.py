"""A group's backlog on one stream: counted while it fits a page, Redis's own lag beyond.

XINFO GROUPS reports a lag, but Redis 7.0 counts entries trimmed before they were delivered (the hard cap
does that) for as long as the group lives. So one page is counted from the group's position: a backlog
that fits it is exact, a drained shard shows 0. Counting further would read the whole backlog, a megabyte
a page: a consumer draining 45,000 entries a shard stalled for a second every five seconds counting it for
its metrics. So a backlog of a page or more is the lag, capped at the stream's length: never below the
true count, and above it by the entries the hard cap ever deleted unread (counted and alerted on as lost).
With no lag (XDEL in the backlog makes Redis withhold it), the whole backlog is counted, reading only the
shorter side. The consumer's status and metrics and the producer's progress lines all use this one count.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from shared.redis_client import Client
from shared.redis_errors import remember_script
from shared.stream_ids import StreamId, format_id, next_id, stream_id

RawEntry = tuple[bytes, dict[bytes, bytes]]
PAGE = 1000
# One page of a stream counted by the server, which returns the count and the last id only. Read by the
# client, the entries would cross the network and be parsed just to be counted: a page of snapshots is
# megabytes, and a consumer counting its shards' backlog this way lost a few percent of its throughput.
# no-writes: it also runs while Redis is over maxmemory, when the backlog matters most.
_COUNT_PAGE = """#!lua flags=no-writes
local page
if ARGV[4] == '1' then
  page = redis.call('XREVRANGE', KEYS[1], ARGV[2], ARGV[1], 'COUNT', ARGV[3])
else
  page = redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2], 'COUNT', ARGV[3])
end
if #page == 0 then
  return {0}
end
return {#page, page[#page][1]}
"""


def undelivered(client: Client, stream: str, group: Mapping[str, Any], length: int) -> int:
    """Entries after the group's last-delivered id (group: its XINFO GROUPS row): not read by any consumer
    of the group yet."""
    pivot = next_id(stream_id(group["last-delivered-id"]))
    lag = group.get("lag")
    if lag is None:
        return max(0, length - count_below(client, stream, pivot, length))
    counted, _ = _count_page(client, stream, format_id(pivot), "+", backwards=False)
    if counted < PAGE:
        return counted
    # A full page proves a page; the lag is never below the truth, the length never below it either.
    return max(PAGE, min(int(lag), length))


def group_backlog(client: Client, stream: str, group: str) -> tuple[int, int]:
    """(pending, undelivered) of a group on a stream.

    A group not created yet has everything still to do: consumers create it from id 0.
    """
    length = int(client.xlen(stream))
    for info in client.xinfo_groups(stream) if length else []:
        if info["name"].decode() == group:
            return int(info["pending"]), undelivered(client, stream, info, length)
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
        counted, low = _count_page(client, stream, low, "(" + at, backwards=False)
        below += counted
        if counted < PAGE:
            return below
        counted, high = _count_page(client, stream, at, high, backwards=True)
        above += counted
        if counted < PAGE:
            return max(0, length - above)


def _count_page(client: Client, stream: str, low: str, high: str, backwards: bool) -> tuple[int, str]:
    """How many entries one page from low to high holds (from high down when backwards), and the bound
    that excludes its last entry, where the next page starts."""
    remember_script("backlog count", _COUNT_PAGE)
    reply = cast(
        list[Any],
        client.register_script(_COUNT_PAGE)(keys=[stream], args=[low, high, PAGE, int(backwards)]),
    )
    return int(reply[0]), "(" + reply[1].decode() if reply[0] else ""
