"""TLS and passwords on both servers: the pipeline over rediss:// and sslmode=verify-full, and what a wrong
CA or a wrong password does at start (one line, exit 4, no retry loop).

The certificates come from a CA made for this module; Redis has the ACL users and no plain port, Postgres
has ssl=on, scram-sha-256 passwords, and refuses TCP connections without TLS.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from urllib.parse import quote

import psycopg
import pytest

from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.cli import EXIT_REFUSED
from shared.redis_client import connect
from tests.history import compare, expected_history, stored_history
from tests.secure import TEST_ADMIN, Servers, run_cli, secure_servers
from tests.support import env_for, start_consumer, wait_until_drained

TS = 1_795_000_000_000


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with secure_servers(tmp_path_factory.mktemp("tls")) as found:
        yield found


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_the_pipeline_runs_over_tls_to_both_servers(servers: Servers) -> None:
    # Given the URLs of the Security section: rediss:// with the CA, verify-full with the CA, passwords
    settings = servers.settings()
    assert settings.redis_url.startswith("rediss://") and "sslmode=verify-full" in settings.database_url
    # When migrate runs, the producer publishes three cycles and a consumer process stores them
    migrated = run_cli("consumer", ["migrate"], env_for(settings))
    assert migrated.returncode == 0, migrated.stderr
    sim = Simulator(SimulationSpec(events=6, bookmakers=("bet9ja", "betking"), markets=4, seed=5))
    published = [s for c in range(3) for s in sim.cycle(TS + c * 1000)]
    publisher = Publisher.from_settings(servers.settings("producer"))
    assert publisher.publish_cycle(published).published == len(published)
    admin = connect(servers.redis.url(TEST_ADMIN), 2.0)
    proc = start_consumer(settings, "tls-consumer")
    try:
        wait_until_drained(admin, settings.keys)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        proc.kill()
        proc.wait()
        admin.close()
    # Then the history is what one in-order writer stores, read back over a verified TLS connection
    with psycopg.connect(servers.postgres.url_for("odds")) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
        report = compare(expected_history(published), stored_history(conn))  # type: ignore[arg-type]
    assert report.ok, report.summary()


@pytest.mark.parametrize("what", ["wrong CA for Redis", "wrong CA for Postgres", "wrong Postgres password"])
def test_a_consumer_that_cannot_trust_or_log_in_stops_at_start(servers: Servers, what: str) -> None:
    # Given a consumer whose CA did not sign the server's certificate, or whose password is wrong
    settings = servers.settings()
    good_redis_ca = quote(str(servers.redis.server.tls.ca)) if servers.redis.server.tls else ""
    good_pg_ca = quote(str(servers.postgres.tls.ca)) if servers.postgres.tls else ""
    wrong = quote(str(servers.wrong_ca))
    settings = {
        "wrong CA for Redis": settings.with_(redis_url=settings.redis_url.replace(good_redis_ca, wrong)),
        "wrong CA for Postgres": settings.with_(
            database_url=settings.database_url.replace(good_pg_ca, wrong)
        ),
        "wrong Postgres password": settings.with_(database_url=servers.postgres.url_for("odds", "not-it")),
    }[what]
    # When it starts, then it exits with the refusal code after one line saying what to fix
    result = run_cli("consumer", ["run", "--name", "untrusting"], env_for(settings))
    assert result.returncode == EXIT_REFUSED, result.stderr
    line = json.loads(one_line(result.stderr))
    expected = {
        "wrong CA for Redis": "ssl_ca_certs",
        "wrong CA for Postgres": "certificate verify failed",
        "wrong Postgres password": "password authentication failed",
    }[what]
    assert line["event"] == "consumer_refused" and expected in line["error"], line


@pytest.mark.parametrize(
    ("package", "args"),
    [
        ("consumer", ["status"]),
        ("consumer", ["dlq", "list"]),
        ("producer", ["simulate", "--events", "2", "--cycles", "2", "--interval-s", "0"]),
    ],
)
def test_every_command_with_a_wrong_redis_ca_stops_in_one_line(
    servers: Servers, package: str, args: list[str]
) -> None:
    # Given a command whose Redis URL trusts another CA
    user = "producer" if package == "producer" else "operator"
    settings = servers.settings(user)
    ca = quote(str(servers.redis.server.tls.ca)) if servers.redis.server.tls else ""
    env = env_for(settings.with_(redis_url=settings.redis_url.replace(ca, quote(str(servers.wrong_ca)))))
    # When it runs, then it exits with the refusal code, after one line that names the certificate check
    result = run_cli(package, args, env)
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert "CERTIFICATE_VERIFY_FAILED" in one_line(result.stderr)


def test_migrate_with_a_wrong_password_stops_in_one_line(servers: Servers) -> None:
    settings = servers.settings().with_(database_url=servers.postgres.url_for("odds", "not-it"))
    result = run_cli("consumer", ["migrate"], env_for(settings))
    assert result.returncode == EXIT_REFUSED, result.stderr
    assert "password authentication failed" in one_line(result.stderr)


def test_postgres_refuses_a_connection_without_tls(servers: Servers) -> None:
    plain = servers.postgres.url_for("postgres").split("?")[0] + "?sslmode=disable"
    with pytest.raises(psycopg.OperationalError, match="pg_hba.conf rejects"):
        psycopg.connect(plain, connect_timeout=5)
