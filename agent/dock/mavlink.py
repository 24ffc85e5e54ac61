"""Drone telemetry over MAVLink 2: a position source for a drone dock, like a GNSS receiver.

A drone dock is a Picket device whose "receiver" is the drone: its autopilot's position
(GLOBAL_POSITION_INT) becomes the same `Fix` the check-in engine takes from GNSS, so an
aerial checkpoint is checked by the engine that checks street points. Around the fix, a
`DroneTelemetry` carries what the dock's own state machine needs: armed, battery, mission
progress and whether the autopilot's heartbeat is still heard.

Split the way agent/gnss is: this module's `MavlinkDecoder` is pure (bytes and the dock's
time in, telemetry out; no clock, socket or task), so every rule below is tested with bytes;
`MavlinkSource` (agent/dock/mavsource.py) is the asyncio driver around it (a UDP
DatagramProtocol, or a serial port), with status callbacks and reconnects as `GnssSource`
has them, and source URLs are parsed in agent/dock/mavurl.py (no pymavlink needed there).

pymavlink is used only as the framer and codec (`pymavlink.dialects.v20.common.MAVLink`,
with `robust_parsing` on, so garbage comes back as `MAVLink_bad_data` instead of raised
MAVError). Its `mavutil` is not: it opens its own sockets, reads blocking, and keeps its own
idea of time and of which system to listen to, all of which the dock decides here.

Rules worth knowing before building on this:

- **Snapshot semantics.** Every telemetry is the whole known state; `changed` says what made
  it. Feed `fix` to the engine only when `Change.POSITION in t.changed` (positions come at
  the autopilot's rate, typically 5 Hz; the engine wants about 1 Hz: decimate).
- **Time.** The autopilot stamps positions with its `time_boot_ms`. The dock maps that to its
  own clock as boot time + the smallest (arrival − boot time) seen: network delay only ever
  adds, so the smallest is the best estimate. The offset may creep up by 200 ppm of elapsed
  time (two crystals' drift, with margin), follows a dock clock step after 5 s of consistently
  late samples, and restarts when the boot time runs backwards (the autopilot rebooted). A
  mapped time is never later than the arrival. Messages without a boot time (heartbeat,
  battery, mission) are stamped with their arrival; `DroneTelemetry.time_ms` never decreases.
- **Which drone.** With `system_id` unset, the decoder locks onto the first heartbeat from a
  vehicle autopilot (not a ground station, not a companion computer's MAV_AUTOPILOT_INVALID)
  and from then on reads only that system and component; everything else is counted as
  ignored. A dock hears one drone; a second one on the link is an installation error.
- **Datagrams are whole.** Over UDP every datagram is parsed on its own: a frame cut at a
  datagram's end is counted bad and dropped, never glued to the next datagram's bytes. A
  serial port is a stream: the parser keeps a partial frame across reads and drops it on a
  reconnect.
- **Heartbeat.** No HEARTBEAT for `heartbeat_timeout_s` yields `heartbeat_ok=False` once
  (counted in `heartbeats_lost`); the next heartbeat yields `True`.
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from pymavlink.dialects.v20 import common as mavlink2

from agent.gnss.nmea import UERE_M
from contract.fix import Fix, FixMode, Quality, TimeSource

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ACCURACY_M",
    "Change",
    "DroneTelemetry",
    "MavlinkDecoder",
    "MavlinkStats",
]

# Used when the autopilot sends positions but no GPS_RAW_INT (or one without eph/h_acc):
# a single-frequency receiver on a drone, open sky, typically reports 1-2.5 m; 5 m is the
# conservative end, still "good" for aerial checkpoints (radius 40 m: good up to 30 m).
DEFAULT_ACCURACY_M = 5.0
MIN_COURSE_SPEED_MPS = 0.5  # below this, course over ground is noise: use the heading
DRIFT_ALLOWANCE = 200e-6  # the clock offset may creep up this much per elapsed ms
CLOCK_STEP_MS = 1000  # samples this much later than the offset suggest a dock clock step
CLOCK_STEP_CONFIRM_MS = 5000  # ... once they have been late for this long (of drone time)
REBOOT_BACKSTEP_MS = 5000  # time_boot_ms running back further than this: a reboot

_U16_UNKNOWN: Final = 0xFFFF
_SAFETY_ARMED: Final = int(mavlink2.MAV_MODE_FLAG_SAFETY_ARMED)
_AUTOPILOT_INVALID: Final = int(mavlink2.MAV_AUTOPILOT_INVALID)
_TYPE_GCS: Final = int(mavlink2.MAV_TYPE_GCS)
_ID_HEARTBEAT: Final = int(mavlink2.MAVLINK_MSG_ID_HEARTBEAT)
_ID_GLOBAL_POSITION_INT: Final = int(mavlink2.MAVLINK_MSG_ID_GLOBAL_POSITION_INT)
_ID_GPS_RAW_INT: Final = int(mavlink2.MAVLINK_MSG_ID_GPS_RAW_INT)
_ID_SYS_STATUS: Final = int(mavlink2.MAVLINK_MSG_ID_SYS_STATUS)
_ID_BATTERY_STATUS: Final = int(mavlink2.MAVLINK_MSG_ID_BATTERY_STATUS)
_ID_MISSION_CURRENT: Final = int(mavlink2.MAVLINK_MSG_ID_MISSION_CURRENT)
_ID_MISSION_ITEM_REACHED: Final = int(mavlink2.MAVLINK_MSG_ID_MISSION_ITEM_REACHED)
_ID_BAD_DATA: Final = int(mavlink2.MAVLINK_MSG_ID_BAD_DATA)
_ID_UNKNOWN: Final = int(mavlink2.MAVLINK_MSG_ID_UNKNOWN)

# GPS_FIX_TYPE → (mode, quality). Without a 3D fix, GLOBAL_POSITION_INT is the autopilot's
# estimator coasting: reported, but never evidence (Quality.ESTIMATED).
_FIX_TYPES: Final[dict[int, tuple[FixMode, Quality]]] = {
    0: (FixMode.NO_FIX, Quality.ESTIMATED),  # no GPS connected
    1: (FixMode.NO_FIX, Quality.ESTIMATED),
    2: (FixMode.FIX_2D, Quality.ESTIMATED),
    3: (FixMode.FIX_3D, Quality.GPS),
    4: (FixMode.FIX_3D, Quality.DGPS),
    5: (FixMode.FIX_3D, Quality.FLOAT_RTK),
    6: (FixMode.FIX_3D, Quality.RTK),
    7: (FixMode.FIX_3D, Quality.GPS),  # static (a base station's fixed position)
    8: (FixMode.FIX_3D, Quality.DGPS),  # PPP: corrected
}


class Change(enum.Flag):
    """What made a `DroneTelemetry` (several at once when one event changed several)."""

    NONE = 0
    POSITION = enum.auto()  # a new GLOBAL_POSITION_INT: `fix` is new
    HEARTBEAT = enum.auto()  # heartbeat_ok changed
    ARMED = enum.auto()
    BATTERY = enum.auto()
    MISSION = enum.auto()  # mission_seq changed
    REACHED = enum.auto()  # a MISSION_ITEM_REACHED: `reached` is set


@dataclass(frozen=True, slots=True)
class DroneTelemetry:
    """The drone as last heard, at `time_ms` (dock clock, UTC ms; see the module docstring).

    `fix` is the latest position (AMSL altitude in `fix.alt_m`, as aerial points' altitude
    bands are); `rel_alt_m` is height above the home (take-off) point. None means never
    reported. `reached` is set only on the telemetry made by a MISSION_ITEM_REACHED.
    """

    time_ms: int
    fix: Fix | None
    rel_alt_m: float | None
    armed: bool | None
    battery_pct: int | None
    battery_mv: int | None
    mission_seq: int | None
    reached: int | None
    heartbeat_ok: bool
    changed: Change = Change.NONE
    heading_deg: float | None = None  # where the nose points (GLOBAL_POSITION_INT hdg)
    climb_mps: float | None = None  # vertical speed, up positive


@dataclass(slots=True)
class MavlinkStats:
    reads: int = 0  # datagrams (UDP) or reads (serial) fed
    messages: int = 0  # well-formed messages of the common dialect, from anyone
    accepted: int = 0  # ... of them from the drone, and used
    bad: int = 0  # garbage runs, bad CRC or length, frames cut at a datagram's end, nonsense
    unknown: int = 0  # well-framed messages of ids not in the common dialect
    ignored: int = 0  # other systems/components, no position yet, positions out of order
    lost: int = 0  # gaps in the drone's sequence numbers
    heartbeats_lost: int = 0
    reboots: int = 0  # the drone's boot time ran backwards
    dropped: int = 0  # datagrams dropped because the consumer fell behind (MavlinkSource)


@dataclass(frozen=True, slots=True)
class _Gps:
    fix_type: int
    hdop: float | None
    h_acc_m: float | None
    satellites: int


class _BootClock:
    """Maps the autopilot's time_boot_ms to the dock's clock (module docstring, "Time")."""

    def __init__(self) -> None:
        self._offset: float | None = None
        self._last_boot = 0
        self._late_since: int | None = None
        self._late_min = 0

    def reset(self) -> None:
        self._offset = None
        self._late_since = None

    def map(self, boot_ms: int, now_ms: int) -> int:
        sample = now_ms - boot_ms
        if self._offset is None:
            self._offset = sample
        else:
            allowed = self._offset + max(0, boot_ms - self._last_boot) * DRIFT_ALLOWANCE
            if sample <= allowed:
                self._offset = sample
                self._late_since = None
            else:
                self._offset = allowed
                if sample - allowed <= CLOCK_STEP_MS:
                    self._late_since = None
                elif self._late_since is None:
                    self._late_since, self._late_min = boot_ms, sample
                else:
                    self._late_min = min(self._late_min, sample)
                    if boot_ms - self._late_since >= CLOCK_STEP_CONFIRM_MS:
                        self._offset = self._late_min
                        self._late_since = None
        self._last_boot = boot_ms
        return math.floor(boot_ms + self._offset)


def _new_parser() -> Any:
    parser = mavlink2.MAVLink(None)
    parser.robust_parsing = True  # garbage as MAVLink_bad_data, not a raised MAVError
    return parser


class MavlinkDecoder:
    """Bytes from one link in, `DroneTelemetry` out; no clock of its own.

    `feed(data, now_ms)` takes one UDP datagram (or, with `stream=True`, the next bytes of a
    serial stream) and the dock time it arrived; `tick(now_ms)` reports heartbeat loss when
    nothing arrives. Both return the telemetry the input caused, oldest first.
    """

    def __init__(
        self,
        *,
        system_id: int | None = None,
        heartbeat_timeout_s: float = 3.0,
        time_source: TimeSource = TimeSource.NTP,
        default_accuracy_m: float = DEFAULT_ACCURACY_M,
    ) -> None:
        if heartbeat_timeout_s <= 0:
            raise ValueError("heartbeat_timeout_s must be positive")
        self.stats = MavlinkStats()
        self._parser = _new_parser()
        self._system: int | None = system_id
        self._component: int | None = None
        self._timeout_ms = round(heartbeat_timeout_s * 1000)
        self._time_source = time_source
        self._default_accuracy_m = default_accuracy_m
        self._clock = _BootClock()
        self._seq: int | None = None
        self._last_heartbeat_ms: int | None = None
        self._last_boot: int | None = None
        self._last_time = -(2**62)
        self._gps: _Gps | None = None
        self._battery_id: int | None = None  # BATTERY_STATUS seen: SYS_STATUS's is ignored
        # the snapshot
        self._fix: Fix | None = None
        self._rel_alt_m: float | None = None
        self._heading_deg: float | None = None
        self._climb_mps: float | None = None
        self._armed: bool | None = None
        self._battery_pct: int | None = None
        self._battery_mv: int | None = None
        self._mission_seq: int | None = None
        self._heartbeat_ok = False

    @property
    def system_id(self) -> int | None:
        """The drone's MAVLink system id: as given, or locked onto from its first heartbeat."""
        return self._system

    @property
    def component_id(self) -> int | None:
        """The autopilot's component id, once its heartbeat was heard."""
        return self._component

    @property
    def heartbeat_ok(self) -> bool:
        return self._heartbeat_ok

    @property
    def last_heartbeat_ms(self) -> int | None:
        """Dock time the drone's last heartbeat arrived (None: never heard)."""
        return self._last_heartbeat_ms

    def feed(self, data: bytes, now_ms: int, *, stream: bool = False) -> list[DroneTelemetry]:
        out = self.tick(now_ms)
        self.stats.reads += 1
        try:
            messages: list[Any] = self._parser.parse_buffer(data) or []
        except Exception as exc:  # robust parsing should not raise; never let a link die of it
            log.debug("MAVLink parser refused input: %r", exc)
            self.stats.bad += 1
            self._parser = _new_parser()
            return out
        for message in messages:
            telemetry = self._handle(message, now_ms)
            if telemetry is not None:
                out.append(telemetry)
        if not stream and self._parser.buf_len() > 0:  # a frame cut at the datagram's end
            self.stats.bad += 1
            self._parser = _new_parser()
        return out

    def reset_stream(self) -> None:
        """Drop a partial frame (the link it came on is gone)."""
        self._parser = _new_parser()

    def tick(self, now_ms: int) -> list[DroneTelemetry]:
        last = self._last_heartbeat_ms
        if self._heartbeat_ok and last is not None and now_ms - last >= self._timeout_ms:
            self._heartbeat_ok = False
            self.stats.heartbeats_lost += 1
            return [self._emit(Change.HEARTBEAT, now_ms)]
        return []

    def _handle(self, message: Any, now_ms: int) -> DroneTelemetry | None:
        msg_id = int(message.get_msgId())
        if msg_id == _ID_BAD_DATA:
            self.stats.bad += 1
            return None
        if msg_id == _ID_UNKNOWN:
            self.stats.unknown += 1
            return None
        self.stats.messages += 1
        system, component = int(message.get_srcSystem()), int(message.get_srcComponent())
        if msg_id == _ID_HEARTBEAT:
            return self._heartbeat(message, system, component, now_ms)
        if system != self._system or (self._component is not None and component != self._component):
            self.stats.ignored += 1
            return None
        self._count_sequence(message)
        handler = self._handlers.get(msg_id)
        if handler is None:
            return None
        return handler(self, message, now_ms)

    def _count_sequence(self, message: Any) -> None:
        seq = int(message.get_seq())
        if self._seq is not None:
            gap = (seq - self._seq - 1) & 0xFF
            if gap < 128:  # a larger "gap" is a duplicate or a reordered frame
                self.stats.lost += gap
        self._seq = seq

    def _heartbeat(
        self, message: Any, system: int, component: int, now_ms: int
    ) -> DroneTelemetry | None:
        vehicle = int(message.autopilot) != _AUTOPILOT_INVALID and int(message.type) != _TYPE_GCS
        if (
            not vehicle
            or (self._system is not None and system != self._system)
            or (self._component is not None and component != self._component)
        ):
            self.stats.ignored += 1
            return None
        if self._component is None:
            log.info("MAVLink: listening to system %d, component %d", system, component)
        self._system, self._component = system, component
        self.stats.accepted += 1
        self._count_sequence(message)
        self._last_heartbeat_ms = now_ms
        changed = Change.NONE
        if not self._heartbeat_ok:
            self._heartbeat_ok = True
            changed |= Change.HEARTBEAT
        armed = bool(int(message.base_mode) & _SAFETY_ARMED)
        if armed != self._armed:
            self._armed = armed
            changed |= Change.ARMED
        return self._emit(changed, now_ms) if changed else None

    def _position(self, message: Any, now_ms: int) -> DroneTelemetry | None:
        lat, lon = int(message.lat) / 1e7, int(message.lon) / 1e7
        if lat == 0 and lon == 0:  # the estimator has no origin yet
            self.stats.ignored += 1
            return None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            self.stats.bad += 1
            return None
        boot = int(message.time_boot_ms)
        if self._last_boot is not None:
            if boot < self._last_boot - REBOOT_BACKSTEP_MS:
                log.warning(
                    "MAVLink: the drone rebooted (boot time %d ms after %d)", boot, self._last_boot
                )
                self.stats.reboots += 1
                self._clock.reset()
                self._gps = None
            elif boot <= self._last_boot:
                self.stats.ignored += 1  # reordered or repeated
                return None
        self._last_boot = boot
        self.stats.accepted += 1
        time_ms = max(self._last_time, self._clock.map(boot, now_ms))
        vx, vy = int(message.vx) / 100, int(message.vy) / 100  # north, east
        speed = math.hypot(vx, vy)
        hdg = int(message.hdg)
        self._heading_deg = None if hdg == _U16_UNKNOWN else hdg / 100
        course = (
            math.degrees(math.atan2(vy, vx)) % 360.0
            if speed >= MIN_COURSE_SPEED_MPS
            else self._heading_deg
        )
        self._climb_mps = -int(message.vz) / 100
        self._rel_alt_m = int(message.relative_alt) / 1000
        gps = self._gps
        mode, quality = (FixMode.FIX_3D, Quality.GPS) if gps is None else _fix_type(gps.fix_type)
        if gps is None:
            accuracy: float | None = self._default_accuracy_m
        elif mode is FixMode.NO_FIX:
            accuracy = None
        elif gps.h_acc_m is not None:
            accuracy = gps.h_acc_m
        elif gps.hdop is not None:
            accuracy = gps.hdop * UERE_M
        else:
            accuracy = self._default_accuracy_m
        self._fix = Fix(
            time_ms=time_ms,
            lat=lat,
            lon=lon,
            accuracy_m=accuracy,
            hdop=None if gps is None else gps.hdop,
            alt_m=int(message.alt) / 1000,
            mode=mode,
            quality=quality,
            satellites=0 if gps is None else gps.satellites,
            speed_mps=speed,
            course_deg=course,
            time_source=self._time_source,
        )
        return self._emit(Change.POSITION, time_ms)

    def _gps_raw(self, message: Any, _now_ms: int) -> None:
        self.stats.accepted += 1
        eph = int(message.eph)
        h_acc = int(getattr(message, "h_acc", 0) or 0)  # a MAVLink 2 extension: 0 if unsent
        sats = int(message.satellites_visible)
        self._gps = _Gps(
            fix_type=int(message.fix_type),
            hdop=None if eph in (0, _U16_UNKNOWN) else eph / 100,
            h_acc_m=h_acc / 1000 if h_acc else None,
            satellites=0 if sats == 0xFF else sats,
        )

    def _sys_status(self, message: Any, now_ms: int) -> DroneTelemetry | None:
        self.stats.accepted += 1
        if self._battery_id is not None:
            return None
        remaining, mv = int(message.battery_remaining), int(message.voltage_battery)
        return self._battery(
            None if remaining < 0 else remaining, None if mv in (0, _U16_UNKNOWN) else mv, now_ms
        )

    def _battery_status(self, message: Any, now_ms: int) -> DroneTelemetry | None:
        battery_id = int(message.id)
        if self._battery_id is not None and battery_id > self._battery_id:
            self.stats.ignored += 1  # a second battery: the first one speaks for the drone
            return None
        self.stats.accepted += 1
        self._battery_id = battery_id
        cells = [int(v) for v in message.voltages if int(v) != _U16_UNKNOWN]
        cells += [int(v) for v in getattr(message, "voltages_ext", ()) if int(v) != 0]
        remaining = int(message.battery_remaining)
        return self._battery(None if remaining < 0 else remaining, sum(cells) or None, now_ms)

    def _battery(self, pct: int | None, mv: int | None, now_ms: int) -> DroneTelemetry | None:
        if (pct, mv) == (self._battery_pct, self._battery_mv):
            return None
        self._battery_pct, self._battery_mv = pct, mv
        return self._emit(Change.BATTERY, now_ms)

    def _mission_current(self, message: Any, now_ms: int) -> DroneTelemetry | None:
        self.stats.accepted += 1
        seq = int(message.seq)
        if seq == self._mission_seq:
            return None
        self._mission_seq = seq
        return self._emit(Change.MISSION, now_ms)

    def _mission_item_reached(self, message: Any, now_ms: int) -> DroneTelemetry:
        self.stats.accepted += 1
        return self._emit(Change.REACHED, now_ms, reached=int(message.seq))

    _handlers: Final[dict[int, Callable[[MavlinkDecoder, Any, int], DroneTelemetry | None]]] = {
        _ID_GLOBAL_POSITION_INT: _position,
        _ID_GPS_RAW_INT: _gps_raw,
        _ID_SYS_STATUS: _sys_status,
        _ID_BATTERY_STATUS: _battery_status,
        _ID_MISSION_CURRENT: _mission_current,
        _ID_MISSION_ITEM_REACHED: _mission_item_reached,
    }

    def _emit(self, changed: Change, event_ms: int, reached: int | None = None) -> DroneTelemetry:
        self._last_time = max(self._last_time, event_ms)
        return DroneTelemetry(
            time_ms=self._last_time,
            fix=self._fix,
            rel_alt_m=self._rel_alt_m,
            armed=self._armed,
            battery_pct=self._battery_pct,
            battery_mv=self._battery_mv,
            mission_seq=self._mission_seq,
            reached=reached,
            heartbeat_ok=self._heartbeat_ok,
            changed=changed,
            heading_deg=self._heading_deg,
            climb_mps=self._climb_mps,
        )


def _fix_type(fix_type: int) -> tuple[FixMode, Quality]:
    return _FIX_TYPES.get(fix_type, (FixMode.UNKNOWN, Quality.ESTIMATED))
