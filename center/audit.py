"""An independent look at a center database: what is stored, does it verify, what is missing.

Re-verifies every stored record from its raw bytes against the registry, so a bug in the
ingest path or a damaged database shows up as records_verified < records_delivered. Used by
the demo's report and by tests; opens both databases read-only.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from contract.errors import RecordError
from contract.records import open_record
from provisioning.registry import Registry


@dataclass(frozen=True, slots=True)
class Audit:
    delivered: int
    verified: int
    duplicated: int
    refused: int
    refused_by_reason: Mapping[str, int]
    seqs: Mapping[str, frozenset[int]] = field(repr=False)

    def lost(self, created: Mapping[str, int]) -> int:
        """Records created on devices (sequence 1..last per device) absent at the center."""
        return sum(
            len(set(range(1, last + 1)) - self.seqs.get(dev, frozenset()))
            for dev, last in created.items()
        )


def audit(db: Path, registry_path: Path) -> Audit:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    reg = Registry(registry_path, readonly=True)
    try:
        seqs: dict[str, set[int]] = defaultdict(set)
        delivered = verified = 0
        keys = {}
        for device, seq, raw in con.execute("SELECT device, seq, raw FROM records"):
            delivered += 1
            seqs[device].add(seq)
            if device not in keys:
                keys[device] = reg.public_key(device)
            key = keys[device]
            if key is None:
                continue
            try:
                rec = open_record(raw, key)
            except RecordError:
                continue
            if rec.header.device == device and rec.header.seq == seq:
                verified += 1
        duplicated = con.execute(
            "SELECT coalesce(sum(n - 1), 0) FROM "
            "(SELECT count(*) AS n FROM records GROUP BY device, seq HAVING n > 1)"
        ).fetchone()[0]
        by_reason = dict(con.execute("SELECT reason, count(*) FROM refused GROUP BY reason"))
    finally:
        con.close()
        reg.close()
    return Audit(
        delivered=delivered,
        verified=verified,
        duplicated=int(duplicated),
        refused=sum(by_reason.values()),
        refused_by_reason=by_reason,
        seqs={d: frozenset(s) for d, s in seqs.items()},
    )
