"""`python -m consumer status`: the state of the streams, the group and the counters, for people and scripts."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from shared.keys import Keys
from shared.trim import stream_id


@dataclass
class ShardStatus:
    stream: str
    length: int
    undelivered: int  # entries after the group's last-delivered id: not yet read by any consumer
    pending: int  # delivered but not acknowledged
    owner: str | None  # consumer holding the shard's lease

    @property
    def backlog(self) -> int:
        return self.undelivered + self.pending


@dataclass
class Status:
    shards: list[ShardStatus] = field(default_factory=list)
    dead_letters: int = 0
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def backlog(self) -> int:
        return sum(s.backlog for s in self.shards)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "backlog": self.backlog,
                "shards": [{**asdict(s), "backlog": s.backlog} for s in self.shards]}


def collect(client: redis.Redis, keys: Keys) -> Status:
    status = Status()
    for n, stream in enumerate(keys.all_shards()):
        length = int(client.xlen(stream))
        undelivered, pending = length, 0
        if length or client.exists(stream):
            for group in client.xinfo_groups(stream):
                if group["name"].decode() == keys.group:
                    pending = int(group["pending"])
                    undelivered = undelivered_after(client, stream, group)
        owner = client.get(keys.lease(n))
        status.shards.append(ShardStatus(stream, length, undelivered, pending, owner.decode() if owner else None))
    status.dead_letters = int(client.xlen(keys.dead))
    status.counters = {k.decode(): int(v) for k, v in client.hgetall(keys.stats).items()}
    return status


def undelivered_after(client: redis.Redis, stream: str, group: dict[str, Any]) -> int:
    """Entries after the group's last-delivered id.

    XINFO's lag is a derived counter that goes wrong or unknown after deletions and trimming, so it is only
    trusted when Redis reports it; otherwise the entries after the last-delivered id are counted.
    """
    lag = group.get("lag")
    if isinstance(lag, int):
        return lag
    last = stream_id(group["last-delivered-id"])
    count, start = 0, f"({last[0]}-{last[1]}"
    while True:
        batch = client.xrange(stream, min=start, count=1000)
        count += len(batch)
        if len(batch) < 1000:
            return count
        start = "(" + batch[-1][0].decode()


def render(status: Status) -> str:
    lines = [f"{'stream':<32} {'length':>9} {'undelivered':>12} {'pending':>9} {'backlog':>9}  owner"]
    for s in status.shards:
        lines.append(f"{s.stream:<32} {s.length:>9} {s.undelivered:>12} {s.pending:>9} {s.backlog:>9}  "
                     f"{s.owner or '-'}")
    lines.append(f"backlog {status.backlog}, dead letters {status.dead_letters}")
    if status.counters:
        lines.append("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(status.counters.items())))
    return "\n".join(lines)
