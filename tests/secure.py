"""Private servers set up as the README's Security section says: Redis users from deploy/redis-users.acl
with the default user off, optionally TLS; Postgres with scram-sha-256 passwords and TLS."""

from __future__ import annotations

import pathlib
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from consumer.localservers import PostgresServer, RedisServer, TLSFiles
from deploy.make_secrets import RULES, USERS, new_password, with_passwords
from shared.settings import Settings
from tests.tlscerts import CertificateAuthority

STREAM = "odds:snapshots"  # the ACL's key patterns are written for the default stream name
PG_PASSWORD = "pg:s3cret/with@reserved chars"  # reserved characters: the URLs must encode them
# A user for the tests' own inspection (ACL LOG, clean-up); no deployment has it.
TEST_ADMIN = "test-admin"


@dataclass(frozen=True)
class RedisUsers:
    server: RedisServer
    passwords: dict[str, str]

    def url(self, user: str, password: str | None = None) -> str:
        return self.server.url_for(user, self.passwords[user] if password is None else password)

    def settings(self, base: Settings, user: str, password: str | None = None) -> Settings:
        return base.with_(redis_url=self.url(user, password), stream=STREAM)


@contextmanager
def redis_with_users(workdir: pathlib.Path, tls: TLSFiles | None = None) -> Iterator[RedisUsers]:
    """A redis-server loading the committed ACL rules, each user with a fresh password."""
    passwords = {user: new_password() for user in (*USERS, TEST_ADMIN)}
    rules = RULES.read_text() + f"user {TEST_ADMIN} on ~* &* +@all\n"
    aclfile = workdir / "users.acl"
    aclfile.write_text(with_passwords(rules, passwords))
    admin = (TEST_ADMIN, passwords[TEST_ADMIN])
    with RedisServer(workdir, config={"aclfile": str(aclfile)}, tls=tls, admin=admin) as server:
        yield RedisUsers(server, passwords)


@dataclass(frozen=True)
class Servers:
    redis: RedisUsers
    postgres: PostgresServer
    wrong_ca: pathlib.Path  # a CA that signed neither server

    def settings(self, redis_user: str = "consumer") -> Settings:
        return Settings(
            redis_url=self.redis.url(redis_user),
            database_url=self.postgres.url_for("odds"),
            lease_ttl_ms=3000,
            db_deadline_s=2.0,
        ).with_(stream="odds:snapshots", shards=2)


@contextmanager
def secure_servers(workdir: pathlib.Path) -> Iterator[Servers]:
    """Redis with the ACL users and TLS only; Postgres with ssl=on, scram-sha-256 and TLS required."""
    ca = CertificateAuthority("odds test CA")
    wrong_ca = CertificateAuthority("some other CA").write(workdir / "wrong-ca.pem")
    with (
        redis_with_users(workdir, tls=ca.server_files(workdir / "certs", "redis")) as redis_users,
        PostgresServer(workdir, password=PG_PASSWORD, tls=ca.server_files(workdir / "certs", "pg")) as pg,
    ):
        yield Servers(redis_users, pg, wrong_ca)


def run_cli(
    package: str, args: list[str], env: dict[str, str], timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """`python -m package args` to completion, capturing what it prints."""
    return subprocess.run(
        [sys.executable, "-m", package, *args, "--log-json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
