"""One device's pipeline: NMEA bytes → fixes → check-ins → signed records in the outbox.

Synchronous and clock-free: whoever drives it (a serial reader in real time, the fleet
simulator on a virtual clock) hands it bytes; the time of every record is the GNSS time
of the fixes that caused it. `on_stored` lets the uplink send a new record at once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.engine import CheckinEngine, CheckinEvent
from agent.fix import Fix
from agent.gnss.nmea import NmeaParser
from agent.outbox import Built, Outbox, Stored
from agent.plan import Plan
from agent.records import ChainPosition, CheckinKey, RecordType, build


def checkin_body(event: CheckinEvent, plan_version: int) -> dict[int, object]:
    fix = event.best_fix
    return {
        CheckinKey.POINT: event.point.id,
        CheckinKey.PLAN_VERSION: plan_version,
        CheckinKey.DWELL_MS: event.departure_ms - event.arrival_ms,
        CheckinKey.LAT_E7: round(fix.lat * 1e7),
        CheckinKey.LON_E7: round(fix.lon * 1e7),
        CheckinKey.ACCURACY_DM: round((fix.accuracy_m or 0.0) * 10),
        CheckinKey.FIXES: event.fixes_inside,
        CheckinKey.VERDICT: int(event.verdict),
    }


@dataclass(slots=True)
class DeviceAgent:
    device: str
    key: Ed25519PrivateKey
    plan: Plan
    outbox: Outbox
    on_stored: Callable[[Stored], None] = lambda _s: None
    parser: NmeaParser = field(default_factory=NmeaParser)
    created: Counter[RecordType] = field(default_factory=Counter)
    engine: CheckinEngine = field(init=False)
    last_fix: Fix | None = None

    def __post_init__(self) -> None:
        self.engine = CheckinEngine(self.plan)

    def on_nmea(self, data: bytes) -> list[Stored]:
        """Simulation shortcut: raw NMEA whose GNSS time is trusted as it is."""
        out: list[Stored] = []
        for fix in self.parser.feed(data):
            out.extend(self.on_fix(fix))
        return out

    def on_fix(self, fix: Fix) -> list[Stored]:
        self.last_fix = fix
        return [self._store_checkin(event) for event in self.engine.feed(fix)]

    def finish(self) -> list[Stored]:
        """Shutdown: close open visits so a completed dwell is never dropped."""
        return [self._store_checkin(e) for e in self.engine.close_all()]

    def _store_checkin(self, event: CheckinEvent) -> Stored:
        def make(pos: ChainPosition) -> Built:
            raw = build(
                self.key,
                device=self.device,
                chain=pos,
                rtype=RecordType.CHECKIN,
                time_ms=event.arrival_ms,
                time_source=event.best_fix.time_source,
                body=checkin_body(event, self.plan.version),
            )
            return Built(RecordType.CHECKIN, event.arrival_ms, raw)

        stored = self.outbox.append(make)
        self.created[stored.type] += 1
        self.on_stored(stored)
        return stored
