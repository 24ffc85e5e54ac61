"""Telling a drone what to fly over MAVLink 2: the mission upload and the two commands.

`MissionUploader` is pure (bytes and the dock's time in, bytes out; no socket, no clock):

- `start(waypoints, now_ms)`: the standard mission upload. MISSION_COUNT goes out, the drone
  asks for each item with MISSION_REQUEST_INT (or the legacy MISSION_REQUEST) and is sent a
  MISSION_ITEM_INT: item 0 NAV_TAKEOFF, items 1..n NAV_WAYPOINT (param1 = hover seconds),
  item n+1 NAV_RETURN_TO_LAUNCH, all MAV_FRAME_GLOBAL_RELATIVE_ALT_INT. A MISSION_ACK
  ACCEPTED after the last item is followed by COMMAND_LONG COMPONENT_ARM_DISARM (arm), then
  COMMAND_LONG MISSION_START, each acknowledged by COMMAND_ACK ACCEPTED.
- `abort(now_ms)`: COMMAND_LONG NAV_RETURN_TO_LAUNCH (acknowledged by COMMAND_ACK); it
  supersedes an upload in progress.
- `tick(now_ms)`: a step with no answer for `timeout_ms` sends its last message again
  (a COMMAND_LONG with `confirmation` counted up), up to `retries` times; then the operation
  fails. A MISSION_ACK or COMMAND_ACK with an error fails it at once with the reason.

`outcome` tells how the last operation ended (`Outcome`); failures are logged. The dock does
not wait for them: a drone that never arms is given up by the dock's own launch timeout.

`MissionLink` is the asyncio driver: its own UDP socket to the drone's address (replies come
back to it), a `DroneLink` for `DockExecutor` (agent/dock/executor.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pymavlink.dialects.v20 import common as mavlink2

from agent.dock.mavlink import DroneTelemetry

log = logging.getLogger(__name__)

__all__ = [
    "FIRST_WAYPOINT_ITEM",
    "MissionLink",
    "MissionUploader",
    "Outcome",
    "Phase",
    "as_dock_numbering",
    "mission_items",
]

DEFAULT_TIMEOUT_MS = 1500
DEFAULT_RETRIES = 5
TAKEOFF_MIN_M = 5.0
FIRST_WAYPOINT_ITEM = 1  # item 0 of an upload is the take-off (`mission_items`)

_FRAME: Final = int(mavlink2.MAV_FRAME_GLOBAL_RELATIVE_ALT_INT)
_ID_MISSION_REQUEST_INT: Final = int(mavlink2.MAVLINK_MSG_ID_MISSION_REQUEST_INT)
_ID_MISSION_REQUEST: Final = int(mavlink2.MAVLINK_MSG_ID_MISSION_REQUEST)
_ID_MISSION_ACK: Final = int(mavlink2.MAVLINK_MSG_ID_MISSION_ACK)
_ID_COMMAND_ACK: Final = int(mavlink2.MAVLINK_MSG_ID_COMMAND_ACK)
_CMD_ARM: Final = int(mavlink2.MAV_CMD_COMPONENT_ARM_DISARM)
_CMD_START: Final = int(mavlink2.MAV_CMD_MISSION_START)
_CMD_RTL: Final = int(mavlink2.MAV_CMD_NAV_RETURN_TO_LAUNCH)
_ACCEPTED: Final = int(mavlink2.MAV_RESULT_ACCEPTED)
_IN_PROGRESS: Final = int(mavlink2.MAV_RESULT_IN_PROGRESS)


class Phase(enum.StrEnum):
    IDLE = "idle"
    COUNT = "count"  # MISSION_COUNT sent, items being requested
    ARM = "arm"
    START = "start"
    RTL = "rtl"


@dataclass(frozen=True, slots=True)
class Outcome:
    operation: str  # "mission" or "abort"
    ok: bool
    reason: str | None
    time_ms: int


@dataclass(frozen=True, slots=True)
class Item:
    command: int
    lat: float
    lon: float
    rel_alt_m: float
    param1: float = 0.0


def mission_items(waypoints: Sequence[tuple[float, float, float, float]]) -> list[Item]:
    """[(lat, lon, rel_alt_m, hover_s)] as mission items: take-off, waypoints, RTL."""
    if not waypoints:
        raise ValueError("a mission needs at least one waypoint")
    lat0, lon0, alt0, _ = waypoints[0]
    items = [Item(int(mavlink2.MAV_CMD_NAV_TAKEOFF), lat0, lon0, max(TAKEOFF_MIN_M, alt0))]
    items += [Item(int(mavlink2.MAV_CMD_NAV_WAYPOINT), a, o, h, s) for a, o, h, s in waypoints]
    items.append(Item(_CMD_RTL, 0.0, 0.0, 0.0))
    return items


def as_dock_numbering(t: DroneTelemetry) -> DroneTelemetry:
    """Telemetry of a mission uploaded by `mission_items`, numbered as the dock counts
    (agent/dock/machine.py): the autopilot reports item i + 1 for waypoint i and n + 1 for the
    return; the take-off item reads as "on the way to waypoint 0", never as reached."""
    seq, reached = t.mission_seq, t.reached
    return dataclasses.replace(
        t,
        mission_seq=None if seq is None else max(0, seq - FIRST_WAYPOINT_ITEM),
        reached=None
        if reached is None or reached < FIRST_WAYPOINT_ITEM
        else reached - FIRST_WAYPOINT_ITEM,
    )


class _Frames:
    def __init__(self) -> None:
        self.frames: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.frames.append(bytes(data))


def _enum_name(enum_name: str, value: int) -> str:
    entry = mavlink2.enums.get(enum_name, {}).get(value)
    return str(entry.name) if entry is not None else str(value)


class MissionUploader:
    """The mission upload and commands as a state machine (see the module docstring)."""

    def __init__(
        self,
        target_system: int = 1,
        target_component: int = 1,
        *,
        source_system: int = 255,
        source_component: int = int(mavlink2.MAV_COMP_ID_MISSIONPLANNER),
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
        retries: int = DEFAULT_RETRIES,
    ) -> None:
        self.target_system = target_system
        self.target_component = target_component
        self.timeout_ms = timeout_ms
        self.retries = retries
        self._out = _Frames()
        self._mav: Any = mavlink2.MAVLink(
            self._out, srcSystem=source_system, srcComponent=source_component
        )
        self._parser: Any = mavlink2.MAVLink(None)
        self._parser.robust_parsing = True
        self.phase = Phase.IDLE
        self.outcome: Outcome | None = None
        self.resent = 0  # messages sent again after a timeout (all operations)
        self._items: list[Item] = []
        self._last: Any = None  # the message a timeout sends again
        self._deadline = 0
        self._tries = 0
        self._confirmation = 0
        self._sent_items: set[int] = set()

    @property
    def busy(self) -> bool:
        return self.phase is not Phase.IDLE

    # -- operations ---------------------------------------------------------------------------

    def start(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> list[bytes]:
        self._items = mission_items(waypoints)
        self._sent_items.clear()
        self.phase = Phase.COUNT
        msg = self._mav.mission_count_encode(
            self.target_system, self.target_component, len(self._items)
        )
        return self._send(msg, now_ms, fresh=True)

    def abort(self, now_ms: int) -> list[bytes]:
        if self.phase is Phase.COUNT or self.phase is Phase.ARM or self.phase is Phase.START:
            self._finish("mission", False, "superseded by an abort", now_ms)
        self.phase = Phase.RTL
        return self._command(_CMD_RTL, now_ms)

    # -- input --------------------------------------------------------------------------------

    def feed(self, data: bytes, now_ms: int) -> list[bytes]:
        """One datagram from the drone; the frames to send in reply."""
        out = self.tick(now_ms)
        try:
            messages: list[Any] = self._parser.parse_buffer(data) or []
        except Exception as exc:  # robust parsing should not raise
            log.debug("MAVLink parser refused input: %r", exc)
            messages = []
        for m in messages:
            out += self._handle(m, now_ms)
        return out

    def tick(self, now_ms: int) -> list[bytes]:
        if self.phase is Phase.IDLE or now_ms < self._deadline:
            return []
        if self._tries >= self.retries:
            what = "abort" if self.phase is Phase.RTL else "mission"
            self._finish(
                what, False, f"no answer in {self.phase} after {self._tries} retries", now_ms
            )
            return []
        self._tries += 1
        self.resent += 1
        msg = self._last
        if msg is not None and int(msg.get_msgId()) == int(mavlink2.MAVLINK_MSG_ID_COMMAND_LONG):
            self._confirmation = min(255, self._confirmation + 1)
            msg.confirmation = self._confirmation
        return self._send(msg, now_ms, fresh=False)

    def _handle(self, m: Any, now_ms: int) -> list[bytes]:
        msg_id = int(m.get_msgId())
        if int(m.get_srcSystem()) != self.target_system:
            return []
        if getattr(m, "target_system", None) not in (None, 0, self._mav.srcSystem):
            return []
        if msg_id in (_ID_MISSION_REQUEST_INT, _ID_MISSION_REQUEST) and self.phase is Phase.COUNT:
            seq = int(m.seq)
            if not 0 <= seq < len(self._items):
                return []
            self._sent_items.add(seq)
            return self._send(
                self._item(seq, legacy=msg_id == _ID_MISSION_REQUEST), now_ms, fresh=True
            )
        if msg_id == _ID_MISSION_ACK and self.phase is Phase.COUNT:
            result = int(m.type)
            if result != int(mavlink2.MAV_MISSION_ACCEPTED):
                self._finish("mission", False, _enum_name("MAV_MISSION_RESULT", result), now_ms)
                return []
            if len(self._sent_items) < len(self._items):
                return []  # an ACK of an older upload: wait for this one's requests
            self.phase = Phase.ARM
            return self._command(_CMD_ARM, now_ms, 1.0)
        if msg_id == _ID_COMMAND_ACK:
            return self._command_ack(int(m.command), int(m.result), now_ms)
        return []

    def _command_ack(self, command: int, result: int, now_ms: int) -> list[bytes]:
        expected = {Phase.ARM: _CMD_ARM, Phase.START: _CMD_START, Phase.RTL: _CMD_RTL}
        if expected.get(self.phase) != command:
            return []
        if result == _IN_PROGRESS:
            self._deadline = now_ms + self.timeout_ms
            return []
        what = "abort" if self.phase is Phase.RTL else "mission"
        if result != _ACCEPTED:
            name = _enum_name("MAV_CMD", command)
            self._finish(what, False, f"{name}: {_enum_name('MAV_RESULT', result)}", now_ms)
            return []
        if self.phase is Phase.ARM:
            self.phase = Phase.START
            return self._command(_CMD_START, now_ms)
        self._finish(what, True, None, now_ms)
        return []

    # -- output -------------------------------------------------------------------------------

    def _item(self, seq: int, *, legacy: bool) -> Any:
        it = self._items[seq]
        args = (
            self.target_system,
            self.target_component,
            seq,
            _FRAME,
            it.command,
            0,
            1,
            it.param1,
            0.0,
            0.0,
            float("nan"),
        )
        if legacy:
            return self._mav.mission_item_encode(*args, it.lat, it.lon, it.rel_alt_m)
        x, y = round(it.lat * 1e7), round(it.lon * 1e7)
        return self._mav.mission_item_int_encode(*args, x, y, it.rel_alt_m)

    def _command(self, command: int, now_ms: int, param1: float = 0.0) -> list[bytes]:
        self._confirmation = 0
        msg = self._mav.command_long_encode(
            self.target_system, self.target_component, command, 0, param1, 0, 0, 0, 0, 0, 0
        )
        return self._send(msg, now_ms, fresh=True)

    def _send(self, msg: Any, now_ms: int, *, fresh: bool) -> list[bytes]:
        if fresh:
            self._tries = 0
        self._last = msg
        self._deadline = now_ms + self.timeout_ms
        self._out.frames.clear()
        self._mav.send(msg)
        frames, self._out.frames = self._out.frames, []
        return frames

    def _finish(self, operation: str, ok: bool, reason: str | None, now_ms: int) -> None:
        self.outcome = Outcome(operation, ok, reason, now_ms)
        self.phase = Phase.IDLE
        self._last = None
        if ok:
            log.info("drone %d: %s accepted", self.target_system, operation)
        else:
            log.warning("drone %d: %s failed: %s", self.target_system, operation, reason)


def _wall_ms() -> int:
    return int(time.time() * 1000)


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, link: MissionLink) -> None:
        self.link = link

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.link._received(data)

    def error_received(self, exc: Exception) -> None:
        log.debug("mission link: %r", exc)


class MissionLink:
    """A `DroneLink` over UDP: its own socket to `drone` = (host, port); `run()` until cancelled."""

    def __init__(
        self,
        drone: tuple[str, int],
        uploader: MissionUploader | None = None,
        *,
        clock: Callable[[], int] = _wall_ms,
        tick_s: float = 0.1,
    ) -> None:
        self.drone = drone
        self.uploader = uploader or MissionUploader()
        self.clock = clock
        self.tick_s = tick_s
        self._transport: asyncio.DatagramTransport | None = None
        self.ready = asyncio.Event()

    def start_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> None:
        self._transmit(self.uploader.start(waypoints, self.clock()))

    def abort(self, now_ms: int) -> None:
        self._transmit(self.uploader.abort(self.clock()))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Replies(self), remote_addr=self.drone
        )
        self._transport = transport
        self.ready.set()
        try:
            while True:
                self._transmit(self.uploader.tick(self.clock()))
                await asyncio.sleep(self.tick_s)
        finally:
            self._transport = None
            transport.close()

    def _received(self, data: bytes) -> None:
        self._transmit(self.uploader.feed(data, self.clock()))

    def _transmit(self, frames: list[bytes]) -> None:
        if self._transport is None:
            if frames:
                log.warning(
                    "mission link to %s:%d not open: %d frames lost", *self.drone, len(frames)
                )
            return
        for f in frames:
            self._transport.sendto(f)
