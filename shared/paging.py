"""Walking a stream, or a group's pending list, page by page from an id, without holding Redis long."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

Row = TypeVar("Row")


def pages(
    fetch: Callable[[str, int], list[Row]], id_of: Callable[[Row], bytes | str], size: int
) -> Iterator[Row]:
    """Every row that fetch(start, size) returns, from "-" on, each page starting after the last id seen.

    fetch takes an XRANGE-style lower bound ("-", or "(" and an id to exclude it) and a page size.
    """
    start = "-"
    while True:
        page = fetch(start, size)
        yield from page
        if len(page) < size:
            return
        last = id_of(page[-1])
        start = "(" + (last.decode() if isinstance(last, bytes) else last)
