"""The device's side of enrollment: make keys here, ask for a certificate, install the answer.

`enroll` generates the record key (Ed25519) and the TLS key (EC P-256), plus the
pre-committed next pair, in the device folder, each written 0600 from its first byte, and
returns the request (contract/enrollment.py) to hand to the technician. `install` checks the
bundle against those keys and the fleet this device trusts, then writes the certificate,
the CA, the center key, the plan and config.toml, each by atomic rename: an install that
fails half way leaves the previous configuration as it was.

Folder layout (docs/provisioning.md):
    signing.key  device.key        current record key, TLS key (device.crt certifies it)
    next/signing.key next/device.key   the pre-committed pair for the next rotation
    request.cbor                   the request, to match the bundle against
    fleet.pin                      the fleet fingerprint given at enrollment (optional)
    device.crt ca.crt center.pub config.toml plan.geojson bundle.cbor   after install
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.errors import AgentError
from contract.enrollment import (
    Bundle,
    EnrollmentError,
    Request,
    decode_bundle,
    decode_request,
    encode_request,
    fleet_fingerprint,
)
from contract.keyfiles import too_open, write_private, write_public

SIGNING, TLS_KEY, NEXT = "signing.key", "device.key", "next"
REQUEST, PIN, BUNDLE = "request.cbor", "fleet.pin", "bundle.cbor"
CERT, CA, CENTER, CONFIG, PLAN = "device.crt", "ca.crt", "center.pub", "config.toml", "plan.geojson"


class EnrollError(AgentError):
    pass


def _pkcs8(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def load_private(path: Path) -> Ed25519PrivateKey | ec.EllipticCurvePrivateKey:
    """A private key file; refused if anyone but its owner could read it."""
    try:
        problem = too_open(path, "key")
        if problem is not None:
            raise EnrollError(problem)
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise EnrollError(f"no key at {path}: run `picket agent enroll` first") from None
    except (OSError, ValueError) as exc:
        raise EnrollError(f"key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise EnrollError(f"key {path}: neither Ed25519 nor EC")
    return key


def _csr(key: ec.EllipticCurvePrivateKey) -> bytes:
    # The CA names the certificate after the device id it assigns; the CSR only proves the key.
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "picket-enrollment")])
    csr = x509.CertificateSigningRequestBuilder().subject_name(name).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.DER)


def device_facts(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What the technician sees when approving: host name, board, serial number."""
    facts = {"hostname": socket.gethostname(), "machine": platform.machine()}
    model = Path("/proc/device-tree/model")
    with contextlib.suppress(OSError):
        facts["model"] = model.read_text(errors="replace").strip("\x00\n ")[:200]
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.startswith("Serial"):
                facts["serial"] = line.partition(":")[2].strip()[:200]
    except OSError:
        pass
    facts.update(extra or {})
    return facts


def enroll(
    folder: Path,
    now_ms: int,
    *,
    facts: Mapping[str, str] | None = None,
    fleet_pin: str | None = None,
    force: bool = False,
) -> bytes:
    """Make this device's keys in `folder` and return its enrollment request.

    Refuses to replace keys that a certificate was already issued for unless `force`.
    """
    pin = None if fleet_pin is None else normalise_pin(fleet_pin)
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if (folder / CERT).exists() and not force:
        raise EnrollError(
            f"{folder} already holds an installed identity ({CERT}); enrolling again makes new "
            "keys and needs a new approval (pass --force to do so)"
        )
    (folder / NEXT).mkdir(mode=0o700, exist_ok=True)
    signing, tls = Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    nsigning, ntls = Ed25519PrivateKey.generate(), ec.generate_private_key(ec.SECP256R1())
    request = Request(
        signing_key=signing.public_key().public_bytes_raw(),
        csr=_csr(tls),
        next_signing_key=nsigning.public_key().public_bytes_raw(),
        next_csr=_csr(ntls),
        facts=device_facts(facts),
        nonce=secrets.token_bytes(16),
        created_ms=now_ms,
    )
    raw = encode_request(request, signing)
    write_private(folder / SIGNING, _pkcs8(signing))
    write_private(folder / TLS_KEY, _pkcs8(tls))
    write_private(folder / NEXT / SIGNING, _pkcs8(nsigning))
    write_private(folder / NEXT / TLS_KEY, _pkcs8(ntls))
    write_public(folder / REQUEST, raw)
    if pin is not None:
        write_public(folder / PIN, pin.encode() + b"\n")
    # The old identity's certificate and config name keys that no longer exist; the CA and
    # the center key stay: they are whom this device trusts, and a new bundle must match.
    for stale in (CERT, BUNDLE, CONFIG):
        (folder / stale).unlink(missing_ok=True)
    return raw


def _q(text: str) -> str:
    """A TOML basic string (JSON's escapes are TOML's, for these characters)."""
    return json.dumps(text, ensure_ascii=True)


_PIN = re.compile(r"[0-9a-f]{4}(-[0-9a-f]{4}){7}")


def normalise_pin(text: str) -> str:
    """A fleet fingerprint as typed (any case, spaces or dashes) in its canonical form."""
    digits = re.sub(r"[\s:-]", "", text).lower()
    pin = "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))
    if not _PIN.fullmatch(pin):
        raise EnrollError(
            f"fleet fingerprint {text!r} is not 32 hex digits (as `picket provision init` "
            "prints it: xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx-xxxx)"
        )
    return pin


def render_config(b: Bundle, *, plan: bool, outbox: str = "outbox.db") -> str:
    lines = [
        f"device = {_q(b.device)}",
        f"key = {_q(SIGNING)}",
        f"outbox = {_q(outbox)}",
        f"center_key = {_q(CENTER)}",
    ]
    if plan:
        lines.append(f"plan = {_q(PLAN)}")
    if b.team is not None:
        lines.append(f"team = {_q(b.team)}")
    lines += [
        "",
        "[broker]",
        f"host = {_q(b.broker_host)}",
        f"port = {b.broker_port}",
        f"ca = {_q(CA)}",
        f"cert = {_q(CERT)}",
        f"cert_key = {_q(TLS_KEY)}",
        "",
    ]
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class Installed:
    bundle: Bundle
    config: Path


def check_bundle(folder: Path, raw: bytes) -> Bundle:
    """The bundle, if it answers this folder's request, for its keys, from the trusted fleet."""
    try:
        request = decode_request((folder / REQUEST).read_bytes())
    except FileNotFoundError:
        raise EnrollError(
            f"{folder} has no enrollment request: run `picket agent enroll` there first"
        ) from None
    except OSError as exc:
        raise EnrollError(f"cannot read {folder / REQUEST}: {exc}") from exc
    b = decode_bundle(raw)
    trusted = _trusted_fleet(folder)
    if trusted is not None and trusted != b.fingerprint:
        raise EnrollmentError(
            f"foreign bundle: it was signed by fleet {b.fleet!r} ({b.fingerprint}), but this "
            f"device trusts fleet {trusted}"
        )
    if b.request_digest != request.digest:
        raise EnrollmentError(
            f"bundle for {b.device} answers a different enrollment request: it was made for "
            "another device, or for an earlier enrollment of this one"
        )
    if b.signing_key != request.signing_key:
        raise EnrollmentError("bundle registers a record key that is not this device's")
    cert, ca = b.certificate(), b.ca_certificate()
    if cert.public_key() != request.tls_public():
        raise EnrollmentError("bundle certificate is for a TLS key that is not this device's")
    try:
        cert.verify_directly_issued_by(ca)
    except Exception as exc:  # cryptography raises ValueError, TypeError or InvalidSignature
        raise EnrollmentError(f"bundle certificate was not issued by its CA: {exc}") from None
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not cn or cn[0].value != b.device:
        raise EnrollmentError(f"bundle certificate does not name device {b.device!r}")
    return b


def _trusted_fleet(folder: Path) -> str | None:
    pin = folder / PIN
    if pin.exists():
        return pin.read_text(encoding="utf-8").strip()
    center = folder / CENTER
    if center.exists():  # installed before: the fleet stays the same one
        from agent.config import read_center_key

        return fleet_fingerprint(read_center_key(center).public_bytes_raw())
    return None


def install(folder: Path, raw: bytes) -> Installed:
    b = check_bundle(folder, raw)
    write_public(folder / CA, _pem(b.ca_certificate()))
    write_public(folder / CERT, _pem(b.certificate()))
    write_public(folder / CENTER, b.center_key)
    if b.plan is not None:
        write_public(folder / PLAN, b.plan)
    write_public(folder / BUNDLE, raw)
    config = folder / CONFIG
    write_public(config, render_config(b, plan=b.plan is not None).encode())
    return Installed(b, config)


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)
