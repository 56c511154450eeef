"""Alembic, configured in code so the package carries its migrations and no ini file is needed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from psycopg import sql
from sqlalchemy import create_engine
from sqlalchemy.pool import NullPool

from shared.db import database_name, psycopg_url, sqlalchemy_url, with_database

MIGRATIONS = Path(__file__).with_name("migrations")
OnProgress = Callable[[int, int], None]  # (applied, to apply)


def _quiet(done: int, total: int) -> None:
    pass


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # Alembic's ini interpolation treats % specially; a password may contain one.
    config.set_main_option("sqlalchemy.url", sqlalchemy_url(database_url).replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head", progress: OnProgress = _quiet) -> None:
    """Apply the migrations up to revision; progress(applied, to_apply) after each one."""
    config = alembic_config(database_url)
    total = len(pending_revisions(config, database_url, revision))
    applied = 0

    def on_version_apply(**_: Any) -> None:
        nonlocal applied
        applied += 1
        progress(applied, total)

    config.attributes["on_version_apply"] = (on_version_apply,)
    progress(0, total)
    command.upgrade(config, revision)


def pending_revisions(config: Config, database_url: str, revision: str = "head") -> list[str]:
    """The revisions an upgrade to revision would apply, oldest first."""
    engine = create_engine(sqlalchemy_url(database_url), poolclass=NullPool)
    try:
        with engine.connect() as connection:
            current = MigrationContext.configure(connection).get_current_heads()
    finally:
        engine.dispose()
    scripts = ScriptDirectory.from_config(config).iterate_revisions(revision, current or "base")
    return [script.revision for script in reversed(list(scripts))]


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database through the server's maintenance database; True if it was created."""
    name = database_name(database_url)
    with psycopg.connect(psycopg_url(with_database(database_url, "postgres")), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return True
