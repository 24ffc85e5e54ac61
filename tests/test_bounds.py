"""Every bound of the contract, at the bound and one past it (contract/bounds.py).

For each decoder and validator: a value at its bound is accepted, one past it is refused
with a RecordError / RemoteError naming the field. The record bodies are walked through
`BODY_SCHEMA` itself, so a key added to the table is tested here without a new line.
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from contract import bounds as b
from contract.commands import CommandVerifier, Reason, Refusal, RollCall, command_payload
from contract.cose import sign1
from contract.errors import RecordError, RemoteError
from contract.fix import TimeSource
from contract.protocol import Ack, Batch, decode_ack, decode_batch
from contract.protocol import Refusal as AckRefusal
from contract.records import ChainPosition, RecordType, build, claimed_seq, parse_payload
from contract.recordschema import BODY_SCHEMA, Field, validate_body

T0 = 1_772_323_200_000
BIG = st.integers(min_value=2**64 - 1, max_value=2**70)  # cbor2 encodes these as bignums


# --- the kinds themselves ----------------------------------------------------------------------


def at_bound(kind: b.Kind) -> list[object]:
    """Values of `kind` at its bounds (each accepted)."""
    s = kind.shape
    if s is b.Shape.UINT or s is b.Shape.INT:
        return [kind.low, kind.high]
    if s is b.Shape.TEXT:
        top = "x" * kind.high
        return [top, "é" * (kind.high // 2), "x" * max(kind.low, 0)]
    if s is b.Shape.BYTES:
        return [b"x" * kind.low, b"x" * kind.high]
    if s is b.Shape.BYTES_OR_UINT:
        assert kind.item is not None
        return [b"x" * kind.high, kind.item.high]
    if s is b.Shape.TUPLE:  # every position at its low bound, then at its high one
        return [[at_bound(k)[0] for k in kind.items], [at_bound(k)[-1] for k in kind.items]]
    assert kind.item is not None
    return [[at_bound(kind.item)[-1]] * kind.high, [at_bound(kind.item)[0]] * kind.low]


def past_bound(kind: b.Kind) -> list[object]:
    """Values one past each of `kind`'s bounds (each refused)."""
    s = kind.shape
    if s is b.Shape.UINT or s is b.Shape.INT:
        return [kind.low - 1, kind.high + 1, True]
    if s is b.Shape.TEXT:
        out: list[object] = ["x" * (kind.high + 1), "é" * (kind.high // 2 + 1), b"x"]
        return out + (["x" * (kind.low - 1)] if kind.low > 0 else [])
    if s is b.Shape.BYTES:
        out = [b"x" * (kind.high + 1), "x"]
        return out + ([b"x" * (kind.low - 1)] if kind.low > 0 else [])
    if s is b.Shape.BYTES_OR_UINT:
        assert kind.item is not None
        return [b"x" * (kind.high + 1), kind.item.high + 1, -1]
    if s is b.Shape.TUPLE:  # one position past its bound (each in turn), one item short
        ok = at_bound(kind)[-1]
        assert isinstance(ok, list)
        bad = [[*ok[:i], past_bound(k)[1], *ok[i + 1 :]] for i, k in enumerate(kind.items)]
        return [*bad, ok[:-1], ok[0]]
    assert kind.item is not None
    item_ok, item_bad = at_bound(kind.item)[-1], past_bound(kind.item)[1]
    return [[item_ok] * (kind.high + 1), [item_bad], item_ok]


KINDS = {
    "SEQ": b.SEQ,
    "BOOT": b.BOOT,
    "COUNT32": b.COUNT32,
    "CODE": b.CODE,
    "PERCENT": b.PERCENT,
    "INT32": b.INT32,
    "TIME": b.TIME,
    "ID_TEXT": b.ID_TEXT,
    "FREE_TEXT": b.FREE_TEXT,
    "DEVICE_ID_KIND": b.DEVICE_ID_KIND,
}


@pytest.mark.parametrize("name", KINDS)
def test_each_kind_takes_its_bounds_and_refuses_one_past(name: str) -> None:
    kind = KINDS[name]
    for v in at_bound(kind):
        if kind is b.DEVICE_ID_KIND and v == "é" * 32:
            continue  # not of the id alphabet
        b.check(kind, v, "field")
    for v in past_bound(kind):
        with pytest.raises(RecordError, match=r"^field must be"):
            b.check(kind, v, "field")


@given(st.integers(min_value=0, max_value=b.SEQ_MAX))
def test_seq_within_bounds_fits(v: int) -> None:
    assert b.fits(b.SEQ, v)


@given(st.integers(min_value=b.SEQ_MAX + 1, max_value=2**80) | st.integers(max_value=-1))
def test_seq_outside_bounds_does_not_fit(v: int) -> None:
    assert not b.fits(b.SEQ, v)


def test_the_bounds_hold_in_a_64_bit_column_and_a_datetime() -> None:
    import datetime as dt

    assert b.SEQ_MAX < 2**63 and b.TIME_MS_MAX < 2**63
    assert dt.datetime.fromtimestamp(b.TIME_MS_MAX / 1000, dt.UTC).year == 2200


# --- record bodies, key by key, from the schema table ----------------------------------------


def _minimal(rtype: RecordType) -> dict[int, object]:
    """A valid body of `rtype` with every key of the schema at its lowest valid value."""
    body = {k: at_bound(f.kind)[0] for k, f in BODY_SCHEMA[rtype].items()}
    if rtype is RecordType.DROPPED:
        body.update({16: 1, 17: 1, 18: 1})
    return body


def _event_fits(body: dict[int, object]) -> dict[int, object]:
    """An event body changed to keep the rules after the table: distinct digests, a place
    with a position (and an accuracy only for the device's fix) or none."""
    attached = body.get(22)
    if isinstance(attached, list):  # the same valid digest repeated: made distinct
        body[22] = [
            [a[0], bytes([i]) * 32, a[2]] if isinstance(a, list) and a[1:2] == [b"x" * 32] else a
            for i, a in enumerate(attached)
        ]
    place = body.get(18)
    if place == 2:
        for k in (19, 20, 21):
            body.pop(k, None)
    elif place == 1:
        body.pop(21, None)
    return body


def _placed(rtype: RecordType, key: int, value: object) -> dict[int, object]:
    body = _minimal(rtype)
    body[key] = value
    if rtype is RecordType.DROPPED and isinstance(value, int) and key in (16, 17, 18):
        # count 1..last - first + 1: make the other two fit the value under test
        count, first, last = {16: (value, 0, max(value - 1, 0)), 17: (1, value, value)}.get(
            key, (1, 0, value)
        )
        body.update({16: count, 17: first, 18: last})
    if rtype is RecordType.EVENT:
        _event_fits(body)
    return body


SCHEMA_FIELDS: list[tuple[RecordType, int, Field]] = [
    (t, k, f) for t, fields in BODY_SCHEMA.items() for k, f in fields.items()
]


@pytest.mark.parametrize(
    ("rtype", "key", "field"), SCHEMA_FIELDS, ids=[f"{t.name}-{k}" for t, k, _ in SCHEMA_FIELDS]
)
def test_every_body_key_at_its_bound_is_accepted_and_one_past_refused(
    rtype: RecordType, key: int, field: Field
) -> None:
    for v in at_bound(field.kind):
        if rtype is RecordType.DROPPED and key == 16 and v == 0:
            continue  # a count of 0 is refused by the rule after the table
        validate_body(rtype, _placed(rtype, key, v))
    for v in past_bound(field.kind):
        with pytest.raises(RecordError, match=rf"key {key} \({field.name}\)"):
            validate_body(rtype, _placed(rtype, key, v))


@given(st.sampled_from(SCHEMA_FIELDS), BIG | st.integers(min_value=2**32, max_value=2**64))
def test_no_integer_past_a_bound_gets_through(case: tuple[RecordType, int, Field], v: int) -> None:
    rtype, key, field = case
    if field.kind.shape is b.Shape.UINT and v <= field.kind.high:
        return
    if b.fits(field.kind, v):
        return  # a kind (bytes or a number up to 2**53) that takes it
    with pytest.raises(RecordError, match=rf"key {key} \({field.name}\)"):
        validate_body(rtype, _placed(rtype, key, v))


def test_the_health_record_of_the_issue_is_refused() -> None:
    with pytest.raises(RecordError, match=r"key 16 \(outbox depth\)"):
        validate_body(RecordType.HEALTH, {16: 2**63})
    with pytest.raises(RecordError, match=r"key 16 \(count\)"):
        validate_body(RecordType.DROPPED, {16: 2**63, 17: 1, 18: 2**63, 19: 1, 20: [1]})


# --- record headers ------------------------------------------------------------------------------

HEADER: dict[object, object] = {
    1: 1,
    2: "h0001",
    3: 1,
    4: 7,
    5: b"",
    6: T0,
    7: 1,
    16: "P001",
}
HEADER_BOUNDS = [  # key, name in the message, at the bound, one past
    (3, "boot", b.UINT32_MAX, b.UINT32_MAX + 1),
    (4, "sequence", b.SEQ_MAX, b.SEQ_MAX + 1),
    (6, "time", b.TIME_MS_MAX, b.TIME_MS_MAX + 1),
    (6, "time", b.TIME_MS_MAX, 2**63 - 1),  # the year 292278994 of the issue
    (2, "device", "d" * 64, "d" * 65),
    (2, "device", "d", ""),
    (1, "type", 1, 256),
    (7, "time source", 1, 2**64),
]


@pytest.mark.parametrize(("key", "name", "ok", "bad"), HEADER_BOUNDS)
def test_header_bounds(key: int, name: str, ok: object, bad: object) -> None:
    rec = parse_payload(cbor2.dumps({**HEADER, key: ok}), b"raw")
    assert ok in (rec.header.boot, rec.header.seq, rec.header.time_ms, rec.header.device, 1)
    payload = cbor2.dumps({**HEADER, key: bad})
    with pytest.raises(RecordError, match=rf"key {key} \({name}\)"):
        parse_payload(payload, b"raw")
    assert claimed_seq(payload) == (None if key == 4 else 7)  # a refusal can name it


@given(st.integers(min_value=b.TIME_MS_MAX + 1, max_value=2**64 - 1) | BIG)
def test_no_time_past_2200_parses(t: int) -> None:
    with pytest.raises(RecordError, match=r"key 6 \(time\)"):
        parse_payload(cbor2.dumps({**HEADER, 6: t}), b"raw")


def test_a_payload_over_the_record_size_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(RecordError, match=f"at most {b.MAX_RECORD}"):
        parse_payload(b"\xff" * (b.MAX_RECORD + 1), b"raw")  # not even CBOR: never read


def test_a_record_of_the_largest_size_is_a_record() -> None:
    key = Ed25519PrivateKey.generate()

    def sized(pad: int) -> bytes:
        return build(
            key,
            device="h0001",
            chain=ChainPosition(1, 1, b""),
            rtype=RecordType.CHECKIN,
            time_ms=T0,
            time_source=TimeSource.GNSS,
            body={16: "P001", 99: b"x" * pad},
        )

    pad = b.MAX_RECORD - len(sized(500)) + 500
    assert len(sized(pad)) == b.MAX_RECORD
    assert len(sized(pad + 1)) == b.MAX_RECORD + 1  # the ingest refuses it (test_bounds_center)


# --- batches and acknowledgements ---------------------------------------------------------------


@given(st.integers(min_value=0, max_value=b.SEQ_MAX))
def test_batch_ids_up_to_the_bound_decode(bid: int) -> None:
    assert decode_batch(Batch(bid, (b"r",)).encode()).id == bid


@given(st.integers(min_value=b.SEQ_MAX + 1, max_value=2**64 - 1) | BIG)
def test_batch_ids_past_the_bound_are_refused(bid: int) -> None:
    with pytest.raises(RemoteError, match=r"key 1 \(batch id\)"):
        decode_batch(cbor2.dumps({1: bid, 2: []}))


def test_the_largest_batch_decodes_and_one_byte_more_is_refused_unread() -> None:
    full = Batch(b.SEQ_MAX, tuple(bytes([i]) * b.MAX_RECORD for i in range(b.MAX_BATCH)))
    data = full.encode()
    assert len(data) <= b.MAX_BATCH_BYTES
    assert decode_batch(data) == full
    junk = b"\xff" * (b.MAX_BATCH_BYTES + 1)
    with pytest.raises(RemoteError, match=f"batch of {len(junk)} bytes: at most"):
        decode_batch(junk)
    with pytest.raises(RemoteError, match="more than 256"):
        decode_batch(cbor2.dumps({1: 1, 2: [b"r"] * (b.MAX_BATCH + 1)}))


@given(
    st.integers(min_value=0, max_value=b.SEQ_MAX),
    st.lists(st.integers(min_value=0, max_value=b.SEQ_MAX), max_size=b.MAX_BATCH),
)
def test_acks_within_bounds_decode(bid: int, stored: list[int]) -> None:
    ack = Ack(bid, tuple(stored), tuple((s, AckRefusal.MALFORMED) for s in stored[:3]))
    assert decode_ack(ack.encode()) == ack


ACK_REFUSALS: Mapping[str, tuple[object, str]] = {
    "batch id 2**53": ({1: b.SEQ_MAX + 1}, r"key 1 \(batch id\)"),
    "batch id 2**63": ({1: 2**63}, r"key 1 \(batch id\)"),
    "stored seq 2**63": ({1: 1, 2: [2**63]}, "key 2"),
    "stored seq 2**53": ({1: 1, 2: [b.SEQ_MAX + 1]}, "key 2"),
    "257 stored": ({1: 1, 2: [1] * (b.MAX_BATCH + 1)}, "key 2"),
    "refused seq 2**63": ({1: 1, 3: [[2**63, 1]]}, "key 3"),
    "257 refused": ({1: 1, 3: [[1, 1]] * (b.MAX_BATCH + 1)}, "key 3"),
    "reason 2**64": ({1: 1, 3: [[1, 2**64]]}, "reason"),
}


@pytest.mark.parametrize("name", ACK_REFUSALS)
def test_decode_ack_refuses_what_is_out_of_bounds(name: str) -> None:
    m, word = ACK_REFUSALS[name]
    with pytest.raises(RemoteError, match=word):
        decode_ack(cbor2.dumps(m))


def test_an_ack_over_its_size_is_refused_before_it_is_decoded() -> None:
    with pytest.raises(RemoteError, match=f"at most {b.MAX_ACK_BYTES}"):
        decode_ack(b"\xff" * (b.MAX_ACK_BYTES + 1))


# --- commands ------------------------------------------------------------------------------------

CENTER = Ed25519PrivateKey.generate()
VERIFIER = CommandVerifier(CENTER.public_key(), "h0001")


def _command(**header: object) -> bytes:
    payload = cbor2.loads(
        command_payload(
            target="h0001",
            number=5,
            issued_ms=T0,
            expires_ms=T0 + 60_000,
            body=RollCall(b"\x01" * 16),
        )
    )
    for name, value in header.items():
        payload[int(name.removeprefix("k"))] = value
    return sign1(cbor2.dumps(payload), CENTER)


COMMAND_BOUNDS = [  # key, name, at the bound, one past
    (4, "number", b.SEQ_MAX, b.SEQ_MAX + 1),
    (4, "number", 1, 0),
    (5, "issued", T0, b.TIME_MS_MAX + 1),
    (6, "expires", b.TIME_MS_MAX, b.TIME_MS_MAX + 1),
    (1, "type", 2, 256),
    (3, "team", "t" * b.MAX_ID_TEXT, "t" * (b.MAX_ID_TEXT + 1)),
    (2, "target device", "h0001", "h" * 65),
]


@pytest.mark.parametrize(("key", "name", "ok", "bad"), COMMAND_BOUNDS)
def test_command_header_bounds(key: int, name: str, ok: object, bad: object) -> None:
    good = VERIFIER.check(_command(**{f"k{key}": ok}), T0, 0)
    assert not isinstance(good, Refusal), good
    refused = VERIFIER.check(_command(**{f"k{key}": bad}), T0, 0)
    assert isinstance(refused, Refusal) and refused.reason is Reason.MALFORMED
    assert f"key {key} ({name})" in refused.detail
    assert not refused.answered  # a malformed command costs the device no record


@given(st.integers(min_value=b.SEQ_MAX + 1, max_value=2**64 - 1) | BIG)
def test_no_command_number_past_the_bound_is_taken(number: int) -> None:
    refused = VERIFIER.check(_command(k4=number), T0, 0)
    assert isinstance(refused, Refusal) and refused.reason is Reason.MALFORMED


def test_a_command_over_its_size_is_refused_before_it_is_decoded() -> None:
    refused = VERIFIER.check(b"\xff" * (b.MAX_COMMAND + 1), T0, 0)
    assert isinstance(refused, Refusal) and refused.reason is Reason.MALFORMED
    assert f"at most {b.MAX_COMMAND}" in refused.detail


# --- quoting what was refused ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (255, "255"),
        (-(2**63), str(-(2**63))),
        (2**20000, "an integer of about 6021 digits"),  # str() of it raises ValueError
        (-(10**5000), "an integer of about 5001 digits"),
        ("x" * 100, "'" + "x" * 58 + "… (102 characters)"),
        (b"\x00", "b'\\x00'"),
        (True, "True"),
        (None, "None"),
        ([2**20000], "a list that cannot be shown"),
    ],
    ids=["code", "int64", "huge", "huge-negative", "long-text", "bytes", "bool", "none", "list"],
)
def test_shown_quotes_any_decoded_value_briefly(value: object, text: str) -> None:
    assert b.shown(value) == text


@given(st.recursive(st.integers() | st.text() | st.binary(), st.lists, max_leaves=20))
def test_shown_never_raises_and_stays_short(value: object) -> None:
    assert len(b.shown(value)) <= b.SHOWN_MAX + 20


def test_a_command_with_an_unknown_key_too_long_to_print_is_refused() -> None:
    # A body key of 6,021 digits is named in the refusal, not printed (which would raise).
    payload = cbor2.loads(
        command_payload(
            target="h0001", number=5, issued_ms=T0, expires_ms=T0 + 60_000, body=RollCall(bytes(16))
        )
    )
    payload[-(2**20000)] = 1
    refused = VERIFIER.check(sign1(cbor2.dumps(payload), CENTER), T0, 0)
    assert isinstance(refused, Refusal) and refused.reason is Reason.INVALID
    assert "unknown key an integer of about 6021 digits" in refused.detail
