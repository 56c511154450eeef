"""Throwaway Redis and Postgres servers on free loopback ports, for the fault tests and the demo."""

from consumer.localservers.base import TLSFiles, free_port
from consumer.localservers.postgres_server import PostgresServer, postgres_bin_dir
from consumer.localservers.redis_server import RedisServer

__all__ = ["PostgresServer", "RedisServer", "TLSFiles", "free_port", "postgres_bin_dir"]
