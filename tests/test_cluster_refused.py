"""A Redis Cluster node as REDIS_URL: refused at once with one line that says so, never half-published.

Redis Cluster is not supported yet (README, Scaling out). Without this check some commands worked on the
node named and others failed with MOVED or CROSSSLOT, which the producer and the consumer reported as
wrong credentials or retried for ever.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from consumer.__main__ import main
from producer.core import PublishRefused
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.cli import EXIT_REFUSED
from shared.redis_client import connect
from shared.settings import Settings
from tests.faultkit.cluster import LocalCluster
from tests.secure import run_cli
from tests.support import connection_flags, env_for

MESSAGE = "names a node of a Redis Cluster"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(Path(tmp_path_factory.mktemp("cluster"))) as local:
        yield local


def keys_in(cluster: LocalCluster) -> int:
    return sum(int(redis.Redis(port=port).dbsize()) for port in cluster.ports)


def test_a_producer_is_refused_before_it_writes_anything(cluster: LocalCluster, settings: Settings) -> None:
    publisher = Publisher(connect(cluster.url, 2.0), settings.keys)
    snapshots = Simulator(SimulationSpec(events=20, bookmakers=("bet9ja",), markets=2)).cycle(
        1_795_000_000_000
    )
    with pytest.raises(PublishRefused, match=MESSAGE):
        publisher.publish_cycle(snapshots)
    assert publisher.buffered == len(snapshots)
    assert keys_in(cluster) == 0


def test_a_consumer_exits_at_start_in_one_line(cluster: LocalCluster, settings: Settings) -> None:
    result = run_cli(
        "consumer", ["run", "--name", "on-a-cluster"], env_for(settings.with_(redis_url=cluster.url))
    )
    assert result.returncode == EXIT_REFUSED, result.stderr
    [line] = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    assert line["event"] == "consumer_refused" and MESSAGE in line["error"]
    assert keys_in(cluster) == 0


@pytest.mark.parametrize("command", [["status"], ["dlq", "list"]])
def test_operator_commands_exit_with_the_reason(
    cluster: LocalCluster, settings: Settings, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    code = main([*command, *connection_flags(settings.with_(redis_url=cluster.url))])
    assert code == EXIT_REFUSED
    assert MESSAGE in capsys.readouterr().err
