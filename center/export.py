"""The center's evidence, out of its database, for anyone to check without Picket.

`export` writes every stored record exactly as it was received, one after another: each
record is one COSE_Sign1 CBOR item, so the file is a CBOR sequence (RFC 8742) that any
CBOR library reads item by item, and any COSE library verifies with the keys from
`list_devices`. Nothing is decoded or re-encoded on the way out, so a byte changed at the
center would show up as a signature that no longer verifies.

Both functions open the database read-only and read it in one statement (one snapshot), so
they are safe to run beside a live center.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from center.errors import CenterDbError
from center.readonly import check_center, open_readonly
from contract.keyfiles import check_replaceable


@dataclass(frozen=True, slots=True)
class Exported:
    records: int
    devices: int


def _open(db: Path, *tables: str) -> sqlite3.Connection:
    con = open_readonly(db)
    try:
        names = check_center(con, db, ("records", "refused"))
        missing = [t for t in tables if t not in names]
        if missing:
            raise CenterDbError(
                f"{db} has no {missing[0]} table: it was written by an older center "
                "(the keys are in the fleet registry; a current center adds them as records "
                "arrive)"
            )
    except BaseException:
        con.close()
        raise
    return con


def _write(con: sqlite3.Connection, out: BinaryIO) -> Exported:
    records = devices = 0
    last: str | None = None
    for device, raw in con.execute("SELECT device, raw FROM records ORDER BY device, seq"):
        out.write(raw)
        records += 1
        if device != last:
            devices, last = devices + 1, device
    return Exported(records, devices)


def export(db: Path, out: Path | BinaryIO) -> Exported:
    """Write every stored record, in (device, sequence) order, byte for byte as received.

    A path is written whole or not at all (a temporary file beside it, then renamed).
    Raises CenterDbError for a database that is missing or not a center's, OSError when
    the output cannot be written.
    """
    con = _open(db)
    try:
        if not isinstance(out, Path):
            return _write(con, out)
        check_replaceable(out)  # never a device (/dev/null) or a folder
        part = out.with_name(f".{out.name}.part")
        try:
            with part.open("wb") as f:
                done = _write(con, f)
                f.flush()
                os.fsync(f.fileno())
            part.replace(out)
        except BaseException:
            with contextlib.suppress(OSError):
                part.unlink()
            raise
        return done
    except sqlite3.Error as exc:
        raise CenterDbError(f"cannot read {db}: {exc}") from exc
    finally:
        con.close()


def export_records(db: Path, out: Path | BinaryIO) -> int:
    """`export`, returning the number of records written."""
    return export(db, out).records


def list_devices(db: Path) -> list[dict[str, str]]:
    """Every device key that verified a stored record: id and raw Ed25519 public key in hex,
    by id, then in the order the keys were first seen (a re-provisioned device has more)."""
    con = _open(db, "devices")
    try:
        rows = con.execute(
            "SELECT id, public_key FROM devices ORDER BY id, first_seen_ms, public_key"
        ).fetchall()
    except sqlite3.Error as exc:
        raise CenterDbError(f"cannot read {db}: {exc}") from exc
    finally:
        con.close()
    return [{"id": device, "public_key": bytes(key).hex()} for device, key in rows]
