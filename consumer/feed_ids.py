"""Feed ids: looked up in Postgres, created when missing, and remembered in a bounded LRU cache.

A feed's id never changes while its row exists, so ids are cached across batches. Two things can make a
cached id wrong: the cache outgrowing memory (it is bounded; the least recently used ids go first, and
cost one lookup when they come back), and a person or a retention job deleting feed rows. Then the
writer finds the feed's row missing where it locks the batch's feeds (FeedRowsGone), or a foreign key
refuses a row of that feed: either says the cache is wrong, not the entry, so the ids are forgotten,
looked up (or created) again, and the work runs once more. It is never a reason to dead-letter an entry.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from typing import TypeVar

import psycopg
import structlog
from psycopg.rows import TupleRow

from consumer.errors import Transient
from shared.keys import feed_key

log = structlog.get_logger(__name__)

Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")


class FeedRowsGone(Exception):
    """Feed rows the work was given ids of are not in Postgres: deleted since their ids were cached."""


# INSERT ... ON CONFLICT takes a sequence value for every row it tries, also the ones that conflict, so
# each statement inserts only what is missing. ON CONFLICT stays for two consumers racing to insert the
# same new row: only such a race costs a value.
_INSERT_MISSING_KEYS = """
WITH k AS (SELECT * FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)),
b AS (
  INSERT INTO bookmakers (slug)
  SELECT DISTINCT k.bookmaker FROM k WHERE NOT EXISTS (SELECT 1 FROM bookmakers b WHERE b.slug = k.bookmaker)
  ORDER BY 1 ON CONFLICT DO NOTHING
),
e AS (
  INSERT INTO events (external_id)
  SELECT DISTINCT k.event FROM k WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.external_id = k.event)
  ORDER BY 1 ON CONFLICT DO NOTHING
)
SELECT 1
"""
# A separate statement: the rows the CTEs above insert are not visible to the rest of their statement.
_INSERT_MISSING_FEEDS = """
INSERT INTO feeds (event_id, bookmaker_id)
SELECT e.id, b.id FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)
JOIN events e ON e.external_id = k.event JOIN bookmakers b ON b.slug = k.bookmaker
WHERE NOT EXISTS (SELECT 1 FROM feeds f WHERE f.event_id = e.id AND f.bookmaker_id = b.id)
ORDER BY 1, 2 ON CONFLICT DO NOTHING
"""
_SELECT_FEEDS = """
SELECT f.id, e.external_id, b.slug
FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)
JOIN events e ON e.external_id = k.event JOIN bookmakers b ON b.slug = k.bookmaker
JOIN feeds f ON f.event_id = e.id AND f.bookmaker_id = b.id
"""
# A foreign-key violation again right after fresh ids were read means rows are being deleted while we
# write: give the deleting transaction time (the caller's backoff) instead of spinning here.
_ATTEMPTS = 2


class FeedIds:
    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("the feed id cache needs room for at least one id")
        self.capacity = capacity
        self._ids: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._ids)

    def cached(self, feed: str) -> int | None:
        """The cached id of a feed, if any, marking it recently used."""
        feed_id = self._ids.get(feed)
        if feed_id is not None:
            self._ids.move_to_end(feed)
        return feed_id

    def remember(self, ids: dict[str, int]) -> None:
        for feed, feed_id in ids.items():
            self._ids[feed] = feed_id
            self._ids.move_to_end(feed)
        while len(self._ids) > self.capacity:
            self._ids.popitem(last=False)

    def forget(self, feeds: Iterable[str]) -> None:
        for feed in feeds:
            self._ids.pop(feed, None)

    def run(self, conn: Connection, feeds: Collection[str], work: Callable[[dict[str, int]], T]) -> T:
        """work(ids) with the id of every feed; when work finds feed rows gone (FeedRowsGone, or a
        foreign-key violation), forget the ids and run again.

        Raises Transient when the violation persists: rows deleted while they are being written are
        retried with backoff, never dead-lettered.
        """
        for attempt in range(_ATTEMPTS):
            try:
                return work(self.ids(conn, feeds))
            except (psycopg.errors.ForeignKeyViolation, FeedRowsGone) as exc:
                self.forget(feeds)
                log.warning("feed_ids_forgotten", feeds=len(feeds), attempt=attempt, error=str(exc).strip())
                error = exc
        raise Transient(f"postgres: feed rows deleted while being written: {error}".strip()) from error

    def ids(self, conn: Connection, feeds: Collection[str]) -> dict[str, int]:
        """The id of every feed: from the cache, else from Postgres, creating the rows that are missing."""
        ids: dict[str, int] = {}
        missing = []
        for feed in feeds:
            feed_id = self.cached(feed)
            if feed_id is None:
                missing.append(feed)
            else:
                ids[feed] = feed_id
        if missing:
            found = _look_up(conn, sorted(missing))
            self.remember(found)
            ids.update(found)
        return ids


def _look_up(conn: Connection, feeds: list[str]) -> dict[str, int]:
    """Ids of existing feeds first: after a restart nearly all are, and then nothing is written."""
    found = _select(conn, _keys(feeds))
    missing = [f for f in feeds if f not in found]
    if missing:
        # Committed on its own, before the batch: a feed row without snapshots is harmless, and the cache
        # must never hold the id of a row that a rollback took away. Cached only once the COMMIT has
        # succeeded: a connection lost at COMMIT may have rolled the new rows back.
        keys = _keys(missing)
        with conn.transaction():
            conn.execute(_INSERT_MISSING_KEYS, keys)
            conn.execute(_INSERT_MISSING_FEEDS, keys)
            created = _select(conn, keys)
        found.update(created)
    return found


def _keys(feeds: list[str]) -> dict[str, list[str]]:
    keys: dict[str, list[str]] = {"events": [], "bookmakers": []}
    for feed in feeds:
        event, bookmaker = feed.rsplit("|", 1)
        keys["events"].append(event)
        keys["bookmakers"].append(bookmaker)
    return keys


def _select(conn: Connection, keys: dict[str, list[str]]) -> dict[str, int]:
    rows = conn.execute(_SELECT_FEEDS, keys).fetchall()
    return {feed_key(event, bookmaker): feed_id for feed_id, event, bookmaker in rows}
