"""Gateway <-> GameServer batch format: many records per ZeroMQ message.

A batch that does not parse means a bug or a foreign peer, so it must fail loudly
(MalformedBatch) instead of yielding a half-read record.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.internal import (
    NO_SOCKET,
    RECORD_HEADER_SIZE,
    BatchWriter,
    Kind,
    MalformedBatch,
    Record,
    gameserver_routing_id,
    gateway_routing_id,
    iter_records,
    pack_record,
    pack_reroute,
    unpack_reroute,
)

records = st.builds(
    Record,
    st.sampled_from(list(Kind)) | st.integers(0, 255),
    st.binary(min_size=16, max_size=16),
    st.integers(0, 2**64 - 1),
    st.binary(max_size=200),
)


def write(batch_records: list[Record]) -> bytes:
    writer = BatchWriter()
    for record in batch_records:
        writer.add(*record)
    return writer.take()


@given(st.lists(records, max_size=30))
def test_batch_round_trip(batch_records: list[Record]) -> None:
    assert list(iter_records(write(batch_records))) == batch_records


@given(st.lists(records, max_size=10))
def test_writer_matches_pack_record(batch_records: list[Record]) -> None:
    assert write(batch_records) == b"".join(pack_record(*r) for r in batch_records)


def test_writer_is_empty_after_take() -> None:
    writer = BatchWriter()
    assert not writer
    writer.add(Kind.FRAME, b"s" * 16, 5, b"body")
    writer.add(Kind.CLOSED, b"t" * 16, 0, b"")
    assert writer
    assert writer.records == 2
    first = writer.take()
    assert not writer
    assert writer.records == 0
    assert writer.take() == b""
    writer.add(Kind.HELLO, NO_SOCKET, 0, b"{}")
    assert list(iter_records(writer.take())) == [Record(Kind.HELLO, NO_SOCKET, 0, b"{}")]
    assert len(list(iter_records(first))) == 2


def test_empty_batch_has_no_records() -> None:
    assert list(iter_records(b"")) == []


@given(st.lists(records, min_size=1, max_size=5), st.data())
def test_truncated_batch_raises(batch_records: list[Record], data: st.DataObject) -> None:
    batch = write(batch_records)
    boundaries = {0}
    offset = 0
    for record in batch_records:
        offset += RECORD_HEADER_SIZE + len(record.body)
        boundaries.add(offset)
    cut = data.draw(st.integers(1, len(batch) - 1).filter(lambda c: c not in boundaries))
    with pytest.raises(MalformedBatch):
        list(iter_records(batch[:cut]))


def test_every_truncation_of_a_batch_raises() -> None:
    batch_records = [
        Record(Kind.FRAME, b"a" * 16, 1, b"hello"),
        Record(Kind.SEND, b"b" * 16, 2**64 - 1, b""),
        Record(Kind.PIN, b"c" * 16, 7, b"gs-1"),
    ]
    batch = write(batch_records)
    boundaries = {0, RECORD_HEADER_SIZE + 5, 2 * RECORD_HEADER_SIZE + 5, len(batch)}
    for cut in range(len(batch)):
        if cut in boundaries:
            assert len(list(iter_records(batch[:cut]))) == sorted(boundaries).index(cut)
            continue
        with pytest.raises(MalformedBatch):
            list(iter_records(batch[:cut]))


def test_body_length_overrunning_the_batch_raises() -> None:
    batch = pack_record(Kind.FRAME, b"x" * 16, 0, b"abc")
    lying = batch[: RECORD_HEADER_SIZE - 4] + (1000).to_bytes(4, "big") + batch[RECORD_HEADER_SIZE:]
    with pytest.raises(MalformedBatch):
        list(iter_records(lying))


def test_records_before_the_damage_are_yielded_first() -> None:
    good = pack_record(Kind.FRAME, b"x" * 16, 0, b"abc")
    records_seen: list[Record] = []
    with pytest.raises(MalformedBatch):
        for record in iter_records(good + good[:5]):
            records_seen.append(record)
    assert records_seen == [Record(Kind.FRAME, b"x" * 16, 0, b"abc")]


def test_malformed_batch_is_a_value_error() -> None:
    assert issubclass(MalformedBatch, ValueError)


def test_routing_ids_are_distinct_per_role_and_node() -> None:
    assert gateway_routing_id(1, "ab12") == b"gw-1-ab12"
    assert gameserver_routing_id(1) == b"gs-1"
    ids = {gateway_routing_id(n, "x") for n in range(1, 100)} | {
        gameserver_routing_id(n) for n in range(1, 100)
    }
    assert len(ids) == 198
    # Two Gateway replicas sharing GATEWAY_NODE_ID still have distinct routes.
    assert gateway_routing_id(1, "aaaa") != gateway_routing_id(1, "bbbb")


def test_kind_numbers_are_stable() -> None:
    # Mixed-version Gateways and GameServers must agree on these during a rolling update.
    assert {k.name: k.value for k in Kind} == {
        "FRAME": 1, "CLOSED": 2, "HELLO": 3, "HOLD_ACK": 4,
        "SEND": 10, "PIN": 11, "CLOSE": 12, "HELLO_ACK": 13, "HOLD": 14, "REROUTE": 15,
    }


@given(st.binary(min_size=1, max_size=255), st.binary(max_size=200))
def test_reroute_body_round_trip(target: bytes, frame: bytes) -> None:
    assert unpack_reroute(pack_reroute(target, frame)) == (target, frame)


def test_reroute_body_too_short() -> None:
    with pytest.raises(MalformedBatch):
        unpack_reroute(b"")
    with pytest.raises(MalformedBatch):
        unpack_reroute(bytes((5,)) + b"gs")
