"""A simulated camera that makes real JPEGs: a drawn street scene, text and sensor noise.

The device's photo path (agent/events/camera.py, agent/events/photos.py) is tested with
photos a real decoder must read, of a real camera's size, and carrying what a phone's or a
camera's EXIF carries: the GPS position, the body's serial number, the time the shutter
fired and an orientation tag. The tests then prove that all of it is gone from what the
device stores, and that the orientation was applied to the pixels.

Each photo is determined by (seed, number): the same seed gives the same bytes on every
run, so a test can name a photo and find it again; a new number gives a different scene.
`write_into` puts photos in a folder for a `file:DIR` camera, one newer than the other.
"""

from __future__ import annotations

import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

__all__ = ["GPS", "SimCamera"]

ORIENTATION = 0x0112
MAKE, MODEL = 0x010F, 0x0110
EXIF_IFD, GPS_IFD = 0x8769, 0x8825
DATE_ORIGINAL, BODY_SERIAL = 0x9003, 0xA431
GPS = (39.906217, 116.391276)  # what the EXIF claims: where the member was standing


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return float(degrees), float(minutes), seconds


@dataclass(frozen=True, slots=True)
class SimCamera:
    seed: int = 1
    width: int = 1280
    height: int = 960
    quality: int = 90  # what a camera writes: larger than the device's re-encoding

    def scene(self, number: int = 0) -> Image.Image:
        """The picture itself: sky, a wall, a pile of rubbish, a label, noise."""
        rng = random.Random(self.seed * 1_000_003 + number)
        w, h = self.width, self.height
        img = Image.new("RGB", (w, h), (rng.randrange(120, 200), 170, 220))
        draw = ImageDraw.Draw(img)
        draw.rectangle((0, h // 3, w, h), fill=(rng.randrange(90, 140), 100, 96))
        for _ in range(24):  # the pile: boxes and bags
            x, y = rng.randrange(w), rng.randrange(h // 2, h)
            r = rng.randrange(max(2, w // 40), max(3, w // 8))
            colour = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
            if rng.random() < 0.5:
                draw.rectangle((x - r, y - r // 2, x + r, y + r // 2), fill=colour)
            else:
                draw.ellipse((x - r, y - r, x + r, y + r), fill=colour)
        font = ImageFont.load_default(size=max(8, h // 16))
        draw.text((w // 20, h // 20), f"cam {self.seed} #{number}", fill="white", font=font)
        noise = Image.frombytes("L", (w, h), rng.randbytes(w * h)).convert("RGB")
        return Image.blend(img, noise, 0.12)

    def jpeg(
        self,
        number: int = 0,
        *,
        gps: tuple[float, float] | None = None,
        orientation: int | None = None,
        serial: str | None = None,
    ) -> bytes:
        """The scene as a JPEG; with `gps`, `orientation` (1-8) or `serial`, EXIF as a phone
        writes it (GPS IFD, the orientation tag, make, model, body serial, shutter time)."""
        exif = Image.Exif()
        if gps is not None or orientation is not None or serial is not None:
            exif[MAKE], exif[MODEL] = "PicketSim", "SimCam 1"
            inner = exif.get_ifd(EXIF_IFD)
            inner[DATE_ORIGINAL] = "2026:05:01 08:30:00"
            if serial is not None:
                inner[BODY_SERIAL] = serial
        if orientation is not None:
            exif[ORIENTATION] = orientation
        if gps is not None:
            lat, lon = gps
            ifd = exif.get_ifd(GPS_IFD)
            ifd[1], ifd[2] = ("N" if lat >= 0 else "S"), _dms(lat)
            ifd[3], ifd[4] = ("E" if lon >= 0 else "W"), _dms(lon)
        out = io.BytesIO()
        self.scene(number).save(out, "JPEG", quality=self.quality, exif=exif.tobytes())
        return out.getvalue()

    def write_into(
        self,
        folder: Path,
        number: int = 0,
        *,
        gps: tuple[float, float] | None = None,
        orientation: int | None = None,
    ) -> Path:
        """Photo `number` written into `folder` as a camera app would: whole, then renamed,
        and newer than every photo written there before (its mtime is set past theirs)."""
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"IMG_{self.seed:04d}_{number:05d}.jpg"
        tmp = folder / f".{path.name}.part"
        tmp.write_bytes(self.jpeg(number, gps=gps, orientation=orientation))
        newest = max((p.stat().st_mtime_ns for p in folder.glob("*.jpg")), default=0)
        stamp = max(newest + 1_000_000, tmp.stat().st_mtime_ns)
        os.utime(tmp, ns=(stamp, stamp))
        tmp.replace(path)
        return path
