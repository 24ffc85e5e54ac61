"""The outbox's small promises at their edges (agent/store/outbox.py, opening.py, answered.py),
found by the mutation benchmark (bench/mutation.py; docs/testing.md): the last known good time
it keeps for the time keeper, a value stored in the same transaction as a record (a dock's
closed mission), an answered command's whole row, each read back after the file is closed and
opened again, as after a restart; the sidecar at opening (left alone when it covers the
database, brought level when behind by one, never lowering a boot, no number handed out
while it cannot be written); and a write the file refused, after which the outbox believes
the file.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import agent
from agent.errors import StorageError
from agent.store.outbox import Builder, Built, Outbox, signed
from agent.store.recovery import sidecar_path, write_reserve
from agent.store.salvage import SalvageReport
from agent.store.schema import SQL_INT_MAX
from contract.fix import TimeSource
from contract.records import (
    ChainPosition,
    Eviction,
    Outcome,
    RecordType,
    build,
    chain_hash,
    dropped_body,
    health_body,
    open_record,
    receipt_body,
)

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(7, 39)))
DEVICE = "h0042"
T0 = 1_772_359_200_000
CHILD_DEADLINE_S = 60.0  # bounds a failure only: a passing child is done in about a second


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


def test_a_refused_commands_row_reads_back_whole_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = Outbox(path, DEVICE)
    box.begin_boot()
    box.append(checkin())
    (stored,) = box.answer_command(
        number=12, command_type=3, outcome=Outcome.REFUSED, reason="unknown point P999",
        time_ms=T0 + 7, command=b"signed command 12", builds=[receipt(12)],
    )  # fmt: skip
    box.close()
    box = reopened(path)
    (row,) = box.answered_commands()
    assert (row.number, row.type, row.outcome) == (12, 3, Outcome.REFUSED)
    assert row.reason == "unknown point P999"
    assert (row.time_ms, row.command) == (T0 + 7, b"signed command 12")
    assert row.receipt == stored.seq == 2  # the receipt record, after the check-in
    assert box.answered_commands(command_type=3) == [row]
    assert box.answered_commands(command_type=4) == []
    box.close()


def test_after_a_write_refused_by_the_file_the_next_record_follows_the_file(
    tmp_path: Path,
) -> None:
    """A second outbox on the same file (the old connection of a killed start, left open)
    stores a record: the first one's next write meets a number already taken and fails;
    from then on it believes the file, and its next record takes the next number."""
    path = tmp_path / "outbox.db"
    box = Outbox(path, DEVICE)
    box.begin_boot()
    first = box.append(checkin())
    other = Outbox(path, DEVICE)
    theirs = other.append(checkin(T0 + 1_000, "P002"))
    other.close()
    assert theirs.seq == first.seq + 1
    with pytest.raises(StorageError, match="cannot store record"):
        box.append(checkin(T0 + 2_000, "P003"))
    nxt = box.append(checkin(T0 + 3_000, "P004"))
    assert nxt.seq == theirs.seq + 1
    assert open_record(nxt.raw, KEY.public_key()).header.prev == chain_hash(theirs.raw)
    assert box.last_seq == nxt.seq
    assert box.stored_bytes == len(first.raw) + len(theirs.raw) + len(nxt.raw)
    assert [s.raw for s in box.pending(10)] == [first.raw, theirs.raw, nxt.raw]
    box.close()


def test_a_record_appended_after_close_is_refused_as_a_storage_error(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "outbox.db", DEVICE)
    box.begin_boot()
    box.append(checkin())
    box.close()
    with pytest.raises(StorageError, match="cannot store record") as refused:
        box.append(checkin(T0 + 1_000, "P002"))
    assert str(tmp_path / "outbox.db") in str(refused.value)  # which file, for the operator
    box = reopened(tmp_path / "outbox.db")
    assert box.depth() == 1
    box.close()


def sidecar(path: Path) -> dict[str, object]:
    """The sidecar as it is on disk."""
    d: dict[str, object] = json.loads(sidecar_path(path).read_text())
    return d


def reserved(path: Path) -> tuple[object, int]:
    """The sidecar's boot, and the sequence number it reserves up to."""
    d = sidecar(path)
    limit = d["seq_limit"]
    assert isinstance(limit, int)
    return d["boot"], limit


def used(path: Path, boots: int, records: int) -> Outbox:
    box = Outbox(path, DEVICE)
    for _ in range(boots):
        box.begin_boot()
    for i in range(records):
        box.append(checkin(T0 + i, f"P{i:03}"))
    return box


@pytest.mark.parametrize("ahead", [0, 1])
def test_a_sidecar_that_covers_the_database_is_left_as_it_is(
    tmp_path: Path, ahead: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    box = used(path, 2, 3)
    box.close()
    write_reserve(path, DEVICE, 2, 4 + ahead)  # the next record, 4, has not reached it
    with caplog.at_level(logging.WARNING):
        box = reopened(path)
    assert "sidecar" not in caplog.text
    assert sidecar(path) == {"device": DEVICE, "boot": 2, "seq_limit": 4 + ahead}
    assert box.append(checkin(T0 + 9)).seq == 4
    if ahead:  # record 4 is below the limit of 5: the sidecar is not written for it
        assert reserved(path)[1] == 5
    else:  # record 4 would reach the limit of 4: moved on before it was stored
        assert reserved(path)[1] > 4
    box.close()


@pytest.mark.parametrize(("boot", "seq_limit"), [(2, 3), (1, 100), (0, 0)])
def test_a_sidecar_behind_the_database_is_brought_level(
    tmp_path: Path, boot: int, seq_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    box = used(path, 2, 3)
    box.close()
    write_reserve(path, DEVICE, boot, seq_limit)  # behind in boot or in numbers, by one or more
    with caplog.at_level(logging.WARNING):
        box = reopened(path)
    assert "was behind the database" in caplog.text
    now, limit = reserved(path)
    assert (now, limit > 4) == (2, True)
    assert box.begin_boot() == 3
    assert box.append(checkin(T0 + 9)).seq == 4
    box.close()


def test_a_sidecar_behind_in_numbers_keeps_the_boots_it_counted(tmp_path: Path) -> None:
    """Boots the sidecar counted and the database did not (a lost write) are never begun again."""
    path = tmp_path / "outbox.db"
    box = used(path, 2, 3)
    box.close()
    write_reserve(path, DEVICE, 5, 1)
    box = reopened(path)
    boot, limit = reserved(path)
    assert (boot, limit > 4) == (5, True)
    assert box.begin_boot() == 6
    box.close()


def test_a_missing_sidecar_is_written_again_at_opening(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    box = used(path, 2, 3)
    box.close()
    sidecar_path(path).unlink()
    with caplog.at_level(logging.WARNING):
        box = reopened(path)
    assert caplog.text == ""  # nothing was behind: there was nothing
    boot, limit = reserved(path)
    assert (boot, limit > 4) == (2, True)
    assert box.begin_boot() == 3
    box.close()


def test_no_number_is_handed_out_while_the_sidecar_cannot_be_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The sidecar is missing and cannot be written (a folder stands where its temporary
    file goes): the outbox opens, but stores nothing until its numbers are reserved."""
    path = tmp_path / "outbox.db"
    box = used(path, 1, 3)
    box.close()
    sidecar_path(path).unlink()
    obstacle = tmp_path / "outbox.db.reserve.tmp"
    obstacle.mkdir()
    with caplog.at_level(logging.WARNING):
        box = reopened(path)
    assert "cannot reserve sequence numbers" in caplog.text
    with pytest.raises(StorageError, match="cannot reserve sequence numbers"):
        box.append(checkin(T0 + 9))
    assert box.depth() == 3
    obstacle.rmdir()
    assert box.append(checkin(T0 + 10)).seq == 4
    assert reserved(path)[1] > 4
    box.close()


def test_a_sidecar_lost_before_the_first_boot_leaves_the_first_boot_1(tmp_path: Path) -> None:
    path = tmp_path / "outbox.db"
    box = used(path, 0, 2)  # records stored before any boot was begun: boot 0
    box.close()
    sidecar_path(path).unlink()
    box = reopened(path)
    assert reserved(path)[0] == 0
    assert box.begin_boot() == 1
    assert box.append(checkin(T0 + 9)).seq == 3
    box.close()


def test_a_lost_database_is_logged_with_the_outboxs_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "outbox.db"
    used(path, 1, 2).close()
    path.unlink()
    with caplog.at_level(logging.ERROR):
        box = reopened(path)
    assert f"outbox {path}: the database is missing or empty" in caplog.text
    assert box.append(checkin(T0 + 9)).seq > 2
    box.close()


def test_a_damaged_outbox_without_its_sidecar_goes_on_above_every_record_put_back(
    tmp_path: Path,
) -> None:
    """Both the file's header and the sidecar are lost: the numbers the rescued records
    carry are all the outbox knows, and the next record goes on above them."""
    path = tmp_path / "outbox.db"
    box = used(path, 1, 30)
    raws = [s.raw for s in box.pending(100)]
    box.close()
    sidecar_path(path).unlink()
    with path.open("r+b") as f:
        f.write(bytes(100))  # SQLite's header, zeroed
    box = Outbox(path, DEVICE, keys=[KEY.public_key()])
    assert box.recovered_from is not None and box.recovered_from.exists()
    assert [s.raw for s in box.pending(100)] == raws  # every record back, as it was
    assert "salvage" not in sidecar(path)  # put back: the sidecar names it no longer
    nxt = box.append(checkin(T0 + 99))
    assert nxt.seq == 31
    box.close()


def rot(path: Path, raws: list[bytes]) -> None:
    """Bit rot on the card: the heads of these records zeroed wherever their bytes lie, and
    the root page of an index (empty: nothing is in it) overwritten, which SQLite's check
    finds. The tables, their meta and the other records still read."""
    con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    (page_size,) = con.execute("PRAGMA page_size").fetchone()
    (root,) = con.execute(
        "SELECT rootpage FROM sqlite_master WHERE name = 'outbox_urgent'"
    ).fetchone()
    con.close()
    data = bytearray(path.read_bytes())
    for raw in raws:
        assert data.count(raw) == 1  # no other copy is left for the salvage to find
        at = data.find(raw)
        data[at : at + 8] = bytes(8)
    data[(root - 1) * page_size : root * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))


def test_a_salvage_counts_the_newest_records_it_could_not_read_as_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Records 28 to 30 of 30 rotted; the file still says 30 was its newest: the report
    names the damaged file and counts exactly 28 to 30 lost, for the DROPPED record the
    daemon makes of it, and the log says the same."""
    path = tmp_path / "outbox.db"
    box = used(path, 1, 30)
    raws = [s.raw for s in box.pending(100)]
    box.close()
    rot(path, raws[-3:])
    with caplog.at_level(logging.ERROR, logger="agent.store.opening"):
        box = Outbox(path, DEVICE, keys=[KEY.public_key()])
    aside = box.recovered_from
    assert aside is not None and aside.exists()
    assert [s.raw for s in box.pending(100)] == raws[:27]
    assert box.salvage == SalvageReport(aside.name, salvaged=27, lost=3, first=28, last=30)
    assert f"outbox {path}: 27 records put back from {aside}; 3 lost between 28 and 30" in (
        caplog.text
    )
    assert box.append(checkin(T0 + 99)).seq > 30
    box.close()
    box = reopened(path)  # the report is kept until a record states it
    assert box.salvage == SalvageReport(aside.name, salvaged=27, lost=3, first=28, last=30)
    box.close()


# A start that stops for good while it salvages a damaged file: SIGKILL from inside, right
# after the real step, on the real files, so that the kill lands in its window every time.
# "moved": the damaged file is renamed aside (its folder synced), the sidecar not yet
# written again; "rewritten": the sidecar is written again, the records not yet put back.
STOPPED_START = """
import os, signal, sys
from pathlib import Path
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
import agent.store.recovery as recovery
from agent.store.outbox import Outbox

path, device, key, where = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
step = recovery.fsync_dir if where == "moved" else recovery.write_durably

def step_then_stop(*args):
    step(*args)
    if any(path.parent.glob(path.name + ".damaged-*")):
        os.kill(os.getpid(), signal.SIGKILL)

setattr(recovery, step.__name__, step_then_stop)
public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(key)).public_key()
Outbox(path, device, keys=[public])
"""


@pytest.mark.parametrize("where", ["moved", "rewritten"])
def test_a_start_stopped_before_the_records_are_back_leaves_them_to_the_next_start(
    tmp_path: Path, where: str
) -> None:
    path = tmp_path / "outbox.db"
    box = used(path, 1, 30)
    raws = [s.raw for s in box.pending(100)]
    box.close()
    boot, limit = reserved(path)
    assert isinstance(boot, int)
    with path.open("r+b") as f:
        f.write(bytes(100))  # SQLite's header, zeroed
    code = str(Path(agent.__file__).resolve().parents[1])  # the code under test, as imported
    key = KEY.private_bytes_raw().hex()
    run = subprocess.run(
        [sys.executable, "-c", STOPPED_START, str(path), DEVICE, key, where],
        env={**os.environ, "PYTHONPATH": code},
        capture_output=True,
        timeout=CHILD_DEADLINE_S,
        check=False,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr.decode(errors="replace")
    (aside,) = tmp_path.glob("outbox.db.damaged-*")
    assert sidecar(path)["salvage"] == aside.name  # the next start is told where they are
    box = Outbox(path, DEVICE, keys=[KEY.public_key()])
    assert box.recovered_from == aside
    assert [s.raw for s in box.pending(100)] == raws
    assert "salvage" not in sidecar(path)
    nxt = box.append(checkin(T0 + 99))
    assert nxt.seq >= limit  # no number the old sidecar reserved is handed out again
    assert box.begin_boot() > boot  # nor a boot it counted
    box.close()


def test_another_devices_outbox_is_refused_naming_the_file_and_both_devices(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.db"
    used(path, 1, 1).close()
    with pytest.raises(StorageError) as refused:
        Outbox(path, "h0043")
    assert all(name in str(refused.value) for name in (str(path), DEVICE, "h0043"))
    box = reopened(path)  # left as it was for its own device
    assert box.depth() == 1 and box.recovered_from is None
    box.close()
