"""The serial frame codec (firmware_bridge/frame.py) at its limits, found by the mutation
benchmark (bench/mutation.py; docs/testing.md): the largest frame, one byte more, the counts
the bridge reports when it drops input, and COBS against an independent reference.

tests/test_bridge.py holds the vectors of docs/bridge.md and frames under bit errors; these
hold each bound exactly and what the decoder's counters say, which `picket bridge soak`
prints.
"""

from __future__ import annotations

import random
import zlib

import pytest

from firmware_bridge import frame


def reference_cobs(data: bytes) -> bytes:
    """COBS as the paper states it (Cheshire & Baker 1999), written separately from
    frame.cobs_encode: split on zeros, then cut each run into blocks of at most 254 bytes."""
    out = bytearray()
    for whole in data.split(b"\x00"):
        run = whole
        while len(run) >= 254:
            out += b"\xff" + run[:254]
            run = run[254:]
        out += bytes((len(run) + 1,)) + run
    return bytes(out)


def reference_wire(ftype: int, fid: int, payload: bytes) -> bytes:
    body = bytes((ftype, fid)) + payload
    body += zlib.crc32(body).to_bytes(4, "little")
    return b"\x00" + frame.cobs_encode(body) + b"\x00"


@pytest.mark.parametrize("n", [0, 1, 253, 254, 255, 508, 509, 600])
def test_cobs_agrees_with_the_reference_around_the_254_byte_block(n: int) -> None:
    rng = random.Random(n)
    for data in (
        bytes(rng.randrange(1, 256) for _ in range(n)),  # no zero: blocks of 254 only
        bytes(rng.randrange(1, 256) for _ in range(n)) + b"\x00",
        b"\x00" + bytes(rng.randrange(0, 256) for _ in range(n)),
    ):
        enc = frame.cobs_encode(data)
        assert enc == reference_cobs(data), (n, data[:4])
        assert 0 not in enc
        assert frame.cobs_decode(enc) == data


def test_the_largest_frame_goes_through_and_one_byte_more_is_refused() -> None:
    payload = bytes(random.Random(1).randrange(1, 256) for _ in range(frame.MAX_PAYLOAD))
    wire = frame.encode(0x42, 7, payload)
    assert len(wire) - 2 == frame.MAX_WIRE  # no zero in it: the longest wire there is
    decoder = frame.Decoder()
    assert decoder.feed(wire) == [(0x42, 7, payload)]
    assert (decoder.frames, decoder.oversize, decoder.dropped_bytes) == (1, 0, 0)
    with pytest.raises(ValueError, match="512"):
        frame.encode(0x42, 7, payload + b"\x01")


@pytest.mark.parametrize(("ftype", "fid"), [(0, 0), (255, 255), (0, 255), (255, 0)])
def test_type_and_id_take_every_byte_value(ftype: int, fid: int) -> None:
    wire = frame.encode(ftype, fid, b"\x00x")
    assert wire == reference_wire(ftype, fid, b"\x00x")
    assert frame.Decoder().feed(wire) == [(ftype, fid, b"\x00x")]


@pytest.mark.parametrize(("ftype", "fid"), [(256, 0), (0, 256), (-1, 0), (0, -1)])
def test_type_or_id_outside_a_byte_is_refused(ftype: int, fid: int) -> None:
    with pytest.raises(ValueError, match="0-255"):
        frame.encode(ftype, fid)


def test_an_oversized_frame_is_counted_skipped_to_its_end_and_the_next_arrives() -> None:
    good = frame.encode(1, 2, b"after")
    junk = bytes(random.Random(2).randrange(1, 256) for _ in range(frame.MAX_WIRE + 40))
    decoder = frame.Decoder()
    assert decoder.feed(b"\x00" + junk + b"\x00" + good) == [(1, 2, b"after")]
    assert decoder.oversize == 1
    assert decoder.dropped_bytes == len(junk)  # every byte of it, none of the next frame
    assert (decoder.frames, decoder.bad_frames) == (1, 0)


def test_one_byte_past_the_longest_wire_is_oversize() -> None:
    decoder = frame.Decoder()
    decoder.feed(b"\x00" + b"\x01" * frame.MAX_WIRE)
    assert decoder.oversize == 0  # the longest wire there is: still a frame in the making
    decoder.feed(b"\x01")
    assert decoder.oversize == 1


def test_a_bad_frame_costs_its_bytes_and_its_delimiter_and_nothing_else() -> None:
    wire = bytearray(frame.encode(3, 4, b"payload"))
    wire[5] ^= 0x10  # inside the stuffed body: the CRC no longer matches
    good = frame.encode(3, 5, b"next")
    decoder = frame.Decoder()
    assert decoder.feed(bytes(wire) + good) == [(3, 5, b"next")]
    assert decoder.bad_frames == 1
    assert decoder.dropped_bytes == len(wire) - 1  # body and its closing zero
    assert decoder.frames == 1


def test_empty_frames_between_delimiters_are_nothing() -> None:
    decoder = frame.Decoder()
    assert decoder.feed(b"\x00\x00\x00" + frame.encode(9, 9) + b"\x00\x00") == [(9, 9, b"")]
    assert (decoder.frames, decoder.bad_frames, decoder.dropped_bytes) == (1, 0, 0)


def test_reset_drops_the_partial_frame_and_counts_it() -> None:
    wire = frame.encode(6, 1, b"0123456789")
    decoder = frame.Decoder()
    assert decoder.feed(wire[:8]) == []
    decoder.reset()
    assert decoder.dropped_bytes == 7  # the leading delimiter is not a byte of the frame
    # the rest of the broken frame, then a whole one: only the whole one is delivered
    assert decoder.feed(wire[8:] + wire) == [(6, 1, b"0123456789")]


def test_reset_while_skipping_an_oversized_frame_delivers_the_next_frame() -> None:
    decoder = frame.Decoder()
    decoder.feed(b"\x00" + b"\x01" * (frame.MAX_WIRE + 1))
    assert decoder.oversize == 1
    decoder.reset()
    assert decoder.feed(b"\x05\x01\x02" + frame.encode(2, 2, b"ok")) == [(2, 2, b"ok")]
    assert decoder.bad_frames == 1  # the three bytes after the reset: a frame, and a bad one


@pytest.mark.parametrize(
    ("body_len", "message"), [(0, "shorter"), (5, "shorter"), (frame.MAX_BODY + 1, "longer")]
)
def test_decode_body_refuses_a_body_too_short_or_too_long(body_len: int, message: str) -> None:
    body = bytes(random.Random(body_len).randrange(1, 256) for _ in range(body_len))
    with pytest.raises(ValueError, match=message):
        frame.decode_body(frame.cobs_encode(body))


def test_the_shortest_body_is_a_frame_with_an_empty_payload() -> None:
    body = b"\x07\x08" + zlib.crc32(b"\x07\x08").to_bytes(4, "little")
    assert frame.decode_body(frame.cobs_encode(body)) == (7, 8, b"")


# Ids in plain hex: pytest keeps the ids it made for a mark and escapes them again when the
# module is collected a second time in the same process, so an id with a backslash (as
# str(bytes) gives) is not found by mutmut's second in-process run (docs/testing.md).
@pytest.mark.parametrize(
    "stuffed", [b"\x03\x01", b"\x02\x00", b"\x05\x01\x01\x00\x01", b"\x00"], ids=bytes.hex
)
def test_cobs_decode_refuses_a_block_past_the_end_or_a_zero_inside(stuffed: bytes) -> None:
    with pytest.raises(ValueError, match=r"COBS|zero"):
        frame.cobs_decode(stuffed)


def test_frames_fed_a_byte_at_a_time_equal_frames_fed_whole() -> None:
    rng = random.Random(4)
    frames = [
        (rng.randrange(256), rng.randrange(256), rng.randbytes(rng.randrange(0, 300)))
        for _ in range(40)
    ]
    stream = b"".join(frame.encode(*f) for f in frames)
    whole, split = frame.Decoder(), frame.Decoder()
    assert whole.feed(stream) == frames
    got = [f for i in range(len(stream)) for f in split.feed(stream[i : i + 1])]
    assert got == frames


def test_a_frame_whose_leading_delimiter_was_missed_is_still_delivered() -> None:
    # The port opened just after the peer sent a frame's leading zero: a fresh decoder takes
    # what comes as a frame, as it does after reset().
    wire = frame.encode(4, 2, b"first")
    decoder = frame.Decoder()
    assert decoder.feed(wire[1:]) == [(4, 2, b"first")]
    assert (decoder.frames, decoder.bad_frames, decoder.dropped_bytes) == (1, 0, 0)


def test_a_decoder_opened_mid_frame_counts_the_tail_as_one_bad_frame() -> None:
    broken = frame.encode(4, 2, b"0123456789")
    tail = broken[6:]  # the end of a frame already under way, its closing zero included
    decoder = frame.Decoder()
    assert decoder.feed(tail + frame.encode(4, 3, b"next")) == [(4, 3, b"next")]
    assert (decoder.frames, decoder.bad_frames, decoder.dropped_bytes) == (1, 1, len(tail))


def test_the_counters_add_up_over_a_stream_of_mixed_damage() -> None:
    """Each loss adds to what was lost before: two bad frames, two oversized frames and a
    reset mid-frame, in turn, each with its own size."""
    rng = random.Random(5)
    bad = []
    for n in (3, 40):
        wire = bytearray(frame.encode(8, n, rng.randbytes(n)))
        wire[2] ^= 0x01 if wire[2] != 1 else 0x02  # never a zero: only the CRC is wrong
        bad.append(bytes(wire))
    junk = [bytes(rng.randrange(1, 256) for _ in range(frame.MAX_WIRE + k)) for k in (5, 90)]
    good = [frame.encode(8, 100 + i, bytes((i + 1,))) for i in range(5)]
    partial = frame.encode(8, 200, b"cut short")[:9]
    decoder = frame.Decoder()
    got = decoder.feed(bad[0] + good[0] + b"\x00" + junk[0] + good[1] + bad[1] + good[2])
    got += decoder.feed(b"\x00" + junk[1] + good[3] + partial)
    decoder.reset()
    got += decoder.feed(good[4])
    assert got == [(8, 100 + i, bytes((i + 1,))) for i in range(5)]
    assert decoder.frames == 5
    assert decoder.bad_frames == 2
    assert decoder.oversize == 2
    lost_to_bad = sum(len(w) - 1 for w in bad)  # body and closing zero of each
    lost_to_junk = sum(len(j) for j in junk)  # every byte up to the next delimiter
    lost_to_reset = len(partial) - 1  # all but its leading zero
    assert decoder.dropped_bytes == lost_to_bad + lost_to_junk + lost_to_reset
