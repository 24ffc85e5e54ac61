"""Does a bundle, or an installed device folder, agree with the fleet that made it?

`picket provision verify` answers this for a technician before a device goes out, or when
one will not connect. The answer is a list of independent checks, `Check(name, ok, detail)`,
rather than the first exception: a device that fails one check usually fails for a reason
the other checks point at (a key copied from another device shows as a key that is not the
registry's *and* a certificate for another key), so every disagreement is reported in one
run, each naming the file and the value that is wrong. Nothing here writes or prints; the
CLI (picket/provisioncmd.py) only formats the list and picks the exit code.

What is compared is what the device will be judged on elsewhere:

* the bundle's signature and its fleet key (the device trusts that key for commands);
* its TLS certificate: issued by this fleet's CA, valid now, naming the device, not revoked
  and the one the registry holds (the broker checks the first four, an operator the last);
* the record key against the registry's current key for the device (the center refuses
  records signed by any other key);
* in a device folder also each private key against its public half (the TLS key against
  the certificate, the record key against the registry), the key files' permissions
  (refused as the agent refuses them), and config.toml as the agent loads it.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from agent.config import AgentConfig, load_config, read_center_key
from agent.identity.enroll import BUNDLE, CA, CENTER, CERT, CONFIG, SIGNING, TLS_KEY, load_private
from contract.enrollment import Bundle, decode_bundle
from contract.errors import PicketError
from provisioning.ca import check_chain
from provisioning.fleet import Fleet
from provisioning.registry import RegistryError, fingerprint

__all__ = ["Check", "all_ok", "verify_bundle", "verify_device_dir"]


class Check(NamedTuple):
    """One comparison: what was checked, whether it held, and why (naming the file)."""

    name: str
    ok: bool
    detail: str


def all_ok(checks: list[Check]) -> bool:
    return all(c.ok for c in checks)


def _utc(ms: int) -> str:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def _common_name(cert: x509.Certificate) -> str | None:
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names:
        return None
    value = names[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


# --- shared checks --------------------------------------------------------------------------


def _fleet_key(fleet: Fleet, b: Bundle, where: str) -> Check:
    if b.center_key == fleet.center_public:
        return Check("fleet key", True, f"{where} is signed by this fleet ({fleet.fingerprint})")
    return Check(
        "fleet key",
        False,
        f"{where} is signed by fleet {b.fleet!r} ({b.fingerprint}), not by this fleet "
        f"{fleet.name!r} ({fleet.fingerprint})",
    )


def _certificate(
    fleet: Fleet, cert: x509.Certificate, device: str, now_ms: int, where: str
) -> list[Check]:
    """Chain and validity, name, revocation, and whether the registry holds this one."""
    checks: list[Check] = []
    try:
        check_chain(cert, fleet.ca_cert, now_ms)
        checks.append(
            Check(
                "certificate chain",
                True,
                f"{where} is issued by this fleet's CA, valid until "
                f"{cert.not_valid_after_utc:%Y-%m-%d}",
            )
        )
    except RegistryError as exc:  # CaError
        checks.append(Check("certificate chain", False, f"{where}: {exc}"))
    cn = _common_name(cert)
    checks.append(
        Check("certificate name", True, f"{where} names {device}")
        if cn == device
        else Check("certificate name", False, f"{where} names {cn!r}, not device {device!r}")
    )
    serial = f"{cert.serial_number:x}"
    revoked = fleet.registry.cert_revoked(cert.serial_number)
    entry = fleet.registry.entry(device)
    if revoked is not None:
        checks.append(
            Check(
                "certificate revocation",
                False,
                f"{where} (serial {serial}) was revoked at {_utc(revoked)}: the broker refuses it",
            )
        )
    elif entry is None or entry.cert_serial != serial:
        held = "none" if entry is None or entry.cert_serial is None else entry.cert_serial
        checks.append(
            Check(
                "certificate revocation",
                False,
                f"{where} (serial {serial}) is not the certificate the registry holds for "
                f"{device} (serial {held})",
            )
        )
    else:
        checks.append(
            Check("certificate revocation", True, f"{where} (serial {serial}) is not revoked")
        )
    return checks


def _registry(fleet: Fleet, device: str, public_key: bytes, where: str) -> list[Check]:
    """The device is registered, not revoked, and `public_key` is its current record key."""
    entry = fleet.registry.entry(device)
    if entry is None:
        return [
            Check(
                "registry entry",
                False,
                f"device {device!r} is not in this fleet's registry {fleet.registry.path}",
            )
        ]
    if entry.revoked_ms is not None:
        state = Check(
            "registry entry", False, f"device {device} was revoked at {_utc(entry.revoked_ms)}"
        )
    else:
        state = Check("registry entry", True, f"device {device} is registered")
    if entry.public_key == public_key:
        key = Check("record key", True, f"{where} is {device}'s current key ({entry.fingerprint})")
    else:
        key = Check(
            "record key",
            False,
            f"{where} has key {fingerprint(public_key)}, but the registry's current key for "
            f"{device} is {entry.fingerprint}",
        )
    return [state, key]


# --- a bundle -------------------------------------------------------------------------------


def verify_bundle(fleet: Fleet, raw: bytes, now_ms: int, *, where: str = "bundle") -> list[Check]:
    """Check a bundle file's bytes against `fleet`; `where` names the file in the details."""
    try:
        b = decode_bundle(raw)
    except PicketError as exc:
        return [Check("bundle signature", False, f"{where}: {exc}")]
    checks = [
        Check("bundle signature", True, f"{where} is a bundle for {b.device}, signature valid"),
        _fleet_key(fleet, b, where),
    ]
    fleet_ca = fleet.ca_cert.public_bytes(serialization.Encoding.DER)
    checks.append(
        Check("fleet CA", True, f"{where} carries this fleet's CA certificate")
        if b.ca == fleet_ca
        else Check("fleet CA", False, f"{where} carries a CA certificate that is not this fleet's")
    )
    checks += _certificate(fleet, b.certificate(), b.device, now_ms, f"{where}'s certificate")
    checks += _registry(fleet, b.device, b.signing_key, f"{where}'s record key")
    return checks


# --- an installed device folder -------------------------------------------------------------


class _Paths(NamedTuple):
    signing: Path
    tls_key: Path
    cert: Path
    ca: Path
    center: Path


def _paths(folder: Path, cfg: AgentConfig | None) -> _Paths:
    """The files the agent would use: config.toml's names, else the enrollment layout."""
    tls = None if cfg is None else cfg.tls
    return _Paths(
        signing=folder / SIGNING if cfg is None else cfg.key_path,
        tls_key=tls.key_path if tls is not None and tls.key_path else folder / TLS_KEY,
        cert=tls.cert_path if tls is not None and tls.cert_path else folder / CERT,
        ca=tls.ca_path if tls is not None and tls.ca_path else folder / CA,
        center=folder / CENTER
        if cfg is None or cfg.center_key_path is None
        else cfg.center_key_path,
    )


def _config(folder: Path) -> tuple[Check, AgentConfig | None]:
    path = folder / CONFIG
    if not path.exists():
        return Check(
            "config", False, f"no {path}: install a bundle there (picket agent install)"
        ), None
    try:
        cfg = load_config(path)
    except PicketError as exc:
        return Check("config", False, str(exc)), None
    where = f"{cfg.broker_host}:{cfg.broker_port}"
    tls = "TLS" if cfg.tls is not None else "no TLS"
    return Check("config", True, f"{path} loads: device {cfg.device}, broker {where} ({tls})"), cfg


def _installed_bundle(folder: Path) -> Bundle | None:
    try:
        return decode_bundle((folder / BUNDLE).read_bytes())
    except (OSError, PicketError):
        return None


def _device_id(folder: Path, cfg: AgentConfig | None, cert: x509.Certificate | None) -> str | None:
    if cfg is not None:
        return cfg.device
    b = _installed_bundle(folder)
    if b is not None:
        return b.device
    return None if cert is None else _common_name(cert)


def _load_cert(path: Path) -> tuple[Check | None, x509.Certificate | None]:
    try:
        return None, x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return Check("certificate", False, f"no certificate at {path}: install a bundle"), None
    except (OSError, ValueError) as exc:
        return Check("certificate", False, f"{path} is not a PEM certificate: {exc}"), None


def _signing_key(fleet: Fleet, path: Path, device: str) -> list[Check]:
    try:
        key = load_private(path)
    except PicketError as exc:
        return [Check("record key", False, str(exc))]
    if not isinstance(key, Ed25519PrivateKey):
        return [Check("record key", False, f"{path} is not an Ed25519 private key")]
    return _registry(fleet, device, key.public_key().public_bytes_raw(), str(path))


def _tls_key(path: Path, cert_path: Path, cert: x509.Certificate | None) -> Check:
    try:
        key = load_private(path)
    except PicketError as exc:
        return Check("TLS key", False, str(exc))
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return Check("TLS key", False, f"{path} is not an EC private key")
    if cert is None:
        return Check("TLS key", False, f"{path}: no certificate at {cert_path} to compare with")
    if key.public_key() != cert.public_key():
        return Check(
            "TLS key",
            False,
            f"{path} is not the key {cert_path} certifies (a key of another device, or of an "
            "earlier enrollment)",
        )
    return Check("TLS key", True, f"{path} matches {cert_path}")


def _ca_file(fleet: Fleet, path: Path) -> Check:
    try:
        ca = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Check("fleet CA", False, f"{path}: {exc}")
    if ca != fleet.ca_cert:
        return Check("fleet CA", False, f"{path} is not this fleet's CA certificate")
    return Check("fleet CA", True, f"{path} is this fleet's CA certificate")


def _center_file(fleet: Fleet, path: Path) -> Check:
    try:
        public = read_center_key(path).public_bytes_raw()
    except PicketError as exc:
        return Check("fleet key", False, str(exc))
    if public != fleet.center_public:
        return Check(
            "fleet key",
            False,
            f"{path} is not this fleet's center key ({fleet.fingerprint}): the device would "
            "refuse this fleet's commands",
        )
    return Check("fleet key", True, f"{path} is this fleet's center key ({fleet.fingerprint})")


def _bundle_file(fleet: Fleet, folder: Path, device: str, cert: x509.Certificate | None) -> Check:
    path = folder / BUNDLE
    try:
        b = decode_bundle(path.read_bytes())
    except FileNotFoundError:
        return Check("installed bundle", True, f"no {path} (not needed to run)")
    except (OSError, PicketError) as exc:
        return Check("installed bundle", False, f"{path}: {exc}")
    if b.center_key != fleet.center_public:
        return Check("installed bundle", False, _fleet_key(fleet, b, str(path)).detail)
    if b.device != device:
        return Check("installed bundle", False, f"{path} is for {b.device!r}, not {device!r}")
    if cert is not None and b.certificate() != cert:
        return Check("installed bundle", False, f"{path} carries another certificate")
    return Check("installed bundle", True, f"{path} is this fleet's bundle for {device}")


def verify_device_dir(fleet: Fleet, folder: Path, now_ms: int) -> list[Check]:
    """Check an installed device folder against `fleet`."""
    if not folder.is_dir():
        return [Check("device folder", False, f"{folder} is not a folder")]
    config, cfg = _config(folder)
    paths = _paths(folder, cfg)
    cert_problem, cert = _load_cert(paths.cert)
    device = _device_id(folder, cfg, cert)
    checks = [config]
    if device is None:
        checks.append(
            Check(
                "device id",
                False,
                f"{folder}: no config.toml, bundle or certificate names the device",
            )
        )
        return checks
    checks += _signing_key(fleet, paths.signing, device)
    checks.append(_tls_key(paths.tls_key, paths.cert, cert))
    if cert_problem is not None:
        checks.append(cert_problem)
    elif cert is not None:
        checks += _certificate(fleet, cert, device, now_ms, str(paths.cert))
    checks.append(_ca_file(fleet, paths.ca))
    checks.append(_center_file(fleet, paths.center))
    checks.append(_bundle_file(fleet, folder, device, cert))
    return checks
