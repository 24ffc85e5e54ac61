"""What the mutation benchmark found untested in the contract's records, COSE envelope and
bounds (contract/records.py, cose.py, bounds.py; bench/mutation.py, docs/testing.md): a key
rotation's receipt carries the device's next public key and its certificate request, through
signing and the center's reading; a record's envelope is what the reference COSE encoding gives
at every length where a CBOR byte-string head changes form; a payload is decoded up to the
record size and refused one byte past it; a COSE_Sign1 that is not an array of four is refused
however many items it has; the decoder hands back the unprotected header it read (the COSE
working group's vector); a roll call's challenge is 0 to 64 bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from contract.cose import decode_sign1, sign1, verify1
from contract.errors import RecordError
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    Outcome,
    ReceiptKey,
    RecordType,
    RollcallKey,
    build,
    open_record,
    parse_payload,
    receipt_body,
)
from contract.recordschema import validate_body

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(9, 41)))
NEXT = Ed25519PrivateKey.from_private_bytes(bytes(range(50, 82))).public_key().public_bytes_raw()
CSR = bytes.fromhex("3082") + bytes(range(1, 200))  # opaque DER bytes to the record layer


def test_a_rotation_receipt_carries_the_next_key_pair_to_the_center() -> None:
    body = receipt_body(12, 6, Outcome.DONE, next_signing_key=NEXT, next_csr=CSR)
    raw = build(
        KEY, device="h0003", chain=ChainPosition(2, 40, bytes(16)), rtype=RecordType.RECEIPT,
        time_ms=1_772_359_200_000, time_source=TimeSource.GNSS, body=body,
    )  # fmt: skip
    got = open_record(raw, KEY.public_key()).body
    assert got[ReceiptKey.NEXT_SIGNING_KEY] == NEXT
    assert got[ReceiptKey.NEXT_CSR] == CSR
    assert got[ReceiptKey.COMMAND] == 12


def test_a_receipt_without_a_rotation_carries_neither_half() -> None:
    body = receipt_body(12, 3, Outcome.REFUSED, "expired")
    assert ReceiptKey.NEXT_SIGNING_KEY not in body
    assert ReceiptKey.NEXT_CSR not in body
    validate_body(RecordType.RECEIPT, body)
    with pytest.raises(RecordError, match="together"):
        validate_body(RecordType.RECEIPT, {**body, ReceiptKey.NEXT_SIGNING_KEY: NEXT})


# --- the envelope: byte-string heads at their boundaries (RFC 8949 section 3.1) ----------------


def _payload(device: str, filler: int) -> dict[int, object]:
    """A record's payload map (docs/records.md): the smallest common keys, then key 16."""
    return {1: int(RecordType.HEALTH), 2: device, 3: 1, 4: 1, 5: b"", 6: 0, 7: 0, 16: b"x" * filler}


def _sized(n: int) -> tuple[str, int]:
    """A device id and a filler length whose payload is exactly n bytes long."""
    base = len(cbor2.dumps(_payload("d", 0), canonical=True))
    for filler in range(max(0, n - base - 8), n):
        for length in range(1, 10):
            if len(cbor2.dumps(_payload("d" * length, filler), canonical=True)) == n:
                return "d" * length, filler
    raise AssertionError(f"no payload of {n} bytes")


# A byte string's head is one byte below 24 bytes, two below 256, three below 65,536, five
# from there: each length either side of each change.
@pytest.mark.parametrize("n", [23, 24, 255, 256, 65_535, 65_536])
def test_a_records_envelope_is_the_reference_cose_encoding_at_every_head_boundary(n: int) -> None:
    device, filler = _sized(n)
    body = {16: b"x" * filler}
    raw = build(
        KEY, device=device, chain=ChainPosition(1, 1, b""), rtype=RecordType.HEALTH,
        time_ms=0, time_source=TimeSource.NONE, body=body,
    )  # fmt: skip
    payload = cbor2.dumps(_payload(device, filler), canonical=True)
    assert len(payload) == n
    assert raw == sign1(payload, KEY)  # cbor2 lays out the same COSE_Sign1 on its own
    assert verify1(raw, KEY.public_key()) == payload


# --- the record size: a payload over 1,024 bytes is refused before it is decoded ---------------

RECORD_SIZE = 1024  # docs/records.md, "Bounds": MAX_RECORD


def _padded_payload(n: int) -> bytes:
    header = {1: 4, 2: "h0001", 3: 1, 4: 7, 5: b"", 6: 1_772_359_200_000, 7: 1}
    base = len(cbor2.dumps({**header, 16: 0, 99: b""}))
    for pad in range(n - base - 3, n - base + 1):
        payload = cbor2.dumps({**header, 16: 0, 99: b"p" * pad})
        if len(payload) == n:
            return payload
    raise AssertionError(f"no payload of {n} bytes")


def test_a_payload_of_exactly_the_record_size_decodes_and_one_byte_more_is_refused() -> None:
    payload = _padded_payload(RECORD_SIZE)
    at = parse_payload(payload, b"raw")
    assert (at.header.device, at.header.seq) == ("h0001", 7)
    assert at.body == {16: 0, 99: cbor2.loads(payload)[99]}
    with pytest.raises(RecordError, match=f"payload of {RECORD_SIZE + 1} bytes"):
        parse_payload(_padded_payload(RECORD_SIZE + 1), b"raw")


# --- the COSE_Sign1 structure (docs/records.md, "Envelope"; RFC 9052) ---------------------------


def _parts(raw: bytes) -> list[bytes]:
    item = cbor2.loads(raw)
    assert isinstance(item, cbor2.CBORTag)
    return [cbor2.dumps(x) for x in item.value]


def _as_map_of_four(raw: bytes) -> bytes:
    """The four parts of a valid COSE_Sign1 as the keys of a map under tag 18 (a map key may
    itself be a map in CBOR): iterating it yields the parts in order."""
    p = _parts(raw)
    return b"\xd2\xa4" + b"".join(part + bytes([i]) for i, part in enumerate(p))


@pytest.mark.parametrize(
    "shape",
    [
        pytest.param(_as_map_of_four, id="a map of four entries"),
        pytest.param(lambda raw: cbor2.dumps(cbor2.CBORTag(18, "abcd")), id="text of four"),
        pytest.param(lambda raw: cbor2.dumps(cbor2.CBORTag(18, b"abcd")), id="bytes of four"),
    ],
)
def test_a_cose_sign1_that_is_not_an_array_of_four_is_refused(
    shape: Callable[[bytes], bytes],
) -> None:
    payload = cbor2.dumps({1: 4, 2: "h0001"})
    raw = sign1(payload, KEY)
    assert verify1(raw, KEY.public_key()) == payload  # the array itself verifies
    with pytest.raises(RecordError, match="array of four items"):
        verify1(shape(raw), KEY.public_key())


def test_the_decoder_returns_the_working_groups_headers_and_payload() -> None:
    path = Path(__file__).resolve().parent / "corpus" / "cose" / "eddsa-sig-01.json"
    vector = json.loads(path.read_text())
    msg = decode_sign1(bytes.fromhex(vector["output"]["cbor"]))
    assert dict(msg.unprotected) == {4: b"11"}  # kid "11", as the vector's input gives it
    assert cbor2.loads(msg.protected) == {1: -8, 3: 0}  # alg EdDSA, ctyp 0
    assert msg.payload == vector["input"]["plaintext"].encode()


# --- a roll call's challenge: bstr .size (0..64) / seq (docs/records.md, CDDL) ----------------


@pytest.mark.parametrize("challenge", [b"", bytes(range(64)), 0], ids=["empty", "64 bytes", "0"])
def test_a_roll_call_challenge_of_0_to_64_bytes_is_valid(challenge: bytes | int) -> None:
    validate_body(RecordType.ROLLCALL, {RollcallKey.CHALLENGE: challenge})


def test_a_roll_call_challenge_of_65_bytes_is_refused() -> None:
    with pytest.raises(RecordError, match="challenge"):
        validate_body(RecordType.ROLLCALL, {RollcallKey.CHALLENGE: bytes(65)})
