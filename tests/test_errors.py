"""Failure policy: which database and Redis errors are retried, dead-lettered, or retried with an alert."""

from __future__ import annotations

import psycopg
import pytest
import redis
from psycopg import errors

from consumer.errors import (
    BatchDataError,
    DeadlineExceeded,
    Refused,
    Transient,
    Unavailable,
    classify_db_error,
    classify_redis_error,
)


@pytest.mark.parametrize("sqlstate", ["08006", "08001", "57P01", "57P02", "57P03", "40001", "40P01"])
def test_connection_loss_shutdown_and_serialization_failures_are_retried(sqlstate: str) -> None:
    # Given a Postgres error of a kind that heals by itself
    error = errors.lookup(sqlstate)("boom")
    # When it is classified
    policy = classify_db_error(error)
    # Then the batch is retried, and no person is called
    assert type(policy) is Transient
    assert sqlstate in str(policy) or type(error).__name__ in str(policy)


def test_a_connection_lost_without_sqlstate_is_retried() -> None:
    # Given the error psycopg raises when the server went away mid-query (no SQLSTATE at all)
    error = psycopg.OperationalError("server closed the connection unexpectedly")
    # When it is classified, then it is retried like any other lost connection
    assert type(classify_db_error(error)) is Transient


@pytest.mark.parametrize("sqlstate", ["57014", "25P03"])
def test_the_servers_side_of_the_deadline_is_a_deadline_miss(sqlstate: str) -> None:
    # Given a statement cancelled by statement_timeout, or a connection ended by the idle-in-transaction
    # timeout while the client built the rest of its transaction (both set to the client deadline)
    policy = classify_db_error(errors.lookup(sqlstate)("boom"))
    # Then it is retried, in smaller parts, and no person is called
    assert isinstance(policy, DeadlineExceeded)
    assert policy.cause == "transient"


@pytest.mark.parametrize("sqlstate", ["22003", "22P02", "23505", "23514"])
def test_data_and_constraint_errors_dead_letter_the_culprit(sqlstate: str) -> None:
    # Given Postgres refusing some entry's data (class 22) or a constraint (class 23)
    policy = classify_db_error(errors.lookup(sqlstate)("boom"))
    # Then the batch is split to find that entry, and only it is dead-lettered
    assert isinstance(policy, BatchDataError)
    assert sqlstate in str(policy)


@pytest.mark.parametrize("sqlstate", ["53100", "42P01"])
def test_errors_a_person_must_fix_are_retried_and_flagged(sqlstate: str) -> None:
    # Given a full disk, or a schema that was never migrated
    policy = classify_db_error(errors.lookup(sqlstate)("boom"))
    # Then nothing is dropped or dead-lettered: it is retried, with the cause that alerts a person
    assert isinstance(policy, Unavailable)
    assert policy.cause == "unavailable"


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (redis.ConnectionError("refused"), Transient),
        (redis.TimeoutError("timed out"), Transient),
        (redis.ResponseError("LOADING Redis is loading the dataset in memory"), Transient),
        (redis.ResponseError("BUSY Redis is busy running a script"), Transient),
        (
            redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
            Unavailable,
        ),
        (redis.exceptions.OutOfMemoryError("OOM command not allowed"), Unavailable),
    ],
)
def test_redis_errors_are_retried_and_only_the_hopeless_ones_flagged(
    error: redis.RedisError, kind: type[Transient]
) -> None:
    # When a Redis error is classified, then it is always retried, flagged when a person must act
    assert type(classify_redis_error(error)) is kind


@pytest.mark.parametrize(
    "error",
    [
        errors.lookup("28P01")('password authentication failed for user "odds"'),
        psycopg.OperationalError('connection failed: FATAL:  password authentication failed for user "odds"'),
        psycopg.OperationalError("connection failed: SSL error: certificate verify failed"),
        psycopg.OperationalError('server certificate for "db" does not match host name "127.0.0.1"'),
        psycopg.OperationalError('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "odds"'),
    ],
)
def test_postgres_refusing_the_consumer_stops_it(error: psycopg.Error) -> None:
    # Given Postgres refusing the credentials, or a certificate that does not verify
    policy = classify_db_error(error)
    # Then no retry is attempted: the consumer stops, saying where to fix it
    assert isinstance(policy, Refused) and "DATABASE_URL" in str(policy)


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (
            redis.exceptions.NoPermissionError("this user has no permissions to run the 'xack' command"),
            "'xack'",
        ),
        (redis.AuthenticationError("invalid username-password pair"), "fix them in REDIS_URL"),
        (
            redis.ConnectionError(
                "Error 1 connecting. [SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed"
            ),
            "ssl_ca_certs",
        ),
        (
            redis.ResponseError(
                "The user executing the script can't run this command or subcommand script: "
                + "0" * 40
                + ", on @user_script:3."
            ),
            "grant it",
        ),
    ],
)
def test_redis_refusing_the_consumer_stops_it(error: redis.RedisError, words: str) -> None:
    # Given Redis refusing the credentials, a permission, or a certificate
    policy = classify_redis_error(error)
    # Then the consumer stops, saying what to fix
    assert isinstance(policy, Refused) and words in str(policy)


def test_a_command_refused_inside_a_script_is_named_from_the_script() -> None:
    # Given a consumer script whose ZADD Redis refused (Redis 7.0 names only the script and its line)
    from consumer.scripts import load
    from tests.support import fail_fast_client

    script = load(fail_fast_client("redis://127.0.0.1:1/0"), "heartbeat")
    line = next(i for i, text in enumerate(script.script.splitlines(), 1) if "'ZADD'" in text)
    error = redis.ResponseError(
        f"The user executing the script can't run this command or subcommand script: {script.sha}, "
        f"on @user_script:{line}."
    )
    # Then the refusal names the script and the command
    assert f"the script consumer/lua/heartbeat.lua may not run zadd (its line {line})" in str(
        classify_redis_error(error)
    )
