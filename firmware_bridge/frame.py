"""Serial frames between the Pi and the radio MCU: one source for CPython and MicroPython.

    wire  = 0x00 COBS(body) 0x00
    body  = type (1) | id (1) | payload (0..MAX_PAYLOAD) | CRC-32 (4, little-endian)

COBS (consistent overhead byte stuffing) removes every zero from the body, so 0x00 only
ever delimits frames. Every frame starts with a delimiter as well as ending with one (an
empty frame between two zeros is nothing): after garbage, a truncated frame or a peer that
reset mid-frame, the very next frame arrives whole, so only the broken one is lost. The CRC
(CRC-32/ISO-HDLC, as zlib and binascii) covers type, id and payload; a frame whose CRC,
stuffing or length is wrong is counted and dropped, never delivered.

This file runs unchanged under MicroPython (the firmware imports it; tests run it under
the real interpreter): no dataclasses, no typing at run time, no f-strings with `=`,
only `bytes`/`bytearray`, and the CRC falls back to a table when binascii has no crc32.
docs/bridge.md has the format and test vectors.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    Frame = tuple[int, int, bytes]

MAX_PAYLOAD = 512
OVERHEAD = 6  # type, id, CRC
MAX_BODY = MAX_PAYLOAD + OVERHEAD
# COBS adds one byte per 254 and the leading code byte (delimiters not counted).
MAX_WIRE = MAX_BODY + MAX_BODY // 254 + 1

try:
    from binascii import crc32 as _crc32

    _crc32(b"")
except (ImportError, AttributeError):  # a MicroPython build without binascii.crc32
    _TABLE = []
    for _n in range(256):
        _c = _n
        for _k in range(8):
            _c = (0xEDB88320 ^ (_c >> 1)) if _c & 1 else _c >> 1
        _TABLE.append(_c)

    def _crc32(data: bytes, crc: int = 0) -> int:  # type: ignore[misc,unused-ignore]
        crc ^= 0xFFFFFFFF
        for b in data:
            crc = _TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
        return crc ^ 0xFFFFFFFF


def crc32(data: bytes) -> int:
    return int(_crc32(data)) & 0xFFFFFFFF


def cobs_encode(data: bytes) -> bytes:
    out = bytearray(len(data) + len(data) // 254 + 1)
    code_at, code, o = 0, 1, 1
    for b in data:
        if b:
            out[o] = b
            o += 1
            code += 1
            if code == 0xFF:
                out[code_at] = code
                code_at, code, o = o, 1, o + 1
        else:
            out[code_at] = code
            code_at, code, o = o, 1, o + 1
    out[code_at] = code
    return bytes(out[:o])


def cobs_decode(data: bytes) -> bytes:
    """Raise ValueError on a zero inside, or a code that runs past the end."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ValueError("zero byte inside a COBS block")
        end = i + code
        if end > n:
            raise ValueError("COBS block runs past the end of the frame")
        block = data[i + 1 : end]
        if 0 in block:
            raise ValueError("zero byte inside a COBS block")
        out.extend(block)
        i = end
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


def encode(ftype: int, fid: int, payload: bytes = b"") -> bytes:
    """One frame on the wire, both delimiters included."""
    if not 0 <= ftype <= 255 or not 0 <= fid <= 255:
        raise ValueError("frame type and id are bytes (0-255)")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError("payload of " + str(len(payload)) + " bytes; at most 512")
    body = bytes((ftype, fid)) + bytes(payload)
    c = crc32(body)
    body += bytes((c & 0xFF, (c >> 8) & 0xFF, (c >> 16) & 0xFF, (c >> 24) & 0xFF))
    return b"\x00" + cobs_encode(body) + b"\x00"


def decode_body(wire: bytes) -> "Frame":
    """A frame without its delimiter → (type, id, payload); ValueError when it is bad."""
    body = cobs_decode(wire)
    if len(body) < OVERHEAD:
        raise ValueError("frame of " + str(len(body)) + " bytes is shorter than 6")
    if len(body) > MAX_BODY:
        raise ValueError("frame longer than the maximum")
    c = body[-4] | (body[-3] << 8) | (body[-2] << 16) | (body[-1] << 24)
    if crc32(body[:-4]) != c:
        raise ValueError("CRC mismatch")
    return (body[0], body[1], bytes(body[2:-4]))


class Decoder:
    """Bytes in, whole frames out; counts what it had to drop. Never raises on input."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._skipping = False  # an oversized frame: drop until the next delimiter
        self.frames = 0
        self.bad_frames = 0  # CRC, stuffing or length wrong
        self.oversize = 0
        self.dropped_bytes = 0

    def reset(self) -> None:
        """Forget a partial frame (the port was closed, the peer reset)."""
        self.dropped_bytes += len(self._buf)
        self._buf = bytearray()
        self._skipping = False

    def feed(self, data: bytes) -> "list[Frame]":
        out = []
        for b in data:
            if b == 0:
                if self._skipping:
                    self._skipping = False
                elif self._buf:
                    try:
                        out.append(decode_body(bytes(self._buf)))
                        self.frames += 1
                    except ValueError:
                        self.bad_frames += 1
                        self.dropped_bytes += len(self._buf) + 1
                self._buf = bytearray()
                continue
            if self._skipping:
                self.dropped_bytes += 1
                continue
            self._buf.append(b)
            if len(self._buf) > MAX_WIRE:
                self.oversize += 1
                self.dropped_bytes += len(self._buf)
                self._buf = bytearray()
                self._skipping = True
        return out
