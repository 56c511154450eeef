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

from consumer.errors import DeadlineExceeded, classify_db_error
from consumer.feed_ids import FeedIds, FeedRowsGone
from consumer.market_state import FeedMarkets, MarketCache, create_series
from consumer.pgcopy import snapshots_payload, versions_payload
from consumer.plan import EMPTY_FEED, Decoder, FeedState, Parsed, Plan, needs_markets, plan
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
    def __init__(
        self,
        database_url: str,
        deadline_s: float,
        *,
        feed_id_cache: int,
        market_cache: int,
        application_name: str = "odds-consumer",
    ) -> None:
        self._url = psycopg_url(database_url)
        self._deadline_s = deadline_s
        self._application_name = application_name
        self._conn: Connection | None = None
        self.feed_ids = FeedIds(feed_id_cache)
        # Feeds' current markets: beyond the limit the least recently written feeds are read again from
        # Postgres when they next change.
        self.markets = MarketCache(market_cache)

    def apply(self, parsed: list[Parsed], decode: Decoder) -> Plan:
        """Write the batch in one transaction and return the plan that was committed."""
        try:
            conn = self._connect()
            with _deadline(conn, self._deadline_s):
                return self.feed_ids.run(
                    conn, {p.feed for p in parsed}, lambda ids: self._apply(conn, parsed, decode, ids)
                )
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

    def _apply(self, conn: Connection, parsed: list[Parsed], decode: Decoder, ids: dict[str, int]) -> Plan:
        with conn.transaction():
            states = self._lock_states(conn, ids)
            need = needs_markets(parsed, states, decode)
            current = self.markets.current(
                conn, {ids[f]: states.get(f, EMPTY_FEED).snapshot_id for f in need}
            )
            for feed in need:
                # Built directly: dataclasses.replace costs several times more, once per changed feed.
                s = states.get(feed, EMPTY_FEED)
                states[feed] = FeedState(
                    s.snapshot_id, s.fingerprint, s.last_ts_ms, current[ids[feed]].present
                )
            result = plan(parsed, states, decode)
            written = self._write(conn, result, ids, current)
        # Only once committed: an entry tagged with a snapshot id that a rollback took away would never
        # match again, but it is simpler never to hold one.
        for feed_id, markets in written.items():
            self.markets.remember(feed_id, markets)
        return result

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

    def _lock_states(self, conn: Connection, ids: dict[str, int]) -> dict[str, FeedState]:
        by_id = {feed_id: feed for feed, feed_id in ids.items()}
        states: dict[str, FeedState] = {}
        # Checked here, once per batch, instead of by a foreign key on every snapshot row (migration 0005):
        # a locked row stays until the commit, and a row missing now was deleted.
        locked = conn.execute(_LOCK_FEEDS, (sorted(by_id),)).fetchall()
        if len(locked) != len(by_id):
            gone = sorted(set(by_id) - {row[0] for row in locked})
            raise FeedRowsGone(f"feed rows deleted since their ids were cached: {gone[:10]}")
        for feed_id, snapshot_id, fp, last_ms in conn.execute(_FEED_STATES, (sorted(by_id),)).fetchall():
            if snapshot_id is not None:
                states[by_id[feed_id]] = FeedState(snapshot_id, bytes(fp), last_ms)
        return states

    def _write(
        self, conn: Connection, result: Plan, ids: dict[str, int], current: dict[int, FeedMarkets]
    ) -> dict[int, FeedMarkets]:
        """Write the plan; returns the markets of each feed it gave a new current snapshot."""
        written: dict[int, FeedMarkets] = {}
        if result.inserts:
            snapshot_ids = [
                row[0]
                for row in conn.execute(
                    "SELECT nextval('snapshot_ids') FROM generate_series(1, %s)", (len(result.inserts),)
                ).fetchall()
            ]
            ids_of = list(zip(snapshot_ids, result.inserts, strict=True))
            series = self._series(conn, result, ids, current)
            # Both payloads are built before their COPY starts: during a COPY the server waits for data,
            # and there neither statement_timeout nor idle_in_transaction_session_timeout ends a client
            # that froze meanwhile, so its row locks would outlive the client deadline.
            snapshot_rows = snapshots_payload(
                (sid, ids[new.feed], new.captured_at_ms, new.last_confirmed_ms, new.fingerprint)
                for sid, new in ids_of
            )
            version_rows = versions_payload(
                (series[ids[new.feed]][key], sid, row) for sid, new in ids_of for key, row in new.changes
            )
            with conn.cursor().copy(
                "COPY snapshots (id, feed_id, captured_at, last_confirmed_at, fingerprint) FROM STDIN"
                " (FORMAT BINARY)"
            ) as copy:
                copy.write(snapshot_rows)
            with conn.cursor().copy(
                "COPY market_versions (series_id, snapshot_id, outcomes, odds, exact_odds) FROM STDIN"
                " (FORMAT BINARY)"
            ) as copy:
                copy.write(version_rows)
            # Several inserts for one feed in a batch: the last one (newest capture) is current.
            newest = {ids[new.feed]: sid for sid, new in ids_of}
            conn.execute(_POINT_FEEDS, (list(newest), list(newest.values())))
            for feed, markets in result.final_markets.items():
                feed_id = ids[feed]
                written[feed_id] = FeedMarkets(newest[feed_id], markets, series[feed_id])
        if result.confirms:
            conn.execute(
                _CONFIRM, (list(result.confirms), [to_datetime(t) for t in result.confirms.values()])
            )
        return written

    @staticmethod
    def _series(
        conn: Connection, result: Plan, ids: dict[str, int], current: dict[int, FeedMarkets]
    ) -> dict[int, dict[tuple[str, str], int]]:
        """The series id of every market the inserts change, per feed id; creates the missing series.

        The cached dicts are shared, not copied, unless a series is created: they must not learn ids that
        a rollback could take away.
        """
        series = {ids[new.feed]: current[ids[new.feed]].series for new in result.inserts}
        wanted = {
            (ids[new.feed], key)
            for new in result.inserts
            for key, _ in new.changes
            if key not in series[ids[new.feed]]
        }
        if wanted:
            created = create_series(conn, wanted)
            for feed_id in {feed_id for feed_id, _ in created}:
                series[feed_id] = dict(series[feed_id])
            for (feed_id, key), series_id in created.items():
                series[feed_id][key] = series_id
        return series


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
            raise DeadlineExceeded(f"postgres: no answer within the {seconds:g} s deadline") from exc
        raise
    finally:
        timer.cancel()
