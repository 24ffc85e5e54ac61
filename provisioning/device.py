"""One-step provisioning for benches and CI fleets: both sides of enrollment on one machine.

`provision_device` runs the device's `enroll`, the fleet's `approve` and the device's
`install` in a row, exactly the path a technician takes with two machines
(docs/provisioning.md), so fleets made this way exercise the real code. The keys are still
generated in the device folder and never copied; only the request and the bundle pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.identity.enroll import SIGNING, enroll, install
from provisioning.fleet import Fleet
from provisioning.registry import ProvisioningError, RegistryError

__all__ = ["DeviceFiles", "ProvisioningError", "provision_device", "registry_path"]


@dataclass(frozen=True, slots=True)
class DeviceFiles:
    device: str
    directory: Path
    config: Path
    key: Path  # the record-signing key
    fingerprint: str


def registry_path(fleet: Path) -> Path:
    return fleet / "registry.db"


def provision_device(
    fleet: Path | Fleet,
    device: str,
    out: Path,
    *,
    broker_host: str,
    broker_port: int,
    now_ms: int,
    center_pub: Path | None = None,
    tier: str | None = None,
    team: str | None = None,
    plan: bytes | None = None,
    tls: bool = True,
) -> DeviceFiles:
    """Enroll, approve and install `device` in `out` (a fleet folder is made if missing).

    `tls=False` leaves the broker section without certificates, for plain test brokers.
    `center_pub` is accepted for older callers; the bundle always carries the fleet's key.
    """
    del center_pub
    own = not isinstance(fleet, Fleet)
    f = Fleet.init(fleet, now_ms) if not isinstance(fleet, Fleet) else fleet
    try:
        request = enroll(out, now_ms, fleet_pin=f.fingerprint, force=True)
        approved = f.approve(
            request,
            device,
            now_ms,
            tier=tier,
            team=team,
            plan=plan,
            broker=(broker_host, broker_port),
            replace=True,
        )
        installed = install(out, approved.bundle)
    except RegistryError:
        raise
    except Exception as exc:
        raise ProvisioningError(f"provisioning {device} in {out}: {exc}") from exc
    finally:
        if own:
            f.close()
    if not tls:
        text = installed.config.read_text(encoding="utf-8")
        plain = [
            ln for ln in text.splitlines() if not ln.startswith(("ca =", "cert =", "cert_key ="))
        ]
        installed.config.write_text("\n".join(plain) + "\n", encoding="utf-8")
    return DeviceFiles(device, out, installed.config, out / SIGNING, approved.fingerprint)
