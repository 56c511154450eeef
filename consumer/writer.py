"""The database writer: applies a batch in one transaction, with the stored state locked and re-read.

Postgres is the authority on what is stored. The feed rows of the batch are locked FOR UPDATE and the plan
is computed from what they say, so a stale Redis fingerprint, a redelivery or a zombie consumer can never
add a duplicate row or move history backwards.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg
from psycopg.rows import TupleRow

from consumer.errors import Transient, classify_db_error
from consumer.pgcopy import markets_payload, snapshots_payload
from consumer.plan import Decoder, FeedState, Parsed, Plan, plan
from shared.db import psycopg_url

Connection = psycopg.Connection[TupleRow]

_LOCK_FEEDS = "SELECT id FROM feeds WHERE id = ANY(%s) ORDER BY id FOR UPDATE"
# Read in a statement of its own, after the locks are held. A statement that waited for a row lock sees
# the newest version of the locked row but not the rows other transactions committed meanwhile: a
# snapshot made current while it waited would join as nothing, and the feed would look new.
_FEED_STATES = """
SELECT f.id, s.id, s.fingerprint, (extract(epoch FROM s.last_confirmed_at) * 1000)::bigint
FROM feeds f LEFT JOIN snapshots s ON s.id = f.current_snapshot_id
WHERE f.id = ANY(%s)
"""
_ENSURE_FEEDS = """
WITH k AS (SELECT * FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)),
b AS (INSERT INTO bookmakers (slug) SELECT DISTINCT bookmaker FROM k ORDER BY 1 ON CONFLICT DO NOTHING),
e AS (INSERT INTO events (external_id) SELECT DISTINCT event FROM k ORDER BY 1 ON CONFLICT DO NOTHING)
SELECT 1
"""
_INSERT_FEEDS = """
INSERT INTO feeds (event_id, bookmaker_id)
SELECT e.id, b.id FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)
JOIN events e ON e.external_id = k.event JOIN bookmakers b ON b.slug = k.bookmaker
ORDER BY 1, 2 ON CONFLICT DO NOTHING
"""
_SELECT_FEEDS = """
SELECT f.id, e.external_id, b.slug
FROM unnest(%(events)s::text[], %(bookmakers)s::text[]) AS k(event, bookmaker)
JOIN events e ON e.external_id = k.event JOIN bookmakers b ON b.slug = k.bookmaker
JOIN feeds f ON f.event_id = e.id AND f.bookmaker_id = b.id
"""
_POINT_FEEDS = """
UPDATE feeds f SET current_snapshot_id = v.snapshot_id
FROM unnest(%s::bigint[], %s::bigint[]) AS v(feed_id, snapshot_id) WHERE f.id = v.feed_id
"""
# The WHERE keeps replays harmless and leaves rows that would not change untouched (no dead tuple).
_CONFIRM = """
UPDATE snapshots s SET last_confirmed_at = v.ts
FROM unnest(%s::bigint[], %s::timestamptz[]) AS v(id, ts) WHERE s.id = v.id AND s.last_confirmed_at < v.ts
"""


def to_datetime(ts_ms: int) -> datetime:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC)


class Writer:
    def __init__(self, database_url: str, deadline_s: float, application_name: str = "odds-consumer") -> None:
        self._url = psycopg_url(database_url)
        self._deadline_s = deadline_s
        self._application_name = application_name
        self._conn: Connection | None = None
        # Feed ids never change once created, so they are cached for the life of the process.
        self._feed_ids: dict[str, int] = {}

    def apply(self, parsed: list[Parsed], decode: Decoder) -> Plan:
        """Write the batch in one transaction and return the plan that was committed."""
        try:
            conn = self._connect()
            with _deadline(conn, self._deadline_s):
                ids = self._ensure_feeds(conn, {p.feed for p in parsed})
                with conn.transaction():
                    states = self._lock_states(conn, ids)
                    result = plan(parsed, states, decode)
                    self._write(conn, result, ids)
            return result
        except psycopg.Error as exc:
            self.discard()
            raise classify_db_error(exc) from exc

    def check(self) -> None:
        """Connect now, so that a refusal (credentials, TLS) shows at start, not with the first batch."""
        try:
            self._connect()
        except psycopg.Error as exc:
            self.discard()
            raise classify_db_error(exc) from exc

    def discard(self) -> None:
        """Drop the connection: after a failure mid-transaction its state is unknown, so never reuse it."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> Connection:
        if self._conn is None or self._conn.closed:
            ms = int(self._deadline_s * 1000)
            self._conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(1, int(self._deadline_s)),
                application_name=self._application_name,
                # A frozen client must not hold feed locks for ever; and a commit is only acknowledged
                # in Redis when Postgres has made it durable.
                options=f"-c idle_in_transaction_session_timeout={ms} -c statement_timeout={ms}"
                " -c synchronous_commit=on",
            )
        return self._conn

    def _ensure_feeds(self, conn: Connection, feeds: set[str]) -> dict[str, int]:
        missing = sorted(f for f in feeds if f not in self._feed_ids)
        if missing:
            # Committed on its own, before the batch: a feed row without snapshots is harmless, and the
            # cache below must never hold the id of a row that a rollback took away.
            keys: dict[str, list[str]] = {"events": [], "bookmakers": []}
            for feed in missing:
                event, bookmaker = feed.rsplit("|", 1)
                keys["events"].append(event)
                keys["bookmakers"].append(bookmaker)
            with conn.transaction():
                conn.execute(_ENSURE_FEEDS, keys)
                conn.execute(_INSERT_FEEDS, keys)
                rows = conn.execute(_SELECT_FEEDS, keys).fetchall()
            # Cached only once the COMMIT has succeeded: a connection lost at COMMIT may have rolled the
            # new feed rows back, and a cached id of a missing row would fail every later batch of the feed
            # with a foreign-key violation, which dead-letters good entries.
            for feed_id, event, bookmaker in rows:
                self._feed_ids[f"{event}|{bookmaker}"] = feed_id
        return {f: self._feed_ids[f] for f in feeds}

    def _lock_states(self, conn: Connection, ids: dict[str, int]) -> dict[str, FeedState]:
        by_id = {feed_id: feed for feed, feed_id in ids.items()}
        states: dict[str, FeedState] = {}
        conn.execute(_LOCK_FEEDS, (sorted(by_id),))
        for feed_id, snapshot_id, fp, last_ms in conn.execute(_FEED_STATES, (sorted(by_id),)).fetchall():
            if snapshot_id is not None:
                states[by_id[feed_id]] = FeedState(snapshot_id, bytes(fp), last_ms)
        return states

    def _write(self, conn: Connection, result: Plan, ids: dict[str, int]) -> None:
        if result.inserts:
            snapshot_ids = [
                row[0]
                for row in conn.execute(
                    "SELECT nextval('snapshot_ids') FROM generate_series(1, %s)", (len(result.inserts),)
                ).fetchall()
            ]
            ids_of = list(zip(snapshot_ids, result.inserts, strict=True))
            # Both payloads are built before their COPY starts: during a COPY the server waits for data,
            # and there neither statement_timeout nor idle_in_transaction_session_timeout ends a client
            # that froze meanwhile, so its row locks would outlive the client deadline.
            snapshot_rows = snapshots_payload(
                (sid, ids[new.feed], new.captured_at_ms, new.last_confirmed_ms, new.fingerprint)
                for sid, new in ids_of
            )
            market_rows = markets_payload((sid, new.markets) for sid, new in ids_of)
            with conn.cursor().copy(
                "COPY snapshots (id, feed_id, captured_at, last_confirmed_at, fingerprint) FROM STDIN"
                " (FORMAT BINARY)"
            ) as copy:
                copy.write(snapshot_rows)
            with conn.cursor().copy(
                "COPY markets (snapshot_id, market, specifier, outcomes, odds) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(market_rows)
            # Several inserts for one feed in a batch: the last one (newest capture) is current.
            current = {ids[new.feed]: sid for sid, new in ids_of}
            conn.execute(_POINT_FEEDS, (list(current), list(current.values())))
        if result.confirms:
            conn.execute(
                _CONFIRM, (list(result.confirms), [to_datetime(t) for t in result.confirms.values()])
            )


@contextmanager
def _deadline(conn: Connection, seconds: float) -> Iterator[None]:
    """Fail the connection's blocked call once the deadline passes.

    A stalled backend or a black-holed network hangs a query for ever: statement_timeout runs on the server
    and cannot fire. Shutting the socket down from a timer makes the blocked call fail at once, and the
    caller then treats it as a lost connection.
    """
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        try:
            with socket.socket(fileno=os.dup(conn.pgconn.socket)) as sock:
                sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass  # already closed: the blocked call has failed or finished by itself

    timer = threading.Timer(seconds, expire)
    timer.daemon = True
    timer.start()
    try:
        yield
    except psycopg.Error as exc:
        if fired.is_set():
            raise Transient(f"postgres: no answer within the {seconds:g} s deadline") from exc
        raise
    finally:
        timer.cancel()
