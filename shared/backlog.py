"""A group's backlog on one stream, counted from the stream itself.

XINFO GROUPS reports a lag, but it goes wrong after XDEL and trimming (both of which this pipeline does),
so the entries after the group's last-delivered id are counted instead, reading only the shorter side.
The consumer's status and metrics and the producer's progress lines all use this one count.
"""

from __future__ import annotations

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
    remember_script("backlog count", _COUNT_PAGE)
    count_page = client.register_script(_COUNT_PAGE)

    def page(low: str, high: str, backwards: bool) -> tuple[int, str]:
        reply = cast(list[Any], count_page(keys=[stream], args=[low, high, PAGE, int(backwards)]))
        return int(reply[0]), "(" + reply[1].decode() if reply[0] else ""

    below, above = 0, 0
    low, high, at = "-", "+", format_id(pivot)
    while True:
        counted, low = page(low, "(" + at, False)
        below += counted
        if counted < PAGE:
            return below
        counted, high = page(at, high, True)
        above += counted
        if counted < PAGE:
            return max(0, length - above)
