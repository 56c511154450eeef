"""Each feed's current markets, as the planner compares a changed snapshot with them.

Postgres holds them: the newest version of each of the feed's series. Reading 40 versions per changed
snapshot would cost more than writing the few that change, so they are also kept in memory, in a bounded
LRU cache tagged with the feed's current snapshot id. The writer uses an entry only when its tag equals
the current snapshot id it has just read from the locked feed row. A snapshot's markets never change once
committed, and sequence values are never handed out twice, so an entry with the right tag is exactly what
Postgres holds; any other entry (another consumer wrote the feed since, a rollback, a deleted feed) is
read again from Postgres. Losing the cache costs reads, never a wrong row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass

import psycopg
from psycopg.rows import TupleRow

from consumer.plan import MarketKey, Markets
from shared.wire import MarketRow

Connection = psycopg.Connection[TupleRow]

# The newest version of each series of the feeds. Right after the feed rows are locked nothing newer than
# the current snapshot can exist, so the newest is the current one.
_CURRENT_VERSIONS = """
SELECT ms.feed_id, ms.id, ms.market, ms.specifier, v.outcomes, v.odds, v.exact_odds
FROM market_series ms
LEFT JOIN LATERAL (
  SELECT v.outcomes, v.odds, v.exact_odds FROM market_versions v
  WHERE v.series_id = ms.id ORDER BY v.snapshot_id DESC LIMIT 1
) v ON true
WHERE ms.feed_id = ANY(%s)
"""
_NEW_SERIES = """
INSERT INTO market_series (feed_id, market, specifier)
SELECT * FROM unnest(%s::bigint[], %s::text[], %s::text[]) ORDER BY 1, 2, 3
RETURNING id, feed_id, market, specifier
"""


@dataclass(slots=True)
class FeedMarkets:
    """A feed's markets as of one of its snapshots, and the series ids of every market it ever had."""

    snapshot_id: int | None
    present: Markets
    series: dict[MarketKey, int]


class MarketCache:
    def __init__(self, capacity_markets: int) -> None:
        self.capacity = capacity_markets
        self._feeds: OrderedDict[int, FeedMarkets] = OrderedDict()
        self._markets = 0

    def current(self, conn: Connection, feeds: Mapping[int, int | None]) -> dict[int, FeedMarkets]:
        """The markets of each feed id as of its current snapshot id (None: the feed has none)."""
        found: dict[int, FeedMarkets] = {}
        missing = []
        for feed_id, snapshot_id in feeds.items():
            cached = self._feeds.get(feed_id)
            if cached is not None and snapshot_id is not None and cached.snapshot_id == snapshot_id:
                self._feeds.move_to_end(feed_id)
                found[feed_id] = cached
            else:
                missing.append(feed_id)
        if missing:
            loaded = _load(conn, missing)
            for feed_id in missing:
                # Without a current snapshot a feed may still have series (a retention job deleted its
                # snapshots): a new snapshot is compared with their newest versions, as the view would
                # show them through it.
                markets = loaded.get(feed_id) or FeedMarkets(None, {}, {})
                markets.snapshot_id = feeds[feed_id]
                found[feed_id] = markets
        return found

    def remember(self, feed_id: int, markets: FeedMarkets) -> None:
        """Called after the commit that made markets.snapshot_id current."""
        old = self._feeds.pop(feed_id, None)
        if old is not None:
            self._markets -= len(old.series)
        self._feeds[feed_id] = markets
        self._markets += len(markets.series)
        while self._markets > self.capacity and len(self._feeds) > 1:
            _, evicted = self._feeds.popitem(last=False)
            self._markets -= len(evicted.series)

    def forget(self) -> None:
        self._feeds.clear()
        self._markets = 0


def create_series(
    conn: Connection, wanted: Collection[tuple[int, MarketKey]]
) -> dict[tuple[int, MarketKey], int]:
    """Insert a series for each (feed id, market) given, which must have none yet; their ids."""
    ordered = sorted(wanted)
    rows = conn.execute(
        _NEW_SERIES, ([f for f, _ in ordered], [k[0] for _, k in ordered], [k[1] for _, k in ordered])
    ).fetchall()
    return {(feed_id, (market, specifier)): series_id for series_id, feed_id, market, specifier in rows}


def _load(conn: Connection, feed_ids: list[int]) -> dict[int, FeedMarkets]:
    present: dict[int, dict[MarketKey, MarketRow]] = {}
    series: dict[int, dict[MarketKey, int]] = {}
    for feed_id, series_id, market, specifier, outcomes, milli, exact in conn.execute(
        _CURRENT_VERSIONS, (sorted(feed_ids),)
    ).fetchall():
        key = (market, specifier)
        series.setdefault(feed_id, {})[key] = series_id
        markets = present.setdefault(feed_id, {})
        if outcomes is not None:
            odds = tuple(exact) if exact is not None else tuple(k / 1000 for k in milli)
            markets[key] = MarketRow(market, specifier, tuple(outcomes), odds)
    return {feed_id: FeedMarkets(None, present[feed_id], ids) for feed_id, ids in series.items()}
