"""Fleet scenarios: a TOML timeline of faults, parsed and checked before anything runs.

A scenario is data, not code, so integrators write them without reading Picket and CI
keeps them next to the tests (docs/scenarios.md). Every problem is reported with the fault
it is in (`fault 3 (dead-spot): …`), and nothing starts until the whole file is valid.
Which devices a fault hits is drawn here, from the seed, so a scenario replays exactly.

    [[fault]]
    kind = "broker-outage"   # see KINDS
    at = "10m"               # virtual time from the start of the run: 90s, 10m, 1h30m
    for = "5m"               # how long it lasts (kinds with a duration)
    devices = 0.05           # share of the fleet (0-1], a list of ids, or a tier name
    zones = ["Z001"]         # zone ids of the plan (dead-spot, gnss-outage, urban-canyon)
    noise = 4.0              # urban-canyon: receiver error × this
    offset_m = 800           # spoof: how far the reported position is pushed
    clock_reset = true       # power-cut: boots at 1970 with a GNSS cold start (90 s)
"""

from __future__ import annotations

import random
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from simulators.simerror import SimulatorError

KINDS = {
    # kind: (needs `for`, takes devices, takes zones)
    "broker-outage": (True, False, False),
    "broker-kill": (False, False, False),
    "center-restart": (True, False, False),
    "dead-spot": (True, False, True),
    "gnss-outage": (True, False, True),
    "urban-canyon": (True, False, True),
    "spoof": (True, True, False),
    "power-cut": (True, True, False),
    "duplicates": (False, True, False),
}
COLD_START_S = 90
_DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


class ScenarioError(SimulatorError, ValueError):
    """The scenario file is not a valid timeline of faults for this fleet and plan."""


@dataclass(frozen=True, slots=True)
class Fault:
    kind: str
    at_ms: int
    for_ms: int = 0
    devices: tuple[str, ...] = ()
    zones: tuple[str, ...] = ()
    noise: float = 4.0
    offset_m: float = 800.0
    clock_reset: bool = False

    @property
    def end_ms(self) -> int:
        return self.at_ms + self.for_ms


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    faults: tuple[Fault, ...]

    def kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for f in self.faults:
            out[f.kind] = out.get(f.kind, 0) + 1
        return out


def duration_ms(text: object, where: str) -> int:
    if isinstance(text, int) and not isinstance(text, bool) and text >= 0:
        return text * 1000  # bare numbers are seconds
    if not isinstance(text, str):
        raise ScenarioError(f"{where}: a duration is text like 90s, 10m or 1h30m")
    m = _DURATION.fullmatch(text.strip())
    if not text.strip() or m is None:
        raise ScenarioError(f"{where}: {text!r} is not a duration like 90s, 10m or 1h30m")
    h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((h * 60 + mi) * 60 + s) * 1000


def _devices(
    value: object, where: str, fleet: Sequence[tuple[str, str]], rng: random.Random
) -> tuple[str, ...]:
    """`fleet`: (id, tier) of every device in the run."""
    ids = [d for d, _ in fleet]
    if isinstance(value, float | int) and not isinstance(value, bool):
        if not 0 < value <= 1:
            raise ScenarioError(f"{where}: 'devices' as a share must be in (0, 1], not {value}")
        return tuple(sorted(rng.sample(ids, max(1, round(value * len(ids))))))
    if isinstance(value, str):
        tier = [d for d, t in fleet if t == value]
        if not tier:
            raise ScenarioError(f"{where}: no device of tier {value!r} in this run")
        return tuple(tier)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = sorted(set(value) - set(ids))
        if unknown:
            raise ScenarioError(f"{where}: devices not in this run: {', '.join(unknown[:5])}")
        return tuple(value)
    raise ScenarioError(f"{where}: 'devices' is a share (0-1], a tier name or a list of ids")


def parse_scenario(
    text: str,
    *,
    name: str,
    fleet: Sequence[tuple[str, str]],
    zones: Sequence[str],
    seed: int,
    run_ms: int,
) -> Scenario:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{name}: not valid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"fault", "name"})
    if unknown:
        raise ScenarioError(f"{name}: unknown key(s) {', '.join(unknown)} (faults go in [[fault]])")
    entries = doc.get("fault", [])
    if not isinstance(entries, list):
        raise ScenarioError(f"{name}: 'fault' must be an array of tables ([[fault]])")
    rng = random.Random(seed * 7919 + 17)
    known_zones = set(zones)
    faults = []
    for i, entry in enumerate(entries, start=1):
        if not isinstance(entry, dict):
            raise ScenarioError(f"{name}: fault {i} must be a table")
        where = f"{name}: fault {i}"
        faults.append(_fault(entry, where, fleet=fleet, zones=known_zones, rng=rng, run_ms=run_ms))
    return Scenario(str(doc.get("name", name)), tuple(sorted(faults, key=lambda f: f.at_ms)))


def _fault(
    entry: Mapping[str, object],
    where: str,
    *,
    fleet: Sequence[tuple[str, str]],
    zones: set[str],
    rng: random.Random,
    run_ms: int,
) -> Fault:
    kind = entry.get("kind")
    if kind not in KINDS:
        raise ScenarioError(f"{where}: 'kind' must be one of {', '.join(KINDS)}, not {kind!r}")
    assert isinstance(kind, str)
    where = f"{where} ({kind})"
    timed, by_device, by_zone = KINDS[kind]
    allowed = {"kind", "at"} | ({"for"} if timed else set())
    allowed |= {"devices"} if by_device else set()
    allowed |= {"zones"} if by_zone else set()
    allowed |= {"noise"} if kind == "urban-canyon" else set()
    allowed |= {"offset_m"} if kind == "spoof" else set()
    allowed |= {"clock_reset"} if kind == "power-cut" else set()
    extra = sorted(set(entry) - allowed)
    if extra:
        raise ScenarioError(f"{where}: unknown key(s) {', '.join(extra)}")
    at = duration_ms(entry.get("at", "0s"), f"{where}: 'at'")
    if at >= run_ms:
        raise ScenarioError(f"{where}: 'at' {at // 1000} s is not inside the run")
    span = duration_ms(entry["for"], f"{where}: 'for'") if timed and "for" in entry else 0
    if timed and span <= 0:
        raise ScenarioError(f"{where}: needs a positive 'for'")
    devices = _devices(entry.get("devices", 0.05), where, fleet, rng) if by_device else ()
    zone_ids: tuple[str, ...] = ()
    if by_zone:
        raw = entry.get("zones")
        if not isinstance(raw, list) or not raw or not all(isinstance(z, str) for z in raw):
            raise ScenarioError(f"{where}: 'zones' must be a non-empty list of zone ids")
        missing = sorted(set(raw) - zones)
        if missing:
            raise ScenarioError(f"{where}: zones not in the plan: {', '.join(missing[:5])}")
        zone_ids = tuple(raw)
    noise = entry.get("noise", 4.0)
    if not isinstance(noise, int | float) or isinstance(noise, bool) or not 1 <= noise <= 50:
        raise ScenarioError(f"{where}: 'noise' must be a number from 1 to 50")
    offset = entry.get("offset_m", 800.0)
    if not isinstance(offset, int | float) or isinstance(offset, bool) or not 0 < offset < 1e6:
        raise ScenarioError(f"{where}: 'offset_m' must be a distance in metres above 0")
    reset = entry.get("clock_reset", False)
    if not isinstance(reset, bool):
        raise ScenarioError(f"{where}: 'clock_reset' must be true or false")
    return Fault(kind, at, span, devices, zone_ids, float(noise), float(offset), reset)


def load_scenario(
    path: Path, *, fleet: Sequence[tuple[str, str]], zones: Sequence[str], seed: int, run_ms: int
) -> Scenario:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ScenarioError(f"cannot read scenario {path}: {exc}") from exc
    return parse_scenario(text, name=str(path), fleet=fleet, zones=zones, seed=seed, run_ms=run_ms)
