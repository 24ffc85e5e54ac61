"""The chunk protocol of attachments (contract/attachments.py, docs/events.md): chunks,
questions and the center's answers, encoded and decoded, every bound one step either side,
hostile messages refused naming the key, and the device's chunking from an offset (resume).

Bounds are written here from docs/events.md (64 KiB a chunk, 4 MiB an attachment), not read
from the code under test; the CRC-32 is checked against the standard's check value
(CRC-32/ISO-HDLC of "123456789" is 0xCBF43926); topics against paho's own wildcard matcher.
"""

from __future__ import annotations

import hashlib
import re

import cbor2
import pytest
from hypothesis import given
from hypothesis import strategies as st
from paho.mqtt.client import topic_matches_sub

from contract.attachments import (
    CHUNK_DEFAULT,
    AttachmentState,
    Chunk,
    CrcMismatch,
    Question,
    Status,
    chunks,
    decode_status,
    decode_upload,
)
from contract.errors import RemoteError
from contract.protocol import (
    ALL_ATTACHMENTS,
    attachment_state_topic,
    attachment_topic,
    device_of_topic,
)

KIB, MIB = 1024, 1024 * 1024
PHOTO = bytes(range(256)) * 1200  # 300 kB
DIGEST = hashlib.sha256(PHOTO).digest()


def chunk_map(**changes: object) -> dict[int, object]:
    data = PHOTO[32 * KIB : 64 * KIB]
    m: dict[int, object] = {1: DIGEST, 2: 32 * KIB, 3: len(PHOTO), 4: data,
                            5: Chunk.of(DIGEST, 0, 1, data).crc}  # fmt: skip
    names = {"digest": 1, "offset": 2, "size": 3, "data": 4, "crc": 5}
    for name, v in changes.items():
        if v is None:
            m.pop(names[name], None)
        else:
            m[names[name]] = v
    return m


def test_the_crc_is_the_standard_crc_32() -> None:
    assert Chunk.of(DIGEST, 0, 9, b"123456789").crc == 0xCBF43926


def test_a_chunk_a_question_and_a_status_round_trip() -> None:
    chunk = Chunk.of(DIGEST, 32 * KIB, len(PHOTO), PHOTO[32 * KIB : 64 * KIB])
    assert decode_upload(chunk.encode()) == chunk
    for q in (Question(DIGEST, None, len(PHOTO)), Question(DIGEST, 65_536, len(PHOTO))):
        assert decode_upload(q.encode()) == q
    for s in (
        Status(DIGEST, 65_536, AttachmentState.PARTIAL),
        Status(DIGEST, len(PHOTO), AttachmentState.COMPLETE),
        Status(DIGEST, 0, AttachmentState.UNKNOWN),
        Status(DIGEST, 32_768, AttachmentState.REFUSED, "chunk at offset 32768: CRC-32"),
    ):
        assert decode_status(s.encode()) == s


def test_the_wire_keys_are_those_of_the_document() -> None:
    chunk = Chunk.of(DIGEST, 0, len(PHOTO), b"abc")
    assert cbor2.loads(chunk.encode()) == {1: DIGEST, 2: 0, 3: len(PHOTO), 4: b"abc",
                                           5: 0x352441C2}  # fmt: skip
    assert cbor2.loads(Question(DIGEST, None, 7).encode()) == {1: DIGEST, 3: 7}
    refused = Status(DIGEST, 5, AttachmentState.REFUSED, "digest does not match")
    assert cbor2.loads(refused.encode()) == {1: DIGEST, 2: 5, 3: 2, 4: "digest does not match"}
    assert [int(s) for s in AttachmentState] == [0, 1, 2, 3]


def test_a_damaged_chunk_is_refused_naming_the_offset_and_the_attachment() -> None:
    m = chunk_map()
    data = m[4]
    assert isinstance(data, bytes)
    m[4] = data[:100] + bytes([data[100] ^ 1]) + data[101:]
    with pytest.raises(CrcMismatch) as caught:
        decode_upload(cbor2.dumps(m))
    err = caught.value
    assert str(err) == f"chunk at offset 32768 of {DIGEST[:6].hex()}: CRC-32 does not match"
    assert (err.digest, err.offset, err.size) == (DIGEST, 32 * KIB, len(PHOTO))
    assert isinstance(err, RemoteError)


def _with_data(offset: int, n: int, size: int) -> dict[int, object]:
    data = bytes(n)
    return chunk_map(offset=offset, size=size, data=data, crc=Chunk.of(DIGEST, 0, 1, data).crc)


# (a message at the bound, one step past, what the refusal must say)
UPLOAD_BOUNDS: list[tuple[dict[int, object], dict[int, object], str]] = [
    (_with_data(0, 64 * KIB, 4 * MIB), _with_data(0, 64 * KIB + 1, 4 * MIB), "key 4 (data)"),
    (_with_data(0, 1, 4 * MIB), _with_data(0, 0, 4 * MIB), "key 4 (data)"),
    (_with_data(0, 10, 4 * MIB), _with_data(0, 10, 4 * MIB + 1), "key 3 (size)"),
    (_with_data(0, 1, 1), _with_data(0, 1, 0), "key 3 (size)"),
    (_with_data(90, 10, 100), _with_data(91, 10, 100), "10 bytes at offset 91 end past the size"),
    (_with_data(4 * MIB - 1, 1, 4 * MIB), _with_data(4 * MIB + 1, 1, 4 * MIB), "key 2 (offset)"),
    (chunk_map(crc=None, data=None), chunk_map(data=None), "key 5 (crc) comes only with key 4"),
    (chunk_map(offset=len(PHOTO), crc=None, data=None),
     chunk_map(offset=len(PHOTO) + 1, crc=None, data=None), "key 2 (offset) 307201 is past"),
    (chunk_map(), chunk_map(digest=DIGEST[:31]), "key 1 (digest) must be a byte string of 32"),
    (chunk_map(), chunk_map(digest=DIGEST + b"\x00"), "key 1 (digest)"),
    (chunk_map(), chunk_map(crc=2**32), "key 5 (crc)"),
    (chunk_map(), chunk_map(crc=None), "chunk: key 5 (crc)"),
    (chunk_map(), chunk_map(offset=None), "chunk: key 2 (offset)"),
    (chunk_map(), chunk_map(offset=True), "key 2 (offset)"),
    (chunk_map(), chunk_map(offset=-1), "key 2 (offset)"),
    (chunk_map(), chunk_map(offset=2**70), "key 2 (offset)"),
    (chunk_map(), chunk_map(offset=1.0), "key 2 (offset)"),
    (chunk_map(), chunk_map(size=str(len(PHOTO))), "key 3 (size)"),
    (chunk_map(), chunk_map(data="text"), "key 4 (data)"),
    (chunk_map(), chunk_map(digest=DIGEST.hex()), "key 1 (digest)"),
]  # fmt: skip


@pytest.mark.parametrize(("ok", "bad", "words"), UPLOAD_BOUNDS, ids=[w for *_, w in UPLOAD_BOUNDS])
def test_upload_bounds_one_step_either_side(
    ok: dict[int, object], bad: dict[int, object], words: str
) -> None:
    decode_upload(cbor2.dumps(ok))
    with pytest.raises(RemoteError, match=re.escape(words)):
        decode_upload(cbor2.dumps(bad))


def test_a_message_too_big_is_refused_before_it_is_decoded() -> None:
    largest = cbor2.dumps(_with_data(0, 64 * KIB, 4 * MIB))
    decode_upload(largest)
    # not CBOR at all, and longer than any chunk can be: refused for its size alone
    junk = b"\xff" * (64 * KIB + 200)
    with pytest.raises(RemoteError, match=r"^attachment message of 65736 bytes: at most"):
        decode_upload(junk)
    with pytest.raises(RemoteError, match=r"^attachment status of 1025 bytes: at most 1024"):
        decode_status(b"\xff" * 1025)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (b"", "attachment message"),
        (b"\xff", "attachment message"),
        (cbor2.dumps([1, 2, 3]), "not a CBOR map"),
        (cbor2.dumps({"1": DIGEST, "3": 5}), "keys must be integers"),
        (cbor2.dumps({1: DIGEST, 3: 5}) + b"\x00", "attachment message"),  # trailing bytes
        (b"\xa2\x01\x41\x00\x01\x41\x00", "attachment message"),  # the same key twice
    ],
)
def test_hostile_uploads_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(RemoteError, match=re.escape(words)):
        decode_upload(data)


STATUS = {1: DIGEST, 2: 100, 3: 0}
STATUS_BOUNDS: list[tuple[dict[int, object], dict[int, object], str]] = [
    ({**STATUS, 3: 3}, {**STATUS, 3: 4}, "key 3 (state) 4 is not a known state"),
    ({**STATUS, 3: 3}, {**STATUS, 3: -1}, "key 3 (state)"),
    ({**STATUS, 2: 4 * MIB}, {**STATUS, 2: 4 * MIB + 1}, "key 2 (held)"),
    ({**STATUS, 3: 2, 4: "x" * 512}, {**STATUS, 3: 2, 4: "x" * 513}, "key 4 (reason)"),
    ({**STATUS, 3: 2, 4: "bad crc"}, {**STATUS, 3: 2}, "key 4 (reason) is required with state 2"),
    ({**STATUS, 3: 1, 2: 1}, {**STATUS, 3: 1, 2: 0}, "state 1 (complete) with key 2 (held) 0"),
    (STATUS, {**STATUS, 1: b""}, "key 1 (digest)"),
    (STATUS, {**STATUS, 2: None}, "key 2 (held)"),
    (STATUS, {**STATUS, 3: False}, "key 3 (state)"),
    (STATUS, {**STATUS, 4: b"bytes"}, "key 4 (reason)"),
]


@pytest.mark.parametrize(("ok", "bad", "words"), STATUS_BOUNDS, ids=[w for *_, w in STATUS_BOUNDS])
def test_status_bounds_one_step_either_side(
    ok: dict[int, object], bad: dict[int, object], words: str
) -> None:
    decode_status(cbor2.dumps(ok))
    bad = {k: v for k, v in bad.items() if v is not None}
    with pytest.raises(RemoteError, match=re.escape(words)):
        decode_status(cbor2.dumps(bad))


def test_a_photo_is_sent_in_chunks_of_32_kib_and_reassembles_to_its_digest() -> None:
    sent = list(chunks(PHOTO))
    assert CHUNK_DEFAULT == 32 * KIB
    assert [c.offset for c in sent] == list(range(0, len(PHOTO), 32 * KIB))
    assert {len(c.data) for c in sent[:-1]} == {32 * KIB}
    assert len(sent[-1].data) == len(PHOTO) - 9 * 32 * KIB
    assert {(c.digest, c.size) for c in sent} == {(DIGEST, len(PHOTO))}
    decoded = [decode_upload(c.encode()) for c in sent]
    assert hashlib.sha256(b"".join(c.data for c in decoded if isinstance(c, Chunk))).digest() == (
        DIGEST
    )


def test_after_a_reconnect_the_upload_continues_from_what_the_center_holds() -> None:
    held = 3 * 32 * KIB + 5  # the center's answer: bytes held from the start
    rest = list(chunks(PHOTO, held))
    assert rest[0].offset == held
    assert PHOTO[:held] + b"".join(c.data for c in rest) == PHOTO
    assert list(chunks(PHOTO, len(PHOTO))) == []  # all held: nothing to send


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ((PHOTO, 0, 64 * KIB + 1), "a chunk is 1..65536 bytes"),
        ((PHOTO, 0, 0), "a chunk is 1..65536 bytes"),
        ((PHOTO, len(PHOTO) + 1, 1024), "start 307201 is outside"),
        ((PHOTO, -1, 1024), "start -1 is outside"),
        ((b"", 0, 1024), "1..4194304 bytes, not 0"),
        ((bytes(4 * MIB + 1), 0, 1024), "not 4194305"),
    ],
)
def test_chunking_refuses_what_the_center_would(args: tuple[bytes, int, int], words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        list(chunks(*args))


@given(
    data=st.binary(min_size=1, max_size=5000),
    start=st.integers(min_value=0, max_value=5000),
    size=st.integers(min_value=1, max_value=700),
)
def test_any_attachment_chunked_from_any_offset_round_trips(
    data: bytes, start: int, size: int
) -> None:
    start = min(start, len(data))
    got = [decode_upload(c.encode()) for c in chunks(data, start, size)]
    assert all(isinstance(c, Chunk) and len(c.data) <= size for c in got)
    assert data[:start] + b"".join(c.data for c in got if isinstance(c, Chunk)) == data


def test_the_topics_are_under_each_devices_own_tree() -> None:
    assert attachment_topic("h0001") == "picket/v1/h0001/up/att"
    assert attachment_state_topic("h0001") == "picket/v1/h0001/down/att"
    assert device_of_topic(attachment_topic("h0001")) == "h0001"
    assert topic_matches_sub(ALL_ATTACHMENTS, attachment_topic("h0001"))
    assert not topic_matches_sub(ALL_ATTACHMENTS, attachment_state_topic("h0001"))
    assert not topic_matches_sub(ALL_ATTACHMENTS, "picket/v1/h0001/up/records")
