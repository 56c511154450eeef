"""The code before a change, exported from git next to the current one: run side by side with it.

The migration test fills a database with the consumer that wrote the previous layout, and the bench
times that consumer against the current one on the same machine in the same run.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The migration that introduced the per-market layout: the code before it wrote one row per market.
LAYOUT_MIGRATION = "consumer/migrations/versions/0004_market_versions.py"


class NoHistory(RuntimeError):
    """The repository has no git history to export from (an archive, or a shallow clone)."""


def commit_before(path: str = LAYOUT_MIGRATION) -> str:
    """The commit just before the one that added path; HEAD while path is not committed yet."""
    added = _git("log", "--diff-filter=A", "--format=%H", "--", path)
    commit = f"{added.split()[-1]}^" if added else "HEAD"
    return _git("rev-parse", "--verify", f"{commit}^{{commit}}")


def export(commit: str, into: Path) -> Path:
    """The packages of commit under into, ready for `python -m consumer` run from there."""
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", commit, "consumer", "shared", "producer"],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), *args], check=True, capture_output=True, text=True
        ).stdout.strip()
    except FileNotFoundError as exc:
        raise NoHistory("git is not installed") from exc
    except subprocess.CalledProcessError as exc:
        raise NoHistory(f"git {' '.join(args)}: {exc.stderr.strip()}") from exc
