"""Store each market once per change: market series and their versions instead of 40 rows per snapshot.

Until 0003 a changed snapshot stored all of its markets again, although a line move touches a few. Now a
market of a feed is a series (market_series) and gets a version (market_versions) only when its content
changes, appears or disappears. The odds_history view keeps its columns and its rows.

The upgrade walks each series through its feed's snapshots in id order and keeps the rows whose content
differs from the snapshot before (a market absent where it was present becomes a version without
outcomes). Odds that are whole thousandths go into int4 thousandths, any other into exact_odds as they
were. It reads and rewrites all of the market rows under an exclusive lock: run it with the consumers
stopped. The downgrade builds the old rows back from the versions, one per market per snapshot.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Literal, as in 0001: a migration keeps meaning what it meant when it shipped.
HISTORY_VIEW = """
CREATE VIEW odds_history AS
SELECT e.external_id AS event,
       b.slug AS bookmaker,
       ms.market,
       ms.specifier,
       o.outcome,
       coalesce(o.exact, o.milli::float8 / 1000::float8) AS odds,
       s.captured_at,
       s.last_confirmed_at
FROM snapshots s
JOIN feeds f ON f.id = s.feed_id
JOIN events e ON e.id = f.event_id
JOIN bookmakers b ON b.id = f.bookmaker_id
JOIN market_series ms ON ms.feed_id = s.feed_id
CROSS JOIN LATERAL (
  SELECT v.outcomes, v.odds, v.exact_odds FROM market_versions v
  WHERE v.series_id = ms.id AND v.snapshot_id <= s.id
  ORDER BY v.snapshot_id DESC LIMIT 1
) v
CROSS JOIN LATERAL unnest(v.outcomes, v.odds, v.exact_odds) AS o(outcome, milli, exact)
"""

OLD_HISTORY_VIEW = """
CREATE VIEW odds_history AS
SELECT e.external_id AS event,
       b.slug AS bookmaker,
       m.market,
       m.specifier,
       o.outcome,
       o.odds,
       s.captured_at,
       s.last_confirmed_at
FROM snapshots s
JOIN feeds f ON f.id = s.feed_id
JOIN events e ON e.id = f.event_id
JOIN bookmakers b ON b.id = f.bookmaker_id
JOIN markets m ON m.snapshot_id = s.id
CROSS JOIN LATERAL unnest(m.outcomes, m.odds) AS o(outcome, odds)
"""

_FILL_SERIES = """
INSERT INTO market_series (feed_id, market, specifier)
SELECT DISTINCT s.feed_id, m.market, m.specifier FROM markets m JOIN snapshots s ON s.id = m.snapshot_id
ORDER BY 1, 2, 3
"""
# Every series against every snapshot of its feed, the market's row there or NULL, compared with the
# snapshot before: a version wherever the two differ. A series absent from its feed's first snapshots
# compares NULL with NULL there and gets no version until it appears.
_FILL_VERSIONS = """
INSERT INTO market_versions (series_id, snapshot_id, outcomes, odds, exact_odds)
SELECT series_id, snapshot_id, outcomes,
       CASE WHEN exact THEN milli END,
       CASE WHEN NOT exact THEN odds END
FROM (
  SELECT g.*,
         lag(outcomes) OVER w AS before_outcomes,
         lag(odds) OVER w AS before_odds,
         (SELECT array_agg(round(x * 1000)::int4 ORDER BY i) FROM unnest(odds) WITH ORDINALITY AS u(x, i))
           AS milli,
         (SELECT bool_and(round(x * 1000) / 1000 = x) FROM unnest(odds) AS u(x)) AS exact
  FROM (
    SELECT ms.id AS series_id, s.id AS snapshot_id, m.outcomes, m.odds
    FROM market_series ms
    JOIN snapshots s ON s.feed_id = ms.feed_id
    LEFT JOIN markets m ON m.snapshot_id = s.id AND m.market = ms.market AND m.specifier = ms.specifier
  ) g
  WINDOW w AS (PARTITION BY series_id ORDER BY snapshot_id)
) c
WHERE outcomes IS DISTINCT FROM before_outcomes OR odds IS DISTINCT FROM before_odds
"""
# The downgrade: each series as of each snapshot of its feed, present ones only.
_FILL_MARKETS = """
INSERT INTO markets (snapshot_id, market, specifier, outcomes, odds)
SELECT s.id, ms.market, ms.specifier, v.outcomes,
       coalesce(v.exact_odds, ARRAY(SELECT k::float8 / 1000::float8 FROM unnest(v.odds) WITH ORDINALITY
                                     AS u(k, i) ORDER BY i))
FROM snapshots s
JOIN market_series ms ON ms.feed_id = s.feed_id
CROSS JOIN LATERAL (
  SELECT v.outcomes, v.odds, v.exact_odds FROM market_versions v
  WHERE v.series_id = ms.id AND v.snapshot_id <= s.id
  ORDER BY v.snapshot_id DESC LIMIT 1
) v
WHERE v.outcomes IS NOT NULL
"""


def upgrade() -> None:
    op.create_table(
        "market_series",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("feed_id", sa.BigInteger, sa.ForeignKey("feeds.id"), nullable=False),
        sa.Column("market", sa.Text, nullable=False),
        sa.Column("specifier", sa.Text, nullable=False),
        sa.UniqueConstraint("feed_id", "market", "specifier", name="market_series_feed_market_key"),
    )
    op.create_table(
        "market_versions",
        sa.Column("series_id", sa.BigInteger, primary_key=True),
        sa.Column("snapshot_id", sa.BigInteger, primary_key=True),
        sa.Column("outcomes", postgresql.ARRAY(sa.Text), nullable=True),
        sa.Column("odds", postgresql.ARRAY(sa.Integer), nullable=True),
        sa.Column("exact_odds", postgresql.ARRAY(sa.Float(precision=53)), nullable=True),
    )
    op.execute("LOCK TABLE snapshots, markets IN EXCLUSIVE MODE")
    op.execute(_FILL_SERIES)
    op.execute(_FILL_VERSIONS)
    op.create_index(
        "market_versions_snapshot_brin", "market_versions", ["snapshot_id"], postgresql_using="brin"
    )
    op.create_index("snapshots_captured_brin", "snapshots", ["captured_at"], postgresql_using="brin")
    op.execute("DROP VIEW odds_history")
    op.execute(HISTORY_VIEW)
    op.drop_table("markets")


def downgrade() -> None:
    op.create_table(
        "markets",
        sa.Column("snapshot_id", sa.BigInteger, nullable=False),
        sa.Column("market", sa.Text, nullable=False),
        sa.Column("specifier", sa.Text, nullable=False),
        sa.Column("outcomes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("odds", postgresql.ARRAY(sa.Float(precision=53)), nullable=False),
    )
    op.execute("LOCK TABLE snapshots, market_series, market_versions IN EXCLUSIVE MODE")
    op.execute(_FILL_MARKETS)
    op.create_index("markets_snapshot_idx", "markets", ["snapshot_id"])
    op.execute("DROP VIEW odds_history")
    op.execute(OLD_HISTORY_VIEW)
    op.drop_index("snapshots_captured_brin", "snapshots")
    op.drop_table("market_versions")
    op.drop_table("market_series")
