"""The device registry: which devices exist, the keys each has signed with, their certificates.

The technician's tools write it; the center only reads it. SQLite so that both can use it
at once (WAL), and so that approving, rotating or revoking is one transaction.

A device's record keys are kept as a history (`keys`): approval adds one, rotation retires
the old one without forgetting it (records it signed still verify), revocation stamps the
time after which records signed by the key are refused. Certificates (`certs`) are kept for
the CRL: revoking a device revokes every certificate it holds. Serial numbers are stored as
hex text, since X.509 serials are up to 159 bits.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from provisioning.errors import ProvisioningBaseError

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS keys (
    device TEXT NOT NULL,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    valid_from_ms INTEGER NOT NULL,
    retired_ms INTEGER,
    revoked_ms INTEGER,
    PRIMARY KEY (device, public_key)
);
CREATE INDEX IF NOT EXISTS keys_by_key ON keys (public_key);
CREATE TABLE IF NOT EXISTS certs (
    serial TEXT PRIMARY KEY,
    device TEXT NOT NULL,
    issued_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    revoked_ms INTEGER
);
CREATE TABLE IF NOT EXISTS fleet (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# Columns added to `devices` after the first release: added in place to older registries.
DEVICE_COLUMNS = {
    "tier": "TEXT",
    "team": "TEXT",
    "facts": "TEXT",
    "next_public_key": "BLOB",
    "next_csr": "BLOB",
    "revoked_ms": "INTEGER",
}


class RegistryError(ProvisioningBaseError):
    """The registry cannot be opened or does not allow the change; also the base of
    `ProvisioningError`, which callers catch as one."""


class ProvisioningError(RegistryError):
    """A provisioning step refused: the message says what was wrong and how to fix it."""


def fingerprint(public_key: bytes) -> str:
    """What a technician reads off a label: SHA-256 of the raw Ed25519 key, 128 bits, grouped."""
    digest = hashlib.sha256(public_key).hexdigest()[:32]
    return "-".join(digest[i : i + 4] for i in range(0, 32, 4))


@dataclass(frozen=True, slots=True)
class KeyEntry:
    """One record-signing key of a device; records it signed at or after `revoked_ms` are
    refused."""

    key: Ed25519PublicKey
    revoked_ms: int | None = None


@dataclass(frozen=True, slots=True)
class DeviceEntry:
    id: str
    public_key: bytes
    created_ms: int
    tier: str | None
    team: str | None
    revoked_ms: int | None
    cert_serial: str | None
    cert_not_after_ms: int | None
    has_next_key: bool

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "fingerprint": self.fingerprint,
            "tier": self.tier,
            "team": self.team,
            "created_ms": self.created_ms,
            "revoked_ms": self.revoked_ms,
            "cert_serial": self.cert_serial,
            "cert_not_after_ms": self.cert_not_after_ms,
            "next_key": self.has_next_key,
        }


REGISTRY_TABLES = ("devices", "keys", "certs")


def check_registry(path: Path) -> None:
    """RegistryError unless `path` is a SQLite file with a device registry's tables. Opened
    read-only, so a mistyped path is never made into an empty registry: what the center
    checks before it starts, instead of failing on its first batch."""
    if not path.exists():
        raise RegistryError(f"device registry {path} does not exist")
    if not path.is_file():
        raise RegistryError(f"{path} is not a device registry (it is not a file)")
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise RegistryError(f"cannot open device registry {path}: {exc}") from exc
    try:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    except sqlite3.Error as exc:
        raise RegistryError(f"{path} is not a device registry (not SQLite: {exc})") from exc
    finally:
        db.close()
    missing = [t for t in REGISTRY_TABLES if t not in {r[0] for r in rows}]
    if missing:
        raise RegistryError(f"{path} is not a device registry (it has no {missing[0]} table)")


class Registry:
    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
            else:
                self._db = sqlite3.connect(path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.executescript(SCHEMA)
                self._migrate()
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open device registry {path}: {exc}") from exc

    def _migrate(self) -> None:
        have = {r[1] for r in self._db.execute("PRAGMA table_info(devices)")}
        with self._tx():
            for name, kind in DEVICE_COLUMNS.items():
                if name not in have:
                    self._db.execute(f"ALTER TABLE devices ADD COLUMN {name} {kind}")
            self._db.execute(
                "INSERT OR IGNORE INTO keys (device, public_key, valid_from_ms) "
                "SELECT id, public_key, created_ms FROM devices"
            )

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction (the connection is in autocommit mode otherwise)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def data_version(self) -> int:
        """Changes whenever another connection commits (a cheap "has anything changed?")."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # -- writing --------------------------------------------------------------------------

    def enroll(
        self,
        device: str,
        public_key: bytes,
        now_ms: int,
        *,
        cert_serial: int,
        cert_not_after_ms: int,
        replace: bool,
        tier: str | None = None,
        team: str | None = None,
        facts: dict[str, object] | None = None,
        next_public_key: bytes | None = None,
        next_csr: bytes | None = None,
    ) -> None:
        """An approval, in one transaction: refuse what must not happen, revoke a replaced
        device's certificates, register the key and the new certificate."""
        with self._tx():
            for key in (public_key, next_public_key):
                if key is None:
                    continue
                row = self._db.execute(
                    "SELECT device, revoked_ms FROM keys WHERE public_key = ?", (key,)
                ).fetchone()
                if row is not None and row[1] is not None:
                    raise ProvisioningError(
                        f"this request's key was revoked (device {row[0]}): a revoked key is "
                        "never trusted again; enroll the device afresh (new keys)"
                    )
                if row is not None and row[0] != device:
                    raise ProvisioningError(
                        f"this request's key is already enrolled as {row[0]}: one key, one device"
                    )
            existing = self._db.execute(
                "SELECT public_key FROM devices WHERE id = ?", (device,)
            ).fetchone()
            if existing is not None and bytes(existing[0]) != public_key and not replace:
                raise ProvisioningError(
                    f"{device} is already enrolled with key {fingerprint(bytes(existing[0]))}; "
                    "pass --replace to give its id to this device (records of the old key "
                    "still verify)"
                )
            self._db.execute(
                "UPDATE certs SET revoked_ms = ? WHERE device = ? AND revoked_ms IS NULL",
                (now_ms, device),
            )
            self._upsert(
                device,
                public_key,
                now_ms,
                tier=tier,
                team=team,
                facts=facts,
                next_public_key=next_public_key,
                next_csr=next_csr,
            )
            self._db.execute(
                "INSERT INTO certs (serial, device, issued_ms, not_after_ms) VALUES (?, ?, ?, ?)",
                (f"{cert_serial:x}", device, now_ms, cert_not_after_ms),
            )

    def add(
        self,
        device: str,
        public_key: bytes,
        now_ms: int,
        *,
        tier: str | None = None,
        team: str | None = None,
        facts: dict[str, object] | None = None,
        next_public_key: bytes | None = None,
        next_csr: bytes | None = None,
    ) -> None:
        """Register `device` with this key; a device re-enrolled under the same id (a
        replacement handset) gets the new key, and its earlier keys are retired, not lost."""
        with self._tx():
            self._upsert(
                device,
                public_key,
                now_ms,
                tier=tier,
                team=team,
                facts=facts,
                next_public_key=next_public_key,
                next_csr=next_csr,
            )

    def _upsert(
        self,
        device: str,
        public_key: bytes,
        now_ms: int,
        *,
        tier: str | None,
        team: str | None,
        facts: dict[str, object] | None,
        next_public_key: bytes | None,
        next_csr: bytes | None,
    ) -> None:
        self._db.execute(
            "INSERT INTO devices (id, public_key, created_ms, tier, team, facts, "
            "next_public_key, next_csr, revoked_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) "
            "ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, "
            "created_ms = excluded.created_ms, tier = excluded.tier, team = excluded.team, "
            "facts = excluded.facts, next_public_key = excluded.next_public_key, "
            "next_csr = excluded.next_csr, revoked_ms = NULL",
            (
                device,
                public_key,
                now_ms,
                tier,
                team,
                None if facts is None else json.dumps(facts, sort_keys=True),
                next_public_key,
                next_csr,
            ),
        )
        self._install_key(device, public_key, now_ms)

    def _install_key(self, device: str, public_key: bytes, now_ms: int) -> None:
        self._db.execute(
            "UPDATE keys SET retired_ms = ? WHERE device = ? AND retired_ms IS NULL "
            "AND public_key != ?",
            (now_ms, device, public_key),
        )
        self._db.execute(
            "INSERT INTO keys (device, public_key, valid_from_ms) VALUES (?, ?, ?) "
            "ON CONFLICT (device, public_key) DO UPDATE SET retired_ms = NULL",
            (device, public_key, now_ms),
        )

    def add_cert(self, serial: int, device: str, issued_ms: int, not_after_ms: int) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO certs (serial, device, issued_ms, not_after_ms) VALUES (?, ?, ?, ?)",
                (f"{serial:x}", device, issued_ms, not_after_ms),
            )

    def rotate(self, device: str, cert_serial: int, not_after_ms: int, now_ms: int) -> bytes:
        """Make the pre-committed next key current (its certificate `cert_serial`); the old
        key is retired. The old certificate stays valid until the device confirms the
        rotation (`supersede_certs`): revoked now, a later CRL could lock out a device that
        has not yet received the command that carries its new certificate. Returns the new
        public key."""
        row = self._db.execute(
            "SELECT next_public_key FROM devices WHERE id = ? AND revoked_ms IS NULL", (device,)
        ).fetchone()
        if row is None or row[0] is None:
            raise RegistryError(f"{device}: no pre-committed next key to rotate to")
        new: bytes = row[0]
        with self._tx():
            self._db.execute(
                "UPDATE devices SET public_key = ?, next_public_key = NULL, next_csr = NULL "
                "WHERE id = ?",
                (new, device),
            )
            self._install_key(device, new, now_ms)
            self._db.execute(
                "INSERT INTO certs (serial, device, issued_ms, not_after_ms) VALUES (?, ?, ?, ?)",
                (f"{cert_serial:x}", device, now_ms, not_after_ms),
            )
        return new

    def supersede_certs(self, device: str, keep_serial: int, now_ms: int) -> int:
        """Revoke the device's certificates other than `keep_serial` (it confirmed a rotation
        to it); returns how many."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE certs SET revoked_ms = ? WHERE device = ? AND serial != ? "
                "AND revoked_ms IS NULL",
                (now_ms, device, f"{keep_serial:x}"),
            )
        return cur.rowcount

    def commit_next(self, device: str, next_public_key: bytes, next_csr: bytes) -> None:
        """Record the device's next key pair (its public halves), for the next rotation."""
        with self._tx():
            self._db.execute(
                "UPDATE devices SET next_public_key = ?, next_csr = ? WHERE id = ?",
                (next_public_key, next_csr, device),
            )

    def revoke(self, device: str, now_ms: int) -> int:
        """Revoke every key and certificate of `device`; returns how many certificates."""
        if self.entry(device) is None:
            raise ProvisioningError(f"no device {device!r} in {self.path}")
        with self._tx():
            self._db.execute(
                "UPDATE devices SET revoked_ms = ? WHERE id = ? AND revoked_ms IS NULL",
                (now_ms, device),
            )
            self._db.execute(
                "UPDATE keys SET revoked_ms = ? WHERE device = ? AND revoked_ms IS NULL",
                (now_ms, device),
            )
            cur = self._db.execute(
                "UPDATE certs SET revoked_ms = ? WHERE device = ? AND revoked_ms IS NULL",
                (now_ms, device),
            )
        return cur.rowcount

    def revoke_certs(self, device: str, now_ms: int) -> None:
        """Revoke the device's certificates only (its id passes to a replacement device)."""
        with self._tx():
            self._db.execute(
                "UPDATE certs SET revoked_ms = ? WHERE device = ? AND revoked_ms IS NULL",
                (now_ms, device),
            )

    def set_setting(self, name: str, value: str) -> None:
        with self._tx():
            self._db.execute(
                "INSERT INTO fleet (name, value) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                (name, value),
            )

    # -- reading --------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        row = self._db.execute("SELECT value FROM fleet WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row[0])

    def public_key(self, device: str) -> Ed25519PublicKey | None:
        """The device's current key (None: unknown, or revoked)."""
        row = self._db.execute(
            "SELECT public_key FROM devices WHERE id = ? AND revoked_ms IS NULL", (device,)
        ).fetchone()
        return None if row is None else Ed25519PublicKey.from_public_bytes(row[0])

    def trust(self, device: str) -> tuple[KeyEntry, ...]:
        """Every key `device` has signed with, current first (empty: unknown device)."""
        rows = self._db.execute(
            "SELECT public_key, revoked_ms FROM keys WHERE device = ? "
            "ORDER BY retired_ms IS NOT NULL, valid_from_ms DESC",
            (device,),
        ).fetchall()
        return tuple(KeyEntry(Ed25519PublicKey.from_public_bytes(k), r) for k, r in rows)

    def next_commitment(self, device: str) -> tuple[bytes, bytes] | None:
        row = self._db.execute(
            "SELECT next_public_key, next_csr FROM devices WHERE id = ?", (device,)
        ).fetchone()
        return None if row is None or row[0] is None else (bytes(row[0]), bytes(row[1]))

    def entry(self, device: str) -> DeviceEntry | None:
        found = self.entries(device)
        return found[0] if found else None

    def entries(self, device: str | None = None) -> list[DeviceEntry]:
        rows = self._db.execute(
            "SELECT d.id, d.public_key, d.created_ms, d.tier, d.team, d.revoked_ms, "
            "d.next_public_key IS NOT NULL, c.serial, c.not_after_ms FROM devices d "
            "LEFT JOIN certs c ON c.device = d.id AND c.revoked_ms IS NULL "
            "AND c.issued_ms = (SELECT max(issued_ms) FROM certs WHERE device = d.id) "
            "WHERE ?1 IS NULL OR d.id = ?1 ORDER BY d.id",
            (device,),
        ).fetchall()
        return [
            DeviceEntry(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[7], r[8], bool(r[6]))
            for r in rows
        ]

    def revoked_certs(self) -> list[tuple[int, int]]:
        """(serial, revoked at) of every revoked certificate, for the CRL."""
        rows = self._db.execute(
            "SELECT serial, revoked_ms FROM certs WHERE revoked_ms IS NOT NULL ORDER BY serial"
        )
        return [(int(s, 16), int(t)) for s, t in rows]

    def cert_revoked(self, serial: int) -> int | None:
        row = self._db.execute(
            "SELECT revoked_ms FROM certs WHERE serial = ?", (f"{serial:x}",)
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def devices(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM devices ORDER BY id")]
