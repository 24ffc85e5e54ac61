"""`picket center run`: the MQTT driver around `Ingest`.

Like the agent's uplink, a supervisor makes a new aiomqtt client per connection and backs
off between failures, so a broker restart costs a reconnect, never the process. Keys come
from the registry and are cached; an unknown device triggers one re-read (a device
provisioned after the center started is accepted without a restart).

Several workers share the load through an MQTT 5 shared subscription
(`$share/{group}/picket/v1/+/up/records`): the broker hands each batch to one member of
the group, so running N `picket center run` processes on one database (SQLite: one
machine; PostgreSQL: any) spreads the verification, which is where the CPU goes. Every
worker also subscribes, unshared, to the devices' retained `online`/`offline` state, and
keeps the newest in the store for `picket center status`. Attachments' chunks come the same
way (`$share/{group}/picket/v1/+/up/att`) and are answered on the device's `down/att` after
their transaction committed (center/events/receiver.py).

The acknowledgement is published only after the store's COMMIT returned. A worker killed
between the two leaves stored records unacknowledged: the device resends them and the
store answers them as duplicates. A database that fails (StoreError) is handled like a
broker outage: the connection is dropped, nothing of the batch was acknowledged, and the
supervisor reconnects after a backoff.

Database calls run on one thread of their own, one at a time, so the event loop never
waits on a COMMIT's fsync, nor on another worker holding SQLite's write lock.

Attachments' chunks are group-committed: a message is read with those already queued behind
it (at most GROUP_MESSAGES or GROUP_BYTES), and the chunks among them are judged in one
transaction, one fsync for the group (`AttachmentReceiver.handle_many`). Their answers are
published once that COMMIT returned, as tasks (at most ANSWERS_IN_FLIGHT waiting for their
PUBACK), so the next group is read meanwhile; a failed answer drops the connection. Records
and states in a group are handled one by one, in order, as before.

A message can be as large as the broker lets a client publish (Mosquitto: 256 MiB). The
center tells the broker, in its CONNECT (MQTT 5 Maximum Packet Size), to send it nothing
over `MAX_PACKET` bytes, a little more than the largest batch (contract/bounds.py), so junk
of a hundred megabytes never reaches its memory; a message between the batch limit and
that is refused by the ingest before it is decoded, and kept as a prefix and a digest.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from center.batch import Store
from center.database import open_store
from center.errors import StoreError
from center.events.receiver import AttachmentReceiver
from center.ingest import Ingest, Trust
from center.snapshot import Presence
from contract.bounds import MAX_BATCH_BYTES
from contract.errors import RemoteError
from contract.protocol import (
    ALL_ATTACHMENTS,
    ALL_RECORDS,
    ALL_RELAYED,
    PREFIX,
    ack_topic,
    attachment_state_topic,
    device_of_topic,
)
from provisioning.registry import KeyEntry, Registry

log = logging.getLogger(__name__)

DEFAULT_GROUP = "picket-center"
# The largest MQTT packet the center takes: a batch at its limit, with room for the fixed
# header, the topic and the properties.
MAX_PACKET = MAX_BATCH_BYTES + 65_536
SESSION_END_S = 0.5  # a cancelled session that has not ended by then is cancelled again
ALL_STATES = f"{PREFIX}/+/up/state"
# A group: a message and those queued behind it, the chunks among them in one transaction.
GROUP_MESSAGES = 64
GROUP_BYTES = 4 * 2**20
ANSWERS_IN_FLIGHT = 64  # attachments' answers published, their PUBACKs not yet back

T = TypeVar("T")


def shared(group: str, topic: str) -> str:
    """The MQTT 5 shared-subscription filter for `topic` in `group`."""
    if not group or any(c in group for c in "/+#"):
        raise ValueError(f"shared subscription group {group!r} must be non-empty, without / + #")
    return f"$share/{group}/{topic}"


class KeyCache:
    """Each device's key history from the registry, cached; re-read when the registry
    changed (SQLite's data_version, looked at most every `check_s`), so a revocation or a
    rotation reaches a running center within about a second. An unknown device triggers a
    re-read too, at most every `min_reload_s` per device (a device provisioned after the
    center started is accepted without a restart). Used on the database thread only."""

    def __init__(self, registry_path: Path, min_reload_s: float = 2.0, check_s: float = 1.0):
        self.registry_path = registry_path
        self._keys: dict[str, tuple[KeyEntry, ...]] = {}
        self._misses: dict[str, float] = {}  # unknown devices: when last looked up
        self._refreshed: dict[str, float] = {}  # re-reads after a signature miss
        self._min_reload_s = min_reload_s
        self._check_s = check_s
        self._registry: Registry | None = None
        self._version = -1
        self._checked = -1e9

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()
            self._registry = None

    def _fresh(self, now: float) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.registry_path, readonly=True)
        if now - self._checked >= self._check_s:
            self._checked = now
            version = self._registry.data_version()
            if version != self._version:
                self._version = version
                self._keys.clear()
                self._misses.clear()  # a device unknown before may be registered now
        return self._registry

    def refresh(self, device: str) -> tuple[KeyEntry, ...]:
        """Read `device`'s keys again now (a record did not verify with the cached ones);
        at most once per `min_reload_s` per device, so bad records cannot flood the registry."""
        now = time.monotonic()
        registry = self._fresh(now)
        if now - self._refreshed.get(device, -1e9) < self._min_reload_s:
            return self._keys.get(device, ())
        self._refreshed[device] = now
        keys = registry.trust(device)
        if keys:
            self._keys[device] = keys
        return keys

    def __call__(self, device: str) -> tuple[KeyEntry, ...]:
        now = time.monotonic()
        registry = self._fresh(now)
        keys = self._keys.get(device)
        if keys is not None:
            return keys
        if now - self._misses.get(device, -1e9) < self._min_reload_s:
            return ()
        keys = registry.trust(device)
        if keys:
            self._keys[device] = keys
        else:
            self._misses[device] = now
        return keys


def parse_presence(payload: bytes) -> Presence | None:
    """`online` / `offline` (any case, surrounding blanks ignored); None for anything else,
    including the empty payload that clears a retained message."""
    try:
        return Presence(payload.decode("ascii").strip().lower())
    except (UnicodeDecodeError, ValueError):
        return None


def _raw(message: aiomqtt.Message) -> bytes:
    payload = message.payload
    return bytes(payload) if isinstance(payload, bytes | bytearray) else b""


def _size(message: aiomqtt.Message) -> int:
    payload = message.payload
    return len(payload) if isinstance(payload, bytes | bytearray) else 0


class _Answers:
    """The attachments' answers being published at QoS 1 on one connection: each a task, so
    the session reads on while the PUBACKs come back; at most ANSWERS_IN_FLIGHT at once
    (`publish` waits for one to end past that). A failed publish is logged at once and
    raised by `raise_failure` (the session calls it before each group, so the connection
    is dropped and the device asks again); `cancel` ends those still waiting when the
    session ends. Every task's outcome is retrieved, none left unobserved."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.tasks: set[asyncio.Task[None]] = set()
        self.failure: BaseException | None = None

    async def publish(self, topic: str, payload: bytes) -> None:
        while len(self.tasks) >= ANSWERS_IN_FLIGHT:
            await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
        self.raise_failure()
        task = asyncio.create_task(self._publish(topic, payload), name="center-answer")
        self.tasks.add(task)
        task.add_done_callback(self._done)

    async def _publish(self, topic: str, payload: bytes) -> None:
        await self.client.publish(topic, payload, qos=1)

    def _done(self, task: asyncio.Task[None]) -> None:
        self.tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None and self.failure is None:
            self.failure = exc
            log.warning("an attachment answer was not delivered: %s", exc)

    def raise_failure(self) -> None:
        if self.failure is not None:
            raise self.failure

    def cancel(self) -> None:
        for task in list(self.tasks):
            task.cancel()


class CenterService:
    def __init__(
        self,
        db: str | Path,
        registry: Path,
        host: str,
        port: int,
        *,
        group: str = DEFAULT_GROUP,
        store: Store | None = None,
        key_of: Callable[[str], Trust] | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.records_filter = shared(group, ALL_RECORDS)
        self.relayed_filter = shared(group, ALL_RELAYED)
        self.attachments_filter = shared(group, ALL_ATTACHMENTS)
        self.store = store if store is not None else open_store(db)
        self._cache: KeyCache | None = None
        if key_of is None:
            key_of = self._cache = KeyCache(registry)
        self.ingest = Ingest(self.store, key_of)
        self.receiver = AttachmentReceiver(db)  # attachments' chunks (center/events/)
        self.host, self.port = host, port
        self.tls = tls
        self.ready = asyncio.Event()
        self.states = 0  # state messages recorded
        self.bad_states = 0  # state messages that were not online/offline
        self._stop = asyncio.Event()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="center-db")

    def stop(self) -> None:
        self._stop.set()

    async def _in_db(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    async def run(self) -> None:
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    await self._one_session()
                    failures = 0
                except (aiomqtt.MqttError, OSError, TimeoutError) as exc:
                    failures += 1
                    log.warning("broker link down: %s", exc)
                except StoreError as exc:
                    failures += 1
                    log.error("database failed, reconnecting: %s", exc)
                self.ready.clear()
                delay = min(10.0, 0.2 * 2 ** min(failures, 6)) * (0.5 + random.random())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), timeout=delay)
        finally:
            # After any database call still running (the executor runs one at a time).
            closing = self._db.submit(self._close_db)
            self._db.shutdown(wait=False)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wrap_future(closing)

    async def _one_session(self) -> None:
        """One connection, until it fails, `stop()` is called or this task is cancelled; its
        failure is raised as it is.

        Not a TaskGroup, which (3.11) cancels its children once and then waits for them for
        ever: a cancellation can be lost inside aiomqtt 2.5 (its `publish` waits with
        `wait_for`, which swallows a cancellation that meets the PUBACK), and its `__aexit__`
        waits for the broker's end of the connection without a timeout. So the session is
        cancelled again every SESSION_END_S until it has ended (and stores nothing once it
        is being cancelled), and a cancellation of this task that lands meanwhile is kept
        and raised once it has."""
        session = asyncio.create_task(self._session(), name="center-session")
        stopper = asyncio.create_task(self._stop.wait(), name="center-stop")
        try:
            await asyncio.wait({session, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            cancelled = False
            while not session.done():
                session.cancel()
                try:
                    await asyncio.wait({session}, timeout=SESSION_END_S)
                except asyncio.CancelledError:
                    cancelled = True
            failure = None if session.cancelled() else session.exception()
            if cancelled:
                raise asyncio.CancelledError
        if failure is not None:
            raise failure

    def _close_db(self) -> None:
        self.store.close()
        self.receiver.close()
        if self._cache is not None:
            self._cache.close()

    async def _session(self) -> None:
        connect = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        connect.MaximumPacketSize = MAX_PACKET
        async with aiomqtt.Client(
            self.host,
            self.port,
            identifier=f"picket-center-{random.getrandbits(32):08x}",
            protocol=aiomqtt.ProtocolVersion.V5,
            keepalive=30,
            timeout=10,
            tls_context=self.tls,
            properties=connect,
        ) as client:
            await client.subscribe(self.records_filter, qos=1)
            await client.subscribe(self.relayed_filter, qos=1)
            await client.subscribe(self.attachments_filter, qos=1)
            await client.subscribe(ALL_STATES, qos=1)
            self.ready.set()
            log.info("center subscribed to %s on %s:%d", self.records_filter, self.host, self.port)
            client.pending_calls_threshold = ANSWERS_IN_FLIGHT + 8  # aiomqtt warns past it
            answers = _Answers(client)
            try:
                await self._read(client, answers)
            finally:
                answers.cancel()

    async def _read(self, client: aiomqtt.Client, answers: _Answers) -> None:
        """Read messages until the connection fails. Each message is taken with those
        already queued behind it (up to GROUP_MESSAGES or GROUP_BYTES): the attachments'
        chunks among them, run by run, are judged in ONE transaction (`handle_many`), and
        their answers published once it committed, without waiting for each PUBACK;
        records and states are handled one by one, in order, as they come."""
        me = asyncio.current_task()
        messages = client.messages
        async for first in messages:
            group = [first]
            size = _size(first)
            while len(messages) and len(group) < GROUP_MESSAGES and size < GROUP_BYTES:
                group.append(await anext(messages))
                size += _size(group[-1])
            if me is not None and me.cancelling():
                # a cancellation an awaited `wait_for` swallowed (3.11: it meets the
                # PUBACK it waited for); store nothing more
                raise asyncio.CancelledError
            answers.raise_failure()
            now_ms = int(time.time() * 1000)
            chunks: list[tuple[str, bytes]] = []
            for message in group:
                if me is not None and me.cancelling():
                    raise asyncio.CancelledError  # as above, swallowed by an ack's publish
                topic, raw = message.topic.value, _raw(message)
                if message.topic.matches(ALL_ATTACHMENTS):
                    chunks.append((topic, raw))
                    continue
                await self._answer_chunks(chunks, now_ms, answers)
                chunks = []
                if message.topic.matches(ALL_STATES):
                    await self._note_state(topic, raw, now_ms, retained=message.retain)
                    continue
                ack = await self._in_db(self.ingest.handle, topic, raw, now_ms)
                if message.topic.matches(ALL_RELAYED):
                    continue  # relayed (LoRa): stored, but the device did not send this batch
                if ack is not None:  # after the COMMIT: the records are on disk
                    await client.publish(ack_topic(device_of_topic(topic)), ack.encode(), qos=1)
            await self._answer_chunks(chunks, now_ms, answers)

    async def _answer_chunks(
        self, chunks: list[tuple[str, bytes]], now_ms: int, answers: _Answers
    ) -> None:
        """Judge a run of attachment messages in one transaction, then publish the answers
        (after the COMMIT: every chunk answered is on disk)."""
        if not chunks:
            return
        for answer in await self._in_db(self.receiver.handle_many, chunks, now_ms):
            if answer is not None:
                device, status = answer
                await answers.publish(attachment_state_topic(device), status.encode())

    async def _note_state(self, topic: str, payload: bytes, now_ms: int, *, retained: bool) -> None:
        presence = parse_presence(payload)
        try:
            device = device_of_topic(topic)
        except RemoteError:
            presence = None
        if presence is None:
            if payload:
                self.bad_states += 1
                level = logging.WARNING if self.bad_states == 1 else logging.DEBUG
                log.log(level, "ignored state message on %s: %r", topic, payload[:32])
            return
        note = functools.partial(self.store.note_presence, retained=retained)
        await self._in_db(note, device, presence, now_ms)
        self.states += 1
