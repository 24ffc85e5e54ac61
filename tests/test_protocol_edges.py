"""Acknowledgements at their size limits (contract/protocol.py), found by the mutation
benchmark (bench/mutation.py; docs/testing.md): an ack may settle every record of the
largest batch, stored or refused, and not one more.
"""

from __future__ import annotations

import cbor2
import pytest

from contract.errors import RemoteError
from contract.protocol import MAX_ACK_BYTES, MAX_BATCH, Ack, Refusal, decode_ack, device_of_topic


def test_an_ack_storing_a_whole_largest_batch_is_read() -> None:
    ack = Ack(9, tuple(range(1, MAX_BATCH + 1)), ())
    assert decode_ack(ack.encode()) == ack
    with pytest.raises(RemoteError, match=str(MAX_BATCH)):
        decode_ack(cbor2.dumps({1: 9, 2: list(range(1, MAX_BATCH + 2))}))


def test_an_ack_refusing_a_whole_largest_batch_is_read() -> None:
    ack = Ack(9, (), tuple((s, Refusal.MALFORMED) for s in range(1, MAX_BATCH + 1)))
    assert decode_ack(ack.encode()) == ack
    too_many = [[s, int(Refusal.MALFORMED)] for s in range(1, MAX_BATCH + 2)]
    with pytest.raises(RemoteError, match=str(MAX_BATCH)):
        decode_ack(cbor2.dumps({1: 9, 3: too_many}))


def _ack_of_size(size: int) -> bytes:
    """An ack of exactly `size` bytes: key 9, which an ack does not use, as padding."""
    pad = size
    for _ in range(4):
        data = cbor2.dumps({1: 9, 2: [1], 9: b"\x00" * pad})
        if len(data) == size:
            return data
        pad += size - len(data)
    raise AssertionError(size)


def test_an_ack_of_exactly_max_ack_bytes_is_read_and_one_byte_more_is_not() -> None:
    assert decode_ack(_ack_of_size(MAX_ACK_BYTES)) == Ack(9, (1,), ())
    with pytest.raises(RemoteError, match=str(MAX_ACK_BYTES)):
        decode_ack(_ack_of_size(MAX_ACK_BYTES + 1))


@pytest.mark.parametrize(
    ("topic", "device"),
    [("picket/v1/h0001/up/records", "h0001"), ("picket/v1/d-7/x", "d-7")],
)
def test_the_device_is_the_third_level_of_any_picket_topic_below_it(
    topic: str, device: str
) -> None:
    assert device_of_topic(topic) == device


@pytest.mark.parametrize("topic", ["picket/v1/h0001", "picket/v2/h0001/up", "other/v1/h0001/up"])
def test_a_topic_without_a_level_below_the_device_names_no_device(topic: str) -> None:
    with pytest.raises(RemoteError, match="topic"):
        device_of_topic(topic)
