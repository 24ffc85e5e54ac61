"""One device's pipeline: fixes → engine events → signed records in the outbox.

Synchronous and clock-free: whoever drives it (the daemon in real time, the fleet
simulator on a virtual clock) hands it fixes and the time; the time of every record is
the time of the event it states. `on_stored` lets the uplink send a new record at once.

The agenda survives a restart. A check-in that satisfies an agenda item, and a missed
record, settle that item; the record and a mark naming the item (a meta value of the
outbox, `agenda_mark`) are stored in one transaction, so after a kill or a power cut
both are there or neither is. `set_agenda` hands the engine the items marked for that
day, and a restarted agent reports no window again and blames no one for a point already
visited; marks of earlier days are deleted then. What does not survive is a visit still
open at a kill (its fixes were never recorded).
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.checkin.engine import CheckinEngine, CheckinEvent, Event, MissedEvent
from agent.checkin.motion import SuspicionEvent
from agent.checkin.plan import AgendaItem, Plan
from agent.gnss.nmea import NmeaParser
from agent.store.outbox import Outbox, Stored, signed
from contract.fix import Fix, TimeSource
from contract.records import (
    CheckinKey,
    MissedKey,
    RecordType,
    SuspicionKey,
)

SUSPICION_CODES = {"jump": 1, "time_backwards": 2, "motion_mismatch": 3}
AGENDA_MARK = "agenda:"  # the outbox meta keys of settled agenda items


def agenda_mark(day: dt.date | None, item: AgendaItem) -> str:
    """The outbox meta key saying `item` of `day`'s agenda is settled (None: no day known).
    Its window is part of it: a new task bundle with other windows is a new obligation."""
    what = [item.line, item.order, item.point, item.start_ms, item.end_ms]
    return f"{AGENDA_MARK}{day.isoformat() if day else '-'}:{json.dumps(what)}"


def checkin_body(event: CheckinEvent, plan_version: int) -> dict[int, object]:
    fix = event.best_fix
    return {
        CheckinKey.POINT: event.point.id,
        CheckinKey.PLAN_VERSION: plan_version,
        CheckinKey.DWELL_S: round((event.departure_ms - event.arrival_ms) / 1000),
        CheckinKey.LAT_E7: round(fix.lat * 1e7),
        CheckinKey.LON_E7: round(fix.lon * 1e7),
        CheckinKey.ACCURACY_DM: round((fix.accuracy_m or 0.0) * 10),
        CheckinKey.FIXES: event.fixes_inside,
        CheckinKey.VERDICT: int(event.verdict),
        CheckinKey.MAX_SPEED_DMPS: round(event.max_speed_mps * 10),
    }


def missed_body(event: MissedEvent, plan_version: int) -> dict[int, object]:
    body: dict[int, object] = {
        MissedKey.POINT: event.point.id,
        MissedKey.PLAN_VERSION: plan_version,
        MissedKey.LINE: event.line,
    }
    if event.window_start_ms is not None:
        body[MissedKey.WINDOW_START] = event.window_start_ms
    if event.window_end_ms is not None:
        body[MissedKey.WINDOW_END] = event.window_end_ms
    return body


def suspicion_body(event: SuspicionEvent) -> dict[int, object]:
    return {
        SuspicionKey.KIND: SUSPICION_CODES[event.kind.value],
        SuspicionKey.LAT_E7: round(event.fix.lat * 1e7),
        SuspicionKey.LON_E7: round(event.fix.lon * 1e7),
        SuspicionKey.DETAIL: event.detail,
    }


@dataclass(slots=True)
class DeviceAgent:
    device: str
    key: Ed25519PrivateKey
    plan: Plan
    outbox: Outbox
    on_stored: Callable[[Stored], None] = lambda _s: None
    agenda: Sequence[AgendaItem] = ()
    parser: NmeaParser = field(default_factory=NmeaParser)
    created: Counter[RecordType] = field(default_factory=Counter)
    engine: CheckinEngine = field(init=False)
    last_fix: Fix | None = None
    events: list[Event] = field(default_factory=list)
    keep_events: bool = False
    day: dt.date | None = None  # the local date of the agenda (`set_agenda`)

    def __post_init__(self) -> None:
        self.engine = CheckinEngine(self.plan, self.agenda)

    def set_agenda(self, day: dt.date, agenda: Sequence[AgendaItem]) -> None:
        """Make `agenda` the engine's for `day`, its items that this device already settled
        (marked in the outbox) done; forget the marks of earlier days."""
        self.day = day
        self.outbox.forget_meta(AGENDA_MARK, below=f"{AGENDA_MARK}{day.isoformat()}")
        done = [a for a in agenda if self.outbox.meta_int(agenda_mark(day, a)) is not None]
        self.engine.set_agenda(agenda, done)

    def on_nmea(self, data: bytes) -> list[Stored]:
        """Simulation shortcut: raw NMEA whose GNSS time is trusted as it is."""
        out: list[Stored] = []
        for fix in self.parser.feed(data):
            out.extend(self.on_fix(fix))
        return out

    def on_fix(self, fix: Fix) -> list[Stored]:
        self.last_fix = fix
        return self._store(self.engine.feed(fix))

    def tick(self, now_ms: int) -> list[Stored]:
        """Time passes (GNSS may be lost): windows close, silent visits end."""
        return self._store(self.engine.tick(now_ms))

    def finish(self, now_ms: int | None = None) -> list[Stored]:
        """Shutdown: close open visits so a completed dwell is never dropped."""
        return self._store(self.engine.finish(now_ms))

    def _store(self, events: list[Event]) -> list[Stored]:
        if self.keep_events:
            self.events.extend(events)
        return [self._store_one(e) for e in events]

    def _store_one(self, event: Event) -> Stored:
        rtype, time_ms, source, body = self._describe(event)
        item = None if isinstance(event, SuspicionEvent) else event.item
        mark = None if item is None else (agenda_mark(self.day, item), int(rtype))
        return self.record(rtype, time_ms, source, body, meta=mark)

    def record(
        self,
        rtype: RecordType,
        time_ms: int,
        source: TimeSource,
        body: Mapping[int, object],
        *,
        meta: tuple[str, int] | None = None,
    ) -> Stored:
        """Sign and store one record (numbered and chained by the outbox), count it, and
        hand it to `on_stored`. `meta`: see `Outbox.append`."""

        make = signed(self.key, self.device, rtype, time_ms=time_ms, source=source, body=body)
        stored = self.outbox.append(make, meta=meta)
        self.created[stored.type] += 1
        self.on_stored(stored)
        return stored

    def _describe(self, e: Event) -> tuple[RecordType, int, TimeSource, Mapping[int, object]]:
        version = self.plan.version
        if isinstance(e, CheckinEvent):
            source = e.best_fix.time_source
            return RecordType.CHECKIN, e.arrival_ms, source, checkin_body(e, version)
        if isinstance(e, MissedEvent):
            source = self.last_fix.time_source if self.last_fix else TimeSource.NONE
            return RecordType.MISSED, e.time_ms, source, missed_body(e, version)
        return RecordType.SUSPICION, e.time_ms, e.fix.time_source, suspicion_body(e)
