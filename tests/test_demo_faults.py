"""`picket demo --faults`: the fleet keeps every record, and every field event's photos and
notes, through broker, agent, center and link faults, and the plan of faults is drawn from
the seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from picket.cli import main
from picket.progress import Progress
from simulators.demo import DemoOptions, run_demo
from simulators.faults import FaultError, FaultKind, plan_faults

ALL = tuple(FaultKind)


def test_fault_names_parse_and_unknown_ones_are_refused() -> None:
    from simulators.faults import parse_faults

    assert parse_faults("broker-kill, agent-kill,broker-kill") == (
        FaultKind.BROKER_KILL,
        FaultKind.AGENT_KILL,
    )
    assert parse_faults("") == ()
    with pytest.raises(FaultError, match=r"'power-cut'.*broker-kill, broker-outage"):
        parse_faults("broker-kill,power-cut")


def test_cli_refuses_an_unknown_fault_with_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--faults", "broker-kill,meteor"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown fault 'meteor'" in err
    assert all(k.value in err for k in FaultKind)


def test_fault_plan_is_drawn_from_the_seed() -> None:
    plan = plan_faults(ALL, devices=50, shift_ms=3_600_000, seed=11)
    assert plan == plan_faults(ALL, devices=50, shift_ms=3_600_000, seed=11)
    assert plan != plan_faults(ALL, devices=50, shift_ms=3_600_000, seed=12)
    assert plan.kinds == frozenset(ALL)
    assert [f.at_ms for f in plan.faults] == sorted(f.at_ms for f in plan.faults)
    assert all(360_000 <= f.at_ms <= 2_880_000 for f in plan.faults)  # 10 %..80 % of the shift
    assert len(plan.routed) == 5
    for f in plan.faults:
        if f.kind in (FaultKind.LINK_FLAP, FaultKind.HALF_OPEN):
            assert f.devices and set(f.devices) <= plan.routed
        if f.kind is FaultKind.AGENT_KILL:
            assert len(f.devices) == 5 and f.sim_ms >= 30_000
    none = plan_faults((), devices=50, shift_ms=3_600_000, seed=11)
    assert (none.faults, none.routed) == ((), frozenset())


@pytest.mark.integration
@pytest.mark.parametrize(
    "faults",
    [
        (FaultKind.BROKER_KILL, FaultKind.AGENT_KILL, FaultKind.LINK_FLAP),
        (FaultKind.BROKER_OUTAGE, FaultKind.CENTER_KILL, FaultKind.HALF_OPEN),
    ],
    ids=lambda kinds: "+".join(k.value for k in kinds),
)
async def test_demo_with_faults_loses_and_duplicates_nothing(
    tmp_path: Path, faults: tuple[FaultKind, ...]
) -> None:
    report = await run_demo(
        DemoOptions(
            devices=10,
            minutes=30,
            seed=11,
            workdir=tmp_path / "demo",
            faults=faults,
            events_per_hour=2,  # about ten reports while the faults strike
        ),
        Progress(quiet=True),
    )
    injected = report["faults_injected"]
    assert isinstance(injected, dict)
    assert set(injected) == {k.value for k in faults}
    assert all(n >= 1 for n in injected.values()), injected
    assert report["drained"] is True
    assert report["records_lost"] == 0
    assert report["records_duplicated"] == 0
    assert report["records_delivered"] == report["records_created"] == report["records_verified"]
    assert report["records_refused"] == 0
    # field events: every report at the center, every attachment whole (digest checked)
    reported = report["events_reported"]
    assert isinstance(reported, int) and reported >= 1
    assert report["events_delivered"] == reported
    assert report["attachments_lost"] == 0
    assert report["attachments_delivered"] == report["attachments_reported"]
    assert report["events_closed"] == reported
    expected, recorded = report["checkins_expected"], report["checkins_recorded"]
    assert isinstance(expected, int) and isinstance(recorded, int)
    if FaultKind.AGENT_KILL in faults:  # a killed agent forgets a visit in progress
        assert 0.7 * expected <= recorded <= expected
    else:
        assert recorded == expected
