"""A device's case label: a QR code holding its id and key fingerprint, as PNG and SVG.

A technician scans the label to tell which device is in hand and which key it should sign
with, so the code holds one short, versioned line of text (`picket:1:{device}:{fingerprint}`)
rather than a URL or JSON: any scanner shows it as is, the version leaves room to change the
format later, and the device id, which never contains ':', ends at the first ':' after the
prefix while the fingerprint keeps any ':' of its own. Both parts are checked on the way in
and out (`LabelError`), so a label is never printed from, nor read into, a malformed value.
The code is drawn by segno, which is pure Python and writes PNG without Pillow: the PNG is
the bare code, for printers and tools that want a bitmap; the SVG adds the device id and the
fingerprint as text below the code, for a person reading the label without a scanner. Error
correction is at least level M, so a scratched case still scans, and the quiet zone is the
4 modules the QR standard asks for.
"""

from __future__ import annotations

import io
import re
import textwrap
from pathlib import Path
from xml.sax.saxutils import escape

import segno

from contract.protocol import DEVICE_ID
from provisioning.errors import ProvisioningBaseError

PREFIX = "picket:1:"
FINGERPRINT = re.compile(r"[A-Za-z0-9:+/=_-]{1,100}")
STEM = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")

ERROR_LEVEL = "M"  # the least; segno raises it when that costs no larger a code
QUIET_ZONE = 4  # modules, as ISO/IEC 18004 asks for QR codes
MIN_PNG_PX = 300

# The SVG's text: monospace (0/O and 1/l/I tell apart), wrapped at this many characters and
# sized so that a line spans the code's width (a monospace glyph is about 0.6 em wide).
TEXT_CHARS_PER_LINE = 24
GLYPH_WIDTH_EM = 0.62
LINE_HEIGHT_EM = 1.25


class LabelError(ProvisioningBaseError, ValueError):
    """A device id, fingerprint, file name or label text that a label cannot hold."""


def _check(device: str, fingerprint: str) -> None:
    if not DEVICE_ID.fullmatch(device):
        raise LabelError(
            f"bad device id {device!r}: want 1-64 of A-Z a-z 0-9 _ . -, starting with a letter "
            "or digit"
        )
    if not FINGERPRINT.fullmatch(fingerprint):
        raise LabelError(f"bad fingerprint {fingerprint!r}: want 1-100 of A-Z a-z 0-9 : + / = _ -")


def label_text(device: str, fingerprint: str) -> str:
    """The text the QR code holds: 'picket:1:' + device + ':' + fingerprint.

    `picket` names the format and `1` its version. The device id matches
    `contract.protocol.DEVICE_ID` and so never contains ':'; the fingerprint is opaque text of
    1-100 characters from A-Z a-z 0-9 : + / = _ - (it may contain ':', as in "SHA256:...").
    Raises `LabelError` for either part out of those bounds.
    """
    _check(device, fingerprint)
    return f"{PREFIX}{device}:{fingerprint}"


def parse_label(text: str) -> tuple[str, str]:
    """The (device, fingerprint) of a label's text; the inverse of `label_text`.

    Raises `LabelError` naming what was wrong: not a Picket label, an unsupported version,
    a missing part, a bad device id or a bad fingerprint.
    """
    if not text.startswith(PREFIX):
        if text.startswith("picket:"):
            version = text[len("picket:") :].split(":", 1)[0]
            raise LabelError(f"unsupported label version {version!r}: this reader knows 1")
        raise LabelError(f"not a Picket label: {text[:40]!r} does not start with {PREFIX!r}")
    device, sep, fingerprint = text[len(PREFIX) :].partition(":")
    if not sep:
        raise LabelError(f"label {text[:120]!r} has no fingerprint after the device id")
    _check(device, fingerprint)
    return device, fingerprint


def _svg(code: segno.QRCode, scale: int, device: str, fingerprint: str) -> str:
    width, height = (int(n) for n in code.symbol_size(scale=scale, border=QUIET_ZONE))
    margin = QUIET_ZONE * scale
    text_width = width - 2 * margin
    font = round(text_width / (TEXT_CHARS_PER_LINE * GLYPH_WIDTH_EM), 1)
    line = round(font * LINE_HEIGHT_EM, 1)

    def block(cls: str, value: str, top: float, bold: bool) -> tuple[str, float]:
        lines = textwrap.wrap(value, TEXT_CHARS_PER_LINE, break_on_hyphens=True)
        assert "".join(lines) == value  # values have no spaces, so wrapping drops nothing
        weight = ' font-weight="bold"' if bold else ""
        spans = "".join(
            f'<tspan x="{margin}" y="{round(top + i * line + font, 1)}">{escape(part)}</tspan>'
            for i, part in enumerate(lines)
        )
        element = (
            f'<text class="{cls}" font-family="monospace" font-size="{font}"{weight} '
            f'fill="#000">{spans}</text>'
        )
        return element, top + len(lines) * line

    device_text, top = block("device", device, height, bold=True)
    fingerprint_text, top = block("fingerprint", fingerprint, top + line / 2, bold=False)
    total = round(top + margin / 2)
    qr = code.svg_inline(scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    title = escape(f"Picket device {device}, key {fingerprint}")
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{total}" '
        f'viewBox="0 0 {width} {total}">'
        f"<title>{title}</title>"
        f"<desc>{escape(label_text(device, fingerprint))}</desc>"
        f'<rect width="{width}" height="{total}" fill="#fff"/>'
        f"{qr}{device_text}{fingerprint_text}</svg>\n"
    )


def write_label(
    device: str, fingerprint: str, out_dir: Path, *, stem: str = "label"
) -> tuple[Path, Path]:
    """Writes out_dir/{stem}.png and out_dir/{stem}.svg; returns (png, svg).

    Both hold the same QR code of `label_text(device, fingerprint)`: error correction level
    M or higher, a quiet zone of 4 modules, each module a whole number of pixels so that the
    PNG is at least 300 px wide. The PNG is the bare code (segno writes PNG itself, without
    Pillow, and draws no text); the SVG adds the device id (bold) and the fingerprint below
    the code as text, wrapped at 24 characters. `out_dir` is created if missing; existing
    files of the same name are replaced. Raises `LabelError` for a bad device id,
    fingerprint or stem (a plain file name without suffix, not starting with '.').
    """
    text = label_text(device, fingerprint)
    if not STEM.fullmatch(stem):
        raise LabelError(f"bad file name stem {stem!r}: want 1-64 of A-Z a-z 0-9 _ . -")
    code = segno.make_qr(text, error=ERROR_LEVEL, boost_error=True)
    modules = int(code.symbol_size(scale=1, border=QUIET_ZONE)[0])
    scale = -(-MIN_PNG_PX // modules)  # ceiling division

    png_data = io.BytesIO()
    code.save(png_data, kind="png", scale=scale, border=QUIET_ZONE, dark="#000", light="#fff")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    svg = out_dir / f"{stem}.svg"
    png.write_bytes(png_data.getvalue())
    svg.write_text(_svg(code, scale, device, fingerprint), encoding="utf-8")
    return png, svg
