"""Bad input: entries that break the wire format, written between good ones, some by hand with redis-cli.

Each bad entry must be dead-lettered exactly once with a reason a person can act on, the good entries read
in the same batch must be stored, and the consumer must keep running.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import cast

import msgpack
import pytest

from shared.keys import shard_of
from shared.wire import Market, Snapshot, encode
from tests.faults.harness import TS0, FaultRun, RunConfig
from tests.support import dead_letters

pytestmark = pytest.mark.faults

BOOKMAKER = "sportybet"
Fields = dict[str, bytes]


def data(markets: object) -> bytes:
    return msgpack.packb({"markets": markets}, use_bin_type=True)  # type: ignore[no-any-return]


def one_market(odds: object) -> bytes:
    return data([{"market": "1X2", "specifier": "", "outcomes": {"1": odds, "X": 3.2, "2": 3.9}}])


def header(event: str, ts: int) -> Fields:
    return {"v": b"1", "event": event.encode(), "bookmaker": BOOKMAKER.encode(), "ts": str(ts).encode()}


def without(fields: Fields, name: str) -> Fields:
    return {k: v for k, v in fields.items() if k != name}


# (name, fields, a phrase the dead-letter reason must contain); each case has a feed of its own
def bad_entries(ts: int) -> list[tuple[str, Fields, str]]:
    def h(name: str) -> Fields:
        return header(f"sr:match:bad-{name}", ts)

    return [
        ("undecodable msgpack", {**h("msgpack"), "data": b"\xc1\xc1\xc1"}, "not valid msgpack"),
        ("missing ts", without({**h("no-ts"), "data": one_market(2.1)}, "ts"), "missing field 'ts'"),
        ("missing data", h("no-data"), "missing field 'data'"),
        (
            "ts not a number",
            {**h("ts-text"), "ts": b"tomorrow", "data": one_market(2.1)},
            "integer milliseconds",
        ),
        (
            "ts in seconds",
            {**h("ts-s"), "ts": str(ts // 1000).encode(), "data": one_market(2.1)},
            "in seconds",
        ),
        ("odds as text", {**h("odds-text"), "data": one_market("2.5")}, "must be a number, not str"),
        ("markets not a list", {**h("markets-map"), "data": data({"1X2": 1})}, "must be a list"),
        ("NaN odds", {**h("nan"), "data": one_market(float("nan"))}, "must be finite"),
        ("infinite odds", {**h("inf"), "data": one_market(float("inf"))}, "must be finite"),
        ("negative odds", {**h("negative"), "data": one_market(-2.0)}, "from 1.0 to"),
        ("10 MB entry", {**h("huge"), "data": msgpack.packb(b"x" * 10_000_000)}, "over the limit"),
        ("unknown v", {**h("v2"), "v": b"2", "data": one_market(2.1)}, "unsupported wire version"),
        # Python's int() refuses over 4,300 digits with a plain ValueError; fewer still overflow a float.
        ("ts of 5,000 digits", {**h("ts-5000"), "ts": b"1" * 5000, "data": one_market(2.1)}, "digits"),
        ("ts of 400 digits", {**h("ts-400"), "ts": b"9" * 400, "data": one_market(2.1)}, "digits"),
        (
            "outcome named twice (text and bin)",
            {
                **h("twice"),
                "data": data([{"market": "1X2", "specifier": "", "outcomes": {"1": 2.0, b"1": 2.1}}]),
            },
            "twice",
        ),
    ]


def good_hand_made(ts: int) -> list[tuple[Snapshot, Fields]]:
    """Entries another publisher might write: valid, though not as our producer writes them."""
    snap = Snapshot(
        "sr:match:extra-fields", BOOKMAKER, ts, (Market("1X2", "", {"1": 2.0, "X": 3.1, "2": 3.5}),)
    )
    # Wire format v1 ignores unknown fields, at the top and inside the data: new publishers may add some.
    extra = {
        **header(snap.event, ts),
        "trace_id": b"abc-123",
        "data": msgpack.packb(
            {
                "markets": [
                    {"market": "1X2", "specifier": "", "outcomes": {"1": 2.0, "X": 3.1, "2": 3.5}, "note": 1}
                ],
                "source": "scraper-7",
            },
            use_bin_type=True,
        ),
    }
    bin_snap = Snapshot(
        "sr:match:bin-keys", BOOKMAKER, ts, (Market("1X2", "", {"1": 1.9, "X": 3.3, "2": 4.0}),)
    )
    # Outcome names sent as msgpack bin rather than str: readable text all the same.
    bin_keys = {
        **header(bin_snap.event, ts),
        "data": data([{"market": "1X2", "specifier": "", "outcomes": {b"1": 1.9, b"X": 3.3, b"2": 4.0}}]),
    }
    return [(snap, extra), (bin_snap, bin_keys)]


def xadd(run: FaultRun, stream: str, fields: Fields) -> bytes:
    return cast(bytes, run.client.xadd(stream, dict(fields)))  # type: ignore[arg-type]


def redis_cli(port: int, *args: str, stdin: bytes | None = None) -> bytes:
    result = subprocess.run(
        ["redis-cli", "-p", str(port), *(["-x"] if stdin is not None else []), *args],
        input=stdin,
        capture_output=True,
        check=True,
        timeout=30,
    )
    return result.stdout.strip()


def test_bad_entries_are_dead_lettered_once_and_their_batch_neighbours_stored(tmp_path: Path) -> None:
    config = RunConfig(consumers=1)
    with FaultRun("bad input: 18 kinds, 4 by redis-cli", tmp_path, config) as run:
        # Given good cycles with bad entries between them, some written by hand with redis-cli, all waiting
        # in the stream before the consumer starts, so that bad and good ones share batches
        ts = TS0 + 500
        shards = run.keys.shards
        run.publish_cycles(1)
        for n in range(shards):
            run.client.xgroup_create(run.keys.shard(n), run.keys.group, id="0", mkstream=True)
        # Entry ids are per stream: two shards can hand out the same one.
        expected_reason: dict[tuple[str, bytes], tuple[str, str]] = {}
        for name, fields, reason in bad_entries(ts):
            event = fields.get("event", b"").decode()
            stream = run.keys.shard(shard_of(event, BOOKMAKER, shards))
            expected_reason[stream, xadd(run, stream, fields)] = (name, reason)
        for snap, fields in good_hand_made(ts):
            xadd(run, run.keys.shard(shard_of(snap.event, BOOKMAKER, shards)), fields)
            run.accepted.append(snap)
        run.publish_cycles(1)
        port, shard0 = run.redis.port, run.keys.shard(0)
        by_hand = [
            (
                "redis-cli: data not msgpack",
                [
                    "v",
                    "1",
                    "event",
                    "sr:match:cli-1",
                    "bookmaker",
                    BOOKMAKER,
                    "ts",
                    str(ts),
                    "data",
                    "not msgpack",
                ],
                "not valid msgpack",
            ),
            ("redis-cli: no wire fields", ["hello", "world"], "missing field 'v'"),
            (
                "redis-cli: bookmaker not a slug",
                ["v", "1", "event", "sr:match:cli-3", "bookmaker", "Bet 9ja", "ts", str(ts), "data", "x"],
                "not a slug",
            ),
        ]
        for name, args, reason in by_hand:
            expected_reason[shard0, redis_cli(port, "XADD", shard0, "*", *args)] = (name, reason)
        # A hand-written entry that is valid: its binary data comes through stdin (-x)
        cli_ok = Snapshot(
            "sr:match:cli-ok", BOOKMAKER, ts, (Market("1X2", "", {"1": 1.5, "X": 4.0, "2": 6.0}),)
        )
        cli_fields = encode(cli_ok)
        cli_args = [a for k, v in cli_fields.items() if k != "data" for a in (k, v.decode())]
        redis_cli(
            port,
            "XADD",
            run.keys.shard(shard_of(cli_ok.event, BOOKMAKER, shards)),
            "*",
            *cli_args,
            "data",
            stdin=cli_fields["data"],
        )
        run.accepted.append(cli_ok)
        run.publish_cycles(2)

        # When one consumer works through them
        consumer = run.start_consumer("c0")
        drained, note = run.wait_drained(120.0)
        alive = consumer.alive()
        letters = cast(list[tuple[bytes, dict[bytes, bytes]]], dead_letters(run.client, run.keys))
        row = run.finish()

    # Then the consumer is still running, and each bad entry is dead-lettered exactly once, with its reason
    assert drained, note
    assert alive, f"the consumer died; see {consumer.log_path}"
    seen: dict[tuple[str, bytes], list[str]] = {}
    for _, letter in letters:
        seen.setdefault((letter[b"dead_source_stream"].decode(), letter[b"dead_source_id"]), []).append(
            letter[b"dead_reason"].decode()
        )
    for entry_id, (name, phrase) in expected_reason.items():
        reasons = seen.get(entry_id, [])
        assert len(reasons) == 1, f"{name}: dead-lettered {len(reasons)} times"
        assert phrase in reasons[0], f"{name}: reason {reasons[0]!r} does not say {phrase!r}"
        print(f"{name:38} -> {reasons[0][:100]}")
    assert set(seen) == set(expected_reason), "a good entry was dead-lettered"
    # And the good entries around them, hand-made ones included, are stored exactly, some of them in the
    # very batches that held the bad ones
    batches = [json.loads(line) for line in consumer.log_text().splitlines() if '"batch_committed"' in line]
    mixed = [b for b in batches if b.get("dead_lettered") and (b.get("changed") or b.get("unchanged"))]
    assert mixed, "no batch held both bad and good entries"
    assert row.passed, row.details()
    assert row.dead_lettered == len(expected_reason), row.details()
