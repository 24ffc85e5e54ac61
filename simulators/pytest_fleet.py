"""A pytest plugin: a test declares a fleet scenario and asserts on the run's report.

    # installed with Picket (entry point pytest11 `picket_fleet`): the fixtures are there
    def test_a_bad_day(fleet_run):
        report = fleet_run('''
            [[fault]]
            kind = "broker-outage"
            at = "5m"
            for = "3m"
        ''', devices=40, hours=0.25)
        assert report["records_lost"] == 0

The district is generated once per session (seed 5, the real scale) into a temporary
folder; each run gets its own work folder, broker and center, so runs do not share state.
The report is the one `picket sim fleet --json` prints, plus `html` (the page's path).
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.fleetreport import public
from simulators.fleetrun import FleetOptions, run_fleet
from simulators.progress import QUIET

FleetRun = Callable[..., dict[str, Any]]


@pytest.fixture(scope="session")
def fleet_district(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated district at the real scale (631 points, 2,747 members)."""
    from simulators.bigdistrict import generate
    from simulators.districtfiles import write_district
    from simulators.districtmap import write_map

    out = tmp_path_factory.mktemp("district")
    district = generate(5)
    write_district(district, out)
    write_map(district, out)  # the HTML report embeds it
    return out


@pytest.fixture
def fleet_run(fleet_district: Path, tmp_path: Path) -> FleetRun:
    """Run a fleet scenario (TOML text, or "" for none) and return its report."""
    runs = iter(range(1_000_000))

    def run(
        scenario: str = "",
        *,
        devices: int | None = 30,
        hours: float = 0.25,
        seed: int = 5,
        workers: int = 2,
        docks: bool = False,  # the district's docks fly too (slower: off unless a test asks)
    ) -> dict[str, Any]:
        n = next(runs)
        path = None
        if scenario.strip():
            path = tmp_path / f"scenario-{n}.toml"
            path.write_text(textwrap.dedent(scenario), encoding="utf-8")
        html = tmp_path / f"report-{n}.html"
        opts = FleetOptions(
            fleet_district,
            devices=devices,
            hours=hours,
            seed=seed,
            workers=workers,
            scenario=path,
            workdir=tmp_path / f"run-{n}",
            html=html,
            docks=docks,
        )
        report = public(asyncio.run(run_fleet(opts, QUIET)))
        report["html"] = str(html)
        return report

    return run
