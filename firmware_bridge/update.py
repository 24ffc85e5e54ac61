"""Installing firmware on the radio MCU over the bridge: a procedure over a few requests.

FW_BEGIN (version, size, SHA-256), FW_CHUNKs of at most 256 bytes, FW_COMMIT, then the
BOOT that follows. The new version coming up, answering a HELLO and not rolling back within
`confirm_s` is success; a BOOT with reset cause ROLLBACK is `UpdateFailed("the MCU rolled
back to x.y.z …")`. The trust boundary (who checks what about an image) is in fwbundle.py.

It lives apart from the driver because it keeps no link: `Bridge.update_firmware` (host.py)
hands it a `Link` of three things it already has (send one request, wait until the MCU is
ready, a watch on the MCU's next restart) and this module only sequences them, so it could
be driven by a fake link as well. Which image comes up is judged by `judge_boot`, a pure
function of the BOOT and the version asked for.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass

from firmware_bridge import messages as m
from firmware_bridge.errors import BridgeTimeout, McuReset, SendUncertain, StatusError, UpdateFailed
from firmware_bridge.values import BridgeOptions, McuInfo, UpdateResult, Version, version_text

__all__ = ["Link", "install", "judge_boot"]


@dataclass(frozen=True, slots=True)
class Link:
    """What an update needs of the bridge."""

    request: Callable[[int, bytes], Awaitable[bytes]]  # the answer after an OK status
    wait_ready: Callable[[], Awaitable[McuInfo]]
    next_boot: Callable[[], AbstractContextManager[asyncio.Future[McuInfo]]]  # its restart
    options: BridgeOptions


def judge_boot(info: McuInfo, version: Version) -> UpdateFailed | None:
    """Why the image that came up after FW_COMMIT is not `version`; None if it is."""
    if info.reset_cause == m.RESET_ROLLBACK:
        return UpdateFailed(
            f"the MCU rolled back to {version_text(info.version)}: firmware "
            f"{version_text(version)} did not confirm itself",
            rolled_back_to=info.version,
        )
    if info.version != version:
        return UpdateFailed(
            f"the MCU restarted with firmware {version_text(info.version)}, not "
            f"{version_text(version)}"
        )
    return None


async def install(
    link: Link,
    image: bytes,
    version: Version,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> UpdateResult:
    """Send `image` as firmware `version`, switch, and see the new image come up."""
    opts = link.options
    loop = asyncio.get_running_loop()
    started = loop.time()
    info = await link.wait_ready()
    if not info.caps & m.CAP_UPDATE:
        raise UpdateFailed(
            f"MCU firmware {version_text(info.version)} does not take firmware updates"
        )
    previous = info.version
    digest = hashlib.sha256(image).digest()
    try:
        await link.request(m.FW_BEGIN, m.pack(m.FW_BEGIN_FMT, *version, len(image), digest))
    except StatusError as exc:
        raise UpdateFailed(
            f"the MCU refused to begin the update ({exc.status_name}): the image is too "
            "big, or the running image has not confirmed itself yet"
        ) from exc
    chunks = 0
    size = max(1, min(opts.chunk, m.FW_CHUNK_MAX))
    for offset in range(0, len(image), size):
        piece = image[offset : offset + size]
        try:
            await link.request(m.FW_CHUNK, struct.pack("<I", offset) + piece)
        except StatusError as exc:
            raise UpdateFailed(
                f"the MCU refused the chunk at offset {offset} ({exc.status_name})"
            ) from exc
        chunks += 1
        if progress is not None:
            progress(offset + len(piece), len(image))
    with link.next_boot() as boot:
        try:
            await link.request(m.FW_COMMIT, b"")
        except (McuReset, SendUncertain, BridgeTimeout):
            pass  # the BOOT overtook the answer, or the answer was lost: the BOOT tells
        except StatusError as exc:
            raise UpdateFailed(
                f"the MCU refused to switch ({exc.status_name}): the staged image does not "
                "match its SHA-256"
            ) from exc
        try:
            async with asyncio.timeout(opts.commit_timeout_s):
                new = await boot
        except TimeoutError:
            raise UpdateFailed(
                f"the MCU did not restart within {opts.commit_timeout_s:g} s of FW_COMMIT"
            ) from None
        new = await _settle(link, new, version)
    await link.wait_ready()
    return UpdateResult(
        previous, version, new.boot_count, len(image), chunks, loop.time() - started
    )


async def _settle(link: Link, info: McuInfo, version: Version) -> McuInfo:
    """The image that came up after FW_COMMIT: the new one, staying up for confirm_s?"""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + link.options.confirm_s
    while True:
        failed = judge_boot(info, version)
        if failed is not None:
            raise failed
        left = deadline - loop.time()
        if left <= 0:
            return info
        with link.next_boot() as later:
            try:
                async with asyncio.timeout(left):
                    info = await later  # only a restart resolves it
            except TimeoutError:
                return info
