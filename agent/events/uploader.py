"""The attachment upload over the agent's MQTT connection: a thin driver around `UploadCore`.

The uplink (agent/uplink/mqtt.py) owns the connection. For each one it subscribes to this
device's attachment answers (`topic`, …/down/att), runs `session` with a function that
publishes at QoS 1, hands every answer to `on_message` and every acknowledgement of records
to `on_acked`. The session asks about every attachment the store holds, then sends chunks as
the pure core (agent/events/upload.py) says, reading them from the store, up to WINDOW
messages waiting for an answer, without stopping for each PUBACK. The core's verdicts go
back to the store: `complete` at once; what the center holds (`set_held`) at most every
HELD_EVERY_MS and when the session ends, not after every answer (a write with an fsync
each). A restart continues from the center's own `held`: the first thing a session does is
ask. When the session ends (the link dropped) the core forgets what was in flight; the
next session asks again.

New reports are noticed within `poll_s`, or at once through `notify`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from agent.events.attachstore import AttachmentStore
from agent.events.upload import Progress, Send, Upload, UploadCore
from contract.attachments import CHUNK_DEFAULT, Chunk, Question, decode_status
from contract.errors import RemoteError
from contract.protocol import attachment_state_topic, attachment_topic

__all__ = ["Publish", "Uploader", "UploaderStats", "uploads_of"]

log = logging.getLogger(__name__)

Publish = Callable[[str, bytes], Awaitable[None]]  # topic, payload: QoS 1, PUBACK awaited
HELD_EVERY_MS = 250  # what the center holds is written to the store at most this often
# Messages waiting for an answer (UploadCore's window). 32, not the core's 8: the center
# commits the chunks it finds queued together (center/service.py), so more in flight makes
# bigger groups; measured with bench/events_upload.py (docs/events.md, "Figures").
WINDOW = 32


@dataclass(slots=True)
class UploaderStats:
    questions: int = 0
    chunks: int = 0
    chunk_bytes: int = 0
    completed: int = 0
    bad_answers: int = 0
    rested: int = 0


def uploads_of(store: AttachmentStore) -> list[Upload]:
    """What the store holds to upload: attachments linked to their event record (an
    unlinked one may belong to a report being saved, agent/events/report.py)."""
    return [
        Upload(h.digest, h.size, h.event_seq, h.held)
        for h in store.pending()
        if h.event_seq is not None
    ]


class Uploader:
    def __init__(
        self,
        store: AttachmentStore,
        device: str,
        *,
        core: UploadCore | None = None,
        chunk_bytes: int = CHUNK_DEFAULT,
        poll_s: float = 1.0,
        monotonic_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
    ) -> None:
        self.store = store
        self.device = device
        self.core = core or UploadCore(window=WINDOW, chunk_size=chunk_bytes)
        self.topic = attachment_state_topic(device)  # what the uplink subscribes to
        self.up_topic = attachment_topic(device)
        self.poll_s = poll_s
        self.stats = UploaderStats()
        self._now = monotonic_ms
        self._wake = asyncio.Event()
        self._look = False  # look at the store before the next poll
        self._unsaved: dict[bytes, int] = {}  # held from answers, not yet in the store
        self._saved_ms = -HELD_EVERY_MS  # when `held` was last written to the store
        self._sends: set[asyncio.Task[None]] = set()  # publishes waiting for their PUBACK
        self._failure: BaseException | None = None  # the first publish that failed

    def _uploads(self) -> list[Upload]:
        return uploads_of(self.store)

    # -- hooks the uplink calls ------------------------------------------------------------

    def notify(self) -> None:
        """A report was stored: look at the store now."""
        self._look = True
        self._wake.set()

    def on_acked(self, seqs: Iterable[int]) -> None:
        """The center acknowledged these records: attachments waiting for them go now."""
        self.core.acked(seqs, self._now())
        self._wake.set()

    def on_message(self, payload: bytes) -> None:
        """An answer on …/down/att. Bad ones are counted; a full disk raises (StorageError)."""
        try:
            status = decode_status(payload)
        except RemoteError as exc:
            self.stats.bad_answers += 1
            level = logging.WARNING if self.stats.bad_answers == 1 else logging.DEBUG
            log.log(level, "%s: attachment answer dropped: %s", self.device, exc)
            return
        progress = self.core.on_status(status, self._now())
        if progress is not None:
            self._apply(progress)
        self._wake.set()

    def _apply(self, p: Progress) -> None:
        if p.complete:
            self._unsaved.pop(p.digest, None)
            self.store.complete(p.digest)
            self.stats.completed += 1
            log.info("%s: attachment %s delivered", self.device, p.digest[:6].hex())
            return
        self._unsaved[p.digest] = p.held
        if p.rested is not None or self._now() - self._saved_ms >= HELD_EVERY_MS:
            self._save_held()
        if p.rested is not None:
            self.stats.rested += 1
            log.warning("%s: attachment %s rests until the next connection: %s",
                        self.device, p.digest[:6].hex(), p.rested)  # fmt: skip

    def _save_held(self) -> None:
        """Write what the center holds, as the answers said, to the store (one write per
        attachment, at most every HELD_EVERY_MS while answers stream in: the center's own
        `held`, asked after every connect, is what the upload resumes from)."""
        unsaved, self._unsaved = self._unsaved, {}
        for digest, held in unsaved.items():
            self.store.set_held(digest, held)
        self._saved_ms = self._now()

    # -- one connection --------------------------------------------------------------------

    async def session(self, publish: Publish) -> None:
        """Upload over one connection until cancelled; a failed publish is raised.

        Messages are published as tasks: the loop does not wait for their PUBACKs before
        sending on (the core's window bounds what waits for an answer, and so what waits
        for a PUBACK), so the chunks stream instead of stalling a round trip per batch."""
        core = self.core
        core.link_up(self._uploads())
        self._look = False
        self._failure = None
        looked = time.monotonic()
        try:
            while True:
                self._wake.clear()
                if self._failure is not None:
                    raise self._failure
                if self._look or time.monotonic() - looked >= self.poll_s:
                    self._look = False
                    core.add(self._uploads())
                    looked = time.monotonic()
                now = self._now()
                if self._unsaved and now - self._saved_ms >= HELD_EVERY_MS:
                    self._save_held()
                messages = core.due(now)
                if messages:
                    await self._publish(publish, messages)
                    continue
                wake = core.next_wake_ms()
                if self._unsaved:  # and the store to bring up to date
                    save = self._saved_ms + HELD_EVERY_MS
                    wake = save if wake is None else min(wake, save)
                timeout = self.poll_s if wake is None else min(self.poll_s, (wake - now) / 1000)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, timeout)):
                        await self._wake.wait()
        finally:
            for send in list(self._sends):
                send.cancel()
            core.link_down()
            self._save_held()

    async def _publish(self, publish: Publish, messages: list[Question | Send]) -> None:
        """Start publishing each message; wait only while more than twice the window are
        still waiting for their PUBACK (messages sent again after a timeout may add to
        those the window counts)."""
        for m in messages:
            while len(self._sends) >= 2 * self.core.window:
                await asyncio.wait(self._sends, return_when=asyncio.FIRST_COMPLETED)
            if self._failure is not None:
                raise self._failure
            send = asyncio.ensure_future(publish(self.up_topic, self._encode(m)))
            self._sends.add(send)
            send.add_done_callback(self._sent)
        await asyncio.sleep(0)  # let the publishes start before the next look

    def _sent(self, send: asyncio.Future[None]) -> None:
        """A publish ended: its failure (the first) is kept for the session to raise."""
        self._sends.discard(send)
        if send.cancelled():
            return
        exc = send.exception()
        if exc is not None and self._failure is None:
            self._failure = exc
            self._wake.set()

    def _encode(self, m: Question | Send) -> bytes:
        if isinstance(m, Question):
            self.stats.questions += 1
            return m.encode()
        data = self.store.read(m.digest, m.offset, m.length)
        self.stats.chunks += 1
        self.stats.chunk_bytes += len(data)
        return Chunk.of(m.digest, m.offset, m.size, data).encode()
