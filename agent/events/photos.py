"""Photos re-encoded on the device: whatever a camera or a file gives, a bounded plain JPEG.

A photo leaves the device as evidence of what the report says, and nothing more. Its EXIF
can say far more (where the member lives when the photo was taken at home, the phone's
serial number, the exact second), so none of it is kept: the orientation tag is applied to
the pixels (`ImageOps.exif_transpose`) and the JPEG is written with no EXIF, XMP, ICC
profile or comment at all. The longest side is brought down to `max_side` (never up) and the
quality set, so a photo is a few hundred kB whatever the camera makes, and the same input
with the same settings gives the same bytes (a resend is the same attachment, the same
digest).

The input is refused before anything is decoded when it is empty or larger than
`max_input_bytes`, and once its header is read when it is not an image Pillow can read or
declares more pixels than Pillow's `MAX_IMAGE_PIXELS` (a decompression bomb: a small file
that would decode into gigabytes). Each refusal is a `PhotoError` naming the photo and what
was wrong, one line a member or a technician can act on.

Pure: bytes in, a `Photo` out; no file, clock or camera (agent/events/camera.py takes them).
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from agent.errors import AgentError

__all__ = ["Photo", "PhotoError", "reencode"]

MB = 1_000_000


class PhotoError(AgentError):
    """A photo given by the member or a technician cannot be used (not an image, too large)."""


@dataclass(frozen=True, slots=True)
class Photo:
    data: bytes  # the JPEG, without any metadata
    width: int
    height: int
    sha256: bytes  # of `data`: the attachment's digest (docs/events.md)

    @property
    def size(self) -> int:
        return len(self.data)


def reencode(
    data: bytes,
    *,
    max_side: int,
    quality: int,
    max_input_bytes: int,
    name: str = "photo",
    progressive: bool = False,
    max_pixels: int | None = None,
) -> Photo:
    """`data` as a JPEG of at most `max_side` pixels a side, no metadata, upright.

    `name` is what errors call the photo (its file name, or the camera's URL); `max_pixels`
    defaults to Pillow's `Image.MAX_IMAGE_PIXELS` (about 89 million).
    """
    if not 16 <= max_side <= 20_000:
        raise ValueError(f"max_side {max_side}: expected 16..20000 pixels")
    if not 1 <= quality <= 95:
        raise ValueError(f"quality {quality}: expected 1..95")
    if not data:
        raise PhotoError(f"{name}: empty (0 bytes), not a photo")
    if len(data) > max_input_bytes:
        raise PhotoError(
            f"{name}: {len(data) / MB:.1f} MB, larger than the {max_input_bytes / MB:g} MB "
            "a photo may be (photo_max_input_mb): take it again at a lower resolution"
        )
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    img = _decode(data, name, limit, max_side)
    out = io.BytesIO()
    # Pillow carries some metadata over from the source's info (a JPEG comment does):
    # cleared, and no exif=, icc_profile=, xmp= or comment= given, so none is written.
    img.info.clear()
    img.save(out, "JPEG", quality=quality, optimize=True, progressive=progressive)
    jpeg = out.getvalue()
    return Photo(jpeg, img.width, img.height, hashlib.sha256(jpeg).digest())


def _decode(data: bytes, name: str, limit: int | None, max_side: int) -> Image.Image:
    """The first frame, upright, RGB, at most max_side: PhotoError for anything unusable."""
    try:
        with warnings.catch_warnings():
            # Pillow only warns between MAX_IMAGE_PIXELS and twice that: judged below instead
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise PhotoError(f"{name}: refused as a decompression bomb: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PhotoError(f"{name}: not an image Pillow can read: {exc}") from None
    with img:
        w, h = img.size
        if w <= 0 or h <= 0:
            raise PhotoError(f"{name}: an image of {w}x{h} pixels holds nothing")
        if limit is not None and w * h > limit:
            raise PhotoError(
                f"{name}: {w}x{h} = {w * h:,} pixels, more than the {limit:,} a photo may "
                "have: refused as a decompression bomb"
            )
        try:
            return _normalise(img, max_side)
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise PhotoError(f"{name}: a damaged image Pillow cannot decode: {exc}") from None


def _target(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """`size` scaled so its longest side is at most `max_side`, aspect kept, never upscaled."""
    w, h = size
    longest = max(w, h)
    if longest <= max_side:
        return w, h
    scale = max_side / longest
    return max(1, round(w * scale)), max(1, round(h * scale))


def _normalise(img: Image.Image, max_side: int) -> Image.Image:
    w, h = img.size
    if img.format == "JPEG":  # decode at 1/2, 1/4 or 1/8 scale when that is still enough
        img.draft("RGB", _target((w, h), max_side))
    upright = ImageOps.exif_transpose(img)
    if upright.mode in ("RGBA", "LA", "PA") or (
        upright.mode == "P" and "transparency" in upright.info
    ):
        rgba = upright.convert("RGBA")
        flat = Image.new("RGB", rgba.size, (255, 255, 255))
        flat.paste(rgba, mask=rgba.getchannel("A"))
        upright = flat
    rgb = upright.convert("RGB")
    target = _target(rgb.size, max_side)
    if target != rgb.size:
        rgb = rgb.resize(target, Image.Resampling.LANCZOS)
    return rgb
