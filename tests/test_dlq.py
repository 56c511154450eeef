"""Dead-letter tools on the real Redis: list, replay (to the right shard, exactly once) and purge."""

from __future__ import annotations

import json

import pytest
import redis

from consumer.__main__ import main
from consumer.dlq import DeadLetters, Selection
from shared.keys import Keys, shard_of
from shared.settings import Settings
from shared.wire import Market, Snapshot, encode
from tests.support import connection_flags, counters, dead_letter, dead_letters


def snapshot_fields(event: str, bookmaker: str = "sportybet") -> dict[bytes, bytes]:
    snap = Snapshot(event, bookmaker, 1_795_000_000_000, (Market("1X2", "", {"1": 2.1, "X": 3.2, "2": 3.9}),))
    return {k.encode(): v for k, v in encode(snap).items()}


def cli(settings: Settings, action: str, *extra: str) -> list[str]:
    return ["dlq", action, *connection_flags(settings), *extra]


def test_list_shows_reason_source_deliveries_and_a_readable_preview(client: redis.Redis, keys: Keys) -> None:
    # Given a dead letter of a real snapshot entry
    fields = snapshot_fields("sr:match:7")
    dead_letter(client, keys, fields, "odds out of range", source_id=b"42-0", deliveries=3)
    # When the dead letters are listed
    [letter] = [d.as_dict() for d in DeadLetters(client, keys).scan()]
    # Then the reason, source and deliveries are there, and the msgpack data is shown decoded
    assert (letter["reason"], letter["source_id"], letter["deliveries"]) == ("odds out of range", "42-0", 3)
    assert letter["source_stream"] == keys.shard(0)
    assert "event=sr:match:7" in letter["preview"] and "1 markets [1X2/" in letter["preview"]


def test_list_preview_survives_data_that_is_not_msgpack(client: redis.Redis, keys: Keys) -> None:
    # Given a dead letter whose data is garbage
    dead_letter(client, keys, {b"v": b"1", b"data": b"\xc1\xc1\xc1"}, "data is not valid msgpack")
    # When listed, then the preview says so instead of failing
    [letter] = DeadLetters(client, keys).scan()
    assert "not msgpack" in letter.as_dict()["preview"]


def test_replay_puts_the_entry_back_on_its_feeds_shard_without_dead_fields(
    client: redis.Redis, keys: Keys
) -> None:
    # Given dead letters of several feeds
    events = [f"sr:match:{i}" for i in range(6)]
    for event in events:
        dead_letter(client, keys, snapshot_fields(event), "postgres rejected the data")
    # When all are replayed
    result = DeadLetters(client, keys).replay(Selection())
    # Then each is on the shard its feed hashes to, with exactly its original fields, and the DLQ is empty
    assert len(result.replayed) == len(events)
    for event in events:
        shard = keys.shard(shard_of(event, "sportybet", keys.shards))
        found = [f for _, f in client.xrange(shard) if f[b"event"] == event.encode()]
        assert found == [snapshot_fields(event)]
    assert len(dead_letters(client, keys)) == 0
    assert counters(client, keys).get("replayed", 0) == len(events)


def test_replaying_the_same_dead_letter_twice_publishes_it_once(client: redis.Redis, keys: Keys) -> None:
    # Given one dead letter, selected by id
    dead_id = dead_letter(client, keys, snapshot_fields("sr:match:1"), "bad")
    shard = keys.shard(shard_of("sr:match:1", "sportybet", keys.shards))
    letters = DeadLetters(client, keys)
    # When it is replayed, and replayed again (a retried command)
    first = letters.replay(Selection(ids=(dead_id,)))
    second = letters.replay(Selection(ids=(dead_id,)))
    # Then it was published once only
    assert list(first.replayed) == [dead_id] and not second.replayed
    assert client.xlen(shard) == 1


def test_replay_of_a_letter_already_taken_publishes_nothing(client: redis.Redis, keys: Keys) -> None:
    # Given two operators who listed the same dead letter, and the first one replayed it
    dead_id = dead_letter(client, keys, snapshot_fields("sr:match:1"), "bad")
    listed = list(DeadLetters(client, keys).scan())
    DeadLetters(client, keys).replay(Selection())
    # When the second operator replays what they listed
    second = DeadLetters(client, keys)
    gone = [letter.id for letter in listed if not second.replay(Selection(ids=(letter.id,))).replayed]
    # Then nothing more is published
    assert gone == [dead_id]
    assert sum(client.xlen(s) for s in keys.all_shards()) == 1


def test_replay_by_reason_and_unreadable_feeds_go_to_shard_zero(client: redis.Redis, keys: Keys) -> None:
    # Given a letter with an unreadable event, one with another reason, and one with no fields left
    odd = {b"v": b"1", b"event": b"\xff\xfe", b"bookmaker": b"x", b"ts": b"1", b"data": b"\x80"}
    dead_letter(client, keys, odd, "event is not UTF-8")
    other = dead_letter(client, keys, snapshot_fields("sr:match:2"), "odds out of range")
    empty = dead_letter(client, keys, None, "event is not UTF-8 either")
    # When letters whose reason mentions UTF-8 are replayed
    result = DeadLetters(client, keys).replay(Selection(reason="utf-8"))
    # Then the unreadable one went to shard 0, the empty one is kept, and the other reason is untouched
    assert len(result.replayed) == 1 and result.empty == [empty]
    assert [f for _, f in client.xrange(keys.shard(0))] == [odd]
    assert {d.id for d in DeadLetters(client, keys).scan()} == {other, empty}


def test_purge_asks_first_and_deletes_only_the_selection(
    settings: Settings, client: redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given three dead letters
    ids = [dead_letter(client, keys, snapshot_fields(f"sr:{i}"), f"reason {i}") for i in range(3)]
    # When purge runs without --yes and no terminal to ask on, then it refuses and deletes nothing
    assert main(cli(settings, "purge", "--all")) != 0
    assert len(dead_letters(client, keys)) == len(ids)
    # When one id is purged with --yes, then only that one is gone
    assert main(cli(settings, "purge", ids[1], "--yes")) == 0
    assert [d.id for d in DeadLetters(client, keys).scan()] == [ids[0], ids[2]]
    # When everything is purged, then the stream is empty
    capsys.readouterr()
    assert main(cli(settings, "purge", "--all", "--yes")) == 0
    assert json.loads(capsys.readouterr().out) == {"purged": len(ids) - 1}
    assert len(dead_letters(client, keys)) == 0


def test_cli_list_and_replay_need_an_explicit_selection(
    settings: Settings, client: redis.Redis, keys: Keys, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given two dead letters
    ids = [dead_letter(client, keys, snapshot_fields(f"sr:{i}"), "bad") for i in range(2)]
    # When listed as JSON, then both are shown
    assert main(cli(settings, "list", "--json")) == 0
    assert [d["id"] for d in json.loads(capsys.readouterr().out)] == ids
    # When replay is asked with no selection, then it refuses; with --all it replays both
    assert main(cli(settings, "replay")) != 0
    assert len(dead_letters(client, keys)) == len(ids)
    capsys.readouterr()
    assert main(cli(settings, "replay", "--all")) == 0
    assert sorted(json.loads(capsys.readouterr().out)["replayed"]) == ids
