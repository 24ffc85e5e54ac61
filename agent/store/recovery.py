"""How the outbox outlives its file: the sidecar, damaged files moved aside, the chain resumed.

These are the outbox's answers to losing the database, kept apart from the append and
settle path (agent/store/outbox.py) because they run only when a file is opened, and read
the file's layout (agent/store/schema.py) defensively, as a damaged file may hold anything.

**Why a sidecar.** SQLite keeps the counters safe across crashes, not across the loss of
the file. A damaged database is moved aside and a new one begun; counting from 1 again
would hand the center repeated sequence numbers. NAME.reserve, a few bytes of JSON written
atomically (temp file, fsync, rename, fsync of the directory), holds the highest boot ever
begun and a sequence number no committed record has reached. It is moved RESERVE_BLOCK
ahead before the commit that would pass it (two fsyncs per 4096 records) and written at
every boot. A database begun afresh where records have been kept before starts at boot =
reserved boot + 1 and seq = the reserved mark: numbers may skip, never repeat. When the
damaged file's newest record can still be read, its hash becomes the new chain's previous
hash, so the chain links across the break; otherwise the chain restarts (prev empty) and
the log says so.

**Why quick_check.** Opening runs `PRAGMA quick_check` on a read-only connection: it reads
every page in O(N), where integrity_check also cross-checks indexes in O(N log N). A file
that fails it, is not a database, or whose chain state is not whole, is renamed with its
-wal and -shm to NAME.damaged-<UTC time> (never deleted nor written over), logged at ERROR
and named by the outbox's `recovered_from`; the caller gets a working outbox, not an
exception.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.errors import StorageError
from agent.store.schema import chain_from_meta, chain_in, storage_error
from contract.records import ChainPosition

log = logging.getLogger(__name__)

RESERVE_BLOCK = 4096  # sequence numbers reserved per sidecar write
RESERVE_MAX = 2**53 - 1  # above this a sidecar's boot or seq_limit is damage, not history
SIDECAR_MAX = 4096  # bytes: a sidecar is a few dozen; more is not a sidecar
_CORRUPT = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_HOT_JOURNAL = 776  # SQLITE_READONLY_ROLLBACK: a hot journal that a read-only connection met


@dataclass(frozen=True, slots=True)
class Reservation:
    """The sidecar: no boot above `boot` has begun, no record reached `seq_limit`;
    `salvage` names a damaged file moved aside whose records are not yet put back."""

    device: str
    boot: int
    seq_limit: int
    salvage: str | None = None

    @property
    def used(self) -> bool:
        return self.boot > 0 or self.seq_limit > 1


@dataclass(frozen=True, slots=True)
class Salvage:
    """What a damaged file still tells: its counters, and its newest record's hash if readable."""

    boot: int
    seq: int
    prev: bytes | None


# --- the sidecar ----------------------------------------------------------------------------


def sidecar_path(path: Path) -> Path:
    """Where the sidecar of the outbox at `path` lives."""
    return path.with_name(path.name + ".reserve")


def read_reserve(path: Path, device: str) -> Reservation | None:
    """The sidecar of the outbox at `path`; None if there is none, or it cannot be believed
    (then it is moved aside and logged): not UTF-8 JSON, not the three fields, a number that
    is not an integer in 0..RESERVE_MAX (NaN, a float, a bool, 10**30), another device's."""
    reserve_path = sidecar_path(path)
    try:
        with reserve_path.open("rb") as f:
            data = f.read(SIDECAR_MAX + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise storage_error(path, "cannot read sidecar", exc) from exc
    problem: object
    try:
        if len(data) > SIDECAR_MAX:
            raise ValueError(f"over {SIDECAR_MAX} bytes")
        d = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
        reserve = Reservation(d["device"], d["boot"], d["seq_limit"], d.get("salvage"))
        problem = _implausible(path, reserve, device)
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        problem = exc
    if problem is None:
        return reserve
    aside = move_aside(reserve_path)
    log.error("outbox sidecar %s is unreadable (%s): moved to %s", path, problem, aside)
    return None


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number")


def _implausible(path: Path, reserve: Reservation, device: str) -> str | None:
    """Why the sidecar's values cannot be believed, or None."""
    if not isinstance(reserve.device, str):
        return "device is not text"
    if reserve.device != device:
        return f"it belongs to device {reserve.device[:80]!r}, not {device!r}"
    for field, v in (("boot", reserve.boot), ("seq_limit", reserve.seq_limit)):
        if type(v) is not int or not 0 <= v <= RESERVE_MAX:
            return f"{field} {str(v)[:40]} is not an integer in 0..{RESERVE_MAX}"
    aside = reserve.salvage
    if aside is not None and not (
        isinstance(aside, str) and aside.startswith(f"{path.name}.damaged-") and "/" not in aside
    ):
        return f"salvage {str(aside)[:80]!r} is not a damaged outbox of this one"
    return None


def write_reserve(
    path: Path, device: str, boot: int, seq_limit: int, salvage: str | None = None
) -> None:
    """Atomically replace the sidecar: temp file, fsync, rename, fsync the directory."""
    reserve_path = sidecar_path(path)
    fields: dict[str, object] = {"device": device, "boot": boot, "seq_limit": seq_limit}
    if salvage is not None:
        fields["salvage"] = salvage
    try:
        write_durably(reserve_path, json.dumps(fields) + "\n")
    except OSError as exc:
        raise storage_error(path, "cannot reserve sequence numbers", exc) from exc


def resume_chain(
    path: Path, reserve: Reservation | None, salvaged: Salvage | None, damaged: bool
) -> ChainPosition:
    """Where the chain of a database without chain state begins: brand new, or begun again
    after a loss (`damaged`: the old file was moved aside), past every number used before."""
    if not damaged and (reserve is None or not reserve.used):
        return ChainPosition(boot=0, seq=1, prev=b"")
    boot = max(reserve.boot if reserve else 0, salvaged.boot if salvaged else 0) + 1
    seq = max(reserve.seq_limit if reserve else 1, salvaged.seq if salvaged else 1)
    prev = salvaged.prev if salvaged else None
    chain = ChainPosition(boot=boot, seq=seq, prev=prev or b"")
    what = "the database was damaged" if damaged else "the database is missing or empty"
    link = (
        "the hash chain continues from the old file's newest record"
        if prev is not None
        else "the old file's newest record is unreadable: the chain restarts (prev empty)"
    )
    unsafe = "" if reserve else "; no sidecar either, so sequence numbers MAY REPEAT"
    log.error(
        "outbox %s: %s; continuing at boot %d, seq %d; %s%s",
        path,
        what,
        chain.boot,
        chain.seq,
        link,
        unsafe,
    )
    return chain


# --- damaged files --------------------------------------------------------------------------


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF in _CORRUPT


def inspect(path: Path, *, rolled_back: bool = False) -> tuple[str | None, Salvage | None]:
    """Why the file at `path` is damaged (None: healthy or absent), and its salvaged chain.

    Read-only, so that looking changes nothing in a damaged file (no checkpoint on close).
    Errors that are not damage (a locked or unreadable file) raise: moving a good file
    aside because of them would lose it. One exception: a hot rollback journal (a power
    cut while a new file was being made, before it switched to WAL) must be rolled back
    before anyone can read the file, and only a writer can: one does, then we look again.
    """
    if not path.exists():
        orphans = [p for p in _companions(path) if p.exists()]
        return (f"log without its database: {orphans[0].name}", None) if orphans else (None, None)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageError(f"outbox {path}: cannot open: {exc}") from exc
    try:
        try:
            result = [str(r[0]) for r in con.execute("PRAGMA quick_check").fetchall()]
            damage = None if result == ["ok"] else "; ".join(result[:3])
            if damage is None:
                damage = _check_meta(con)
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorcode", None) == _HOT_JOURNAL and not rolled_back:
                con.close()
                _roll_back(path)
                return inspect(path, rolled_back=True)
            if not _is_corruption(exc):
                raise StorageError(f"outbox {path}: cannot check: {exc}") from exc
            damage = str(exc)
        return (None, None) if damage is None else (damage, _salvage(con))
    finally:
        con.close()


def _roll_back(path: Path) -> None:
    """Let SQLite roll back the hot journal of `path`, as any writer's first read does."""
    try:
        con = sqlite3.connect(path)
        try:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
        finally:
            con.close()
    except sqlite3.Error as exc:
        if not _is_corruption(exc):  # damage is the second look's to find
            raise StorageError(f"outbox {path}: cannot roll back its journal: {exc}") from exc


def _check_meta(con: sqlite3.Connection) -> str | None:
    tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" not in tables or "outbox" not in tables:
        return None if not tables or tables <= {"meta", "outbox"} else "not an outbox"
    meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
    (top,) = con.execute("SELECT max(seq) FROM outbox").fetchone()
    if "device" not in meta:
        return None if top is None else "records without chain state"
    if chain_in(con, meta) is None:
        return f"chain state malformed: {meta!r}"
    return None


def _salvage(con: sqlite3.Connection) -> Salvage | None:
    """The chain state of a damaged file, as far as it can still be read."""
    try:
        con.execute("PRAGMA writable_schema = ON")  # read past a page count that is too large
        meta = dict(con.execute("SELECT k, v FROM meta").fetchall())
    except sqlite3.Error:
        return None
    chain = chain_from_meta(meta)
    if chain is None:
        return None
    try:
        newest = chain_in(con, meta)
    except sqlite3.Error:  # meta alone may be behind: its prev could link to an old record
        return Salvage(chain.boot, chain.seq, None)
    return (
        Salvage(chain.boot, chain.seq, None)
        if newest is None
        else Salvage(newest.boot, newest.seq, newest.prev)
    )


def _companions(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def aside_path(path: Path) -> Path:
    """A free name PATH.damaged-<UTC time>[-n] for `path` (and its -wal and -shm)."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    dest = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while any(p.exists() for p in (dest, *_companions(dest))):
        dest = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
        n += 1
    return dest


def move_aside(path: Path, dest: Path | None = None) -> Path:
    """Rename `path` (with its -wal and -shm) to `dest` (default: `aside_path`); returns it."""
    dest = aside_path(path) if dest is None else dest
    try:  # the database first: a -wal left behind is an orphan, found and moved next time
        for src, dst in zip((path, *_companions(path)), (dest, *_companions(dest)), strict=True):
            if src.exists():
                src.rename(dst)
        fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"outbox {path}: cannot move the damaged file aside: {exc}") from exc
    return dest


def write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a power cut leaves the old file or the new one:
    temp file, fsync, rename, fsync the folder. OSError, with the temp file removed."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def fsync_dir(directory: Path) -> None:
    """Make a rename or a new file in `directory` durable (its entry, not only the data)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
