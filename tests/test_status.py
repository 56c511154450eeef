"""`python -m consumer status` on the real Redis: robust backlog, pending ages, trim point, health exit."""

from __future__ import annotations

import json

import psycopg
import pytest
import redis

from consumer.__main__ import EXIT_UNHEALTHY, main
from consumer.batch import BatchProcessor
from consumer.daemon import Daemon
from consumer.plan import Entry
from consumer.status import Thresholds, collect
from consumer.status_table import render
from consumer.stream import ShardStreams
from producer.publisher import Publisher
from shared.backlog import count_below
from shared.keys import Keys
from shared.settings import Settings
from shared.trim import trim
from shared.wire import Market, Snapshot
from tests.support import connection_flags, dead_letter, fill, read

Conn = psycopg.Connection[tuple[object, ...]]


def cli(settings: Settings, *extra: str) -> list[str]:
    return ["status", *connection_flags(settings), "--no-database", "--json", *extra]


@pytest.mark.parametrize("pivot_index", [0, 1, 999, 1000, 1500, 2499, 2500])
def test_count_below_agrees_with_a_full_scan_from_either_side(
    client: redis.Redis, keys: Keys, pivot_index: int
) -> None:
    # Given a stream longer than two pages, and a pivot anywhere in it (or past its end)
    ids = fill(client, keys.shard(0), 2500)
    last_ms, last_seq = (int(x) for x in ids[-1].decode().split("-"))
    pivot_raw = ids[pivot_index].decode() if pivot_index < len(ids) else f"{last_ms}-{last_seq + 1}"
    ms, seq = (int(x) for x in pivot_raw.split("-"))
    # When the entries below it are counted
    counted = count_below(client, keys.shard(0), (ms, seq), len(ids))
    # Then the count equals a plain scan of everything below the pivot
    assert counted == len(client.xrange(keys.shard(0), min="-", max="(" + pivot_raw))


def test_entries_published_before_any_consumer_are_backlog(
    client: redis.Redis, keys: Keys, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given entries in two shards and no consumer group yet: no consumer has ever started
    published = len(fill(client, keys.shard(0), 30)) + len(fill(client, keys.shard(1), 12))
    # When status is collected, and asked as a health check with a backlog limit below that
    backlog = collect(client, keys).backlog
    code = main(cli(settings, "--max-backlog", str(published - 1)))
    # Then every entry counts as backlog of our group, and the check fails
    assert backlog == published
    assert code == EXIT_UNHEALTHY
    assert json.loads(capsys.readouterr().out)["backlog"] == published


def test_backlog_is_right_after_deletion_and_trimming(client: redis.Redis, keys: Keys) -> None:
    # Given a group that has read part of a long shard, acked some, and entries deleted on both sides
    stream = keys.shard(0)
    ids = fill(client, stream, 2300)
    client.xgroup_create(stream, keys.group, id="0")
    delivered = read(client, keys, "c1", stream, 1100)
    client.xack(stream, keys.group, *delivered[:1000])
    client.xdel(stream, *ids[1500:1510], *ids[2000:2001])
    client.xtrim(stream, minid=ids[50].decode())
    # When status is collected
    status = collect(client, keys)
    # Then undelivered counts the entries left after the last-delivered id, and pending the unacked ones
    group = status.shards[0].groups[0]
    after_last = client.xrange(stream, min="(" + delivered[-1].decode(), max="+")
    assert group.undelivered == len(after_last)
    assert group.pending == len(client.xpending_range(stream, keys.group, min="-", max="+", count=10_000))
    assert status.backlog == len(after_last) + group.pending


def test_pending_per_consumer_shows_oldest_age_and_highest_delivery_count(
    client: redis.Redis, keys: Keys
) -> None:
    # Given consumer a re-reading its history (more deliveries) and holding one entry idle for long
    stream = keys.shard(1)
    fill(client, stream, 5)
    client.xgroup_create(stream, keys.group, id="0")
    a_ids = read(client, keys, "a", stream, 3)
    read(client, keys, "a", stream, 3, start="0")
    read(client, keys, "a", stream, 3, start="0")
    read(client, keys, "b", stream, 2)
    client.xclaim(stream, keys.group, "a", min_idle_time=0, message_ids=[a_ids[0]], idle=600_000)
    # When status is collected with a pending age limit below that idle time
    status = collect(client, keys)
    limits = Thresholds(max_pending_age_ms=300_000)
    # Then each consumer's pending entries, oldest age and highest delivery count are shown
    rows = client.xpending_range(stream, keys.group, min="-", max="+", count=100)
    by_name = {c.name: c for c in status.consumers}
    for name in ("a", "b"):
        mine = [r for r in rows if r["consumer"] == name.encode()]
        assert by_name[name].pending == len(mine)
        assert by_name[name].max_deliveries == max(int(r["times_delivered"]) for r in mine)
    assert by_name["a"].oldest_pending_age_ms >= 600_000
    # And only consumer a's stuck entry makes the pipeline unhealthy
    problems = status.problems(limits)
    assert len(problems) == 1 and "consumer a " in problems[0]


def test_a_consumer_crashing_on_its_batch_again_and_again_is_unhealthy(
    settings: Settings, client: redis.Redis, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given entries in the stream, and a consumer with a bug that makes it crash on them
    Publisher.from_settings(settings).publish(
        Snapshot("sr:match:1", "sportybet", 1_795_000_000_000, (Market("1X2", "", {"1": 2.0}),))
    )

    def crash(self: BatchProcessor, entries: list[Entry]) -> None:
        raise RuntimeError("a bug this batch triggers")

    monkeypatch.setattr(BatchProcessor, "prepare", crash)
    # When it is restarted under its name after each crash, six times (as a supervisor would)
    for _ in range(6):
        daemon = Daemon(settings)
        with pytest.raises(RuntimeError):
            daemon.run()
        daemon.writer.discard()
    # Then status counts its starts and flags the entry it keeps failing on, though nothing is old yet
    status = collect(client, keys)
    (consumer,) = status.consumers
    assert (consumer.name, consumer.starts, consumer.pending) == (settings.consumer, 6, 1)
    assert consumer.max_deliveries == 6
    problems = status.problems(Thresholds())
    assert len(problems) == 1 and "delivered 6 times, over 5" in problems[0], problems
    assert f"{settings.consumer}" in render(status, Thresholds()).split("UNHEALTHY")[0]


def test_trim_point_predicts_what_trimming_deletes(client: redis.Redis, keys: Keys) -> None:
    # Given a group that has read 6 of 9 entries and acknowledged the first 4
    stream = keys.shard(0)
    fill(client, stream, 9)
    client.xgroup_create(stream, keys.group, id="0")
    delivered = read(client, keys, "c1", stream, 6)
    client.xack(stream, keys.group, *delivered[:4])
    # When status is collected
    shard = collect(client, keys).shards[0]
    # Then the trim point is the oldest pending entry, and a lossless trim deletes exactly the trimmable ones
    assert shard.trim_point == delivered[4].decode()
    before = client.xlen(stream)
    result = trim(client, stream, hard_cap=1_000_000)
    assert result.acknowledged == shard.trimmable == before - client.xlen(stream)


def test_fingerprint_coverage_and_last_commit(
    client: redis.Redis, keys: Keys, settings: Settings, db: Conn
) -> None:
    # Given two feeds stored in Postgres, one fingerprint in Redis and a commit recorded a minute ago
    db.execute("INSERT INTO bookmakers (slug) VALUES ('sportybet')")
    db.execute("INSERT INTO events (external_id) VALUES ('sr:1'), ('sr:2')")
    db.execute(
        "INSERT INTO feeds (event_id, bookmaker_id, current_snapshot_id) VALUES (1, 1, 10), (2, 1, 11)"
    )
    client.hset(keys.fingerprints(1), "sr:1|sportybet", b"x" * 24)
    seconds, _ = client.time()
    client.hset(keys.stats, mapping={"last_commit_ms": (int(seconds) - 60) * 1000, "changed": 3})
    # When status is collected with the database
    status = collect(client, keys, settings.database_url)
    # Then coverage is fingerprints over feeds, and the last commit's age is at least that minute
    feeds = db.execute("SELECT count(*) FROM feeds").fetchone()
    assert feeds is not None and status.feeds == feeds[0]
    assert status.fingerprint_coverage == client.hlen(keys.fingerprints(1)) / feeds[0]
    assert status.last_commit_age_ms is not None and status.last_commit_age_ms >= 60_000
    assert status.counters == {"changed": 3}
    assert "last commit 1m" in render(status, Thresholds())


def test_an_id_sequence_past_half_its_range_is_unhealthy(
    client: redis.Redis, keys: Keys, settings: Settings, db: Conn
) -> None:
    # Given a bookmaker id sequence that has handed out 60 % of its range (values burnt by inserts that
    # conflicted or rolled back are gone for good), and the other sequences barely used
    top = db.execute("SELECT max_value FROM pg_sequences WHERE sequencename = 'bookmakers_id_seq'").fetchone()
    assert top is not None
    db.execute("SELECT setval('bookmakers_id_seq', %s)", (int(str(top[0])) * 6 // 10,))
    # When status is collected with the database
    status = collect(client, keys, settings.database_url)
    # Then it shows each sequence's use, and only the one past the threshold is a problem
    assert round(status.id_use_pct["bookmakers_id_seq"]) == 60
    assert status.id_use_pct["events_id_seq"] < 1
    assert status.problems(Thresholds()) == ["sequence bookmakers_id_seq has used 60% of its range, over 50%"]
    assert "bookmakers_id_seq 60%" in render(status, Thresholds())


def test_database_error_is_reported_without_its_password(client: redis.Redis, keys: Keys) -> None:
    # Given a database URL with a password that cannot be reached
    url = "postgresql://odds:hunter2-secret@127.0.0.1:1/odds"
    # When status is collected
    status = collect(client, keys, url)
    # Then the feed count is unknown, the error says why, and the password is nowhere
    assert status.feeds is None and status.database_error
    assert "hunter2-secret" not in json.dumps(status.as_dict())


def test_cli_exit_code_follows_the_thresholds(
    settings: Settings,
    client: redis.Redis,
    keys: Keys,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a healthy, empty pipeline
    streams = ShardStreams(client, keys, "c1")
    streams.ensure_groups()
    # When status runs, then it exits 0 and says healthy
    assert main(cli(settings)) == 0
    assert json.loads(capsys.readouterr().out)["healthy"] is True
    # Given one dead letter
    dead_letter(client, keys, {b"v": b"9"}, "bad version")
    # Then status fails by default, passes with a flag allowing it, and fails again when the env lowers it
    assert main(cli(settings)) == EXIT_UNHEALTHY
    report = json.loads(capsys.readouterr().out)
    assert report["dead_letters"] == 1 and report["problems"]
    assert main(cli(settings, "--max-dead-letters", "1")) == 0
    capsys.readouterr()
    monkeypatch.setenv("ODDS_STATUS_MAX_DEAD_LETTERS", "1")
    assert main(cli(settings)) == 0
    capsys.readouterr()
    # Given a backlog over the limit set in the environment
    fill(client, keys.shard(1), 3)
    monkeypatch.setenv("ODDS_STATUS_MAX_BACKLOG", "2")
    assert main(cli(settings)) == EXIT_UNHEALTHY
    assert "backlog 3" in " ".join(json.loads(capsys.readouterr().out)["problems"])


def test_cli_reports_unreachable_redis_as_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a Redis URL where nothing listens (with a password)
    argv = ["status", "--redis-url", "redis://:pw-secret@127.0.0.1:1/0", "--no-database"]
    # When status runs, then it exits with the unknown code and does not print the password
    assert main(argv) == 3
    assert "pw-secret" not in capsys.readouterr().err


def test_work_waiting_with_no_commit_is_unhealthy(client: redis.Redis, keys: Keys) -> None:
    # Given entries added five minutes ago (their ids say when) that no consumer has committed
    old_ms = int(client.time()[0]) * 1000 - 300_000
    for i in range(3):
        client.xadd(keys.shard(0), {"i": i}, id=f"{old_ms}-{i}")
    limits = Thresholds(max_commit_age_ms=120_000)
    # Then status says the backlog waits with no commit ever
    status = collect(client, keys)
    assert status.oldest_work_age_ms is not None and status.oldest_work_age_ms >= 300_000
    assert any("no commit ever" in p for p in status.problems(limits))
    # When a consumer commits now, then that is no longer a problem, though the work is still old
    ShardStreams(client, keys, "c1").record_stats({}, {"last_commit_ms": int(client.time()[0]) * 1000})
    assert not [p for p in collect(client, keys).problems(limits) if "no commit" in p]
