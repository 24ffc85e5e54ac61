"""The `[events]` section of a device's config: the camera, photo sizes, the attachment quota.

    [events]                       # optional section; every key has a default
    camera = "libcamera:"          # file:DIR, libcamera:[N], v4l2:/dev/videoN (no default:
                                   # without it photos come only from files, --photo F)
    photo_max_side = 1600          # px, the longest side of a stored photo (64-8000)
    photo_quality = 80             # JPEG quality of a stored photo (30-95)
    photo_max_input_mb = 20        # a photo larger than this is refused before decoding
    attachment_quota_mb = 200      # bytes of attachments waiting to upload, at most
    chunk_kib = 32                 # one upload chunk (1-64, docs/events.md)

MB here is 1,000,000 bytes, KiB 1024. `load_config` (agent/config.py) calls
`parse_events_section`; the camera URL is checked by agent/events/cameraurl.py, which opens
nothing, and a relative `file:` folder is taken from the config's folder like every path.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from agent.errors import ConfigError
from agent.events.cameraurl import CameraError, CameraSpec, parse_camera_url

__all__ = ["EventsConfig", "parse_events_section"]

MB = 1_000_000
KIB = 1024
# key: (kind, default, low, high)
_NUMBERS: dict[str, tuple[type, float, float, float]] = {
    "photo_max_side": (int, 1600, 64, 8000),
    "photo_quality": (int, 80, 30, 95),
    "photo_max_input_mb": (float, 20, 0.1, 200),
    "attachment_quota_mb": (float, 200, 1, 100_000),
    "chunk_kib": (int, 32, 1, 64),
}


@dataclass(frozen=True, slots=True)
class EventsConfig:
    camera: CameraSpec | None = None
    photo_max_side: int = 1600
    photo_quality: int = 80
    photo_max_input_mb: float = 20
    attachment_quota_mb: float = 200
    chunk_kib: int = 32

    @property
    def max_input_bytes(self) -> int:
        return int(self.photo_max_input_mb * MB)

    @property
    def quota_bytes(self) -> int:
        return int(self.attachment_quota_mb * MB)

    @property
    def chunk_bytes(self) -> int:
        return self.chunk_kib * KIB


def parse_events_section(table: object, base: Path, where: str) -> EventsConfig:
    """The `[events]` table (the defaults when absent); ConfigError naming the key."""
    if table is None:
        return EventsConfig()
    at = f"{where} [events]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [events] must be a table")
    unknown = sorted(set(table) - {"camera", *_NUMBERS})
    if unknown:
        raise ConfigError(f"{at}: unknown key(s) {', '.join(map(repr, unknown))}")
    camera = None
    if "camera" in table:
        url = table["camera"]
        if not isinstance(url, str):
            raise ConfigError(f"{at}: 'camera' must be a URL like \"libcamera:\"")
        try:
            camera = parse_camera_url(url, base)
        except CameraError as exc:
            raise ConfigError(f"{at}: 'camera': {exc}") from None
    values: dict[str, float] = {}
    for key, (kind, default, low, high) in _NUMBERS.items():
        value = table.get(key, default)
        ok = isinstance(value, int | float) if kind is float else isinstance(value, int)
        if not ok or isinstance(value, bool):
            what = "a whole number" if kind is int else "a number"
            raise ConfigError(f"{at}: {key!r} must be {what}, got {value!r}")
        assert isinstance(value, int | float)
        if not low <= value <= high:
            raise ConfigError(f"{at}: {key!r} {value} is out of range ({low:g}-{high:g})")
        values[key] = value
    return EventsConfig(
        camera=camera,
        photo_max_side=int(values["photo_max_side"]),
        photo_quality=int(values["photo_quality"]),
        photo_max_input_mb=float(values["photo_max_input_mb"]),
        attachment_quota_mb=float(values["attachment_quota_mb"]),
        chunk_kib=int(values["chunk_kib"]),
    )
