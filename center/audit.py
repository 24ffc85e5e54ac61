"""An independent look at a center database: what is stored, does it verify, what is missing.

Re-verifies every stored record from its raw bytes against the registry, so a bug in the
ingest path or a damaged database shows up as records_verified < records_delivered. Used by
the demo's report and by tests; opens both databases read-only.

`duplicated` counts duplicates from content (center/duplicates.py): the same event stored
twice under different sequence numbers, and batch ids acknowledged again for other
records. The stores de-duplicate on (device, seq), their primary key, so rows per
(device, seq) could never show one. The count takes every record that verifies, in the
same single pass (no query per record), and the `batches` table.
"""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from center.duplicates import Example, Finder
from contract.errors import RecordError
from contract.records import open_record
from provisioning.registry import Registry


@dataclass(frozen=True, slots=True)
class Audit:
    delivered: int
    verified: int
    duplicated: int  # duplicates from content, every kind (center/duplicates.py)
    refused: int
    refused_by_reason: Mapping[str, int]
    seqs: Mapping[str, frozenset[int]] = field(repr=False)
    duplicates_by_kind: Mapping[str, int] = field(default_factory=dict)
    duplicate_examples: tuple[Example, ...] = ()
    batches_redelivered: int = 0  # the same batch delivered again: normal, not duplicated

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
        finder = Finder()
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
                finder.add(rec)
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master")}
        if "batches" in tables:  # written by a center that notes batches
            for row in con.execute(
                "SELECT device, batch, acks, reused FROM batches WHERE acks > 1"
            ):
                finder.add_batch(*row)
        by_reason = dict(con.execute("SELECT reason, count(*) FROM refused GROUP BY reason"))
    finally:
        con.close()
        reg.close()
    found = finder.result()
    return Audit(
        delivered=delivered,
        verified=verified,
        duplicated=found.total,
        refused=sum(by_reason.values()),
        refused_by_reason=by_reason,
        seqs={d: frozenset(s) for d, s in seqs.items()},
        duplicates_by_kind=found.counts(),
        duplicate_examples=found.examples,
        batches_redelivered=found.batches_redelivered,
    )
