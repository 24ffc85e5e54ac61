"""COSE_Sign1 with Ed25519: the working group's vector, its mutations, and our own records."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given
from hypothesis import strategies as st

from contract.cose import PROTECTED_EDDSA, sig_structure, sign1, verify1
from contract.errors import RecordError

COSE_CORPUS = Path(__file__).resolve().parent / "corpus" / "cose"
VECTOR_PATH = COSE_CORPUS / "eddsa-sig-01.json"


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    if not VECTOR_PATH.is_file():
        pytest.skip(f"COSE working-group vector not found at {VECTOR_PATH}")
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text())
    return data


def _public(vector: dict[str, Any]) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(
        bytes.fromhex(vector["input"]["sign0"]["key"]["x_hex"])
    )


def _private(vector: dict[str, Any]) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex(vector["input"]["sign0"]["key"]["d_hex"])
    )


def _output(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["output"]["cbor"])


def _parts(vector: dict[str, Any]) -> list[Any]:
    """[protected, unprotected, payload, signature] of the vector's COSE_Sign1."""
    item = cbor2.loads(_output(vector))
    assert isinstance(item, cbor2.CBORTag)
    assert item.tag == 18
    return list(item.value)


def _encode(parts: list[Any], tag: int | None = 18) -> bytes:
    return cbor2.dumps(parts if tag is None else cbor2.CBORTag(tag, parts))


# --- the COSE working group's EdDSA-01 vector ----------------------------------------------


def test_vector_verifies_and_returns_the_plaintext(vector: dict[str, Any]) -> None:
    payload = verify1(_output(vector), _public(vector))
    assert payload == vector["input"]["plaintext"].encode()


def test_vector_sig_structure_matches_to_be_signed(vector: dict[str, Any]) -> None:
    protected, _unprotected, payload, _signature = _parts(vector)
    expected = bytes.fromhex(vector["intermediates"]["ToBeSign_hex"])
    assert sig_structure(protected, payload) == expected


def test_signing_the_vector_again_gives_the_same_signature(vector: dict[str, Any]) -> None:
    protected, _unprotected, payload, signature = _parts(vector)
    # Ed25519 is deterministic: same key and same to-be-signed bytes, same signature.
    assert _private(vector).sign(sig_structure(protected, payload)) == signature


def _resigned(vector: dict[str, Any], protected: bytes) -> list[Any]:
    """The vector with a new protected header, validly signed by the vector's own key."""
    _old, unprotected, payload, _sig = _parts(vector)
    return [
        protected,
        unprotected,
        payload,
        _private(vector).sign(sig_structure(protected, payload)),
    ]


def test_resigned_vector_with_other_valid_header_is_accepted(vector: dict[str, Any]) -> None:
    # The control for the mutations below: re-signing itself does not break anything, so a
    # refusal there is due to the mutation alone.
    raw = _encode(_resigned(vector, cbor2.dumps({1: -8, 3: 1})))
    assert verify1(raw, _public(vector)) == b"This is the content."


def _flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 0x01]) + data[index + 1 :]


Vector = dict[str, Any]
MUTATIONS: dict[str, tuple[Callable[[Vector], bytes], str]] = {
    # name: (mutate(vector) -> bytes, what the error message must mention)
    "tag 98 instead of 18": (lambda v: _encode(_parts(v), tag=98), "tag 18"),
    "untagged": (lambda v: _encode(_parts(v), tag=None), "tag 18"),
    "payload byte flipped": (
        lambda v: _encode([*_parts(v)[:2], _flip(_parts(v)[2], 0), _parts(v)[3]]),
        "signature",
    ),
    "alg ES256 (-7), re-signed": (
        lambda v: _encode(_resigned(v, cbor2.dumps({1: -7, 3: 0}))),
        "EdDSA",
    ),
    "alg removed, re-signed": (lambda v: _encode(_resigned(v, cbor2.dumps({3: 0}))), "EdDSA"),
    "empty protected header, re-signed": (lambda v: _encode(_resigned(v, b"")), "EdDSA"),
    "alg only in unprotected header, re-signed": (
        lambda v: _encode([_resigned(v, b"")[0], {1: -8}, *_resigned(v, b"")[2:]]),
        "EdDSA",
    ),
    "protected header ctyp 0 -> 1": (
        lambda v: _encode([bytes.fromhex("A201270301"), *_parts(v)[1:]]),
        "signature",
    ),
    "signature truncated": (lambda v: _encode([*_parts(v)[:3], _parts(v)[3][:63]]), "64-byte"),
    "signature byte flipped": (
        lambda v: _encode([*_parts(v)[:3], _flip(_parts(v)[3], 10)]),
        "signature",
    ),
    "trailing byte appended": (lambda v: _output(v) + b"\x00", "trailing"),
    "array of three items": (lambda v: _encode(_parts(v)[:3]), "four items"),
    "array of five items": (lambda v: _encode([*_parts(v), b""]), "four items"),
    "not CBOR at all": (lambda v: b"\xff\xfe not cbor", "CBOR"),
    "empty bytes": (lambda v: b"", "CBOR"),
    "truncated CBOR": (lambda v: _output(v)[:-1], "CBOR"),
}


@pytest.mark.parametrize("name", MUTATIONS)
def test_vector_mutation_is_refused(vector: dict[str, Any], name: str) -> None:
    mutate, reason = MUTATIONS[name]
    with pytest.raises(RecordError, match=reason):
        verify1(mutate(vector), _public(vector))


def test_vector_refused_under_another_key(vector: dict[str, Any]) -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes(range(32))).public_key()
    with pytest.raises(RecordError, match="signature does not verify"):
        verify1(_output(vector), other)


# --- our own records ------------------------------------------------------------------------

KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("11" * 32))
PAYLOAD = cbor2.dumps({1: 1, 2: "h0001", 4: 7, 16: "P017"})


def test_sign1_round_trip() -> None:
    raw = sign1(PAYLOAD, KEY, {4: b"h0001"})
    assert verify1(raw, KEY.public_key()) == PAYLOAD


def test_sign1_uses_protected_eddsa_header() -> None:
    item = cbor2.loads(sign1(PAYLOAD, KEY))
    assert item.tag == 18
    assert item.value[0] == PROTECTED_EDDSA == bytes.fromhex("A10127")
    assert cbor2.loads(item.value[0]) == {1: -8}


def test_sign1_refused_by_another_key() -> None:
    other = Ed25519PrivateKey.from_private_bytes(bytes.fromhex("22" * 32)).public_key()
    with pytest.raises(RecordError):
        verify1(sign1(PAYLOAD, KEY), other)


def test_every_single_byte_flip_is_refused() -> None:
    raw = sign1(PAYLOAD, KEY)
    public = KEY.public_key()
    for index in range(len(raw)):
        for mask in (0x01, 0x80, 0xFF):
            damaged = raw[:index] + bytes([raw[index] ^ mask]) + raw[index + 1 :]
            with pytest.raises(RecordError):
                verify1(damaged, public)
            # pytest.raises lets any other exception type propagate, failing the test.


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_verify(data: bytes) -> None:
    with pytest.raises(RecordError):
        verify1(data, KEY.public_key())


@given(st.binary(max_size=64), st.binary(max_size=96))
def test_arbitrary_bytes_after_a_valid_prefix_never_verify(junk: bytes, payload: bytes) -> None:
    raw = sign1(payload, KEY)
    with pytest.raises(RecordError):
        verify1(raw[: len(raw) // 2] + junk, KEY.public_key())
