"""Opening the outbox's file: the chain taken up where it stopped, or begun again after a loss.

The outbox (agent/store/outbox.py) calls `open_outbox` once, in its constructor, and works
from what it returns. The steps run in this order because each protects the next:

1. A device or a folder is refused before anything is read or moved (`check_replaceable`).
2. The sidecar is read and the file checked on a read-only connection
   (agent/store/recovery.py). A damaged file is named in the sidecar first, then moved
   aside: a kill between the two cannot lose it, and the next start salvages it.
3. The file is opened in WAL mode with synchronous=FULL, its tables made (and the
   `priority` column added to an outbox from before priorities).
4. If the file holds chain state, the chain goes on from it, and the sidecar is brought up
   to cover it (it is missing on first use, and behind after a lost write). If not, the
   file is new or begun again after a loss: the chain resumes above everything the sidecar
   and the damaged file tell (agent/store/salvage.py), the sidecar is written before any
   record can use those numbers, and what the damaged file still holds is put back, with
   its commands, in the same transaction that writes the new chain state.

What the outbox keeps of the sidecar, `Sidecar`, is shared with it: every append that would
reach `seq_limit` moves the sidecar on first.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agent.errors import StorageError
from agent.store.recovery import (
    RESERVE_BLOCK,
    Reservation,
    Salvage,
    aside_path,
    inspect,
    move_aside,
    read_reserve,
    resume_chain,
    write_reserve,
)
from agent.store.salvage import Rescue, SalvageReport, past, rescue
from agent.store.schema import INDEXES, SET_META, TABLES, chain_in, storage_error, transaction
from contract.keyfiles import check_replaceable
from contract.records import ChainPosition, RecordType

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

log = logging.getLogger(__name__)


class Sidecar:
    """The sidecar as the open outbox knows it: no boot above `boot` has begun, and no
    record has reached `seq_limit` (0 until it is first written)."""

    __slots__ = ("boot", "device", "path", "seq_limit")

    def __init__(self, path: Path, device: str) -> None:
        self.path = path
        self.device = device
        self.boot = 0
        self.seq_limit = 0

    def write(self, boot: int, seq_limit: int, salvage: str | None = None) -> None:
        """Write the sidecar durably, then believe it."""
        write_reserve(self.path, self.device, boot, seq_limit, salvage)
        self.boot, self.seq_limit = boot, seq_limit


@dataclass(frozen=True, slots=True)
class Opened:
    """An outbox file ready for appends, and what opening it found."""

    db: sqlite3.Connection
    chain: ChainPosition  # the next record's boot, sequence number and previous hash
    sidecar: Sidecar
    held: int  # bytes of the records held
    recovered_from: Path | None  # the damaged file whose records were put back
    salvage: SalvageReport | None  # what a salvage put back, not yet reported


def open_outbox(path: Path, device: str, keys: Sequence[Ed25519PublicKey]) -> Opened:
    """Open the outbox at `path` for `device`, or begin one; `keys` prove the records found
    in the bytes of a damaged file (without them only SQLite's rows are taken)."""
    try:  # a device or a folder is never opened, moved aside or replaced as an outbox
        check_replaceable(path)
    except OSError as exc:
        raise StorageError(f"outbox {path}: {exc.strerror}") from exc
    reserve = read_reserve(path, device)
    damage, salvaged = inspect(path)
    recovered_from = None
    unsalvaged = None  # a damaged file moved aside by a start killed before its salvage
    if reserve is not None and reserve.salvage is not None:
        unsalvaged = path.with_name(reserve.salvage)
    if damage is not None:
        dest = aside_path(path)  # named in the sidecar first: a kill cannot lose it
        top = (reserve.boot, reserve.seq_limit) if reserve else (0, 1)
        if salvaged is not None:
            top = (max(top[0], salvaged.boot), max(top[1], salvaged.seq))
        write_reserve(path, device, *top, salvage=dest.name)
        recovered_from = unsalvaged = move_aside(path, dest)
        log.error(
            "outbox %s is damaged (%s): moved aside to %s; a new outbox begins",
            path,
            damage,
            recovered_from,
        )
    try:
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise storage_error(path, "cannot open", exc) from exc
    sidecar = Sidecar(path, device)
    try:
        _prepare(db, path)
        chain = read_chain(db, path, device)
        known = chain is not None
        if chain is None:
            if unsalvaged is not None and unsalvaged.exists():
                recovered_from = unsalvaged
            found = None if recovered_from is None else rescue(recovered_from, device, keys)
            # writes the sidecar first
            chain = _begin_chain(
                db, sidecar, reserve=reserve, salvaged=salvaged, source=recovered_from, found=found
            )
        salvage = SalvageReport.from_json(_meta(db, "salvage"))
        held = held_bytes(db)
        if known:
            _keep_reserve(sidecar, reserve, chain)
    except BaseException:
        db.close()
        raise
    return Opened(db, chain, sidecar, held, recovered_from, salvage)


def read_chain(db: sqlite3.Connection, path: Path, device: str) -> ChainPosition | None:
    """The chain state the file holds (None: a new file); another device's file is refused."""
    meta = dict(db.execute("SELECT k, v FROM meta").fetchall())
    owner = meta.get("device")
    if owner is None:
        return None
    if owner != device:
        raise StorageError(f"{path} belongs to device {owner!r}, not {device!r}")
    chain = chain_in(db, meta)
    if chain is None:
        raise StorageError(f"outbox {path}: chain state is damaged: {meta!r}")
    return chain


def held_bytes(db: sqlite3.Connection) -> int:
    """Bytes of the records held (pending or refused): what the size cap measures."""
    return int(db.execute("SELECT total(length(raw)) FROM outbox").fetchone()[0])


def _meta(db: sqlite3.Connection, key: str) -> object:
    row = db.execute("SELECT v FROM meta WHERE k = ?", (key,)).fetchone()
    return None if row is None else row[0]


def _prepare(db: sqlite3.Connection, path: Path) -> None:
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        with transaction(db):
            for statement in TABLES:
                db.execute(statement)
            columns = {r[1] for r in db.execute("PRAGMA table_info(outbox)")}
            if "priority" not in columns:  # an outbox from before priorities
                db.execute("ALTER TABLE outbox ADD COLUMN priority INTEGER NOT NULL DEFAULT 1")
                db.execute("UPDATE outbox SET priority = 0 WHERE type = ?", (RecordType.ALERT,))
            for statement in INDEXES:
                db.execute(statement)
    except sqlite3.Error as exc:
        raise storage_error(path, "cannot open", exc) from exc


def _begin_chain(
    db: sqlite3.Connection,
    sidecar: Sidecar,
    *,
    reserve: Reservation | None,
    salvaged: Salvage | None,
    source: Path | None,
    found: Rescue | None,
) -> ChainPosition:
    """A database without chain state: brand new, or begun again after a loss (`source`,
    the damaged file, and `found`, what it still holds, which is put back in the same
    transaction)."""
    path, device = sidecar.path, sidecar.device
    chain = resume_chain(path, reserve, past(salvaged, found), source is not None)
    marker = None if source is None else source.name
    sidecar.write(chain.boot, chain.seq, marker)  # before any record can use them
    try:
        with transaction(db):
            db.executemany(
                SET_META,
                [
                    ("device", device),
                    ("boot", chain.boot),
                    ("next_seq", chain.seq),
                    ("prev", chain.prev),
                ],
            )
            if source is not None and found is not None:
                top = None if salvaged is None else salvaged.seq - 1
                _put_back(db, path, found, source, found.report(source.name, top))
    except sqlite3.Error as exc:
        raise storage_error(path, "cannot create", exc) from exc
    if marker is not None:
        try:  # the records are back: the sidecar need not name the file any more
            sidecar.write(chain.boot, chain.seq)
        except StorageError as exc:
            log.warning("%s", exc)
    return chain


def _put_back(
    db: sqlite3.Connection, path: Path, found: Rescue, source: Path, report: SalvageReport | None
) -> None:
    """The rescued records as pending, with their own numbers and bytes; their commands,
    the last known time and what the daemon must report. Inside `_begin_chain`'s tx."""
    db.executemany(
        "INSERT OR IGNORE INTO outbox (seq, type, time_ms, raw, refused, priority)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        [
            (r.header.seq, r.header.type, r.header.time_ms, r.raw, r.refused, r.priority)
            for r in found.records
        ],
    )
    db.executemany("INSERT OR IGNORE INTO commands VALUES (?, ?, ?, ?, ?, ?, ?)", found.commands)
    if found.time_ms is not None:
        db.execute(SET_META, ("time_ms", found.time_ms))
    if report is not None:
        db.execute(SET_META, ("salvage", report.to_json()))
    log.error(
        "outbox %s: %d records put back from %s; %s",
        path,
        len(found.records),
        source,
        "nothing known lost"
        if report is None or not report.lost
        else f"{report.lost} lost between {report.first} and {report.last}",
    )


def _keep_reserve(sidecar: Sidecar, reserve: Reservation | None, chain: ChainPosition) -> None:
    """Make the sidecar cover what the database holds (it is missing on first use)."""
    if reserve is not None and reserve.boot >= chain.boot and reserve.seq_limit >= chain.seq:
        sidecar.boot, sidecar.seq_limit = reserve.boot, reserve.seq_limit
        return
    sidecar.boot = max(chain.boot, reserve.boot if reserve else 0)
    sidecar.seq_limit = 0  # the next append writes it, if this attempt fails
    if reserve is not None:
        log.warning("outbox %s: sidecar %s was behind the database", sidecar.path, reserve)
    try:
        sidecar.write(sidecar.boot, chain.seq + RESERVE_BLOCK)
    except StorageError as exc:
        log.warning("%s", exc)
