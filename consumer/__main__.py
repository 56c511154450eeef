"""`python -m consumer run | migrate | status | dlq list|replay|purge | history | reshard | demo`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import psycopg
import redis
import sqlalchemy.exc
import structlog

from consumer import demo
from consumer.daemon import Daemon
from consumer.dlq import DeadLetters, Selection
from consumer.dlq import render as render_letters
from consumer.errors import db_access_refused
from consumer.history import HistoryQuery, fetch, parse_since
from consumer.history_chart import INSTALL_HINT, ChartError
from consumer.history_chart import render as render_chart
from consumer.history_output import table, write_csv
from consumer.migrate import create_database_if_missing, upgrade
from consumer.reshard import NotDrained, reshard
from consumer.status import THRESHOLD_NAMES, Thresholds, collect
from consumer.status_table import render
from shared.cli import EXIT_REFUSED, EXIT_SETTINGS, add_connection_options, settings_from
from shared.db import psycopg_url
from shared.logs import configure, redact
from shared.progress import Progress
from shared.redis_client import Client, connect, first_contact
from shared.redis_errors import access_refused, what_to_fix
from shared.settings import Settings, SettingsError
from shared.shard_count import ShardCountMismatch, check, recorded

log = structlog.get_logger("consumer")

EXIT_UNHEALTHY = 1  # a threshold is crossed, or an operator declined a purge
EXIT_UNREACHABLE = 3  # Redis could not be asked: the state is unknown


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure(args.log_level, args.log_json)
    if args.command == "demo":
        return demo.main()
    try:
        run_flags = ("name", "batch_size", "metrics_port") if args.command == "run" else ()
        settings = settings_from(
            args, **{"consumer" if f == "name" else f: getattr(args, f) for f in run_flags}
        )
    except SettingsError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    if args.command == "run":
        return Daemon(settings).run()
    if args.command == "migrate":
        return migrate(settings)
    if args.command == "history":
        return history(args, settings)
    try:
        client = connect(settings.redis_url, settings.redis_timeout_s)
        first_contact(client)
        if args.command == "reshard":
            return reshard_command(args.to, settings, client)
        check(recorded(client, settings.keys), settings.keys)
        return status(args, settings, client) if args.command == "status" else dlq(args, settings, client)
    except ShardCountMismatch as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    except redis.RedisError as exc:
        if access_refused(exc):
            print(f"{args.command}: {what_to_fix(exc, 'operator')}", file=sys.stderr)
            return EXIT_REFUSED
        print(f"redis at {redact(settings.redis_url)} cannot be asked: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


def migrate(settings: Settings) -> int:
    try:
        if create_database_if_missing(settings.database_url):
            log.info("database_created", database=settings.database_url)
        # One migration on a large database can run for minutes: the line's clock shows it is alive.
        with Progress("migrating", unit="revisions", heartbeat_s=1.0) as progress:
            upgrade(settings.database_url, progress=progress.update)
    except (psycopg.Error, sqlalchemy.exc.DBAPIError) as exc:
        cause = exc.orig if isinstance(exc, sqlalchemy.exc.DBAPIError) else exc
        refused = isinstance(cause, psycopg.Error) and db_access_refused(cause)
        print(f"migrate: postgres at {redact(settings.database_url)}: {str(cause).strip()}", file=sys.stderr)
        return EXIT_REFUSED if refused else EXIT_UNREACHABLE
    log.info("migrated", database=settings.database_url)
    return 0


def status(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    limits = Thresholds.from_env(
        high_water=settings.producer_high_water, **{name: getattr(args, name) for name in THRESHOLD_NAMES}
    )
    report = collect(client, settings.keys, None if args.no_database else settings.database_url)
    print(json.dumps(report.as_dict(limits), indent=2) if args.json else render(report, limits))
    return EXIT_UNHEALTHY if report.problems(limits) else 0


def dlq(args: argparse.Namespace, settings: Settings, client: Client) -> int:
    letters = DeadLetters(client, settings.keys)
    selection = Selection(tuple(args.ids), args.reason)
    if args.action == "list":
        shown = [letter for _, letter in zip(range(args.limit), letters.scan(selection))]
        if args.json:
            print(json.dumps([letter.as_dict() for letter in shown], indent=2))
        else:
            print(render_letters(shown))
            print(f"{len(shown)} shown of {letters.count()} dead letters")
        return 0
    if selection == Selection() and not args.all:
        print("name dead letter ids, --reason TEXT, or --all", file=sys.stderr)
        return 2
    if args.action == "replay":
        with Progress("replaying dead letters") as progress:
            result = letters.replay(selection, progress.update)
        print(
            json.dumps(
                {"replayed": result.replayed, "already_gone": result.already_gone, "empty": result.empty},
                indent=2,
            )
        )
        return 0
    if not args.yes:
        count = sum(1 for _ in letters.scan(selection))
        if not sys.stdin.isatty():
            print(f"refusing to purge {count} dead letters without --yes", file=sys.stderr)
            return EXIT_UNHEALTHY
        if input(f"Delete {count} dead letters for good? [y/N] ").strip().lower() not in ("y", "yes"):
            return EXIT_UNHEALTHY
    with Progress("purging dead letters") as progress:
        purged = letters.purge(selection, progress.update)
    print(json.dumps({"purged": purged}))
    return 0


def reshard_command(to: int, settings: Settings, client: Client) -> int:
    try:
        done = reshard(client, settings.keys, to, settings.lease_ttl_ms)
    except (NotDrained, ValueError) as exc:
        print(f"reshard: {exc}", file=sys.stderr)
        return EXIT_UNHEALTHY
    before = "no count recorded" if done.before is None else f"{done.before} shards"
    print(
        f"{settings.stream}: {before} -> {done.after} shards ({done.deleted_streams} streams deleted);"
        f" start every producer and consumer with ODDS_SHARDS={done.after}"
    )
    return 0


def history(args: argparse.Namespace, settings: Settings) -> int:
    try:
        since = parse_since(args.since) if args.since else None
        query = HistoryQuery(args.event, args.bookmaker, args.market, args.specifier, since)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    written, rows = 0, []
    try:
        with psycopg.connect(psycopg_url(settings.database_url)) as conn:
            if args.csv:
                with Progress("writing history", unit="rows") as progress:
                    written = write_csv(fetch(conn, query), sys.stdout, progress.update)
            if args.plot or not args.csv:
                rows = list(fetch(conn, query))
    except psycopg.Error as exc:
        print(f"history: postgres at {redact(settings.database_url)}: {str(exc).strip()}", file=sys.stderr)
        return EXIT_REFUSED if db_access_refused(exc) else EXIT_UNREACHABLE
    if not (written or rows):
        print(f"no odds history for {query.describe()}", file=sys.stderr)
        return 1
    if not (args.csv or args.plot):
        print(table(rows))
    if args.plot:
        try:
            width, height = render_chart(rows, args.plot, f"{args.event}: odds by bookmaker", since)
        except ChartError as exc:
            print(exc, file=sys.stderr)
            return 2
        print(f"wrote {args.plot} ({width}x{height} px)", file=sys.stderr)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m consumer")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the consumer daemon")
    add_connection_options(run)
    run.add_argument("--name", help="consumer name, unique per process (env ODDS_CONSUMER; default host-pid)")
    run.add_argument("--batch-size", type=int, help="entries per batch (env ODDS_BATCH_SIZE)")
    run.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics here; 0 is off (env ODDS_METRICS_PORT)"
    )
    demo_parser = sub.add_parser("demo", help="a short visible run: simulator, one consumer, figures")
    demo_parser.add_argument("--log-level", default="INFO")
    demo_parser.add_argument("--log-json", action=argparse.BooleanOptionalAction, default=None)
    migrate = sub.add_parser("migrate", help="create the database if missing and apply migrations")
    add_connection_options(migrate)
    status = sub.add_parser("status", help="backlog, pending, dead letters; exits non-zero when unhealthy")
    add_connection_options(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    status.add_argument("--no-database", action="store_true", help="skip the feed count in Postgres")
    defaults = Thresholds()
    for flag, name, unit in (
        ("--max-backlog", "MAX_BACKLOG", "entries"),
        ("--max-pending-age-ms", "MAX_PENDING_AGE_MS", "ms since delivery"),
        ("--max-dead-letters", "MAX_DEAD_LETTERS", "entries"),
        ("--idle-ms", "IDLE_MS", "ms; consumers silent this long are listed idle"),
        ("--max-commit-age-ms", "MAX_COMMIT_AGE_MS", "ms that work may wait with no commit"),
        ("--max-entry-deliveries", "MAX_ENTRY_DELIVERIES", "deliveries of one pending entry"),
        ("--max-id-use-pct", "MAX_ID_USE_PCT", "percent of an id sequence's range"),
    ):
        default = getattr(defaults, name.lower())
        status.add_argument(flag, type=int, help=f"{unit} (env ODDS_STATUS_{name}; default {default})")
    hist = sub.add_parser("history", help="one event's odds history: a table, CSV, or a chart")
    add_connection_options(hist)
    hist.add_argument("event", help="the event's external id, as published")
    hist.add_argument("--bookmaker", help="only this bookmaker")
    hist.add_argument("--market", help="only this market")
    hist.add_argument("--specifier", help="only this specifier of --market ('' for none)")
    hist.add_argument(
        "--since", help="rows still in force at or after: ISO 8601 (UTC by default) or 30m, 6h, 2d"
    )
    hist.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    hist.add_argument(
        "--plot", type=Path, metavar="FILE.png", help=f"draw the odds over time ({INSTALL_HINT})"
    )
    resharding = sub.add_parser(
        "reshard", help="change the shard count of drained streams (README: Changing the shard count)"
    )
    add_connection_options(resharding)
    resharding.add_argument("--to", type=int, required=True, help="the new shard count")
    dead = sub.add_parser("dlq", help="list, replay or purge dead letters")
    actions = dead.add_subparsers(dest="action", required=True)
    for action, text in (
        ("list", "show dead letters with their reason and a preview"),
        ("replay", "publish dead letters to their shard again, deleting them"),
        ("purge", "delete dead letters"),
    ):
        p = actions.add_parser(action, help=text)
        add_connection_options(p)
        p.add_argument("ids", nargs="*", help="dead letter ids (default: all that match)")
        p.add_argument("--reason", help="only letters whose reason contains this text")
        if action == "list":
            p.add_argument("--limit", type=int, default=50)
            p.add_argument("--json", action="store_true", help="print JSON for scripts")
        else:
            p.add_argument("--all", action="store_true", help="act on every dead letter")
        if action == "purge":
            p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    return parser


if __name__ == "__main__":
    sys.exit(main())
