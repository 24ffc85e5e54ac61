"""provisioning.label: the label text, its parser, and QR codes that a real decoder reads back.

The PNG is decoded by zbarimg (Debian's zbar-tools), a decoder that is not segno; the PNG's
quiet zone and error correction level are read from its pixels by the small PNG reader below,
so neither check trusts the library that drew the code.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

import pytest

from provisioning.label import LabelError, label_text, parse_label, write_label
from provisioning.registry import fingerprint

SVG = "{http://www.w3.org/2000/svg}"
DEVICE = "h0001"
FINGERPRINT = fingerprint(bytes(range(32)))  # hex groups, as provisioning makes them
LONGEST = ("d" * 64, "SHA256:" + "Ab0+/=_-:" * 10 + "x" * 3)  # 64 and 100 characters
NO_ZBARIMG = "zbarimg (Debian zbar-tools) not installed: ./run installs it as root"


# --- the text ----------------------------------------------------------------------------


def test_label_text_is_the_documented_format() -> None:
    assert label_text("h0001", "ab12-cd34") == "picket:1:h0001:ab12-cd34"
    assert label_text("gate.7_b-2", "SHA256:x+/=") == "picket:1:gate.7_b-2:SHA256:x+/="


@pytest.mark.parametrize(
    ("device", "fp"),
    [
        (DEVICE, FINGERPRINT),
        ("a", "b"),
        ("gate.7_b-2", "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="),
        ("x", "a:b::c:"),  # a fingerprint may hold ':' anywhere, even at its end
        LONGEST,
    ],
)
def test_parse_label_inverts_label_text(device: str, fp: str) -> None:
    assert len(LONGEST[0]) == 64 and len(LONGEST[1]) == 100
    assert parse_label(label_text(device, fp)) == (device, fp)


@pytest.mark.parametrize("device", ["", "-h1", ".h1", "h:1", "h 1", "h/1", "hé", "d" * 65, "h1\n"])
def test_bad_device_ids_are_refused(device: str) -> None:
    with pytest.raises(LabelError, match="bad device id"):
        label_text(device, FINGERPRINT)
    if ":" in device:
        return  # in a label text, the device id ends at its first ':' (see the next test)
    with pytest.raises(LabelError, match="bad device id"):
        parse_label(f"picket:1:{device}:{FINGERPRINT}")


def test_the_device_id_ends_at_the_first_colon() -> None:
    assert parse_label("picket:1:h:1:ab12") == ("h", "1:ab12")


@pytest.mark.parametrize(
    "fp", ["", "ab cd", "ab\ncd", "ab.cd", "ab#cd", "ab<cd", "ab%cd", "é", "a" * 101]
)
def test_bad_fingerprints_are_refused(fp: str) -> None:
    with pytest.raises(LabelError, match="bad fingerprint"):
        label_text(DEVICE, fp)
    with pytest.raises(LabelError, match="bad fingerprint"):
        parse_label(f"picket:1:{DEVICE}:{fp}")


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "not a Picket label"),
        ("https://example.org/h0001", "not a Picket label"),
        ("PICKET:1:h0001:ab12", "not a Picket label"),
        (" picket:1:h0001:ab12", "not a Picket label"),
        ("picket:2:h0001:ab12", "unsupported label version '2'"),
        ("picket:h0001:ab12", "unsupported label version 'h0001'"),
        ("picket:1:h0001", "no fingerprint"),
        ("picket:1:", "no fingerprint"),
        ("picket:1::ab12", "bad device id"),
        ("picket:1:h0001:", "bad fingerprint"),
    ],
)
def test_wrong_label_texts_are_refused_by_name(text: str, why: str) -> None:
    with pytest.raises(LabelError, match=why):
        parse_label(text)


def test_label_error_is_a_value_error() -> None:
    assert issubclass(LabelError, ValueError)


# --- the PNG, read back without segno ----------------------------------------------------


def read_png(path: Path) -> list[list[bool]]:
    """The pixels of a non-interlaced 1-bit greyscale PNG, True where dark."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat = 8, b""
    width = height = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, colour, _, _, interlace = struct.unpack(">2I5B", body)
            assert (depth, colour, interlace) == (1, 0, 0), "expected 1-bit greyscale"
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = (width + 7) // 8
    rows: list[list[bool]] = []
    above = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        filt, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - 1] if x else 0
            up, up_left = above[x], above[x - 1] if x else 0
            if filt == 1:
                line[x] = (line[x] + left) & 0xFF
            elif filt == 2:
                line[x] = (line[x] + up) & 0xFF
            elif filt == 3:
                line[x] = (line[x] + (left + up) // 2) & 0xFF
            elif filt == 4:
                p = left + up - up_left
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - up_left)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else up_left
                line[x] = (line[x] + pred) & 0xFF
            else:
                assert filt == 0, f"unknown PNG filter {filt}"
        rows.append([not (line[x // 8] >> (7 - x % 8)) & 1 for x in range(width)])
        above = line
    return rows


def qr_geometry(pixels: list[list[bool]]) -> tuple[int, int, list[list[bool]]]:
    """(scale in px per module, quiet zone in modules, module matrix without quiet zone)."""
    top = next(y for y, row in enumerate(pixels) if any(row))
    left = pixels[top].index(True)
    run = pixels[top][left:].index(False)  # the finder pattern's top edge: 7 modules
    assert run % 7 == 0
    scale = run // 7
    assert top == left and top % scale == 0
    border = top // scale
    side = len(pixels) // scale - 2 * border
    assert len(pixels) == len(pixels[0]) == (side + 2 * border) * scale
    centre = scale // 2
    matrix = [
        [pixels[(border + r) * scale + centre][(border + c) * scale + centre] for c in range(side)]
        for r in range(side)
    ]
    # every pixel of a module has that module's colour: the code is drawn on a whole-px grid
    for r in range(side):
        for c in range(side):
            y, x = (border + r) * scale, (border + c) * scale
            block = {pixels[y + i][x + j] for i in range(scale) for j in range(scale)}
            assert block == {matrix[r][c]}
    return scale, border, matrix


def error_level(matrix: list[list[bool]]) -> str:
    """The error correction level in a QR code's first copy of its format information."""
    cells = (
        [(8, c) for c in range(6)] + [(8, 7), (8, 8), (7, 8)] + [(r, 8) for r in (5, 4, 3, 2, 1, 0)]
    )
    bits = 0
    for r, c in cells:  # most significant bit first (ISO/IEC 18004, 7.9.1)
        bits = bits << 1 | matrix[r][c]
    bits ^= 0x5412
    data = bits >> 10
    assert bits & 0x3FF == bch_remainder(data), "format information fails its BCH check"
    return {1: "L", 0: "M", 3: "Q", 2: "H"}[data >> 3]


def bch_remainder(data: int) -> int:
    """The (15, 5) BCH check bits of 5 bits of format information."""
    rem = data
    for _ in range(10):
        rem = (rem << 1) ^ ((rem >> 9) * 0x537)
    return rem & 0x3FF


@pytest.mark.parametrize(("device", "fp"), [(DEVICE, FINGERPRINT), LONGEST])
def test_png_is_a_code_of_the_label_text_with_quiet_zone_and_level(
    tmp_path: Path, device: str, fp: str
) -> None:
    png, svg = write_label(device, fp, tmp_path)
    assert (png, svg) == (tmp_path / "label.png", tmp_path / "label.svg")
    pixels = read_png(png)
    assert len(pixels[0]) >= 300
    _, border, matrix = qr_geometry(pixels)
    assert border == 4
    assert len(matrix) >= 21 and (len(matrix) - 17) % 4 == 0  # a QR code, not a Micro QR
    assert error_level(matrix) in {"M", "Q", "H"}


@pytest.mark.parametrize(("device", "fp"), [(DEVICE, FINGERPRINT), LONGEST])
def test_zbarimg_decodes_the_png_to_exactly_the_label_text(
    tmp_path: Path, device: str, fp: str
) -> None:
    zbarimg = shutil.which("zbarimg")
    if zbarimg is None:
        pytest.skip(NO_ZBARIMG)
    png, _ = write_label(device, fp, tmp_path)
    done = subprocess.run(
        [zbarimg, "--raw", "-q", str(png)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == label_text(device, fp) + "\n"
    assert parse_label(done.stdout.rstrip("\n")) == (device, fp)


# --- the SVG -----------------------------------------------------------------------------


@pytest.mark.parametrize(("device", "fp"), [(DEVICE, FINGERPRINT), LONGEST])
def test_svg_is_xml_with_the_code_and_both_values_as_text(
    tmp_path: Path, device: str, fp: str
) -> None:
    png, svg = write_label(device, fp, tmp_path)
    root = ET.parse(svg).getroot()  # noqa: S314 (our own file, just written)
    assert root.tag == f"{SVG}svg"
    texts = {t.get("class"): "".join(t.itertext()) for t in root.iter(f"{SVG}text")}
    assert texts == {"device": device, "fingerprint": fp}
    codes = root.findall(f"{SVG}svg")
    assert len(codes) == 1 and len(list(codes[0].iter(f"{SVG}path"))) >= 1
    # the code is as wide as the PNG and the text lies below it, on the label
    code_width, code_height = int(codes[0].get("width", "")), int(codes[0].get("height", ""))
    assert code_width == int(root.get("width", "")) == len(read_png(png)[0])
    for span in root.iter(f"{SVG}tspan"):
        assert code_height < float(span.get("y", "")) < float(root.get("height", ""))


def test_svg_decodes_when_a_renderer_is_at_hand(tmp_path: Path) -> None:
    rsvg = shutil.which("rsvg-convert")
    zbarimg = shutil.which("zbarimg")
    if rsvg is None or zbarimg is None:
        pytest.skip("rsvg-convert (Debian librsvg2-bin) or zbarimg (zbar-tools) not installed")
    _, svg = write_label(DEVICE, FINGERPRINT, tmp_path)
    rendered = tmp_path / "rendered.png"
    subprocess.run([rsvg, "-o", str(rendered), str(svg)], check=True, timeout=60)
    done = subprocess.run(
        [zbarimg, "--raw", "-q", str(rendered)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.stdout == label_text(DEVICE, FINGERPRINT) + "\n", done.stderr


# --- files -------------------------------------------------------------------------------


def test_stem_names_the_files_and_out_dir_is_made(tmp_path: Path) -> None:
    out = tmp_path / "labels" / "north"
    png, svg = write_label(DEVICE, FINGERPRINT, out, stem="h0001")
    assert (png, svg) == (out / "h0001.png", out / "h0001.svg")
    assert png.read_bytes().startswith(b"\x89PNG") and svg.read_text().startswith("<?xml")


@pytest.mark.parametrize(
    ("device", "fp", "stem", "why"),
    [
        ("h:1", FINGERPRINT, "label", "bad device id"),
        (DEVICE, "ab cd", "label", "bad fingerprint"),
        (DEVICE, FINGERPRINT, "../label", "bad file name stem"),
        (DEVICE, FINGERPRINT, ".hidden", "bad file name stem"),
        (DEVICE, FINGERPRINT, "", "bad file name stem"),
    ],
)
def test_write_label_refuses_bad_input_and_writes_nothing(
    tmp_path: Path, device: str, fp: str, stem: str, why: str
) -> None:
    out = tmp_path / "out"
    with pytest.raises(LabelError, match=why):
        write_label(device, fp, out, stem=stem)
    assert not out.exists()
