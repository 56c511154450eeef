"""A producer that sends stable but non-canonical bytes gets the fast path too, on real Redis and Postgres."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

import consumer.decoding
from consumer.daemon import Daemon
from consumer.odds_holes import Template
from producer.simulator import SimulationSpec, Simulator
from shared.keys import Keys
from shared.redis_client import connect
from shared.settings import Settings
from tests.bench.foreign import ForeignPublisher
from tests.bench.storage import count_changes
from tests.history import compare, expected_history, stored_history
from tests.support import drain

TS = 1_795_000_000_000
Conn = psycopg.Connection[tuple[object, ...]]


@pytest.fixture
def daemon(settings: Settings) -> Iterator[Daemon]:
    d = Daemon(settings)
    yield d
    d.writer.discard()


def test_stable_foreign_bytes_decode_only_what_changed(
    settings: Settings, daemon: Daemon, db: Conn, keys: Keys, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a scraper that keeps its own order of markets and outcomes and sends whole odds as integers
    publisher = ForeignPublisher(connect(settings.redis_url, 2.0), keys)
    sim = Simulator(
        SimulationSpec(events=10, bookmakers=("sportybet", "bet9ja"), markets=12, change_rate=0.3)
    )
    warm = sim.cycle(TS)
    publisher.publish_cycle(warm)
    drain(daemon)
    full, markets = [], []
    decode_data, one_market = consumer.decoding.decode_data, consumer.decoding._one_market
    monkeypatch.setattr(
        consumer.decoding, "decode_data", lambda data, limits: full.append(data) or decode_data(data, limits)
    )
    monkeypatch.setattr(
        consumer.decoding, "_one_market", lambda raw, limits: markets.append(raw) or one_market(raw, limits)
    )
    template_odds = Template.odds

    def read_from_template(template: Template, raw: bytes) -> tuple[float, ...] | None:
        odds = template_odds(template, raw)
        if odds is not None:
            markets.append(raw)
        return odds

    monkeypatch.setattr(Template, "odds", read_from_template)
    # When later cycles repeat most snapshots and move a few markets of the others
    backlog = [sim.cycle(TS + i * 1000) for i in range(1, 4)]
    for snapshots in backlog:
        publisher.publish_cycle(snapshots)
    drain(daemon)
    # Then no snapshot was decoded whole, and only the markets that moved were read (decoded, or read from
    # the template of their shape)
    changes = count_changes(warm, backlog)
    assert full == [] and 0 < len(markets) == changes.markets
    # And the history is what one in-order writer stores
    report = compare(expected_history(warm + [s for c in backlog for s in c]), stored_history(db))
    assert report.ok, report.summary()
    assert db.execute("SELECT count(*) FROM market_versions").fetchone() == (
        len(warm) * 12 + changes.markets,
    )
