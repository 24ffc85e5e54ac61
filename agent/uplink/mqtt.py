"""The MQTT driver around `SyncCore`: connect, publish batches, apply acknowledgements.

An aiomqtt client is single-use, so a supervisor loop makes a new one per connection and
backs off exponentially with jitter between failures (short again after a connection
that worked). Within a connection one TaskGroup runs the receiver (acknowledgements and
commands), the watchdog and the sender (batches, woken by new records or freed window
slots, and at least once a second to expire unanswered batches). Only the center's
acknowledgement deletes from the outbox; the broker's PUBACK proves nothing durable.

**Presence.** The connection carries a last will, `offline` retained at QoS 1 on
…/up/state; right after connecting the uplink publishes `online` there, retained, and on a
clean stop `offline` again (a clean DISCONNECT does not fire the will).

**Half-open links.** A link that silently stops forwarding (a NAT that forgot the flow, a
cell that lost the bearer) looks healthy to TCP for minutes. paho's own keepalive closes it
only when a PINGRESP is a whole keepalive late, after the ping itself waited a keepalive:
up to two keepalives. The watchdog is stricter: when nothing came from the broker for
PROBE_AFTER of a keepalive, it publishes an empty QoS 1 probe on …/up/ping and gives the
PUBACK PROBE_TIMEOUT of a keepalive. Every acknowledgement, PUBACK or message counts as
hearing from the broker, so a busy link is never probed and an idle one costs one small
publish per 0.75 keepalive (instead of paho's ping per keepalive). A dead link is
therefore noticed within 1.25 keepalives plus one watchdog tick (an eighth).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import aiomqtt

from agent.errors import StorageError
from agent.store.outbox import Outbox, Stored
from agent.uplink.sync import SyncCore
from contract.errors import RemoteError
from contract.protocol import (
    MAX_BATCH,
    PREFIX,
    Batch,
    ack_topic,
    command_topic,
    decode_ack,
    records_topic,
    state_topic,
)
from contract.tls import BrokerTls, explain_tls

if TYPE_CHECKING:
    from agent.events.uploader import Uploader

log = logging.getLogger(__name__)


class _Routine(logging.Filter):
    """paho logs a dropped connection at ERROR; to the uplink that is routine (it reconnects,
    and says so itself), so paho's messages pass as DEBUG, and only when that is enabled."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return log.isEnabledFor(logging.DEBUG)


_paho_log = log.getChild("paho")
_paho_log.addFilter(_Routine())

ONLINE, OFFLINE = b"online", b"offline"
PROBE_AFTER = 0.75  # of a keepalive without hearing from the broker: probe
PROBE_TIMEOUT = 0.5  # of a keepalive for the probe's PUBACK
WATCH_TICKS = 8  # watchdog checks per keepalive


def probe_topic(device: str) -> str:
    """Empty QoS 1 probes of a silent link; nobody subscribes (docs/protocol.md)."""
    return f"{PREFIX}/{device}/up/ping"


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int


@dataclass(frozen=True, slots=True)
class UplinkOptions:
    keepalive_s: int = 30  # MQTT keepalive; a half-open link is noticed within ~1.4 of it
    tls: BrokerTls | None = None
    connect_timeout_s: float = 10.0  # CONNACK, SUBACK, clean DISCONNECT; see docs/protocol.md
    publish_timeout_s: float = 10.0  # a batch's PUBACK
    backoff_initial_s: float = 0.25  # doubled per failed attempt, times 0.5-1.5 of jitter
    backoff_max_s: float = 30.0
    poll_s: float = 1.0  # the sender looks at the outbox and timeouts at least this often


@dataclass(slots=True)
class UplinkStats:
    connects: int = 0
    link_losses: int = 0  # sessions that ended other than by stop()
    batches_sent: int = 0
    records_sent: int = 0
    records_acked: int = 0
    records_refused: int = 0
    bad_acks: int = 0
    probes: int = 0
    last_error: str = field(default="")


def default_core() -> SyncCore:
    """8 batches in flight, 32 records to start with, up to 256 on a fast link."""
    return SyncCore(
        batch_size=32,
        max_batch_size=MAX_BATCH,
        window=8,
        first_batch_id=int(time.time() * 1000) % 2**31,
    )


class Uplink:
    def __init__(
        self,
        outbox: Outbox,
        broker: BrokerAddress,
        *,
        core: SyncCore | None = None,
        options: UplinkOptions | None = None,
        monotonic_ms: Callable[[], int] = lambda: int(time.monotonic() * 1000),
        rng: random.Random | None = None,
        on_command: Callable[[bytes], None] | None = None,
    ) -> None:
        self.outbox = outbox
        self.on_command = on_command  # signed commands on …/down/cmd (contract/commands.py)
        self.attachments: Uploader | None = None  # attachment chunks (agent/events/uploader.py)
        self.device = outbox.device
        self.broker = broker
        self.core = core or default_core()
        self.options = options or UplinkOptions()
        self.stats = UplinkStats()
        self.wake = asyncio.Event()
        self.connected = asyncio.Event()
        self._tls = None if self.options.tls is None else self.options.tls.context()
        self._now = monotonic_ms
        self._rng = rng or random.Random()
        self._stopping = asyncio.Event()
        self._heard_ms = 0  # when the broker last answered anything on this connection

    def on_stored(self, stored: Stored | None = None) -> None:
        """A record was stored (None: the outbox changed somehow): send without waiting."""
        if stored is not None:
            self.core.note_stored(stored)
        self.wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self.wake.set()

    def reload_tls(self) -> None:
        """Read the TLS files again (a key rotation replaced them); the next connection uses
        them, the current one is kept. Raises LocalError when they do not load."""
        if self.options.tls is not None:
            self._tls = self.options.tls.context()

    async def run(self) -> None:
        """Supervise connections until `stop()`; never raises on link failures.

        Cancelling the task ends it, even when the cancellation lands while a session is
        failing: a TaskGroup whose child failed raises the failure and (in Python 3.11)
        drops the cancellation, so the loop asks the task whether it is being cancelled.
        """
        task = asyncio.current_task()
        failures = 0
        while not self._stopping.is_set():
            connects = self.stats.connects
            try:
                await self._session()
            except* (aiomqtt.MqttError, OSError, TimeoutError) as group:
                failure: BaseException = group.exceptions[0]
                if self.stats.connects == connects and self._tls is not None:
                    failure = await self._diagnose(failure)
                self._lost(failure, logging.DEBUG)
            except* StorageError as group:  # a full disk: keep what we have, try again later
                self._lost(group.exceptions[0], logging.WARNING)
            finally:
                self.connected.clear()
                self.core.link_down()
            if self._stopping.is_set():
                break
            if task is not None and task.cancelling():
                raise asyncio.CancelledError
            failures = 1 if self.stats.connects > connects else failures + 1
            opts = self.options
            delay = min(opts.backoff_max_s, opts.backoff_initial_s * 2 ** min(failures, 16))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay * (0.5 + self._rng.random())):
                    await self._stopping.wait()

    async def _diagnose(self, failure: BaseException) -> BaseException:
        """Why a TLS connection failed before the broker answered, when it does not say.

        Under TLS 1.3 the broker checks the client's certificate after the client's side of
        the handshake is over: a refused certificate looks like a connection that dropped
        or timed out. A second handshake alone, capped at TLS 1.2 where the refusal arrives
        inside the handshake, brings back the broker's reason (expired, revoked, unknown
        CA). Costs one handshake per failed connection attempt, never one that worked.
        """
        if self.options.tls is None or explain_tls(str(failure)) is not None:
            return failure
        ctx = self.options.tls.context()
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        try:
            async with asyncio.timeout(self.options.connect_timeout_s):
                _reader, writer = await asyncio.open_connection(
                    self.broker.host, self.broker.port, ssl=ctx
                )
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
        except ssl.SSLError as exc:
            if explain_tls(str(exc)) is not None:
                return exc
        except (OSError, TimeoutError):
            pass
        return failure

    def _lost(self, exc: BaseException, level: int) -> None:
        self.stats.link_losses += 1
        tls = explain_tls(str(exc)) if self._tls is not None else None
        if tls is not None:
            # Retrying will not fix a refused certificate: say so where people look.
            level = logging.WARNING if self.stats.last_error != tls else logging.DEBUG
        self.stats.last_error = tls or f"{type(exc).__name__}: {exc}"
        log.log(level, "%s: link down: %s", self.device, self.stats.last_error)

    async def _session(self) -> None:
        opts = self.options
        state = state_topic(self.device)
        client = aiomqtt.Client(
            self.broker.host,
            self.broker.port,
            identifier=self.device,  # its certificate's name: the broker binds the two
            logger=_paho_log,
            keepalive=opts.keepalive_s,
            timeout=opts.connect_timeout_s,
            will=aiomqtt.Will(state, OFFLINE, qos=1, retain=True),
            tls_context=self._tls,
            max_inflight_messages=self.core.window + 2 + 8,  # batches, state, probe, chunks
        )
        try:
            async with client:
                await client.subscribe(ack_topic(self.device), qos=1)
                if self.on_command is not None:
                    await client.subscribe(command_topic(self.device), qos=1)
                if self.attachments is not None:
                    await client.subscribe(self.attachments.topic, qos=1)
                await client.publish(
                    state, ONLINE, qos=1, retain=True, timeout=opts.publish_timeout_s
                )
                self._heard_ms = self._now()
                self.stats.connects += 1
                self.connected.set()
                async with asyncio.TaskGroup() as tg:
                    receiver = tg.create_task(self._receive(client), name=f"{self.device}-receive")
                    watchdog = tg.create_task(self._watch(client), name=f"{self.device}-watchdog")
                    uploads = None if self.attachments is None else tg.create_task(
                        self.attachments.session(self._publisher(client)),
                        name=f"{self.device}-attachments",
                    )  # fmt: skip
                    await self._send(client)
                    receiver.cancel()
                    watchdog.cancel()
                    if uploads is not None:
                        uploads.cancel()
                with contextlib.suppress(aiomqtt.MqttError):  # stopping: say so, then DISCONNECT
                    await client.publish(state, OFFLINE, qos=1, retain=True, timeout=2.0)
        finally:
            _settle(client)

    async def _send(self, client: aiomqtt.Client) -> None:
        topic = records_topic(self.device)
        while not self._stopping.is_set():
            self.wake.clear()
            now = self._now()
            self.core.expire(now)
            slots = self.core.free_slots()
            if slots:
                pending = self.outbox.pending(slots * self.core.batch_size, skip=self.core.skip)
                batches = self.core.plan(pending, now)
                if batches:
                    await self._publish(client, topic, batches)
                    self._heard_ms = self._now()  # PUBACKs came back
                    self.stats.batches_sent += len(batches)
                    self.stats.records_sent += sum(len(b.records) for b in batches)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.options.poll_s):  # not wait_for: in 3.11 it
                    await self.wake.wait()  # can swallow a cancellation that meets a wake-up

    def _publisher(self, client: aiomqtt.Client) -> Callable[[str, bytes], Awaitable[None]]:
        async def publish(topic: str, payload: bytes) -> None:
            await client.publish(topic, payload, qos=1, timeout=self.options.publish_timeout_s)
            self._heard_ms = self._now()

        return publish

    async def _publish(self, client: aiomqtt.Client, topic: str, batches: list[Batch]) -> None:
        """Publish concurrently and wait for every PUBACK; the first failure is raised.

        Not a TaskGroup: in Python 3.11 a TaskGroup whose child fails while it is already
        waiting for its children cancels the parent task and never takes that back, and
        `run` must be able to tell a real cancellation (a kill) from that.
        """
        timeout = self.options.publish_timeout_s
        sends = [
            asyncio.create_task(
                client.publish(topic, b.encode(), qos=1, timeout=timeout),
                name=f"{self.device}-batch-{b.id}",
            )
            for b in batches
        ]
        try:
            results = await asyncio.gather(*sends, return_exceptions=True)
        finally:
            for send in sends:
                send.cancel()
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Probe a link the broker has been silent on; a missing PUBACK ends the session."""
        keepalive_ms = self.options.keepalive_s * 1000
        topic = probe_topic(self.device)
        while True:
            await asyncio.sleep(self.options.keepalive_s / WATCH_TICKS)
            if self._now() - self._heard_ms < PROBE_AFTER * keepalive_ms:
                continue
            self.stats.probes += 1
            try:
                await client.publish(
                    topic, b"", qos=1, timeout=PROBE_TIMEOUT * self.options.keepalive_s
                )
            except aiomqtt.MqttError as exc:
                raise aiomqtt.MqttError(
                    f"no PUBACK within {PROBE_TIMEOUT} keepalive: the link is dead ({exc})"
                ) from exc
            self._heard_ms = self._now()

    async def _receive(self, client: aiomqtt.Client) -> None:
        commands = command_topic(self.device)
        async for message in client.messages:
            self._heard_ms = self._now()
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                self.stats.bad_acks += 1
                continue
            if message.topic.value == commands:
                if self.on_command is not None:
                    self.on_command(bytes(payload))
                continue
            if self.attachments is not None and message.topic.value == self.attachments.topic:
                self.attachments.on_message(bytes(payload))
                continue
            try:
                ack = decode_ack(bytes(payload))
            except RemoteError as exc:
                self.stats.bad_acks += 1
                log.log(logging.WARNING if self.stats.bad_acks == 1 else logging.DEBUG, "%s", exc)
                continue
            settled = self.core.on_ack(ack, self._now())
            self.stats.records_acked += self.outbox.acknowledge(settled.delete)
            if self.attachments is not None:
                self.attachments.on_acked(settled.delete)
            for seq, reason in settled.refused:
                self.outbox.refuse(seq, reason.name)
            self.stats.records_refused += len(settled.refused)
            self.wake.set()


def _settle(client: aiomqtt.Client) -> None:
    """Take the reason a connection ended, which the uplink has already dealt with.

    aiomqtt 2.5 leaves it unretrieved when another task failed first, when the link dropped
    before the CONNACK, or when a connect was cancelled half-way (it completes later, in
    paho's thread), and asyncio then logs "Future exception was never retrieved" at ERROR.
    (aiomqtt's PR #375, after 2.5, raises it from `__aexit__` instead.)
    """
    client._disconnected.add_done_callback(_take_reason)  # private: 2.5 has no public way


def _take_reason(ended: asyncio.Future[None]) -> None:
    if not ended.cancelled():
        ended.exception()
