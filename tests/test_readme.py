"""The README's redis-cli example publishes a valid snapshot: the documented contract really works."""

from __future__ import annotations

import pathlib
import re
import shutil
import subprocess

import psycopg
import pytest

from consumer.daemon import Daemon
from shared.keys import shard_of
from shared.settings import Settings
from tests.support import drain

README = pathlib.Path(__file__).parent.parent / "README.md"


def readme_xadd() -> str:
    block = re.search(r"```sh\n(printf .*?)\n```", README.read_text(), re.S)
    assert block, "the README lost its redis-cli example"
    return block.group(1)


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="redis-cli is not installed")
def test_readme_redis_cli_example_is_stored(
    settings: Settings, db: psycopg.Connection[tuple[object, ...]]
) -> None:
    # Given the README's command, aimed at this test's stream and Redis
    settings = settings.with_(shards=Settings().shards)  # the README's example uses the default count
    command = readme_xadd()
    documented_shard = int(re.search(r"odds:snapshots:(\d+)", command).group(1))  # type: ignore[union-attr]
    assert documented_shard == shard_of("sr:match:1", "bet9ja", settings.shards)
    command = command.replace("odds:snapshots:", f"{settings.stream}:").replace(
        "redis-cli -x", f"redis-cli -u {settings.redis_url} -x"
    )
    # When it runs in a shell and a consumer drains the stream
    subprocess.run(["bash", "-c", command], check=True, capture_output=True)
    daemon = Daemon(settings)
    drain(daemon)
    daemon.writer.discard()
    # Then the snapshot is in the history with the odds the README says the bytes hold
    rows = db.execute(
        "SELECT outcome, odds FROM odds_history WHERE event = 'sr:match:1' AND bookmaker = 'bet9ja'"
    ).fetchall()
    assert dict(rows) == {"1": 2.5, "X": 3.1, "2": 2.9}
