"""Paging from an id: every row once, in order, each page starting after the last id of the one before."""

from __future__ import annotations

import pytest

from shared.paging import pages


@pytest.mark.parametrize("rows", [0, 1, 3, 7, 9])
def test_every_row_comes_once_in_order_whatever_the_page_boundaries(rows: int) -> None:
    stream = [f"{i}-0" for i in range(1, rows + 1)]
    starts: list[str] = []

    def fetch(start: str, size: int) -> list[str]:
        starts.append(start)
        after = 0 if start == "-" else int(start.lstrip("(").split("-")[0])
        return [row for row in stream if int(row.split("-")[0]) > after][:size]

    assert list(pages(fetch, lambda row: row, 3)) == stream
    # A page shorter than the size ends the walk: a full last page costs one more, empty, call
    assert len(starts) == rows // 3 + 1
    assert starts[1:] == [f"({stream[i * 3 - 1]}" for i in range(1, len(starts))]
