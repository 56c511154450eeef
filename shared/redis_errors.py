"""What a Redis error means for the pipeline: a condition that passes, or one a person must fix.

Producers and consumers act on the same conditions in their own way: a producer keeps entries in its buffer
while Redis cannot take them and raises what no wait will fix; a consumer retries everything, but tells a
passing outage from one that needs a person.
"""

from __future__ import annotations

import hashlib
import re
import ssl
from collections.abc import Mapping
from enum import StrEnum

import redis


class Condition(StrEnum):
    UNREACHABLE = "unreachable"  # connection lost or refused, timeout, loading, a busy script, cluster moving
    OUT_OF_MEMORY = "out_of_memory"  # over maxmemory, and the policy evicts nothing that could help
    READ_ONLY = "read_only"  # a replica answered: a failover demoted the server written to
    NOT_PERSISTING = "not_persisting"  # MISCONF: a failed snapshot makes Redis refuse writes
    REFUSED = "refused"  # credentials, permissions, a key of the wrong type: no wait will help
    NOT_REPLICATED = "not_replicated"  # written, but fewer replicas confirmed it than the producer waits for


# Replies that mean "not now": the server is loading, running a long script, or its cluster is moving.
_PASSING_REPLIES = ("LOADING", "BUSY", "TRYAGAIN", "MASTERDOWN", "CLUSTERDOWN")


class NotReplicated(redis.RedisError):
    """WAIT returned before as many replicas as asked had the writes: the master has them, but a failover
    now could lose them, so the producer sends them again (a consumer recognises repeats)."""


class TopologyChanged(redis.ConnectionError):
    """A cluster master redirected (MOVED, ASK) a write sent straight to it: its slots moved, by a failover
    or a resharding. A passing condition: the cluster client reads the map of nodes again."""


class ClusterUnsupported(redis.RedisError):
    """A client that talks to one server met a node of a Redis Cluster: some commands would work on that
    node and others be redirected (MOVED) or refused (CROSSSLOT)."""

    def __init__(self, what: str = "this process connected with a single server's client") -> None:
        super().__init__(f"REDIS_URL names a node of a Redis Cluster, but {what}")


def _from_a_cluster(exc: redis.RedisError) -> bool:
    """Replies only a cluster gives: a key lives on another node (MOVED, ASK; redis-py raises them as
    their own types, and a cluster client follows them itself), or one call spans hash slots (CROSSSLOT)."""
    cluster_types = (ClusterUnsupported, redis.exceptions.MovedError, redis.exceptions.AskError)
    return isinstance(exc, cluster_types) or str(exc).startswith("CROSSSLOT")


def cluster_enabled(info: Mapping[str, object]) -> bool:
    """Whether an `INFO cluster` reply comes from a node of a Redis Cluster."""
    return str(info.get("cluster_enabled", 0)) == "1"


def access_refused(exc: redis.RedisError) -> bool:
    """Whether Redis refuses this client itself: a wrong password, a missing ACL permission, or a server
    certificate that does not verify. Nothing but a change of configuration helps."""
    # redis-py makes a refused password or a denied AUTH a ConnectionError, and so a failed certificate
    # check, which it raises while handling the ssl error (the context, not the cause).
    if isinstance(exc, _CREDENTIALS_REFUSED | redis.exceptions.NoPermissionError) or _from_a_cluster(exc):
        return True
    # Redis 7.0 reports a command a script may not run without the NOPERM code.
    if str(exc).startswith(_SCRIPT_REFUSED):
        return True
    return _certificate_refused(exc)


_SCRIPT_REFUSED = "The user executing the script can't run this command"
_SCRIPT_LINE = re.compile(r"script: (?P<sha>[0-9a-f]{40}), on @user_script:(?P<line>\d+)")
_CALL = re.compile(r"redis\.p?call\(\s*'(?P<command>[A-Za-z]+)'(?:\s*,\s*'(?P<sub>[A-Z]+)')?")
_SCRIPTS: dict[str, tuple[str, str]] = {}  # SHA-1, as Redis names a script -> (name, source)


def remember_script(name: str, source: str) -> None:
    """Know a script by the SHA-1 Redis names it by, so that a refusal inside it can name the command."""
    _SCRIPTS[hashlib.sha1(source.encode()).hexdigest()] = (name, source)


def _refused_in_script(text: str) -> str | None:
    """The command a script was refused, read from the script's line that Redis names."""
    found = _SCRIPT_LINE.search(text)
    known = _SCRIPTS.get(found["sha"]) if found else None
    if found is None or known is None:
        return None
    name, source = known
    lines = source.splitlines()
    number = int(found["line"])
    calls = _CALL.findall(lines[number - 1]) if 0 < number <= len(lines) else []
    commands = " or ".join(f"{c}|{sub}".lower() if sub else c.lower() for c, sub in calls) or "a command"
    return f"the script {name} may not run {commands} (its line {number})"


_CREDENTIALS_REFUSED = redis.AuthenticationError | redis.exceptions.AuthorizationError


def _certificate_refused(exc: redis.RedisError) -> bool:
    return isinstance(exc, redis.ConnectionError) and (
        isinstance(exc.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in str(exc)
    )


def condition(exc: redis.RedisError) -> Condition:
    if isinstance(exc, NotReplicated):
        return Condition.NOT_REPLICATED
    if access_refused(exc):
        return Condition.REFUSED
    if isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return Condition.UNREACHABLE
    if isinstance(exc, redis.exceptions.OutOfMemoryError):
        return Condition.OUT_OF_MEMORY
    if isinstance(exc, redis.exceptions.ReadOnlyError):
        return Condition.READ_ONLY
    text = str(exc)
    if text.startswith("MISCONF"):
        return Condition.NOT_PERSISTING
    if text.startswith(_PASSING_REPLIES) or isinstance(exc, redis.exceptions.ClusterDownError):
        return Condition.UNREACHABLE
    return Condition.REFUSED


def describe(exc: redis.RedisError) -> str:
    return f"redis: {type(exc).__name__}: {exc}"


def what_to_fix(exc: redis.RedisError, who: str, url_variable: str = "REDIS_URL") -> str:
    """One line for a refusal: what Redis said (it names a missing command), and where to fix it."""
    if isinstance(exc, ClusterUnsupported):
        return f"Redis refused the {who}: {exc}"
    if _from_a_cluster(exc):
        return f"Redis refused the {who}: {ClusterUnsupported()} ({type(exc).__name__}: {exc})"
    in_script = _refused_in_script(str(exc))
    if isinstance(exc, redis.exceptions.NoPermissionError) or str(exc).startswith(_SCRIPT_REFUSED):
        return (
            f"Redis refused the {who}: {in_script or exc}; grant it to the {who}'s user in the Redis ACL "
            "(README, Security) or use a user that has it"
        )
    if not isinstance(exc, _CREDENTIALS_REFUSED) and _certificate_refused(exc):
        return (
            f"Redis's TLS certificate did not verify ({exc}); point ssl_ca_certs in {url_variable} at the CA "
            "that signed it"
        )
    return f"Redis refused the {who}'s credentials ({type(exc).__name__}: {exc}); fix them in {url_variable}"
