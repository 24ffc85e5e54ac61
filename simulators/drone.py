"""A dock's multirotor on a virtual clock, speaking MAVLink 2 over UDP as an autopilot does.

`SimDrone` is the drone for dock tests and `picket sim dock`: it takes off from the dock,
flies a mission's waypoints, hovers where asked, returns and lands, and sends its telemetry
as datagrams to `target`, as a companion link to a dock does. It is the thin driver over two
pure parts: the flight model (simulators/flight.py: physics, battery, GNSS noise, ground
truth) and the autopilot that tells it in MAVLink and answers a ground station
(simulators/autopilot.py). This module adds only the sockets, so what it reads and sends
can be tested without them, and what tests read about the flight is forwarded here.

Time passes only through `step(now_ms)` and the control methods, and all randomness comes
from the caller's `random.Random`, so a seed replays exactly and a test can fly a 10-minute
mission in a fraction of a second. A step's frames are packed into datagrams of at most
MAX_DATAGRAM bytes, in order; a socket that would block drops (and counts) a datagram.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Sequence

from simulators.autopilot import HEARTBEAT_MS, Autopilot
from simulators.flight import (
    WP_RADIUS_M,
    DroneState,
    FlightModel,
    TruthSample,
    WaypointVisit,
)

MAX_DATAGRAM = 1200


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setblocking(False)  # a full buffer drops (and counts) a datagram, never blocks
    return sock


class SimDrone:
    """A multirotor on `dock` = (lat, lon, altitude AMSL m) at `now_ms`, talking to `target`.

    With `target` None nothing is sent; `step` still returns the datagrams it would send.
    `boot_ms`: when the autopilot booted (time_boot_ms counts from it; default: 20-60 s
    before `now_ms`, seeded). `truth_radius_m` is the sphere `visits` are measured with
    (default: the acceptance radius; a test of a 40 m aerial checkpoint passes 40).
    `heartbeat_period_ms` shortens the 1 Hz heartbeat so loss tests can be quick.
    """

    def __init__(
        self,
        dock: tuple[float, float, float],
        *,
        rng: random.Random,
        now_ms: int,
        target: tuple[str, int] | None = None,
        sysid: int = 1,
        compid: int = 1,
        boot_ms: int | None = None,
        battery_pct: float = 100.0,
        truth_radius_m: float = WP_RADIUS_M,
        heartbeat_period_ms: int = HEARTBEAT_MS,
    ) -> None:
        self.dock = dock
        boot = now_ms - rng.randint(20_000, 60_000) if boot_ms is None else boot_ms
        self._target = target
        self._sock = _udp_socket() if target is not None else None
        self._model = FlightModel(
            dock, rng=rng, now_ms=now_ms, battery_pct=battery_pct, truth_radius_m=truth_radius_m
        )
        self._autopilot = Autopilot(
            self._model,
            boot_ms=boot,
            sysid=sysid,
            compid=compid,
            heartbeat_period_ms=heartbeat_period_ms,
        )
        self.send_errors = 0
        self._listen_sock: socket.socket | None = None

    # --- controls -------------------------------------------------------------------------

    def start_mission(
        self, waypoints: Sequence[tuple[float, float, float, float]], now_ms: int
    ) -> None:
        """Arm, take off and fly `waypoints` [(lat, lon, rel_alt_m, hover_s)], then return."""
        self._autopilot.start_mission(waypoints, now_ms)

    def abort(self, now_ms: int) -> None:
        """Return to home now (RTL); nothing happens on the ground."""
        self._autopilot.abort(now_ms)

    def silence(self, seconds: float) -> None:
        """Send nothing at all (no heartbeat, no telemetry) for `seconds` from the last step."""
        self._autopilot.silence(seconds)

    def step(self, now_ms: int) -> list[bytes]:
        """Fly to `now_ms` and send what fell due; the datagrams sent (in order)."""
        self._autopilot.advance(now_ms)
        datagrams: list[bytes] = []
        for frame in self._autopilot.take_frames():
            if datagrams and len(datagrams[-1]) + len(frame) <= MAX_DATAGRAM:
                datagrams[-1] += frame
            else:
                datagrams.append(frame)
        if self._sock is not None and self._target is not None:
            for datagram in datagrams:
                try:
                    self._sock.sendto(datagram, self._target)
                except OSError:  # a full buffer, or ICMP unreachable from a previous send
                    self.send_errors += 1
        return datagrams

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._listen_sock is not None:
            self._listen_sock.close()
            self._listen_sock = None

    # --- MAVLink control (opt-in) ---------------------------------------------------------

    def handle_mavlink(self, data: bytes, now_ms: int) -> list[bytes]:
        """A datagram from a ground station: the mission upload (MISSION_COUNT, then
        MISSION_ITEM_INT answered with MISSION_REQUEST_INT, MISSION_ACK at the end) and
        COMMAND_LONG arm, MISSION_START (flies the uploaded mission as `start_mission` does)
        and NAV_RETURN_TO_LAUNCH (`abort`). Returns the reply frames."""
        return self._autopilot.handle(data, now_ms)

    def listen(self, host: str = "127.0.0.1", port: int = 0) -> tuple[str, int]:
        """Take commands on a UDP socket of its own; `serve` answers what arrived."""
        if self._listen_sock is None:
            sock = _udp_socket()
            sock.bind((host, port))
            self._listen_sock = sock
        name = self._listen_sock.getsockname()
        return str(name[0]), int(name[1])

    def serve(self, now_ms: int) -> int:
        """Handle every datagram waiting on the `listen` socket, replying to its sender."""
        sock, handled = self._listen_sock, 0
        while sock is not None:
            try:
                data, addr = sock.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                continue
            handled += 1
            for frame in self.handle_mavlink(data, now_ms):
                try:
                    sock.sendto(frame, addr)
                except OSError:
                    self.send_errors += 1
        return handled

    def __enter__(self) -> SimDrone:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- settings -------------------------------------------------------------------------

    @property
    def charger_w(self) -> float:
        """The dock's charger, while the drone sits disarmed on the pad (0: none)."""
        return self._model.charger_w

    @charger_w.setter
    def charger_w(self, watts: float) -> None:
        self._model.charger_w = watts

    @property
    def fix_type(self) -> int:
        """GPS_RAW_INT's fix type (3D by default; tests may degrade it)."""
        return self._autopilot.fix_type

    @fix_type.setter
    def fix_type(self, fix_type: int) -> None:
        self._autopilot.fix_type = fix_type

    @property
    def item_offset(self) -> int:
        """The reported item number of waypoint 0 (simulators/autopilot.py)."""
        return self._autopilot.item_offset

    # --- what tests read ------------------------------------------------------------------

    @property
    def state(self) -> DroneState:
        return self._model.state

    @property
    def armed(self) -> bool:
        return self._model.armed

    @property
    def now_ms(self) -> int:
        return self._model.now_ms

    @property
    def time_boot_ms(self) -> int:
        return self._autopilot.time_boot_ms

    @property
    def reached(self) -> list[int]:
        """Mission items reached, in order (each also went out as MISSION_ITEM_REACHED)."""
        return self._model.reached

    @property
    def visits(self) -> list[WaypointVisit]:
        """Ground truth per waypoint of the current mission (`start_mission` clears it, as it
        does `reached`): closed visits, then any the drone is inside now."""
        return self._model.visits

    @property
    def track(self) -> list[TruthSample]:
        return self._model.track

    @property
    def flight_time_s(self) -> float:
        """Time from arming for take-off to touchdown, summed over flights."""
        return self._model.flight_time_s

    @property
    def battery_pct(self) -> int:
        return self._model.battery_pct

    @property
    def battery_mv(self) -> int:
        return self._model.battery_mv

    @property
    def power_w(self) -> float:
        return self._model.power_w

    @property
    def sent_messages(self) -> int:
        return self._autopilot.sent_messages

    @property
    def uploaded_mission(self) -> list[tuple[int, float, float, float, float]]:
        """The last mission uploaded over MAVLink: (command, lat, lon, z, param1) per item."""
        return self._autopilot.uploaded_mission

    @property
    def commands_answered(self) -> list[tuple[int, int]]:
        """(MAV_CMD, MAV_RESULT) of every COMMAND_LONG answered over MAVLink, oldest first."""
        return self._autopilot.commands_answered

    @property
    def mission_seq(self) -> int:
        return self._model.mission_seq

    @property
    def true_position(self) -> tuple[float, float, float, float]:
        """(lat, lon, altitude AMSL, height above the dock), without GNSS error."""
        return self._model.true_position
