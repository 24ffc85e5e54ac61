"""The fleet folder: the roots of trust a technician holds, and the steps that use them.

    FLEET/ca.key  ca.crt       broker TLS CA (EC P-256; key 0600)
    FLEET/center.key center.pub   the center's Ed25519 command and bundle key (key 0600)
    FLEET/registry.db          devices, their keys and certificates (provisioning/registry.py)
    FLEET/crl.pem              revoked certificates, rewritten by every revocation
    FLEET/services-ca.key .crt the CA of the fleet's services (center, gateways; key 0600),
                               made on first use: apart from the devices' CA, so that the
                               broker's service listener admits no device (docs/provisioning.md)

Every step is a method on `Fleet`, which opens the folder once and refuses a folder that is
not a fleet with the command that makes one. Times are passed in (`now_ms`).
"""

from __future__ import annotations

import datetime as dt
import json
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from contract.enrollment import Bundle, decode_request, encode_bundle, fleet_fingerprint
from contract.errors import RemoteError
from contract.keyfiles import too_open, write_private, write_public
from contract.protocol import DEVICE_ID
from contract.tls import BrokerTls
from provisioning import ca
from provisioning.center import center_key_path, create_center_key, load_center_key
from provisioning.registry import ProvisioningError, Registry, fingerprint

CENTER_CN = "picket-center"  # the center's certificate name, hence its broker user name
GATEWAY_CN = "picket-gateway"  # a LoRa gateway bridge's (center/lora_gateway.py)
RESERVED = (CENTER_CN, GATEWAY_CN)
SERVICES_CA = "services-ca"  # FLEET/services-ca.key, .crt
DEFAULT_BROKER_PORT = 8883
HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.:-]{0,251}[A-Za-z0-9])?")  # names, IPv4, IPv6
TIERS = ("street", "community", "grid", "dock")


def _ms_of(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


def check_device_id(device: str) -> None:
    if not DEVICE_ID.fullmatch(device):
        raise ProvisioningError(
            f"device id {device!r} must be 1-64 letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    if device.startswith(RESERVED):
        raise ProvisioningError(
            f"device id {device!r}: ids starting {' or '.join(map(repr, RESERVED))} are reserved"
        )


@dataclass(frozen=True, slots=True)
class Approved:
    bundle: bytes
    device: str
    fingerprint: str  # of the device's record key, as on its label
    cert_serial: int


class Fleet:
    def __init__(self, folder: Path) -> None:
        self.dir = folder
        if not (folder / "ca.crt").exists() or not center_key_path(folder).exists():
            raise ProvisioningError(
                f"{folder} is not a fleet folder (no ca.crt / center.key): "
                f"make one with `picket provision init --fleet {folder}`"
            )
        try:
            self.ca_cert = x509.load_pem_x509_certificate((folder / "ca.crt").read_bytes())
        except (OSError, ValueError) as exc:
            raise ProvisioningError(f"{folder / 'ca.crt'}: {exc}") from exc
        self.center_key: Ed25519PrivateKey = load_center_key(folder)
        self.center_public = self.center_key.public_key().public_bytes_raw()
        self.registry = Registry(folder / "registry.db")
        self.name = self.registry.setting("name") or folder.name
        self._ca_key: ec.EllipticCurvePrivateKey | None = None
        self._services: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None = None

    def close(self) -> None:
        self.registry.close()

    def __enter__(self) -> Fleet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def fingerprint(self) -> str:
        return fleet_fingerprint(self.center_public)

    @property
    def crl_path(self) -> Path:
        return self.dir / "crl.pem"

    def broker(self) -> tuple[str, int]:
        host = self.registry.setting("broker_host") or "127.0.0.1"
        return host, int(self.registry.setting("broker_port") or DEFAULT_BROKER_PORT)

    def ca_key(self) -> ec.EllipticCurvePrivateKey:
        if self._ca_key is None:
            self._ca_key = self._load_ca_key()
        return self._ca_key

    def services_ca(self, now_ms: int) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
        """The CA that certifies the fleet's services (the center, LoRa gateways), made on
        first use (a fleet from before it gets one then). Services share a certificate name
        across workers, so their listener cannot bind client ids to names as the devices'
        does; a CA of their own keeps every device certificate off that listener."""
        if self._services is None:
            key_path, cert_path = self.dir / f"{SERVICES_CA}.key", self.dir / f"{SERVICES_CA}.crt"
            if not cert_path.exists():
                key, cert = ca.make_ca(f"{self.name} services", now_ms)
                write_private(key_path, ca.key_pem(key))
                write_public(cert_path, ca.pem(cert))
            try:
                cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise ProvisioningError(f"{cert_path}: {exc}") from exc
            self._services = (self._load_ca_key(key_path, "services CA key"), cert)
        return self._services

    @property
    def has_services_ca(self) -> bool:
        return (self.dir / f"{SERVICES_CA}.crt").exists()

    def _load_ca_key(
        self, path: Path | None = None, what: str = "CA key"
    ) -> ec.EllipticCurvePrivateKey:
        path = path or self.dir / "ca.key"
        try:
            problem = too_open(path, what)
            if problem is not None:
                raise ProvisioningError(problem)
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError) as exc:
            raise ProvisioningError(f"{what} {path}: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ProvisioningError(f"{what} {path}: not an EC private key")
        return key

    # -- steps ----------------------------------------------------------------------------

    @classmethod
    def init(
        cls,
        folder: Path,
        now_ms: int,
        *,
        name: str | None = None,
        broker_host: str = "127.0.0.1",
        broker_port: int = DEFAULT_BROKER_PORT,
    ) -> Fleet:
        """Make a fleet folder; an existing fleet is opened unchanged (its keys are the
        roots every device trusts: re-running init must never replace them)."""
        if (folder / "ca.crt").exists():
            return cls(folder)
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o700)
        fleet_name = name or folder.resolve().name
        key, cert = ca.make_ca(fleet_name, now_ms)
        write_private(folder / "ca.key", ca.key_pem(key))
        write_public(folder / "ca.crt", ca.pem(cert))
        create_center_key(folder)
        with Registry(folder / "registry.db") as reg:
            reg.set_setting("name", fleet_name)
            reg.set_setting("broker_host", broker_host)
            reg.set_setting("broker_port", str(broker_port))
        fleet = cls(folder)
        fleet.write_crl(now_ms)
        return fleet

    def approve(
        self,
        request_raw: bytes,
        device: str,
        now_ms: int,
        *,
        tier: str | None = None,
        team: str | None = None,
        plan: bytes | None = None,
        broker: tuple[str, int] | None = None,
        replace: bool = False,
        days: int = ca.CERT_DAYS,
    ) -> Approved:
        """Check a device's request, register it as `device`, return its signed bundle."""
        check_device_id(device)
        if tier is not None and tier not in TIERS:
            raise ProvisioningError(f"tier {tier!r} is not one of {', '.join(TIERS)}")
        try:
            req = decode_request(request_raw)
        except RemoteError as exc:
            raise ProvisioningError(f"enrollment request refused: {exc}") from exc
        if team is not None and not DEVICE_ID.fullmatch(team):
            raise ProvisioningError(f"team {team!r} must be 1-64 letters, digits, '.', '_' or '-'")
        csr = x509.load_der_x509_csr(req.csr)
        cert = ca.issue_client(self.ca_key(), self.ca_cert, device, csr, now_ms, days=days)
        host, port = broker or self.broker()
        if not HOST.fullmatch(host):
            raise ProvisioningError(f"broker host {host!r} is not a host name or IP address")
        bundle = Bundle(
            device=device,
            fleet=self.name,
            request_digest=req.digest,
            signing_key=req.signing_key,
            cert=cert.public_bytes(serialization.Encoding.DER),
            ca=self.ca_cert.public_bytes(serialization.Encoding.DER),
            center_key=self.center_public,
            broker_host=host,
            broker_port=port,
            issued_ms=now_ms,
            tier=tier,
            team=team,
            plan=plan,
        )
        raw = encode_bundle(bundle, self.center_key)
        replaced = self.registry.entry(device) is not None
        self.registry.enroll(
            device,
            req.signing_key,
            now_ms,
            cert_serial=cert.serial_number,
            cert_not_after_ms=_ms_of(cert.not_valid_after_utc),
            replace=replace,
            tier=tier,
            team=team,
            facts=dict(req.facts),
            next_public_key=req.next_signing_key,
            next_csr=req.next_csr,
        )
        if replaced:  # its earlier certificates are on the CRL now: the old handset is out
            self.write_crl(now_ms)
        return Approved(raw, device, fingerprint(req.signing_key), cert.serial_number)

    def issue_center(self, out: Path, now_ms: int) -> Path:
        """The center's client certificate and key (generated here: the center is the
        fleet's own machine), with the CA, in `out`: center.crt, center.key, ca.crt."""
        return self.issue_service(CENTER_CN, "center", out, now_ms)

    def issue_service(self, cn: str, stem: str, out: Path, now_ms: int) -> Path:
        """A fleet service's client identity (the center, a LoRa gateway): its key made
        here, its certificate named `cn` (its broker user name) from the services CA, and
        the fleet CA (which issued the broker's certificate), in `out` as STEM.key (0600),
        STEM.crt and ca.crt."""
        if cn not in RESERVED:
            raise ProvisioningError(f"{cn!r} is not a fleet service ({', '.join(RESERVED)})")
        out.mkdir(parents=True, exist_ok=True)
        key = ca.new_tls_key()
        csr = (
            x509.CertificateSigningRequestBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .sign(key, hashes.SHA256())
        )
        services_key, services_cert = self.services_ca(now_ms)
        cert = ca.issue_client(services_key, services_cert, cn, csr, now_ms)
        write_private(out / f"{stem}.key", ca.key_pem(key))
        write_public(out / f"{stem}.crt", ca.pem(cert))
        write_public(out / "ca.crt", ca.pem(self.ca_cert))
        return out

    def revoke(self, device: str, now_ms: int) -> int:
        """Revoke the device's keys and certificates and rewrite the CRL; returns how many
        certificates were revoked."""
        count = self.registry.revoke(device, now_ms)
        self.write_crl(now_ms)
        return count

    def write_crl(self, now_ms: int) -> Path:
        """Rewrite FLEET/crl.pem, and the copy in every broker folder made for this fleet
        (which adds the services CA's, empty, CRL: OpenSSL wants one from every issuer)."""
        crl = ca.pem(
            ca.make_crl(self.ca_key(), self.ca_cert, self.registry.revoked_certs(), now_ms)
        )
        write_public(self.crl_path, crl)
        if self.has_services_ca:
            crl += ca.pem(ca.make_crl(*self.services_ca(now_ms), (), now_ms))
        for folder in json.loads(self.registry.setting("broker_dirs") or "[]"):
            if Path(folder).is_dir():
                write_public(Path(folder) / "crl.pem", crl)
        return self.crl_path


def service_tls(folder: Path, stem: str = "center") -> ssl.SSLContext:
    """The client TLS context of a service identity that `Fleet.issue_service` wrote into
    `folder` (STEM.crt, STEM.key, ca.crt): the center's, or a LoRa gateway's."""
    return BrokerTls(folder / "ca.crt", folder / f"{stem}.crt", folder / f"{stem}.key").context()
