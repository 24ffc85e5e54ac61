"""The center's end of the chunk protocol (center/events/receiver.py) against a model.

`Model` below is docs/events.md's "The chunk protocol" read plainly, written apart from the
receiver: what the center holds of each attachment of each device, and what it answers. The
receiver runs over a real center database (SQLite, one committed transaction per message,
as the service runs it) where a device's event record listed the attachments; every answer
is compared with the model's, by hand-written cases (resume, a duplicate chunk, chunks out
of order, a bad CRC, a digest that does not match, a digest no record lists, another
device's digest, a wrong size) and by seeded random sessions mixing them; a group of them
judged in one transaction (`handle_many`, the service's group commit) answers as one at a
time. Last, a center process is killed with SIGKILL mid-attachment and a new one resumes
from what was committed.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cbor2
import pytest

from center.database import open_store
from center.events import intake
from center.events import store as ev
from center.events.receiver import DIGEST_MISMATCH, AttachmentReceiver
from center.events.store import EventDb
from contract.attachments import AttachmentState, Chunk, Question, Status, decode_status
from contract.protocol import attachment_topic

T0 = 1_772_323_200_000
C = 1000  # chunk size in these tests
ROOT = Path(__file__).resolve().parents[1]


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


PHOTO = blob(4 * C + 321, 1)  # five chunks, the last short
NOTE = "楼道堆物，请清理".encode()
OTHER = blob(2 * C, 2)  # listed by h0002's event only
SHA = {name: hashlib.sha256(data).digest() for name, data in
       {"photo": PHOTO, "note": NOTE, "other": OTHER}.items()}  # fmt: skip


# --- the model -----------------------------------------------------------------------------------


@dataclass
class Model:
    """What the center holds, by (device, digest); `listed`: (device, digest) -> size."""

    listed: dict[tuple[str, bytes], int]
    held: dict[tuple[str, bytes], bytes] = field(default_factory=dict)
    complete: set[tuple[str, bytes]] = field(default_factory=set)

    def answer(
        self,
        device: str,
        digest: bytes,
        size: int,
        offset: int | None,
        data: bytes | None,
        *,
        crc_ok: bool = True,
    ) -> tuple[int, AttachmentState]:
        key = (device, digest)
        if key not in self.listed:
            return 0, AttachmentState.UNKNOWN
        have = self.held.get(key, b"")
        if size != self.listed[key]:
            return len(have), AttachmentState.REFUSED
        if key in self.complete:
            return size, AttachmentState.COMPLETE
        if data is None or not crc_ok or offset != len(have):
            state = AttachmentState.PARTIAL if crc_ok else AttachmentState.REFUSED
            return len(have), state
        have += data
        if len(have) < size:
            self.held[key] = have
            return len(have), AttachmentState.PARTIAL
        if hashlib.sha256(have).digest() != digest:
            self.held[key] = b""
            return 0, AttachmentState.REFUSED
        self.held[key] = have
        self.complete.add(key)
        return size, AttachmentState.COMPLETE


# --- the center ----------------------------------------------------------------------------------


def center_db(folder: Path) -> Path:
    """A center database where h0001 reported an event listing the photo and the note (and a
    second one listing the photo again), and h0002 one listing OTHER."""
    path = folder / "center.db"
    open_store(path).close()
    db = EventDb(path)
    A = intake.Attachment
    reports = [
        intake.Report("h0001", 5, T0, 3, attachments=(A(2, SHA["note"], len(NOTE)),
                                                      A(1, SHA["photo"], len(PHOTO)))),
        intake.Report("h0001", 6, T0, 4, attachments=(A(1, SHA["photo"], len(PHOTO)),)),
        intake.Report("h0002", 1, T0, 3, attachments=(A(1, SHA["other"], len(OTHER)),)),
    ]  # fmt: skip
    with db.write() as sql:
        for r in reports:
            intake.store_report(sql, r, T0)
    db.close()
    return path


def model() -> Model:
    return Model({("h0001", SHA["photo"]): len(PHOTO), ("h0001", SHA["note"]): len(NOTE),
                  ("h0002", SHA["other"]): len(OTHER)})  # fmt: skip


def corrupt(chunk: Chunk) -> bytes:
    """The chunk as sent, one bit of its data flipped on the way (its CRC as computed)."""
    data = bytes([chunk.data[0] ^ 1]) + chunk.data[1:]
    return cbor2.dumps({1: chunk.digest, 2: chunk.offset, 3: chunk.size, 4: data, 5: chunk.crc})


class Harness:
    def __init__(self, folder: Path) -> None:
        self.path = center_db(folder)
        self.rx = AttachmentReceiver(self.path)
        self.model = model()
        self.now = T0

    def send(self, device: str, message: bytes) -> Status:
        self.now += 1
        got = self.rx.handle(attachment_topic(device), message, self.now)
        assert got is not None
        assert got[0] == device
        return decode_status(got[1].encode())  # what the device reads

    def chunk(self, device: str, data: bytes, offset: int, *, bad: bool = False,
              digest: bytes | None = None, size: int | None = None) -> Status:  # fmt: skip
        d = digest or hashlib.sha256(data).digest()
        c = Chunk.of(d, offset, size or len(data), data[offset : offset + C])
        status = self.send(device, corrupt(c) if bad else c.encode())
        want = self.model.answer(device, d, c.size, offset, c.data, crc_ok=not bad)
        assert (status.held, status.state) == want, (offset, status)
        assert status.digest == d
        return status

    def ask(self, device: str, digest: bytes, size: int, offset: int | None = None) -> Status:
        status = self.send(device, Question(digest, offset, size).encode())
        want = self.model.answer(device, digest, size, offset, None)
        assert (status.held, status.state) == want
        return status

    def stored(self, digest: bytes) -> list[tuple[int, int, bool, bytes | None]]:
        db = EventDb(self.path, readonly=True)
        try:
            with db.read() as sql:
                rows = sql.rows(
                    "SELECT event, held, complete, data FROM event_attachments "
                    "WHERE sha256 = ? ORDER BY event",
                    (digest,),
                )
                return [(e, h, bool(c), None if d is None else bytes(d)) for e, h, c, d in rows]
        finally:
            db.close()


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    harness = Harness(tmp_path)
    yield harness
    harness.rx.close()


# --- hand-written cases --------------------------------------------------------------------------


def test_an_upload_resumes_from_what_the_center_holds(h: Harness) -> None:
    photo = SHA["photo"]
    assert h.ask("h0001", photo, len(PHOTO)).state is AttachmentState.PARTIAL
    h.chunk("h0001", PHOTO, 0)
    h.chunk("h0001", PHOTO, C)
    # the device restarts: it asks, and continues from `held`, not from zero
    again = h.ask("h0001", photo, len(PHOTO), offset=0)
    assert again.held == 2 * C
    for offset in range(again.held, len(PHOTO), C):
        last = h.chunk("h0001", PHOTO, offset)
    assert (last.held, last.state) == (len(PHOTO), AttachmentState.COMPLETE)
    # both events of h0001 that list the photo hold it whole, and the API serves it
    assert [(e, held, c, d) for e, held, c, d in h.stored(photo)] == [
        (1, len(PHOTO), True, PHOTO),
        (2, len(PHOTO), True, PHOTO),
    ]
    db = EventDb(h.path, readonly=True)
    with db.read() as sql:
        assert ev.media(sql, photo) == PHOTO
    db.close()
    assert h.ask("h0001", photo, len(PHOTO)).state is AttachmentState.COMPLETE


def test_duplicates_and_chunks_out_of_order_are_answered_not_stored(h: Harness) -> None:
    h.chunk("h0001", PHOTO, 0)
    h.chunk("h0001", PHOTO, 0)  # again: answered with held, stored once
    h.chunk("h0001", PHOTO, 3 * C)  # ahead of held: not stored
    h.chunk("h0001", PHOTO, C)
    assert h.stored(SHA["photo"])[0][1:3] == (2 * C, False)
    assert h.stored(SHA["photo"])[0][3] == PHOTO[: 2 * C]


def test_a_chunk_damaged_on_the_way_is_refused_and_sent_again(h: Harness) -> None:
    h.chunk("h0001", PHOTO, 0)
    bad = h.chunk("h0001", PHOTO, C, bad=True)
    assert bad.state is AttachmentState.REFUSED and bad.held == C
    assert bad.reason is not None and "CRC-32 does not match" in bad.reason
    h.chunk("h0001", PHOTO, C)  # re-sent from held
    assert h.stored(SHA["photo"])[0][3] == PHOTO[: 2 * C]


def test_bytes_that_do_not_hash_to_the_digest_are_dropped(h: Harness) -> None:
    wrong = bytearray(PHOTO)
    wrong[-1] ^= 0xFF  # same size, another last byte
    for offset in range(0, len(PHOTO), C):
        last = h.chunk("h0001", bytes(wrong), offset, digest=SHA["photo"])
    assert (last.held, last.state, last.reason) == (0, AttachmentState.REFUSED, DIGEST_MISMATCH)
    assert h.stored(SHA["photo"])[0][1:] == (0, False, None)
    for offset in range(0, len(PHOTO), C):  # from zero again, the right bytes
        last = h.chunk("h0001", PHOTO, offset)
    assert last.state is AttachmentState.COMPLETE


def test_a_digest_no_record_of_this_device_lists_is_unknown(h: Harness) -> None:
    stray = blob(C, 9)
    assert h.chunk("h0001", stray, 0).state is AttachmentState.UNKNOWN
    # h0002's attachment, sent by h0001: unknown to h0001, and h0002's stays untouched
    assert h.chunk("h0001", OTHER, 0).state is AttachmentState.UNKNOWN
    assert h.ask("h0001", SHA["other"], len(OTHER)).state is AttachmentState.UNKNOWN
    assert h.stored(SHA["other"]) == [(3, 0, False, None)]
    assert h.chunk("h0002", OTHER, 0).state is AttachmentState.PARTIAL


def test_a_size_other_than_the_records_is_refused(h: Harness) -> None:
    status = h.chunk("h0001", PHOTO[:-1], 0, digest=SHA["photo"])
    assert status.state is AttachmentState.REFUSED
    assert status.reason == f"size {len(PHOTO) - 1}, but the event record says {len(PHOTO)}"
    assert h.stored(SHA["photo"])[0][1] == 0


def test_a_complete_note_becomes_the_events_note(h: Harness) -> None:
    assert h.chunk("h0001", NOTE, 0).state is AttachmentState.COMPLETE
    db = EventDb(h.path, readonly=True)
    with db.read() as sql:
        row = ev.get_event(sql, 1)
    db.close()
    assert row is not None and row.note == "楼道堆物，请清理"


def test_a_message_that_names_no_attachment_is_not_answered(h: Harness) -> None:
    assert h.rx.handle(attachment_topic("h0001"), b"\xa1\x01\x02", T0) is None
    assert h.rx.handle("picket/v1/up/att", Question(SHA["photo"], None, 5).encode(), T0) is None
    assert h.rx.stats.bad == 2


@pytest.mark.parametrize("seed", range(6))
def test_random_sessions_agree_with_the_model(h: Harness, seed: int) -> None:
    rng = random.Random(seed)
    uploads = [("h0001", PHOTO), ("h0001", NOTE), ("h0002", OTHER), ("h0001", OTHER)]
    for _ in range(150):
        device, data = rng.choice(uploads)
        have = len(h.model.held.get((device, hashlib.sha256(data).digest()), b""))
        move = rng.random()
        if move < 0.1:
            h.ask(device, hashlib.sha256(data).digest(), len(data), rng.choice([None, have]))
            continue
        offset = have if move < 0.7 else rng.randrange(0, len(data), 1)
        offset = min(offset, len(data) - 1)
        h.chunk(device, data, offset, bad=move > 0.93)
    for device, data in uploads[:3]:  # finish each: the model says every one completes
        d = hashlib.sha256(data).digest()
        while (device, d) not in h.model.complete:
            h.chunk(device, data, len(h.model.held.get((device, d), b"")))
    assert h.stored(SHA["photo"])[0][3] == PHOTO
    assert h.stored(SHA["other"])[0][3] == OTHER


def test_a_group_in_one_transaction_answers_as_one_message_at_a_time(tmp_path: Path) -> None:
    """`handle_many` (the service's group commit): chunks of two attachments of h0001 and
    one of h0002, a duplicate, a damaged chunk, a note complete in the middle, a question
    and a message naming no attachment, in ONE transaction: each answer is the model's,
    in order, the same as `handle` gives one message at a time on another database, and
    what is stored afterwards is the same."""
    for name in ("group", "alone"):
        (tmp_path / name).mkdir()
    group_h = Harness(tmp_path / "group")
    alone_h = Harness(tmp_path / "alone")

    def part(data: bytes, offset: int) -> Chunk:
        return Chunk.of(hashlib.sha256(data).digest(), offset, len(data), data[offset : offset + C])

    # (device, payload, what the model is asked: digest, size, offset, data, crc_ok)
    plan: list[tuple[str, bytes, tuple[bytes, int, int | None, bytes | None, bool] | None]] = []
    for device, c, bad in [
        ("h0001", part(PHOTO, 0), False),
        ("h0001", part(PHOTO, C), False),
        ("h0001", part(NOTE, 0), False),  # the note, whole: COMPLETE in the middle
        ("h0001", part(PHOTO, C), False),  # a duplicate: answered, not stored
        ("h0002", part(OTHER, 0), False),  # another device's attachment
        ("h0001", part(PHOTO, 2 * C), True),  # damaged on the way: REFUSED
        ("h0001", part(PHOTO, 2 * C), False),  # sent again from held
        ("h0001", part(PHOTO, 4 * C), False),  # ahead of held
        ("h0001", part(NOTE, 0), False),  # the note again: COMPLETE already
        ("h0002", part(OTHER, C), False),  # OTHER's last chunk: COMPLETE
    ]:
        payload = corrupt(c) if bad else c.encode()
        plan.append((device, payload, (c.digest, c.size, c.offset, c.data, not bad)))
    plan.insert(6, ("h0001", Question(SHA["photo"], None, len(PHOTO)).encode(),
                    (SHA["photo"], len(PHOTO), None, None, True)))  # fmt: skip
    plan.insert(3, ("nobody", b"\xa1\x01\x02", None))  # names no attachment: no answer

    def topic(device: str) -> str:
        return attachment_topic(device) if device != "nobody" else "picket/v1/up/att"

    got = group_h.rx.handle_many([(topic(d), p) for d, p, _ in plan], T0)
    alone = [alone_h.rx.handle(topic(d), p, T0) for d, p, _ in plan]
    model = group_h.model
    assert len(got) == len(plan)
    for (device, _payload, ask), answer, one in zip(plan, got, alone, strict=True):
        if ask is None:
            assert answer is None and one is None
            continue
        assert answer is not None and one is not None
        digest, size, offset, data, crc_ok = ask
        want = model.answer(device, digest, size, offset, data, crc_ok=crc_ok)
        status = decode_status(answer[1].encode())
        assert (answer[0], status.digest, status.held, status.state) == (device, digest, *want)
        assert answer == one  # the same answer, reason included, as one at a time
    states = [a[1].state for a in got if a is not None]
    assert AttachmentState.COMPLETE in states[:-1] and AttachmentState.REFUSED in states
    for name in ("photo", "note", "other"):
        assert group_h.stored(SHA[name]) == alone_h.stored(SHA[name])
    assert group_h.stored(SHA["photo"])[0][1:] == (3 * C, False, PHOTO[: 3 * C])
    assert group_h.stored(SHA["other"])[0][1:] == (len(OTHER), True, OTHER)
    assert group_h.rx.stats == alone_h.rx.stats
    group_h.rx.close()
    alone_h.rx.close()


# --- a center killed mid-attachment --------------------------------------------------------------

CHILD = """
import sys
from center.events.receiver import AttachmentReceiver
from contract.protocol import attachment_topic
rx = AttachmentReceiver(sys.argv[1])
print("ready", flush=True)
for n, line in enumerate(sys.stdin):
    got = rx.handle(attachment_topic("h0001"), bytes.fromhex(line.strip()), n)
    print(got[1].held, flush=True)  # after the COMMIT
"""


def test_a_center_killed_mid_attachment_resumes_from_what_it_committed(tmp_path: Path) -> None:
    h = Harness(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(h.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n"
        chunks = list(range(0, len(PHOTO), C))
        for offset in chunks[:3]:
            c = Chunk.of(SHA["photo"], offset, len(PHOTO), PHOTO[offset : offset + C])
            proc.stdin.write(c.encode().hex().encode() + b"\n")
            proc.stdin.flush()
            assert int(proc.stdout.readline()) == offset + len(c.data)
        # one more chunk on its way, and the center killed while it may be storing it
        c = Chunk.of(SHA["photo"], 3 * C, len(PHOTO), PHOTO[3 * C : 4 * C])
        proc.stdin.write(c.encode().hex().encode() + b"\n")
        proc.stdin.flush()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
        proc.stdin.close()
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # a new center: it holds what it committed (3 chunks, or 4 if the kill came after the
    # COMMIT), byte for byte, and the device continues from there
    status: Status | None = None
    rx = AttachmentReceiver(h.path)
    asked = rx.handle(attachment_topic("h0001"), Question(SHA["photo"], 0, len(PHOTO)).encode(), 1)
    assert asked is not None and asked[1].state is AttachmentState.PARTIAL
    held = asked[1].held
    assert held in (3 * C, 4 * C)
    assert h.stored(SHA["photo"])[0][3] == PHOTO[:held]
    for offset in range(held, len(PHOTO), C):
        c = Chunk.of(SHA["photo"], offset, len(PHOTO), PHOTO[offset : offset + C])
        got = rx.handle(attachment_topic("h0001"), c.encode(), 2)
        assert got is not None
        status = got[1]
    rx.close()
    h.rx.close()
    assert status is not None and status.state is AttachmentState.COMPLETE
    assert h.stored(SHA["photo"])[0][1:] == (len(PHOTO), True, PHOTO)
