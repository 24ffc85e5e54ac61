"""MQTT topics and the batch/ack payloads: shapes, round trips and strict decoding."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st

from contract.bounds import SEQ_MAX
from contract.errors import RemoteError
from contract.protocol import (
    ALL_RECORDS,
    MAX_ACK_BYTES,
    MAX_BATCH,
    Ack,
    Batch,
    Refusal,
    ack_topic,
    decode_ack,
    decode_batch,
    device_of_topic,
    records_topic,
)

# --- topics ---------------------------------------------------------------------------------


def test_topic_shapes() -> None:
    assert records_topic("h0001") == "picket/v1/h0001/up/records"
    assert ack_topic("h0001") == "picket/v1/h0001/down/ack"
    assert ALL_RECORDS == "picket/v1/+/up/records"


@pytest.mark.parametrize("device", ["h0001", "h0001-ab", "H_9.x", "a" * 64])
def test_device_of_topic_round_trips(device: str) -> None:
    assert device_of_topic(records_topic(device)) == device
    assert device_of_topic(ack_topic(device)) == device


@pytest.mark.parametrize(
    "topic",
    [
        "picket/v2/h0001/up/records",  # wrong version
        "pocket/v1/h0001/up/records",  # wrong prefix
        "/picket/v1/h0001/up/records",  # leading slash shifts every level
        "v1/h0001/up/records",
        "picket/v1/h0001",  # missing parts
        "picket/v1",
        "picket",
        "",
        "picket/v1/+/up/records",  # wildcards are not device ids
        "picket/v1/#/up/records",
        "picket/v1/#",
        "picket/v1/h00+1/up/records",
        "picket/v1//up/records",  # empty device id
        "picket/v1/-h0001/up/records",  # must start with a letter or digit
        "picket/v1/h 0001/up/records",
        "picket/v1/" + "a" * 65 + "/up/records",  # longer than 64 characters
    ],
)
def test_device_of_topic_refuses(topic: str) -> None:
    with pytest.raises(RemoteError):
        device_of_topic(topic)


def test_device_of_topic_refuses_a_device_id_ending_in_newline() -> None:
    with pytest.raises(RemoteError):
        device_of_topic("picket/v1/h0001\n/up/records")


# --- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "batch",
    [
        Batch(0, ()),
        Batch(1, (b"\xd2\x84record",)),
        Batch(2**32, (b"", b"a" * 200, bytes(range(256)))),
        Batch(7, tuple(bytes([i]) for i in range(MAX_BATCH))),
    ],
)
def test_batch_round_trip(batch: Batch) -> None:
    assert decode_batch(batch.encode()) == batch


@pytest.mark.parametrize(
    "ack",
    [
        Ack(0, (), ()),
        Ack(1, (1, 2, 3), ()),
        Ack(2, (), ((5, Refusal.MALFORMED),)),
        Ack(3, (10, 12), tuple((s, r) for s, r in zip((11, 13, 14, 15, 16), Refusal, strict=True))),
        Ack(2**40, (2**40,), ((0, Refusal.WRONG_DEVICE),)),
    ],
)
def test_ack_round_trip(ack: Ack) -> None:
    decoded = decode_ack(ack.encode())
    assert decoded == ack
    assert all(isinstance(r, Refusal) for _s, r in decoded.refused)


@pytest.mark.parametrize("reason", list(Refusal))
def test_ack_carries_each_refusal_reason(reason: Refusal) -> None:
    assert decode_ack(Ack(9, (), ((4, reason),)).encode()).refused == ((4, reason),)


def test_ack_without_stored_or_refused_keys() -> None:
    assert decode_ack(cbor2.dumps({1: 5})) == Ack(5, (), ())


# --- strict decoding ------------------------------------------------------------------------

MALFORMED = {
    "not CBOR": b"\xff\xff",
    "empty": b"",
    "truncated": cbor2.dumps({1: 1, 2: [b"abc"]})[:-1],
    "trailing bytes": cbor2.dumps({1: 1, 2: [], 3: []}) + b"\x00",
    "array instead of map": cbor2.dumps([1, []]),
    "duplicate key": b"\xa2\x01\x01\x01\x02",
}


@pytest.mark.parametrize("name", MALFORMED)
def test_decoders_refuse_malformed_or_non_map_cbor(name: str) -> None:
    with pytest.raises(RemoteError, match=r"^batch: "):
        decode_batch(MALFORMED[name])
    with pytest.raises(RemoteError, match=r"^ack: "):
        decode_ack(MALFORMED[name])


BAD_BATCHES = {
    "missing batch id": ({2: []}, "batch id"),
    "negative batch id": ({1: -1, 2: []}, "batch id"),
    "bool batch id": ({1: True, 2: []}, "batch id"),
    "text batch id": ({1: "1", 2: []}, "batch id"),
    "records missing": ({1: 1}, "key 2"),
    "records is bytes": ({1: 1, 2: b"\xd2"}, "key 2"),
    "records is a map": ({1: 1, 2: {0: b""}}, "key 2"),
    "record is text": ({1: 1, 2: [b"ok", "not bytes"]}, "key 2"),
    "record is int": ({1: 1, 2: [1]}, "key 2"),
    "too many records": ({1: 1, 2: [b""] * (MAX_BATCH + 1)}, str(MAX_BATCH)),
}


@pytest.mark.parametrize("name", BAD_BATCHES)
def test_decode_batch_refuses(name: str) -> None:
    value, word = BAD_BATCHES[name]
    with pytest.raises(RemoteError, match=word):
        decode_batch(cbor2.dumps(value))


BAD_ACKS = {
    "missing batch id": ({2: [1]}, "batch id"),
    "negative batch id": ({1: -1}, "batch id"),
    "bool batch id": ({1: False}, "batch id"),
    "stored not an array": ({1: 1, 2: 5}, "key 2"),
    "stored contains a negative": ({1: 1, 2: [1, -2]}, "key 2"),
    "stored contains a string": ({1: 1, 2: [1, "2"]}, "key 2"),
    "stored contains a bool": ({1: 1, 2: [True]}, "key 2"),
    "refused not an array": ({1: 1, 3: {1: 1}}, "key 3"),
    "refused pair of one": ({1: 1, 3: [[1]]}, "key 3"),
    "refused triple": ({1: 1, 3: [[1, 1, 1]]}, "key 3"),
    "refused item not an array": ({1: 1, 3: [1]}, "key 3"),
    "refused negative seq": ({1: 1, 3: [[-1, 1]]}, "key 3"),
    "refused text reason": ({1: 1, 3: [[1, "malformed"]]}, "key 3"),
    "unknown reason 0": ({1: 1, 3: [[1, 0]]}, "reason 0"),
    "unknown reason 99": ({1: 1, 3: [[1, 99]]}, "reason 99"),
}


@pytest.mark.parametrize("name", BAD_ACKS)
def test_decode_ack_refuses(name: str) -> None:
    value, word = BAD_ACKS[name]
    with pytest.raises(RemoteError, match=word):
        decode_ack(cbor2.dumps(value))


def test_decode_ack_refuses_a_reason_too_long_to_print() -> None:
    # Fuzz reproducer: a refusal reason of 6,021 digits. str() of it raises ValueError
    # (Python's 4,300-digit limit); the message must quote it briefly instead.
    with pytest.raises(RemoteError, match="unknown refusal reason an integer of about 6021 digits"):
        decode_ack(cbor2.dumps({1: 1, 3: [[1, 2**20000]]}))
    with pytest.raises(RemoteError, match="unknown refusal reason -1"):
        decode_ack(cbor2.dumps({1: 1, 3: [[1, -1]]}))


def test_decode_ack_refuses_an_oversized_ack_before_decoding_it() -> None:
    # A header claiming 2**32 items decodes nothing: the size is refused first.
    with pytest.raises(RemoteError, match=f"at most {MAX_ACK_BYTES}"):
        decode_ack(b"\x9b" + b"\xff" * 8 + bytes(MAX_ACK_BYTES))


# --- fuzz: decoders either return a value or raise RemoteError (h11's invariant) ------------

CBOR_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(min_value=-2, max_value=5), children, max_size=5)
    ),
    max_leaves=30,
)


def _decode_or_remote_error(data: bytes) -> None:
    for decode in (decode_batch, decode_ack):
        try:
            result = decode(data)
        except RemoteError:
            continue
        assert isinstance(result, Batch | Ack)


@given(st.binary(max_size=256))
def test_decoders_on_arbitrary_bytes(data: bytes) -> None:
    _decode_or_remote_error(data)


@given(CBOR_VALUES)
def test_decoders_on_arbitrary_cbor(value: object) -> None:
    _decode_or_remote_error(cbor2.dumps(value))


@given(st.integers(min_value=0, max_value=SEQ_MAX), st.lists(st.binary(max_size=40)))
def test_batch_round_trip_property(bid: int, records: list[bytes]) -> None:
    batch = Batch(bid, tuple(records[:MAX_BATCH]))
    assert decode_batch(batch.encode()) == batch


@given(
    st.integers(min_value=0, max_value=SEQ_MAX),
    st.lists(st.integers(min_value=0, max_value=SEQ_MAX), max_size=20),
    st.lists(
        st.tuples(st.integers(min_value=0, max_value=SEQ_MAX), st.sampled_from(Refusal)),
        max_size=20,
    ),
)
def test_ack_round_trip_property(
    bid: int, stored: list[int], refused: list[tuple[int, Refusal]]
) -> None:
    ack = Ack(bid, tuple(stored), tuple(refused))
    assert decode_ack(ack.encode()) == ack
