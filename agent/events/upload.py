"""What to send of the attachments, and what the center's answers mean: a pure core.

The model is the uplink's `SyncCore` (agent/uplink/sync.py): it never publishes, reads or
deletes anything itself, and time is passed in. The driver (agent/events/uploader.py) hands
it the attachments the store holds and the center's `Status` answers, asks it what to
publish (`due`), and carries out what an answer means for the store (`Progress`: how much
the center holds now, or that it holds all of it and the bytes may go).

**The protocol** (docs/events.md, "The chunk protocol"):

- After every (re)connect each attachment is first *asked* about (a `Question`): the center
  answers with what it holds, and the upload continues from there, never from zero.
- Chunks are sent from `held` on, `chunk_size` bytes each; at most `window` messages
  (questions and chunks) wait for an answer on a connection. Every chunk is answered with
  the attachment's state; a message unanswered for `timeout_ms` is sent again (the center
  answers a chunk at an offset other than its `held` with the state and stores nothing,
  so sending twice costs only bandwidth).
- PARTIAL: the chunks below `held` are settled. A `held` below the lowest chunk still
  waiting means the center lost what came after it: everything from `held` is sent again.
- COMPLETE: the center holds all of it with the digest checked: the store deletes it.
- REFUSED: a chunk whose CRC-32 did not match is dropped by the center, `held` unchanged:
  send again from `held`. A digest that does not match the bytes makes the center drop
  what it held: start again from 0. A size other than the record says cannot be cured by
  sending again: the attachment rests until the next connection (and is logged), as does
  one refused MAX_REFUSALS times in a row without progress.
- UNKNOWN: no stored event of this device lists the digest yet; the event record has not
  reached the center. The attachment waits and is asked again after `unknown_first_ms`,
  doubling up to `unknown_max_ms`, and at once when the uplink reports the record
  acknowledged (`acked`).

**Which attachments.** Only rows linked to their event record (agent/events/attachstore.py:
an unlinked row may belong to a report not saved). This core does not look at the outbox
to see whether the record was acknowledged: it asks, and UNKNOWN paces it; the uplink's
acknowledgements (`acked`) cut the wait short, so a photo follows its record at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from contract.attachments import CHUNK_DEFAULT, AttachmentState, Question, Status

__all__ = ["Progress", "Send", "Upload", "UploadCore", "refusal_kind"]

MAX_REFUSALS = 5  # refusals in a row without progress before an attachment rests


@dataclass(frozen=True, slots=True)
class Upload:
    """One attachment to upload, as the store holds it."""

    digest: bytes
    size: int
    event_seq: int
    held: int = 0  # what the center held at the last answer (the store's `held`)


@dataclass(frozen=True, slots=True)
class Send:
    """Publish the chunk of `digest` at `offset`, `length` bytes (the driver reads them)."""

    digest: bytes
    offset: int
    length: int
    size: int


@dataclass(frozen=True, slots=True)
class Progress:
    """What an answer means for the store: the center holds `held` bytes (`complete`: all,
    digest checked: delete the bytes). `rested` says why an attachment stops until the
    next connection (None: it goes on)."""

    digest: bytes
    held: int
    complete: bool = False
    rested: str | None = None


class Refusal(enum.Enum):
    CRC = "crc"  # a damaged chunk: send again from held
    DIGEST = "digest"  # the bytes do not hash to the digest: start again from 0
    SIZE = "size"  # not the size the record says: sending again cannot help
    OTHER = "other"


def refusal_kind(reason: str | None) -> Refusal:
    """What a REFUSED answer's reason says (the center's wording, docs/events.md)."""
    text = (reason or "").lower()
    if "crc" in text:
        return Refusal.CRC
    if "digest" in text or "sha-256" in text or "sha256" in text:
        return Refusal.DIGEST
    if "size" in text:
        return Refusal.SIZE
    return Refusal.OTHER


class _Phase(enum.Enum):
    ASK = "ask"  # a question is due
    ASKED = "asked"  # a question waits for its answer
    SEND = "send"  # chunks from `next` on
    WAIT = "wait"  # UNKNOWN: ask again at `retry_ms`
    REST = "rest"  # nothing until the next connection
    DONE = "done"


@dataclass(slots=True)
class _State:
    up: Upload
    held: int
    phase: _Phase = _Phase.ASK
    next: int = 0  # the next offset to send
    asked_ms: int = 0
    flying: dict[int, int] = field(default_factory=dict)  # offset -> sent at (ms)
    retry_ms: int = 0
    delay_ms: int = 0  # the UNKNOWN back-off
    refusals: int = 0


class UploadCore:
    def __init__(
        self,
        *,
        window: int = 8,
        chunk_size: int = CHUNK_DEFAULT,
        timeout_ms: int = 15_000,
        unknown_first_ms: int = 5_000,
        unknown_max_ms: int = 60_000,
    ) -> None:
        if window < 1 or chunk_size < 1:
            raise ValueError("a window of at least one message, chunks of at least one byte")
        self.window = window
        self.chunk_size = chunk_size
        self.timeout_ms = timeout_ms
        self.unknown_first_ms = unknown_first_ms
        self.unknown_max_ms = unknown_max_ms
        self._all: dict[bytes, _State] = {}  # insertion order: the store's, oldest first
        self.resent = 0  # messages sent again after a timeout or a refusal
        self.connected = False

    # -- what the driver tells it --------------------------------------------------------

    def link_up(self, uploads: Sequence[Upload]) -> None:
        """A new connection: every attachment the store holds is asked about first."""
        self.connected = True
        self._all = {u.digest: _State(u, u.held) for u in uploads}

    def link_down(self) -> None:
        """The connection ended: what was in flight is forgotten (asked again next time)."""
        self.connected = False
        for st in self._all.values():
            st.flying.clear()

    def add(self, uploads: Iterable[Upload]) -> None:
        """Attachments the store holds now (new ones are asked about; known ones are kept;
        ones no longer held, already done, are dropped)."""
        fresh = {u.digest: u for u in uploads}
        for digest in [
            d for d, st in self._all.items() if d not in fresh or st.phase is _Phase.DONE
        ]:
            del self._all[digest]
        for digest, up in fresh.items():
            if digest not in self._all:
                self._all[digest] = _State(up, up.held)

    def acked(self, seqs: Iterable[int], now_ms: int) -> None:
        """The center acknowledged these records: attachments waiting on them ask now."""
        settled = set(seqs)
        for st in self._all.values():
            if st.phase is _Phase.WAIT and st.up.event_seq in settled:
                st.phase, st.retry_ms = _Phase.ASK, now_ms

    def on_status(self, status: Status, now_ms: int) -> Progress | None:
        """The center's answer; None for an attachment this core does not upload now."""
        st = self._all.get(status.digest)
        if st is None or st.phase in (_Phase.DONE, _Phase.REST):
            return None
        state, held = status.state, min(status.held, st.up.size)
        if state is AttachmentState.COMPLETE:
            st.phase, st.held = _Phase.DONE, st.up.size
            st.flying.clear()
            return Progress(st.up.digest, st.up.size, complete=True)
        if state is AttachmentState.UNKNOWN:
            st.flying.clear()
            self._wait(st, now_ms)
            return None
        if state is AttachmentState.REFUSED:
            st.delay_ms = 0
            return self._refused(st, status, held)
        if held < st.up.size:
            st.delay_ms = 0
        return self._partial(st, held, now_ms)

    def _wait(self, st: _State, now_ms: int) -> None:
        """Ask again later, each time twice as late (up to unknown_max_ms)."""
        st.delay_ms = min(self.unknown_max_ms, max(self.unknown_first_ms, st.delay_ms * 2))
        st.phase, st.retry_ms = _Phase.WAIT, now_ms + st.delay_ms

    def _partial(self, st: _State, held: int, now_ms: int) -> Progress | None:
        before = st.held
        if held > before:
            st.refusals = 0
        st.held = held
        for offset in [o for o in st.flying if o < held]:
            del st.flying[offset]
        if held >= st.up.size:  # all held but not judged: a center out of step; ask later
            st.flying.clear()
            self._wait(st, now_ms)
        elif st.phase is not _Phase.SEND:  # the answer to a question: resume from there
            st.phase, st.next = _Phase.SEND, held
            st.flying.clear()
        elif st.flying and held < min(st.flying):  # the center lost what came after held
            self.resent += len(st.flying)
            st.flying.clear()
            st.next = held
        elif not st.flying:  # every chunk answered: continue from what the center holds
            st.next = held
        return Progress(st.up.digest, held) if held != before else None

    def _refused(self, st: _State, status: Status, held: int) -> Progress | None:
        kind = refusal_kind(status.reason)
        st.refusals += 1
        self.resent += len(st.flying)
        st.flying.clear()
        if kind is Refusal.SIZE or st.refusals >= MAX_REFUSALS:
            st.phase = _Phase.REST
            why = status.reason or "refused"
            return Progress(st.up.digest, held, rested=f"refused {st.refusals} time(s): {why}")
        start = 0 if kind is Refusal.DIGEST else held
        st.phase, st.held, st.next = _Phase.SEND, start, start
        return Progress(st.up.digest, start)

    # -- what to send ----------------------------------------------------------------------

    def due(self, now_ms: int) -> list[Question | Send]:
        """Messages to publish now: timed-out ones again, questions, then chunks, oldest
        attachment first, within the window."""
        if not self.connected:
            return []
        self._expire(now_ms)
        room = self.window - self.waiting
        out: list[Question | Send] = []
        for st in self._all.values():  # questions first: after a reconnect, ask for all
            if room <= 0:
                return out
            if st.phase is _Phase.WAIT and now_ms >= st.retry_ms:
                st.phase = _Phase.ASK
            if st.phase is _Phase.ASK:
                out.append(Question(st.up.digest, st.held, st.up.size))
                st.phase, st.asked_ms = _Phase.ASKED, now_ms
                room -= 1
        for st in self._all.values():
            while room > 0 and st.phase is _Phase.SEND and st.next < st.up.size:
                length = min(self.chunk_size, st.up.size - st.next)
                out.append(Send(st.up.digest, st.next, length, st.up.size))
                st.flying[st.next] = now_ms
                st.next += length
                room -= 1
        return out

    def _expire(self, now_ms: int) -> None:
        for st in self._all.values():
            if st.phase is _Phase.ASKED and now_ms - st.asked_ms >= self.timeout_ms:
                st.phase = _Phase.ASK
                self.resent += 1
            late = [o for o, t in st.flying.items() if now_ms - t >= self.timeout_ms]
            if late:  # send again from the oldest unanswered chunk
                self.resent += len(st.flying)
                st.next = min(st.flying)
                st.flying.clear()

    # -- what it knows ---------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Messages waiting for an answer: questions asked and chunks in flight."""
        return sum(len(st.flying) + (st.phase is _Phase.ASKED) for st in self._all.values())

    @property
    def idle(self) -> bool:
        """Nothing to send and nothing waiting (attachments resting or waiting excepted)."""
        return all(st.phase in (_Phase.DONE, _Phase.REST, _Phase.WAIT) for st in self._all.values())

    def next_wake_ms(self) -> int | None:
        """When `due` may have something without an answer coming first (None: never)."""
        times = [st.retry_ms for st in self._all.values() if st.phase is _Phase.WAIT]
        times += [st.asked_ms + self.timeout_ms for st in self._all.values()
                  if st.phase is _Phase.ASKED]  # fmt: skip
        times += [t + self.timeout_ms for st in self._all.values() for t in st.flying.values()]
        return min(times) if times else None

    def held(self, digest: bytes) -> int | None:
        st = self._all.get(digest)
        return None if st is None else st.held

    def phase(self, digest: bytes) -> str | None:
        st = self._all.get(digest)
        return None if st is None else st.phase.value
