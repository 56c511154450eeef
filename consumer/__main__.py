"""`python -m consumer run | migrate | status`."""

from __future__ import annotations

import argparse
import json
import sys

import structlog

from consumer.daemon import Daemon
from consumer.migrate import create_database_if_missing, upgrade
from consumer.status import collect, render
from shared.cli import add_connection_options, settings_from
from shared.keys import Keys
from shared.logs import configure
from shared.redis_client import connect

log = structlog.get_logger("consumer")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m consumer")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the consumer daemon")
    add_connection_options(run)
    run.add_argument("--name", help="consumer name, unique per process (env ODDS_CONSUMER; default host-pid)")
    run.add_argument("--batch-size", type=int, help="entries per batch (env ODDS_BATCH_SIZE)")
    migrate = sub.add_parser("migrate", help="create the database if missing and apply migrations")
    add_connection_options(migrate)
    status = sub.add_parser("status", help="stream lengths, backlog, dead letters and counters")
    add_connection_options(status)
    status.add_argument("--json", action="store_true", help="print JSON for scripts")
    args = parser.parse_args(argv)
    configure(args.log_level, args.log_json)
    if args.command == "run":
        return Daemon(settings_from(args, consumer=args.name, batch_size=args.batch_size)).run()
    settings = settings_from(args)
    if args.command == "migrate":
        if create_database_if_missing(settings.database_url):
            log.info("database_created", database=settings.database_url)
        upgrade(settings.database_url)
        log.info("migrated", database=settings.database_url)
        return 0
    report = collect(connect(settings.redis_url, settings.redis_timeout_s),
                     Keys(settings.stream, settings.group, settings.shards))
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
