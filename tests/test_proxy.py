from __future__ import annotations

import concurrent.futures
import os
import pathlib
import socket
import time
from collections.abc import Iterator

import pytest
import redis

from consumer.localservers import RedisServer
from tests.faultkit.proxy import TcpProxy
from tests.support import fail_fast_client


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", redis_server.port) as tcp_proxy:
        yield tcp_proxy


def _raw(proxy: TcpProxy) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", proxy.port), timeout=0.5)
    return sock


def _read_line(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1)
        if not chunk:
            break
        data += chunk
    return data


def test_forwards_commands_and_large_values(proxy: TcpProxy) -> None:
    client = fail_fast_client(f"redis://127.0.0.1:{proxy.port}/0")
    assert client.ping()
    blob = os.urandom(3 * 1024 * 1024)
    client.set("odds:blob", blob)
    assert client.get("odds:blob") == blob
    assert proxy.connections == 1


def test_pause_times_out_then_resume_works(proxy: TcpProxy) -> None:
    client = fail_fast_client(f"redis://127.0.0.1:{proxy.port}/0")
    assert client.ping()
    proxy.pause()
    with pytest.raises(redis.exceptions.TimeoutError):
        client.ping()
    proxy.resume()
    assert client.ping()


def test_pause_keeps_bytes_buffered(proxy: TcpProxy) -> None:
    with _raw(proxy) as sock:
        sock.sendall(b"PING\r\n")
        assert _read_line(sock) == b"+PONG\r\n"
        proxy.pause()
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.resume()
        assert _read_line(sock) == b"+PONG\r\n"


def test_connection_opened_during_pause_is_forwarded_after_resume(proxy: TcpProxy) -> None:
    proxy.pause()
    with _raw(proxy) as sock:
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.resume()
        assert _read_line(sock) == b"+PONG\r\n"


def test_blackhole_drops_traffic_until_heal(proxy: TcpProxy) -> None:
    client = fail_fast_client(f"redis://127.0.0.1:{proxy.port}/0")
    assert client.ping()
    with _raw(proxy) as sock:
        proxy.blackhole()
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
        sock.sendall(b"PING\r\n")
        with pytest.raises(TimeoutError):
            sock.recv(16)
        proxy.heal()
        # The PING sent into the blackhole is gone for good, so nothing ever answers it.
        with pytest.raises(TimeoutError):
            sock.recv(16)
    assert client.ping()


def test_reset_all_breaks_live_connections(proxy: TcpProxy, redis_server: RedisServer) -> None:
    # An idle pooled connection would be silently replaced by redis-py, so the reset has to hit a
    # request in flight: a blocking pop, like a consumer parked in XREADGROUP BLOCK.
    client = fail_fast_client(f"redis://127.0.0.1:{proxy.port}/0", timeout_s=5)
    direct = fail_fast_client(f"redis://127.0.0.1:{redis_server.port}/0")
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        blocked = pool.submit(client.blpop, ["odds:never"], 4)
        for _ in range(500):
            if direct.info("clients")["blocked_clients"] >= 1:
                break
            time.sleep(0.01)
        else:
            pytest.fail("the pop never reached the server")
        assert proxy.connections == 1
        proxy.reset_all()
        assert proxy.connections == 0
        with pytest.raises(redis.exceptions.ConnectionError):
            blocked.result()
    assert client.ping()


def test_reset_all_sends_rst(proxy: TcpProxy) -> None:
    with _raw(proxy) as sock:
        sock.sendall(b"PING\r\n")
        assert _read_line(sock) == b"+PONG\r\n"
        proxy.reset_all()
        with pytest.raises(ConnectionResetError):
            sock.recv(16)


def test_upstream_down_resets_client(tmp_path: pathlib.Path) -> None:
    with RedisServer(tmp_path) as server, TcpProxy("127.0.0.1", server.port) as tcp_proxy:
        server.kill()
        client = fail_fast_client(f"redis://127.0.0.1:{tcp_proxy.port}/0")
        with pytest.raises(redis.exceptions.ConnectionError):
            client.ping()
        server.restart()
        assert client.ping()


def test_close_stops_listening(redis_server: RedisServer) -> None:
    tcp_proxy = TcpProxy("127.0.0.1", redis_server.port)
    tcp_proxy.start()
    port = tcp_proxy.port
    client = fail_fast_client(f"redis://127.0.0.1:{tcp_proxy.port}/0")
    assert client.ping()
    tcp_proxy.close()
    tcp_proxy.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    with pytest.raises(RuntimeError):
        tcp_proxy.pause()
