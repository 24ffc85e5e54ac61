"""Commands from the center: the wire format, and the verdict on one command. Pure.

A command is a COSE_Sign1 (the envelope of docs/records.md) signed by the center's Ed25519
key, whose payload is a CBOR map: who it is for, its number in that device's sequence, when
it was issued and when it expires, then what to do (docs/commands.md). The center encodes
with `command_payload`, the device decides with `CommandVerifier.check`: bytes, the time
and the highest number already answered in, a `Command` or a `Refusal` out. No clock, no
storage: agent/commands/executor.py keeps the number durable and carries the command out.

The checks run in the order that bounds what an outsider can make a device do. Only a
command the center signed for this device and has not been answered before may cost a
record: a forged, malformed, misaddressed or replayed command is dropped and counted, never
answered, so republishing captured commands cannot fill a device's outbox with receipts.
A fresh, signed, addressed command is answered exactly once, even when it is refused
(expired, or not understood): the receipt tells the center its number was used.

Every header value is bounded (`HEADER_SCHEMA`, kinds of contract/bounds.py): a number of
2**63 or a time past 2200 is MALFORMED, never a value that reaches the device's outbox; a
command over MAX_COMMAND bytes is refused before it is decoded.

Keys a command type does not define are refused, not ignored (unlike records): a command
that says more than the device understands must not be carried out halfway.

A key rotation (`RotateKeys`) is checked here only for its shape (a DER X.509
certificate); whether the certificate fits this device (its CA, its next TLS key, its
name) depends on the device's files and is judged by agent/identity/rotation.py, like a task
bundle's lines are judged against the device's plan. Likewise a dock's commands (`FlyLine`,
`AbortMission`): here only their shape; whether the drone can fly is the dock's judgement
(agent/dock/machine.py), given its battery, the wind and the drone's state at that moment.
The bodies of the event commands (CATALOGUE, EVENT_STATUS) and their readers are in
contract/eventcommands.py; this module dispatches to them by type.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from contract import bounds as b
from contract import eventcommands as ec
from contract.cose import decode_sign1, sig_structure, strict_loads
from contract.errors import RecordError
from contract.protocol import DEVICE_ID

__all__ = [
    "CHALLENGE_LEN",
    "DOCK_COMMANDS",
    "EVENT_COMMANDS",
    "MAX_TEXT",
    "SETTINGS",
    "AbortMission",
    "Body",
    "Command",
    "CommandKey",
    "CommandType",
    "CommandVerifier",
    "ConfigChange",
    "FlyLine",
    "Priority",
    "Reason",
    "Refusal",
    "Reminder",
    "RollCall",
    "RotateKeys",
    "Settings",
    "TaskBundle",
    "body_type",
    "command_payload",
    "local_date",
    "read_stored",
]

CHALLENGE_LEN = 16
MAX_LINES = 256
MAX_TEXT = 1000  # characters of a reminder
MAX_REASON = 100  # characters of a receipt's reason
MAX_CERT = 4096  # bytes of a certificate in a key rotation (a P-256 client one is about 600)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


class CommandType(enum.IntEnum):
    """Key 1 of a command; also key 17 of its receipt."""

    TASK_BUNDLE = 1
    ROLL_CALL = 2
    REMINDER = 3
    CONFIG_CHANGE = 4
    ROTATE_KEYS = 5
    FLY_LINE = 6  # docks only: fly an aerial line now
    ABORT_MISSION = 7  # docks only: bring the drone home now
    CATALOGUE = 8  # the catalogue of event categories (contract/eventcommands.py)
    EVENT_STATUS = 9  # one status change of one event, to its reporter and assignee


# Commands only a dock carries out; any other device refuses them.
DOCK_COMMANDS = frozenset({CommandType.FLY_LINE, CommandType.ABORT_MISSION})
EVENT_COMMANDS = frozenset({CommandType.CATALOGUE, CommandType.EVENT_STATUS})


class Priority(enum.IntEnum):
    """Why a line is flown (FLY_LINE key 17); carried into the mission's summary record."""

    ROUTINE = 0
    CROWD = 1
    FIRE = 2


class CommandKey(enum.IntEnum):
    """Keys every command has (TEAM is optional), as in a record; type-specific from 16."""

    TYPE = 1
    TARGET = 2
    TEAM = 3
    NUMBER = 4
    ISSUED = 5
    EXPIRES = 6


HEADER_KEYS = frozenset(CommandKey)


@dataclass(frozen=True, slots=True)
class TaskBundle:
    """The day's patrol task: walk these lines of this plan version on this date."""

    plan_version: int
    date: dt.date
    lines: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RollCall:
    """Answer with a signed roll-call record carrying this challenge and the current fix."""

    challenge: bytes


@dataclass(frozen=True, slots=True)
class Reminder:
    """Text for the member, shown until the command expires."""

    text: str


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """New values for some of the settings in `SETTINGS`; the others keep theirs."""

    settings: Mapping[str, int | str]


@dataclass(frozen=True, slots=True)
class RotateKeys:
    """Make the pre-committed next key pair current; `cert` (DER) certifies its TLS key."""

    cert: bytes


@dataclass(frozen=True, slots=True)
class FlyLine:
    """A dock: launch the drone over this aerial line of the dock's plan."""

    line: str
    priority: Priority = Priority.ROUTINE


@dataclass(frozen=True, slots=True)
class AbortMission:
    """A dock: end the mission in flight and bring the drone home.

    No keys of its own: numbers only go up, so an abort can only reach the dock after the
    FLY_LINE the center meant it for, never after a later one."""


Body = (
    TaskBundle | RollCall | Reminder | ConfigChange | RotateKeys | FlyLine | AbortMission
    | ec.Catalogue | ec.EventStatus
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings the center may change (a config change), as applied on the device.

    None means "not changed by the center": the device's config file decides.
    """

    report_interval_s: int | None = None  # health reports, seconds between them
    team: str | None = None  # the team whose assignments the device walks

    def apply(self, change: ConfigChange) -> Settings:
        """These settings after `change` (values already checked against `SETTINGS`)."""
        new = change.settings
        interval, team = new.get("report_interval_s"), new.get("team")
        return Settings(
            report_interval_s=interval if isinstance(interval, int) else self.report_interval_s,
            team=team if isinstance(team, str) else self.team,
        )


@dataclass(frozen=True, slots=True)
class Setting:
    kind: type
    low: int = 0
    high: int = 0

    def problem(self, name: str, value: object) -> str | None:
        if self.kind is int:
            if type(value) is not int or not self.low <= value <= self.high:
                return f"setting {name!r} must be a whole number {self.low}..{self.high}"
        elif not isinstance(value, str) or not DEVICE_ID.fullmatch(value):
            return f"setting {name!r} must be an id (letters, digits, '.', '_', '-')"
        return None


# The settings a config change may carry: name -> what a value must be. Anything else is refused.
SETTINGS: Mapping[str, Setting] = {
    "report_interval_s": Setting(int, 10, 86_400),
    "team": Setting(str),
}


@dataclass(frozen=True, slots=True)
class Command:
    """A command that verified: signed by the center, for this device, fresh, understood."""

    type: CommandType
    target: str
    number: int
    issued_ms: int
    expires_ms: int
    body: Body
    team: str | None = None


class Reason(enum.Enum):
    """Why a command is not carried out; the value is how a receipt or a log names it."""

    MALFORMED = "malformed"  # not a command at all: nothing in it can be trusted
    BAD_SIGNATURE = "bad signature"  # not signed by the center's key
    MISADDRESSED = "misaddressed"  # signed, but for another device
    REPLAY = "replay"  # its number was answered before
    EXPIRED = "expired"  # fresh, but too late
    INVALID = "invalid"  # fresh and signed, but not a command this device understands


ANSWERED = frozenset({Reason.EXPIRED, Reason.INVALID})


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: Reason
    detail: str
    number: int | None = None  # known only once the command is known to be the center's
    type: int | None = None

    @property
    def answered(self) -> bool:
        """The device answers this refusal with a REFUSED receipt (and uses up the number)."""
        return self.reason in ANSWERED and self.number is not None and self.type is not None

    @property
    def receipt_reason(self) -> str:
        text = self.reason.value if self.reason is Reason.EXPIRED else self.detail
        return text[:MAX_REASON]


def body_type(body: Body) -> CommandType:
    if isinstance(body, TaskBundle):
        return CommandType.TASK_BUNDLE
    if isinstance(body, RollCall):
        return CommandType.ROLL_CALL
    if isinstance(body, Reminder):
        return CommandType.REMINDER
    if isinstance(body, RotateKeys):
        return CommandType.ROTATE_KEYS
    if isinstance(body, FlyLine):
        return CommandType.FLY_LINE
    if isinstance(body, AbortMission):
        return CommandType.ABORT_MISSION
    if isinstance(body, ec.Catalogue | ec.EventStatus):
        return CommandType.CATALOGUE if isinstance(body, ec.Catalogue) else CommandType.EVENT_STATUS
    return CommandType.CONFIG_CHANGE


def _body_map(body: Body) -> dict[int, object]:
    if isinstance(body, TaskBundle):
        return {16: body.plan_version, 17: body.date.isoformat(), 18: list(body.lines)}
    if isinstance(body, RollCall):
        return {16: body.challenge}
    if isinstance(body, Reminder):
        return {16: body.text}
    if isinstance(body, RotateKeys):
        return {16: body.cert}
    if isinstance(body, FlyLine):
        return {16: body.line, 17: int(body.priority)}
    if isinstance(body, AbortMission):
        return {}
    if isinstance(body, ec.Catalogue | ec.EventStatus):
        return body.as_map()
    return {16: dict(body.settings)}


def command_payload(
    *,
    target: str,
    number: int,
    issued_ms: int,
    expires_ms: int,
    body: Body,
    team: str | None = None,
) -> bytes:
    """The payload the center signs (keys in ascending order, as in records)."""
    payload: dict[int, object] = {1: int(body_type(body)), 2: target}
    if team is not None:
        payload[3] = team
    payload.update({4: number, 5: issued_ms, 6: expires_ms})
    payload.update(_body_map(body))
    return cbor2.dumps(payload, canonical=True)


def local_date(now_ms: int, utc_offset_min: int) -> dt.date:
    """The date on the district's clock (a plan's UTC offset) at `now_ms`."""
    moment = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC)
    return (moment + dt.timedelta(minutes=utc_offset_min)).date()


# --- decoding ---------------------------------------------------------------------------------


_Invalid = ec.Invalid  # a signed, addressed command whose type or body is not understood


def _uint(v: object) -> bool:
    return type(v) is int and v >= 0


# Keys 1-6: their kinds (contract/bounds.py); a command number is a sequence number from 1.
NUMBER = b.uint(b.SEQ_MAX, f"an integer 1..{b.SEQ_MAX}")
HEADER_SCHEMA: Mapping[int, tuple[str, b.Kind]] = {
    CommandKey.TYPE: ("type", b.CODE),
    CommandKey.TARGET: ("target device", b.DEVICE_ID_KIND),
    CommandKey.TEAM: ("team", b.ID_TEXT),
    CommandKey.NUMBER: ("number", NUMBER),
    CommandKey.ISSUED: ("issued", b.TIME),
    CommandKey.EXPIRES: ("expires", b.TIME),
}


def _header(m: Mapping[object, object]) -> tuple[int, str, str | None, int, int, int]:
    """Keys 1-6, or RecordError: without them nothing about the command can be trusted."""
    for key, (name, kind) in HEADER_SCHEMA.items():
        if key != CommandKey.TEAM or key in m:
            b.check(kind, m.get(key), f"key {key} ({name})")
    ctype, target, team = m.get(1), m.get(2), m.get(3, None)
    number, issued, expires = m.get(4), m.get(5), m.get(6)
    if number == 0:
        raise RecordError(f"key 4 (number) must be {NUMBER.what}")
    assert isinstance(ctype, int) and isinstance(number, int) and isinstance(target, str)
    assert isinstance(issued, int) and isinstance(expires, int)
    assert team is None or isinstance(team, str)
    return ctype, target, team, number, issued, expires


def _only(m: Mapping[object, object], keys: Sequence[int]) -> None:
    extra = sorted(k for k in m if isinstance(k, int) and k not in HEADER_KEYS and k not in keys)
    if extra:
        raise _Invalid(f"unknown key {b.shown(extra[0])}")


def _task_bundle(m: Mapping[object, object]) -> Body:
    _only(m, (16, 17, 18))
    version, date, lines = m.get(16), m.get(17), m.get(18)
    if not b.fits(b.COUNT32, version):
        raise _Invalid(f"task bundle: plan version must be {b.COUNT32.what}")
    assert isinstance(version, int)
    if not isinstance(date, str) or not _DATE.fullmatch(date):
        raise _Invalid("task bundle: date must be YYYY-MM-DD")
    try:
        day = dt.date.fromisoformat(date)
    except ValueError:
        raise _Invalid(f"task bundle: no such date {date}") from None
    if not isinstance(lines, list | tuple) or not 1 <= len(lines) <= MAX_LINES:
        raise _Invalid(f"task bundle: lines must be 1..{MAX_LINES} line ids")
    if not all(isinstance(x, str) and x and b.fits(b.ID_TEXT, x) for x in lines):
        raise _Invalid(f"task bundle: a line id must be non-empty {b.ID_TEXT.what}")
    if len(set(lines)) != len(lines):
        raise _Invalid("task bundle: lines must be distinct line ids")
    return TaskBundle(version, day, tuple(str(x) for x in lines))


def _roll_call(m: Mapping[object, object]) -> Body:
    _only(m, (16,))
    challenge = m.get(16)
    if not isinstance(challenge, bytes) or len(challenge) != CHALLENGE_LEN:
        raise _Invalid(f"roll call: challenge must be {CHALLENGE_LEN} bytes")
    return RollCall(challenge)


def _reminder(m: Mapping[object, object]) -> Body:
    _only(m, (16,))
    text = m.get(16)
    if not isinstance(text, str) or not 1 <= len(text) <= MAX_TEXT:
        raise _Invalid(f"reminder: text must be 1..{MAX_TEXT} characters")
    return Reminder(text)


def _config_change(m: Mapping[object, object]) -> Body:
    _only(m, (16,))
    settings = m.get(16)
    if not isinstance(settings, Mapping) or not settings:
        raise _Invalid("config change: key 16 must be a map of settings")
    out: dict[str, int | str] = {}
    for name, value in settings.items():
        if not isinstance(name, str) or name not in SETTINGS:
            raise _Invalid(f"unknown setting {b.shown(name)}")
        problem = SETTINGS[name].problem(name, value)
        if problem is not None:
            raise _Invalid(problem)
        assert isinstance(value, int | str)
        out[name] = value
    return ConfigChange(out)


def _rotate_keys(m: Mapping[object, object]) -> Body:
    _only(m, (16,))
    cert = m.get(16)
    if not isinstance(cert, bytes) or not 1 <= len(cert) <= MAX_CERT:
        raise _Invalid(f"key rotation: key 16 must be a certificate of 1..{MAX_CERT} bytes")
    try:
        x509.load_der_x509_certificate(cert)
    except (ValueError, x509.InvalidVersion):  # InvalidVersion is not a ValueError
        raise _Invalid("key rotation: key 16 is not a DER X.509 certificate") from None
    return RotateKeys(cert)


def _fly_line(m: Mapping[object, object]) -> Body:
    _only(m, (16, 17))
    line, priority = m.get(16), m.get(17)
    if not isinstance(line, str) or not DEVICE_ID.fullmatch(line):
        raise _Invalid("fly line: key 16 must be a line id")
    if not _uint(priority) or priority not in set(Priority):
        raise _Invalid(f"fly line: key 17 must be a priority 0..{max(Priority)}")
    assert isinstance(priority, int)
    return FlyLine(line, Priority(priority))


def _abort_mission(m: Mapping[object, object]) -> Body:
    _only(m, ())
    return AbortMission()


# Command type -> the reader of its type-specific keys (they raise _Invalid).
BODY_READERS: Mapping[CommandType, Callable[[Mapping[object, object]], Body]] = {
    CommandType.TASK_BUNDLE: _task_bundle,
    CommandType.ROLL_CALL: _roll_call,
    CommandType.REMINDER: _reminder,
    CommandType.CONFIG_CHANGE: _config_change,
    CommandType.ROTATE_KEYS: _rotate_keys,
    CommandType.FLY_LINE: _fly_line,
    CommandType.ABORT_MISSION: _abort_mission,
    CommandType.CATALOGUE: ec.read_catalogue,
    CommandType.EVENT_STATUS: ec.read_event_status,
}


def _payload_map(payload: bytes) -> Mapping[object, object]:
    m = strict_loads(payload)
    if not isinstance(m, Mapping):
        raise RecordError("payload is not a CBOR map")
    if not all(type(k) is int for k in m):
        raise RecordError("payload keys must be integers")
    return m


def _command(m: Mapping[object, object]) -> Command:
    """The whole command; RecordError for the header, _Invalid for the type and body."""
    ctype, target, team, number, issued, expires = _header(m)
    try:
        known = CommandType(ctype)
    except ValueError:
        raise _Invalid(f"unknown command type {ctype}") from None
    if expires < issued:
        raise _Invalid("expires before it was issued")
    return Command(known, target, number, issued, expires, BODY_READERS[known](m), team)


def read_stored(raw: bytes) -> Command:
    """A command this device verified and stored earlier, read again (no checks of time,
    number or signature: the outbox holds only commands that passed them)."""
    return _command(_payload_map(decode_sign1(raw).payload))


class CommandVerifier:
    """Decides on one command for one device, given the center's public key."""

    def __init__(self, center_key: Ed25519PublicKey, device: str) -> None:
        self.center_key = center_key
        self.device = device

    def check(self, raw: bytes, now_ms: int, last_number: int) -> Command | Refusal:
        """`raw` at `now_ms`, when `last_number` is the highest number answered so far.

        Never raises for anything in `raw`: every input is a Command or a Refusal.
        """
        if len(raw) > b.MAX_COMMAND:
            return Refusal(
                Reason.MALFORMED, f"{len(raw)} bytes: a command is at most {b.MAX_COMMAND}"
            )
        try:
            msg = decode_sign1(raw)
        except RecordError as exc:
            return Refusal(Reason.MALFORMED, str(exc))
        try:
            self.center_key.verify(msg.signature, sig_structure(msg.protected, msg.payload))
        except InvalidSignature:
            return Refusal(Reason.BAD_SIGNATURE, "not signed by the center's key")
        try:
            m = _payload_map(msg.payload)
            ctype, target, _team, number, _issued, expires = _header(m)
        except RecordError as exc:
            return Refusal(Reason.MALFORMED, str(exc))
        if target != self.device:
            return Refusal(Reason.MISADDRESSED, f"command {number} is for {b.shown(target)}")
        if number <= last_number:
            detail = f"command {number} is not after {last_number}, the last answered"
            return Refusal(Reason.REPLAY, detail, number, ctype)
        if now_ms > expires:
            late = f"command {number} expired {(now_ms - expires) // 1000} s ago"
            return Refusal(Reason.EXPIRED, late, number, ctype)
        try:
            return _command(m)
        except _Invalid as exc:
            return Refusal(Reason.INVALID, str(exc), number, ctype)
