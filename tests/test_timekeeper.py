"""The device clock: GNSS anchors, monotonic gaps, a floor that survives reboots."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from agent.gnss.timekeeper import TOLERANCE_MS, Stamp, TimeKeeper
from agent.store.outbox import Outbox
from contract.fix import Fix, TimeSource

T = 1_772_323_200_000  # 2026-03-01T00:00:00Z


def fix(time_ms: int | None, source: TimeSource = TimeSource.GNSS) -> Fix:
    return Fix(time_ms=time_ms, lat=29.265, lon=106.255, accuracy_m=3.0, time_source=source)


def test_without_anything_time_is_unknown() -> None:
    k = TimeKeeper(persisted_ms=None, mono_ms=0)
    assert k.now(5_000).time_ms is None
    undated = k.observe(fix(None, TimeSource.NONE), 5_000)
    assert undated.time_ms is None and undated.time_source == TimeSource.NONE


def test_after_a_reboot_time_starts_from_the_persisted_floor() -> None:
    k = TimeKeeper(persisted_ms=T, mono_ms=1_000)
    stamp = k.now(61_000)
    assert stamp.time_ms == T + 60_000
    assert stamp.source == TimeSource.PERSISTED
    # a GNSS fix without a date (no RMC/ZDA yet) is stamped from the keeper, and says so
    restamped = k.observe(fix(None, TimeSource.NONE), 61_000)
    assert (restamped.time_ms, restamped.time_source) == (T + 60_000, TimeSource.PERSISTED)


def test_gnss_time_becomes_the_anchor() -> None:
    k = TimeKeeper(persisted_ms=T, mono_ms=0)
    f = k.observe(fix(T + 3_600_000), 10_000)
    assert f.time_ms == T + 3_600_000 and f.time_source == TimeSource.GNSS
    # GNSS lost: time runs on from the anchor with the monotonic clock
    assert k.now(70_000).time_ms == T + 3_600_000 + 60_000
    assert k.to_persist(70_000) == T + 3_660_000


def test_gnss_time_behind_the_floor_is_not_believed() -> None:
    k = TimeKeeper(persisted_ms=T, mono_ms=0)
    k.observe(fix(T + 100_000), 0)
    spoofed = k.observe(fix(T - 86_400_000), 1_000)  # a day in the past
    assert spoofed.time_source == TimeSource.PERSISTED
    assert spoofed.time_ms == T + 101_000
    assert k.distrusted == 1
    # a receiver a little behind our estimate (latency) is still believed
    near = k.observe(fix(T + 101_000 - TOLERANCE_MS + 1), 2_000)
    assert near.time_source == TimeSource.GNSS


def test_rollover_corrected_time_is_trusted_and_keeps_its_label() -> None:
    k = TimeKeeper(persisted_ms=None, mono_ms=0)
    f = k.observe(fix(T, TimeSource.GNSS_ROLLOVER), 0)
    assert f.time_source == TimeSource.GNSS_ROLLOVER
    assert k.now(1_000).source == TimeSource.GNSS_ROLLOVER


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000), st.one_of(st.none(), st.integers(-(10**9), 10**9))),
        max_size=40,
    )
)
def test_persisted_time_never_goes_backwards(steps: list[tuple[int, int | None]]) -> None:
    """Whatever GNSS says, the time written down never decreases (and so never across boots)."""
    k = TimeKeeper(persisted_ms=T, mono_ms=0)
    mono, last = 0, T
    for dt_mono, offset in steps:
        mono += dt_mono
        k.observe(fix(None if offset is None else T + offset), mono)
        written = k.to_persist(mono)
        assert written is not None and written >= last
        last = written


def test_the_floor_survives_in_the_outbox(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.db", "h0001")
    assert box.stored_time() is None
    box.store_time(T + 5_000)
    box.store_time(T)  # an older time never overwrites a newer one
    box.close()
    box = Outbox(tmp_path / "o.db", "h0001")
    assert box.stored_time() == T + 5_000
    k = TimeKeeper(persisted_ms=box.stored_time(), mono_ms=0)
    assert k.observe(fix(T - 60_000), 0).time_source == TimeSource.PERSISTED
    box.close()


def test_a_distrusted_receiver_keeps_its_rhythm() -> None:
    """A receiver that says January after March was known: restamped, but 1 s apart stays 1 s."""
    k = TimeKeeper(persisted_ms=T, mono_ms=0)
    january = T - 45 * 86_400_000
    stamped = [k.observe(fix(january + i * 1000), 0) for i in range(5)]  # replayed fast
    assert all(f.time_source == TimeSource.PERSISTED for f in stamped)
    assert [f.time_ms for f in stamped] == [T + i * 1000 for i in range(5)]
    # once the receiver has the right time again, it is believed again
    back = k.observe(fix(T + 10_000), 0)
    assert back.time_source == TimeSource.GNSS and back.time_ms == T + 10_000


def test_a_docks_system_clock_anchors_time_unless_it_is_behind_the_floor() -> None:
    k = TimeKeeper(persisted_ms=T, mono_ms=0)
    # an NTP-synced clock ahead of the floor is believed
    assert k.observe_clock(T + 60_000, TimeSource.NTP, 1_000) == Stamp(T + 60_000, TimeSource.NTP)
    assert k.now(2_000) == Stamp(T + 61_000, TimeSource.NTP)
    # a clock that reset to 1970 is not: time carries on from what was believed
    assert k.observe_clock(5_000, TimeSource.NTP, 3_000) == Stamp(T + 62_000, TimeSource.NTP)
    assert k.distrusted == 1
    # nor is a clock whose source is not trusted
    assert k.observe_clock(T + 90_000, TimeSource.PERSISTED, 4_000).time_ms == T + 63_000
