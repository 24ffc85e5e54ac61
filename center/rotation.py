"""Key rotation, the fleet's side: certificate, registry and a signed command; no private key.

A device committed to its next key pair when it enrolled (contract/enrollment.py): the
registry holds the public halves, a record key and a CSR for a TLS key. Rotating is then
a matter of public data only:

1. `collect_commitments` reads the receipts of rotations the devices carried out (stored
   by the center), verifies each against the registry's key history, and registers the
   next pair it announces (`Registry.commit_next`), so that a device can rotate again.
2. `prepare_rotation` issues a certificate for the committed TLS key, numbers and signs a
   ROTATE_KEYS command carrying it (`CommandSigner`, in the center database), and only then
   makes the committed record key current in the registry (`Registry.rotate`: the old key
   is retired, not revoked, so records it signed, including the rotation's own receipt,
   still verify).
3. The caller publishes `Rotation.command` (`center.commands.publish`).

The order of step 2 keeps every failure harmless: the center database is checked and the
command signed before the registry changes, so a missing database leaves the registry as
it was; a command signed but never published is a gap in the device's numbers. Once the
registry changed, the commitment is used up: a command lost or expired before the device
carried it out is sent again by `resend_rotation`, with the same certificate (the device
still holds that key as its next one; after rotating it refuses the copy, harmlessly).

A commitment is accepted only from a DONE receipt of the newest rotation command sent to
the device, while the certificate that command carried is still the device's current one
(not after a re-enrollment), signed by a key of the device's history not revoked at the
receipt's time, and only when it repeats none of the device's keys.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from center.commands import CommandSigner, Signed, last_sent, records_of
from contract.commands import CommandType, RotateKeys, read_stored
from contract.cose import decode_sign1
from contract.errors import RecordError
from contract.records import (
    Outcome,
    ReceiptKey,
    Record,
    RecordType,
    open_record,
    parse_payload,
)
from provisioning import ca
from provisioning.fleet import Fleet
from provisioning.registry import ProvisioningError, fingerprint

__all__ = [
    "DEFAULT_TTL_S",
    "Rotation",
    "collect_commitments",
    "prepare_rotation",
    "resend_rotation",
]

log = logging.getLogger(__name__)
DEFAULT_TTL_S = 7 * 86_400
ROTATE = int(CommandType.ROTATE_KEYS)


@dataclass(frozen=True)
class Rotation:
    device: str
    command: bytes  # the signed command, numbered in the center database: publish it
    number: int
    cert_serial: int
    new_fingerprint: str  # of the record key the device signs with after the rotation


def _last_rotation(center_db: Path, device: str) -> Signed | None:
    """The newest rotation command sent to `device`."""
    last = last_sent(center_db, CommandType.ROTATE_KEYS, device)
    return last[0] if last else None


def _cert_of(command: bytes) -> x509.Certificate:
    body = read_stored(command).body
    assert isinstance(body, RotateKeys)
    return x509.load_der_x509_certificate(body.cert)


def _receipt(fleet: Fleet, center_db: Path, device: str, number: int) -> Record | None:
    """The device's receipt for command `number`, verified against the registry's keys."""
    rows = records_of(center_db, device, RecordType.RECEIPT)
    trusted = fleet.registry.trust(device)
    for raw in rows:
        try:
            claimed = parse_payload(decode_sign1(raw).payload, raw)
        except RecordError:
            continue
        b = claimed.body
        if b.get(ReceiptKey.COMMAND) != number or b.get(ReceiptKey.COMMAND_TYPE) != ROTATE:
            continue
        for entry in trusted:
            if entry.revoked_ms is not None and claimed.header.time_ms >= entry.revoked_ms:
                continue
            try:
                return open_record(bytes(raw), entry.key)
            except RecordError:
                continue
        log.warning("%s: the receipt of rotation %d does not verify; ignored", device, number)
    return None


def _commitment(fleet: Fleet, device: str, receipt: Record) -> tuple[bytes, bytes] | None:
    """The next pair a DONE rotation receipt announces, if it is one the fleet may accept."""
    key, csr_der = (
        receipt.body.get(ReceiptKey.NEXT_SIGNING_KEY),
        receipt.body.get(ReceiptKey.NEXT_CSR),
    )
    if not isinstance(key, bytes) or len(key) != 32 or not isinstance(csr_der, bytes):
        log.warning("%s: rotation receipt without a next key pair", device)
        return None
    known = {e.key.public_bytes_raw() for e in fleet.registry.trust(device)}
    if key in known:
        log.warning("%s: rotation receipt repeats a key the device used before", device)
        return None
    if any(other.public_key == key for other in fleet.registry.entries()):
        log.warning("%s: rotation receipt announces another device's key", device)
        return None
    try:  # a CSR that parses can still hold a damaged or unknown key or signature
        csr = x509.load_der_x509_csr(csr_der)
        public = csr.public_key()
        valid = csr.is_signature_valid
    except (ValueError, x509.InvalidVersion, UnsupportedAlgorithm):
        log.warning("%s: rotation receipt: the next CSR is not a readable DER request", device)
        return None
    if (
        not valid
        or not isinstance(public, ec.EllipticCurvePublicKey)
        or public.curve.name != "secp256r1"
    ):
        log.warning("%s: rotation receipt: the next CSR is not a signed P-256 request", device)
        return None
    return key, csr_der


def collect_commitments(
    fleet: Fleet, center_db: Path, device: str | None = None, *, now_ms: int | None = None
) -> int:
    """Register the next key pairs that DONE rotation receipts at the center announce
    (for `device`, or every device), and revoke the certificates those rotations
    superseded (the CRL is rewritten when any was); returns how many pairs were registered."""
    superseded = registered = 0
    now = int(time.time() * 1000) if now_ms is None else now_ms
    for sent in last_sent(center_db, CommandType.ROTATE_KEYS, device):
        dev = sent.device
        entry = fleet.registry.entry(dev)
        if entry is None or entry.revoked_ms is not None or entry.has_next_key:
            continue
        if entry.cert_serial != f"{_cert_of(sent.raw).serial_number:x}":
            continue  # enrolled again since: that rotation is history
        receipt = _receipt(fleet, center_db, dev, sent.number)
        if receipt is None or receipt.body.get(ReceiptKey.OUTCOME) != Outcome.DONE:
            continue
        superseded += fleet.registry.supersede_certs(dev, _cert_of(sent.raw).serial_number, now)
        found = _commitment(fleet, dev, receipt)
        if found is None:
            continue
        fleet.registry.commit_next(dev, *found)
        registered += 1
        log.info("%s: next key pair %s registered", dev, fingerprint(found[0]))
    if superseded:
        fleet.write_crl(now)
    return registered


def _waiting(fleet: Fleet, device: str, center_db: Path) -> str:
    """Why `device` has no commitment to rotate to: what its last rotation is waiting for."""
    last = _last_rotation(center_db, device)
    if last is None:
        return (
            f"{device} has no pre-committed next key pair (enrolled before key rotation "
            "existed?): enroll it again"
        )
    number = last.number
    receipt = _receipt(fleet, center_db, device, number)
    if receipt is None:
        return (
            f"{device} has not answered rotation command {number} yet: publish it again, or "
            "sign it anew with resend_rotation if it expired"
        )
    if receipt.body.get(ReceiptKey.OUTCOME) != Outcome.DONE:
        reason = receipt.body.get(ReceiptKey.REASON)
        return f"{device} refused rotation command {number} ({reason}): enroll it again"
    return f"{device}: the receipt of rotation command {number} carries no usable next key pair"


def prepare_rotation(
    fleet: Fleet, device: str, center_db: Path, now_ms: int, *, ttl_s: int = DEFAULT_TTL_S
) -> Rotation:
    """Issue the certificate for `device`'s committed next TLS key, sign the ROTATE_KEYS
    command carrying it, and make its committed next record key current in the registry."""
    entry = fleet.registry.entry(device)
    if entry is None:
        raise ProvisioningError(f"no device {device!r} in the registry")
    if entry.revoked_ms is not None:
        raise ProvisioningError(f"{device} is revoked: it cannot rotate its keys")
    with CommandSigner(fleet.center_key, center_db) as signer:  # a center database, or refuse
        collect_commitments(fleet, center_db, device)
        commitment = fleet.registry.next_commitment(device)
        if commitment is None:
            raise ProvisioningError(_waiting(fleet, device, center_db))
        next_key, csr_der = commitment
        cert = ca.issue_client(
            fleet.ca_key(), fleet.ca_cert, device, x509.load_der_x509_csr(csr_der), now_ms
        )
        der = cert.public_bytes(serialization.Encoding.DER)
        signed = signer.build(device, RotateKeys(der), now_ms=now_ms, ttl_s=ttl_s)
    not_after = int(cert.not_valid_after_utc.timestamp() * 1000)
    new = fleet.registry.rotate(device, cert.serial_number, not_after, now_ms)
    assert new == next_key
    log.info("%s: rotation command %d, new key %s", device, signed.number, fingerprint(new))
    return Rotation(device, signed.raw, signed.number, cert.serial_number, fingerprint(new))


def resend_rotation(
    fleet: Fleet, device: str, center_db: Path, now_ms: int, *, ttl_s: int = DEFAULT_TTL_S
) -> Rotation:
    """Sign the certificate of `device`'s last rotation into a new command (the first was
    lost or expired), while that rotation has no receipt and its certificate is current."""
    entry = fleet.registry.entry(device)
    if entry is None or entry.revoked_ms is not None:
        raise ProvisioningError(f"no device {device!r} to resend a rotation to")
    last = _last_rotation(center_db, device)
    if last is None:
        raise ProvisioningError(f"{device} was never sent a key rotation")
    number = last.number
    if _receipt(fleet, center_db, device, number) is not None:
        raise ProvisioningError(f"{device} has answered rotation command {number} already")
    cert = _cert_of(last.raw)
    if entry.cert_serial != f"{cert.serial_number:x}":
        raise ProvisioningError(
            f"rotation command {number} carries a certificate that is not {device}'s current one"
        )
    der = cert.public_bytes(serialization.Encoding.DER)
    with CommandSigner(fleet.center_key, center_db) as signer:
        signed = signer.build(device, RotateKeys(der), now_ms=now_ms, ttl_s=ttl_s)
    return Rotation(device, signed.raw, signed.number, cert.serial_number, entry.fingerprint)
