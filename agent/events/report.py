"""Reporting a field event on the device: the operation the member's screen and the CLI call.

`report_event` takes what the member gave (a category, a note, photos, a place) and stores
the report so that nothing is half-stored (docs/events.md, "Attachments on the device"):

1. everything is checked before anything is written: the category against the device's
   catalogue, the note's length, each photo re-encoded (`photos.reencode`: bounded, no
   metadata), the record's body built (`event_body`);
2. the attachments (the photos, and the note as an attachment of kind NOTE) are stored in
   `attachments.db`, all or none, linked to no record: a full quota is `QuotaFull` here,
   before the outbox is touched;
3. the signed EVENT record listing their digests is appended to the outbox;
4. the rows are linked to the record's sequence number, and the report is added to the
   device's own list of events (agent/events/mine.py);
5. only then does the caller tell the member "saved".

A failure at 3 (a full disk) forgets the rows stored at 2 before it is raised. A kill
between 3 and 4 leaves a stored record with unlinked rows; `reconcile`, run at start,
finds them.

**The reconcile rule.** An unlinked row is linked to the unsent EVENT record of the outbox
that lists its digest, whatever its age: a record listing it is proof the report was
saved. A row no unsent record lists is forgotten only once it is older than
`ORPHAN_AFTER_MS` (a younger one may be a report another process is saving right now).
The case this cannot tell apart, a record appended, then acknowledged by the center and
deleted before its rows were linked, needs the uplink to send a record between two
statements of one synchronous call; that happens only when a second process (the CLI)
reports while `picket agent run` holds the same folder, which is not supported.

Clock-free like agent/checkin/device.py: the time and its source come in as a `Stamp`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.errors import AgentError
from agent.events.attachstore import ORPHAN_AFTER_MS, AttachmentStore, Item
from agent.events.photos import reencode
from agent.events.settings import EventsConfig
from agent.gnss.timekeeper import Stamp
from agent.store.outbox import Outbox, Stored, signed
from contract.cose import decode_sign1
from contract.errors import RecordError
from contract.eventcommands import Catalogue
from contract.events import (
    CATEGORY_MAX,
    MAX_ATTACHMENT_BYTES,
    MAX_ATTACHMENTS,
    Attachment,
    AttachmentKind,
    EventReport,
    PlaceSource,
    event_body,
    note_bytes,
    parse_event,
    read_note,
)
from contract.fix import Fix, TimeSource
from contract.records import RecordType, parse_payload

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.events.mine import MyEvents

__all__ = ["Picked", "Place", "ReportError", "Reported", "reconcile", "report_event"]

log = logging.getLogger(__name__)
MB = 1_000_000


class ReportError(AgentError):
    """What the member gave cannot be reported (an unknown category, a note too long, too
    many photos); nothing was stored. The message says what to change."""


@dataclass(frozen=True, slots=True)
class Picked:
    """A place the member picked on the map (degrees)."""

    lat: float
    lon: float


Place = Fix | Picked | None  # the device's fix, a picked place, or none known
FIX_FRESH_MS = 60_000  # a fix older than this is not where the member stands now


def current_place(picked: Picked | None, fix: Fix | None, now_ms: int | None) -> Place:
    """Where a report is: the place the member picked, else the last fix if it is at most
    FIX_FRESH_MS from now (after a long loss of GNSS the member has walked on; a fix far
    ahead of the clock is a clock in trouble), else unknown. A fix or a clock without a
    time cannot be judged fresh: unknown."""
    if picked is not None:
        return picked
    if fix is None or fix.time_ms is None or now_ms is None:
        return None
    return fix if abs(now_ms - fix.time_ms) <= FIX_FRESH_MS else None


@dataclass(frozen=True, slots=True)
class Reported:
    """A report stored: its record, and its attachments in the record's order."""

    stored: Stored
    time_ms: int
    time_source: TimeSource
    attachments: tuple[Attachment, ...]

    @property
    def seq(self) -> int:
        return self.stored.seq

    @property
    def digests(self) -> tuple[bytes, ...]:
        return tuple(a.sha256 for a in self.attachments)


def _check_category(category: int, catalogue: Catalogue | None) -> None:
    if not 1 <= category <= CATEGORY_MAX:
        raise ReportError(f"category {category}: a category is a code 1..{CATEGORY_MAX}")
    if catalogue is None:
        return  # no catalogue received yet: the center judges the code
    codes = sorted(c.code for c in catalogue.categories)
    if category not in codes:
        shown = ", ".join(map(str, codes[:20])) + (", …" if len(codes) > 20 else "")
        raise ReportError(
            f"category {category} is not in catalogue version {catalogue.version}: "
            f"use one of {shown}"
        )


def _place(place: Place) -> tuple[PlaceSource, float | None, float | None, float | None]:
    """Where the place came from, latitude, longitude and accuracy (the fix's only)."""
    if place is None:
        return PlaceSource.UNKNOWN, None, None, None
    if isinstance(place, Picked):
        return PlaceSource.PICKED, place.lat, place.lon, None
    return PlaceSource.FIX, place.lat, place.lon, place.accuracy_m


def _items(
    note: str | None, photos: Sequence[bytes], names: Sequence[str], settings: EventsConfig
) -> list[Item]:
    """The attachments: the photos re-encoded (PhotoError naming the photo), then the note."""
    most = MAX_ATTACHMENTS - (note is not None)
    if len(photos) > most:
        with_note = " with a note" if note is not None else ""
        raise ReportError(
            f"{len(photos)} photos: a report holds at most {most}{with_note}; "
            "leave some out or report them separately"
        )
    items: list[Item] = []
    seen: dict[bytes, str] = {}
    for i, data in enumerate(photos):
        name = names[i] if i < len(names) else f"photo {i + 1}"
        photo = reencode(
            data,
            max_side=settings.photo_max_side,
            quality=settings.photo_quality,
            max_input_bytes=settings.max_input_bytes,
            name=name,
        )
        if photo.sha256 in seen:
            raise ReportError(f"{name} is the same picture as {seen[photo.sha256]}: give it once")
        if photo.size > MAX_ATTACHMENT_BYTES:
            raise ReportError(
                f"{name} is {photo.size / MB:.1f} MB once re-encoded, over the "
                f"{MAX_ATTACHMENT_BYTES / MB:.1f} MB an attachment may be: lower "
                "photo_max_side or photo_quality in [events]"
            )
        seen[photo.sha256] = name
        items.append(Item(AttachmentKind.PHOTO, photo.data))
    if note is not None:
        try:
            items.append(Item(AttachmentKind.NOTE, note_bytes(note)))
        except ValueError as exc:
            raise ReportError(f"the note: {exc}: shorten it, or leave it out") from None
    return items


def report_event(
    outbox: Outbox,
    store: AttachmentStore,
    key: Ed25519PrivateKey,
    device: str,
    *,
    category: int,
    stamp: Stamp,
    settings: EventsConfig,
    catalogue: Catalogue | None = None,
    note: str | None = None,
    photos: Sequence[bytes] = (),
    photo_names: Sequence[str] = (),
    place: Place = None,
    answers: int | None = None,
    mine: MyEvents | None = None,
    on_stored: Callable[[Stored], None] = lambda _s: None,
) -> Reported:
    """Store one report: its attachments, its signed EVENT record, the link between them.

    Refusals, each before anything is written: ReportError (the category, the note, too
    many photos, a place out of range), PhotoError (a photo that is not one, or too large),
    QuotaFull (the attachments do not fit). StorageError when a disk fails; the rows stored
    for this report are then forgotten again. `on_stored` gets the record once it is linked
    (the uplink sends it at once)."""
    _check_category(category, catalogue)
    items = _items(note, photos, photo_names, settings)
    attachments = tuple(Attachment.of(AttachmentKind(i.kind), i.data) for i in items)
    source_of_place, lat, lon, accuracy_m = _place(place)
    try:
        body = event_body(
            category,
            catalogue=0 if catalogue is None else catalogue.version,
            place=source_of_place,
            lat=lat,
            lon=lon,
            accuracy_m=accuracy_m,
            attachments=attachments,
            answers=answers,
        )
    except ValueError as exc:
        raise ReportError(f"this report cannot be signed: {exc}") from None
    known = stamp.time_ms is not None
    time_ms = stamp.time_ms if stamp.time_ms is not None else 0
    source = stamp.source if known else TimeSource.NONE
    digests = store.put_many(items, None, time_ms)  # QuotaFull: nothing written anywhere
    make = signed(key, device, RecordType.EVENT, time_ms=time_ms, source=source, body=body)
    try:
        stored = outbox.append(make)
    except BaseException:
        try:
            store.forget(digests)
        except AgentError as exc:  # reconcile forgets them at the next start
            log.error("%s: attachments of a report not stored stay until the next start: %s",
                      device, exc)  # fmt: skip
        raise
    store.link(digests, stored.seq)
    if mine is not None:
        mine.add_report(stored.seq, category, time_ms, note, len(photos))
    on_stored(stored)
    log.info("%s: event reported: record %d, category %d, %d attachment(s)",
             device, stored.seq, category, len(attachments))  # fmt: skip
    return Reported(stored, time_ms, source, attachments)


def unsent_events(outbox: Outbox) -> dict[int, tuple[int, EventReport]]:
    """The outbox's EVENT records not yet acknowledged: sequence -> (time, body)."""
    out: dict[int, tuple[int, EventReport]] = {}
    for s in outbox.pending(max(1, outbox.depth())):
        if s.type is not RecordType.EVENT:
            continue
        try:
            record = parse_payload(decode_sign1(s.raw).payload, s.raw)
            out[s.seq] = record.header.time_ms, parse_event(record.body)
        except RecordError as exc:  # our own record: only a bug writes one we cannot read
            log.error("outbox record %d cannot be read back: %s", s.seq, exc)
    return out


def _note(store: AttachmentStore, event: EventReport) -> str | None:
    for a in event.attachments:
        if a.kind is AttachmentKind.NOTE:
            try:
                return read_note(store.read(a.sha256, 0, a.size))
            except (AgentError, RecordError):
                return None
    return None


def reconcile(
    outbox: Outbox, store: AttachmentStore, now_ms: int, mine: MyEvents | None = None
) -> tuple[int, int]:
    """At start: link every unlinked row an unsent EVENT record lists; forget those no
    record lists once older than ORPHAN_AFTER_MS (the rule in this module's docstring).
    Returns (linked, forgotten)."""
    unlinked = store.orphans(now_ms, older_than_ms=-(2**62))  # every unlinked row
    if not unlinked:
        return 0, 0
    listed: dict[bytes, int] = {}
    events = unsent_events(outbox)
    for seq, (_t, event) in events.items():
        for d in event.digests:
            listed.setdefault(d, seq)
    linked = forgotten = 0
    old: list[bytes] = []
    for row in unlinked:
        found = listed.get(row.digest)
        if found is not None:
            linked += store.link([row.digest], found)
        elif row.created_ms <= now_ms - ORPHAN_AFTER_MS:
            old.append(row.digest)
    if old:
        forgotten = store.forget(old)
    if mine is not None:  # a kill before the report was added to the device's own list
        for seq in sorted({listed[r.digest] for r in unlinked if r.digest in listed}):
            time_ms, event = events[seq]
            photos = sum(a.kind is AttachmentKind.PHOTO for a in event.attachments)
            mine.add_report(seq, event.category, time_ms, _note(store, event), photos)
    if linked or forgotten:
        log.info("attachments: %d linked to their event record, %d never reported forgotten",
                 linked, forgotten)  # fmt: skip
    return linked, forgotten
