"""Hostile enrollment files: each is refused with an EnrollmentError naming what was wrong.

The reproducers of the fuzz campaign (bench/fuzz.py, targets enroll-request and
enroll-bundle): integers too long to print in a message, a damaged certificate request
whose key cannot be read, times beyond what a store holds.
"""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

from contract import enrollment as e
from contract.bounds import TIME_MS_MAX
from contract.cose import decode_sign1, sign1

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
NEXT = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key().public_bytes_raw()
TLS = ec.derive_private_key(7, ec.SECP256R1())
NAME = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "h0001")])
NOW_MS = 1_772_323_740_000
HUGE = 2**20000  # 6,021 digits: str() of it raises ValueError


def _csr() -> bytes:
    csr = x509.CertificateSigningRequestBuilder().subject_name(NAME).sign(TLS, hashes.SHA256())
    return csr.public_bytes(Encoding.DER)


def _cert() -> bytes:
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    b = x509.CertificateBuilder().subject_name(NAME).issuer_name(NAME)
    b = b.public_key(TLS.public_key()).serial_number(1).not_valid_before(t)
    b = b.not_valid_after(t + dt.timedelta(days=365))
    return b.sign(TLS, hashes.SHA256()).public_bytes(Encoding.DER)


def request(csr: bytes | None = None, created_ms: int = NOW_MS) -> bytes:
    der = _csr() if csr is None else csr
    public = KEY.public_key().public_bytes_raw()
    req = e.Request(public, der, NEXT, der, {"serial": "x1"}, bytes(16), created_ms)
    return e.encode_request(req, KEY)


def bundle(**changes: object) -> bytes:
    fields: dict[str, object] = {
        "device": "h0001", "fleet": "f", "request_digest": bytes(32), "signing_key": NEXT,
        "cert": _cert(), "ca": _cert(), "center_key": KEY.public_key().public_bytes_raw(),
        "broker_host": "broker.local", "broker_port": 8883, "issued_ms": NOW_MS,
    }  # fmt: skip
    fields.update(changes)
    return e.encode_bundle(e.Bundle(**fields), KEY)  # type: ignore[arg-type]


def resigned(raw: bytes, **changes: object) -> bytes:
    """`raw`'s payload with `changes`, signed again by the key the payload names."""
    payload = cbor2.loads(decode_sign1(raw).payload)
    payload.update(changes)
    return sign1(cbor2.dumps(payload), KEY)


def test_valid_files_decode() -> None:
    assert e.decode_request(request()).created_ms == NOW_MS
    assert e.decode_bundle(bundle()).issued_ms == NOW_MS


@pytest.mark.parametrize(
    ("changes", "word"),
    [
        ({"kind": HUGE}, "kind an integer of about 6021 digits"),
        ({"v": HUGE}, "version an integer of about 6021 digits"),
        ({"v": "x" * 10_000}, r"version 'xxx.*… \(10002 characters\)"),
    ],
    ids=["kind", "version", "long-version"],
)
def test_a_value_too_long_to_print_is_named_briefly(changes: dict[str, object], word: str) -> None:
    for raw, decode in ((request(), e.decode_request), (bundle(), e.decode_bundle)):
        with pytest.raises(e.EnrollmentError, match=word):
            decode(resigned(raw, **changes))


def test_a_broker_port_too_long_to_print_is_refused() -> None:
    with pytest.raises(e.EnrollmentError, match="port an integer of about 6021 digits"):
        e.decode_bundle(bundle(broker_port=HUGE))


def _damaged_key(der: bytes) -> bytes:
    """The CSR with its EC point moved off the curve: it still parses as DER."""
    point = TLS.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
    at = der.index(point)
    return der[: at + 10] + bytes([der[at + 10] ^ 0x55]) + der[at + 11 :]


def test_a_csr_whose_key_cannot_be_read_is_refused() -> None:
    # Fuzz reproducer: csr.public_key() raised ValueError out of decode_request.
    with pytest.raises(e.EnrollmentError, match="'csr'"):
        e.decode_request(request(csr=_damaged_key(_csr())))


def test_a_csr_with_an_unknown_key_algorithm_is_refused() -> None:
    der = _csr()
    ec_oid = bytes.fromhex("06072a8648ce3d0201")  # id-ecPublicKey
    unknown = bytes.fromhex("06072a8648ce3d0209")  # an OID no library knows as a key type
    with pytest.raises(e.EnrollmentError, match="'csr'"):
        e.decode_request(request(csr=der.replace(ec_oid, unknown)))


@pytest.mark.parametrize(
    "created_ms", [TIME_MS_MAX + 1, 2**63, 2**64, HUGE], ids=["2200", "int64", "uint64", "huge"]
)
def test_a_request_time_beyond_the_bound_is_refused(created_ms: int) -> None:
    with pytest.raises(e.EnrollmentError, match="'created_ms' must be a time in ms"):
        e.decode_request(request(created_ms=created_ms))


@pytest.mark.parametrize(
    "issued_ms", [TIME_MS_MAX + 1, 2**63, 2**64, HUGE], ids=["2200", "int64", "uint64", "huge"]
)
def test_a_bundle_time_beyond_the_bound_is_refused(issued_ms: int) -> None:
    with pytest.raises(e.EnrollmentError, match="'issued_ms' must be a time in ms"):
        e.decode_bundle(bundle(issued_ms=issued_ms))


def test_times_at_the_bound_are_taken() -> None:
    assert e.decode_request(request(created_ms=TIME_MS_MAX)).created_ms == TIME_MS_MAX
    assert e.decode_bundle(bundle(issued_ms=0)).issued_ms == 0


def test_an_oversized_file_is_refused_before_it_is_decoded() -> None:
    raw = b"\x9b" + b"\xff" * 8 + bytes(e.MAX_FILE)
    for decode in (e.decode_request, e.decode_bundle):
        with pytest.raises(e.EnrollmentError, match=f"more than {e.MAX_FILE}"):
            decode(raw)


def _version(der: bytes, field: str, version: int) -> bytes:
    at = der.index(bytes.fromhex(field)) + len(bytes.fromhex(field)) - 1
    return der[:at] + bytes([version]) + der[at + 1 :]


def test_a_csr_of_an_unknown_version_is_refused() -> None:
    # Fuzz reproducer: x509.InvalidVersion ("32 is not a valid CSR version") is not a
    # ValueError, and escaped decode_request.
    with pytest.raises(e.EnrollmentError, match="'csr' is not a DER certificate request"):
        e.decode_request(request(csr=_version(_csr(), "020100", 0x20)))


def test_a_bundle_certificate_of_an_unknown_version_is_refused() -> None:
    bad = _version(_cert(), "a003020102", 7)
    for changes in ({"cert": bad}, {"ca": bad}):
        with pytest.raises(e.EnrollmentError, match=r"not DER X\.509"):
            e.decode_bundle(bundle(**changes))
