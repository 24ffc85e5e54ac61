"""The device registry: which device ids exist and the public key each signs with.

The technician's tools write it; the center only reads it. SQLite so that both can use it
at once (WAL) and a re-provisioned device replaces its key in one transaction.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

SCHEMA = """
CREATE TABLE IF NOT EXISTS devices (
    id TEXT PRIMARY KEY,
    public_key BLOB NOT NULL CHECK (length(public_key) = 32),
    created_ms INTEGER NOT NULL
);
"""


class RegistryError(Exception):
    pass


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
        except sqlite3.Error as exc:
            raise RegistryError(f"cannot open device registry {path}: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    def add(self, device: str, public_key: bytes, now_ms: int) -> None:
        with self._db:
            self._db.execute(
                "INSERT INTO devices (id, public_key, created_ms) VALUES (?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET public_key = excluded.public_key, "
                "created_ms = excluded.created_ms",
                (device, public_key, now_ms),
            )

    def public_key(self, device: str) -> Ed25519PublicKey | None:
        row = self._db.execute("SELECT public_key FROM devices WHERE id = ?", (device,)).fetchone()
        return None if row is None else Ed25519PublicKey.from_public_bytes(row[0])

    def devices(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM devices ORDER BY id")]
