"""Time on air of every record type over LoRa, and how many fit an hour's duty cycle.

Run: .venv/bin/python bench/lora_toa.py [--duty 0.01] [--bare]

The records are real: one realistic signed record of each type, built by the same
builders and identifiers as bench/records.py (device h0001, sequence 1234; the sizes of
docs/records.md), plus the largest check-in the district allows (160 B). Each goes out as
one packet: the record after the one-byte kind (firmware_bridge/lora.py), or bare with
--bare. Times are firmware_bridge.lora.time_on_air_ms (rounded up to the millisecond) at
BW 125 kHz, CR 4/5, an 8-symbol preamble, explicit header and CRC; "per hour" is how many
such packets one radio may send in an hour under the duty cycle (1 % by default: 36 s).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.records import realistic_records
from contract.records import TYPE_NAMES, RecordType
from firmware_bridge.lora import (
    DutyCycle,
    low_data_rate_needed,
    record_packet,
    time_on_air_ms,
)

SFS = (7, 9, 12)
BW_HZ = 125_000
CR = 5
WORST_CHECKIN = 160  # docs/records.md: a check-in is at most 160 bytes


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duty", type=float, default=0.01, help="duty cycle fraction")
    ap.add_argument("--bare", action="store_true", help="no kind byte before the record")
    args = ap.parse_args()
    budget_ms = DutyCycle(args.duty).limit_ms
    rows: list[tuple[str, int]] = [
        (TYPE_NAMES[t], len(raw)) for t, raw in realistic_records(Ed25519PrivateKey.generate())
    ]
    rows.insert(1, (f"{TYPE_NAMES[RecordType.CHECKIN]} (largest)", WORST_CHECKIN))
    extra = 0 if args.bare else len(record_packet(b"\xd2")) - 1

    print(
        f"LoRa time on air per record (BW {BW_HZ // 1000} kHz, CR 4/{CR}, preamble 8, "
        f"explicit header, CRC; packet = {'record' if args.bare else 'kind byte + record'}; "
        f"ms rounded up)"
    )
    print(f"per hour: packets one radio may send under a {args.duty:.0%} duty cycle "
          f"({budget_ms / 1000:g} s of air per hour)\n")  # fmt: skip
    head = "| type | record B | packet B |"
    rule = "|---|--:|--:|"
    for sf in SFS:
        ldro = " LDRO" if low_data_rate_needed(sf, BW_HZ) else ""
        head += f" SF{sf}{ldro} ms | SF{sf} per hour |"
        rule += "--:|--:|"
    print(head)
    print(rule)
    for name, size in rows:
        packet = size + extra
        line = f"| {name} | {size} | {packet} |"
        for sf in SFS:
            toa = time_on_air_ms(packet, sf, BW_HZ, CR)
            line += f" {toa} | {budget_ms // toa} |"
        print(line)


if __name__ == "__main__":
    main()
