"""A TCP proxy on a free loopback port that plays link faults between an agent and a broker.

Mosquitto can be killed and restarted, but a cell link fails in ways a broker never does:
the connection is cut (the radio drops the bearer), new connections are refused for a
while (no coverage), or the link goes half-open: both ends keep their sockets, writes
succeed, and nothing arrives, until a keepalive notices. The proxy does all three to the
connections passing through it, one direction or both, so tests and the demo can put one
device's link through them without touching anyone else's.

It is built on asyncio protocols rather than streams: forwarding is a callback per chunk
(no task per direction), and pausing a transport's reading is exactly "nothing arrives".
The only tasks are upstream connection attempts, and `stop()` ends them all.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

HOST = "127.0.0.1"


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    silenced: int = 0


class _Side(asyncio.Protocol):
    """One socket of a proxied connection: what it reads goes to the other side."""

    def __init__(self, link: _Link) -> None:
        self.link = link
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if self.link.closed:
            transport.abort()
        elif self is self.link.client:
            transport.pause_reading()  # until the upstream connection is up

    def data_received(self, data: bytes) -> None:
        other = self.link.other(self)
        if other.transport is not None and not self.link.mute(self):
            other.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.close()

    def pause_writing(self) -> None:  # the other side reads no faster than this one writes
        other = self.link.other(self).transport
        if other is not None:
            other.pause_reading()

    def resume_writing(self) -> None:
        other = self.link.other(self).transport
        if other is not None and not self.link.silent:
            other.resume_reading()


class _Link:
    def __init__(self, proxy: LinkProxy) -> None:
        self.proxy = proxy
        self.client = _Side(self)
        self.upstream = _Side(self)
        self.up_muted = False  # client → broker dropped
        self.down_muted = False  # broker → client dropped
        self.closed = False

    @property
    def silent(self) -> bool:
        return self.up_muted and self.down_muted

    def other(self, side: _Side) -> _Side:
        return self.upstream if side is self.client else self.client

    def mute(self, side: _Side) -> bool:
        return self.up_muted if side is self.client else self.down_muted

    def silence(self, *, up: bool, down: bool) -> None:
        self.up_muted, self.down_muted = up, down
        # Fully silent: stop reading too, so the senders' writes pile up in their kernels
        # as on a dead link, instead of vanishing into this process.
        if self.silent:
            for side in (self.client, self.upstream):
                if side.transport is not None:
                    side.transport.pause_reading()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.proxy.links.discard(self)
        for side in (self.client, self.upstream):
            if side.transport is not None:
                side.transport.abort()


class LinkProxy:
    """Forwards 127.0.0.1:`port` to `target`; `cut`, `refuse` and `silence` play faults."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.host = HOST
        self.port = 0
        self.refusing = False
        self.links: set[_Link] = set()
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._connecting: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._connecting):
            task.cancel()
        if self._connecting:
            await asyncio.gather(*self._connecting, return_exceptions=True)
        self.cut()
        if self._server is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), timeout=2)
            self._server = None

    async def __aenter__(self) -> LinkProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- faults ------------------------------------------------------------------------

    def cut(self) -> int:
        """Close every connection through the proxy at once (both sockets); how many."""
        links = list(self.links)
        for link in links:
            link.close()
        self.stats.cut += len(links)
        return len(links)

    def refuse(self, on: bool = True) -> None:
        """While on, a new connection is accepted and closed at once (no coverage)."""
        self.refusing = on

    def silence(self, *, up: bool = True, down: bool = True) -> int:
        """Go half-open: the connections open now stop forwarding (client → broker when
        `up`, broker → client when `down`) while every socket stays open. Connections made
        afterwards forward normally. Returns how many connections this changed."""
        changed = 0
        for link in self.links:
            if (link.up_muted, link.down_muted) != (up, down):
                link.silence(up=up, down=down)
                changed += 1
        self.stats.silenced += changed
        return changed

    # -- plumbing ------------------------------------------------------------------------

    def _accept(self) -> asyncio.Protocol:
        if self.refusing:
            self.stats.refused += 1
            return _Refuse()
        link = _Link(self)
        self.stats.accepted += 1
        self.links.add(link)
        task = asyncio.get_running_loop().create_task(self._connect(link), name="proxy-upstream")
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)
        return link.client

    async def _connect(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.create_connection(lambda: link.upstream, *self.target)
        except OSError:
            link.close()
            return
        if link.closed:  # cut while connecting: connection_made aborted it
            return
        if link.client.transport is not None and not link.silent:
            link.client.transport.resume_reading()


class _Refuse(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.abort()
