"""Two transactions on one feed: the second plans from what the first committed, never from nothing.

Only a consumer whose transaction outlives its lease (frozen in the middle of a commit) can meet the next
owner on the same feed. Then the next owner waits for the feed's row lock, and must see the snapshot the
first one made current, or it would take the feed for a new one and store its content again.
"""

from __future__ import annotations

import threading
import time

import psycopg
import pytest

from consumer.plan import Entry, Plan, memo_decoder
from consumer.writer import Writer
from shared.db import psycopg_url
from shared.wire import Snapshot, encode
from shared.wire_data import decode_data
from tests.test_plan import TS, entry, parsed, payload_decoder

Conn = psycopg.Connection[tuple[object, ...]]


def new_writer(database_url: str, application_name: str = "odds-consumer") -> Writer:
    """A writer with caches larger than any test's feeds and a deadline no test reaches."""
    return Writer(
        database_url,
        deadline_s=30.0,
        feed_id_cache=1000,
        market_cache=1000,
        application_name=application_name,
    )


def wait_for_lock_wait(db: Conn, application_name: str) -> None:
    """Until that client's backend waits for a lock (the test timeout bounds a writer that never does)."""
    while not db.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
        (application_name,),
    ).fetchone():
        time.sleep(0.02)


def test_a_writer_that_waited_for_a_feed_lock_sees_the_snapshot_committed_meanwhile(
    database_url: str, db: Conn
) -> None:
    # Given a feed stored with odds 2.0, and another transaction that holds its row lock while it stores
    # odds 2.5 as the feed's current snapshot
    writer = new_writer(database_url, application_name="odds-lock-test")
    decode = memo_decoder(payload_decoder(decode_data))
    writer.apply(parsed(entry(2.0, TS)), decode)
    newer = parsed(entry(2.5, TS + 1000))[0]
    other = psycopg.connect(psycopg_url(database_url))
    (feed_id,) = other.execute("SELECT id FROM feeds FOR UPDATE").fetchone()  # type: ignore[misc]
    other.execute(
        "INSERT INTO snapshots (feed_id, captured_at, last_confirmed_at, fingerprint)"
        " VALUES (%s, to_timestamp(%s / 1000.0), to_timestamp(%s / 1000.0), %s) RETURNING id",
        (feed_id, TS + 1000, TS + 1000, newer.digest),
    )
    other.execute("UPDATE feeds SET current_snapshot_id = lastval() WHERE id = %s", (feed_id,))
    # When the writer applies the same odds 2.5, captured later, and has to wait for that lock
    planned: list[Plan] = []
    thread = threading.Thread(
        target=lambda: planned.append(writer.apply(parsed(entry(2.5, TS + 2000)), decode))
    )
    thread.start()
    try:
        wait_for_lock_wait(db, "odds-lock-test")
        other.commit()
    finally:
        thread.join()
        other.close()
        writer.discard()
    # Then it confirmed the snapshot the other transaction made current, and stored nothing again
    (result,) = planned
    assert result.inserts == [] and result.stale == []
    assert db.execute("SELECT count(*) FROM snapshots").fetchone() == (2,)
    assert db.execute(
        "SELECT (extract(epoch FROM last_confirmed_at) * 1000)::bigint FROM snapshots s"
        " JOIN feeds f ON f.current_snapshot_id = s.id"
    ).fetchone() == (TS + 2000,)


def test_a_batch_of_a_feed_deleted_since_its_id_was_cached_is_written_under_a_new_feed_row(
    database_url: str, db: Conn
) -> None:
    # Given a feed written once, and then deleted with its history by a retention job
    writer = new_writer(database_url)
    decode = memo_decoder(payload_decoder(decode_data))
    writer.apply(parsed(entry(2.0, TS)), decode)
    (old,) = db.execute("SELECT id FROM feeds").fetchone()  # type: ignore[misc]
    db.execute("DELETE FROM market_versions")
    db.execute("DELETE FROM market_series")
    db.execute("DELETE FROM snapshots")
    db.execute("DELETE FROM feeds")
    # When the writer, which still caches the old id, writes the feed's next entry: one without markets,
    # so that no new market series (which still has a foreign key) would notice the deleted row
    fields = encode(Snapshot("e1", "bet9ja", TS + 1000, ()))
    empty = Entry("s:0", b"1-0", {k.encode(): v for k, v in fields.items()}, 1)
    try:
        result = writer.apply(parsed(empty), decode)
    finally:
        writer.discard()
    # Then it stored the entry as the first snapshot of a new feed row, and no row refers to the old one
    assert len(result.inserts) == 1
    (new,) = db.execute("SELECT id FROM feeds").fetchone()  # type: ignore[misc]
    assert new != old
    assert db.execute("SELECT feed_id FROM snapshots").fetchall() == [(new,)]


def test_a_feed_that_still_has_snapshots_cannot_be_deleted(database_url: str, db: Conn) -> None:
    # Given a feed with a snapshot
    writer = new_writer(database_url)
    try:
        writer.apply(parsed(entry(2.0, TS)), memo_decoder(payload_decoder(decode_data)))
    finally:
        writer.discard()
    # When its row is deleted before its snapshots, then Postgres refuses, as a foreign key would
    with pytest.raises(psycopg.errors.ForeignKeyViolation, match="still has snapshots"):
        db.execute("DELETE FROM feeds")
    assert db.execute("SELECT count(*) FROM feeds").fetchone() == (1,)
