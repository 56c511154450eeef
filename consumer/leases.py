"""Shard leases: each stream shard has at most one active reader, so each feed is written in order.

Each shard is leased to one consumer (a Redis key holding its name, with a TTL), and the shards are spread
over the live consumers so that each holds floor(S/C) or ceil(S/C) of them. The lease is checked atomically
with every read (see stream.py), so a consumer that lost its lease can no longer take new entries.

Renewal runs on a thread of its own, every quarter of the TTL, so that a slow commit or the decoding of a
large batch on the main thread never lets a lease lapse; that is what lets the TTL be seconds rather than
longer than the worst batch. Taking and giving back shards stays on the main thread, which knows what it
has in hand.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Collection
from typing import NamedTuple

import redis
import structlog

from consumer.scripts import load
from shared.keys import Keys
from shared.redis_client import Client

log = structlog.get_logger(__name__)


def quota(shards: int, live: list[str], name: str) -> int:
    """This consumer's share: floor(S/C), plus one for the first S mod C live consumers by name.

    Every consumer computes the same ranking from the same member list, so the shares add up to S.
    """
    ranked = sorted(set(live) | {name})
    base, extra = divmod(shards, len(ranked))
    return base + (1 if ranked.index(name) < extra else 0)


class Change(NamedTuple):
    gained: set[int]
    surplus: set[int]  # above our share: to give back (still owned until released)


class Leases:
    def __init__(self, client: Client, keys: Keys, name: str, ttl_ms: int, stall_limit_s: float) -> None:
        """stall_limit_s: renewal stops once the main loop has shown no sign of life for that long, so a
        hung consumer does not keep its shards for ever (a commit is bounded by the database deadline)."""
        self._client = client
        self._keys = keys
        self._name = name
        self._ttl_ms = ttl_ms
        self._stall_limit_s = stall_limit_s
        self._acquire = load(client, "acquire")
        self._renew = load(client, "renew")
        self._release = load(client, "release")
        self._heartbeat_script = load(client, "heartbeat")
        self.period_s = ttl_ms / 4000
        self.owned: set[int] = set()
        self._live: list[str] = [name]
        self._lost: set[int] = set()  # found lost by the renewal thread, not yet taken out of owned
        self._lock = threading.Lock()
        self._alive_at = time.monotonic()
        self._next_rebalance = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_forever, name="lease-renewal", daemon=True)
        self._thread.start()

    def alive(self) -> None:
        """The main loop is alive: renewal may go on."""
        self._alive_at = time.monotonic()

    def renew(self) -> None:
        """Heartbeat and renew every owned lease once; a lease found gone is reported by take_lost()."""
        live = self._heartbeat()
        with self._lock:
            self._live = live
            owned = set(self.owned)
        lost = {
            n for n in owned if not self._renew(keys=[self._keys.lease(n)], args=[self._name, self._ttl_ms])
        }
        if lost:
            with self._lock:
                self._lost |= lost & self.owned

    def take_lost(self) -> set[int]:
        """Shards whose lease lapsed or went to another consumer since the last call; no longer owned."""
        with self._lock:
            lost, self._lost = self._lost & self.owned, set()
            self.owned -= lost
        if lost:
            log.warning("shard_leases_lost", lost=sorted(lost), owned=sorted(self.owned))
        return lost

    def lost(self, n: int) -> None:
        """A read found the lease of shard n gone."""
        with self._lock:
            self.owned.discard(n)

    def rebalance(self, force: bool = False, giving_back: Collection[int] = ()) -> Change:
        """Take in lost shards, and take free shards up to this consumer's share.

        Surplus shards are above the share: the caller gives them back with release() once nothing of
        theirs is in hand, so that the next owner starts at once. The shares are worked out at most once
        per renewal period, or at once when forced (which renews first, from this thread).
        """
        now = time.monotonic()
        due = force or now >= self._next_rebalance
        # Without the renewal thread (a daemon stepped in-process), renewal goes with the rebalance.
        if force or (due and self._thread is None):
            self.renew()
        self.take_lost()
        if not due:
            return Change(set(), set())
        self._next_rebalance = now + self.period_s
        with self._lock:
            live = list(self._live)
        share = quota(self._keys.shards, live, self._name)
        keeping = sorted(self.owned - set(giving_back))
        surplus = set(keeping[share:])  # the highest shards go first, the same ones on every consumer
        holding = len(keeping) - len(surplus)
        gained: set[int] = set()
        free = [n for n in range(self._keys.shards) if n not in self.owned]
        random.shuffle(free)  # consumers starting together should not all race for shard 0
        for n in free:
            if holding + len(gained) >= share:
                break
            if self._acquire(keys=[self._keys.lease(n)], args=[self._name, self._ttl_ms]):
                gained.add(n)
        if gained:
            with self._lock:
                self.owned |= gained
            log.info("shard_leases_gained", gained=sorted(gained), owned=sorted(self.owned), share=share)
        return Change(gained, surplus)

    def release(self, shards: Collection[int], reason: str) -> None:
        for n in shards:
            self._release(keys=[self._keys.lease(n)], args=[self._name])
        with self._lock:
            self.owned -= set(shards)
        if shards:
            log.info(
                "shard_leases_released", released=sorted(shards), owned=sorted(self.owned), reason=reason
            )

    def release_all(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.period_s * 2)
        self.release(set(self.owned), "stopping")
        self._client.zrem(self._keys.members, self._name)  # ZREM frees memory: allowed on a full Redis

    def _renew_forever(self) -> None:
        paused = False
        while not self._stop.wait(self.period_s):
            stalled_s = time.monotonic() - self._alive_at
            if stalled_s > self._stall_limit_s:
                if not paused:
                    log.error("lease_renewal_paused_main_loop_stalled", stalled_s=round(stalled_s, 1))
                paused = True
                continue
            paused = False
            try:
                self.renew()
            except redis.RedisError as exc:
                # The main loop meets the same outage and retries; renewal simply tries again next period.
                log.warning("lease_renewal_failed", error=str(exc))

    def _heartbeat(self) -> list[str]:
        members = self._heartbeat_script(keys=[self._keys.members], args=[self._name, self._ttl_ms])
        return [m.decode() if isinstance(m, bytes) else str(m) for m in members]
