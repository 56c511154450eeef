"""No password in any output: the demo, a consumer, status, the dlq commands, the metrics endpoint and
failing connections, all run with passwords set, and everything they print, log and serve is searched.

The servers are the secure ones (ACL users, TLS, scram-sha-256), and the Postgres password has reserved
characters, so it also appears percent-encoded in the URLs: both spellings are searched for.
"""

from __future__ import annotations

import pathlib
import signal
import subprocess
import sys
import time
import urllib.request
from urllib.parse import quote

from consumer.localservers import free_port
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.redis_client import connect
from tests.secure import PG_PASSWORD, TEST_ADMIN, Servers, run_cli, secure_servers
from tests.support import dead_letters, env_for, wait_until_drained

TS = 1_795_000_000_000


def spellings(password: str) -> set[str]:
    return {password, quote(password), quote(password, safe="")}


def wait_for_metrics(port: int, timeout_s: float = 60.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as reply:
                body: str = reply.read().decode()
            if "odds_consumer_entries_read_total" in body:
                return body
        except OSError:
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def test_no_password_is_printed_logged_served_or_dead_lettered(tmp_path: pathlib.Path) -> None:
    captured: dict[str, str] = {}
    with secure_servers(tmp_path) as servers:
        secrets = set().union(*map(spellings, [*servers.redis.passwords.values(), PG_PASSWORD]))
        run_everything(servers, tmp_path, captured)
    text = "\n".join(f"--- {name}\n{out}" for name, out in captured.items())
    # Then every output was captured, URLs were shown with their passwords masked, and reasons recorded
    for words in ("consumer_started", "odds_consumer_entries_read_total", "dead_reason", "healthy"):
        assert words in text, words
    for masked in ("consumer:***@", "operator:***@", "postgres:***@"):
        assert masked in text, masked
    # And no spelling of any password appears anywhere
    leaked = {s for s in secrets if s in text}
    assert not leaked, [name for name, out in captured.items() if any(s in out for s in leaked)]


def run_everything(servers: Servers, tmp_path: pathlib.Path, captured: dict[str, str]) -> None:
    settings = servers.settings()
    operator = env_for(servers.settings("operator"))
    # The demo, as an operator would run it against these servers (it needs one user that may do all)
    demo_env = env_for(servers.settings(TEST_ADMIN).with_(database_url=servers.postgres.url_for("odds_demo")))
    demo = subprocess.run(
        [sys.executable, "-m", "consumer", "demo"],
        env=demo_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert demo.returncode == 0, demo.stderr
    captured["demo"] = demo.stdout + demo.stderr
    for log in (tmp_path / ".demo").glob("*.log"):
        captured[f"demo {log.name}"] = log.read_text()
    # A consumer with its metrics endpoint, storing cycles and dead-lettering bad entries
    assert run_cli("consumer", ["migrate"], env_for(settings)).returncode == 0
    publisher = Publisher.from_settings(servers.settings("producer"))
    sim = Simulator(SimulationSpec(events=5, bookmakers=("bet9ja",), markets=3, seed=2))
    for c in range(2):
        publisher.publish_cycle(sim.cycle(TS + c * 1000))
    client = publisher._client
    client.xadd(
        settings.keys.shard(0),
        {"v": "1", "event": "e", "bookmaker": "bet9ja", "ts": str(TS), "data": b"\xc1"},
    )
    client.xadd(
        settings.keys.shard(1), {"v": "1", "event": "e", "bookmaker": "Bad Slug", "ts": str(TS), "data": b""}
    )
    port = free_port()
    log_path = tmp_path / "consumer.log"
    env = {**env_for(settings), "ODDS_METRICS_PORT": str(port)}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "consumer", "run", "--name", "quiet", "--log-json"], env=env, stderr=log
        )
    try:
        admin = connect(servers.redis.url(TEST_ADMIN), 2.0)
        wait_until_drained(admin, settings.keys)
        captured["dead letters in Redis"] = repr(dead_letters(admin, settings.keys))
        admin.close()
        captured["metrics"] = wait_for_metrics(port)
        # The operator's commands, each of them
        for args in (
            ["status"],
            ["status", "--json"],
            ["dlq", "list"],
            ["dlq", "list", "--json"],
            ["dlq", "replay", "--all"],
            ["dlq", "purge", "--all", "--yes"],
        ):
            result = run_cli("consumer", args, operator)
            captured[" ".join(args)] = result.stdout + result.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    captured["consumer log"] = log_path.read_text()
    captured.update(failing_connections(servers))


def failing_connections(servers: Servers) -> dict[str, str]:
    """What a wrong password, a server that is down and a database that will not answer print."""
    out: dict[str, str] = {}
    settings = servers.settings()
    wrong_password = "wrong-" + servers.redis.passwords["consumer"]
    wrong_redis = env_for(settings.with_(redis_url=servers.redis.url("consumer", wrong_password)))
    result = run_cli("consumer", ["run", "--name", "refused"], wrong_redis)
    out["consumer, wrong redis password"] = result.stderr
    down = f"rediss://operator:{servers.redis.passwords['operator']}@127.0.0.1:{free_port()}/0"
    result = run_cli("consumer", ["status"], env_for(settings.with_(redis_url=down)))
    assert result.returncode == 3
    out["status, redis down"] = result.stdout + result.stderr
    wrong_pg = env_for(settings.with_(database_url=servers.postgres.url_for("odds", "x" + PG_PASSWORD)))
    result = run_cli("consumer", ["run", "--name", "refused-pg"], wrong_pg)
    out["consumer, wrong postgres password"] = result.stderr
    result = run_cli("consumer", ["migrate"], wrong_pg)
    out["migrate, wrong postgres password"] = result.stderr
    # A consumer whose Postgres is down keeps retrying, and says so in its log, with the error text
    pg_down = servers.postgres.url_for("odds").replace(f":{servers.postgres.port}/", f":{free_port()}/")
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", "run", "--name", "retrying", "--log-json"],
        env=env_for(settings.with_(database_url=pg_down)),
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:  # ends if the consumer exits
            lines.append(line)
            if '"postgres_not_reachable_at_start"' in line:
                break
    finally:
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=30)
    out["consumer, postgres down"] = "".join(lines) + rest
    assert "postgres_not_reachable_at_start" in out["consumer, postgres down"]
    return out
