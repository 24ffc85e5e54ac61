"""The attachment upload core (agent/events/upload.py) against a model of the center.

`ModelCenter` is written from docs/events.md's chunk protocol, apart from the core: it
holds each attachment's bytes from the start, answers a question with what it holds (or
UNKNOWN while no stored event lists the digest), stores a chunk only at its `held`, refuses
a chunk whose CRC-32 does not match (held unchanged) and, once all bytes are in, checks the
digest (COMPLETE, or REFUSED and everything dropped). The device side is the core with a
real AttachmentStore (SQLite) from which chunks are read and into which the answers go, as
agent/events/uploader.py does, on a virtual clock.

What a user would check: the photo arrives whole with its digest, each byte stored once at
the center; after a reconnect or a restart the upload continues from what the center
holds, never from zero; no more than 8 messages wait for an answer; a damaged chunk is sent
again, a digest mismatch starts again from 0, an unknown event is asked about again later
(at once when its record is acknowledged); a complete attachment is deleted on the device.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.events.attachstore import AttachmentStore, Item, State
from agent.events.upload import Send, Upload, UploadCore
from agent.events.uploader import uploads_of
from contract.attachments import (
    AttachmentState,
    Chunk,
    CrcMismatch,
    Question,
    Status,
    decode_upload,
)

KIB = 1024
CHUNK = 32 * KIB
T0 = 1_000_000


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass
class ModelCenter:
    """What the center does with a device's messages (docs/events.md)."""

    known: set[bytes] = field(default_factory=set)  # digests a stored event lists
    held: dict[bytes, bytearray] = field(default_factory=dict)
    complete: set[bytes] = field(default_factory=set)
    stored: list[tuple[bytes, int]] = field(default_factory=list)  # (digest, offset) stored
    seen: list[tuple[str, bytes, int | None]] = field(default_factory=list)

    def answer(self, payload: bytes) -> Status:
        try:
            msg = decode_upload(payload)
        except CrcMismatch as bad:
            self.seen.append(("bad", bad.digest, bad.offset))
            have = len(self.held.get(bad.digest, b""))
            return Status(bad.digest, have, AttachmentState.REFUSED, str(bad))
        d = msg.digest
        self.seen.append(("q" if isinstance(msg, Question) else "c", d, msg.offset))
        if d not in self.known:
            return Status(d, 0, AttachmentState.UNKNOWN)
        if d in self.complete:
            return Status(d, msg.size, AttachmentState.COMPLETE)
        buf = self.held.setdefault(d, bytearray())
        if isinstance(msg, Chunk) and msg.offset == len(buf):
            buf += msg.data
            self.stored.append((d, msg.offset))
            if len(buf) == msg.size:
                if hashlib.sha256(buf).digest() != d:
                    del self.held[d]
                    return Status(d, 0, AttachmentState.REFUSED, "digest does not match the bytes")
                self.complete.add(d)
                return Status(d, len(buf), AttachmentState.COMPLETE)
        return Status(d, len(buf), AttachmentState.PARTIAL)


@dataclass
class Device:
    """The core, the real store, and a link to the model center on a virtual clock."""

    store: AttachmentStore
    center: ModelCenter
    core: UploadCore = field(default_factory=UploadCore)
    now: int = T0
    drop: set[int] = field(default_factory=set)  # chunk offsets lost once (no answer)
    damage: set[int] = field(default_factory=set)  # chunk offsets damaged once on the way
    forge: set[int] = field(default_factory=set)  # damaged with a CRC to match (disk rot)
    batches: list[list[Question | Send]] = field(default_factory=list)
    completed: list[bytes] = field(default_factory=list)

    def uploads(self) -> list[Upload]:
        return uploads_of(self.store)  # what agent/events/uploader.py hands the core

    def connect(self) -> None:
        self.core.link_up(self.uploads())

    def encode(self, m: Question | Send) -> bytes | None:
        if isinstance(m, Question):
            return m.encode()
        data = self.store.read(m.digest, m.offset, m.length)
        chunk = Chunk.of(m.digest, m.offset, m.size, data)
        if m.offset in self.drop:
            self.drop.discard(m.offset)
            return None
        if m.offset in self.damage:
            self.damage.discard(m.offset)
            return Chunk(
                m.digest, m.offset, m.size, bytes([data[0] ^ 1]) + data[1:], chunk.crc
            ).encode()
        if m.offset in self.forge:
            self.forge.discard(m.offset)
            return Chunk.of(m.digest, m.offset, m.size, bytes([data[0] ^ 1]) + data[1:]).encode()
        return chunk.encode()

    def step(self, *, answer: bool = True) -> list[Question | Send]:
        """One round: what the core sends now, delivered, and (by default) answered."""
        out = self.core.due(self.now)
        if out:
            self.batches.append(out)
        payloads = [self.encode(m) for m in out]
        if answer:
            for p in payloads:
                if p is not None:
                    self.deliver(self.center.answer(p))
        return out

    def deliver(self, status: Status) -> None:
        progress = self.core.on_status(status, self.now)
        if progress is None:
            return
        if progress.complete:
            self.store.complete(progress.digest)
            self.completed.append(progress.digest)
        else:
            self.store.set_held(progress.digest, progress.held)

    def run(self, rounds: int = 1000, tick_ms: int = 100) -> None:
        for _ in range(rounds):
            if not self.core.connected or (self.core.idle and not self.core.waiting):
                return
            if not self.step():
                self.now += tick_ms


@pytest.fixture
def store(tmp_path: Path) -> Iterator[AttachmentStore]:
    s = AttachmentStore(tmp_path / "attachments.db", 50_000_000)
    yield s
    s.close()


def put(store: AttachmentStore, data: bytes, seq: int = 7) -> bytes:
    return store.put_many([Item(1, data)], seq, T0)[0]


def sent_chunks(dev: Device) -> list[tuple[bytes, int]]:
    return [(m.digest, m.offset) for b in dev.batches for m in b if isinstance(m, Send)]


def test_a_photo_arrives_whole_each_byte_stored_once_and_is_deleted(
    store: AttachmentStore,
) -> None:
    photo = blob(300 * KIB + 123, 1)
    d = put(store, photo)
    center = ModelCenter(known={d})
    dev = Device(store, center)
    dev.connect()
    first = dev.step()
    assert first == [Question(d, 0, len(photo))]  # asked first, never sent blind
    dev.run()
    assert bytes(center.held[d]) == photo
    assert d in center.complete and dev.completed == [d]
    offsets = [o for _, o in center.stored]
    assert offsets == sorted(set(offsets)) == list(range(0, len(photo), CHUNK))
    row = store.get(d)
    assert row is not None and row.state is State.COMPLETE
    assert store.pending() == []


def test_no_more_than_8_messages_wait_for_an_answer(store: AttachmentStore) -> None:
    digests = [put(store, blob(200 * KIB, i), seq=i + 1) for i in range(3)]
    center = ModelCenter(known=set(digests))
    dev = Device(store, center)
    dev.connect()
    asked = dev.step(answer=False)  # three questions, nobody answers yet
    assert [type(m) for m in asked] == [Question] * 3
    for m in asked:
        assert isinstance(m, Question)
        dev.deliver(center.answer(m.encode()))
    burst = dev.step(answer=False)
    assert len(burst) == 8 and all(isinstance(m, Send) for m in burst)
    assert dev.step(answer=False) == []  # the window is full: nothing until answers come
    dev.now += dev.core.timeout_ms - 1
    assert dev.step(answer=False) == []
    dev.now += 1  # unanswered for the whole timeout: sent again, still 8 at most
    again = dev.step(answer=False)
    assert 0 < len(again) <= 8
    assert [(m.digest, m.offset) for m in again if isinstance(m, Send)] == [
        (m.digest, m.offset) for m in burst if isinstance(m, Send)
    ][: len(again)]


def test_after_a_reconnect_the_upload_continues_from_what_the_center_holds(
    store: AttachmentStore,
) -> None:
    photo = blob(400 * KIB + 5, 2)
    d = put(store, photo)
    center = ModelCenter(known={d})
    dev = Device(store, center)
    dev.connect()
    dev.step()  # the question
    dev.step()  # 8 chunks, answered
    in_flight = dev.step(answer=False)  # sent, then the link drops before any answer
    assert in_flight
    held = len(center.held[d])
    assert held == 8 * CHUNK
    dev.core.link_down()
    dev.batches.clear()

    # a restart: a new core that knows only what the store remembered
    dev.core = UploadCore()
    assert store.get(d) is not None and store.get(d).held == held  # type: ignore[union-attr]
    dev.connect()
    dev.run()
    first_batch, *_ = dev.batches
    assert first_batch == [Question(d, held, len(photo))]
    chunks = sent_chunks(dev)
    assert chunks[0] == (d, held)  # from held, not from zero
    assert min(o for _, o in chunks) == held
    assert bytes(center.held[d]) == photo and d in center.complete
    assert len([o for _, o in center.stored]) == len(set(center.stored))  # nothing stored twice


def test_a_damaged_chunk_is_refused_and_sent_again(store: AttachmentStore) -> None:
    photo = blob(250 * KIB, 3)
    d = put(store, photo)
    center = ModelCenter(known={d})
    dev = Device(store, center, damage={3 * CHUNK})
    dev.connect()
    dev.run()
    assert ("bad", d, 3 * CHUNK) in center.seen
    assert bytes(center.held[d]) == photo and d in center.complete
    assert sent_chunks(dev).count((d, 3 * CHUNK)) == 2  # once damaged, once again
    assert min(o for _, o in sent_chunks(dev)[sent_chunks(dev).index((d, 3 * CHUNK)) + 1 :]) == (
        3 * CHUNK
    )  # re-sent from held, not from zero


def test_a_digest_mismatch_starts_again_from_zero(store: AttachmentStore) -> None:
    photo = blob(100 * KIB + 1, 4)
    d = put(store, photo)
    center = ModelCenter(known={d})
    dev = Device(store, center, forge={CHUNK})  # damaged, with a CRC to match
    dev.connect()
    dev.run()
    offsets = [o for _, o in sent_chunks(dev)]
    last = max(range(0, len(photo), CHUNK))
    assert offsets.count(0) == 2  # the whole attachment went again after the refusal
    assert offsets.index(last) < len(offsets) - 1 and offsets[offsets.index(last) + 1] == 0
    assert bytes(center.held[d]) == photo and d in center.complete
    assert dev.completed == [d]


def test_an_unknown_event_is_asked_about_again_later_and_at_once_when_acknowledged(
    store: AttachmentStore,
) -> None:
    photo = blob(64 * KIB, 5)
    d = put(store, photo, seq=41)
    center = ModelCenter()  # the event record has not reached the center
    core = UploadCore(unknown_first_ms=5_000, unknown_max_ms=20_000)
    dev = Device(store, center, core=core)
    dev.connect()
    assert dev.step() == [Question(d, 0, len(photo))]
    asks = [dev.now]
    for _ in range(6):  # each UNKNOWN: the next question comes later, up to the maximum
        while not dev.step():
            dev.now += 100
        asks.append(dev.now)
    gaps = [b - a for a, b in itertools.pairwise(asks)]
    assert gaps == [5_000, 10_000, 20_000, 20_000, 20_000, 20_000]
    assert center.stored == []
    # the record is acknowledged: asked at once, then sent
    center.known.add(d)
    core.acked([41], dev.now)
    assert dev.step() == [Question(d, 0, len(photo))]
    dev.run()
    assert d in center.complete and store.pending() == []


def test_an_acknowledgement_of_other_records_changes_nothing(store: AttachmentStore) -> None:
    put(store, blob(10 * KIB, 6), seq=41)
    dev = Device(store, ModelCenter())
    dev.connect()
    dev.step()
    dev.core.acked([40, 42], dev.now)
    assert dev.step() == []


def test_a_lost_chunk_is_sent_again_after_the_timeout(store: AttachmentStore) -> None:
    photo = blob(128 * KIB, 7)
    d = put(store, photo)
    center = ModelCenter(known={d})
    dev = Device(store, center, drop={CHUNK})
    dev.connect()
    dev.run(tick_ms=1_000)
    assert bytes(center.held[d]) == photo and d in center.complete
    assert sent_chunks(dev).count((d, CHUNK)) == 2


def test_a_wrong_size_rests_until_the_next_connection(store: AttachmentStore) -> None:
    d = put(store, blob(40 * KIB, 8))
    dev = Device(store, ModelCenter(known={d}))
    dev.connect()
    dev.step(answer=False)
    dev.deliver(Status(d, 0, AttachmentState.REFUSED, "size 40960 is not the size the record says"))
    dev.now += 10 * dev.core.timeout_ms
    assert dev.step() == []
    dev.core.link_down()
    dev.connect()
    assert dev.step(answer=False) == [Question(d, 0, 40 * KIB)]


def test_only_attachments_linked_to_their_record_are_uploaded(store: AttachmentStore) -> None:
    linked = put(store, blob(10 * KIB, 9), seq=3)
    store.put_many([Item(1, blob(10 * KIB, 10))], None, T0)  # a report being saved
    dev = Device(store, ModelCenter(known={linked}))
    dev.connect()
    assert [m.digest for m in dev.step()] == [linked]


def test_a_digest_refusal_starts_from_zero_whatever_held_it_names(store: AttachmentStore) -> None:
    photo = blob(96 * KIB, 11)
    d = put(store, photo)
    dev = Device(store, ModelCenter(known={d}))
    dev.connect()
    dev.step()
    dev.step()  # three chunks, all answered: the model holds all and completes it
    assert d in dev.center.complete
    # a center that had all bytes, found the digest wrong and says so with held at the end
    dev2 = Device(store, ModelCenter(known={d}), core=UploadCore())
    store.put_many([Item(1, photo)], 7, T0)  # stored again: complete rows are stored anew
    dev2.connect()
    dev2.step(answer=False)
    dev2.deliver(Status(d, len(photo), AttachmentState.PARTIAL))  # held all, not judged yet
    dev2.deliver(Status(d, len(photo), AttachmentState.REFUSED, "digest does not match"))
    again = dev2.step(answer=False)
    assert again and isinstance(again[0], Send) and again[0].offset == 0
    row = store.get(d)
    assert row is not None and row.held == 0
