"""Give bookmaker ids room: integer instead of smallint, for the column, the sequence and the reference.

A smallint sequence ends at 32,767. Before the writer inserted only missing rows, every batch holding an
uncached feed took a value per bookmaker of the batch, and restarts ran the sequence out within weeks;
every new feed was then dead-lettered. Values burnt that way stay burnt, so the sequence needs room.
The odds_history view joins on the columns, so it is dropped and created again with its own definition.
Changing feeds.bookmaker_id rewrites the feeds table (one row per event and bookmaker) under an exclusive
lock: run it with the consumers stopped.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    _retype("integer")


def downgrade() -> None:
    _retype("smallint")


def _retype(kind: str) -> None:
    bind = op.get_bind()
    view = bind.exec_driver_sql("SELECT pg_get_viewdef('odds_history'::regclass)").scalar_one()
    op.execute("DROP VIEW odds_history")
    op.execute(f"ALTER SEQUENCE bookmakers_id_seq AS {kind}")
    op.execute(f"ALTER TABLE bookmakers ALTER COLUMN id TYPE {kind}")
    op.execute(f"ALTER TABLE feeds ALTER COLUMN bookmaker_id TYPE {kind}")
    op.execute(f"CREATE VIEW odds_history AS {view}")
