"""The fleet's certificate authority for broker TLS: X.509 with the `cryptography` package.

One EC P-256 CA per fleet signs three kinds of certificates: a device's client certificate
(common name = device id, the broker's user name), the center's client certificate, and
the broker's server certificate. P-256 because every broker, TLS stack and secure element
speaks it (Ed25519 TLS certificates are not yet universal); the records keep their own
Ed25519 keys (docs/records.md). Revocation is a CRL the broker loads (`crlfile`).

Pure functions over keys and times; the fleet folder (provisioning/fleet.py) owns files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable, Sequence

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from provisioning.registry import ProvisioningError

__all__ = [
    "CA_DAYS",
    "CERT_DAYS",
    "CRL_DAYS",
    "CaError",
    "check_chain",
    "issue_client",
    "issue_server",
    "key_pem",
    "make_ca",
    "make_crl",
    "new_tls_key",
    "pem",
]

CA_DAYS = 3650
CERT_DAYS = 825  # device and center certificates; the CA/Browser limit, generous for a field
CRL_DAYS = 365  # a CRL past its next update makes OpenSSL refuse every client: regenerate
BACKDATE = dt.timedelta(minutes=10)  # tolerate a broker clock a little behind


class CaError(ProvisioningError):
    """A certificate the fleet's CA will not issue (a request's signature or key type, a
    lifetime, no host name) or does not accept (not its own, expired)."""


def _utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def new_tls_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def pem(obj: x509.Certificate | x509.CertificateRevocationList) -> bytes:
    return obj.public_bytes(serialization.Encoding.PEM)


def _name(cn: str, fleet: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"Picket fleet {fleet}"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def make_ca(fleet: str, now_ms: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = new_tls_key()
    name = _name(f"Picket fleet CA {fleet}", fleet)
    now = _utc(now_ms)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _fleet_of(ca: x509.Certificate) -> str:
    orgs = ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    value = orgs[0].value if orgs else "Picket fleet ?"
    text = value if isinstance(value, str) else value.decode()
    return text.removeprefix("Picket fleet ")


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey,
    *,
    ca: x509.Certificate,
    cn: str,
    public: ec.EllipticCurvePublicKey,
    now_ms: int,
    days: int,
    usage: x509.ObjectIdentifier,
    serial: int | None = None,
) -> x509.CertificateBuilder:
    now = _utc(now_ms)
    return (
        x509.CertificateBuilder()
        .subject_name(_name(cn, _fleet_of(ca)))
        .issuer_name(ca.subject)
        .public_key(public)
        .serial_number(serial or x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )


def issue_client(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    cn: str,
    csr: x509.CertificateSigningRequest,
    now_ms: int,
    *,
    days: int = CERT_DAYS,
) -> x509.Certificate:
    """A client certificate for the key in `csr`, named `cn` whatever the CSR asked for."""
    if not csr.is_signature_valid:
        raise CaError("the certificate request's signature does not verify")
    public = csr.public_key()
    if not isinstance(public, ec.EllipticCurvePublicKey) or public.curve.name != "secp256r1":
        raise CaError("the certificate request must be for an EC P-256 key")
    if days < 1:
        raise CaError(f"certificate lifetime must be at least 1 day, not {days}")
    builder = _leaf(
        ca_key,
        ca=ca,
        cn=cn,
        public=public,
        now_ms=now_ms,
        days=days,
        usage=ExtendedKeyUsageOID.CLIENT_AUTH,
    )
    return builder.sign(ca_key, hashes.SHA256())


def issue_server(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    hosts: Sequence[str],
    now_ms: int,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The broker's key and certificate, valid for `hosts` (names or IP addresses)."""
    if not hosts:
        raise CaError("the broker certificate needs at least one host name or address")
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = new_tls_key()
    builder = _leaf(
        ca_key,
        ca=ca,
        cn=hosts[0],
        public=key.public_key(),
        now_ms=now_ms,
        days=CERT_DAYS,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
    ).add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def make_crl(
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    revoked: Iterable[tuple[int, int]],
    now_ms: int,
    days: int = CRL_DAYS,
) -> x509.CertificateRevocationList:
    """The CRL listing (serial, revoked at ms) pairs; valid `days` from now."""
    now = _utc(now_ms)
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=days))
    )
    for serial, at_ms in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(serial)
            .revocation_date(_utc(at_ms))
            .build()
        )
    return builder.sign(ca_key, hashes.SHA256())


def check_chain(cert: x509.Certificate, ca: x509.Certificate, now_ms: int) -> None:
    """Raise CaError unless `ca` signed `cert` and `cert` is valid at `now_ms`."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature) as exc:
        raise CaError(
            f"certificate {cert.subject.rfc4514_string()} was not issued by this fleet's CA "
            f"({ca.subject.rfc4514_string()})"
        ) from exc
    now = _utc(now_ms)
    if now < cert.not_valid_before_utc:
        raise CaError(
            f"certificate is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M}Z"
        )
    if now > cert.not_valid_after_utc:
        raise CaError(f"certificate expired on {cert.not_valid_after_utc:%Y-%m-%d %H:%M}Z")
