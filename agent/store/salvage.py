"""What a damaged outbox still holds: its records read back, to be sent after all.

A damaged file is moved aside (agent/store/recovery.py), and the records inside it are
signed, so whatever of them can still be read proves itself: the center verifies each
against the device's key and de-duplicates on (device, sequence number) as it always does.
`rescue` reads them in two ways and keeps the union:

- **SQLite, row by row.** The rows of `outbox` (and of `commands`, and the last known good
  time) in order of their number; when a damaged page stops the cursor, it seeks again
  further on (+1, +2, +4 …), so one bad leaf costs its own rows, not all that follow. A
  row is kept if its bytes are a COSE_Sign1 record of this device naming that number.
- **The bytes.** Every COSE_Sign1 record of this device lying anywhere in the file and in
  its -wal (a zeroed header or a broken interior page hides whole tables from SQLite, not
  their bytes; records are small and never span a page). A record found this way is kept
  only if it verifies with one of the device's public keys, or if a kept record's `prev`
  is its hash (the chain vouches for records signed with a key since rotated away). Below
  the lowest number SQLite still shows in `outbox`, bytes are old, acknowledged records
  left in free space, and are not taken.

The outbox (agent/store/outbox.py) puts what is rescued back as pending, each record with
its original number and bytes, and numbers new records after the highest number seen. What
could not be read is told by a `SalvageReport`: the numbers between the lowest and the
highest known that no record was found for. The daemon states it in a signed DROPPED record
(docs/records.md, "A damaged outbox"), so that the center counts them as dropped, not
missing.
"""

from __future__ import annotations

import contextlib
import json
import logging
import mmap
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.store.recovery import Salvage
from agent.store.schema import SQL_INT_MAX, Priority
from contract.cose import decode_sign1, verify1
from contract.errors import RecordError
from contract.records import Header, RecordType, chain_hash, parse_payload

log = logging.getLogger(__name__)

# The head of every Picket record: tag 18, array of 4, protected {1: -8}, unprotected {}.
SIGN1_MAGIC = b"\xd2\x84\x43\xa1\x01\x27\xa0"
SIGNATURE_HEAD = b"\x58\x40"
MAX_PROBES = 64  # seeks past a damaged page before SQLite reading gives up


@dataclass(frozen=True, slots=True)
class Rescued:
    """One record read back from a damaged file."""

    header: Header
    raw: bytes
    refused: str | None = None  # the center had refused it (known only from SQLite)

    @property
    def priority(self) -> Priority:
        """Health was appended evictable, alerts urgent, the rest kept (agent/store/eviction.py)."""
        rtype = self.header.type
        if rtype is RecordType.ALERT:
            return Priority.URGENT
        return Priority.EVICTABLE if rtype is RecordType.HEALTH else Priority.KEPT


@dataclass(frozen=True, slots=True)
class Rescue:
    """Everything read back from a damaged file."""

    records: tuple[Rescued, ...]  # ascending sequence numbers, one per number
    commands: tuple[tuple[object, ...], ...]  # rows of `commands`, as stored
    time_ms: int | None  # the last known good time the file or its records knew
    lowest: int | None  # the lowest number SQLite shows in `outbox` (None: unreadable)

    def report(self, source: str, top: int | None) -> SalvageReport | None:
        """Saved and lost, counting up to `top` (the newest number the file knew), or None if
        the file told nothing at all about its records."""
        seqs = [r.header.seq for r in self.records]
        ends = [s for s in (*seqs[:1], *seqs[-1:], self.lowest) if s is not None]
        if top is not None and top >= 1 and ends:
            ends.append(top)
        if not ends:
            return None
        low, high = min(ends), max(ends)
        have = set(seqs)
        lost = [s for s in range(low, high + 1) if s not in have] if high - low < 10**7 else []
        return SalvageReport(
            source=source,
            salvaged=len(seqs),
            lost=len(lost),
            first=lost[0] if lost else 0,
            last=lost[-1] if lost else 0,
        )


@dataclass(frozen=True, slots=True)
class SalvageReport:
    """What a salvage saved and lost; kept in the outbox's meta until a record states it."""

    source: str  # the damaged file's name
    salvaged: int  # records put back as pending
    lost: int  # numbers between the lowest and newest known with no record found
    first: int  # the lowest and highest of those (0 when none)
    last: int

    def to_json(self) -> str:
        return json.dumps(
            {
                "source": self.source,
                "salvaged": self.salvaged,
                "lost": self.lost,
                "first": self.first,
                "last": self.last,
            }
        )

    @staticmethod
    def from_json(text: object) -> SalvageReport | None:
        try:
            d = json.loads(str(text))
            report = SalvageReport(
                str(d["source"]), d["salvaged"], d["lost"], d["first"], d["last"]
            )
        except (ValueError, TypeError, KeyError, RecursionError):
            return None
        numbers = (report.salvaged, report.lost, report.first, report.last)
        if not all(type(v) is int and 0 <= v <= SQL_INT_MAX for v in numbers):
            return None
        return report


def rescue(path: Path, device: str, keys: Sequence[Ed25519PublicKey]) -> Rescue:
    """Every record of `device` that can still be read from the damaged file at `path` (and
    its -wal), with its commands and last known time. Never raises for what the file holds."""
    rows, commands, time_ms, lowest = _read_sqlite(path)
    found: dict[int, list[Rescued]] = {}
    for seq, raw, refused in rows:  # a row first: of two records for a number, it is the one
        header = _header(raw)
        if header is not None and header.device == device and header.seq == seq:
            why = refused if isinstance(refused, str) else None
            found.setdefault(seq, []).append(Rescued(header, raw, why))
    from_sqlite = set(found)
    for raw in dict.fromkeys(_scan([path, path.with_name(path.name + "-wal")])):
        header = _header(raw)
        if header is None or header.device != device or not 1 <= header.seq <= SQL_INT_MAX:
            continue
        if lowest is not None and header.seq < lowest:
            continue  # acknowledged long ago: its bytes are left in free space
        if all(c.raw != raw for c in found.get(header.seq, ())):
            found.setdefault(header.seq, []).append(Rescued(header, raw))
    # without keys to prove records with, SQLite's rows are believed and the bytes are not
    believed = {seq: found[seq][0] for seq in from_sqlite}
    chosen = _vouched(found, keys) if keys else believed
    from_sqlite &= set(chosen)
    records = tuple(chosen[s] for s in sorted(chosen))
    times = [r.header.time_ms for r in records if r.header.time_ms <= SQL_INT_MAX]
    if time_ms is not None:
        times.append(time_ms)
    log.info(
        "outbox %s: %d records read back (%d through SQLite, %d from the bytes), %d commands",
        path,
        len(records),
        len(from_sqlite),
        len(records) - len(from_sqlite),
        len(commands),
    )
    return Rescue(records, tuple(commands), max(times) if times else None, lowest)


def _header(raw: bytes) -> Header | None:
    try:
        return parse_payload(decode_sign1(raw).payload, raw).header
    except RecordError:
        return None


def _verifies(raw: bytes, keys: Sequence[Ed25519PublicKey]) -> bool:
    for key in keys:
        with contextlib.suppress(RecordError):
            verify1(raw, key)
            return True
    return False


def _vouched(
    found: dict[int, list[Rescued]], keys: Sequence[Ed25519PublicKey]
) -> dict[int, Rescued]:
    """The records found that prove themselves, taken from the newest down: by the hash the
    kept record above names as its `prev` (a record signed with a key since rotated away),
    else by a signature. Of two for one number (a log's uncommitted frame), the one the
    chain links to wins, else the first that verifies."""
    out: dict[int, Rescued] = {}
    for seq in sorted(found, reverse=True):
        candidates = found[seq]
        above = out.get(seq + 1)
        if above is not None:
            linked = [c for c in candidates if chain_hash(c.raw) == above.header.prev]
            if linked:
                out[seq] = linked[0]
                continue
        signed = next((c for c in candidates if _verifies(c.raw, keys)), None)
        if signed is not None:
            out[seq] = signed
    return out


def past(salvaged: Salvage | None, found: Rescue | None) -> Salvage | None:
    """The damaged file's chain state, moved past every record read back from it. The chain
    links across only to the file's known newest record: linking to the newest record found
    would tell the center that nothing was created after it."""
    if found is None or not found.records:
        return salvaged
    newest = found.records[-1].header
    boot = max(salvaged.boot if salvaged else 0, *(r.header.boot for r in found.records))
    if salvaged is not None and salvaged.seq > newest.seq:
        return Salvage(boot, salvaged.seq, salvaged.prev)
    known = salvaged is not None and salvaged.prev is not None and salvaged.seq == newest.seq + 1
    return Salvage(boot, newest.seq + 1, salvaged.prev if known and salvaged else None)


# --- SQLite, row by row ---------------------------------------------------------------------


def _read_sqlite(
    path: Path,
) -> tuple[list[tuple[int, bytes, object]], list[tuple[object, ...]], int | None, int | None]:
    """(seq, raw, refused) of `outbox`, the rows of `commands`, meta's time, min(seq)."""
    rows: list[tuple[int, bytes, object]] = []
    commands: list[tuple[object, ...]] = []
    time_ms: int | None = None
    lowest: int | None = None
    con = _connect(path)
    if con is None:
        return rows, commands, time_ms, lowest
    try:
        with contextlib.suppress(sqlite3.Error):
            con.execute("PRAGMA writable_schema = ON")  # read past a page count that is too large
        with contextlib.suppress(sqlite3.Error):
            (low,) = con.execute("SELECT min(seq) FROM outbox").fetchone()
            lowest = low if type(low) is int and low >= 1 else None
        with contextlib.suppress(sqlite3.Error):
            row = con.execute("SELECT v FROM meta WHERE k = 'time_ms'").fetchone()
            time_ms = row[0] if row is not None and type(row[0]) is int and row[0] >= 0 else None
        for seq, raw, refused in _walk(con, "SELECT seq, raw, refused FROM outbox"):
            if type(seq) is int and isinstance(raw, bytes):
                rows.append((seq, raw, refused))
        sql = "SELECT number, type, outcome, reason, time_ms, command, receipt FROM commands"
        for row in _walk(con, sql):
            if all(type(row[i]) is int for i in (0, 1, 2, 4, 6)) and isinstance(row[5], bytes):
                commands.append(row)
    finally:
        con.close()
    return rows, commands, time_ms, lowest


def _connect(path: Path) -> sqlite3.Connection | None:
    """A read-only connection that writes nothing into the damaged file (None: not even that)."""
    for query in ("mode=ro", "immutable=1"):
        try:
            con = sqlite3.connect(f"{path.resolve().as_uri()}?{query}", uri=True)
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return con
        except sqlite3.Error:
            with contextlib.suppress(UnboundLocalError, sqlite3.Error):
                con.close()
    return None


def _walk(con: sqlite3.Connection, select: str) -> Iterator[tuple[object, ...]]:
    """The rows of `select` (whose first column is the table's integer key) in key order;
    past a damaged page, seek further on with growing steps."""
    after, step, probes = 0, 1, 0
    while probes < MAX_PROBES and after < SQL_INT_MAX:
        try:
            cur = con.execute(f"{select} WHERE rowid > ? ORDER BY rowid", (after,))
            for row in cur:
                yield row
                key = row[0]
                if type(key) is int:
                    after, step = key, 1
            return
        except sqlite3.Error:
            probes += 1
            after = min(after + step, SQL_INT_MAX)
            step *= 2


# --- the bytes --------------------------------------------------------------------------------


def _scan(paths: Sequence[Path]) -> Iterator[bytes]:
    """Every byte string in the files at `paths` shaped like a COSE_Sign1 record with an
    Ed25519 signature (not yet checked: `rescue` parses and verifies)."""
    for path in paths:
        try:
            f = path.open("rb")
        except OSError:
            continue
        with f:
            try:
                size = path.stat().st_size
                if size == 0:
                    continue
                data = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                continue
            with data:
                yield from _sign1_in(data)


def _sign1_in(data: mmap.mmap | bytes) -> Iterator[bytes]:
    end_of_data = len(data)
    i = data.find(SIGN1_MAGIC)
    while i >= 0:
        j = i + len(SIGN1_MAGIC)
        span = _payload_span(data, j, end_of_data)
        if span is not None:
            start, n = span
            sig = start + n
            end = sig + len(SIGNATURE_HEAD) + 64
            if end <= end_of_data and data[sig : sig + 2] == SIGNATURE_HEAD:
                yield bytes(data[i:end])
        i = data.find(SIGN1_MAGIC, i + 1)


def _payload_span(data: mmap.mmap | bytes, j: int, size: int) -> tuple[int, int] | None:
    """Where the payload byte string whose CBOR head is at `j` starts, and its length."""
    if j >= size:
        return None
    head = data[j]
    if 0x40 <= head <= 0x57:
        return j + 1, head - 0x40
    if head == 0x58 and j + 1 < size:
        return j + 2, data[j + 1]
    if head == 0x59 and j + 2 < size:
        return j + 3, int.from_bytes(data[j + 1 : j + 3], "big")
    return None
