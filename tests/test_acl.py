"""The Redis users of deploy/redis-users.acl: the pipeline runs through them, and each may do no more.

A private redis-server loads the committed rules with the default user off. The producer publishes, a
consumer process stores, the operator runs status and the dlq commands; afterwards Redis's ACL log shows
that nothing any of them did was refused. Then the producer is shown what it may not do, and refused
credentials or permissions end each command with one readable line and a non-zero exit.
"""

from __future__ import annotations

import json
import pathlib
import signal
from collections.abc import Iterator

import psycopg
import pytest
import redis

from producer.core import PublishRefused
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.cli import EXIT_REFUSED
from shared.redis_client import connect
from shared.settings import Settings
from tests.history import compare, expected_history, stored_history
from tests.secure import STREAM, TEST_ADMIN, RedisUsers, redis_with_users, run_cli
from tests.support import dead_letters, env_for, start_consumer, wait_until_drained

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture(scope="module")
def users(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisUsers]:
    with redis_with_users(tmp_path_factory.mktemp("acl")) as found:
        yield found


@pytest.fixture
def admin(users: RedisUsers) -> Iterator[redis.Redis]:
    """The tests' own view of the private Redis; it starts each test empty, with an empty ACL log."""
    client = connect(users.url(TEST_ADMIN), 2.0)
    client.flushdb()
    client.acl_log_reset()
    yield client
    client.close()


def denials(admin: redis.Redis) -> list[str]:
    """Redis's log of refused commands, one line per refusal (it counts repeats of one in a single entry)."""
    return [
        f"{e['username']} {e['reason']} {e['object']}" for e in admin.acl_log() for _ in range(e["count"])
    ]


def test_the_pipeline_runs_through_the_three_users_and_none_is_refused_anything(
    users: RedisUsers, settings: Settings, db: Conn, admin: redis.Redis
) -> None:
    # Given a producer, a consumer process and an operator, each connected as its own user
    producer = users.settings(settings, "producer")
    consumer = users.settings(settings, "consumer")
    operator = env_for(users.settings(settings, "operator"))
    keys = producer.keys
    sim = Simulator(SimulationSpec(events=10, bookmakers=("sportybet", "bet9ja"), markets=5, seed=3))
    published = [s for c in range(3) for s in sim.cycle(TS + c * 1000)]
    publisher = Publisher.from_settings(producer)
    proc = start_consumer(consumer, "acl-consumer")
    try:
        # When the producer publishes three cycles and one entry the consumer cannot read
        for c in range(3):
            publisher.publish_cycle(published[c * 20 : (c + 1) * 20])
        # (0xc1 is the one byte msgpack never uses)
        poison = {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": str(TS), "data": b"\xc1"}
        publisher._client.xadd(keys.shard(0), poison)  # type: ignore[arg-type]
        wait_until_drained(admin, keys)
        # And the operator checks the status, then lists, replays and purges the dead letter
        status = run_cli("consumer", ["status", "--json", "--max-dead-letters", "1"], operator)
        listed = run_cli("consumer", ["dlq", "list", "--json"], operator)
        replayed = run_cli("consumer", ["dlq", "replay", "--all"], operator)
        wait_until_drained(admin, keys)
        again = int(len(dead_letters(admin, keys)))
        purged = run_cli("consumer", ["dlq", "purge", "--all", "--yes"], operator)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    # Then everything was stored as one in-order writer would, and each command did its work
    report = compare(expected_history(published), stored_history(db))
    assert report.ok, report.summary()
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["counters"]["changed"] == sum(
        len(r) for r in expected_history(published).values()
    )
    assert [letter["reason"] for letter in json.loads(listed.stdout)] == [
        "data is not valid msgpack: FormatError"
    ]
    assert len(json.loads(replayed.stdout)["replayed"]) == 1 and again == 1
    assert json.loads(purged.stdout) == {"purged": 1}
    assert code == 0
    # And Redis refused none of the three anything along the way
    assert denials(admin) == []


@pytest.mark.parametrize(
    ("command", "refusal"),
    [
        (["HGETALL", f"{STREAM}:fingerprints"], "'hgetall' command"),
        # HGET is granted for the shard count record only (shared/shard_count.py), not for other keys.
        (["HGET", f"{STREAM}:fingerprints", "sr:match:1|bet9ja"], "one of the keys"),
        (["XRANGE", f"{STREAM}:0", "-", "+"], "'xrange' command"),
        (["XDEL", f"{STREAM}:0", "1-0"], "'xdel' command"),
        (["XTRIM", f"{STREAM}:0", "MAXLEN", "0"], "'xtrim' command"),
        (["DEL", f"{STREAM}:0"], "'del' command"),
        (["FLUSHDB"], "'flushdb' command"),
        (["CONFIG", "GET", "maxmemory"], "'config|get' command"),
        (["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"], "'config|set' command"),
        (["ACL", "SETUSER", "producer", "+@all"], "'acl|setuser' command"),
        (["EVAL", "return 1", "0"], "'eval' command"),
    ],
)
def test_the_producer_may_not_read_delete_flush_or_configure(
    users: RedisUsers, admin: redis.Redis, command: list[str], refusal: str
) -> None:
    # Given the producer's connection
    producer = connect(users.url("producer"), 2.0)
    # When it tries anything but publishing, then Redis refuses, naming the command or the key it lacks
    with pytest.raises(redis.exceptions.NoPermissionError, match=refusal):
        producer.execute_command(*command)
    producer.close()


def test_the_producer_may_not_write_keys_other_than_its_shards_and_counters(
    users: RedisUsers, admin: redis.Redis
) -> None:
    # Given the producer's connection, which may XADD and HINCRBY
    producer = connect(users.url("producer"), 2.0)
    # When it aims them at the dead letters, a lease or the fingerprints, then Redis refuses the keys
    for command in (
        ["XADD", f"{STREAM}:dead", "*", "v", "1"],
        ["XADD", f"{STREAM}:lease:odds-writers:0", "*", "v", "1"],
        ["HINCRBY", f"{STREAM}:fingerprints", "feed", "1"],
    ):
        with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
            producer.execute_command(*command)
    # And its own keys take them
    assert producer.execute_command("XADD", f"{STREAM}:3", "*", "v", "1")
    assert producer.execute_command("HINCRBY", f"{STREAM}:stats", "published", "1") == 1
    producer.close()


def test_a_refused_publish_names_the_key_and_is_raised_once_not_retried(
    users: RedisUsers, settings: Settings, admin: redis.Redis
) -> None:
    # Given a producer whose stream name falls outside its user's keys
    outside = users.settings(settings, "producer").with_(stream="other:snapshots")
    publisher = Publisher.from_settings(outside)
    snapshots = Simulator(SimulationSpec(events=2, bookmakers=("bet9ja",), markets=2)).cycle(TS)
    # When it publishes, then it raises PublishRefused naming the refused XADD, keeping the entries
    # (the first command refused is the shard count's record, other:snapshots:meta)
    with pytest.raises(PublishRefused, match=r"keys used as arguments \(HSETNX other:snapshots:meta\)"):
        publisher.publish_cycle(snapshots)
    assert publisher.buffered == len(snapshots)
    # And the call made one attempt: Redis refused each command of one pipeline once, the record's HSETNX
    # and HGET, and no entry was sent after them
    assert denials(admin) == ["producer key other:snapshots:meta"] * 2


def test_a_producer_enforcing_the_hard_cap_is_told_it_lacks_the_permission(
    users: RedisUsers, settings: Settings, admin: redis.Redis
) -> None:
    # Given a producer told to enforce the hard cap, which its user may not (it deletes entries)
    capped = users.settings(settings, "producer").with_(producer_hard_cap=True)
    publisher = Publisher.from_settings(capped)
    snapshots = Simulator(SimulationSpec(events=2, bookmakers=("bet9ja",), markets=2)).cycle(TS)
    # When it publishes, then the refusal names the setting that asks for it
    with pytest.raises(PublishRefused, match="ODDS_PRODUCER_HARD_CAP"):
        publisher.publish_cycle(snapshots)


def one_line(result_stderr: str) -> str:
    lines = [line for line in result_stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result_stderr
    return lines[0]


def test_a_consumer_refused_at_start_says_so_in_one_line_and_exits(
    users: RedisUsers, settings: Settings, admin: redis.Redis
) -> None:
    # Given consumers started with a wrong password, and with the operator's user, which may not read
    wrong = env_for(users.settings(settings, "consumer", password="not-the-password"))
    operator = env_for(users.settings(settings, "operator"))
    # (with the shard count recorded already, as after any earlier start: the operator may not record it)
    recorded = users.settings(settings, "operator").keys
    admin.hset(recorded.meta, "shards", recorded.shards)
    script = (pathlib.Path(__file__).parents[1] / "consumer" / "lua" / "heartbeat.lua").read_text()
    zadd_line = next(i for i, text in enumerate(script.splitlines(), 1) if "'ZADD'" in text)
    # When they start, then each exits with the refusal code after one line saying what to fix
    for env, words in (
        (wrong, "invalid username-password pair"),
        (operator, f"the script consumer/lua/heartbeat.lua may not run zadd (its line {zadd_line})"),
    ):
        result = run_cli("consumer", ["run", "--name", "refused"], env)
        assert result.returncode == EXIT_REFUSED, result.stderr
        line = json.loads(one_line(result.stderr))
        assert line["event"] == "consumer_refused" and words in line["error"], line


@pytest.mark.parametrize(
    ("args", "user", "password", "words"),
    [
        (["status"], "producer", None, "no permissions to run the 'time' command"),
        (["status", "--json"], "operator", "wrong", "invalid username-password pair"),
        (["dlq", "list"], "producer", None, "no permissions to run the 'xrange' command"),
        (["dlq", "purge", "{id}", "--yes"], "consumer", None, "no permissions to run the 'xdel' command"),
    ],
)
def test_operator_commands_refused_say_so_in_one_line_and_exit(
    users: RedisUsers,
    settings: Settings,
    admin: redis.Redis,
    args: list[str],
    user: str,
    password: str | None,
    words: str,
) -> None:
    # Given an operator command run with a user that may not, or with a wrong password
    keys = users.settings(settings, "operator").keys
    letter = f"0/{admin.xadd(keys.dead(0), {'dead_reason': 'test'}).decode()}"
    env = env_for(users.settings(settings, user, password))
    # When it runs, then it prints one line naming what is missing and exits with the refusal code
    result = run_cli("consumer", [arg.format(id=letter) for arg in args], env)
    assert result.returncode == EXIT_REFUSED, (result.stdout, result.stderr)
    assert words in one_line(result.stderr)
    assert result.stdout == ""


def test_a_simulator_refused_says_so_in_one_line_and_exits(
    users: RedisUsers, settings: Settings, admin: redis.Redis
) -> None:
    # Given the simulator started with a wrong password
    env = env_for(users.settings(settings, "producer", password="not-the-password"))
    # When it runs, then it exits with the refusal code after one line, without publishing anything
    result = run_cli("producer", ["simulate", "--events", "2", "--cycles", "3", "--interval-s", "0"], env)
    assert result.returncode == EXIT_REFUSED, result.stderr
    line = json.loads(one_line(result.stderr))
    assert line["event"] == "producer_refused" and "invalid username-password pair" in line["error"]
    assert admin.dbsize() == 0


def test_the_documented_rules_are_the_committed_aclfile() -> None:
    # Given the README's Security section and deploy/redis-users.acl, then the rules shown are the ones used
    readme = (pathlib.Path(__file__).parent.parent / "README.md").read_text()
    rules = (pathlib.Path(__file__).parent.parent / "deploy" / "redis-users.acl").read_text()
    assert f"```\n{rules}```" in readme
