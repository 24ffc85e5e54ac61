"""A serial port for asyncio without pyserial, and the backoff every reconnecting driver uses.

Extracted from agent/gnss/transports.py and agent/gnss/sources.py so the GNSS reader and
the radio-MCU bridge (firmware_bridge/host.py) open ports, word failures and wait between
reconnects the same way. The port is opened non-blocking (and without becoming our
controlling terminal), put in raw 8N1 mode at the requested speed with termios, and read
and written only when the event loop says it may (`add_reader`/`add_writer`), so a silent,
stalled or vanished peer never blocks the loop. An unplugged USB device (or a pty whose
master closed) reads as EIO or end of stream: the owner closes the port and reopens the
same path, which may be a by-id symlink now pointing at another tty.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import termios

READ_SIZE = 4096
STANDARD_BAUDS = (4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 921600)


def describe(where: str, exc: OSError) -> str:
    """An OSError as a user reads it: "/dev/ttyUSB0: No such file or directory"."""
    return f"{where}: {exc.strerror or str(exc) or type(exc).__name__}"


def configure_raw(fd: int, baud: int) -> None:
    """cfmakeraw() plus 8N1, no flow control, modem lines ignored, `baud` both ways."""
    speed = getattr(termios, f"B{baud}", None)
    if baud not in STANDARD_BAUDS or not isinstance(speed, int):
        raise OSError(errno.EINVAL, f"baud rate {baud} is not supported")
    try:
        iflag, oflag, cflag, lflag, _ispeed, _ospeed, cc = termios.tcgetattr(fd)
        iflag &= ~(
            termios.IGNBRK
            | termios.BRKINT
            | termios.PARMRK
            | termios.ISTRIP
            | termios.INLCR
            | termios.IGNCR
            | termios.ICRNL
            | termios.IXON
            | termios.IXOFF
            | termios.IXANY
        )
        oflag &= ~termios.OPOST
        lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        cflag &= ~(termios.CSIZE | termios.PARENB | termios.CSTOPB | termios.CRTSCTS)
        cflag |= termios.CS8 | termios.CREAD | termios.CLOCAL
        cc[termios.VMIN] = 1
        cc[termios.VTIME] = 0
        termios.tcsetattr(fd, termios.TCSANOW, [iflag, oflag, cflag, lflag, speed, speed, cc])
    except termios.error as exc:  # not an OSError subclass, but carries (errno, text)
        code, text = exc.args
        raise OSError(code, text) from exc


class SerialPort:
    """One open tty: `read()` the next bytes (b"" once hung up), `write()` all of some bytes.

    Both raise OSError when the port fails. `close()` is synchronous and idempotent, so an
    owner can call it from any `finally`; a read or write waiting on a closed port wakes
    with EBADF.
    """

    def __init__(self, fd: int, where: str) -> None:
        self._fd = fd
        self.where = where
        self._waiters: set[asyncio.Future[None]] = set()

    @classmethod
    def open(cls, path: str, baud: int, *, flush: bool = False) -> SerialPort:
        """Open and configure `path`; `flush` drops input that waited in the driver."""
        fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        try:
            configure_raw(fd, baud)
            if flush:
                termios.tcflush(fd, termios.TCIFLUSH)
        except termios.error as exc:
            os.close(fd)
            raise OSError(*exc.args) from exc
        except BaseException:
            os.close(fd)
            raise
        return cls(fd, path)

    @property
    def closed(self) -> bool:
        return self._fd < 0

    async def read(self) -> bytes:
        while True:
            fd = self._check()
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                await self._ready(writing=False)

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            fd = self._check()
            try:
                n = os.write(fd, view)
            except BlockingIOError:
                await self._ready(writing=True)
                continue
            view = view[n:]

    def _check(self) -> int:
        if self._fd < 0:
            raise OSError(errno.EBADF, "port closed")
        return self._fd

    async def _ready(self, *, writing: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = self._fd

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        add, remove = (
            (loop.add_writer, loop.remove_writer)
            if writing
            else (loop.add_reader, loop.remove_reader)
        )
        add(fd, wake)
        self._waiters.add(ready)
        try:
            await ready
        finally:
            self._waiters.discard(ready)
            if self._fd == fd:  # close() has removed it already, and the number may be reused
                remove(fd)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        for waiter in list(self._waiters):  # wake them before the number can be reused
            if not waiter.done():
                waiter.set_result(None)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        if loop is not None:
            loop.remove_reader(fd)
            loop.remove_writer(fd)
        os.close(fd)


class Backoff:
    """Exponential backoff with jitter: the n-th consecutive failure waits about
    base·2ⁿ seconds, at most `max_s`, drawn from [½, 1] of that so that many devices
    that lost the same peer do not come back in step."""

    def __init__(
        self, *, base_s: float = 0.25, max_s: float = 30.0, rng: random.Random | None = None
    ) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, failures: int) -> float:
        ceiling = min(self.max_s, self.base_s * 2.0 ** min(failures, 16))
        return ceiling * self._rng.uniform(0.5, 1.0)

    async def wait(self, failures: int) -> None:
        await asyncio.sleep(self.delay(failures))
