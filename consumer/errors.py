"""Failure policy as exception types: what is retried, what is dead-lettered, what only waits.

Postgres errors are classified by SQLSTATE, not by DB-API class: an OperationalError can be a dropped
connection (retry) or a wrong password (no retry will help, but dropping data would be worse).
"""

from __future__ import annotations

import psycopg
import redis

from shared.redis_errors import Condition, access_refused, condition, describe, what_to_fix


class Transient(Exception):
    """The batch could not be finished now; retry it with backoff. Never dropped, never dead-lettered."""

    cause = "transient"


class Unavailable(Transient):
    """Retrying is right, but a person must act (credentials, disk full, schema not migrated)."""

    cause = "unavailable"


class Refused(Exception):
    """Redis or Postgres refuses this consumer: credentials, a missing permission, a certificate that does
    not verify. No retry helps and retrying for ever would hide it: the daemon stops, saying what to fix."""


class DeadlineExceeded(Transient):
    """Postgres gave no answer within the client deadline: retry, and with less work per transaction."""


class BatchDataError(Exception):
    """Postgres rejected the data of some entry in the batch (class 22 or 23): find it and dead-letter it."""


# Class 08 is connection exceptions; 57P01..57P03 are shutdown and cannot-connect-now; 40001 and 40P01 are
# serialization failure and deadlock, which succeed when run again.
_RETRY_STATES = ("57P01", "57P02", "57P03", "40001", "40P01")
# The server's side of the client deadline (statement_timeout and idle_in_transaction_session_timeout are
# set to it): statement cancelled, or connection ended while the client built the rest of a transaction.
_DEADLINE_STATES = ("57014", "25P03")
_DATA_CLASSES = ("22", "23")


# libpq reports a refused connection without a SQLSTATE; these are its words for refusals no retry fixes:
# a wrong password or user, no pg_hba.conf line for this client, a certificate that does not verify.
_REFUSALS = (
    "password authentication failed",
    "no pg_hba.conf entry",
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
)
_REFUSED_STATES = ("28000", "28P01")  # invalid authorization, invalid password


def db_access_refused(exc: psycopg.Error) -> bool:
    text = str(exc)
    return exc.sqlstate in _REFUSED_STATES or any(words in text for words in _REFUSALS)


def classify_db_error(exc: psycopg.Error) -> Exception:
    if db_access_refused(exc):
        return Refused(
            f"Postgres refused the consumer ({str(exc).strip()}); fix the credentials or the TLS settings "
            "(sslrootcert) in DATABASE_URL"
        )
    state = exc.sqlstate
    if state in _DEADLINE_STATES:
        return DeadlineExceeded(f"postgres: {state}: {exc}".strip())
    if state is None or state.startswith("08") or state in _RETRY_STATES:
        return Transient(f"postgres: {type(exc).__name__}: {exc}".strip())
    if state[:2] in _DATA_CLASSES:
        return BatchDataError(f"postgres rejected the data ({state}): {exc}".strip())
    return Unavailable(f"postgres error {state}: {exc}".strip())


def classify_redis_error(exc: redis.RedisError) -> Transient | Refused:
    """Every Redis failure is retried, but a refusal of this consumer; only a connection that comes back by
    itself is merely transient.

    A full Redis, a demoted master or failing persistence need a person, but end by themselves once fixed.
    """
    if access_refused(exc):
        return Refused(what_to_fix(exc, "consumer"))
    if condition(exc) is Condition.UNREACHABLE:
        return Transient(describe(exc))
    return Unavailable(describe(exc))
