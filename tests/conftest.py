"""Fixtures on the real Redis and Postgres of the machine, each test in its own keys and tables.

Integration tests are skipped locally when a server is missing, but fail in CI (CI=true), where a skipped
integration test would hide a broken pipeline.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from typing import NoReturn

import psycopg
import pytest
import redis
import structlog
from hypothesis import HealthCheck
from hypothesis import settings as settings_profiles

from consumer.migrate import create_database_if_missing, upgrade
from shared.db import psycopg_url, with_database
from shared.keys import Keys
from shared.settings import Settings
from tests.fuzzing import CASES
from tests.support import OPEN_CLIENTS

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")
SERVER_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _unavailable(what: str, exc: Exception) -> None:
    missing(f"{what} is not reachable: {exc}")


def missing(message: str) -> NoReturn:
    """Skip the test for a missing server or tool, but fail it in CI, where everything must be there."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def promtool() -> str:
    return _prometheus_tool("promtool")


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    return _prometheus_tool("prometheus")


def _prometheus_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        missing(f"{name} is not installed (Debian/Ubuntu: apt-get install prometheus)")
    return path


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=2).ping()
    except redis.RedisError as exc:
        _unavailable("Redis", exc)
    return REDIS_URL


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A database of this test session's own, migrated once and dropped at the end."""
    url = with_database(SERVER_URL, f"odds_test_{uuid.uuid4().hex[:10]}")
    try:
        create_database_if_missing(url)
    except psycopg.OperationalError as exc:
        _unavailable("Postgres", exc)
    upgrade(url)
    yield url
    with psycopg.connect(psycopg_url(with_database(url, "postgres")), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')


@pytest.fixture
def db(database_url: str) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """A connection to the session database, emptied before the test."""
    with psycopg.connect(psycopg_url(database_url), autocommit=True) as conn:
        conn.execute(
            "TRUNCATE market_versions, market_series, snapshots, feeds, events, bookmakers RESTART IDENTITY"
        )
        yield conn


@pytest.fixture
def settings(redis_url: str, database_url: str, db: object) -> Iterator[Settings]:
    """Settings with stream keys of this test's own; the keys are deleted afterwards."""
    stream = f"test:{uuid.uuid4().hex[:12]}"
    yield Settings(
        redis_url=redis_url,
        database_url=database_url,
        stream=stream,
        shards=2,
        lease_ttl_ms=3000,
        db_deadline_s=2.0,
        trim_interval_s=0.2,
        consumer="test-consumer",
    )
    client = redis.Redis.from_url(redis_url)
    keys = [
        k for pattern in Keys(stream, "", 0).patterns for k in client.scan_iter(match=pattern, count=1000)
    ]
    if keys:
        client.delete(*keys)


@pytest.fixture
def keys(settings: Settings) -> Keys:
    return settings.keys


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


@pytest.fixture(autouse=True)
def _close_fail_fast_clients() -> Iterator[None]:
    yield
    while OPEN_CLIENTS:
        OPEN_CLIENTS.pop().close()


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Undo a test's logging set-up: it binds the stderr of its moment, which pytest closes afterwards."""
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()


# Fuzzing: `make test` runs a short subset with a fixed seed (derandomized, no example database), so the
# suite is the same on every run; `make fuzz` (profile "fuzz") runs the full number of random cases.
settings_profiles.register_profile(
    "default", max_examples=150, derandomize=True, database=None, deadline=None, print_blob=True
)
settings_profiles.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("ODDS_FUZZ_EXAMPLES", "20000")),
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings_profiles.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if CASES["examples"]:
        terminalreporter.write_line(
            f"fuzz: {CASES['examples']:,} generated examples, {CASES['cases']:,} cases checked"
        )
