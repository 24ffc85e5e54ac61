"""What `picket sim fleet` and its worker processes say to each other, as typed values.

The parent (simulators/fleetrun.py) writes each worker's `WorkerSpec` to a JSON file, then
talks to it in JSON lines (simulators/fleetworker.py): one command on the worker's stdin,
one answer on its stdout, in step (docs/fleet.md lists them). Both ends build and match on
the frozen dataclasses below, and `encode`, `decode_command` and `decode_answer` are the
only code that sees JSON. So the bytes on the pipe stay what the protocol says: one object
per line, "op" first (the message's `OP`), then every field by name in the order declared
here, a field that is None left out; tuples travel as JSON arrays.

Decoding trusts its peer as far as types go: the other end is our own process, started
from the same code. An op nobody knows is answered with `Failed` (op "error"), which the
parent raises as a `FleetError`. The finals (what every device created) are also what the
report reads (simulators/fleetreport.py), which is why `DeviceFinal` lives here and not in
the worker: the docks' entries (simulators/fleetdocks.py) take the same shape.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

__all__ = [
    "Advance",
    "Answer",
    "AskPositions",
    "AskQueued",
    "At",
    "Backlog",
    "Command",
    "DeviceCommand",
    "DeviceFinal",
    "Done",
    "Duplicate",
    "Failed",
    "Final",
    "Finish",
    "Gnss",
    "Kill",
    "Link",
    "MemberSpec",
    "Positions",
    "Ready",
    "Restart",
    "Spoof",
    "Stop",
    "WorkerSpec",
    "decode_answer",
    "decode_command",
    "encode",
]

# -- what a worker is started with ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MemberSpec:
    """One member's device as the parent deals it out (its index fixes its random stream)."""

    id: str
    index: int
    tier: str
    team: str
    line: str


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """The worker-<n>.json file: where things are, the shift, and the devices to run."""

    worker: int
    workdir: Path
    plan: Path
    fleet: Path
    seed: int
    start_ms: int
    end_ms: int
    broker_host: str
    broker_port: int
    devices: tuple[MemberSpec, ...]
    nmea_every: int = 1  # every n-th device speaks NMEA to its parser (0: none)
    events_per_hour: float = 0.0  # field events per member-hour (simulators/fleetevents.py)

    def to_json(self) -> str:
        body = dataclasses.asdict(self)
        for key in ("workdir", "plan", "fleet"):
            body[key] = str(body[key])
        return json.dumps(body)

    @classmethod
    def from_json(cls, text: str) -> WorkerSpec:
        raw = json.loads(text)
        return cls(
            worker=int(raw["worker"]),
            workdir=Path(raw["workdir"]),
            plan=Path(raw["plan"]),
            fleet=Path(raw["fleet"]),
            seed=int(raw["seed"]),
            start_ms=int(raw["start_ms"]),
            end_ms=int(raw["end_ms"]),
            broker_host=str(raw["broker_host"]),
            broker_port=int(raw["broker_port"]),
            devices=tuple(
                MemberSpec(str(m["id"]), int(m["index"]), str(m["tier"]), m["team"], m["line"])
                for m in raw["devices"]
            ),
            nmea_every=int(raw.get("nmea_every", 1)),
            events_per_hour=float(raw.get("events_per_hour", 0.0)),
        )


# -- commands (parent → worker) -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Advance:
    """Run every device's virtual seconds up to `to_ms`; answered with `At`."""

    OP: ClassVar[str] = "advance"
    to_ms: int


@dataclass(frozen=True, slots=True)
class AskPositions:
    """Where every device's person truly is; answered with `Positions`."""

    OP: ClassVar[str] = "positions"


@dataclass(frozen=True, slots=True)
class AskQueued:
    """How many records wait in the outboxes; answered with `Backlog`."""

    OP: ClassVar[str] = "queued"


@dataclass(frozen=True, slots=True)
class Finish:
    """The shift is over: close open visits; answered with `Done` (check-ins, queued)."""

    OP: ClassVar[str] = "finish"


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the uplinks and account for every device; answered with `Final`."""

    OP: ClassVar[str] = "stop"


@dataclass(frozen=True, slots=True)
class Kill:
    """kill -9 of these devices' daemons (a power cut); answered with `Done`."""

    OP: ClassVar[str] = "kill"
    devices: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Restart:
    """Boot these devices again, without GNSS for `cold_s`; answered with `Done`."""

    OP: ClassVar[str] = "restart"
    devices: tuple[str, ...]
    cold_s: int = 0


@dataclass(frozen=True, slots=True)
class Link:
    """Take these devices' connections down or bring them back; answered with `Done`."""

    OP: ClassVar[str] = "link"
    devices: tuple[str, ...]
    up: bool


@dataclass(frozen=True, slots=True)
class Gnss:
    """A receiver outage on or off, or its error scaled (None: unchanged); `Done`."""

    OP: ClassVar[str] = "gnss"
    devices: tuple[str, ...]
    outage: bool | None = None
    noise: float | None = None


@dataclass(frozen=True, slots=True)
class Spoof:
    """Push these devices' reported positions by an offset (0, 0: stop); `Done`."""

    OP: ClassVar[str] = "spoof"
    devices: tuple[str, ...]
    north_m: float
    east_m: float


@dataclass(frozen=True, slots=True)
class Duplicate:
    """Deliver these devices' recent records again; answered with `Done` (sent)."""

    OP: ClassVar[str] = "duplicate"
    devices: tuple[str, ...]


DeviceCommand = Kill | Restart | Link | Gnss | Spoof | Duplicate
Command = Advance | AskPositions | AskQueued | Finish | Stop | DeviceCommand


# -- answers (worker → parent) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The worker provisioned and booted its devices (its first line)."""

    OP: ClassVar[str] = "ready"
    devices: int


@dataclass(frozen=True, slots=True)
class At:
    OP: ClassVar[str] = "at"
    t_ms: int
    checkins: int
    queued: int
    walking: int  # members still on their line (overtime ends when none is)


@dataclass(frozen=True, slots=True)
class Done:
    OP: ClassVar[str] = "done"
    sent: int | None = None  # Duplicate: records delivered again
    checkins: int | None = None  # Finish
    queued: int | None = None  # Finish


@dataclass(frozen=True, slots=True)
class Positions:
    OP: ClassVar[str] = "positions"
    positions: Mapping[str, tuple[float, float]]  # device → true (lat, lon)


@dataclass(frozen=True, slots=True)
class Backlog:
    OP: ClassVar[str] = "queued"
    queued: int
    down: int  # devices off or without a link
    attachments: int = 0  # field events' attachments not yet complete at the center


@dataclass(frozen=True, slots=True)
class DeviceFinal:
    """What one device created over the run (the report audits the center against it)."""

    id: str
    tier: str  # "dock" for the district's docks
    last_seq: int
    checkins: int
    missed: int
    suspicions: int
    visits: tuple[tuple[str, int], ...]  # the walker's completed stays: (point, arrival ms)
    line: str
    nmea: bool
    nmea_errors: int
    events: tuple[tuple[int, tuple[str, ...]], ...] = ()  # reported: (seq, digests in hex)


@dataclass(frozen=True, slots=True)
class Final:
    """A worker's account at the end; the docks' entry has no latency file and no usage."""

    OP: ClassVar[str] = "final"
    devices: tuple[DeviceFinal, ...]
    latency_file: str | None = None  # JSON [[device, seq, wall ms stored], …]
    cpu_s: float = 0.0
    peak_rss_kib: int = 0


@dataclass(frozen=True, slots=True)
class Failed:
    OP: ClassVar[str] = "error"
    error: str


Answer = Ready | At | Done | Positions | Backlog | Final | Failed


# -- the JSON lines ------------------------------------------------------------------------


def encode(message: Command | Answer) -> str:
    """One line's JSON (without the newline): op first, then the fields that are not None."""
    body: dict[str, object] = {"op": message.OP}
    body.update((k, v) for k, v in dataclasses.asdict(message).items() if v is not None)
    return json.dumps(body)


Json = Mapping[str, Any]  # a parsed line: its values are whatever JSON made of them


def _ids(body: Json) -> tuple[str, ...]:
    return tuple(body.get("devices", ()))


_COMMANDS: dict[str, Callable[[Json], Command]] = {
    Advance.OP: lambda b: Advance(int(b["to_ms"])),
    AskPositions.OP: lambda b: AskPositions(),
    AskQueued.OP: lambda b: AskQueued(),
    Finish.OP: lambda b: Finish(),
    Stop.OP: lambda b: Stop(),
    Kill.OP: lambda b: Kill(_ids(b)),
    Restart.OP: lambda b: Restart(_ids(b), int(b.get("cold_s", 0))),
    Link.OP: lambda b: Link(_ids(b), bool(b["up"])),
    Gnss.OP: lambda b: Gnss(_ids(b), b.get("outage"), b.get("noise")),
    Spoof.OP: lambda b: Spoof(_ids(b), float(b["north_m"]), float(b["east_m"])),
    Duplicate.OP: lambda b: Duplicate(_ids(b)),
}


def decode_command(line: str | bytes) -> Command | Failed:
    """The command on one line, or the `Failed` answer for an op nobody knows."""
    body = json.loads(line)
    make = _COMMANDS.get(body["op"])
    return Failed(f"unknown op {body['op']!r}") if make is None else make(body)


def _device_final(d: Json) -> DeviceFinal:
    return DeviceFinal(
        id=d["id"],
        tier=d["tier"],
        last_seq=int(d["last_seq"]),
        checkins=d["checkins"],
        missed=d["missed"],
        suspicions=d["suspicions"],
        visits=tuple((str(p), int(at)) for p, at in d["visits"]),
        line=d["line"],
        nmea=bool(d["nmea"]),
        nmea_errors=d["nmea_errors"],
        events=tuple((int(seq), tuple(map(str, ds))) for seq, ds in d.get("events", ())),
    )


_ANSWERS: dict[str, Callable[[Json], Answer]] = {
    Ready.OP: lambda b: Ready(b["devices"]),
    At.OP: lambda b: At(b["t_ms"], b["checkins"], b["queued"], b["walking"]),
    Done.OP: lambda b: Done(b.get("sent"), b.get("checkins"), b.get("queued")),
    Positions.OP: lambda b: Positions({d: (p[0], p[1]) for d, p in b["positions"].items()}),
    Backlog.OP: lambda b: Backlog(b["queued"], b["down"], int(b.get("attachments", 0))),
    Final.OP: lambda b: Final(
        tuple(_device_final(d) for d in b["devices"]),
        b["latency_file"],
        b["cpu_s"],
        b["peak_rss_kib"],
    ),
    Failed.OP: lambda b: Failed(str(b.get("error"))),
}


def decode_answer(line: str | bytes) -> Answer:
    body = json.loads(line)
    return _ANSWERS[body["op"]](body)
