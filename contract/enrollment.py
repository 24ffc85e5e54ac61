"""Enrollment files: the device's request and the fleet's answer (the bundle). Pure.

Both are COSE_Sign1 messages over a CBOR map with text keys (docs/provisioning.md), so the
files are self-describing and their integrity needs nothing beyond what records already use.

* The **request** is signed by the device's own new Ed25519 record key (proof that the
  device holds it); its two CSRs prove the same for the TLS keys. It carries the public
  halves of the current key pair and of a pre-committed *next* pair, used by a later
  rotation, so that no private key ever leaves the device, not even when it rotates.
* The **bundle** is signed by the fleet's center key, whose public half it carries. It
  names the request it answers (SHA-256 of the request file): a bundle for another device
  or another enrollment is refused by that, a tampered one by its signature, a bundle from
  a foreign fleet by the fleet fingerprint the device was told to trust (or already trusts).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract import bounds as b
from contract.cose import decode_sign1, sig_structure, sign1, strict_loads
from contract.errors import RecordError, RemoteError
from contract.protocol import DEVICE_ID

__all__ = [
    "BUNDLE_KIND",
    "REQUEST_KIND",
    "Bundle",
    "EnrollmentError",
    "Request",
    "decode_bundle",
    "decode_request",
    "encode_bundle",
    "encode_request",
    "fleet_fingerprint",
]

VERSION = 1
REQUEST_KIND = "picket-enrollment-request"
BUNDLE_KIND = "picket-enrollment-bundle"
MAX_FILE = 4 * 1024 * 1024  # a bundle with a district's plan stays far below this
NONCE_LEN = 16


class EnrollmentError(RemoteError):
    """A request or bundle that does not parse, verify or fit this device / fleet."""


def fleet_fingerprint(center_key: bytes) -> str:
    """The fleet's identity as technicians compare it: SHA-256 of the center key, 128 bits."""
    digest = hashlib.sha256(b"picket-fleet:" + center_key).hexdigest()[:32]
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4))


def _csr(der: object, what: str) -> x509.CertificateSigningRequest:
    if not isinstance(der, bytes):
        raise EnrollmentError(f"{what} is not a byte string")
    try:  # InvalidVersion is not a ValueError
        csr = x509.load_der_x509_csr(der)
    except (ValueError, x509.InvalidVersion) as exc:
        raise EnrollmentError(f"{what} is not a DER certificate request: {exc}") from exc
    try:  # a request that parses can still hold a damaged or unknown key or signature
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise EnrollmentError(f"{what}: its key or signature cannot be read: {exc}") from exc
    if not valid:
        raise EnrollmentError(f"{what}: its signature does not verify")
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise EnrollmentError(f"{what} is not for an EC P-256 key")
    return csr


def _bytes(m: Mapping[object, object], key: str, length: int | None = None) -> bytes:
    v = m.get(key)
    if not isinstance(v, bytes) or (length is not None and len(v) != length):
        size = "" if length is None else f" of {length} bytes"
        raise EnrollmentError(f"{key!r} must be a byte string{size}")
    return v


def _text(m: Mapping[object, object], key: str, optional: bool = False) -> str | None:
    v = m.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v or len(v) > 200:
        raise EnrollmentError(f"{key!r} must be text of 1-200 characters")
    return v


def _uint(m: Mapping[object, object], key: str) -> int:
    v = m.get(key)
    if type(v) is not int or v < 0:
        raise EnrollmentError(f"{key!r} must be an unsigned integer")
    return v


def _time(m: Mapping[object, object], key: str) -> int:
    """A time in ms, within the contract's bound of every time (contract/bounds.py)."""
    v = m.get(key)
    if not b.fits(b.TIME, v):
        raise EnrollmentError(f"{key!r} must be {b.TIME.what}")
    assert isinstance(v, int)
    return v


def _open(raw: bytes, kind: str, key_field: str) -> tuple[Mapping[object, object], bytes]:
    """Decode, check kind and version, and verify under the key the message carries."""
    what = "enrollment request" if kind == REQUEST_KIND else "bundle"
    if len(raw) > MAX_FILE:
        raise EnrollmentError(f"{what} is {len(raw)} bytes, more than {MAX_FILE}")
    try:
        msg = decode_sign1(raw)
    except RecordError as exc:
        raise EnrollmentError(f"not a Picket {what} ({exc})") from None
    try:
        inner = strict_loads(msg.payload)
    except RecordError as exc:
        raise EnrollmentError(f"{what}: payload is not CBOR: {exc}") from None
    if not isinstance(inner, dict):
        raise EnrollmentError(f"{what}: payload is not a map")
    if inner.get("kind") != kind:
        raise EnrollmentError(f"not a Picket {what} (kind {b.shown(inner.get('kind'))})")
    if inner.get("v") != VERSION:
        raise EnrollmentError(
            f"{what} version {b.shown(inner.get('v'))}; this Picket reads {VERSION}"
        )
    public = _bytes(inner, key_field, 32)
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            msg.signature, sig_structure(msg.protected, msg.payload)
        )
    except InvalidSignature:
        raise EnrollmentError(
            f"{what} signature does not verify: the file was altered after it was signed"
        ) from None
    return inner, public


@dataclass(frozen=True, slots=True)
class Request:
    signing_key: bytes  # raw Ed25519 public key
    csr: bytes  # DER, for the TLS key
    next_signing_key: bytes
    next_csr: bytes
    facts: Mapping[str, str]
    nonce: bytes
    created_ms: int
    raw: bytes = b""

    @property
    def digest(self) -> bytes:
        return hashlib.sha256(self.raw).digest()

    def tls_public(self) -> ec.EllipticCurvePublicKey:
        key = x509.load_der_x509_csr(self.csr).public_key()
        assert isinstance(key, ec.EllipticCurvePublicKey)
        return key


def encode_request(req: Request, key: Ed25519PrivateKey) -> bytes:
    if key.public_key().public_bytes_raw() != req.signing_key:
        raise ValueError("the request must be signed by its own signing key")
    payload = {
        "kind": REQUEST_KIND,
        "v": VERSION,
        "signing_key": req.signing_key,
        "csr": req.csr,
        "next_signing_key": req.next_signing_key,
        "next_csr": req.next_csr,
        "facts": dict(req.facts),
        "nonce": req.nonce,
        "created_ms": req.created_ms,
    }
    return sign1(cbor2.dumps(payload, canonical=True), key)


def decode_request(raw: bytes) -> Request:
    m, public = _open(raw, REQUEST_KIND, "signing_key")
    facts = m.get("facts", {})
    if not isinstance(facts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and len(v) <= 200 for k, v in facts.items()
    ):
        raise EnrollmentError("'facts' must map text to text (each at most 200 characters)")
    csr = _bytes(m, "csr")
    next_csr = _bytes(m, "next_csr")
    _csr(csr, "'csr'")
    _csr(next_csr, "'next_csr'")
    next_key = _bytes(m, "next_signing_key", 32)
    if next_key == public:
        raise EnrollmentError("the next signing key repeats the current one")
    return Request(
        public, csr, next_key, next_csr, facts, _bytes(m, "nonce", NONCE_LEN),
        _time(m, "created_ms"), raw,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Bundle:
    device: str
    fleet: str  # the fleet's name, for messages
    request_digest: bytes  # SHA-256 of the request file this answers
    signing_key: bytes  # the device's record key, as registered
    cert: bytes  # DER: the device's TLS client certificate
    ca: bytes  # DER: the fleet CA certificate
    center_key: bytes  # raw Ed25519: signs this bundle and every command
    broker_host: str
    broker_port: int
    issued_ms: int
    tier: str | None = None
    team: str | None = None
    plan: bytes | None = None  # the initial plan (GeoJSON, docs/plans.md)

    @property
    def fingerprint(self) -> str:
        return fleet_fingerprint(self.center_key)

    def certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.cert)

    def ca_certificate(self) -> x509.Certificate:
        return x509.load_der_x509_certificate(self.ca)


def encode_bundle(b: Bundle, center: Ed25519PrivateKey) -> bytes:
    if center.public_key().public_bytes_raw() != b.center_key:
        raise ValueError("the bundle must be signed by the center key it carries")
    payload: dict[str, object] = {
        "kind": BUNDLE_KIND,
        "v": VERSION,
        "device": b.device,
        "fleet": b.fleet,
        "request": b.request_digest,
        "signing_key": b.signing_key,
        "cert": b.cert,
        "ca": b.ca,
        "center_key": b.center_key,
        "broker_host": b.broker_host,
        "broker_port": b.broker_port,
        "issued_ms": b.issued_ms,
    }
    for name, value in (("tier", b.tier), ("team", b.team), ("plan", b.plan)):
        if value is not None:
            payload[name] = value
    return sign1(cbor2.dumps(payload, canonical=True), center)


def decode_bundle(raw: bytes) -> Bundle:
    m, center = _open(raw, BUNDLE_KIND, "center_key")
    device = _text(m, "device")
    assert device is not None
    if not DEVICE_ID.fullmatch(device):
        raise EnrollmentError(f"bundle names an invalid device id {b.shown(device)}")
    port = _uint(m, "broker_port")
    if not 0 < port < 65536:
        raise EnrollmentError(f"bundle broker port {b.shown(port)} is out of range")
    plan = m.get("plan")
    if plan is not None and not isinstance(plan, bytes):
        raise EnrollmentError("'plan' must be a byte string")
    bundle = Bundle(
        device=device,
        fleet=_text(m, "fleet") or "",
        request_digest=_bytes(m, "request", 32),
        signing_key=_bytes(m, "signing_key", 32),
        cert=_bytes(m, "cert"),
        ca=_bytes(m, "ca"),
        center_key=center,
        broker_host=_text(m, "broker_host") or "",
        broker_port=port,
        issued_ms=_time(m, "issued_ms"),
        tier=_text(m, "tier", optional=True),
        team=_text(m, "team", optional=True),
        plan=plan,
    )
    try:
        bundle.certificate()
        bundle.ca_certificate()
    except (ValueError, x509.InvalidVersion) as exc:
        raise EnrollmentError(f"bundle certificate is not DER X.509: {exc}") from None
    return bundle
