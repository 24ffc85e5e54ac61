"""The writer the kill -9 test kills: a real process storing signed check-ins in a loop.

Run: python tests/outbox_writer.py OUTBOX KEY_HEX
Prints "opening", opens the outbox as the agent does (`Outbox`, then `begin_boot`),
prints "ready BOOT",
then appends check-ins signed with the real Ed25519 key and prints each sequence number
only after `append` returned. One os.write per line (a pipe never splits writes this
small), nothing buffered: a printed number is a record the outbox promised to keep.
Imports only what it needs, so that hundreds of starts stay cheap.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Built, Outbox
from contract.fix import TimeSource
from contract.records import ChainPosition, RecordType, build

DEVICE = "h0001"
T0 = 1_772_323_200_000


def main() -> None:
    path, key_hex = Path(sys.argv[1]), sys.argv[2]
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key_hex))
    os.write(1, b"opening\n")
    box = Outbox(path, DEVICE)
    boot = box.begin_boot()
    os.write(1, f"ready {boot}\n".encode())

    def make(pos: ChainPosition) -> Built:
        time_ms = T0 + pos.seq * 1000
        raw = build(
            key,
            device=DEVICE,
            chain=pos,
            rtype=RecordType.CHECKIN,
            time_ms=time_ms,
            time_source=TimeSource.GNSS,
            body={16: f"P{pos.seq % 1000:03d}", 17: 1, 18: 95, 22: 12, 23: 0},
        )
        return Built(RecordType.CHECKIN, time_ms, raw)

    while True:
        stored = box.append(make)
        os.write(1, b"%d\n" % stored.seq)


if __name__ == "__main__":
    main()
