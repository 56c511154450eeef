"""Database URLs: one DATABASE_URL, spelled for each client library that reads it."""

from __future__ import annotations

import re

_SCHEME = re.compile(r"^postgres(ql)?(\+\w+)?://")


def psycopg_url(database_url: str) -> str:
    return _SCHEME.sub("postgresql://", database_url)


def sqlalchemy_url(database_url: str) -> str:
    return _SCHEME.sub("postgresql+psycopg://", database_url)


def with_database(database_url: str, name: str) -> str:
    """The same server and credentials, another database (the demo and tests create their own)."""
    base, _, query = database_url.partition("?")
    head = base.rsplit("/", 1)[0] if base.count("/") > 2 else base
    return f"{head}/{name}" + (f"?{query}" if query else "")


def database_name(database_url: str) -> str:
    base = database_url.partition("?")[0]
    return base.rsplit("/", 1)[1] if base.count("/") > 2 else ""
