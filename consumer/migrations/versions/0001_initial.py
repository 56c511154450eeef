"""Feeds, snapshots, markets and the odds_history view.

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Kept literal rather than imported from shared.schema: a migration must keep meaning what it meant when
# it shipped, whatever the models become. A test compares the migrated database with the models.
HISTORY_VIEW = """
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


def upgrade() -> None:
    op.execute(sa.schema.CreateSequence(sa.Sequence("snapshot_ids")))
    op.create_table(
        "bookmakers",
        sa.Column("id", sa.SmallInteger, primary_key=True, autoincrement=True),
        sa.Column("slug", sa.Text, nullable=False, unique=True),
    )
    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("external_id", sa.Text, nullable=False, unique=True),
    )
    op.create_table(
        "feeds",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.BigInteger, sa.ForeignKey("events.id"), nullable=False),
        sa.Column("bookmaker_id", sa.SmallInteger, sa.ForeignKey("bookmakers.id"), nullable=False),
        sa.Column("current_snapshot_id", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("event_id", "bookmaker_id", name="feeds_event_bookmaker_key"),
        postgresql_with={"fillfactor": "70"},
    )
    op.create_table(
        "snapshots",
        sa.Column("id", sa.BigInteger, primary_key=True, server_default=sa.text("nextval('snapshot_ids')")),
        sa.Column("feed_id", sa.BigInteger, sa.ForeignKey("feeds.id"), nullable=False),
        sa.Column("captured_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_confirmed_at", postgresql.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("fingerprint", sa.LargeBinary, nullable=False),
        sa.UniqueConstraint("feed_id", "captured_at", name="snapshots_feed_captured_key"),
        postgresql_with={"fillfactor": "80"},
    )
    op.create_table(
        "markets",
        sa.Column(
            "snapshot_id", sa.BigInteger, sa.ForeignKey("snapshots.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("market", sa.Text, nullable=False),
        sa.Column("specifier", sa.Text, nullable=False),
        sa.Column("outcomes", postgresql.ARRAY(sa.Text), nullable=False),
        sa.Column("odds", postgresql.ARRAY(sa.Float(precision=53)), nullable=False),
    )
    op.create_index("markets_snapshot_idx", "markets", ["snapshot_id"])
    op.execute(HISTORY_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW odds_history")
    for table in ("markets", "snapshots", "feeds", "events", "bookmakers"):
        op.drop_table(table)
    op.execute("DROP SEQUENCE snapshot_ids")
