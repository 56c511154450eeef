from __future__ import annotations

import os
import pathlib
import socket
from collections.abc import Iterator

import psycopg
import pytest
import redis

from consumer.localservers import PostgresServer, RedisServer, free_port, postgres_bin_dir
from tests.faultkit.proxy import TcpProxy
from tests.support import fail_fast_client


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresServer]:
    with PostgresServer(tmp_path_factory.mktemp("pg")) as server:
        yield server


def test_free_port_is_bindable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_postgres_bin_dir_has_the_tools() -> None:
    bin_dir = postgres_bin_dir()
    assert bin_dir is not None
    assert (bin_dir / "initdb").exists()
    assert (bin_dir / "pg_ctl").exists()


def test_redis_aof_always_survives_kill(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path, appendfsync="always") as server:
        client = fail_fast_client(server.url)
        client.set("odds:k", "2.35")
        first_pid = server.pid
        server.kill()
        assert first_pid is not None and not _alive(first_pid)
        server.restart()
        assert server.pid is not None and server.pid != first_pid
        assert fail_fast_client(server.url).get("odds:k") == b"2.35"


def test_redis_without_persistence_forgets_on_kill(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path) as server:
        fail_fast_client(server.url).set("odds:k", "1")
        server.kill()
        server.restart()
        assert fail_fast_client(server.url).get("odds:k") is None


def test_redis_pause_blocks_until_resume(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path) as server:
        client = fail_fast_client(server.url)
        assert client.ping()
        server.pause()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        server.resume()
        assert client.ping()


def test_redis_context_exit_leaves_no_process(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path, appendfsync="everysec") as server:
        pid = server.pid
        server.pause()
    assert pid is not None and not _alive(pid)
    assert server.pid is None
    # Exiting twice-over (stop after stop) is harmless.
    server.stop()
    server.kill()


def test_redis_start_failure_reports_log(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path) as running:
        clash = RedisServer(tmp_path / "other", port=running.port)
        with pytest.raises(RuntimeError, match="did not start"):
            clash.start()
        assert clash.pid is None


def test_postgres_settings_and_database(postgres: PostgresServer) -> None:
    postgres.create_database("odds_settings")
    with psycopg.connect(postgres.url_for("odds_settings")) as conn:
        row = conn.execute(
            "SELECT current_database(), current_setting('fsync'), current_setting('synchronous_commit'),"
            " current_setting('listen_addresses')"
        ).fetchone()
    assert row == ("odds_settings", "on", "on", "127.0.0.1")


def test_postgres_query_through_proxy(postgres: PostgresServer) -> None:
    postgres.create_database("odds_proxy")
    with TcpProxy("127.0.0.1", postgres.port) as proxy:
        url = f"postgresql://postgres@127.0.0.1:{proxy.port}/odds_proxy"
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT current_database(), 40 + 2").fetchone()
            assert proxy.connections == 1
    assert row == ("odds_proxy", 42)


def test_postgres_committed_rows_survive_kill(postgres: PostgresServer) -> None:
    postgres.create_database("odds_crash")
    with psycopg.connect(postgres.url_for("odds_crash"), autocommit=True) as conn:
        conn.execute("CREATE TABLE odds (price numeric)")
        conn.execute("INSERT INTO odds VALUES (1.91)")
    idle = psycopg.connect(postgres.url, autocommit=True)
    first_pid = postgres.pid
    postgres.kill()
    assert postgres.pid is None
    assert first_pid is not None and not _alive(first_pid)
    with pytest.raises(psycopg.OperationalError):
        idle.execute("SELECT 1")
    idle.close()
    postgres.restart()
    with psycopg.connect(postgres.url_for("odds_crash")) as conn:
        rows = conn.execute("SELECT price::text FROM odds").fetchall()
    assert rows == [("1.91",)]


def test_postgres_immediate_stop_then_start(postgres: PostgresServer) -> None:
    postgres.stop("immediate")
    assert postgres.pid is None
    postgres.start()
    with psycopg.connect(postgres.url) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_pause_stalls_new_connections(postgres: PostgresServer) -> None:
    postgres.pause()
    try:
        with pytest.raises(psycopg.errors.ConnectionTimeout):
            psycopg.connect(postgres.url, connect_timeout=1)
    finally:
        postgres.resume()
    with psycopg.connect(postgres.url, connect_timeout=5) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)


def test_postgres_context_exit_leaves_no_process(tmp_path: pathlib.Path) -> None:
    with PostgresServer(tmp_path) as server:
        pid = server.pid
        data_dir = server.data_dir
    assert pid is not None and not _alive(pid)
    assert server.pid is None
    if os.geteuid() == 0:
        # As root the cluster lived in a private directory, which exit removes.
        assert not data_dir.exists()
