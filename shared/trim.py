"""Lossless stream trimming: delete only entries every group has acknowledged.

Redis 7.0 has no XTRIM ... ACKED, and MAXLEN deletes pending entries, which XAUTOCLAIM then drops without a
word. So the trim point is computed: below the oldest pending entry and the last delivered entry of every
group, nothing is waiting for anyone. Only the hard cap may delete more, and then it is counted loudly.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from shared.redis_client import Client
from shared.stream_ids import stream_id

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrimResult:
    acknowledged: int  # entries deleted that every group had acknowledged
    forced: int  # unacknowledged entries deleted to hold the hard cap: data loss


def safe_trim_point(client: Client, stream: str) -> tuple[int, int] | None:
    """The lowest id still needed by some group; None when no group reads the stream (keep everything)."""
    groups = client.xinfo_groups(stream)
    if not groups:
        return None
    points = []
    for group in groups:
        point = stream_id(group["last-delivered-id"])
        if group["pending"]:
            # Read after XINFO: the entries may have been acknowledged in between, leaving no minimum.
            oldest = client.xpending(stream, group["name"])["min"]
            if oldest is not None:
                point = min(point, stream_id(oldest))
        points.append(point)
    return min(points)


def trim(client: Client, stream: str, hard_cap: int) -> TrimResult:
    """Delete what every group has acknowledged; then, past the hard cap, the oldest entries regardless.

    The caller records `forced` in the loss counters, through whatever path it writes counters by.
    """
    point = safe_trim_point(client, stream)
    acknowledged = 0
    if point is not None and point > (0, 0):
        acknowledged = int(client.xtrim(stream, minid=f"{point[0]}-{point[1]}", approximate=False))
    forced = 0
    if client.xlen(stream) > hard_cap:
        forced = int(client.xtrim(stream, maxlen=hard_cap, approximate=False))
        if forced:
            log.error(
                "stream_hard_cap_deleted_unacknowledged_entries",
                stream=stream,
                deleted=forced,
                hard_cap=hard_cap,
            )
    return TrimResult(acknowledged, forced)


def enforce_hard_cap(client: Client, streams: list[str], hard_cap: int, stats_key: str) -> int:
    """The producers' guard for when consumers are gone for good: trim each shard past the hard cap."""
    pipe = client.pipeline(transaction=False)
    for stream in streams:
        pipe.xlen(stream)
    forced = 0
    for stream, length in zip(streams, pipe.execute()):
        if int(length) > hard_cap:
            forced += trim(client, stream, hard_cap).forced
    if forced:
        client.hincrby(stats_key, "forced_trimmed", forced)
    return forced
