"""Odds movement charts: one panel per outcome, one step line per bookmaker, gaps where nothing was seen.

A history row holds its odds from captured_at until last_confirmed_at. The next row of the same outcome
starts at the next capture that saw something different, so the line holds a value until that capture
and then steps. When the time between one row's last confirmation and the next row's capture is much
longer than usual (the market was off the board, the scraper was down), nothing is known about it, and
the line breaks there instead of pretending the odds held.

matplotlib is an optional extra (`pip install 'odds-pipeline[plot]'`): everything but render() is pure.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

from consumer.history import HistoryRow

# The size a chart is drawn at, in pixels: a header for the title and legend, then one panel per outcome.
WIDTH_PX, HEADER_PX, PANEL_PX, DPI = 1000, 120, 260, 100
MAX_PANELS = 12
# A silence longer than this many usual intervals between captures is a gap.
GAP_FACTOR = 2.0
INSTALL_HINT = "pip install 'odds-pipeline[plot]'"

Vertex = tuple[dt.datetime, float]
PanelKey = tuple[str, str, str]  # market, specifier, outcome


class ChartError(ValueError):
    """The chart cannot be drawn: nothing to draw, too much, or matplotlib is missing."""


class Span(NamedTuple):
    start: dt.datetime
    end: dt.datetime
    odds: float


def chart_size(panels: int) -> tuple[int, int]:
    return WIDTH_PX, HEADER_PX + PANEL_PX * panels


def panels(
    rows: Iterable[HistoryRow], since: dt.datetime | None = None
) -> dict[PanelKey, dict[str, list[Span]]]:
    """Per outcome, per bookmaker, the spans in capture order; a span that began before since starts there."""
    grouped: dict[PanelKey, dict[str, list[Span]]] = {}
    for row in rows:
        series = grouped.setdefault((row.market, row.specifier, row.outcome), {})
        start = row.captured_at if since is None else max(row.captured_at, since)
        series.setdefault(row.bookmaker, []).append(Span(start, row.last_confirmed_at, row.odds))
    for by_bookmaker in grouped.values():
        for spans in by_bookmaker.values():
            spans.sort()
    return grouped


def gap_threshold(series: Iterable[Sequence[Span]]) -> dt.timedelta | None:
    """GAP_FACTOR times the median silence between consecutive spans; None when there is none to measure."""
    silences = [
        (b.start - a.end).total_seconds() for spans in series for a, b in zip(spans, spans[1:], strict=False)
    ]
    return dt.timedelta(seconds=statistics.median(silences) * GAP_FACTOR) if silences else None


def pieces(spans: Sequence[Span], gap: dt.timedelta | None) -> list[list[Vertex]]:
    """The vertices of each unbroken part of one step line."""
    drawn: list[list[Vertex]] = []
    previous: Span | None = None
    for span in spans:
        if previous is None or (gap is not None and span.start - previous.end > gap):
            drawn.append([])
        else:
            drawn[-1].append((span.start, previous.odds))  # held until the capture that saw the change
        drawn[-1] += [(span.start, span.odds), (span.end, span.odds)]
        previous = span
    return drawn


def render(
    rows: Sequence[HistoryRow], path: Path, title: str, since: dt.datetime | None = None
) -> tuple[int, int]:
    """Draw the chart as a PNG at path, from since on if given; returns its size in pixels."""
    grouped = panels(rows, since)
    if not grouped:
        raise ChartError("no history to draw")
    if len(grouped) > MAX_PANELS:
        raise ChartError(
            f"{len(grouped)} outcomes to draw, more than {MAX_PANELS}: choose one market with --market "
            "and --specifier"
        )
    try:
        from matplotlib.dates import AutoDateLocator, ConciseDateFormatter
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
    except ImportError:
        raise ChartError(f"drawing charts needs matplotlib: {INSTALL_HINT}") from None
    width, height = chart_size(len(grouped))
    figure = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(grouped), 1, sharex=True, squeeze=False)[:, 0]
    bookmakers = sorted({row.bookmaker for row in rows})
    colours = {name: f"C{i % 10}" for i, name in enumerate(bookmakers)}
    gap = gap_threshold(spans for series in grouped.values() for spans in series.values())
    for ax, ((market, specifier, outcome), series) in zip(axes, grouped.items(), strict=True):
        for bookmaker, spans in series.items():
            for piece in pieces(spans, gap):
                times, odds = zip(*piece, strict=True)
                # A dot at the last confirmation before a gap or the end: it also keeps visible a value
                # seen at one capture only, which has no length.
                ax.plot(
                    times,
                    odds,
                    color=colours[bookmaker],
                    linewidth=1.6,
                    marker="o",
                    markersize=3,
                    markevery=[len(piece) - 1],
                )
        ax.set_title(f"{market} {specifier}".strip() + f": {outcome}", loc="left", fontsize=10)
        ax.set_ylabel("odds")
        ax.grid(alpha=0.3)
    locator = AutoDateLocator()  # type: ignore[no-untyped-call]  # matplotlib leaves these unannotated
    axes[-1].xaxis.set_major_locator(locator)
    axes[-1].xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    axes[-1].set_xlabel("capture time (UTC)")
    handles = [Line2D([], [], color=colours[name], linewidth=1.6) for name in bookmakers]
    figure.legend(
        handles, bookmakers, loc="outside upper right", ncols=min(len(bookmakers), 6), frameon=False
    )
    figure.suptitle(title, x=0.01, ha="left")
    figure.savefig(path, format="png")
    return width, height
