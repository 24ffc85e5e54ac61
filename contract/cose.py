"""COSE_Sign1 (RFC 9052) with EdDSA/Ed25519, on cbor2 + cryptography.

Why not pycose: it breaks on cbor2 6 (arrays decode as tuples), and Sign1 alone is a
few dozen lines. These are pure functions over bytes: the same code signs on the device,
verifies at the center, and is checked against the COSE working group's vectors.

Decoding is strict: trailing bytes, duplicate map keys, a missing tag 18, a protected
header without alg EdDSA (-8) and a signature that is not 64 bytes are all refused.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract.errors import RecordError

COSE_SIGN1_TAG = 18
HEADER_ALG = 1
HEADER_CRIT = 2
ALG_EDDSA = -8
# Encoded once: {1: -8}. Every Picket record carries exactly these three bytes.
PROTECTED_EDDSA = cbor2.dumps({HEADER_ALG: ALG_EDDSA})


def strict_loads(data: bytes) -> object:
    """Decode one CBOR item that must span all of `data`, with no duplicate map keys."""
    fp = io.BytesIO(data)
    try:
        item = cbor2.CBORDecoder(fp, allow_duplicate_keys=False).decode()
    except (cbor2.CBORDecodeError, ValueError, TypeError, RecursionError) as exc:
        raise RecordError(f"not valid CBOR: {exc}") from exc
    if fp.tell() != len(data):
        raise RecordError(f"{len(data) - fp.tell()} trailing bytes after the CBOR item")
    return item


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes that are actually signed (RFC 9052 section 4.4)."""
    return cbor2.dumps(["Signature1", protected, external_aad, payload])


def sign1(
    payload: bytes, key: Ed25519PrivateKey, unprotected: Mapping[int, object] | None = None
) -> bytes:
    signature = key.sign(sig_structure(PROTECTED_EDDSA, payload))
    body = [PROTECTED_EDDSA, dict(unprotected or {}), payload, signature]
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body))


@dataclass(frozen=True, slots=True)
class Sign1:
    protected: bytes
    unprotected: Mapping[object, object]
    payload: bytes
    signature: bytes


def decode_sign1(data: bytes) -> Sign1:
    """Parse the structure without checking the signature."""
    item = strict_loads(data)
    if not isinstance(item, cbor2.CBORTag) or item.tag != COSE_SIGN1_TAG:
        raise RecordError("not a tagged COSE_Sign1 (tag 18)")
    body = item.value
    if not isinstance(body, Sequence) or isinstance(body, bytes | str) or len(body) != 4:
        raise RecordError("COSE_Sign1 must be an array of four items")
    protected, unprotected, payload, signature = body
    if not isinstance(protected, bytes):
        raise RecordError("protected header is not a byte string")
    if not isinstance(unprotected, Mapping):
        raise RecordError("unprotected header is not a map")
    if not isinstance(payload, bytes):
        raise RecordError("payload is not a byte string (detached payloads are not used)")
    if not isinstance(signature, bytes) or len(signature) != 64:
        raise RecordError("signature is not a 64-byte Ed25519 signature")
    headers = strict_loads(protected) if protected else {}
    if not isinstance(headers, Mapping):
        raise RecordError("protected header does not decode to a map")
    alg = headers.get(HEADER_ALG)
    if type(alg) is not int or alg != ALG_EDDSA:
        raise RecordError("protected header does not name alg EdDSA (-8)")
    if HEADER_CRIT in headers:
        raise RecordError("protected header lists critical parameters (crit) this verifier lacks")
    if HEADER_ALG in unprotected:
        raise RecordError("alg must not appear in the unprotected header")
    return Sign1(protected, unprotected, payload, signature)


def verify1(data: bytes, key: Ed25519PublicKey) -> bytes:
    """Return the payload of a valid COSE_Sign1 signed by `key`, or raise RecordError."""
    msg = decode_sign1(data)
    try:
        key.verify(msg.signature, sig_structure(msg.protected, msg.payload))
    except InvalidSignature as exc:
        raise RecordError("signature does not verify") from exc
    return msg.payload
