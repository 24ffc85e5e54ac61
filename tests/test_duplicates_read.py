"""Duplicates counted from content, where people read them: `picket center status` run as a
process, end to end through a real Mosquitto and the center service, PostgreSQL, and the
demo's report. The records and copies are made as in tests/test_duplicates.py, whose
devices, center and cases this module shares.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from test_center_pg import Target, target
from test_duplicates import (
    _HEALTH,
    CASES,
    NO_DUPLICATES,
    T0,
    Center,
    Device,
    Track,
    center,
    header,
    only,
)

from agent.config import load_config
from agent.store.outbox import Outbox, signed
from agent.uplink.mqtt import BrokerAddress, Uplink, default_core
from center.audit import audit
from center.duplicates import Kind
from center.ingest import Ingest
from center.service import KeyCache
from center.store import CenterStore
from contract.fix import TimeSource
from contract.protocol import Batch, records_topic
from contract.records import RecordType
from provisioning.device import registry_path
from provisioning.registry import Registry
from simulators.broker import Mosquitto
from simulators.demo import DemoOptions, run_demo
from simulators.progress import QUIET
from tests.peers import running_center, wait_for

__all__ = ["center", "target"]  # fixtures, imported for pytest to find

REPO = Path(__file__).resolve().parents[1]


def status(db: str | Path, *, json_out: bool = True) -> Any:
    """`picket center status` as a person runs it: a process of its own."""
    args = [sys.executable, "-m", "picket", "center", "status", "--db", str(db)]
    done = subprocess.run(
        [*args, "--json"] if json_out else args,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1]) if json_out else done.stdout


# --- what a person reads: `picket center status` --------------------------------------------------


def _every_kind(center: Center, *, copies: bool) -> None:
    """One device per kind: its first record and a genuine other; with `copies`, each
    device restarts and records its first event again (and one batch id is used again)."""
    for i, (kind, case) in enumerate(CASES.items()):
        name = f"k{i:02d}-{kind.value}"
        dev = center.devices.get(name) or center.device(name)
        if not copies:
            center.send(
                name, [dev.record(case.rtype, *case.first), dev.record(case.rtype, *case.other)]
            )
        else:
            dev.restart()
            center.send(name, [dev.record(case.rtype, *case.copy)])
    fixes = Track().stay()
    dev = center.devices.get("walker") or center.device("walker")
    if copies:
        dev.restart()
    center.send("walker", dev.checkins(fixes), batch=7 if copies else 5)
    if copies:
        center.send("walker", [dev.record(RecordType.HEALTH, _HEALTH, T0)], batch=5)


def test_picket_center_status_names_every_kind_and_the_fix(center: Center) -> None:
    _every_kind(center, copies=False)
    clean = status(center.db)
    assert clean["totals"]["records"] == 2 * len(CASES) + 1
    assert clean["duplicates"]["total"] == 0
    assert clean["duplicates"]["by_kind"] == NO_DUPLICATES
    assert "duplicates:" not in status(center.db, json_out=False)
    _every_kind(center, copies=True)
    found = status(center.db)
    assert found["duplicates"]["by_kind"] == dict.fromkeys(NO_DUPLICATES, 1)
    assert found["duplicates"]["total"] == len(Kind)
    assert {"kind": "batch", "device": "walker", "batch": 5} in found["duplicates"]["examples"]
    assert {"kind": "checkin", "device": "walker", "seqs": [1, 2]} in found["duplicates"][
        "examples"
    ]
    text = status(center.db, json_out=False)
    lines = text.splitlines()
    said = next(line for line in lines if line.startswith("duplicates:"))
    assert said.startswith(f"duplicates: {len(Kind)} (check-in 1, missed point 1, ")
    assert "batch acknowledged twice 1" in said
    assert lines[lines.index(said) + 1].startswith("fix: ")
    # the audit the reports print agrees
    assert center.audit().duplicates_by_kind == dict.fromkeys(NO_DUPLICATES, 1)


# --- end to end: a device, a real broker, the center service -------------------------------------


@pytest.mark.integration
async def test_a_stay_sent_again_after_a_crash_reaches_the_status_through_mqtt(
    tmp_path: Path, broker: Mosquitto
) -> None:
    dev = Device("h0001", tmp_path)
    registry = tmp_path / "registry.db"
    reg = Registry(registry)
    reg.add("h0001", dev.key.public_key().public_bytes_raw(), 0)
    reg.close()
    db = tmp_path / "center.db"
    fixes = Track().stay()
    try:
        async with running_center(tmp_path, registry, broker):
            for run, feed in (("first run", fixes), ("after the crash", fixes[20:])):
                if run != "first run":
                    dev.restart()  # kill -9: the engine forgets, the outbox stays
                # the agent's own core: batch ids from the clock, so a restart begins anew
                address = BrokerAddress(broker.host, broker.port)
                uplink = Uplink(dev.outbox, address, core=default_core())
                dev.agent.on_stored = uplink.on_stored
                task = asyncio.create_task(uplink.run(), name="uplink")
                try:
                    assert len(dev.checkins(feed)) == 1
                    await wait_for(lambda: dev.outbox.depth() == 0, 20, "the acknowledgement")
                finally:
                    uplink.stop()
                    await asyncio.wait_for(task, timeout=10)
                if run == "first run":
                    clean = await asyncio.to_thread(status, db)
                    assert clean["totals"]["records"] == 1
                    assert clean["duplicates"]["by_kind"] == NO_DUPLICATES
        found = await asyncio.to_thread(status, db)
        assert found["totals"]["records"] == 2
        assert found["duplicates"]["by_kind"] == only(Kind.CHECKIN)
        assert found["duplicates"]["examples"] == [
            {"kind": "checkin", "device": "h0001", "seqs": [1, 2]}
        ]
        assert audit(db, registry).duplicates_by_kind == only(Kind.CHECKIN)
    finally:
        dev.close()


# --- PostgreSQL: the same rows, the same count ---------------------------------------------------


def test_postgresql_counts_what_sqlite_counts(target: Target, tmp_path: Path) -> None:
    dev = Device("h0001", tmp_path)
    ingest = Ingest(target.open(), lambda _d: dev.key.public_key())
    try:

        def send(raws: Sequence[bytes], batch: int) -> None:
            payload = Batch(batch, tuple(raws)).encode()
            ack = ingest.handle(records_topic("h0001"), payload, T0)
            assert ack is not None and len(ack.stored) == len(raws)

        fixes = Track().stay()
        send(dev.checkins(fixes), 5)
        clean = status(target.db)
        assert clean["totals"]["records"] == 1
        assert clean["duplicates"]["by_kind"] == NO_DUPLICATES
        dev.restart()
        again = dev.checkins(fixes)
        send(again, 6)
        send(again, 6)  # delivered twice: normal
        send([dev.record(RecordType.HEALTH, _HEALTH, T0)], 5)  # batch 5 again, other records
        found = status(target.db)
        assert found["duplicates"]["by_kind"] == {**only(Kind.CHECKIN), "batch": 1}
        assert found["duplicates"]["batches_redelivered"] == 1
        assert found["duplicates"]["total"] == 2
        assert target.query("SELECT device, batch, acks, reused FROM batches ORDER BY batch") == [
            ("h0001", 5, 2, 1),
            ("h0001", 6, 2, 0),
        ]
    finally:
        ingest.store.close()
        dev.close()


# --- the demo's report counts them ---------------------------------------------------------------


@pytest.mark.integration
async def test_the_demo_reports_no_duplicates_and_counts_one_made_after_it(
    tmp_path: Path,
) -> None:
    workdir = tmp_path / "demo"
    report = await run_demo(DemoOptions(devices=2, minutes=8, seed=3, workdir=workdir), QUIET)
    assert report["checkins_recorded"] >= 1
    assert report["records_duplicated"] == 0
    assert report["duplicates_by_kind"] == NO_DUPLICATES
    # one of its devices restarts and records a stay again, as a replay would
    db, registry = workdir / "center.db", registry_path(workdir / "fleet")
    con = sqlite3.connect(db)
    device, raw = con.execute(
        "SELECT device, raw FROM records WHERE type = ? ORDER BY device, seq LIMIT 1",
        (int(RecordType.CHECKIN),),
    ).fetchone()
    con.close()
    payload = header(raw)
    cfg = load_config(workdir / "devices" / device / "config.toml")
    box = Outbox(cfg.outbox_path, device)
    box.begin_boot()
    body = {k: v for k, v in payload.items() if k >= 16}
    make = signed(cfg.load_key(), device, RecordType.CHECKIN, time_ms=payload[6],
                  source=TimeSource(payload[7]), body=body)  # fmt: skip
    copy = box.append(make).raw
    box.close()
    ingest = Ingest(CenterStore(db), KeyCache(registry))
    ingest.handle(records_topic(device), Batch(1, (copy,)).encode(), T0)
    ingest.store.close()
    found = audit(db, registry)
    assert found.duplicated == 1
    assert found.duplicates_by_kind == only(Kind.CHECKIN)
