"""The feed id cache: bounded, creating only missing rows, and healing when feed rows are deleted."""

from __future__ import annotations

import psycopg
import pytest

from consumer.errors import Transient
from consumer.feed_ids import FeedIds
from shared.db import psycopg_url

Conn = psycopg.Connection[tuple[object, ...]]


def test_the_least_recently_used_ids_go_first_when_the_cache_is_full() -> None:
    # Given a cache of three ids, the oldest of which was used again
    cache = FeedIds(capacity=3)
    cache.remember({"a|x": 1, "b|x": 2, "c|x": 3})
    assert cache.cached("a|x") == 1
    # When a fourth id is remembered
    cache.remember({"d|x": 4})
    # Then the least recently used one is gone, the others stay
    assert len(cache) == 3
    assert [cache.cached(f) for f in ("a|x", "b|x", "c|x", "d|x")] == [1, None, 3, 4]


def test_forgotten_ids_are_looked_up_again(database_url: str, db: Conn) -> None:
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        cache = FeedIds(capacity=10)
        first = cache.ids(conn, ["e1|bet9ja"])
        cache.forget(["e1|bet9ja"])
        assert cache.cached("e1|bet9ja") is None
        assert cache.ids(conn, ["e1|bet9ja"]) == first


def sequence_values(db: Conn) -> dict[str, int]:
    rows = db.execute(
        "SELECT sequencename, coalesce(last_value, 0) FROM pg_sequences"
        " WHERE sequencename IN ('bookmakers_id_seq', 'events_id_seq', 'feeds_id_seq')"
    ).fetchall()
    return {str(name): int(str(value)) for name, value in rows}


def test_lookups_after_restarts_take_no_sequence_values(database_url: str, db: Conn) -> None:
    # Given 20 events x 15 bookmakers looked up once, so their rows exist
    feeds = [f"sr:match:{e}|book-{b}" for e in range(20) for b in range(15)]
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        ids = FeedIds(capacity=1000).ids(conn, feeds)
        used = sequence_values(db)
        # When ten restarted consumers (empty caches) look them up again, with one new feed each time
        for restart in range(10):
            again = FeedIds(capacity=1000).ids(conn, [*feeds, f"sr:match:new-{restart}|book-0"])
            assert {f: again[f] for f in feeds} == ids
    # Then the sequences moved by the new rows only: one event and one feed per restart
    after = sequence_values(db)
    assert after == {
        "bookmakers_id_seq": used["bookmakers_id_seq"],
        "events_id_seq": used["events_id_seq"] + 10,
        "feeds_id_seq": used["feeds_id_seq"] + 10,
    }
    assert used == {"bookmakers_id_seq": 15, "events_id_seq": 20, "feeds_id_seq": 300}


def insert_series(conn: psycopg.Connection[tuple[object, ...]], feed_id: int) -> int:
    """Work that a foreign key checks: market series still refer to their feed by one."""
    conn.execute("INSERT INTO market_series (feed_id, market, specifier) VALUES (%s, '1X2', '')", (feed_id,))
    return feed_id


def test_a_cached_id_whose_feed_was_deleted_is_forgotten_and_the_work_runs_again(
    database_url: str, db: Conn
) -> None:
    # Given a feed id in the cache, and then its row deleted by a retention job
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        cache = FeedIds(capacity=10)
        old = cache.ids(conn, ["e1|bet9ja"])["e1|bet9ja"]
        db.execute("DELETE FROM feeds WHERE id = %s", (old,))
        # When work writes a market series with the cached id
        written = cache.run(conn, ["e1|bet9ja"], lambda ids: insert_series(conn, ids["e1|bet9ja"]))
    # Then the foreign-key violation made the cache look the feed up again, and the work ran with the new id
    assert written != old
    assert cache.cached("e1|bet9ja") == written
    assert db.execute("SELECT feed_id FROM market_series").fetchall() == [(written,)]


def test_a_foreign_key_violation_that_persists_is_transient(database_url: str, db: Conn) -> None:
    # Given work that always names a feed id that does not exist
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        cache = FeedIds(capacity=10)
        # When it runs, then it is retried later, never taken for bad data
        with pytest.raises(Transient, match="deleted while being written"):
            cache.run(conn, ["e1|bet9ja"], lambda ids: insert_series(conn, -1))
