"""Record signing and verification against raw Ed25519, and record sizes per type.

Run: .venv/bin/python bench/records.py [--devices N] [--minutes M] [--rounds R]

Rates are printed beside the raw primitive's, measured in alternating rounds on the same
bytes (the best round of each counts), because absolute times on shared machines are
noisy; the goal is a record build+sign rate of at least 80 % of raw Ed25519 signing.
Sizes: one realistic record of every type, then every record of a simulated shift (all
devices walking their lines), as a table per type in bytes. The LoRa limit is for check-ins.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.checkin.device import DeviceAgent, checkin_body, missed_body, suspicion_body
from agent.checkin.engine import CheckinEvent, MissedEvent
from agent.checkin.motion import SuspicionEvent, SuspicionKind
from agent.dock.outputs import (
    DockState,
    MissionOutcome,
    MissionSummary,
    StateChange,
    dock_state_body,
    mission_body,
)
from agent.store.outbox import Outbox
from contract.commands import Priority
from contract.cose import PROTECTED_EDDSA, decode_sign1, sig_structure
from contract.fix import Fix, Quality, TimeSource
from contract.records import (
    TYPE_NAMES,
    AlertKind,
    ChainPosition,
    Eviction,
    Outcome,
    RecordType,
    Verdict,
    alert_body,
    build,
    dropped_body,
    health_body,
    open_record,
    receipt_body,
    rollcall_body,
)
from simulators.demo import SHIFT_START_MS
from simulators.district import generate_district
from simulators.walker import Walker

LORA_LIMIT = 160


def best_rates(fns: Mapping[str, Callable[[], object]], n: int, rounds: int) -> dict[str, float]:
    """Calls per second of each function: the best of `rounds` alternating runs of n calls."""
    best = dict.fromkeys(fns, 0.0)
    for _ in range(rounds):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(n):
                fn()
            best[name] = max(best[name], n / (time.perf_counter() - t0))
    return best


def realistic_records(key: Ed25519PrivateKey) -> list[tuple[RecordType, bytes]]:
    """One record of every type with the district's identifiers and plausible values."""
    plan = generate_district(7)
    point = plan.points[17]
    t = SHIFT_START_MS + 3 * 3_600_000
    fix = Fix(
        time_ms=t,
        lat=point.lat + 0.0000213,
        lon=point.lon - 0.0000472,
        accuracy_m=3.5,
        hdop=0.9,
        satellites=14,
        speed_mps=0.3,
    )
    checkin = CheckinEvent(
        point=point,
        arrival_ms=t - 95_000,
        departure_ms=t,
        best_fix=fix,
        fixes_inside=95,
        verdict=Verdict.VISITED,
        max_speed_mps=1.4,
    )
    missed = MissedEvent(
        point=plan.points[3],
        line=plan.lines[0].id,
        order=4,
        window_start_ms=t - 1_800_000,
        window_end_ms=t,
        time_ms=t + 300_000,
    )
    suspicion = SuspicionEvent(
        kind=SuspicionKind.JUMP,
        fix=fix,
        time_ms=t,
        detail="implied speed 1400 m/s",  # as the engine words it
    )
    bodies: list[tuple[RecordType, Mapping[int, object]]] = [
        (RecordType.CHECKIN, checkin_body(checkin, plan.version)),
        (RecordType.MISSED, missed_body(missed, plan.version)),
        (RecordType.SUSPICION, suspicion_body(suspicion)),
        (
            RecordType.HEALTH,
            health_body(
                depth=3,
                oldest_unsent_s=42,
                clock_source=TimeSource.GNSS,
                fix_quality=Quality.GPS,
                satellites=14,
                battery_pct=87,
                battery_mv=3987,
                rssi_dbm=-97,
                uptime_s=10_800,
            ),
        ),
        (RecordType.ROLLCALL, rollcall_body(bytes.fromhex("9f3c21d07a4be815"), fix)),
        (RecordType.ALERT, alert_body(AlertKind.SOS, fix, battery_pct=64)),
        (RecordType.RECEIPT, receipt_body(1207, 2, Outcome.REFUSED, "plan version 11 < 12")),
        (
            RecordType.DROPPED,
            dropped_body(
                Eviction(
                    count=120,
                    first_seq=1001,
                    last_seq=1120,
                    bytes=18_240,
                    types=(RecordType.CHECKIN, RecordType.HEALTH),
                )
            ),
        ),
        (
            RecordType.DOCK_STATE,
            dock_state_body(
                StateChange(
                    t,
                    DockState.RETURNING,
                    DockState.ON_MISSION,
                    "aborted by command 1207",
                    41,
                    "AL01",
                )
            ),
        ),
        (
            RecordType.MISSION,
            mission_body(
                MissionSummary(
                    t,
                    "AL01",
                    1207,
                    Priority.FIRE,
                    MissionOutcome.ABORTED,
                    ("A01", "A02"),
                    ("A03", "A04"),
                    611,
                    37,
                )
            ),
        ),
    ]
    chain = ChainPosition(boot=3, seq=1234, prev=bytes(range(16)))
    return [
        (
            rtype,
            build(
                key,
                device="h0001",
                chain=chain,
                rtype=rtype,
                time_ms=t,
                time_source=TimeSource.GNSS,
                body=body,
            ),
        )
        for rtype, body in bodies
    ]


def shift_records(
    key: Ed25519PrivateKey, devices: int, minutes: float
) -> list[tuple[RecordType, bytes]]:
    """Every record the devices of a simulated shift create (check-ins, missed, suspicions)."""
    plan = generate_district(7)
    end = SHIFT_START_MS + int(minutes * 60_000)
    out: list[tuple[RecordType, bytes]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(devices):
            dev = f"h{i + 1:04d}"
            box = Outbox(Path(tmp) / f"{dev}.db", dev)
            box.begin_boot()
            agent = DeviceAgent(dev, key, plan, box)
            walker = Walker(
                dev, plan, plan.lines[i % len(plan.lines)], random.Random(i), SHIFT_START_MS, end
            )
            t = SHIFT_START_MS
            while not walker.done:
                agent.on_nmea(walker.tick(t))
                t += 1000
            agent.finish()
            out.extend((s.type, s.raw) for s in box.pending(100_000))
            box.close()
    return out


def size_table(rows: list[tuple[str, list[int]]]) -> str:
    lines = [
        "| type | count | min B | median B | max B |",
        "|---|--:|--:|--:|--:|",
    ]
    for name, sizes in rows:
        if not sizes:
            lines.append(f"| {name} | 0 | | | |")
            continue
        med = statistics.median(sizes)
        lines.append(f"| {name} | {len(sizes)} | {min(sizes)} | {med:.0f} | {max(sizes)} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=60)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("-n", type=int, default=4000, help="calls per round")
    args = ap.parse_args()
    key = Ed25519PrivateKey.generate()
    pub = key.public_key()

    samples = realistic_records(key)
    rtype, checkin = samples[0]
    body = dict(open_record(checkin, pub).body)
    pos = ChainPosition(boot=3, seq=1234, prev=bytes(16))

    def make() -> bytes:
        return build(
            key,
            device="h0001",
            chain=pos,
            rtype=rtype,
            time_ms=SHIFT_START_MS,
            time_source=TimeSource.GNSS,
            body=body,
        )

    tbs = sig_structure(PROTECTED_EDDSA, decode_sign1(checkin).payload)  # what build signs
    sig = key.sign(tbs)
    rates = best_rates(
        {
            "raw sign": lambda: key.sign(tbs),
            "record build+sign": make,
            "raw verify": lambda: pub.verify(sig, tbs),
            "record verify+decode": lambda: open_record(checkin, pub),
        },
        args.n,
        args.rounds,
    )
    sign_ratio = rates["record build+sign"] / rates["raw sign"]
    verify_ratio = rates["record verify+decode"] / rates["raw verify"]
    print(f"rates: best of {args.rounds} alternating rounds of {args.n} calls each")
    print(
        f"sign:   raw Ed25519 {rates['raw sign']:9.0f}/s   "
        f"record build+sign {rates['record build+sign']:9.0f}/s   "
        f"ratio {sign_ratio:.2f} (goal >= 0.80)"
    )
    print(
        f"verify: raw Ed25519 {rates['raw verify']:9.0f}/s   "
        f"record verify+decode {rates['record verify+decode']:9.0f}/s   "
        f"ratio {verify_ratio:.2f}"
    )

    print("\nOne realistic record of each type (device h0001, sequence 1234):\n")
    print(size_table([(TYPE_NAMES[t], [len(raw)]) for t, raw in samples]))

    shift = shift_records(key, args.devices, args.minutes)
    by_type: dict[RecordType, list[int]] = defaultdict(list)
    for t, raw in shift:
        by_type[t].append(len(raw))
    print(
        f"\nEvery record of a simulated shift ({args.devices} devices, {args.minutes:g} minutes):\n"
    )
    print(size_table([(TYPE_NAMES[t], sorted(by_type[t])) for t in sorted(by_type)]))
    checkins = by_type.get(RecordType.CHECKIN, [])
    worst = max(checkins, default=0)
    verdict = "within" if worst <= LORA_LIMIT else "OVER"
    print(f"\ncheck-ins: largest {worst} B, {verdict} the {LORA_LIMIT} B LoRa limit")


if __name__ == "__main__":
    main()
