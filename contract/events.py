"""Field events: the body of an event record (type 11), built and read. Pure.

A member who finds something (rubbish not cleared, a blocked stairwell, a fire hazard)
reports it as a signed record like a check-in (docs/events.md, "The event record"): the
category's code in the catalogue, where the place came from and the place itself, and
one `[kind, sha256, size]` per attachment (photos, the member's note). The note is an
attachment, not text in the record, so the record stays small enough for the LoRa
fallback; the digests in the signed record bind the bytes that follow by IP.

`event_body` is what the device signs; it takes the place in degrees and metres, as a
`Fix` holds them (`event_body(c, place=PlaceSource.FIX, lat=fix.lat, lon=fix.lon,
accuracy_m=fix.accuracy_m)`), and refuses with a ValueError naming the key a body the
center would refuse. `parse_event` is the typed view both ends read: the center after
`validate_body` (contract/recordschema.py, whose row for type 11 is `FIELDS`), the device
reading its own events back; it raises RecordError naming the key. Keys past 23 are
ignored, as in every record: a later version may add some.

The rules a table of kinds cannot say: latitude and longitude come together, and are
required when the place is the device's fix (0) or picked on the map (1) and absent when
it is unknown (2); an accuracy only with the device's fix; no digest listed twice; a note
(kind 2) at most MAX_NOTE_CHARS characters, so at most 4 bytes each.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contract import bounds as b
from contract.errors import RecordError

__all__ = [
    "CATEGORY_MAX",
    "FIELDS",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "MAX_NOTE_BYTES",
    "MAX_NOTE_CHARS",
    "Attachment",
    "AttachmentKind",
    "EventKey",
    "EventReport",
    "PlaceSource",
    "event_body",
    "note_bytes",
    "parse_event",
    "read_note",
]

MAX_ATTACHMENTS = b.MAX_ATTACHMENTS  # 5
MAX_ATTACHMENT_BYTES = b.MAX_ATTACHMENT_BYTES  # 4 MiB
MAX_NOTE_CHARS = b.MAX_NOTE_CHARS  # 500
MAX_NOTE_BYTES = 4 * MAX_NOTE_CHARS  # a character is at most 4 UTF-8 bytes
CATEGORY_MAX = b.CATEGORY_MAX  # 65,535
DIGEST_LEN = 32
WHAT = "event"  # how messages name the record type (TYPE_NAMES[RecordType.EVENT])


class EventKey(enum.IntEnum):
    CATEGORY = 16
    CATALOGUE = 17
    PLACE = 18
    LAT_E7 = 19
    LON_E7 = 20
    ACCURACY_DM = 21
    ATTACHMENTS = 22
    ANSWERS = 23


class PlaceSource(enum.IntEnum):
    """Where an event's place came from (key 18)."""

    FIX = 0  # the device's fix, with its accuracy when the receiver gave one
    PICKED = 1  # picked by the member on the map
    UNKNOWN = 2  # no fix and nothing picked: no latitude or longitude


class AttachmentKind(enum.IntEnum):
    PHOTO = 1  # a JPEG, re-encoded on the device
    NOTE = 2  # the member's note: UTF-8 text, at most MAX_NOTE_CHARS characters
    VOICE = 3  # a voice note (reserved)


PLACE = b.Kind(b.Shape.UINT, 0, 2, note="0 (the device's fix), 1 (picked) or 2 (unknown)")

# key -> (name, kind, required): the row of type 11 in contract/recordschema.py's BODY_SCHEMA.
FIELDS: Mapping[EventKey, tuple[str, b.Kind, bool]] = {
    EventKey.CATEGORY: ("category", b.CATEGORY, True),
    EventKey.CATALOGUE: ("catalogue", b.COUNT32, True),
    EventKey.PLACE: ("place", PLACE, True),
    EventKey.LAT_E7: ("latitude", b.LAT_E7, False),
    EventKey.LON_E7: ("longitude", b.LON_E7, False),
    EventKey.ACCURACY_DM: ("accuracy", b.COUNT32, False),
    EventKey.ATTACHMENTS: ("attachments", b.ATTACHMENTS, False),
    EventKey.ANSWERS: ("answers", b.SEQ, False),
}


@dataclass(frozen=True, slots=True)
class Attachment:
    """One attachment an event lists: what it is, the SHA-256 of its bytes, its length."""

    kind: AttachmentKind
    sha256: bytes
    size: int

    @classmethod
    def of(cls, kind: AttachmentKind, data: bytes) -> Attachment:
        """The attachment `data` is (ValueError when it is empty or over 4 MiB)."""
        if not 1 <= len(data) <= MAX_ATTACHMENT_BYTES:
            raise ValueError(f"an attachment is 1..{MAX_ATTACHMENT_BYTES} bytes, not {len(data)}")
        return cls(kind, hashlib.sha256(data).digest(), len(data))

    def as_cbor(self) -> list[object]:
        return [int(self.kind), self.sha256, self.size]


@dataclass(frozen=True, slots=True)
class EventReport:
    """An event record's body, read (`parse_event`)."""

    category: int
    catalogue: int
    place: PlaceSource
    lat_e7: int | None
    lon_e7: int | None
    accuracy_dm: int | None
    attachments: tuple[Attachment, ...]
    answers: int | None  # a result report: the center's number of the event it answers

    @property
    def position(self) -> tuple[float, float] | None:
        """Latitude and longitude in degrees, when the event has a place."""
        if self.lat_e7 is None or self.lon_e7 is None:
            return None
        return self.lat_e7 / 1e7, self.lon_e7 / 1e7

    @property
    def accuracy_m(self) -> float | None:
        return None if self.accuracy_dm is None else self.accuracy_dm / 10

    @property
    def digests(self) -> tuple[bytes, ...]:
        return tuple(a.sha256 for a in self.attachments)


def _e7(name: str, degrees: float) -> int:
    if not math.isfinite(degrees):
        raise ValueError(f"{name} must be a finite number of degrees, not {degrees}")
    return round(degrees * 1e7)


def event_body(
    category: int,
    *,
    catalogue: int = 0,
    place: PlaceSource = PlaceSource.UNKNOWN,
    lat: float | None = None,
    lon: float | None = None,
    accuracy_m: float | None = None,
    attachments: Sequence[Attachment] = (),
    answers: int | None = None,
) -> dict[int, object]:
    """Type 11: an event of `category` (catalogue version `catalogue`, 0 the built-in one)
    at `lat`, `lon` (degrees; both None when `place` is UNKNOWN), `accuracy_m` (metres,
    with the device's fix only), listing `attachments`; a result report names the event
    it `answers`. ValueError, naming the key, for a body `parse_event` would refuse."""
    body: dict[int, object] = {
        EventKey.CATEGORY: category,
        EventKey.CATALOGUE: catalogue,
        EventKey.PLACE: int(place),
    }
    if lat is not None:
        body[EventKey.LAT_E7] = _e7("latitude", lat)
    if lon is not None:
        body[EventKey.LON_E7] = _e7("longitude", lon)
    if accuracy_m is not None:
        if not math.isfinite(accuracy_m):
            raise ValueError(f"accuracy must be a finite number of metres, not {accuracy_m}")
        body[EventKey.ACCURACY_DM] = round(accuracy_m * 10)
    if attachments:
        body[EventKey.ATTACHMENTS] = [a.as_cbor() for a in attachments]
    if answers is not None:
        body[EventKey.ANSWERS] = answers
    try:
        parse_event(body)
    except RecordError as exc:
        raise ValueError(str(exc)) from None
    return body


def _field(body: Mapping[int, object], key: EventKey) -> object:
    name, kind, required = FIELDS[key]
    v = body.get(key)
    if v is None and key not in body:
        if required:
            raise RecordError(f"{WHAT} record lacks key {int(key)} ({name})")
        return None
    if not b.fits(kind, v):
        raise RecordError(f"{WHAT} key {int(key)} ({name}) must be {kind.what}")
    return v


def _opt_int(v: object) -> int | None:
    assert v is None or isinstance(v, int)
    return v


def _attachments(v: object) -> tuple[Attachment, ...]:
    if v is None:
        return ()
    assert isinstance(v, list | tuple)
    out: list[Attachment] = []
    seen: set[bytes] = set()
    for item in v:
        kind, digest, size = item
        assert isinstance(kind, int) and isinstance(digest, bytes) and isinstance(size, int)
        if digest in seen:
            raise RecordError(
                f"{WHAT} key 22 (attachments): digest {digest.hex()[:12]}… is listed twice"
            )
        seen.add(digest)
        if kind == AttachmentKind.NOTE and size > MAX_NOTE_BYTES:
            raise RecordError(
                f"{WHAT} key 22 (attachments): a note of {size} bytes, at most "
                f"{MAX_NOTE_BYTES} ({MAX_NOTE_CHARS} characters)"
            )
        out.append(Attachment(AttachmentKind(kind), digest, size))
    return tuple(out)


def parse_event(body: Mapping[int, object]) -> EventReport:
    """The typed view of an event record's body; RecordError naming the first key wrong."""
    category, catalogue, place, lat, lon, accuracy, attached, answers = (
        _field(body, k) for k in EventKey
    )
    assert isinstance(category, int) and isinstance(catalogue, int) and isinstance(place, int)
    source = PlaceSource(place)
    if (lat is None) != (lon is None):
        raise RecordError(f"{WHAT} keys 19 and 20 (latitude, longitude) come together or not")
    if source is PlaceSource.UNKNOWN and lat is not None:
        raise RecordError(
            f"{WHAT} keys 19 and 20 (latitude, longitude) must be absent when key 18 (place) "
            "is 2 (unknown)"
        )
    if source is not PlaceSource.UNKNOWN and lat is None:
        raise RecordError(
            f"{WHAT} record lacks keys 19 and 20 (latitude, longitude): key 18 (place) is "
            f"{int(source)} ({source.name.lower()})"
        )
    if accuracy is not None and source is not PlaceSource.FIX:
        raise RecordError(f"{WHAT} key 21 (accuracy) comes only with key 18 (place) 0 (fix)")
    return EventReport(
        category=category,
        catalogue=catalogue,
        place=source,
        lat_e7=_opt_int(lat),
        lon_e7=_opt_int(lon),
        accuracy_dm=_opt_int(accuracy),
        attachments=_attachments(attached),
        answers=_opt_int(answers),
    )


def note_bytes(text: str) -> bytes:
    """A member's note as the attachment's bytes (UTF-8); ValueError when it is empty,
    only spaces, or over MAX_NOTE_CHARS characters."""
    if not text.strip():
        raise ValueError("a note must say something")
    if len(text) > MAX_NOTE_CHARS:
        raise ValueError(f"a note of {len(text)} characters: at most {MAX_NOTE_CHARS}")
    return text.encode("utf-8")


def read_note(data: bytes) -> str:
    """A note attachment's text, as the center reads it once its digest is checked;
    RecordError when it is not UTF-8 or over MAX_NOTE_CHARS characters."""
    if len(data) > MAX_NOTE_BYTES:
        raise RecordError(f"a note of {len(data)} bytes: at most {MAX_NOTE_BYTES}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise RecordError("a note must be UTF-8 text") from None
    if len(text) > MAX_NOTE_CHARS:
        raise RecordError(f"a note of {len(text)} characters: at most {MAX_NOTE_CHARS}")
    return text
