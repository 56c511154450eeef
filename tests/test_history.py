"""`python -m consumer history`: the query through the view, table and CSV, and the chart of a real run."""

from __future__ import annotations

import csv
import datetime as dt
import io
import os
import shutil
import struct
import sys
import zlib
from pathlib import Path

import psycopg
import pytest

from consumer.__main__ import main
from consumer.daemon import Daemon
from consumer.history import HistoryQuery, HistoryRow, parse_since
from consumer.history_chart import Span, gap_threshold, panels, pieces
from consumer.history_output import table
from consumer.localservers import free_port
from producer.publisher import Publisher
from producer.simulator import SimulationSpec, Simulator
from shared.settings import Settings
from tests.support import drain

T0 = dt.datetime(2026, 11, 24, 10, 0, tzinfo=dt.UTC)
MINUTE = dt.timedelta(minutes=1)
BOOKMAKERS = ("sportybet", "bet9ja", "betking")
CYCLES = 30
# betking's scraper is down for these cycles: its history must show a gap there.
OUTAGE = range(12, 20)
Conn = psycopg.Connection[tuple[object, ...]]


def at(minutes: float) -> dt.datetime:
    return T0 + minutes * MINUTE


def span(start: float, end: float, odds: float) -> Span:
    return Span(at(start), at(end), odds)


# -- pure parts ------------------------------------------------------------------------------------------


def test_a_step_line_holds_each_value_until_the_next_capture_and_breaks_at_a_gap() -> None:
    # Given a series captured every minute: 2.0 three times, 2.2 once, 2.1 three times, silence, then 1.9
    spans = [span(0, 2, 2.0), span(3, 3, 2.2), span(4, 6, 2.1), span(12, 13, 1.9)]
    gap = gap_threshold([spans])
    # Then the usual silence is one capture interval, and a gap is twice that
    assert gap == 2 * MINUTE
    # And the line holds each value until the capture that saw the next one, steps, and breaks before 1.9
    assert pieces(spans, gap) == [
        [
            (at(0), 2.0), (at(2), 2.0), (at(3), 2.0),
            (at(3), 2.2), (at(3), 2.2), (at(4), 2.2),
            (at(4), 2.1), (at(6), 2.1),
        ],
        [(at(12), 1.9), (at(13), 1.9)],
    ]  # fmt: skip


def test_without_a_silence_to_measure_nothing_counts_as_a_gap() -> None:
    assert gap_threshold([[span(0, 5, 2.0)], []]) is None
    assert pieces([span(0, 5, 2.0)], None) == [[(at(0), 2.0), (at(5), 2.0)]]


def test_since_reads_iso_times_in_utc_by_default_and_spans_back_from_now() -> None:
    assert parse_since("2026-11-24T10:00") == T0
    assert parse_since("2026-11-24T12:00+02:00") == T0
    assert parse_since("90m", now=at(90)) == T0
    assert parse_since("2d", now=T0) == T0 - dt.timedelta(days=2)
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_since("yesterday")


def test_a_specifier_without_its_market_is_refused() -> None:
    with pytest.raises(ValueError, match="--specifier needs --market"):
        HistoryQuery("sr:match:1", specifier="total=2.5")


def test_the_table_aligns_columns_and_shows_times_in_utc() -> None:
    local = dt.timezone(dt.timedelta(hours=2))
    rows = [
        HistoryRow("bet9ja", "1X2", "", "1", 2.5, T0, at(5)),
        HistoryRow("sportybet", "Over/Under", "total=2.5", "Over", 12.25, T0.astimezone(local), at(1)),
    ]
    lines = table(rows).splitlines()
    assert lines[0].split() == list(HistoryRow._fields)
    assert len({line.index("2026-11-24 10:00:00.000") for line in lines[1:]}) == 1
    # And odds are right-aligned, to the cent
    assert lines[1].index("2.50") + len("2.50") == lines[2].index("12.25") + len("12.25")


# -- a real run ------------------------------------------------------------------------------------------


@pytest.fixture
def stored(settings: Settings, db: Conn) -> tuple[Settings, str]:
    """Thirty one-minute cycles of simulated odds, with betking silent for eight of them, in Postgres."""
    sim = Simulator(SimulationSpec(events=2, bookmakers=BOOKMAKERS, markets=3, change_rate=0.7, seed=5))
    publisher = Publisher.from_settings(settings)
    for cycle in range(CYCLES):
        snapshots = sim.cycle(int(at(cycle).timestamp() * 1000))
        if cycle in OUTAGE:
            snapshots = [s for s in snapshots if s.bookmaker != "betking"]
        publisher.publish_cycle(snapshots)
    daemon = Daemon(settings)
    drain(daemon)
    daemon.writer.discard()
    event = str(db.execute("SELECT min(event) FROM odds_history").fetchone()[0])  # type: ignore[index]
    return settings, event


def view_rows(
    db: Conn, event: str, extra: str = "", params: tuple[object, ...] = ()
) -> list[tuple[object, ...]]:
    return db.execute(
        "SELECT bookmaker, market, specifier, outcome, odds, captured_at, last_confirmed_at FROM odds_history"
        f" WHERE event = %s {extra} ORDER BY market, specifier, outcome, bookmaker, captured_at",
        (event, *params),
    ).fetchall()


def history(settings: Settings, *args: str) -> list[str]:
    return ["history", *args, "--database-url", settings.database_url]


def test_csv_is_the_view_row_for_row(
    stored: tuple[Settings, str], db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, event = stored
    # When the history of one bookmaker since minute 20 is written as CSV
    code = main(history(settings, event, "--bookmaker", "bet9ja", "--since", at(20).isoformat(), "--csv"))
    # Then each line is a row of the view, in order, times with their offset
    out, err = capsys.readouterr()
    assert code == 0
    assert "writing history" not in err  # no progress line off a terminal
    lines = list(csv.reader(io.StringIO(out)))
    assert lines[0] == list(HistoryRow._fields)
    expected = view_rows(db, event, "AND bookmaker = %s AND last_confirmed_at >= %s", ("bet9ja", at(20)))
    assert len(expected) > 0
    assert [
        (b, m, s, o, float(odds), dt.datetime.fromisoformat(c), dt.datetime.fromisoformat(lc))
        for b, m, s, o, odds, c, lc in lines[1:]
    ] == expected


def test_table_shows_one_line_per_row_of_the_chosen_market(
    stored: tuple[Settings, str], db: Conn, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, event = stored
    # When the table of the 1X2 market is printed
    assert main(history(settings, event, "--market", "1X2", "--specifier", "")) == 0
    lines = capsys.readouterr().out.splitlines()
    # Then it has a header and a line per view row of that market
    expected = view_rows(db, event, "AND market = %s AND specifier = ''", ("1X2",))
    assert len(lines) == 1 + len(expected)
    assert {line.split()[0] for line in lines[1:]} == set(BOOKMAKERS)


def test_no_history_says_so_and_exits_1(
    stored: tuple[Settings, str], capsys: pytest.CaptureFixture[str]
) -> None:
    settings, _ = stored
    assert main(history(settings, "sr:match:nobody")) == 1
    assert "no odds history for event 'sr:match:nobody'" in capsys.readouterr().err


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG, after checking it whole: signature, chunk CRCs, IHDR first, IEND last,
    and image data that inflates to exactly one filtered scanline per row."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    chunks, at_byte = [], 8
    while at_byte < len(data):
        (length,) = struct.unpack(">I", data[at_byte : at_byte + 4])
        kind, body = data[at_byte + 4 : at_byte + 8], data[at_byte + 8 : at_byte + 8 + length]
        (crc,) = struct.unpack(">I", data[at_byte + 8 + length : at_byte + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r}"
        chunks.append((kind, body))
        at_byte += 12 + length
    assert chunks[0][0] == b"IHDR" and chunks[-1][0] == b"IEND"
    width, height, depth, colour = struct.unpack(">IIBB", chunks[0][1][:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    pixels = zlib.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"))
    assert len(pixels) == height * (1 + width * channels * depth // 8)
    return width, height


def test_plot_draws_a_valid_png_one_panel_per_outcome(
    stored: tuple[Settings, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings, event = stored
    chart = tmp_path / "movement.png"
    # When the 1X2 market of the run is drawn
    code = main(history(settings, event, "--market", "1X2", "--specifier", "", "--plot", str(chart)))
    # Then it is a valid PNG of the documented size: 1000 px wide, 120 px of header and 260 px per outcome
    assert code == 0, capsys.readouterr().err
    assert png_size(chart.read_bytes()) == (1000, 120 + 260 * 3)
    if keep := os.environ.get("ODDS_KEEP_CHART"):
        shutil.copy(chart, keep)  # to look at it
    assert f"wrote {chart}" in capsys.readouterr().err


def test_plot_without_matplotlib_says_how_to_install_it(
    stored: tuple[Settings, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given an environment where matplotlib cannot be imported
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    settings, event = stored
    # When a chart is asked for
    code = main(
        history(settings, event, "--market", "1X2", "--specifier", "", "--plot", str(tmp_path / "c.png"))
    )
    # Then the command says what to install, and draws nothing
    assert code == 2
    assert "pip install 'odds-pipeline[plot]'" in capsys.readouterr().err
    assert not (tmp_path / "c.png").exists()


def test_a_chart_since_a_time_starts_there() -> None:
    # Given a row in force from minute 0 to 10, and one from 11 to 12
    rows = [
        HistoryRow("bet9ja", "1X2", "", "1", 2.5, at(0), at(10)),
        HistoryRow("bet9ja", "1X2", "", "1", 2.6, at(11), at(12)),
    ]
    # When the chart starts at minute 5, then the first span is cut there and the other is whole
    assert panels(rows, since=at(5)) == {("1X2", "", "1"): {"bet9ja": [span(5, 10, 2.5), span(11, 12, 2.6)]}}


def test_an_unreachable_database_is_named_without_its_password(capsys: pytest.CaptureFixture[str]) -> None:
    # Given a database URL with a password, where nothing listens
    url = f"postgresql://postgres:pg-Secret-3@127.0.0.1:{free_port()}/odds"
    # When the history is asked for, then the command says which server failed, hides the password, exits 3
    assert main(["history", "sr:match:1", "--database-url", url]) == 3
    err = capsys.readouterr().err
    assert "history: postgres at postgresql://postgres:***@127.0.0.1" in err
    assert "pg-Secret-3" not in err
