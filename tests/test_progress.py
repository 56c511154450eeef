"""Progress lines: drawn on a terminal, absent from pipes and files, and shown by the long commands."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import uuid

import psycopg
import redis
from alembic.script import ScriptDirectory

from consumer.migrate import alembic_config, create_database_if_missing, pending_revisions, upgrade
from shared.db import database_name, psycopg_url, with_database
from shared.keys import Keys
from shared.progress import Progress
from shared.settings import Settings
from tests.support import connection_flags, dead_letter, dead_letters, env_for
from tests.test_dlq import snapshot_fields


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_line_is_redrawn_in_place_and_ended() -> None:
    # Given a progress line on a terminal that redraws at every update
    out = Terminal()
    with Progress("replaying", total=10, unit="letters", stream=out, redraw_s=0) as progress:
        # When it advances three times
        for _ in range(3):
            progress.advance()
    # Then each drawing starts at the line's start, the last one has the figures, and the line is ended
    text = out.getvalue()
    assert text.count("\r") == 4  # three updates and the final drawing
    assert text.rsplit("\r", 1)[1].startswith("replaying: 3 of 10 letters (30%), 0:0")
    assert text.endswith("\n")


def test_without_a_total_it_counts() -> None:
    progress = Progress("writing history", unit="rows", stream=Terminal())
    progress.update(1234567)
    assert progress.line().startswith("writing history: 1,234,567 rows, 0:0")


def test_off_a_terminal_nothing_is_written() -> None:
    # Given a stream that is not a terminal (a pipe, a file, a log collector)
    out = io.StringIO()
    with Progress("purging", total=5, stream=out, redraw_s=0, heartbeat_s=0.01) as progress:
        for _ in range(5):
            progress.advance()
    # Then not a character was written
    assert out.getvalue() == ""


def run_with_stderr(args: list[str], settings: Settings, on_terminal: bool) -> tuple[str, str]:
    """Run `python -m consumer ARGS`, stdout on a pipe and stderr on a terminal if asked; both outputs."""
    if not on_terminal:
        done = subprocess.run(
            [sys.executable, "-m", "consumer", *args], env=env_for(settings), capture_output=True, text=True
        )
        return done.stdout, done.stderr
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumer", *args, "--no-log-json"],
        env=env_for(settings),
        stdout=subprocess.PIPE,
        stderr=follower,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed its end
            break
        if not chunk:
            break
        chunks.append(chunk)
    stdout = proc.communicate(timeout=60)[0].decode()
    os.close(leader)
    return stdout, b"".join(chunks).decode(errors="replace")


def test_dlq_replay_shows_progress_on_a_terminal_only(
    settings: Settings, client: redis.Redis, keys: Keys
) -> None:
    # Given 30 dead letters
    for i in range(30):
        dead_letter(
            client, keys, snapshot_fields(f"sr:match:{i}"), "odds out of range", source_id=f"{i}-1".encode()
        )
    # When half are replayed with stderr on a terminal, and the rest with stderr on a pipe
    shown_out, shown_err = run_with_stderr(
        [
            "dlq",
            "replay",
            "--reason",
            "odds",
            *connection_flags(settings),
            *[d.decode() for d in ids(client, keys)[:15]],
        ],
        settings,
        on_terminal=True,
    )
    quiet_out, quiet_err = run_with_stderr(
        ["dlq", "replay", "--all", *connection_flags(settings)], settings, False
    )
    # Then the terminal saw the progress line with the final figures, and the pipe saw none
    assert "replaying dead letters: 15 of 15 (100%)" in shown_err
    assert "replaying dead letters" not in quiet_err
    # And stdout carries the same JSON report either way
    assert shown_out.startswith("{") and quiet_out.startswith("{")
    assert len(dead_letters(client, keys)) == 0


def ids(client: redis.Redis, keys: Keys) -> list[bytes]:
    return [entry_id for entry_id, _ in dead_letters(client, keys)]


def test_migrate_shows_each_revision_applied(database_url: str) -> None:
    # Given an empty database of its own
    url = with_database(database_url, f"odds_progress_{uuid.uuid4().hex[:8]}")
    create_database_if_missing(url)
    out = Terminal()
    try:
        # When it is migrated with a progress line on a terminal
        with Progress("migrating", unit="revisions", stream=out, redraw_s=0) as progress:
            upgrade(url, progress=progress.update)
        left = pending_revisions(alembic_config(url), url)
    finally:
        with psycopg.connect(psycopg_url(with_database(url, "postgres")), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database_name(url)}" WITH (FORCE)')
    # Then the line counted every revision there is, from none applied to all of them
    drawn = [part for part in out.getvalue().split("\r") if part]
    total = len(list(ScriptDirectory.from_config(alembic_config(url)).walk_revisions()))
    assert left == [] and total >= 2
    assert drawn[0].startswith(f"migrating: 0 of {total} revisions")
    assert drawn[-1].startswith(f"migrating: {total} of {total} revisions (100%)")
