"""The database schema. Alembic migrations create it; a test checks that they agree with this module.

One feed is one (event, bookmaker). A snapshot row is one distinct odds content of a feed, seen from
captured_at until last_confirmed_at. Its markets hold outcomes and odds as parallel arrays, one row per
market, which keeps rows per snapshot low; the odds_history view (created by the first migration)
unrolls them per outcome.
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
    Column("feed_id", BigInteger, ForeignKey("feeds.id"), nullable=False),
    Column("captured_at", TIMESTAMP(timezone=True), nullable=False),
    Column("last_confirmed_at", TIMESTAMP(timezone=True), nullable=False),
    Column("fingerprint", LargeBinary, nullable=False),
    UniqueConstraint("feed_id", "captured_at", name="snapshots_feed_captured_key"),
    # Unchanged snapshots only move last_confirmed_at, an unindexed column: free space in each page lets
    # Postgres make those updates HOT (no index writes, no new page).
    postgresql_with={"fillfactor": "80"},
)

markets = Table(
    "markets",
    metadata,
    # No foreign key: its per-row check tripled the cost of writing markets, and the writer inserts a
    # snapshot with its markets in one transaction.
    Column("snapshot_id", BigInteger, nullable=False),
    Column("market", Text, nullable=False),
    Column("specifier", Text, nullable=False),
    Column("outcomes", ARRAY(Text), nullable=False),
    Column("odds", ARRAY(Float(precision=53)), nullable=False),
    Index("markets_snapshot_idx", "snapshot_id"),
)
