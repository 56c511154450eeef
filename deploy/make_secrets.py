"""Passwords for a deployment, written as the files docker-compose.yml mounts as secrets.

    python3 deploy/make_secrets.py [DIR]        (DIR defaults to deploy/secrets; existing files are kept)

For each Redis user of deploy/redis-users.acl (producer, consumer, operator) a random password, the URL
its processes connect with (redis-<user>.url), and the ACL file Redis loads, the committed rules with
each password's SHA-256 added (redis-users.acl); for Postgres the password of user odds and the
DATABASE_URL of the consumers (postgres-password, database.url). Standard library only: it runs before
anything is installed.
"""

from __future__ import annotations

import hashlib
import pathlib
import re
import secrets
import sys
from collections.abc import Mapping

RULES = pathlib.Path(__file__).with_name("redis-users.acl")
USERS = ("producer", "consumer", "operator")
REDIS_HOST, POSTGRES_HOST, POSTGRES_USER = "redis:6379", "postgres:5432", "odds"
_USER_LINE = re.compile(r"^user (?P<name>\S+) (?P<rules>.*)$")


def with_passwords(rules: str, passwords: Mapping[str, str]) -> str:
    """The ACL rules with each named user's password added as its SHA-256, the form Redis stores.

    Every user named must have a line; users without a password (default) keep theirs unchanged.
    """
    lines, seen = [], set()
    for line in rules.splitlines():
        match = _USER_LINE.match(line)
        if match and match["name"] in passwords:
            digest = hashlib.sha256(passwords[match["name"]].encode()).hexdigest()
            line = f"user {match['name']} #{digest} {match['rules']}"
            seen.add(match["name"])
        lines.append(line)
    missing = set(passwords) - seen
    if missing:
        raise ValueError(f"no ACL rules for {sorted(missing)}")
    return "\n".join(lines) + "\n"


def new_password() -> str:
    # Hex: nothing to escape in a URL, a shell or a config file.
    return secrets.token_hex(24)


def write_secrets(directory: pathlib.Path) -> list[pathlib.Path]:
    """Write every secret file that is missing; returns those written."""
    directory.mkdir(parents=True, exist_ok=True)
    # The directory keeps other users of the host out. The files stay readable inside it: compose mounts
    # them with their own mode, and the services run as users of their own (redis, postgres, odds).
    directory.chmod(0o700)
    written: list[pathlib.Path] = []

    def write(name: str, text: str) -> None:
        path = directory / name
        path.write_text(text)
        path.chmod(0o644)
        written.append(path)

    if not (directory / "redis-users.acl").exists():
        passwords = {user: new_password() for user in USERS}
        write("redis-users.acl", with_passwords(RULES.read_text(), passwords))
        for user, password in passwords.items():
            write(f"redis-{user}.url", f"redis://{user}:{password}@{REDIS_HOST}/0\n")
    if not (directory / "postgres-password").exists():
        password = new_password()
        write("postgres-password", password + "\n")
        write("database.url", f"postgresql://{POSTGRES_USER}:{password}@{POSTGRES_HOST}/odds\n")
    return written


def main(argv: list[str]) -> int:
    directory = pathlib.Path(argv[1] if len(argv) > 1 else RULES.with_name("secrets"))
    for path in write_secrets(directory):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
