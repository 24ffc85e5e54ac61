"""The contract of field events (docs/events.md): the event record (type 11) and the two
commands that carry the catalogue and each status change.

Records are built and signed as a device builds them, and read back by the center's own
path: `open_record` and `validate_body`, and a real in-memory center store through
`Ingest`, which acknowledges or refuses them. Every bound is tried one step either side,
with the bound written here from docs/events.md, not read from the code under test.
Commands go through the device's `CommandVerifier` and a real `CommandExecutor` over a
real outbox (SQLite).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from agent.checkin.device import DeviceAgent
from agent.checkin.plan import Plan, Point
from agent.commands.executor import CommandExecutor
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox
from center.duplicates import Finder, Kind
from center.ingest import Ingest
from center.store import CenterStore
from contract.commands import (
    Command,
    CommandType,
    CommandVerifier,
    Reason,
    Refusal,
    command_payload,
    read_stored,
)
from contract.cose import sign1
from contract.errors import RecordError
from contract.eventcommands import Catalogue, Category, EventStatus, EventStatusCode
from contract.events import (
    Attachment,
    AttachmentKind,
    EventReport,
    PlaceSource,
    event_body,
    note_bytes,
    parse_event,
    read_note,
)
from contract.fix import TimeSource
from contract.protocol import Batch, records_topic
from contract.protocol import Refusal as AckRefusal
from contract.records import ChainPosition, Outcome, RecordType, build, open_record
from contract.recordschema import validate_body

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
CENTER = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
DEVICE = "h000123456"  # 10 characters, as the LoRa figures of docs/events.md
T0 = 1_772_323_260_000  # 2026-03-01T00:01Z
MIB = 1024 * 1024
PHOTO = Attachment.of(AttachmentKind.PHOTO, b"\xff\xd8\xff\xe0 a jpeg " * 1000)
NOTE = Attachment.of(AttachmentKind.NOTE, "楼道堆物，堵塞通道".encode())


def digest(i: int) -> bytes:
    return hashlib.sha256(i.to_bytes(4, "big")).digest()


def signed_event(body: dict[int, object], seq: int = 1, time_ms: int = T0) -> bytes:
    return build(
        KEY,
        device=DEVICE,
        chain=ChainPosition(1, seq, bytes(16)),
        rtype=RecordType.EVENT,
        time_ms=time_ms,
        time_source=TimeSource.GNSS,
        body=body,
    )


def at_center(*raws: bytes) -> tuple[tuple[int, ...], tuple[tuple[int, AckRefusal], ...]]:
    """What a real center store acknowledges of these records: stored and refused seqs."""
    store = CenterStore(Path(":memory:"))
    try:
        ack = Ingest(store, lambda _d: KEY.public_key()).handle(
            records_topic(DEVICE), Batch(1, raws).encode(), T0
        )
        assert ack is not None
        return ack.stored, ack.refused
    finally:
        store.close()


# --- the record --------------------------------------------------------------------------------


def test_an_event_with_a_fix_and_a_photo_is_signed_stored_and_read_back_as_reported() -> None:
    body = event_body(
        1203,
        catalogue=3,
        place=PlaceSource.FIX,
        lat=29.5630123,
        lon=106.5516456,
        accuracy_m=4.2,
        attachments=[PHOTO, NOTE],
    )
    raw = signed_event(body)
    rec = open_record(raw, KEY.public_key())
    assert rec.header.type is RecordType.EVENT and int(rec.header.type) == 11
    validate_body(rec.header.type, rec.body)
    ev = parse_event(rec.body)
    assert (ev.category, ev.catalogue, ev.place) == (1203, 3, PlaceSource.FIX)
    assert (ev.lat_e7, ev.lon_e7, ev.accuracy_dm) == (295630123, 1065516456, 42)
    assert ev.position == pytest.approx((29.5630123, 106.5516456))
    assert ev.accuracy_m == pytest.approx(4.2)
    assert ev.digests == (PHOTO.sha256, NOTE.sha256)
    assert ev.attachments[1].kind is AttachmentKind.NOTE
    assert ev.attachments[1].size == len("楼道堆物，堵塞通道".encode())  # 9 characters, 27 bytes
    assert ev.answers is None
    assert at_center(raw) == ((1,), ())


def test_the_wire_keys_are_those_of_the_document() -> None:
    body = event_body(7, place=PlaceSource.PICKED, lat=-33.8688, lon=151.2093,
                      attachments=[PHOTO], answers=41)  # fmt: skip
    payload = cbor2.loads(cbor2.loads(signed_event(body)).value[2])
    assert payload[1] == 11
    assert {k: v for k, v in payload.items() if k >= 16} == {
        16: 7,
        17: 0,  # the built-in catalogue
        18: 1,
        19: -338688000,
        20: 1512093000,
        22: [[1, hashlib.sha256(b"\xff\xd8\xff\xe0 a jpeg " * 1000).digest(), 12_000]],
        23: 41,
    }


def test_an_event_without_a_place_has_no_position() -> None:
    ev = parse_event(event_body(12))
    assert ev == EventReport(12, 0, PlaceSource.UNKNOWN, None, None, None, (), None)
    assert ev.position is None and ev.accuracy_m is None


def test_an_event_record_over_the_wire_costs_41_bytes_an_attachment() -> None:
    """The LoRa figures of docs/events.md: without attachments an event fits the 160-byte
    frame budget of docs/records.md; each attachment ([kind, 32-byte digest, size over
    65,535]) is 1 + 1 + 34 + 5 bytes of CBOR, the first 2 more (key 22 and the array's
    head), and 1 more once the payload passes 255 bytes (its byte string's head grows)."""
    sizes = []
    for n in (0, 1, 2, 5):
        atts = [Attachment(AttachmentKind.PHOTO, digest(i), 312_345) for i in range(n)]
        body = event_body(1203, catalogue=3, place=PlaceSource.FIX, lat=29.5630123,
                          lon=106.5516456, accuracy_m=4.2, attachments=atts)  # fmt: skip
        sizes.append(len(signed_event(body, seq=12_345)))
    assert sizes[0] <= 160
    assert [s - sizes[0] for s in sizes] == [0, 43, 84, 2 + 5 * 41 + 1]
    assert sizes[2] <= 255 < sizes[3]  # five do not fit one LoRa packet


# Bounds from docs/events.md, one step either side: (key, at the bound, one past, name).
BODY = {16: 1203, 17: 3, 18: 0, 19: 295630123, 20: 1065516456, 21: 42}
BOUNDS: list[tuple[int, object, object, str]] = [
    (16, 1, 0, "category"),
    (16, 65_535, 65_536, "category"),
    (17, 2**32 - 1, 2**32, "catalogue"),
    (18, 0, -1, "place"),
    (19, 900_000_000, 900_000_001, "latitude"),
    (19, -900_000_000, -900_000_001, "latitude"),
    (20, 1_800_000_000, 1_800_000_001, "longitude"),
    (21, 2**32 - 1, 2**32, "accuracy"),
    (23, 2**53 - 1, 2**53, "answers"),
    (23, 0, -1, "answers"),
    (22, [[1, digest(i), 1] for i in range(5)], [[1, digest(i), 1] for i in range(6)],
     "attachments"),
    (22, [[3, digest(1), 4 * MIB]], [[3, digest(1), 4 * MIB + 1]], "attachments"),
    (22, [[1, digest(1), 1]], [[1, digest(1), 0]], "attachments"),
    (22, [[1, digest(1), 5]], [[0, digest(1), 5]], "attachments"),
    (22, [[3, digest(1), 5]], [[4, digest(1), 5]], "attachments"),
    (22, [[1, digest(1), 5]], [[1, digest(1)[:31], 5]], "attachments"),
    (22, [[1, digest(1), 5]], [[1, digest(1) + b"\x00", 5]], "attachments"),
    (22, [[2, digest(1), 2000]], [[2, digest(1), 2001]], "attachments"),  # a note: 500 chars
    (22, [], [[1, digest(1), 5, 0]], "attachments"),
]  # fmt: skip


@pytest.mark.parametrize(("key", "ok", "bad", "name"), BOUNDS)
def test_every_bound_of_the_record_one_step_either_side(
    key: int, ok: object, bad: object, name: str
) -> None:
    validate_body(RecordType.EVENT, {**BODY, key: ok})
    parse_event({**BODY, key: ok})
    for check in (lambda b: validate_body(RecordType.EVENT, b), parse_event):
        with pytest.raises(RecordError, match=rf"^event key(s)? [0-9 and]*{key}\b.*\({name}"):
            check({**BODY, key: bad})


# Hostile bodies (each correctly signed): (change, what the refusal must say)
HOSTILE: list[tuple[dict[int, object], str]] = [
    ({16: "1203"}, "key 16 (category) must be a category code 1..65535"),
    ({16: True}, "key 16 (category)"),
    ({16: 1203.0}, "key 16 (category)"),
    ({16: 2**70}, "key 16 (category)"),
    ({16: None}, "lacks key 16 (category)"),
    ({17: None}, "lacks key 17 (catalogue)"),
    ({18: None}, "lacks key 18 (place)"),
    ({18: 3}, "key 18 (place) must be 0 (the device's fix), 1 (picked) or 2 (unknown)"),
    ({18: "fix"}, "key 18 (place)"),
    ({19: 29.56}, "key 19 (latitude)"),
    ({20: None}, "keys 19 and 20 (latitude, longitude) come together"),
    ({18: 2}, "keys 19 and 20 (latitude, longitude) must be absent when key 18 (place) is 2"),
    ({18: 1}, "key 21 (accuracy) comes only with key 18 (place) 0 (fix)"),
    ({18: 1, 19: None, 20: None, 21: None}, "lacks keys 19 and 20 (latitude, longitude)"),
    ({19: None, 20: None, 21: None}, "lacks keys 19 and 20 (latitude, longitude): key 18 (place)"),
    ({22: [[1, digest(1), 5], [2, digest(1), 5]]}, f"{digest(1).hex()[:12]}… is listed twice"),
    ({22: {1: digest(1)}}, "key 22 (attachments) must be an array of 0..5 items"),
    ({22: [[1, digest(1).hex(), 5]]}, "key 22 (attachments)"),
    ({22: [[True, digest(1), 5]]}, "key 22 (attachments)"),
    ({22: [(1, digest(1), -5)]}, "key 22 (attachments)"),
    ({22: [[2, digest(1), 4 * MIB]]}, "a note of 4194304 bytes, at most 2000 (500 characters)"),
    ({23: b"\x01"}, "key 23 (answers)"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "words"), HOSTILE, ids=[w for _, w in HOSTILE])
def test_a_hostile_event_is_refused_naming_the_key(change: dict[int, object], words: str) -> None:
    body: dict[int, object] = dict(BODY)
    for k, v in change.items():
        if v is None:
            del body[k]
        else:
            body[k] = v
    with pytest.raises(RecordError, match=re.escape(words)):
        parse_event(body)
    with pytest.raises(RecordError, match=re.escape(words)):
        validate_body(RecordType.EVENT, body)


def test_the_center_refuses_a_signed_but_malformed_event_and_stores_the_good_one() -> None:
    good = signed_event(event_body(12, attachments=[PHOTO]), seq=1)
    twice = {16: 12, 17: 0, 18: 2, 22: [PHOTO.as_cbor(), PHOTO.as_cbor()]}
    bad = signed_event(twice, seq=2)
    assert at_center(good, bad) == ((1,), ((2, AckRefusal.MALFORMED),))


def test_a_later_key_is_ignored_as_in_every_record() -> None:
    assert parse_event({**BODY, 24: "later", 40: [1]}) == parse_event(BODY)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"category": 0}, "key 16 (category)"),
        ({"category": 5, "place": PlaceSource.FIX}, "lacks keys 19 and 20"),
        ({"category": 5, "lat": 29.0}, "come together"),
        ({"category": 5, "place": PlaceSource.PICKED, "lat": 1.0, "lon": 2.0, "accuracy_m": 3},
         "key 21 (accuracy)"),
        ({"category": 5, "place": PlaceSource.FIX, "lat": float("nan"), "lon": 2.0}, "latitude"),
        ({"category": 5, "attachments": [PHOTO] * 6}, "key 22 (attachments)"),
        ({"category": 5, "attachments": [PHOTO, PHOTO]}, "listed twice"),
    ],
)  # fmt: skip
def test_the_device_never_builds_an_event_the_center_would_refuse(
    kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        event_body(**kwargs)  # type: ignore[arg-type]


def test_a_note_of_500_characters_fits_and_501_do_not() -> None:
    longest = "\U0001f6ae" * 500  # 4 UTF-8 bytes each: the largest a note can be
    data = note_bytes(longest)
    assert len(data) == 2000
    att = Attachment.of(AttachmentKind.NOTE, data)
    parse_event(event_body(3, attachments=[att]))
    assert read_note(data) == longest
    with pytest.raises(ValueError, match="501 characters: at most 500"):
        note_bytes("x" * 501)
    with pytest.raises(ValueError, match="say something"):
        note_bytes("  \n")
    with pytest.raises(RecordError, match="UTF-8"):
        read_note(b"\xff\xfe note")
    with pytest.raises(RecordError, match="501 characters"):
        read_note(("é" * 501).encode())
    with pytest.raises(ValueError, match=r"1\.\.4194304 bytes, not 4194305"):
        Attachment.of(AttachmentKind.PHOTO, bytes(4 * MIB + 1))


coords = st.integers(min_value=-900_000_000, max_value=900_000_000)
attachment_lists = st.lists(
    st.tuples(st.sampled_from(AttachmentKind), st.binary(min_size=32, max_size=32),
              st.integers(min_value=1, max_value=2000)),
    max_size=5, unique_by=lambda t: t[1],
)  # fmt: skip


@given(
    category=st.integers(min_value=1, max_value=65_535),
    catalogue=st.integers(min_value=0, max_value=2**32 - 1),
    place=st.sampled_from(PlaceSource),
    lat=coords,
    lon=st.integers(min_value=-1_800_000_000, max_value=1_800_000_000),
    accuracy=st.none() | st.integers(min_value=0, max_value=10_000),
    attached=attachment_lists,
    answers=st.none() | st.integers(min_value=0, max_value=2**53 - 1),
)
def test_any_valid_event_survives_signing_and_reading(
    *,
    category: int,
    catalogue: int,
    place: PlaceSource,
    lat: int,
    lon: int,
    accuracy: int | None,
    attached: list[tuple[AttachmentKind, bytes, int]],
    answers: int | None,
) -> None:
    atts = tuple(Attachment(k, d, s) for k, d, s in attached)
    has_place = place is not PlaceSource.UNKNOWN
    accuracy = accuracy if place is PlaceSource.FIX else None
    body = event_body(
        category,
        catalogue=catalogue,
        place=place,
        lat=lat / 1e7 if has_place else None,
        lon=lon / 1e7 if has_place else None,
        accuracy_m=None if accuracy is None else accuracy / 10,
        attachments=atts,
        answers=answers,
    )
    rec = open_record(signed_event(body), KEY.public_key())
    validate_body(RecordType.EVENT, rec.body)
    assert parse_event(rec.body) == EventReport(
        category,
        catalogue,
        place,
        lat if has_place else None,
        lon if has_place else None,
        accuracy,
        atts,
        answers,
    )


# --- the same event stored twice (center/duplicates.py) --------------------------------------


def _finder_count(*records: tuple[int, int, dict[int, object]]) -> int:
    f = Finder()
    for seq, time_ms, body in records:
        f.add(open_record(signed_event(body, seq=seq, time_ms=time_ms), KEY.public_key()))
    return f.result().by_kind[Kind.EVENT]


def test_an_event_sent_twice_within_a_minute_is_one_duplicate() -> None:
    body = event_body(12, place=PlaceSource.FIX, lat=29.5, lon=106.5, attachments=[PHOTO])
    minute = T0 - T0 % 60_000
    assert _finder_count((1, minute + 1_000, body), (2, minute + 59_000, body)) == 1
    assert _finder_count((1, minute + 59_000, body), (2, minute + 61_000, body)) == 0
    other = event_body(12, place=PlaceSource.FIX, lat=29.5, lon=106.5, attachments=[NOTE])
    assert _finder_count((1, minute, body), (2, minute, other)) == 0
    moved = event_body(12, place=PlaceSource.FIX, lat=29.5001, lon=106.5, attachments=[PHOTO])
    assert _finder_count((1, minute, body), (2, minute, moved)) == 0
    assert _finder_count((1, minute, body), (2, minute, {**body, 16: 13})) == 0


# --- the two commands ----------------------------------------------------------------------------

CATALOGUE = Catalogue(
    4,
    (
        Category(101, "装修垃圾未清运", "Decoration rubbish not cleared", "环境卫生", "T-SAN"),
        Category(205, "楼道堆物", "Stairwell blocked by clutter", "消防安全", "T-FIRE"),
    ),
)
STATUS = EventStatus(
    event=17,
    status=EventStatusCode.DISPATCHED,
    reporter=DEVICE,
    report_seq=1234,
    category=205,
    text=None,
    assignee="T-FIRE",
    deadline_ms=T0 + 86_400_000,
    changed_ms=T0,
    by="operator-li",
    lat_e7=295630123,
    lon_e7=1065516456,
)
VERIFIER = CommandVerifier(CENTER.public_key(), DEVICE)


def signed_command(payload: bytes) -> bytes:
    return sign1(payload, CENTER)


def command(body: Catalogue | EventStatus, number: int = 1) -> bytes:
    return signed_command(
        command_payload(target=DEVICE, number=number, issued_ms=T0, expires_ms=T0 + 60_000,
                        body=body)
    )  # fmt: skip


def raw_command(ctype: int, body: dict[int, object]) -> bytes:
    return signed_command(cbor2.dumps({1: ctype, 2: DEVICE, 4: 1, 5: T0, 6: T0 + 60_000, **body}))


@pytest.mark.parametrize(
    ("body", "ctype"),
    [
        (CATALOGUE, 8),
        (STATUS, 9),
        (EventStatus(3, EventStatusCode.MERGED, DEVICE, 9, 101, "same pile", None, None, T0,
                     "operator-li", merged_into=2), 9),
        (EventStatus(3, EventStatusCode.REJECTED, DEVICE, 9, 101, "not in our district", None,
                     None, T0, "operator-li"), 9),
    ],
)  # fmt: skip
def test_the_event_commands_reach_the_device_as_sent(
    body: Catalogue | EventStatus, ctype: int
) -> None:
    raw = command(body)
    verdict = VERIFIER.check(raw, T0, 0)
    assert isinstance(verdict, Command)
    assert verdict.type == ctype and verdict.body == body
    assert read_stored(raw) == verdict


def test_the_status_command_has_the_keys_of_the_document() -> None:
    payload = cbor2.loads(cbor2.loads(command(STATUS)).value[2])
    assert payload[1] == 9
    assert {k: v for k, v in payload.items() if k >= 16} == {
        16: 17, 17: 3, 18: DEVICE, 19: 1234, 20: 205, 22: "T-FIRE", 23: T0 + 86_400_000,
        24: T0, 25: "operator-li", 26: 295630123, 27: 1065516456,
    }  # fmt: skip
    catalogue = cbor2.loads(cbor2.loads(command(CATALOGUE)).value[2])
    assert catalogue[1] == 8 and catalogue[16] == 4
    assert catalogue[17][1] == [205, "楼道堆物", "Stairwell blocked by clutter", "消防安全",
                                "T-FIRE"]  # fmt: skip


def _category(code: int) -> list[object]:
    return [code, "类", "kind", "g", "T1"]


STATUS_MAP: dict[int, object] = {
    16: 17, 17: 3, 18: DEVICE, 19: 1234, 20: 205, 24: T0, 25: "operator-li",
}  # fmt: skip
# (type, body, what the INVALID refusal must say); a body that is fine at the bound first
COMMAND_BOUNDS: list[tuple[int, dict[int, object], dict[int, object], str]] = [
    (8, {16: 1, 17: [_category(c) for c in range(1, 257)]},
     {16: 1, 17: [_category(c) for c in range(1, 258)]}, "key 17 (categories)"),
    (8, {16: 1, 17: [_category(1)]}, {16: 1, 17: []}, "key 17 (categories)"),
    (8, {16: 2**32 - 1, 17: [_category(1)]}, {16: 2**32, 17: [_category(1)]}, "key 16 (version)"),
    (8, {16: 1, 17: [_category(65_535)]}, {16: 1, 17: [_category(65_536)]}, "key 17 (categories)"),
    (8, {16: 1, 17: [_category(1)]}, {16: 1, 17: [_category(1), _category(1)]},
     "lists code 1 twice"),
    (8, {16: 1, 17: [_category(1)]}, {16: 1, 17: [[1, "", "kind", "g", "T1"]]},
     "key 17 (categories)"),
    (8, {16: 1, 17: [_category(1)]}, {16: 1, 17: [_category(1)], 18: 0}, "unknown key 18"),
    (9, {**STATUS_MAP, 17: 8, 28: 2}, {**STATUS_MAP, 17: 9, 28: 2}, "key 17 (status)"),
    (9, {**STATUS_MAP, 17: 7}, {**STATUS_MAP, 17: 7, 28: 2}, "key 28 (merged into)"),
    (9, {**STATUS_MAP, 17: 8, 28: 1}, {**STATUS_MAP, 17: 8}, "key 28 (merged into)"),
    (9, {**STATUS_MAP, 16: 1}, {**STATUS_MAP, 16: 0}, "key 16 (event)"),
    (9, {**STATUS_MAP, 19: 2**53 - 1}, {**STATUS_MAP, 19: 2**53}, "key 19 (report seq)"),
    (9, {**STATUS_MAP, 20: 1}, {**STATUS_MAP, 20: 0}, "key 20 (category)"),
    (9, {**STATUS_MAP, 21: "x" * 512}, {**STATUS_MAP, 21: "x" * 513}, "key 21 (text)"),
    (9, {**STATUS_MAP, 22: "t" * 128}, {**STATUS_MAP, 22: "t" * 129}, "key 22 (assignee)"),
    (9, {**STATUS_MAP, 23: 7_258_118_400_000}, {**STATUS_MAP, 23: 7_258_118_400_001},
     "key 23 (deadline)"),
    (9, STATUS_MAP, {**STATUS_MAP, 18: "h 1"}, "key 18 (reporter)"),
    (9, STATUS_MAP, {**STATUS_MAP, 25: ""}, "key 25 (by)"),
    (9, STATUS_MAP, {**STATUS_MAP, 24: None}, "key 24 (changed)"),
    (9, {**STATUS_MAP, 26: 1, 27: 2}, {**STATUS_MAP, 26: 1}, "keys 26 and 27"),
    (9, {**STATUS_MAP, 26: 900_000_000, 27: 2}, {**STATUS_MAP, 26: 900_000_001, 27: 2},
     "key 26 (latitude)"),
    (9, STATUS_MAP, {**STATUS_MAP, 29: 1}, "unknown key 29"),
    (9, STATUS_MAP, {**STATUS_MAP, 17: True}, "key 17 (status)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("ctype", "ok", "bad", "words"), COMMAND_BOUNDS, ids=[w for *_, w in COMMAND_BOUNDS]
)
def test_event_commands_bounds_and_hostile_bodies(
    ctype: int, ok: dict[int, object], bad: dict[int, object], words: str
) -> None:
    assert isinstance(VERIFIER.check(raw_command(ctype, ok), T0, 0), Command)
    bad = {k: v for k, v in bad.items() if v is not None}
    verdict = VERIFIER.check(raw_command(ctype, bad), T0, 0)
    assert isinstance(verdict, Refusal)
    assert verdict.reason is Reason.INVALID and verdict.answered
    assert words in verdict.detail


# --- a device that does not handle them yet ---------------------------------------------------


class Clock:
    def __call__(self) -> Stamp:
        return Stamp(T0, TimeSource.GNSS)


@pytest.fixture
def executor(tmp_path: Path) -> Iterator[tuple[CommandExecutor, Outbox]]:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    agent = DeviceAgent(DEVICE, KEY, Plan(version=1, points=(Point("P1", 29.0, 106.0),)), box)
    try:
        yield CommandExecutor(agent, VERIFIER, Clock()), box
    finally:
        box.close()


def test_a_device_answers_the_event_commands_refused_until_it_handles_them(
    executor: tuple[CommandExecutor, Outbox],
) -> None:
    ex, box = executor
    for number, body in ((1, CATALOGUE), (2, STATUS)):
        handled = ex.handle(command(body, number))
        assert handled.outcome is Outcome.REFUSED
        assert handled.reason == "not handled by this device yet"
    receipts = [open_record(s.raw, KEY.public_key()).body for s in box.pending(100)]
    assert [(r[16], r[17], r[18]) for r in receipts] == [
        (1, CommandType.CATALOGUE, Outcome.REFUSED),
        (2, CommandType.EVENT_STATUS, Outcome.REFUSED),
    ]
    assert (int(CommandType.CATALOGUE), int(CommandType.EVENT_STATUS)) == (8, 9)
