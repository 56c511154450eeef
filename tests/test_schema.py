"""The migrations build exactly the schema that shared.schema describes."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine

from shared.db import sqlalchemy_url
from shared.schema import metadata


def test_migrated_database_matches_the_models(database_url: str) -> None:
    # Given the session database, migrated to head by the fixture
    engine = create_engine(sqlalchemy_url(database_url))
    try:
        with engine.connect() as conn:
            # When alembic compares it with the models
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    # Then there is nothing to migrate
    assert diff == []
