"""Camera source URLs: the one place that turns text into a `CameraSpec` or refuses it.

    file:DIR                 the newest JPEG put into a folder and not taken yet (tests,
                             technicians, a phone or an app that saves into that folder)
    libcamera:               a Raspberry Pi camera through `rpicam-still` (or the older
    libcamera:N              `libcamera-still`); N picks the camera when there are several
    v4l2:/dev/videoN         a USB camera, one frame through `ffmpeg`

Kept apart from the driver (agent/events/camera.py) so that decoding `[events] camera`
(agent/events/settings.py) checks the URL and opens nothing: text in, a value or a
`CameraError` out. Every refusal names the URL and what to write instead, in one line.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

__all__ = ["CameraError", "CameraKind", "CameraSpec", "parse_camera_url"]

MAX_URL = 4096
FORMS = "file:DIR, libcamera:, libcamera:N or v4l2:/dev/videoN"


class CameraError(AgentError):
    """A camera URL is wrong, or the camera it names gave no photo (the message says why)."""


class CameraKind(enum.StrEnum):
    FILE = "file"
    LIBCAMERA = "libcamera"
    V4L2 = "v4l2"


@dataclass(frozen=True, slots=True)
class CameraSpec:
    kind: CameraKind
    path: str = ""  # the folder (file:) or the video device (v4l2:)
    index: int | None = None  # libcamera: which camera (None: the default one)

    def __str__(self) -> str:
        if self.kind is CameraKind.LIBCAMERA:
            return "libcamera:" + ("" if self.index is None else str(self.index))
        return f"{self.kind}:{self.path}"


def parse_camera_url(url: str, base: Path | None = None) -> CameraSpec:
    """`url` as a spec; a relative `file:` folder is taken from `base` (the config's folder)."""
    text = url.strip()
    if not text:
        raise CameraError(f"empty camera URL: give {FORMS}")
    if len(text) > MAX_URL or any(not c.isprintable() for c in text):
        raise CameraError(f"camera {url[:80]!r}: too long or holds a control character")
    head, colon, rest = text.partition(":")
    kind = next((k for k in CameraKind if k.value == head.lower()), None)
    if not colon or kind is None:
        raise CameraError(f"camera {url!r}: unknown kind {head!r}: give {FORMS}")
    if kind is CameraKind.LIBCAMERA:
        if rest == "":
            return CameraSpec(kind)
        if not rest.isdecimal() or int(rest) > 15:
            raise CameraError(f"camera {url!r}: after 'libcamera:' give nothing or 0..15")
        return CameraSpec(kind, index=int(rest))
    if rest.startswith("//"):  # file:///abs/dir, v4l2:///dev/video0
        rest = rest[2:]
    if not rest:
        example = "v4l2:/dev/video0" if kind is CameraKind.V4L2 else "file:photos"
        raise CameraError(f"camera {url!r}: no path after '{head}:' (as {example})")
    if kind is CameraKind.V4L2:
        if not rest.startswith("/dev/"):
            raise CameraError(f"camera {url!r}: a v4l2 camera is a device, as v4l2:/dev/video0")
        return CameraSpec(kind, path=rest)
    path = Path(rest)
    if not path.is_absolute() and base is not None:
        path = base / path
    return CameraSpec(kind, path=str(path))
