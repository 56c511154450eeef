"""The database schema. Alembic migrations create it; a test checks that they agree with this module.

One feed is one (event, bookmaker). A snapshot row is one distinct odds content of a feed, seen from
captured_at until last_confirmed_at. A snapshot does not repeat its markets: each market of a feed is a
series, and a series gets a version only when its content changes (odds, or the set of outcomes), when it
appears, or when it disappears (a version without outcomes). The market as of a snapshot is the series'
newest version at or before that snapshot's id: a snapshot's ids grow with its feed's capture times, as
the writer takes them from a sequence in capture-time order under the feed's row lock. The odds_history
view (migration 0004) puts the two together and unrolls outcomes, one row per outcome per snapshot.
"""

from __future__ import annotations

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Sequence,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import TIMESTAMP

metadata = MetaData()

# The writer reserves snapshot ids with nextval before it COPYs, so market rows can carry them.
snapshot_ids = Sequence("snapshot_ids", metadata=metadata)

bookmakers = Table(
    "bookmakers",
    metadata,
    # Integer, not smallint: a sequence can burn values (a rolled-back insert keeps its value), and a
    # smallint one runs out at 32,767.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("slug", Text, nullable=False, unique=True),
)

events = Table(
    "events",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("external_id", Text, nullable=False, unique=True),
)

feeds = Table(
    "feeds",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("event_id", BigInteger, ForeignKey("events.id"), nullable=False),
    Column("bookmaker_id", Integer, ForeignKey("bookmakers.id"), nullable=False),
    # The newest applied snapshot: its fingerprint decides changed or unchanged and its last_confirmed_at
    # is the capture-time guard against stale entries. No foreign key, so a feed row can exist first.
    Column("current_snapshot_id", BigInteger, nullable=True),
    UniqueConstraint("event_id", "bookmaker_id", name="feeds_event_bookmaker_key"),
    postgresql_with={"fillfactor": "70"},
)

snapshots = Table(
    "snapshots",
    metadata,
    Column("id", BigInteger, snapshot_ids, server_default=snapshot_ids.next_value(), primary_key=True),
    # No foreign key: its check per row cost more than the rest of inserting the row. The writer checks
    # the feed rows it locked, once per batch, and a trigger keeps a feed with snapshots from being
    # deleted (migration 0005).
    Column("feed_id", BigInteger, nullable=False),
    Column("captured_at", TIMESTAMP(timezone=True), nullable=False),
    Column("last_confirmed_at", TIMESTAMP(timezone=True), nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    UniqueConstraint("feed_id", "captured_at", name="snapshots_feed_captured_key"),
    # Capture times arrive in about the order rows are appended: BRIN serves "what moved in the last N
    # minutes" in a few pages, and it does not cost HOT updates, as captured_at is never updated.
    Index("snapshots_captured_brin", "captured_at", postgresql_using="brin"),
    # Unchanged snapshots only move last_confirmed_at, an unindexed column: free space in each page lets
    # Postgres make those updates HOT (no index writes, no new page).
    postgresql_with={"fillfactor": "80"},
)

market_series = Table(
    "market_series",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("feed_id", BigInteger, ForeignKey("feeds.id"), nullable=False),
    Column("market", Text, nullable=False),
    Column("specifier", Text, nullable=False),
    # Written once per feed and market, when the market first appears; also serves "the series of a feed".
    UniqueConstraint("feed_id", "market", "specifier", name="market_series_feed_market_key"),
)

market_versions = Table(
    "market_versions",
    metadata,
    # No foreign keys: the per-row check tripled the cost of writing market rows (migration 0002), and the
    # writer inserts a version with its snapshot (and its series, when new) in one transaction.
    Column("series_id", BigInteger, primary_key=True),
    Column("snapshot_id", BigInteger, primary_key=True),  # the first snapshot that shows this version
    # All three NULL: the market disappeared from the feed at this snapshot.
    Column("outcomes", ARRAY(Text), nullable=True),
    # Odds in thousandths. Bookmakers quote decimal odds to two or three places, and an int4 holds them
    # exactly in half the bytes of a float8 (1,000,000.000 is 10^9, under 2^31). The view divides by 1000
    # in float8, which gives back the very float the wire carried: both are the double nearest to k/1000.
    Column("odds", ARRAY(Integer), nullable=True),
    # Only for a market with an odds value that is not a whole thousandth (a producer sending 1.23456):
    # then its odds are kept as sent, in float8, and odds is NULL. Otherwise NULL, which costs one bit.
    Column("exact_odds", ARRAY(Float(precision=53)), nullable=True),
    # "What moved since T" reads versions by snapshot id, which grows as rows are appended: a BRIN index
    # is a few pages where a btree would cost bytes on every version.
    Index("market_versions_snapshot_brin", "snapshot_id", postgresql_using="brin"),
)
