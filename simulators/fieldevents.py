"""Field events in the simulated shifts: members report what they find, the center's desk
handles it, and the end audit counts what arrived (docs/events.md, docs/demo.md).

`picket demo` (simulators/demo.py) and `picket sim fleet` (simulators/fleetworker.py,
simulators/fleetevents.py) share this module:

- **The plan** (`plan_reports`, pure): when each member reports, drawn from the seed as a
  Poisson process at `rate` events per member-hour, each with a category of the center's
  catalogue, most with a photo of the simulated camera (simulators/camera.py, real JPEGs)
  and some with a short note in Chinese.
- **The member** (`MemberReports`): at the planned moment of virtual time the report goes
  through `report_event`, the operation the CLI and the member's screen call, into the
  device's own outbox and attachment store; the record wakes the uplink, the attachments
  the uploader (`attach_uploader`: agent/events/uploader.py on the device's real uplink).
  The place is the agent's fix when it is fresh, else unknown.
- **The desk** (`Desk`): the command center's operator, on the center's database through
  center/events/store.py `act`, one step per event and look: an event is accepted once all
  its attachments are complete at the center (the operator looks at the photo first), then
  dispatched to its category's team, started, resolved and closed.
- **The audit** (`audit_events`): what the devices stored, looked up at the center after
  the run; an attachment counts as delivered only when the center holds it whole and its
  bytes hash to the digest the signed record lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from agent.events.report import report_event
from agent.events.uploader import Uploader
from agent.gnss.timekeeper import Stamp
from center.errors import CenterError
from center.events import catalogue as catalogues
from center.events import lifecycle
from center.events import store as events
from center.tables import Sql
from contract.eventcommands import Catalogue, EventStatusCode
from contract.fix import Fix, TimeSource
from simulators.camera import SimCamera

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.events.attachstore import AttachmentStore
    from agent.events.settings import EventsConfig
    from agent.store.outbox import Outbox, Stored
    from agent.uplink.mqtt import Uplink

__all__ = [
    "DEFAULT_EVENTS_PER_HOUR",
    "NOTES",
    "Desk",
    "MemberReports",
    "PlannedReport",
    "attach_uploader",
    "audit_events",
    "next_action",
    "plan_reports",
]

log = logging.getLogger(__name__)

# Default rate, per member-hour: the default demo (20 handsets for an hour) reports about
# eight; the whole district (2,747 members) about 1,100 an hour.
DEFAULT_EVENTS_PER_HOUR = 0.4
MAX_EVENTS_PER_HOUR = 60.0
PHOTO_SHARE = 0.8  # most reports carry a photo ...
TWO_PHOTOS_SHARE = 0.15  # ... a few of them two
NOTE_SHARE = 0.4  # some a note
NOTES = (
    "小区有装修垃圾未处理",
    "楼道有杂物乱堆乱放",
    "人行道缺失树苗两棵",
    "电动车在楼道内充电",
    "消防通道被车辆占用",
    "路灯不亮，晚上很黑",
    "井盖松动，有安全隐患",
    "商户占道经营影响通行",
)
RESULTS = ("已清理完毕", "已通知物业处理", "已现场整改", "已恢复正常")
FRESH_FIX_MS = 5_000  # an older fix is not where the member stands now
DEADLINE_MS = 4 * 3_600_000  # the desk gives a team four hours
DESK_NAME = "desk"
_OPEN = (
    EventStatusCode.REPORTED,
    EventStatusCode.ACCEPTED,
    EventStatusCode.DISPATCHED,
    EventStatusCode.IN_PROGRESS,
    EventStatusCode.RESOLVED,
    EventStatusCode.REOPENED,
)


# --- the plan (pure) -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedReport:
    at_ms: int  # virtual time
    category: int
    photos: tuple[int, ...]  # the camera's picture numbers
    note: str | None


def plan_reports(
    rng: random.Random,
    *,
    rate_per_hour: float,
    start_ms: int,
    end_ms: int,
    categories: Sequence[int],
) -> list[PlannedReport]:
    """One member's reports over [start_ms, end_ms): a Poisson process at `rate_per_hour`."""
    if rate_per_hour <= 0 or not categories:
        return []
    out: list[PlannedReport] = []
    t = start_ms
    picture = 0
    while True:
        t += max(1_000, round(rng.expovariate(rate_per_hour) * 3_600_000))
        if t >= end_ms:
            return out
        photos = 0
        if rng.random() < PHOTO_SHARE:
            photos = 2 if rng.random() < TWO_PHOTOS_SHARE else 1
        note = rng.choice(NOTES) if rng.random() < NOTE_SHARE else None
        out.append(
            PlannedReport(
                t - t % 1000,
                rng.choice(list(categories)),
                tuple(range(picture, picture + photos)),
                note,
            )
        )
        picture += photos


def member_rng(seed: int, index: int) -> random.Random:
    """The stream of one member's reports: the seed and the member's index, nothing else."""
    return random.Random(f"picket-events/{seed}/{index}")


# --- the member's device -------------------------------------------------------------------------


def attach_uploader(
    uplink: Uplink, store: AttachmentStore, chunk_bytes: int, poll_s: float
) -> None:
    """The attachment upload on this uplink, as the daemon sets it up (agent/daemon.py)."""
    uplink.attachments = Uploader(store, uplink.device, chunk_bytes=chunk_bytes, poll_s=poll_s)


@dataclass(slots=True)
class MemberReports:
    """One member's reports: what is still to come, and what their devices stored (kept
    across restarts of the agent: (record sequence, attachment digests) each)."""

    device: str
    planned: deque[PlannedReport]
    camera: SimCamera
    reported: list[tuple[int, tuple[bytes, ...]]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        device: str,
        index: int,
        *,
        seed: int,
        rate_per_hour: float,
        start_ms: int,
        end_ms: int,
        catalogue: Catalogue,
    ) -> MemberReports:
        codes = [c.code for c in catalogue.categories]
        plan = plan_reports(
            member_rng(seed, index),
            rate_per_hour=rate_per_hour,
            start_ms=start_ms,
            end_ms=end_ms,
            categories=codes,
        )
        return cls(device, deque(plan), SimCamera(seed=seed * 10_007 + index))

    def due(
        self,
        t_ms: int,
        *,
        outbox: Outbox,
        store: AttachmentStore,
        key: Ed25519PrivateKey,
        settings: EventsConfig,
        catalogue: Catalogue,
        fix: Fix | None,
        uplink: Uplink,
    ) -> int:
        """Report everything planned up to `t_ms` (virtual); how many were stored."""
        n = 0
        while self.planned and self.planned[0].at_ms <= t_ms:
            p = self.planned.popleft()
            fresh = fix if fix is not None and t_ms - (fix.time_ms or 0) <= FRESH_FIX_MS else None
            stamp = Stamp(t_ms, fresh.time_source) if fresh else Stamp(None, TimeSource.NONE)
            done = report_event(
                outbox,
                store,
                key,
                self.device,
                category=p.category,
                stamp=stamp,
                settings=settings,
                catalogue=catalogue,
                note=p.note,
                photos=[self.camera.jpeg(i) for i in p.photos],
                photo_names=[f"IMG_{i:05d}.jpg" for i in p.photos],
                place=fresh,
                on_stored=_waker(uplink),
            )
            self.reported.append((done.seq, done.digests))
            n += 1
        return n


def _waker(uplink: Uplink) -> Callable[[Stored], None]:
    def stored(s: Stored) -> None:
        uplink.on_stored(s)
        if uplink.attachments is not None:
            uplink.attachments.notify()

    return stored


# --- the center's desk ---------------------------------------------------------------------------


def next_action(
    row: events.EventRow, attachments: Sequence[events.AttachmentRow], cat: Catalogue, at_ms: int
) -> lifecycle.Action | None:
    """What the desk does next to an event, or None (waiting for its attachments, or done)."""
    s = row.status
    if s is EventStatusCode.REPORTED:
        return lifecycle.Accept() if all(a.complete for a in attachments) else None
    if s in (EventStatusCode.ACCEPTED, EventStatusCode.REOPENED):
        found = catalogues.find(cat, row.category)
        team = found.team if found is not None else "街道综合执法"
        return lifecycle.Dispatch(f"{lifecycle.TEAM_PREFIX}{team}", at_ms + DEADLINE_MS)
    if s is EventStatusCode.DISPATCHED:
        return lifecycle.Start()
    if s is EventStatusCode.IN_PROGRESS:
        return lifecycle.Resolve(RESULTS[row.number % len(RESULTS)])
    if s is EventStatusCode.RESOLVED:
        return lifecycle.Close()
    return None


class Desk:
    """The center's operator, on the center database (SQLite path or postgresql:// URL)."""

    def __init__(self, db: str | Path, *, poll_s: float = 0.5) -> None:
        self.db = db
        self.poll_s = poll_s
        self.catalogue = catalogues.load()
        self.actions = 0
        self._db: events.EventDb | None = None
        self._stop = asyncio.Event()

    def _opened(self) -> events.EventDb | None:
        if self._db is None:
            with contextlib.suppress(CenterError):  # not made yet: the center is starting
                self._db = events.EventDb(self.db)
        return self._db

    def step(self) -> int:
        """One look: one action on every open event that can take one; how many open
        events are left (those waiting for attachments included)."""
        db = self._opened()
        if db is None:
            return 0
        now = int(time.time() * 1000)
        with db.read() as sql:  # what is due, from one look; written only where it is
            rows = events.list_events(sql, events.EventQuery(statuses=_OPEN), with_reporters=False)
            due = [r for r in rows if self._action(sql, r, now) is not None]
        left = len(rows)
        for row in due:
            with db.write() as sql:
                current = events.get_event(sql, row.number, lock=True)
                at = max(now, row.updated_ms + 1)
                action = None if current is None else self._action(sql, current, at)
                if action is not None:
                    events.act(sql, row.number, action, by=DESK_NAME, at_ms=at)
                    self.actions += 1
                    left -= isinstance(action, lifecycle.Close)
        return left

    def _action(self, sql: Sql, row: events.EventRow, at_ms: int) -> lifecycle.Action | None:
        return next_action(row, events.attachments(sql, row.number), self.catalogue, at_ms)

    async def run(self) -> None:
        """Look every `poll_s` until `stop`; a database that fails now is tried again."""
        while not self._stop.is_set():
            try:
                await asyncio.to_thread(self.step)
            except CenterError as exc:  # busy past its timeout while the center writes
                log.warning("the desk looks again: %s", exc)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._stop.wait()

    def stop(self) -> None:
        self._stop.set()

    async def settle(self, timeout_s: float) -> bool:
        """After the drain: look until no event is open (True) or `timeout_s` passed."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if await asyncio.to_thread(self.step) == 0:
                return True
            await asyncio.sleep(min(self.poll_s, 0.1))
        return False

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


# --- the audit -----------------------------------------------------------------------------------

Reported = Mapping[str, Sequence[tuple[int, Sequence[bytes]]]]  # device -> (seq, digests)


def audit_events(center_db: Path, reported: Reported) -> dict[str, int]:
    """What the devices reported, looked up in the center's database after the run."""
    count = sum(len(r) for r in reported.values())
    attachments = sum(len(d) for r in reported.values() for _s, d in r)
    delivered = closed = whole = 0
    try:
        db = events.EventDb(center_db, readonly=True)
    except CenterError:
        db = None
    if db is not None:
        try:
            with db.read() as sql:
                at_center = {
                    (str(dev), int(seq)): (int(number), EventStatusCode(status))
                    for number, dev, seq, status in sql.rows(
                        "SELECT number, device, seq, status FROM events WHERE seq IS NOT NULL"
                    )
                }
                for device, reports in reported.items():
                    for seq, digests in reports:
                        found = at_center.get((device, seq))
                        if found is None:
                            continue
                        delivered += 1
                        closed += found[1] is EventStatusCode.CLOSED
                        for digest in digests:
                            data = events.attachment_bytes(sql, found[0], digest)
                            whole += data is not None and hashlib.sha256(data).digest() == digest
        finally:
            db.close()
    return {
        "events_reported": count,
        "events_delivered": delivered,
        "attachments_reported": attachments,
        "attachments_delivered": whole,
        "attachments_lost": attachments - whole,
        "events_closed": closed,
    }
