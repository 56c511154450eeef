"""Command-line options shared by the producer and consumer: each falls back to its environment variable."""

from __future__ import annotations

import argparse
from typing import Any

from shared.settings import Settings

EXIT_SETTINGS = 2  # a setting or flag is unusable (argparse's own code for bad usage)
EXIT_REFUSED = 4  # a server refuses this process: credentials, permissions, certificates


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--redis-url", help="Redis URL (env REDIS_URL)")
    parser.add_argument("--database-url", help="Postgres URL (env DATABASE_URL)")
    parser.add_argument("--stream", help="stream name; shard n is STREAM:n (env ODDS_STREAM)")
    parser.add_argument("--shards", type=int, help="number of stream shards (env ODDS_SHARDS)")
    parser.add_argument("--group", help="consumer group (env ODDS_GROUP)")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument(
        "--log-json",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="JSON logs (default: when stderr is not a terminal)",
    )


def settings_from(args: argparse.Namespace, **extra: Any) -> Settings:
    names = ("redis_url", "database_url", "stream", "shards", "group")
    return Settings.from_env(**{n: getattr(args, n, None) for n in names}, **extra)
