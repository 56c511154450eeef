"""A shard-count mismatch never goes silent: recorded with the streams, refused at start, found by status."""

from __future__ import annotations

import json

import psycopg
import pytest
import redis

from consumer.__main__ import main
from consumer.daemon import Daemon
from producer.core import PublishRefused
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.cli import EXIT_SETTINGS
from shared.settings import Settings
from shared.shard_count import recorded
from shared.wire import Snapshot
from tests.history import compare, expected_history, stored_history
from tests.secure import run_cli
from tests.support import connection_flags, drain, env_for

TS = 1_795_000_000_000


def small_cycle() -> list[Snapshot]:
    """A cycle of eight feeds, enough to reach every shard of a few."""
    return Simulator(SimulationSpec(events=4, bookmakers=("sportybet", "bet9ja"), markets=2)).cycle(TS)


def test_the_first_producer_records_its_count_and_one_set_otherwise_is_refused_keeping_its_entries(
    settings: Settings, client: redis.Redis
) -> None:
    # Given a producer that published with the settings' count
    Publisher.from_settings(settings).publish_cycle(small_cycle())
    assert recorded(client, settings.keys) == settings.shards
    # When a producer set to twice as many shards publishes
    other = Publisher.from_settings(settings.with_(shards=settings.shards * 2))
    cycle = small_cycle()
    with pytest.raises(PublishRefused, match=f"created with {settings.shards} shards") as refused:
        other.publish_cycle(cycle)
    # Then it names the setting to fix, keeps its entries, and wrote no entry to a shard nobody reads
    assert f"ODDS_SHARDS={settings.shards}" in str(refused.value)
    assert other.buffered == len(cycle)
    assert not any(
        client.exists(f"{settings.stream}:{n}") for n in range(settings.shards, settings.shards * 2)
    )


def test_a_consumer_set_to_another_count_exits_at_start_in_one_line(
    settings: Settings, client: redis.Redis
) -> None:
    # Given streams recorded with the settings' count
    Publisher.from_settings(settings).publish_cycle(small_cycle())
    # When a consumer set to another count starts
    result = run_cli("consumer", ["run"], env_for(settings.with_(shards=settings.shards + 2)))
    # Then it exits with the settings code after one line that names the recorded count
    assert result.returncode == EXIT_SETTINGS, result.stderr
    [line] = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert line["event"] == "shard_count_mismatch"
    assert f"created with {settings.shards} shards" in line["error"]
    # And it took no lease
    assert not any(client.exists(settings.keys.lease(n)) for n in range(settings.shards + 2))


def test_a_consumer_finding_unrecorded_shards_beyond_its_count_refuses_to_record_its_own(
    settings: Settings, client: redis.Redis
) -> None:
    # Given streams published before counts were recorded, by a producer set to more shards
    wider = settings.with_(shards=settings.shards + 2)
    Publisher.from_settings(wider).publish_cycle(small_cycle())
    client.delete(wider.keys.meta)
    # When a consumer set to fewer shards starts, then it refuses, and records nothing
    result = run_cli("consumer", ["run"], env_for(settings))
    assert result.returncode == EXIT_SETTINGS, result.stderr
    assert "exist beyond the" in result.stderr
    assert recorded(client, settings.keys) is None


@pytest.mark.parametrize("command", [["status", "--no-database"], ["dlq", "list"]])
def test_operator_commands_set_to_another_count_exit_with_the_reason(
    settings: Settings, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    # Given streams recorded with the settings' count
    Publisher.from_settings(settings).publish_cycle(small_cycle())
    # When an operator command set to another count runs
    flags = connection_flags(settings.with_(shards=settings.shards * 2))
    code = main([*command, *flags])
    # Then it exits with the settings code and says which count to use
    assert code == EXIT_SETTINGS
    assert f"ODDS_SHARDS={settings.shards}" in capsys.readouterr().err


def test_status_finds_entries_on_shards_beyond_its_count(
    settings: Settings, client: redis.Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given entries on shards beyond the count (written by hand, with no record, as before counts were
    # recorded)
    beyond = settings.keys.shards + 3
    client.xadd(f"{settings.stream}:{beyond}", {"v": "1"})
    client.xadd(f"{settings.stream}:{beyond}", {"v": "1"})
    # When status runs
    code = main(["status", "--json", "--no-database", *connection_flags(settings)])
    report = json.loads(capsys.readouterr().out)
    # Then it lists the stray shard with its length and calls the pipeline unhealthy
    assert report["stray_shards"] == {str(beyond): 2}
    assert code != 0 and any("beyond the" in p for p in report["problems"])


def test_the_shard_count_changes_drained_and_the_history_stays_exact(
    settings: Settings,
    client: redis.Redis,
    db: psycopg.Connection[tuple[object, ...]],
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim = Simulator(SimulationSpec(events=6, bookmakers=("sportybet", "bet9ja"), markets=3, change_rate=0.5))
    published = sim.cycle(TS)
    Publisher.from_settings(settings).publish_cycle(published)
    reshard = ["reshard", "--to", str(settings.shards * 2), *connection_flags(settings)]
    # Given a consumer alive on the old count: reshard refuses while it lives
    daemon = Daemon(settings)
    daemon.step()
    assert main(reshard) != 0
    assert "consumers are alive" in capsys.readouterr().err
    # And once it is stopped with entries still to do (published after it stopped), reshard refuses too
    drain(daemon)
    daemon.leases.release_all()
    daemon.writer.discard()
    later = sim.cycle(TS + 1000)
    Publisher.from_settings(settings).publish_cycle(later)
    assert main(reshard) != 0
    assert "not yet read" in capsys.readouterr().err
    assert recorded(client, settings.keys) == settings.shards
    # When the rest is drained, the consumer stopped, and reshard runs
    drain_and_stop(settings)
    published += later
    assert main(reshard) == 0
    # Then the new count is recorded, and a producer left at the old count is refused
    wider = settings.with_(shards=settings.shards * 2)
    assert recorded(client, settings.keys) == wider.shards
    with pytest.raises(PublishRefused):
        Publisher.from_settings(settings).publish_cycle(sim.cycle(TS + 2000))
    # And producers and consumers resumed at the new count store every change exactly once
    resumed = sim.cycle(TS + 3000)
    Publisher.from_settings(wider).publish_cycle(resumed)
    drain_and_stop(wider)
    report = compare(expected_history(published + resumed), stored_history(db))
    assert report.ok, report.summary()


def drain_and_stop(settings: Settings) -> None:
    daemon = Daemon(settings)
    drain(daemon)
    daemon.leases.release_all()
    daemon.writer.discard()
