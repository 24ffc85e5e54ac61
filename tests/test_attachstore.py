"""The attachment store (agent/events/attachstore.py) on real SQLite files.

What a member and a technician would check: a report's attachments are stored all or none
(also when the writer is killed with SIGKILL in the middle), read back byte for byte in
chunks, remembered with what the center holds across a restart, deleted once complete; a
full quota, one byte over, refuses the new report with the message the member reads and
loses nothing stored before, while exactly at the quota it fits; a full disk (a 1 MB tmpfs,
and SQLite's own page limit) is a clear "disk full" StorageError with every earlier row
intact; and rows whose event record was never linked are reported as orphans only once
they are old enough not to be a report being saved right now.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.errors import StorageError
from agent.events.attachstore import AttachmentStore, Item, QuotaFull, State
from simulators.camera import SimCamera

REPO = Path(__file__).resolve().parents[1]
KB = 1000
T0 = 1_777_000_000_000  # a time in ms, passed in as the agent passes its clock's


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


def test_a_report_is_stored_and_read_back_in_chunks(tmp_path: Path) -> None:
    photo = SimCamera(seed=9, width=640, height=480).jpeg()
    note = "楼道堆物, stairwell blocked".encode()
    store = AttachmentStore(tmp_path / "attachments.db", 10 * 1000 * KB)
    digests = store.put_many([Item(1, photo), Item(2, note)], 17, T0)
    assert digests == [hashlib.sha256(photo).digest(), hashlib.sha256(note).digest()]
    rows = store.pending()
    assert [
        (r.digest, r.kind, r.size, r.event_seq, r.created_ms, r.held, r.state) for r in rows
    ] == [
        (digests[0], 1, len(photo), 17, T0, 0, State.WAITING),
        (digests[1], 2, len(note), 17, T0, 0, State.WAITING),
    ]
    chunk = 32 * 1024
    got = b"".join(store.read(digests[0], off, chunk) for off in range(0, len(photo), chunk))
    assert got == photo
    assert store.read(digests[0], len(photo), chunk) == b""
    assert store.usage().used_bytes == len(photo) + len(note)
    assert store.usage().waiting == 2
    store.close()
    con = sqlite3.connect(tmp_path / "attachments.db")
    assert con.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    con.close()


def test_what_the_center_holds_survives_a_restart_and_complete_frees_the_bytes(
    tmp_path: Path,
) -> None:
    path = tmp_path / "attachments.db"
    store = AttachmentStore(path, 1000 * KB)
    a, b = blob(300 * KB, 1), blob(200 * KB, 2)
    da, db_ = store.put_many([Item(1, a), Item(1, b)], 5, T0)
    store.set_held(da, 64 * 1024)
    store.close()
    store = AttachmentStore(path, 1000 * KB)
    first = store.get(da)
    assert first is not None and (first.held, first.state) == (64 * 1024, State.UPLOADING)
    assert store.read(da, first.held, 10) == a[first.held : first.held + 10]
    store.set_held(da, 0)  # the center dropped what it held (a digest mismatch): from 0 again
    assert store.pending()[0].held == 0
    store.complete(da)
    store.complete(da)  # a second acknowledgement changes nothing
    assert [r.digest for r in store.pending()] == [db_]
    assert store.usage().used_bytes == len(b)
    with pytest.raises(StorageError, match="is not held"):
        store.read(da, 0, 10)
    store.close()
    con = sqlite3.connect(path)
    assert con.execute("SELECT data FROM attachments WHERE sha256 = ?", (da,)).fetchone() == (None,)
    con.close()


def test_the_quota_one_byte_either_side(tmp_path: Path) -> None:
    quota = 2_000_000
    store = AttachmentStore(tmp_path / "attachments.db", quota)
    waiting = [blob(600_000, 10), blob(600_000, 11), blob(650_000, 12)]
    store.put_many([Item(1, x) for x in waiting], 1, T0)
    used = sum(map(len, waiting))
    free = quota - used
    assert store.usage().free_bytes == free == 150_000
    before = store.pending()
    with pytest.raises(QuotaFull) as caught:
        store.put_many([Item(2, blob(1000, 13)), Item(1, blob(free - 999, 14))], 2, T0)
    assert str(caught.value) == (
        "photo storage full: 1.9 of 2 MB used by 3 attachments waiting to upload, and this "
        "report needs 0.2 MB; free space by letting them upload (connect to the network)"
    )
    assert store.pending() == before  # nothing of the refused report, nothing lost
    for row, data in zip(before, waiting, strict=True):
        assert store.read(row.digest, 0, len(data) + 1) == data
    exact = [Item(2, blob(1000, 13)), Item(1, blob(free - 1000, 14))]
    store.put_many(exact, 2, T0)  # exactly at the quota: fits
    assert store.usage().used_bytes == quota
    with pytest.raises(QuotaFull, match="used by 5 attachments"):
        store.put_many([Item(2, b"x")], 3, T0)
    store.complete(before[0].digest)  # one uploads: its space is free again
    store.put_many([Item(1, blob(600_000, 15))], 3, T0)
    assert store.usage().used_bytes == quota


def test_the_same_attachment_is_not_stored_twice(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "attachments.db", 700 * KB)
    photo = blob(400 * KB, 3)
    (d,) = store.put_many([Item(1, photo)], 1, T0)
    store.set_held(d, 1024)
    # attached again (to a second report): costs no quota a second time, and the upload
    # already under way and the first record's link are kept
    assert store.put_many([Item(1, photo), Item(1, photo)], 2, T0) == [d, d]
    assert store.usage().used_bytes == len(photo)
    kept = store.get(d)
    assert kept is not None and (kept.held, kept.event_seq) == (1024, 1)
    store.complete(d)
    store.put_many([Item(1, photo)], 3, T0 + 1)  # uploaded before: held again for the new report
    again = store.get(d)
    assert again is not None and (again.state, again.held, again.event_seq) == (State.WAITING, 0, 3)
    assert store.read(d, 0, len(photo)) == photo


def test_unlinked_rows_are_orphans_only_once_old_enough(tmp_path: Path) -> None:
    store = AttachmentStore(tmp_path / "attachments.db", 1000 * KB)
    saved = store.put_many([Item(1, blob(1000, 1)), Item(2, b"note")], None, T0)
    lost = store.put_many([Item(1, blob(1000, 2))], None, T0)
    young = store.put_many([Item(1, blob(1000, 3))], None, T0 + 4 * 60_000)
    assert store.orphans(T0 + 60_000) == []  # perhaps being saved right now
    assert store.link(saved, 41) == 2  # step 3: the record is in the outbox at seq 41
    assert store.link(saved, 99) == 0  # never moved to another record
    orphans = store.orphans(T0 + 5 * 60_000)
    assert [o.digest for o in orphans] == lost
    assert store.forget([*saved, *lost]) == 1  # only the unlinked one goes
    assert {r.digest for r in store.pending()} == {*saved, *young}
    assert all(r.event_seq == 41 for r in store.pending() if r.digest in saved)
    assert [o.digest for o in store.orphans(T0 + 9 * 60_000)] == young


# -- a full disk ----------------------------------------------------------------------


def test_a_full_database_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    """SQLite's own page limit gives the SQLITE_FULL a full disk gives."""
    store = AttachmentStore(tmp_path / "attachments.db", 100 * 1000 * KB)
    kept = [blob(100 * KB, i) for i in range(3)]
    store.put_many([Item(1, x) for x in kept], 1, T0)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 4}")
    with pytest.raises(StorageError, match=r"^attachments .*: disk full: cannot store 2 "):
        store.put_many([Item(2, b"note"), Item(1, blob(200 * KB, 9))], 2, T0)
    assert [store.read(r.digest, 0, 10**6) for r in store.pending()] == kept
    store._db.execute("PRAGMA max_page_count = 1000000")
    store.put_many([Item(2, b"note"), Item(1, blob(200 * KB, 9))], 2, T0)
    assert store.usage().waiting == 5


@contextlib.contextmanager
def small_filesystem(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of `size` mounted at `where` (root only), unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small file system needs root")
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_a_clear_error_and_loses_nothing(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "small") as small:
        store = AttachmentStore(small / "attachments.db", 100 * 1000 * KB)
        kept = [blob(100 * KB, i) for i in range(2)]
        store.put_many([Item(1, x) for x in kept], 1, T0)
        filler = small / "filler"
        with filler.open("wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(bytes(4096))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
        error: StorageError | None = None
        for i in range(50):  # the log may have room for a little more
            try:
                kept.append(blob(50 * KB, 100 + i))
                store.put_many([Item(1, kept[-1])], 2 + i, T0)
            except StorageError as exc:
                kept.pop()
                error = exc
                break
        assert error is not None, "the disk never filled up"
        assert "disk full" in str(error)
        assert [store.read(r.digest, 0, 10**6) for r in store.pending()] == kept
        filler.unlink()
        store.put_many([Item(1, blob(50 * KB, 999))], 99, T0)
        assert store.usage().waiting == len(kept) + 1
        store.close()
        con = sqlite3.connect(small / "attachments.db")
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        con.close()


# -- kill -9 in the middle of put_many -------------------------------------------------

WRITER = """
import random, sys
from pathlib import Path
from agent.events.attachstore import AttachmentStore, Item

store = AttachmentStore(Path(sys.argv[1]), 10**12)
n = max([r.event_seq or 0 for r in store.pending()], default=0) + 1
print("ready", flush=True)
while True:
    items = [Item(1, random.Random(n * 10 + i).randbytes(100_000 + i)) for i in range(5)]
    store.put_many(items, n, n)
    print(n, flush=True)
    for r in store.pending():
        if r.event_seq is not None and r.event_seq < n - 2:
            store.complete(r.digest)
    n += 1
"""


def test_kill_9_in_the_middle_of_a_report_leaves_all_or_none(tmp_path: Path) -> None:
    rng = random.Random(20_260_518)
    path = tmp_path / "attachments.db"
    confirmed: set[int] = set()
    for _ in range(30):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert proc.stdout is not None and proc.stderr is not None
        ready = proc.stdout.readline()
        assert ready == b"ready\n", ready + proc.stderr.read()
        time.sleep(rng.uniform(0.01, 0.25))  # a random moment of its work, not a wait for it
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        out = proc.stdout.read().split(b"\n")[:-1]
        proc.stdout.close()
        proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        confirmed |= {int(line) for line in out}
        con = sqlite3.connect(path)
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        groups = dict(con.execute("SELECT event_seq, count(*) FROM attachments GROUP BY event_seq"))
        rows = con.execute(
            "SELECT event_seq, sha256, data FROM attachments WHERE data IS NOT NULL"
        ).fetchall()
        con.close()
        torn = {seq: count for seq, count in groups.items() if count != 5}
        assert not torn, f"reports stored in part (event: attachments): {torn}"
        assert confirmed <= set(groups), f"confirmed reports lost: {confirmed - set(groups)}"
        for seq, digest, data in rows:
            assert hashlib.sha256(data).digest() == digest
            assert data[:16] in {random.Random(seq * 10 + i).randbytes(16) for i in range(5)}
    assert len(confirmed) >= 30, "the writer hardly wrote: the kills proved little"
