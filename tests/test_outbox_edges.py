"""The outbox's small promises at their edges (agent/store/outbox.py), found by the mutation
benchmark (bench/mutation.py; docs/testing.md): the last known good time it keeps for the
time keeper, and a value stored in the same transaction as a record (a dock's closed
mission), each read back after the file is closed and opened again, as after a restart.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.store.outbox import Builder, Built, Outbox, signed
from agent.store.schema import SQL_INT_MAX
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    Eviction,
    Outcome,
    RecordType,
    build,
    dropped_body,
    health_body,
    open_record,
    receipt_body,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
DEVICE = "h0042"
T0 = 1_772_359_200_000


def checkin(time_ms: int = T0, point: str = "P001") -> Builder:
    return signed(
        KEY, DEVICE, RecordType.CHECKIN, time_ms=time_ms, source=TimeSource.GNSS,
        body={16: point},
    )  # fmt: skip


def reopened(path: Path) -> Outbox:
    return Outbox(path, DEVICE)


def test_the_stored_time_survives_a_restart_and_only_moves_forward(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, DEVICE)
    assert box.stored_time() is None  # a new device knows no time yet
    box.store_time(T0)
    box.store_time(T0 - 1)  # older: ignored
    assert box.stored_time() == T0
    box.store_time(T0 + 1)
    box.close()
    box = reopened(path)
    assert box.stored_time() == T0 + 1
    box.close()


@pytest.mark.parametrize("time_ms", [0, SQL_INT_MAX])
def test_the_first_and_last_storable_times_are_kept(tmp_path: Path, time_ms: int) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.store_time(time_ms)
    assert box.stored_time() == time_ms
    box.close()


@pytest.mark.parametrize("time_ms", [-1, SQL_INT_MAX + 1])
def test_a_time_no_column_can_hold_is_not_stored_and_does_not_raise(
    tmp_path: Path, time_ms: int, caplog: pytest.LogCaptureFixture
) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.store_time(T0)
    with caplog.at_level(logging.WARNING, logger="agent.store.outbox"):
        box.store_time(time_ms)
    assert box.stored_time() == T0
    assert "out of range" in caplog.text
    box.store_time(T0 + 5)  # the same path still stores a good time afterwards
    assert box.stored_time() == T0 + 5
    box.close()


def test_a_value_stored_with_a_record_is_read_back_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, DEVICE)
    box.begin_boot()
    assert box.meta_int("mission_closed") is None  # never written
    stored = box.append(checkin(), meta=("mission_closed", 7))
    assert box.meta_int("mission_closed") == 7
    box.close()
    box = reopened(path)
    assert box.meta_int("mission_closed") == 7
    assert box.meta_int("time_ms") is None  # its own names: not the outbox's internal keys
    (pending,) = box.pending(10)
    assert pending.seq == stored.seq
    assert open_record(pending.raw, KEY.public_key()).body[16] == "P001"
    box.close()


def test_a_value_stored_with_a_record_changes_with_the_next_such_record(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    box.append(checkin(T0), meta=("mission_closed", 7))
    box.append(checkin(T0 + 1_000, "P002"))
    assert box.meta_int("mission_closed") == 7  # a record without a value leaves it alone
    box.append(checkin(T0 + 2_000, "P003"), meta=("mission_closed", 8))
    assert box.meta_int("mission_closed") == 8
    assert box.depth() == 3
    box.close()


def receipt(number: int) -> Builder:
    return signed(
        KEY, DEVICE, RecordType.RECEIPT, time_ms=T0, source=TimeSource.GNSS,
        body=receipt_body(number, 3, Outcome.DONE),
    )  # fmt: skip


def answer(box: Outbox, number: int, command_type: int = 3) -> None:
    box.answer_command(
        number=number, command_type=command_type, outcome=0, reason=None, time_ms=T0,
        command=b"cmd", builds=[receipt(number)],
    )  # fmt: skip


def test_commands_numbered_0_to_the_largest_integer_are_answered(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    answer(box, 0, command_type=0)
    answer(box, SQL_INT_MAX, command_type=SQL_INT_MAX)
    assert [(a.number, a.type) for a in box.answered_commands()] == [
        (0, 0),
        (SQL_INT_MAX, SQL_INT_MAX),
    ]
    assert box.last_command() == SQL_INT_MAX
    box.close()


@pytest.mark.parametrize(
    ("number", "command_type"), [(-1, 3), (SQL_INT_MAX + 1, 3), (5, -1), (5, SQL_INT_MAX + 1)]
)
def test_a_command_number_or_type_no_column_can_hold_is_refused_and_nothing_stored(
    tmp_path: Path, number: int, command_type: int
) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    with pytest.raises(ValueError, match="cannot be stored"):
        answer(box, number, command_type)
    assert box.answered_commands() == []
    assert box.depth() == 0
    answer(box, 5)  # the same path stores a command that fits
    assert box.last_command() == 5
    box.close()


def test_the_first_record_can_be_marked_refused(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    first = box.append(checkin())
    second = box.append(checkin(T0 + 1_000, "P002"))
    assert first.seq == 1
    box.refuse(1, "MALFORMED")
    assert [s.seq for s in box.pending(10)] == [second.seq]
    assert box.depth() == 1
    box.close()


def health(i: int) -> Builder:
    return signed(
        KEY, DEVICE, RecordType.HEALTH, time_ms=T0 + i, source=TimeSource.GNSS,
        body=health_body(depth=i, battery_pct=80),
    )  # fmt: skip


def on_evict(pos: ChainPosition, eviction: Eviction) -> Built:
    raw = build(
        KEY, device=DEVICE, chain=pos, rtype=RecordType.DROPPED, time_ms=T0,
        time_source=TimeSource.GNSS, body=dropped_body(eviction),
    )  # fmt: skip
    return Built(RecordType.DROPPED, T0, raw)


def fill(path: Path, cap: int | None) -> Outbox:
    """Ten health records, the same bytes every time (Ed25519 signs deterministically)."""
    box = Outbox(path, DEVICE, cap_bytes=cap, on_evict=None if cap is None else on_evict)
    box.begin_boot()
    for i in range(10):
        box.append(health(i), evictable=True)
    return box


def test_an_outbox_holding_exactly_its_cap_evicts_nothing_one_byte_less_does(
    tmp_path: Path,
) -> None:
    probe = fill(tmp_path / "probe.db", None)
    total = probe.stored_bytes
    probe.close()
    exact = fill(tmp_path / "exact.db", total)
    assert (exact.stored_bytes, exact.evicted) == (total, 0)
    assert [s.type for s in exact.pending(20)] == [RecordType.HEALTH] * 10
    exact.close()
    under = fill(tmp_path / "under.db", total - 1)
    assert under.evicted >= 1  # the tenth record made room: health went, a DROPPED came
    assert under.stored_bytes <= total - 1
    assert RecordType.DROPPED in {s.type for s in under.pending(20)}
    under.close()
