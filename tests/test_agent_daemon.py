"""`picket agent run` as a process on a device: GNSS in, check-ins out to a real center.

The receiver is an NMEA log replayed through the file source (as fast as it comes), so a
shift of walking takes seconds; dwell is measured in GNSS time, not wall time.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import sqlite3
import sys
from pathlib import Path

import pytest
from peers import TlsFleet, running_center, wait_for

from agent.checkin.plan import Line, Plan, Point
from agent.checkin.planfile import plan_to_geojson
from contract.fix import TimeSource
from simulators.walker import Walker

pytestmark = pytest.mark.integration

MARCH = 1_772_323_200_000  # 2026-03-01T00:00Z
JANUARY = 1_768_435_200_000  # 2026-01-15T00:00Z: after not_before, before March
PLAN = Plan(
    version=3,
    points=(
        Point("P1", 29.2650, 106.2550, 25.0, 20.0),
        Point("P2", 29.2677, 106.2550, 25.0, 20.0),  # 300 m north
    ),
    lines=(Line("L1", ("P1", "P2")),),
)


def walk(path: Path, start_ms: int, minutes: int, seed: int) -> int:
    """Write a walker's NMEA to `path`; returns how many visits it made."""
    w = Walker(
        "h0001", PLAN, PLAN.lines[0], random.Random(seed), start_ms, start_ms + minutes * 60_000
    )
    with path.open("wb") as f:
        f.write(b"# simulated receiver, 1 Hz\n")
        t = start_ms
        while not w.done:
            f.write(w.tick(t))
            t += 1000
    return len(w.visits)


def center_rows(db: Path) -> list[tuple[int, int, int, int]]:
    """The check-ins at the center (health records may come and go with timing)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute(
            "SELECT seq, boot, time_ms, time_source FROM records WHERE type = 1 ORDER BY seq"
        ).fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


async def run_agent(config: Path, expect_records: int, db: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "picket", "-v", "agent", "run", "--config", str(config),
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await wait_for(
            lambda: len(center_rows(db)) >= expect_records, 60, "check-ins at the center"
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=20)
    assert proc.returncode == 0, err.decode()
    assert "Traceback" not in err.decode()
    return err.decode()


async def test_agent_checks_in_from_a_receiver_and_time_never_goes_back(
    tmp_path: Path, tls_fleet: TlsFleet
) -> None:
    files = tls_fleet.provision("h0001")  # over TLS, through the fleet's broker
    (files.directory / "plan.geojson").write_text(json.dumps(plan_to_geojson(PLAN)))
    march_log = tmp_path / "march.nmea"
    visits = walk(march_log, MARCH, 12, seed=1)
    assert visits >= 2
    base = files.config.read_text()
    files.config.write_text(
        base.replace('outbox = "outbox.db"', 'outbox = "outbox.db"\nplan = "plan.geojson"')
        + f'\n[gnss]\nsource = "file://{march_log}"\n'
    )
    db = tmp_path / "center.db"
    center = tls_fleet.center_context()
    async with running_center(tmp_path, tls_fleet.registry, tls_fleet.broker, tls=center):
        log = await run_agent(files.config, visits, db)
        assert "GNSS finished" in log
        first = center_rows(db)
        assert len(first) == visits
        assert all(boot == 1 and src == TimeSource.GNSS for _, boot, _, src in first)
        con = sqlite3.connect(files.directory / "outbox.db")
        persisted = con.execute("SELECT v FROM meta WHERE k = 'time_ms'").fetchone()[0]
        con.close()
        assert persisted >= max(t for _, _, t, _ in first)

        # Reboot with a receiver that says January: after not_before, so not a rollover,
        # but before the time already known. The agent does not go back in time.
        january_log = tmp_path / "january.nmea"
        more = walk(january_log, JANUARY, 12, seed=2)
        files.config.write_text(files.config.read_text().replace(str(march_log), str(january_log)))
        await run_agent(files.config, visits + more, db)
    rows = center_rows(db)
    seqs = [seq for seq, *_ in rows]
    assert len(seqs) == visits + more and len(set(seqs)) == len(seqs)
    second = [r for r in rows if r[1] == 2]
    assert len(second) == more
    assert all(src == TimeSource.PERSISTED for *_, src in second)
    assert min(t for _, _, t, _ in second) >= persisted


def test_agent_refuses_a_bad_config_with_exit_2(tmp_path: Path) -> None:
    import subprocess

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        'device = "h0001"\nkey = "k"\n[broker]\nhost = "x"\nport = 1\n[gnss]\nsource = "usb://x"\n'
    )
    r = subprocess.run(
        [sys.executable, "-m", "picket", "agent", "run", "--config", str(cfg)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert r.returncode == 2
    assert "unknown scheme 'usb'" in r.stderr
