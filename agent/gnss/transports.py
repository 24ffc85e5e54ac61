"""Byte transports for GNSS sources: a serial port, a TCP stream, a local file.

Each transport is a small object with one coroutine, `read()`, that returns the next bytes
(b"" at end of stream) and raises `OSError` when the link fails, plus a synchronous
`close()` that always releases the descriptor, so a supervisor can close it from any
`finally`, even while its generator is being torn down. Transports know nothing of NMEA,
gpsd or retries: decoding, timeouts, status and reconnects live in `sources.py`, so the
two can be read and tested apart.

The serial port is driven without pyserial: the device is opened non-blocking (and
without becoming our controlling terminal), put in raw 8N1 mode at the requested speed
with termios, and read only when the event loop says it is readable (`add_reader`), so a
silent or vanished receiver never blocks the loop. An unplugged USB receiver (or a pty
whose master closed) reads as EIO or end of stream, which the supervisor turns into a
reconnect. Local files are read in chunks on a worker thread for the same reason.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
from typing import BinaryIO, Protocol

from contract.serialport import configure_raw

READ_SIZE = 4096
FILE_CHUNK = 65_536
CONNECT_TIMEOUT_S = 10.0
WRITE_TIMEOUT_S = 10.0


class Link(Protocol):
    @property
    def where(self) -> str:
        """What the link is connected to, for status and log lines (a path, host:port)."""
        ...

    async def read(self) -> bytes: ...

    def close(self) -> None: ...


class SerialLink:
    def __init__(self, fd: int, where: str) -> None:
        self._fd = fd
        self.where = where

    @classmethod
    def open(cls, path: str, baud: int) -> SerialLink:
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            configure_raw(fd, baud)
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    async def read(self) -> bytes:
        while True:
            if self._fd < 0:
                raise OSError(errno.EBADF, "port closed")
            try:
                return os.read(self._fd, READ_SIZE)
            except BlockingIOError:
                await self._readable()

    async def _readable(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(self._fd, wake)
        try:
            await ready
        finally:
            loop.remove_reader(self._fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)


class StreamLink:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
    ) -> None:
        self._reader = reader
        self._writer = writer
        self.where = where

    @classmethod
    async def connect(cls, host: str, port: int, hello: bytes = b"") -> StreamLink:
        """Connect within CONNECT_TIMEOUT_S and send `hello` (gpsd's ?WATCH) if any."""
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(host, port)
        except TimeoutError:
            raise TimeoutError(
                errno.ETIMEDOUT, f"no connection within {CONNECT_TIMEOUT_S:g} s"
            ) from None
        except OSError as exc:  # asyncio words every refusal "Connect call failed (addr)"
            if not exc.errno or exc.errno < 0 or isinstance(exc, socket.gaierror):
                raise
            raise type(exc)(exc.errno, os.strerror(exc.errno)) from exc
        link = cls(reader, writer, where)
        try:
            sock = writer.get_extra_info("socket")
            if sock is not None:  # let the kernel notice a peer that vanished silently
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if hello:
                writer.write(hello)
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    await writer.drain()
        except BaseException:
            link.close()
            raise
        return link

    async def read(self) -> bytes:
        return await self._reader.read(READ_SIZE)

    def close(self) -> None:
        self._writer.close()


class FileLink:
    """A local log, read off the loop; lines starting with '#' (comments) are dropped."""

    def __init__(self, fh: BinaryIO, where: str) -> None:
        self._fh = fh
        self._carry = b""
        self.where = where

    @classmethod
    async def open(cls, path: str) -> FileLink:
        return cls(await asyncio.to_thread(open, path, "rb"), path)

    async def read(self) -> bytes:
        while True:
            chunk = await asyncio.to_thread(self._fh.read, FILE_CHUNK)
            if not chunk:  # end of file: a last line without its line end still counts
                rest, self._carry = self._carry, b""
                return b"" if not rest.strip() or _is_comment(rest) else rest + b"\n"
            data = self._carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0 and len(data) > FILE_CHUNK:  # no line end in sight: the parser
                self._carry = b""  # bounds and counts such garbage, so pass it on
                return data
            self._carry = data[cut:]
            kept = b"".join(
                line for line in data[:cut].splitlines(keepends=True) if not _is_comment(line)
            )
            if kept:
                return kept

    def close(self) -> None:
        self._fh.close()


def _is_comment(line: bytes) -> bool:
    return line.lstrip().startswith(b"#")
