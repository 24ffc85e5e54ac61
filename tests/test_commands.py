"""Commands from the center: the verifier by tables, the executor against a real outbox,
and exactly-once across a kill -9 of a real process in the middle of carrying one out.

The MQTT end (a real broker, the center in-process, the CLI) is in tests/test_commands_mqtt.py.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st
from peers import kill_child_at

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Assignment, Line, Plan, Point, Window
from agent.commands.executor import CommandExecutor, Handled, bundle_agenda
from agent.config import ConfigError, load_config
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Built, Outbox
from contract.commands import (
    Body,
    Command,
    CommandType,
    CommandVerifier,
    ConfigChange,
    Reason,
    Refusal,
    Reminder,
    RollCall,
    Settings,
    TaskBundle,
    command_payload,
    local_date,
    read_stored,
)
from contract.cose import sign1
from contract.fix import Fix, TimeSource
from contract.records import (
    ChainPosition,
    Outcome,
    Record,
    RecordType,
    build,
    open_record,
)
from contract.recordschema import validate_body
from provisioning.center import create_center_key, load_center_key
from provisioning.device import provision_device
from provisioning.registry import ProvisioningError

REPO = Path(__file__).resolve().parents[1]
CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
INTRUDER = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
DEVICE_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
DEVICE = "h0001"
T0 = 1_772_359_200_000  # 2026-03-01T10:00Z
TODAY = dt.date(2026, 3, 1)
CHALLENGE = bytes(range(16))
PLAN = Plan(
    version=3,
    points=(Point("P1", 29.2650, 106.2550), Point("P2", 29.2677, 106.2550)),
    lines=(
        Line("L1", ("P1", "P2"), (Window(480, 600), None)),
        Line("L2", ("P2",)),
    ),
    assignments=(Assignment(("L2",), TODAY, team="T01"),),
)
FIX = Fix(T0 - 5_000, 29.2651, 106.2551, accuracy_m=3.0)
BUNDLE = TaskBundle(3, TODAY, ("L1",))


def signed(
    body: Body,
    number: int = 1,
    *,
    target: str = DEVICE,
    issued: int = T0,
    expires: int = T0 + 60_000,
    team: str | None = None,
    key: Ed25519PrivateKey = CENTER,
) -> bytes:
    payload = command_payload(
        target=target, number=number, issued_ms=issued, expires_ms=expires, body=body, team=team
    )
    return sign1(payload, key)


def signed_map(payload: dict[int, object], key: Ed25519PrivateKey = CENTER) -> bytes:
    return sign1(cbor2.dumps(payload), key)


VERIFIER = CommandVerifier(CENTER.public_key(), DEVICE)


def refusal(raw: bytes, now: int = T0, last: int = 0) -> Refusal:
    verdict = VERIFIER.check(raw, now, last)
    assert isinstance(verdict, Refusal), verdict
    return verdict


# --- the verifier ---------------------------------------------------------------------------------

BODIES: list[Body] = [
    BUNDLE,
    RollCall(CHALLENGE),
    Reminder("Meet at the north gate at 18:00"),
    ConfigChange({"report_interval_s": 600, "team": "T02"}),
]


@pytest.mark.parametrize("body", BODIES, ids=lambda b: type(b).__name__)
def test_a_valid_command_of_each_type_is_accepted_as_sent(body: Body) -> None:
    raw = signed(body, 7, team="T01")
    verdict = VERIFIER.check(raw, T0, 6)
    assert isinstance(verdict, Command)
    assert verdict.body == body
    assert (verdict.target, verdict.number, verdict.team) == (DEVICE, 7, "T01")
    assert (verdict.issued_ms, verdict.expires_ms) == (T0, T0 + 60_000)
    assert read_stored(raw) == verdict


@pytest.mark.parametrize("last", [1, 2, 1000])
def test_a_replay_with_the_same_or_a_lower_number_is_refused_and_not_answered(last: int) -> None:
    r = refusal(signed(RollCall(CHALLENGE), 1), last=last)
    assert r.reason is Reason.REPLAY
    assert not r.answered


def test_an_expired_command_is_refused_with_a_receipt() -> None:
    raw = signed(RollCall(CHALLENGE), expires=T0 + 60_000)
    assert isinstance(VERIFIER.check(raw, T0 + 60_000, 0), Command)  # the last valid instant
    r = refusal(raw, now=T0 + 60_001)
    assert r.reason is Reason.EXPIRED
    assert r.answered and (r.number, r.type) == (1, CommandType.ROLL_CALL)
    assert r.receipt_reason == "expired"


def test_a_misaddressed_command_is_refused_and_not_answered() -> None:
    r = refusal(signed(RollCall(CHALLENGE), target="h0002"))
    assert r.reason is Reason.MISADDRESSED
    assert "h0002" in r.detail
    assert not r.answered


def test_a_forged_command_is_refused_as_a_bad_signature() -> None:
    r = refusal(signed(RollCall(CHALLENGE), key=INTRUDER))
    assert r.reason is Reason.BAD_SIGNATURE
    assert not r.answered


def test_a_tampered_command_is_refused_as_a_bad_signature() -> None:
    raw = signed(TaskBundle(3, TODAY, ("L1",)))
    assert raw.count(b"L1") == 1
    assert refusal(raw.replace(b"L1", b"L2")).reason is Reason.BAD_SIGNATURE


MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "not CBOR": b"\xff\xfe",
    "a record-less map": cbor2.dumps({1: 2}),
    "untagged": cbor2.dumps([b"\xa1\x01\x27", {}, b"", bytes(64)]),
    "trailing bytes": signed(RollCall(CHALLENGE)) + b"\x00",
    "payload not a map": sign1(cbor2.dumps([1, 2]), CENTER),
    "payload not CBOR": sign1(b"\xff", CENTER),
    "text keys": signed_map({"1": 2}),
    "no number": signed_map({1: 2, 2: DEVICE, 5: T0, 6: T0 + 1, 16: CHALLENGE}),
    "number 0": signed_map({1: 2, 2: DEVICE, 4: 0, 5: T0, 6: T0 + 1, 16: CHALLENGE}),
    "no target": signed_map({1: 2, 4: 1, 5: T0, 6: T0 + 1, 16: CHALLENGE}),
    "no expiry": signed_map({1: 2, 2: DEVICE, 4: 1, 5: T0, 16: CHALLENGE}),
    "bool type": signed_map({1: True, 2: DEVICE, 4: 1, 5: T0, 6: T0 + 1, 16: CHALLENGE}),
}


@pytest.mark.parametrize("name", MALFORMED)
def test_a_malformed_command_is_refused_and_not_answered(name: str) -> None:
    r = refusal(MALFORMED[name])
    assert r.reason is Reason.MALFORMED, r
    assert not r.answered


def _header(ctype: int = 4) -> dict[int, object]:
    return {1: ctype, 2: DEVICE, 4: 1, 5: T0, 6: T0 + 60_000}


def _cert_of_version(version: int) -> bytes:
    """A self-signed certificate whose version field says `version` (3 is v3, 0..2 real)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import NameOID

    key = ec.derive_private_key(7, ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])
    t = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    builder = x509.CertificateBuilder().subject_name(name).issuer_name(name)
    builder = builder.public_key(key.public_key()).serial_number(1).not_valid_before(t)
    der = builder.not_valid_after(t + dt.timedelta(days=1)).sign(key, hashes.SHA256())
    raw = der.public_bytes(Encoding.DER)
    at = raw.index(bytes.fromhex("a003020102")) + 4  # [0] EXPLICIT INTEGER 2 (v3)
    return raw[:at] + bytes([version]) + raw[at + 1 :]


INVALID: dict[str, tuple[dict[int, object], str]] = {
    "unknown setting": ({**_header(), 16: {"colour": "red"}}, "unknown setting 'colour'"),
    "setting of the wrong type": (
        {**_header(), 16: {"report_interval_s": "often"}},
        "setting 'report_interval_s' must be a whole number 10..86400",
    ),
    "setting out of range": ({**_header(), 16: {"report_interval_s": 1}}, "10..86400"),
    "no settings": ({**_header(), 16: {}}, "map of settings"),
    "unknown type": ({**_header(99)}, "unknown command type 99"),
    "unknown key": ({**_header(2), 16: CHALLENGE, 21: 1}, "unknown key 21"),
    "short challenge": ({**_header(2), 16: b"\x01"}, "16 bytes"),
    "empty reminder": ({**_header(3), 16: ""}, "reminder"),
    "bad date": ({**_header(1), 16: 3, 17: "2026-02-30", 18: ["L1"]}, "no such date"),
    "no lines": ({**_header(1), 16: 3, 17: "2026-03-01", 18: []}, "line ids"),
    "twice a line": ({**_header(1), 16: 3, 17: "2026-03-01", 18: ["L1", "L1"]}, "distinct"),
    "expires before issued": ({**_header(2), 5: T0 + 60_001, 16: CHALLENGE}, "before"),
    # fuzz reproducers: str() of a 6,021-digit key raised ValueError; a certificate of an
    # unknown X.509 version raised InvalidVersion (not a ValueError) out of the verifier
    "unknown key too long to print": (
        {**_header(2), 16: CHALLENGE, 2**20000: 1},
        "unknown key an integer of about 6021 digits",
    ),
    "rotation certificate of version 8": (
        {**_header(5), 16: _cert_of_version(7)},
        "not a DER X.509 certificate",
    ),
}


@pytest.mark.parametrize("name", INVALID)
def test_a_signed_command_the_device_does_not_understand_is_refused_with_a_receipt(
    name: str,
) -> None:
    payload, words = INVALID[name]
    r = refusal(signed_map(payload))
    assert r.reason is Reason.INVALID
    assert r.answered
    assert words in r.receipt_reason


def test_the_checks_run_in_order_misaddressed_before_replay_before_expired() -> None:
    raw = signed(RollCall(CHALLENGE), 1, target="h0002", expires=T0 - 1)
    assert refusal(raw, last=5).reason is Reason.MISADDRESSED
    assert refusal(signed(RollCall(CHALLENGE), 1, expires=T0 - 1), last=5).reason is Reason.REPLAY


@given(st.binary(max_size=300))
def test_any_bytes_are_a_refusal_never_an_exception(data: bytes) -> None:
    assert isinstance(VERIFIER.check(data, T0, 0), Refusal)


GOOD = signed(ConfigChange({"report_interval_s": 600}))


@given(st.integers(0, len(GOOD) * 8 - 1))
def test_no_single_bit_flip_of_a_command_is_accepted(bit: int) -> None:
    flipped = bytearray(GOOD)
    flipped[bit // 8] ^= 1 << (bit % 8)
    verdict = VERIFIER.check(bytes(flipped), T0, 0)
    assert isinstance(verdict, Refusal)
    assert verdict.reason in {Reason.MALFORMED, Reason.BAD_SIGNATURE}


def test_settings_apply_only_what_a_change_names() -> None:
    s = Settings().apply(ConfigChange({"report_interval_s": 60}))
    assert s == Settings(report_interval_s=60)
    assert s.apply(ConfigChange({"team": "T09"})) == Settings(60, "T09")


def test_local_date_follows_the_plan_offset() -> None:
    late = T0 + 14 * 3_600_000  # 2026-03-02T00:00Z
    assert local_date(late - 1, 0) == TODAY
    assert local_date(late - 3_600_000, 120) == dt.date(2026, 3, 2)


# --- the executor, against a real outbox -------------------------------------------------------


@dataclass
class Clock:
    now: int | None = T0

    def __call__(self) -> Stamp:
        return Stamp(self.now, TimeSource.GNSS if self.now is not None else TimeSource.NONE)


@dataclass
class Device:
    box: Outbox
    agent: DeviceAgent
    executor: CommandExecutor
    clock: Clock
    shown: list[str]


def make_device(path: Path, clock: Clock | None = None) -> Device:
    box = Outbox(path, DEVICE)
    box.begin_boot()
    agent = DeviceAgent(DEVICE, DEVICE_KEY, PLAN, box)
    shown: list[str] = []
    clock = clock or Clock()
    executor = CommandExecutor(
        agent,
        CommandVerifier(CENTER.public_key(), DEVICE),
        clock,
        team="T01",
        on_reminder=lambda _c, r: shown.append(r.text),
    )
    return Device(box, agent, executor, clock, shown)


@pytest.fixture
def device(tmp_path: Path) -> Iterator[Device]:
    d = make_device(tmp_path / "outbox.db")
    try:
        yield d
    finally:
        d.box.close()


def records(box: Outbox) -> list[Record]:
    """Every record the outbox holds, verified with the device's key (what the center checks)."""
    out = [open_record(s.raw, DEVICE_KEY.public_key()) for s in box.pending(10_000)]
    for r in out:
        validate_body(r.header.type, r.body)
    return out


def receipts(box: Outbox) -> list[dict[int, object]]:
    return [dict(r.body) for r in records(box) if r.header.type is RecordType.RECEIPT]


def test_a_roll_call_is_answered_with_the_current_fix_and_a_receipt(device: Device) -> None:
    device.agent.on_fix(FIX)
    handled = device.executor.handle(signed(RollCall(CHALLENGE), 1))
    assert handled.outcome is Outcome.DONE
    answer, receipt = records(device.box)
    assert answer.header.type is RecordType.ROLLCALL
    assert answer.body == {16: CHALLENGE, 17: 292651000, 18: 1062551000, 19: 30, 20: T0 - 5_000}
    assert receipt.header.type is RecordType.RECEIPT
    assert receipt.body == {16: 1, 17: CommandType.ROLL_CALL, 18: Outcome.DONE}
    assert receipt.header.time_ms == T0 and receipt.header.time_source is TimeSource.GNSS
    assert device.box.last_command() == 1
    assert device.agent.created[RecordType.RECEIPT] == 1


def test_a_command_is_carried_out_once_however_often_it_arrives(device: Device) -> None:
    raw = signed(RollCall(CHALLENGE), 1)
    assert device.executor.handle(raw).outcome is Outcome.DONE
    depth = device.box.depth()
    for _ in range(3):
        assert device.executor.handle(raw) == Handled(None, "replay", 1)
    assert device.box.depth() == depth
    assert device.executor.stats.ignored["replay"] == 3
    older = signed(Reminder("old news"), 1)  # a different command with a used number
    assert device.executor.handle(older).outcome is None
    assert device.shown == []


def test_an_expired_command_is_refused_once_and_then_a_replay(device: Device) -> None:
    raw = signed(Reminder("too late"), 1, expires=T0 - 1)
    handled = device.executor.handle(raw)
    assert (handled.outcome, handled.reason) == (Outcome.REFUSED, "expired")
    assert receipts(device.box) == [{16: 1, 17: 3, 18: Outcome.REFUSED, 19: "expired"}]
    assert device.shown == []
    assert device.executor.handle(raw).reason == "replay"
    assert len(receipts(device.box)) == 1


def test_misaddressed_and_forged_commands_leave_no_trace_and_use_no_number(
    device: Device,
) -> None:
    for raw in (
        signed(RollCall(CHALLENGE), 1, target="h0002"),
        signed(RollCall(CHALLENGE), 1, key=INTRUDER),
        b"\x00garbage",
    ):
        assert device.executor.handle(raw).outcome is None
    assert device.box.depth() == 0
    assert device.box.last_command() == 0
    assert device.executor.handle(signed(RollCall(CHALLENGE), 1)).outcome is Outcome.DONE
    assert dict(device.executor.stats.ignored) == {
        "misaddressed": 1,
        "bad signature": 1,
        "malformed": 1,
    }


def test_without_the_time_a_command_waits_unanswered(device: Device) -> None:
    raw = signed(RollCall(CHALLENGE), 1)
    device.clock.now = None
    assert device.executor.handle(raw) == Handled(None, "no time")
    assert device.box.last_command() == 0
    device.clock.now = T0
    assert device.executor.handle(raw).outcome is Outcome.DONE


def test_a_task_bundle_for_today_becomes_the_agenda(device: Device) -> None:
    assert device.executor.agenda(TODAY) == PLAN.agenda(TODAY, DEVICE, "T01")  # the plan's
    handled = device.executor.handle(signed(BUNDLE, 1))
    assert handled.outcome is Outcome.DONE
    expected = bundle_agenda(PLAN, BUNDLE, DEVICE)
    assert [(a.line, a.point) for a in expected] == [("L1", "P1"), ("L1", "P2")]
    assert expected[0].start_ms == T0 - 2 * 3_600_000  # 08:00 on the plan's clock (UTC+0)
    assert device.agent.engine.agenda == expected
    assert device.executor.agenda(TODAY) == expected
    tomorrow = TODAY + dt.timedelta(days=1)
    assert device.executor.agenda(tomorrow) == PLAN.agenda(tomorrow, DEVICE, "T01")


def test_a_task_bundle_for_another_day_waits_for_that_day(device: Device) -> None:
    before = list(device.agent.engine.agenda)
    later = TaskBundle(3, TODAY + dt.timedelta(days=1), ("L2",))
    assert device.executor.handle(signed(later, 1)).outcome is Outcome.DONE
    assert device.agent.engine.agenda == before
    assert device.executor.agenda(later.date) == bundle_agenda(PLAN, later, DEVICE)


@pytest.mark.parametrize(
    ("bundle", "reason"),
    [
        (TaskBundle(9, TODAY, ("L1",)), "plan version 9 not on device"),
        (TaskBundle(3, TODAY, ("L1", "L7")), "line L7 not in plan version 3"),
    ],
)
def test_a_task_bundle_the_device_cannot_walk_is_refused(
    device: Device, bundle: TaskBundle, reason: str
) -> None:
    handled = device.executor.handle(signed(bundle, 1))
    assert (handled.outcome, handled.reason) == (Outcome.REFUSED, reason)
    assert receipts(device.box) == [{16: 1, 17: 1, 18: Outcome.REFUSED, 19: reason}]
    assert device.executor.bundle is None


def test_a_config_change_with_an_unknown_key_is_refused_and_changes_nothing(
    device: Device,
) -> None:
    raw = signed_map({**_header(), 16: {"report_interval_s": 60, "colour": "red"}})
    handled = device.executor.handle(raw)
    assert (handled.outcome, handled.reason) == (Outcome.REFUSED, "unknown setting 'colour'")
    assert device.executor.settings == Settings()
    ok = device.executor.handle(signed(ConfigChange({"report_interval_s": 60}), 2))
    assert ok.outcome is Outcome.DONE
    assert device.executor.settings == Settings(report_interval_s=60)


def test_a_team_change_takes_the_new_teams_assignments(device: Device) -> None:
    assert [a.line for a in device.executor.agenda(TODAY)] == ["L2"]  # team T01's
    device.executor.handle(signed(ConfigChange({"team": "T02"}), 1))
    assert device.executor.agenda(TODAY) == []
    assert device.agent.engine.agenda == []


def test_a_reminder_is_shown_until_it_expires_even_after_a_restart(tmp_path: Path) -> None:
    d = make_device(tmp_path / "o.db")
    d.executor.handle(signed(Reminder("bring the torch"), 1, expires=T0 + 3_600_000))
    d.executor.handle(signed(Reminder("short one"), 2, expires=T0 + 60_000))
    assert d.shown == ["bring the torch", "short one"]
    d.box.close()
    again = make_device(tmp_path / "o.db", Clock(T0 + 120_000))
    again.executor.restore()
    assert again.shown == ["bring the torch"]
    again.box.close()


def test_state_from_commands_is_restored_at_start_up(tmp_path: Path) -> None:
    d = make_device(tmp_path / "o.db")
    d.executor.handle(signed(BUNDLE, 1))
    d.executor.handle(signed(ConfigChange({"report_interval_s": 60}), 2))
    d.executor.handle(signed(TaskBundle(9, TODAY, ("L1",)), 3))  # refused: not restored
    d.executor.handle(signed(ConfigChange({"team": "T05"}), 4))
    d.box.close()
    again = make_device(tmp_path / "o.db")
    again.executor.restore()
    assert again.executor.bundle == BUNDLE
    assert again.executor.settings == Settings(60, "T05")
    assert again.agent.engine.agenda == bundle_agenda(PLAN, BUNDLE, DEVICE)
    assert again.box.last_command() == 4
    assert [c.number for c in again.box.answered_commands(CommandType.TASK_BUNDLE)] == [1, 3]
    again.box.close()


def test_a_failed_transaction_stores_neither_the_receipt_nor_the_number(
    device: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    device.agent.on_fix(FIX)
    monkeypatch.setattr(device.agent, "key", _Exploding())
    raw = signed(RollCall(CHALLENGE), 1)
    with pytest.raises(RuntimeError):
        device.executor.handle(raw)
    assert device.box.last_command() == 0
    assert device.box.depth() == 0
    monkeypatch.setattr(device.agent, "key", DEVICE_KEY)
    assert device.executor.handle(raw).outcome is Outcome.DONE
    assert len(receipts(device.box)) == 1
    assert [r.header.seq for r in records(device.box)] == [1, 2]


class _Exploding:
    def sign(self, _data: bytes) -> bytes:
        raise RuntimeError("killed while signing")


def test_answer_command_needs_a_receipt(device: Device) -> None:
    with pytest.raises(ValueError, match="receipt"):
        device.box.answer_command(
            number=1, command_type=2, outcome=0, reason=None, time_ms=T0, command=b"", builds=[]
        )


# --- exactly once across kill -9 -----------------------------------------------------------------

CHILD = """
import os, sys, time
from pathlib import Path
sys.path[:0] = [{tests!r}, {repo!r}]
import test_commands as t

class Stall:
    def __init__(self, key, word):
        self.key, self.word = key, word
    def sign(self, data):
        os.write(1, self.word + b"\\n")
        time.sleep(60)

path, phase, raw = Path(sys.argv[1]), sys.argv[2], bytes.fromhex(sys.argv[3])
d = t.make_device(path)
if phase == "signing":
    d.agent.key = Stall(t.DEVICE_KEY, b"signing")
else:
    def stall(_stored):
        os.write(1, b"committed\\n")
        time.sleep(60)
    d.agent.on_stored = stall
os.write(1, b"ready\\n")
d.executor.handle(raw)
os.write(1, b"returned\\n")
"""


def run_and_kill(path: Path, phase: str, raw: bytes) -> None:
    """Carry out `raw` in a real process and kill -9 it at `phase`."""
    kill_child_at(CHILD.format(tests=str(REPO / "tests"), repo=str(REPO)), path, phase, raw)


def test_killed_before_the_commit_the_redelivered_command_is_carried_out_once(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    raw = signed(RollCall(CHALLENGE), 1)
    run_and_kill(path, "signing", raw)
    d = make_device(path)
    assert d.box.recovered_from is None
    assert d.box.last_command() == 0  # neither the number …
    assert records(d.box) == []  # … nor any record survived
    d.executor.restore()
    assert d.executor.handle(raw).outcome is Outcome.DONE
    assert d.executor.handle(raw).outcome is None
    assert [r.header.type for r in records(d.box)] == [RecordType.ROLLCALL, RecordType.RECEIPT]
    assert receipts(d.box) == [{16: 1, 17: 2, 18: Outcome.DONE}]
    d.box.close()


def test_killed_after_the_commit_the_redelivery_is_a_replay_and_state_is_restored(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    raw = signed(BUNDLE, 1)
    run_and_kill(path, "committed", raw)  # before the agenda was set
    d = make_device(path)
    assert d.box.recovered_from is None
    assert d.box.last_command() == 1
    assert receipts(d.box) == [{16: 1, 17: 1, 18: Outcome.DONE}]
    d.executor.restore()
    assert d.agent.engine.agenda == bundle_agenda(PLAN, BUNDLE, DEVICE)
    assert d.executor.handle(raw) == Handled(None, "replay", 1)
    assert len(receipts(d.box)) == 1
    seqs = [r.header.seq for r in records(d.box)]
    assert seqs == [1]
    d.box.close()


# --- keys and configuration ----------------------------------------------------------------------


def test_the_center_key_is_made_once_private_and_given_to_devices(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet"
    public = create_center_key(fleet)
    key_file = fleet / "center.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    first = key_file.read_bytes()
    public.unlink()
    assert create_center_key(fleet) == public  # idempotent, and writes a lost .pub again
    assert key_file.read_bytes() == first
    key = load_center_key(fleet)
    files = provision_device(
        fleet,
        DEVICE,
        tmp_path / DEVICE,
        broker_host="127.0.0.1",
        broker_port=1883,
        now_ms=T0,
        center_pub=public,
    )
    cfg = load_config(files.config)
    center = cfg.load_center_key()
    assert center is not None
    assert center.public_bytes_raw() == key.public_key().public_bytes_raw()
    verifier = CommandVerifier(center, DEVICE)
    assert isinstance(verifier.check(signed(RollCall(CHALLENGE), key=key), T0, 0), Command)


def test_a_device_without_center_key_accepts_no_commands(tmp_path: Path) -> None:
    files = provision_device(
        tmp_path / "fleet", DEVICE, tmp_path / DEVICE, broker_host="h", broker_port=1, now_ms=T0
    )
    assert 'center_key = "center.pub"' in files.config.read_text()  # enrolled: trusts its fleet
    text = files.config.read_text().replace('center_key = "center.pub"\n', "")
    files.config.write_text(text)  # a hand-made config without the key
    assert load_config(files.config).load_center_key() is None


def test_a_raw_center_key_is_accepted_and_a_bad_one_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'device = "h0001"\nkey = "k"\ncenter_key = "c.pub"\n[broker]\nhost = "h"\nport = 1\n'
    )
    (tmp_path / "c.pub").write_bytes(CENTER.public_key().public_bytes_raw())
    assert load_config(cfg).load_center_key() is not None
    (tmp_path / "c.pub").write_bytes(b"not a key")
    with pytest.raises(ConfigError, match="center key"):
        load_config(cfg).load_center_key()


def test_a_center_key_readable_by_others_is_refused(tmp_path: Path) -> None:
    create_center_key(tmp_path)
    (tmp_path / "center.key").chmod(0o644)
    with pytest.raises(ProvisioningError, match="too open"):
        load_center_key(tmp_path)
    with pytest.raises(ProvisioningError, match="picket center key"):
        load_center_key(tmp_path / "nowhere")


def test_records_built_by_hand_interleave_with_commands(device: Device) -> None:
    """A check-in between two commands: one chain, numbered in order."""

    def checkin(pos: ChainPosition) -> Built:
        raw = build(
            DEVICE_KEY,
            device=DEVICE,
            chain=pos,
            rtype=RecordType.CHECKIN,
            time_ms=T0,
            time_source=TimeSource.GNSS,
            body={16: "P1"},
        )
        return Built(RecordType.CHECKIN, T0, raw)

    device.executor.handle(signed(Reminder("a"), 1))
    device.box.append(checkin)
    device.executor.handle(signed(Reminder("b"), 2))
    recs = records(device.box)
    assert [r.header.seq for r in recs] == [1, 2, 3]
    assert [c.receipt for c in device.box.answered_commands()] == [1, 3]
