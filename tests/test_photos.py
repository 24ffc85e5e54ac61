"""Photos re-encoded on the device (agent/events/photos.py), with real Pillow images.

What a member or the center would check of a stored photo: read back with Pillow it has no
EXIF at all (no GPS, no camera serial, no time), it is upright (the orientation tag applied
to the pixels), its longest side is bounded and never grown, the same photo gives the same
bytes and digest, and a file that is empty, not an image, damaged, too large or a
decompression bomb is refused with an error naming the file and what was wrong. The inputs
are real JPEGs from the simulated camera (simulators/camera.py) and PNGs built here byte by
byte where a hostile header is the point.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
import zlib

import pytest
from PIL import Image, ImageCms

from agent.events.photos import Photo, PhotoError, reencode
from simulators.camera import GPS, SimCamera

MB = 1_000_000


def shrink(data: bytes, *, name: str = "photo", max_pixels: int | None = None) -> Photo:
    """`reencode` with the device's default settings."""
    return reencode(
        data, max_side=1600, quality=80, max_input_bytes=20 * MB, name=name, max_pixels=max_pixels
    )


def _png(width: int, height: int) -> bytes:
    """A PNG that declares `width` x `height` 1-bit pixels and holds almost nothing."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
        )

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def _halves(orientation: int) -> bytes:
    """100 x 50 stored pixels, left half red, right half blue, with an orientation tag."""
    img = Image.new("RGB", (100, 50), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, 50, 50))
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    img.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def _open(data: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(data))
    img.load()
    return img


def test_gps_serial_and_time_are_gone_from_the_stored_photo() -> None:
    raw = SimCamera(seed=7).jpeg(0, gps=GPS, orientation=1, serial="SN-4711-XYZ")
    before = _open(raw).getexif()
    assert before.get_ifd(0x8825), "the simulated camera wrote no GPS: the test proves nothing"
    photo = shrink(raw)
    after = _open(photo.data)
    assert after.format == "JPEG"
    assert len(after.getexif()) == 0
    assert "exif" not in after.info and "xmp" not in after.info
    assert b"Exif\0\0" not in photo.data
    for leak in (b"SN-4711-XYZ", b"PicketSim", b"2026:05:01"):
        assert leak not in photo.data


def test_a_comment_xmp_and_colour_profile_are_gone_too() -> None:
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/'
        b'22-rdf-syntax-ns#"><rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" '
        b'tiff:Orientation="6" tiff:Make="LeakyPhone"/></rdf:RDF></x:xmpmeta>'
    )
    out = io.BytesIO()
    Image.new("RGB", (200, 100), (10, 200, 30)).save(
        out, "JPEG", icc_profile=profile, xmp=xmp, comment=b"home: Building 6, flat 302"
    )
    assert {"icc_profile", "xmp", "comment"} <= set(_open(out.getvalue()).info)
    photo = shrink(out.getvalue())
    after = _open(photo.data)
    assert not {"icc_profile", "xmp", "comment", "exif"} & set(after.info)
    assert b"flat 302" not in photo.data and b"LeakyPhone" not in photo.data
    assert after.size == (100, 200)  # the XMP orientation was applied, like EXIF's


@pytest.mark.parametrize(
    ("orientation", "max_side", "size", "top", "bottom"),
    [
        (6, 1600, (50, 100), "red", "blue"),  # stored column 0 is the visual top
        (6, 80, (40, 80), "red", "blue"),
        (8, 1600, (50, 100), "blue", "red"),  # stored column 0 is the visual bottom
        (1, 1600, (100, 50), None, None),
    ],
)
def test_the_orientation_tag_is_applied_to_the_pixels(
    orientation: int, max_side: int, size: tuple[int, int], top: str | None, bottom: str | None
) -> None:
    photo = reencode(_halves(orientation), max_side=max_side, quality=90, max_input_bytes=MB)
    img = _open(photo.data)
    assert img.size == size == (photo.width, photo.height)
    assert len(img.getexif()) == 0  # no orientation tag left to apply a second time
    if top is None:
        return
    colours = {"red": (255, 0, 0), "blue": (0, 0, 255)}
    rgb = img.convert("RGB")
    w, h = img.size
    assert bottom is not None
    for (x, y), want in (((w // 2, h // 5), top), ((w // 2, h * 4 // 5), bottom)):
        got = rgb.getpixel((x, y))
        assert isinstance(got, tuple)
        assert all(abs(a - b) < 40 for a, b in zip(got, colours[want], strict=True)), (x, y, got)


def test_the_longest_side_is_bounded_and_never_grown() -> None:
    camera = SimCamera(seed=3, width=1280, height=960)
    big = reencode(camera.jpeg(), max_side=640, quality=80, max_input_bytes=20 * MB)
    assert _open(big.data).size == (640, 480)
    tall = SimCamera(seed=3, width=300, height=1000).jpeg()
    assert _open(reencode(tall, max_side=500, quality=80, max_input_bytes=MB).data).size == (
        150,
        500,
    )
    small = SimCamera(seed=3, width=300, height=200).jpeg()
    assert _open(shrink(small).data).size == (300, 200)


def test_a_photo_is_smaller_at_a_lower_quality_and_mode_is_rgb() -> None:
    raw = SimCamera(seed=5).jpeg()
    fine = reencode(raw, max_side=1600, quality=90, max_input_bytes=20 * MB)
    rough = reencode(raw, max_side=1600, quality=40, max_input_bytes=20 * MB)
    assert rough.size < fine.size < len(raw) * 2
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    out = io.BytesIO()
    rgba.save(out, "PNG")
    flat = _open(shrink(out.getvalue()).data)
    assert flat.mode == "RGB"
    assert flat.getpixel((32, 32)) == (255, 255, 255)  # transparent becomes white, not black


def test_the_same_photo_gives_the_same_bytes_and_its_digest() -> None:
    raw = SimCamera(seed=11).jpeg(2, gps=GPS, orientation=6)
    one, two = shrink(raw), shrink(raw)
    assert one.data == two.data
    assert one.sha256 == hashlib.sha256(one.data).digest()
    other = shrink(SimCamera(seed=11).jpeg(3))
    assert other.sha256 != one.sha256


def test_a_50_mb_input_is_refused_before_decoding() -> None:
    # a valid JPEG followed by padding Pillow would ignore: only the size refuses it
    raw = SimCamera(seed=1, width=64, height=48).jpeg()
    padded = raw + bytes(50 * MB - len(raw))
    assert _open(padded).size == (64, 48)
    with pytest.raises(PhotoError, match=r"^big\.jpg: 50\.0 MB, larger than the 20 MB"):
        reencode(padded, max_side=1600, quality=80, max_input_bytes=20 * MB, name="big.jpg")
    exact = raw + bytes(MB - len(raw))
    assert reencode(exact, max_side=1600, quality=80, max_input_bytes=MB).width == 64
    with pytest.raises(PhotoError, match="larger than"):
        reencode(exact + b"\0", max_side=1600, quality=80, max_input_bytes=MB)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", r"^photo\.png: empty \(0 bytes\)"),
        (b"%PDF-1.7 not a photo at all", r"^photo\.png: not an image Pillow can read: "),
        (b"\xff\xd8\xff\xe0" + bytes(100), r"^photo\.png: not an image Pillow can read: "),
    ],
)
def test_what_is_not_an_image_is_refused_naming_the_file(data: bytes, message: str) -> None:
    with pytest.raises(PhotoError, match=message):
        shrink(data, name="photo.png")


def test_a_damaged_jpeg_is_refused() -> None:
    raw = SimCamera(seed=2).jpeg()
    with pytest.raises(PhotoError, match=r"^cut\.jpg: a damaged image"):
        shrink(raw[: len(raw) // 2], name="cut.jpg")


@pytest.mark.parametrize("side", [10_000, 20_000])  # Pillow warns at 1x its limit, fails at 2x
def test_a_decompression_bomb_is_a_clear_error_not_a_warning(side: int) -> None:
    bomb = _png(side, side)
    assert len(bomb) < 200
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning that escapes fails the test
        with pytest.raises(PhotoError, match=r"^bomb\.png: .*decompression bomb"):
            shrink(bomb, name="bomb.png")


def test_a_lower_pixel_limit_refuses_a_real_photo() -> None:
    raw = SimCamera(seed=2, width=1280, height=960).jpeg()
    with pytest.raises(PhotoError, match=r"1280x960 = 1,228,800 pixels, more than the 1,000,000"):
        shrink(raw, max_pixels=1_000_000)
    assert shrink(raw, max_pixels=1_228_800).width == 1280
