"""The center's side of commands: number, sign and publish them; read the devices' answers.

**Numbers.** Each device's commands are numbered 1, 2, 3, … and a device refuses any number
not above the last it answered, so a number must never be handed out twice. The counter
lives in the center database (table `command_numbers`), next to the records that answer
the commands, and is moved on in the same transaction that logs the signed command
(`sent_commands`): a number is used once, even by two dispatchers at once. A command that
is numbered but never delivered leaves a gap, which devices do not mind. The database must
already be a center's (made by `picket center run`): a mistyped path must not start a
fresh counter at 1, whose commands every device would refuse as replays.

**Teams.** A team command is one command per member device, each numbered in that device's
sequence and naming the team (key 3) for information only: a device acts on its own id.

**Delivery.** Published with QoS 1 and retained on the device's own topic: a device that is
offline gets the newest command for it when it next subscribes (and ignores it as a replay
at every later reconnect). An older command replaced before the device came back is never
delivered; no receipt comes for it, and the operator sends it again.

**Answers** are ordinary records from the devices (roll-call answers, receipts), stored by
the ingest. They are read here from the database and verified again against the keys it
holds (`devices`), so what a roll call lists is exactly what the devices signed. Key rotation
(center/rotation.py) reads what it needs of `sent_commands` and `records` here too
(`last_sent`, `records_of`): the command tables are read in this module only.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import sqlite3
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiomqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from center.errors import CenterDbError, DispatchError
from center.readonly import check_center, open_readonly
from contract.commands import Body, CommandType, body_type, command_payload
from contract.cose import decode_sign1, sign1
from contract.errors import RecordError
from contract.protocol import DEVICE_ID, command_topic
from contract.records import Outcome, Record, RecordType, RollcallKey, open_record, parse_payload

__all__ = [
    "CommandSigner",
    "DispatchError",
    "Receipt",
    "RollcallAnswer",
    "Signed",
    "last_sent",
    "publish",
    "publish_all",
    "receipts",
    "records_of",
    "rollcall_answers",
]

log = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS command_numbers (
    device TEXT PRIMARY KEY,
    last INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS sent_commands (
    device TEXT NOT NULL,
    number INTEGER NOT NULL,
    type INTEGER NOT NULL,
    team TEXT,
    issued_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    raw BLOB NOT NULL,
    PRIMARY KEY (device, number)
);
"""
PUBLISH_TIMEOUT_S = 10.0
# After "it has no records table": a mistyped path must not start a fresh counter at 1.
NOT_CENTER_HINT = "; `picket center run --db` makes one"


@dataclass(frozen=True, slots=True)
class Signed:
    """A command signed for one device, as sent."""

    device: str
    number: int
    type: int
    expires_ms: int
    raw: bytes


class CommandSigner:
    """Numbers and signs commands with the center's key; the numbers live in `center_db`."""

    def __init__(self, key: Ed25519PrivateKey, center_db: Path) -> None:
        if not center_db.is_file():
            raise CenterDbError(f"no center database at {center_db}")
        self.key = key
        self.path = center_db
        try:
            self._db = sqlite3.connect(center_db, isolation_level=None)
        except sqlite3.Error as exc:
            raise CenterDbError(f"cannot open {center_db}: {exc}") from exc
        try:
            check_center(self._db, center_db, hint=NOT_CENTER_HINT)
            self._db.execute("PRAGMA busy_timeout = 5000")  # the center writes beside us
            self._db.executescript(SCHEMA)
        except sqlite3.Error as exc:
            self._db.close()
            raise CenterDbError(f"cannot prepare {center_db}: {exc}") from exc
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CommandSigner:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def last_number(self, device: str) -> int:
        row = self._db.execute(
            "SELECT last FROM command_numbers WHERE device = ?", (device,)
        ).fetchone()
        return 0 if row is None else int(row[0])

    def build(
        self, device: str, body: Body, *, now_ms: int, ttl_s: int, team: str | None = None
    ) -> Signed:
        """Take `device`'s next number and sign `body` for it, valid for `ttl_s` seconds."""
        if not DEVICE_ID.fullmatch(device):
            raise ValueError(f"{device!r} is not a device id")
        if ttl_s <= 0:
            raise ValueError("a command must be valid for at least a second")
        expires = now_ms + ttl_s * 1000
        ctype = int(body_type(body))
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                number = self.last_number(device) + 1
                payload = command_payload(
                    target=device,
                    number=number,
                    issued_ms=now_ms,
                    expires_ms=expires,
                    body=body,
                    team=team,
                )
                raw = sign1(payload, self.key)
                db.execute(
                    "INSERT INTO command_numbers (device, last) VALUES (?, ?) "
                    "ON CONFLICT (device) DO UPDATE SET last = excluded.last",
                    (device, number),
                )
                db.execute(
                    "INSERT INTO sent_commands VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (device, number, ctype, team, now_ms, expires, raw),
                )
                db.execute("COMMIT")
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise CenterDbError(f"cannot number a command in {self.path}: {exc}") from exc
        return Signed(device, number, ctype, expires, raw)


async def publish_all(
    host: str,
    port: int,
    commands: Sequence[Signed],
    *,
    timeout_s: float = PUBLISH_TIMEOUT_S,
    tls: ssl.SSLContext | None = None,
) -> None:
    """Publish each command to its device's topic (QoS 1, retained), with one new client.
    `tls`: the center's client TLS context (a broker made by `picket provision broker-config`)."""
    await _publish(host, port, [(c.device, c.raw) for c in commands], timeout_s, tls)


async def publish(
    host: str, port: int, device: str, raw: bytes, *, tls: ssl.SSLContext | None = None
) -> None:
    """Publish one signed command (`Signed.raw`) to `device`."""
    await _publish(host, port, [(device, raw)], PUBLISH_TIMEOUT_S, tls)


async def _publish(
    host: str,
    port: int,
    commands: Sequence[tuple[str, bytes]],
    timeout_s: float,
    tls: ssl.SSLContext | None,
) -> None:
    try:
        async with asyncio.timeout(timeout_s * (2 + len(commands))):
            async with aiomqtt.Client(
                host,
                port,
                identifier=f"picket-dispatch-{secrets.token_hex(4)}",
                timeout=timeout_s,
                tls_context=tls,
            ) as client:
                for device, raw in commands:
                    await client.publish(
                        command_topic(device), raw, qos=1, retain=True, timeout=timeout_s
                    )
    except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
        raise DispatchError(f"cannot publish to the broker at {host}:{port}: {exc}") from exc


# --- the answers ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollcallAnswer:
    device: str
    lat: float | None  # None: the device answered without a fix
    lon: float | None
    accuracy_m: float | None
    fix_time_ms: int | None
    answered_ms: int  # when the device answered (the record's time)


@dataclass(frozen=True, slots=True)
class Receipt:
    device: str
    number: int
    type: int
    outcome: Outcome
    reason: str | None
    time_ms: int


def _stored(
    con: sqlite3.Connection, rtype: RecordType, devices: Iterable[str] | None
) -> list[tuple[str, bytes]]:
    """(device, raw) of the stored records of one type (of some devices), by device, then
    sequence number; unverified."""
    if devices is None:
        return con.execute(
            "SELECT device, raw FROM records WHERE type = ? ORDER BY device, seq", (int(rtype),)
        ).fetchall()
    rows: list[tuple[str, bytes]] = []
    for device in sorted(set(devices)):
        rows += con.execute(
            "SELECT device, raw FROM records WHERE device = ? AND type = ? ORDER BY seq",
            (device, int(rtype)),
        ).fetchall()
    return rows


def _verified(
    con: sqlite3.Connection,
    rtype: RecordType,
    devices: Iterable[str] | None,
    wanted: Callable[[Record], bool],
) -> list[Record]:
    """Stored records of one type (of some devices) that are `wanted` (judged on the
    payload, before the costlier signature check), each verified against the keys the
    center database holds for its device; one that does not verify is left out, logged."""
    try:
        keys: dict[str, list[Ed25519PublicKey]] = {}
        for device, raw_key in con.execute("SELECT id, public_key FROM devices"):
            keys.setdefault(device, []).append(Ed25519PublicKey.from_public_bytes(raw_key))
        rows = _stored(con, rtype, devices)
    except sqlite3.Error as exc:
        raise CenterDbError(f"cannot read the center database: {exc}") from exc
    out: list[Record] = []
    for device, raw in rows:
        try:
            if not wanted(parse_payload(decode_sign1(raw).payload, raw)):
                continue
        except RecordError:
            pass  # it will not verify either, and is logged below
        for key in keys.get(device, []):
            try:
                out.append(open_record(raw, key))
                break
            except RecordError:
                continue
        else:
            log.warning("a stored %s record of %s does not verify", rtype.name, device)
    return out


def rollcall_answers(
    center_db: Path, challenge: bytes, devices: Iterable[str] | None = None
) -> list[RollcallAnswer]:
    """Who answered the roll call with `challenge` (the first answer of each device), and
    where they were; `devices` limits the search to those."""
    con = open_readonly(center_db, center=("records",), hint=NOT_CENTER_HINT)
    try:
        records = _verified(
            con,
            RecordType.ROLLCALL,
            devices,
            lambda r: r.body.get(RollcallKey.CHALLENGE) == challenge,
        )
    finally:
        con.close()
    found: dict[str, RollcallAnswer] = {}
    for r in records:
        b = r.body
        if r.header.device in found:
            continue
        lat, lon, acc, fix_time = (
            b.get(k)
            for k in (
                RollcallKey.LAT_E7,
                RollcallKey.LON_E7,
                RollcallKey.ACCURACY_DM,
                RollcallKey.FIX_TIME,
            )
        )
        found[r.header.device] = RollcallAnswer(
            device=r.header.device,
            lat=lat / 1e7 if isinstance(lat, int) else None,
            lon=lon / 1e7 if isinstance(lon, int) else None,
            accuracy_m=acc / 10 if isinstance(acc, int) else None,
            fix_time_ms=fix_time if isinstance(fix_time, int) else None,
            answered_ms=r.header.time_ms,
        )
    return [found[d] for d in sorted(found)]


def receipts(
    center_db: Path, devices: Iterable[str] | None = None, numbers: Mapping[str, int] | None = None
) -> list[Receipt]:
    """Receipts stored for these devices (all if None), by device and number; `numbers`
    (device -> command number) keeps only the receipts for those commands."""

    def wanted(r: Record) -> bool:
        return numbers is None or numbers.get(r.header.device) == r.body.get(16)

    con = open_readonly(center_db, center=("records",), hint=NOT_CENTER_HINT)
    try:
        records = _verified(con, RecordType.RECEIPT, devices, wanted)
    finally:
        con.close()
    out: list[Receipt] = []
    for r in records:
        b = r.body
        number, ctype, outcome, reason = (b.get(k) for k in (16, 17, 18, 19))
        if not all(isinstance(v, int) for v in (number, ctype, outcome)):
            continue  # validate_body at the ingest rules this out
        assert isinstance(number, int) and isinstance(ctype, int) and isinstance(outcome, int)
        try:
            known = Outcome(outcome)
        except ValueError:
            continue  # an outcome a later version adds
        text = reason if isinstance(reason, str) else None
        out.append(Receipt(r.header.device, number, ctype, known, text, r.header.time_ms))
    out.sort(key=lambda x: (x.device, x.number))
    return out


# --- for key rotation (center/rotation.py) -------------------------------------------------------


def last_sent(center_db: Path, ctype: CommandType, device: str | None = None) -> list[Signed]:
    """The newest command of type `ctype` sent to each device (or to `device` only), by
    device; none when no command was ever signed with this database."""
    con = open_readonly(center_db)
    try:
        rows = con.execute(
            "SELECT s.device, s.number, s.type, s.expires_ms, s.raw FROM sent_commands s "
            "WHERE s.type = ?1 AND (?2 IS NULL OR s.device = ?2) AND s.number = "
            "(SELECT max(number) FROM sent_commands WHERE device = s.device AND type = ?1) "
            "ORDER BY s.device",
            (int(ctype), device),
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []  # no command was ever signed with this database
        raise CenterDbError(f"cannot read the center database: {exc}") from exc
    finally:
        con.close()
    return [Signed(str(d), int(n), int(t), int(e), bytes(raw)) for d, n, t, e, raw in rows]


def records_of(center_db: Path, device: str, rtype: RecordType) -> list[bytes]:
    """The stored records of one type from `device`, by sequence number, unverified: the
    caller checks them against the keys it trusts (rotation: the registry's key history)."""
    con = open_readonly(center_db)
    try:
        return [raw for _device, raw in _stored(con, rtype, [device])]
    except sqlite3.Error as exc:
        raise CenterDbError(f"cannot read the center database: {exc}") from exc
    finally:
        con.close()
