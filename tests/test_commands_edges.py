"""Command bodies at their limits, and the dock's two commands, through the verifier a device
runs (contract/commands.py): found by the mutation benchmark (bench/mutation.py,
docs/testing.md).

Each body is checked one step either side of its bound: what the center may send is
carried out, one more is answered INVALID (a receipt, never an exception), as
docs/commands.md promises for every input.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import NameOID

from contract.bounds import MAX_COMMAND
from contract.commands import (
    MAX_CERT,
    MAX_LINES,
    MAX_TEXT,
    AbortMission,
    Body,
    Command,
    CommandType,
    CommandVerifier,
    ConfigChange,
    FlyLine,
    Priority,
    Reason,
    Refusal,
    Reminder,
    RotateKeys,
    Settings,
    TaskBundle,
    command_payload,
    local_date,
    read_stored,
)
from contract.cose import decode_sign1, sign1
from contract.eventcommands import Catalogue, Category, EventStatus, EventStatusCode

CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(100, 132)))
DEVICE = "d0001"
T0 = 1_772_359_200_000
VERIFIER = CommandVerifier(CENTER.public_key(), DEVICE)


def signed(body: Body, number: int = 1, expires_ms: int = T0 + 60_000) -> bytes:
    payload = command_payload(
        target=DEVICE, number=number, issued_ms=T0, expires_ms=expires_ms, body=body
    )
    return sign1(payload, CENTER)


def signed_map(body: dict[int, object], ctype: CommandType, number: int = 1) -> bytes:
    payload = {1: int(ctype), 2: DEVICE, 4: number, 5: T0, 6: T0 + 60_000, **body}
    return sign1(cbor2.dumps(payload), CENTER)


def check(raw: bytes) -> Command | Refusal:
    return VERIFIER.check(raw, T0 + 1_000, 0)


def invalid(raw: bytes) -> Refusal:
    got = check(raw)
    assert isinstance(got, Refusal), got
    assert got.reason is Reason.INVALID, got
    return got


# --------------------------------------------------------------------------- the dock


@pytest.mark.parametrize("priority", list(Priority))
def test_fly_line_is_carried_out_with_its_priority(priority: Priority) -> None:
    raw = signed(FlyLine("AL01.2", priority), number=7)
    got = check(raw)
    assert isinstance(got, Command)
    assert (got.type, got.number, got.body) == (
        CommandType.FLY_LINE,
        7,
        FlyLine("AL01.2", priority),
    )
    assert read_stored(raw) == got  # read again from the outbox: the same command


def test_fly_line_without_a_priority_is_refused_and_so_is_an_unknown_priority() -> None:
    invalid(signed_map({16: "AL01"}, CommandType.FLY_LINE))
    for bad in (max(Priority) + 1, -1, "0", True):
        invalid(signed_map({16: "AL01", 17: bad}, CommandType.FLY_LINE))


@pytest.mark.parametrize("line", ["", "-AL01", "AL 01", 5, b"AL01", "A" * 65])
def test_fly_line_names_a_line_id_or_is_refused(line: object) -> None:
    invalid(signed_map({16: line, 17: 0}, CommandType.FLY_LINE))


def test_fly_line_with_a_key_of_no_meaning_is_refused() -> None:
    assert isinstance(check(signed_map({16: "AL01", 17: 0}, CommandType.FLY_LINE)), Command)
    invalid(signed_map({16: "AL01", 17: 0, 18: 1}, CommandType.FLY_LINE))


def test_abort_mission_has_no_keys_of_its_own() -> None:
    got = check(signed(AbortMission(), number=3))
    assert isinstance(got, Command)
    assert (got.type, got.body) == (CommandType.ABORT_MISSION, AbortMission())
    refused = invalid(signed_map({16: "AL01"}, CommandType.ABORT_MISSION, number=3))
    assert "16" in refused.detail  # names the key it did not expect


# --------------------------------------------------------------------------- the event commands


def test_a_catalogue_and_an_event_status_are_sent_as_types_8_and_9_and_read_back() -> None:
    catalogue = Catalogue(3, (Category(12, "路灯损坏", "Broken streetlight", "roads", "t-roads"),))
    status = EventStatus(
        event=41,
        status=EventStatusCode.ACCEPTED,
        reporter="d0002",
        report_seq=17,
        category=12,
        text=None,
        assignee=None,
        deadline_ms=None,
        changed_ms=T0,
        by="duty officer",
    )
    # docs/commands.md: key 1 is 8 for a catalogue, 9 for an event status
    for body, wire_type in ((catalogue, 8), (status, 9)):
        raw = signed(body, number=wire_type)
        assert cbor2.loads(decode_sign1(raw).payload)[1] == wire_type
        got = check(raw)
        assert isinstance(got, Command), got
        assert (int(got.type), got.body) == (wire_type, body)


# --------------------------------------------------------------------------- bounds


def test_a_reminder_of_1_and_of_max_text_characters_is_carried_out() -> None:
    for text in ("!", "é" * MAX_TEXT):
        got = check(signed(Reminder(text)))
        assert isinstance(got, Command)
        assert got.body == Reminder(text)


@pytest.mark.parametrize("text", ["", "x" * (MAX_TEXT + 1), 7, None])
def test_a_reminder_empty_too_long_or_not_text_is_refused(text: object) -> None:
    invalid(signed_map({16: text}, CommandType.REMINDER))


def _cert(size: int) -> bytes:
    """A real DER certificate of exactly `size` bytes (a filler extension sets the size)."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, DEVICE)])

    def build(filler: int) -> bytes:
        ext = x509.UnrecognizedExtension(
            x509.ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x00" * filler
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
            .not_valid_after(dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
            .add_extension(ext, critical=False)
            .sign(key, None)
        )
        return cert.public_bytes(Encoding.DER)

    filler = size - len(build(0))
    for _ in range(4):  # DER lengths grow a byte at some sizes: converge on the exact size
        der = build(filler)
        if len(der) == size:
            return der
        filler += size - len(der)
    raise AssertionError(f"no certificate of exactly {size} bytes")


def test_a_key_rotation_carries_a_certificate_of_up_to_max_cert_bytes() -> None:
    biggest = _cert(MAX_CERT)
    got = check(signed(RotateKeys(biggest)))
    assert isinstance(got, Command)
    assert got.body == RotateKeys(biggest)
    refused = invalid(signed(RotateKeys(_cert(MAX_CERT + 1))))
    assert str(MAX_CERT) in refused.detail


@pytest.mark.parametrize("cert", ["MIIB", 1234, b"", None], ids=repr)
def test_a_key_rotation_whose_certificate_is_not_bytes_is_refused_without_raising(
    cert: object,
) -> None:
    invalid(signed_map({16: cert}, CommandType.ROTATE_KEYS))


def test_a_key_rotation_of_one_byte_is_refused_as_not_a_certificate() -> None:
    refused = invalid(signed_map({16: b"\x30"}, CommandType.ROTATE_KEYS))
    assert "X.509" in refused.detail  # long enough; not a certificate


def test_a_task_bundle_of_1_and_of_max_lines_lines_is_carried_out() -> None:
    day = dt.date(2026, 3, 1)
    for lines in (("L1",), tuple(f"L{i}" for i in range(MAX_LINES))):
        got = check(signed(TaskBundle(4, day, lines)))
        assert isinstance(got, Command)
        assert got.body == TaskBundle(4, day, lines)
    too_many = [f"L{i}" for i in range(MAX_LINES + 1)]
    invalid(signed_map({16: 4, 17: "2026-03-01", 18: too_many}, CommandType.TASK_BUNDLE))
    invalid(signed_map({16: 4, 17: "2026-03-01", 18: []}, CommandType.TASK_BUNDLE))


@pytest.mark.parametrize("date", ["2026-3-01", "20260301", 20260301, "2026-02-30", None])
def test_a_task_bundle_date_must_be_a_real_yyyy_mm_dd(date: object) -> None:
    invalid(signed_map({16: 4, 17: date, 18: ["L1"]}, CommandType.TASK_BUNDLE))


@pytest.mark.parametrize("line", ["", "x" * 129, 5])
def test_a_task_bundle_line_id_empty_too_long_or_not_text_is_refused(line: object) -> None:
    invalid(signed_map({16: 4, 17: "2026-03-01", 18: ["L1", line]}, CommandType.TASK_BUNDLE))


def test_a_command_that_expires_the_moment_it_is_issued_is_carried_out_at_that_moment() -> None:
    raw = signed(Reminder("now"), expires_ms=T0)
    got = VERIFIER.check(raw, T0, 0)
    assert isinstance(got, Command)
    late = VERIFIER.check(raw, T0 + 1, 0)
    assert isinstance(late, Refusal)
    assert late.reason is Reason.EXPIRED


def test_an_expired_command_says_how_late_it_came() -> None:
    got = VERIFIER.check(signed(Reminder("late"), number=4), T0 + 60_000 + 1_001_999, 0)
    assert isinstance(got, Refusal)
    assert (got.reason, got.number, got.type) == (Reason.EXPIRED, 4, CommandType.REMINDER)
    assert "expired 1001 s ago" in got.detail
    assert got.answered


def test_a_replay_names_its_number_type_and_the_last_answered() -> None:
    got = VERIFIER.check(signed(Reminder("again"), number=4), T0 + 1_000, 9)
    assert isinstance(got, Refusal)
    assert (got.reason, got.number, got.type) == (Reason.REPLAY, 4, CommandType.REMINDER)
    assert "4" in got.detail and "9" in got.detail


def test_refusals_before_the_signature_check_say_why() -> None:
    junk = VERIFIER.check(b"\xa0", T0, 0)
    assert isinstance(junk, Refusal)
    assert junk.reason is Reason.MALFORMED
    assert "COSE" in junk.detail
    intruder = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
    payload = command_payload(
        target=DEVICE, number=1, issued_ms=T0, expires_ms=T0 + 60_000, body=Reminder("x")
    )
    forged = sign1(payload, intruder)
    got = VERIFIER.check(forged, T0, 0)
    assert isinstance(got, Refusal)
    assert got.reason is Reason.BAD_SIGNATURE
    assert "center" in got.detail


def _padded(size: int) -> bytes:
    """A signed reminder of exactly `size` bytes, carrying an unknown key 19 as padding."""
    pad = size
    for _ in range(4):
        raw = signed_map({16: "hi", 19: b"\x00" * pad}, CommandType.REMINDER)
        if len(raw) == size:
            return raw
        pad += size - len(raw)
    raise AssertionError(size)


def test_a_command_of_max_command_bytes_is_read_and_one_byte_more_is_not() -> None:
    read = VERIFIER.check(_padded(MAX_COMMAND), T0, 0)
    assert isinstance(read, Refusal)
    assert read.reason is Reason.INVALID  # read: its unknown key 19 is refused, with a receipt
    assert read.answered
    unread = VERIFIER.check(_padded(MAX_COMMAND + 1), T0, 0)
    assert isinstance(unread, Refusal)
    assert unread.reason is Reason.MALFORMED
    assert not unread.answered


@pytest.mark.parametrize(("value", "ok"), [(10, True), (86_400, True), (9, False), (86_401, False)])
def test_the_report_interval_setting_takes_10_s_to_a_day(value: int, ok: bool) -> None:
    got = check(signed_map({16: {"report_interval_s": value}}, CommandType.CONFIG_CHANGE))
    assert isinstance(got, Command if ok else Refusal), got


@pytest.mark.parametrize("team", [5, b"T01", "", "T 01"], ids=repr)
def test_a_team_setting_that_is_not_an_id_is_refused_without_raising(team: object) -> None:
    invalid(signed_map({16: {"team": team}}, CommandType.CONFIG_CHANGE))


def test_a_config_change_leaves_the_settings_it_does_not_name_alone() -> None:
    current = Settings(report_interval_s=300, team="T01")
    assert current.apply(ConfigChange({"team": "T02"})) == Settings(300, "T02")
    assert current.apply(ConfigChange({"report_interval_s": 60})) == Settings(60, "T01")


def test_the_same_settings_in_any_order_are_the_same_signed_bytes() -> None:
    a = ConfigChange({"team": "T02", "report_interval_s": 60})
    b = ConfigChange({"report_interval_s": 60, "team": "T02"})
    assert signed(a) == signed(b)  # Ed25519 is deterministic: same payload, same bytes
    got = check(signed(a))
    assert isinstance(got, Command)
    assert got.body == a


@pytest.fixture
def tz_far_from_utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tz_far_from_utc")
def test_the_district_date_does_not_depend_on_the_device_s_own_time_zone() -> None:
    # 2026-03-01T02:00Z: already 1 March in UTC+8, still 28 February in New York
    now = int(dt.datetime(2026, 3, 1, 2, 0, tzinfo=dt.UTC).timestamp() * 1000)
    assert local_date(now, 8 * 60) == dt.date(2026, 3, 1)
    assert local_date(now, 0) == dt.date(2026, 3, 1)
    assert local_date(now, -5 * 60) == dt.date(2026, 2, 28)
