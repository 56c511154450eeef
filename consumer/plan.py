"""Pure processing: turn the entries of a batch and the stored state of their feeds into a write plan.

No I/O happens here. Each feed's entries are applied in capture-time order, exactly as one in-order writer
would apply them, so the plan is the same whichever consumer runs it and however often.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from shared.keys import feed_key
from shared.wire import Decoded, Envelope, InvalidEntry, MarketRow, fingerprint, parse_envelope, row_key


@dataclass(frozen=True, slots=True)
class Entry:
    """A stream entry as read: fields is None when trimming deleted it while it was pending."""

    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes] | None
    deliveries: int


@dataclass(frozen=True, slots=True)
class Parsed:
    entry: Entry
    envelope: Envelope
    digest: bytes  # fingerprint of the raw data bytes: equals the content fingerprint for canonical data
    feed: str  # "event|bookmaker", the key of everything stored per feed


@dataclass(frozen=True, slots=True)
class Poison:
    entry: Entry
    reason: str


MarketKey = tuple[str, str]  # (market, specifier): one series of a feed
# A market whose content is new at a snapshot (it changed or appeared), or None: it disappeared there.
Change = tuple[MarketKey, MarketRow | None]
Markets = Mapping[MarketKey, MarketRow]  # a feed's markets as of one snapshot; never changed once built


@dataclass(frozen=True, slots=True)
class Keyed(Decoded):
    """Decoded markets with their mapping by key, which the plan keeps as the feed's markets after it.

    base and changes: the markets of an earlier decode of the feed, when these were decoded as a revision
    of it, and what these change against them, as _changes computes it. Comparing forty markets costs more
    than the rest of a changed snapshot's plan, so when the feed's stored markets are that very mapping
    (an identity test, which the mappings' never changing makes exact), the plan takes the changes.
    """

    after: Markets
    base: Markets | None = None
    changes: tuple[Change, ...] = ()


@dataclass(frozen=True, slots=True)
class FeedState:
    """What is stored for a feed: its newest snapshot and the capture time it was last confirmed at.

    markets is the content of that snapshot's markets, needed only to plan a change: see needs_markets.
    """

    snapshot_id: int | None
    fingerprint: bytes | None
    last_ts_ms: int
    markets: Markets = field(default_factory=dict)


EMPTY_FEED = FeedState(None, None, -1)


@dataclass(slots=True)
class NewSnapshot:
    feed: str
    captured_at_ms: int
    last_confirmed_ms: int
    fingerprint: bytes
    changes: list[Change]  # only the markets that differ from the feed's snapshot before


@dataclass(slots=True)
class Plan:
    inserts: list[NewSnapshot] = field(default_factory=list)
    confirms: dict[int, int] = field(default_factory=dict)  # existing snapshot id -> newest capture ms
    unchanged: int = 0
    stale: list[Parsed] = field(default_factory=list)
    duplicates: list[Parsed] = field(default_factory=list)
    poison: list[Poison] = field(default_factory=list)
    final: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # feed -> (fingerprint, last ts)
    # feed -> its markets after its last insert: what the writer remembers for the next batch
    final_markets: dict[str, Markets] = field(default_factory=dict)


def parse(
    entries: Iterable[Entry], max_entry_bytes: int, max_deliveries: int
) -> tuple[list[Parsed], list[Poison]]:
    parsed: list[Parsed] = []
    poison: list[Poison] = []
    for entry in entries:
        if entry.fields is None:
            continue  # counted as lost by the stream reader; nothing left to parse
        if entry.deliveries > max_deliveries:
            poison.append(Poison(entry, f"delivered {entry.deliveries} times without being acknowledged"))
            continue
        try:
            envelope = parse_envelope(entry.fields, max_entry_bytes)
        except InvalidEntry as exc:
            poison.append(Poison(entry, str(exc)))
            continue
        feed = feed_key(envelope.event, envelope.bookmaker)
        parsed.append(Parsed(entry, envelope, fingerprint(envelope.data), feed))
    return parsed, poison


Decoder = Callable[[Parsed], Decoded]


def needs_markets(parsed: Iterable[Parsed], states: Mapping[str, FeedState], decode: Decoder) -> set[str]:
    """The feeds whose stored markets the plan may compare with: those with an entry that may change them.

    The plan compares markets only from the first entry captured after the stored confirmation whose
    content fingerprint differs from the stored one, so this is a superset of what it compares. The raw
    digest decides first: decoding only when it differs keeps canonical data from being decoded here, and
    non-canonical data that did not change (decoded for the plan in any case) needs no markets.
    """
    feeds = set()
    for p in parsed:
        state = states.get(p.feed, EMPTY_FEED)
        if p.envelope.ts_ms > state.last_ts_ms and p.digest != state.fingerprint:
            try:
                changed = decode(p).fingerprint != state.fingerprint
            except InvalidEntry:
                changed = False  # dead-lettered by the plan
            if changed:
                feeds.add(p.feed)
    return feeds


def plan(parsed: Iterable[Parsed], states: Mapping[str, FeedState], decode: Decoder) -> Plan:
    """Apply each feed's entries in capture-time order to its stored state.

    An entry captured before the feed's last confirmation is stale and changes nothing; one captured at that
    very time is a redelivery or a repeated publish. An entry whose raw digest equals the current
    fingerprint is unchanged without being decoded: that is the fast path.
    """
    result = Plan()
    by_feed: dict[str, list[Parsed]] = {}
    for p in parsed:
        by_feed.setdefault(p.feed, []).append(p)
    for feed, items in by_feed.items():
        items.sort(key=lambda p: p.envelope.ts_ms)
        _plan_feed(feed, items, states.get(feed, EMPTY_FEED), decode, result)
    return result


def _plan_feed(feed: str, items: list[Parsed], state: FeedState, decode: Decoder, result: Plan) -> None:
    current_fp, last_ts = state.fingerprint, state.last_ts_ms
    markets = state.markets
    current_new: NewSnapshot | None = None
    for p in items:
        ts = p.envelope.ts_ms
        if ts < last_ts:
            result.stale.append(p)
            continue
        if ts == last_ts:
            result.duplicates.append(p)
            continue
        if p.digest != current_fp:
            try:
                decoded = decode(p)
            except InvalidEntry as exc:
                result.poison.append(Poison(p.entry, str(exc)))
                continue
            if decoded.fingerprint != current_fp:
                changes, markets = _changes(markets, decoded)
                current_new = NewSnapshot(feed, ts, ts, decoded.fingerprint, changes)
                result.inserts.append(current_new)
                result.final_markets[feed] = markets
                current_fp, last_ts = decoded.fingerprint, ts
                continue
        result.unchanged += 1
        if current_new is not None:
            current_new.last_confirmed_ms = ts
        elif state.snapshot_id is not None:
            result.confirms[state.snapshot_id] = ts
        last_ts = ts
    if current_fp is not None:
        result.final[feed] = (current_fp, last_ts)


def _changes(before: Markets, decoded: Decoded) -> tuple[list[Change], Markets]:
    """What a snapshot of these markets changes against the markets before: a delta, as feeds send them."""
    if isinstance(decoded, Keyed):
        if decoded.base is before:
            return list(decoded.changes), decoded.after
        after = decoded.after
    else:
        after = dict(zip(map(row_key, decoded.markets), decoded.markets))
    keys, rows = list(after), decoded.markets
    olds = list(map(before.get, keys))
    # An unchanged market is usually the very row the decoder handed out before: `is` settles it.
    changes: list[Change] = [
        (key, row) for key, row, old in zip(keys, rows, olds) if old is not row and old != row
    ]
    if len(before) > len(olds) - olds.count(None):  # some market of before is not in after
        changes += [(key, None) for key in before if key not in after]
    return changes, after


def memo_decoder(decode_entry: Decoder) -> Decoder:
    """Decode each distinct data payload once, however many entries of the batch carry it.

    Any other exception from decoding is a decoder bug that this payload triggers. It is turned into the
    entry's dead-letter reason: the daemon must not crash on input, and would crash again on every
    redelivery of the same entry.
    """
    seen: dict[bytes, Decoded | InvalidEntry] = {}

    def decode(p: Parsed) -> Decoded:
        outcome = seen.get(p.digest)
        if outcome is None:
            try:
                outcome = decode_entry(p)
            except InvalidEntry as exc:
                outcome = exc
            except Exception as exc:
                outcome = InvalidEntry(f"data could not be decoded: {type(exc).__name__}: {exc}")
            seen[p.digest] = outcome
        if isinstance(outcome, InvalidEntry):
            raise outcome
        return outcome

    return decode
