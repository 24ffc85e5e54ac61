"""The bounds of every value that crosses the wire, and the one check of them.

Anything a device, the center or the broker sends is decoded by the contract (records,
commands, batches, acknowledgements), and whatever decodes is soon an SQL parameter, a
`datetime`, a list index. A CBOR integer can be as large as 2**64 - 1 (or larger, as a
bignum), a string as long as the message; SQLite and PostgreSQL hold 64-bit signed
integers, `datetime` ends in the year 9999. So every value is range-checked where it is
decoded, against a bound stated here and in the CDDL of docs/records.md, docs/commands.md
and docs/protocol.md, and refused there with a `RecordError` naming the field: nothing out
of range reaches a store, a clock or a formatter.

A `Kind` is what a value must be (its CBOR shape and its bounds); `check` is the one test
of a value against a kind. contract/recordschema.py holds the record bodies' table of
kinds; contract/records.py, contract/commands.py and contract/protocol.py check their
headers and payloads with the same kinds. This module sits below them all (it imports
only the errors), so each can use it without importing the others.

The bounds, and why (docs/records.md, "Bounds"):

- Sequence numbers, command numbers, batch ids, counts of records: 0 .. 2**53 - 1. A
  device numbering a record a second would need 285 million years to reach it, and it is
  exact in a JSON number (`picket center status --json`) as well as in a 64-bit column.
- Times: ms since the Unix epoch, 0 .. 7,258,118,400,000 (2200-01-01T00:00:00Z). A fixed
  horizon, not "now plus a day": a device whose clock is wrong (a GNSS week-rollover
  correction overshooting by 19.6 years) still sends evidence worth keeping, and a record
  must be judged the same whenever it arrives; 2200 is far from any real clock and far
  inside what a `datetime` and a BIGINT hold.
- Measurements (seconds, decimetres, millivolts, bytes of a boot) and counters: 32 bits.
- Codes (types, outcomes, verdicts, kinds, states): 0 .. 255; enums narrow them further.
- Text: at most a number of UTF-8 bytes (CBOR's own `tstr .size`): ids 128, free text 512.
- Whole messages: bounded before they are decoded (`MAX_RECORD`, `MAX_BATCH_BYTES`,
  `MAX_ACK_BYTES`, `MAX_COMMAND`, `MAX_CHUNK_MESSAGE`).
- Events (docs/events.md): a category code 1 .. 65,535; at most 5 attachments to an event,
  each at most 4 MiB (a photo re-encoded on the device is a few hundred kB), a note at most
  500 characters; attachments travel in chunks of at most 64 KiB.

An error message that quotes what it refused quotes it through `shown`: a decoded value can
be an integer too long for `str()` (Python refuses past 4,300 digits with a ValueError of
its own) or text of a megabyte, and the message must still be the decoder's own error.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from contract.errors import RecordError

__all__ = [
    "ATTACHMENT",
    "ATTACHMENTS",
    "BOOT",
    "BYTES_COUNT",
    "CATEGORY",
    "CATEGORY_MAX",
    "CODE",
    "COUNT32",
    "DEVICE_ID",
    "DEVICE_ID_KIND",
    "FREE_TEXT",
    "ID_TEXT",
    "INT32",
    "LAT_E7",
    "LON_E7",
    "MAX_ACK_BYTES",
    "MAX_ATTACHMENTS",
    "MAX_ATTACHMENT_BYTES",
    "MAX_BATCH",
    "MAX_BATCH_BYTES",
    "MAX_CHUNK",
    "MAX_CHUNK_MESSAGE",
    "MAX_COMMAND",
    "MAX_FREE_TEXT",
    "MAX_ID_TEXT",
    "MAX_NOTE_CHARS",
    "MAX_RECORD",
    "PERCENT",
    "SEQ",
    "SEQ_MAX",
    "TIME",
    "TIME_MS_MAX",
    "UINT32_MAX",
    "Kind",
    "Shape",
    "check",
    "fits",
    "shown",
]

DEVICE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")

SEQ_MAX = 2**53 - 1  # sequence and command numbers, batch ids, counts of records
UINT32_MAX = 2**32 - 1  # measurements and counters
TIME_MS_MAX = 7_258_118_400_000  # 2200-01-01T00:00:00Z, in ms since the Unix epoch
CODE_MAX = 255  # types, outcomes, verdicts, kinds, states
MAX_ID_TEXT = 128  # UTF-8 bytes of an id: a point, a line, a drone, a team
MAX_FREE_TEXT = 512  # UTF-8 bytes of free text: a reason, a detail

MAX_BATCH = 256  # records in one batch
# Bytes of any one record (its COSE_Sign1). The largest a device writes is a key rotation's
# receipt with its certificate request, 64-character ids and a full reason: about 620 bytes
# (a check-in: 160 on a LoRa frame, about 200 with long ids; a dock's mission record grows
# by 4 bytes a missed point). Fields each have their bound as well; not all at once fit.
MAX_RECORD = 1024
# The largest batch of MAX_BATCH records of MAX_RECORD bytes: each record's byte-string
# head is 3 bytes, the map, its id and the array's head at most 16.
MAX_BATCH_BYTES = MAX_BATCH * (MAX_RECORD + 3) + 16
MAX_ACK_BYTES = 16_384  # an ack names at most MAX_BATCH sequence numbers: about 5 KiB
MAX_COMMAND = 65_536  # bytes of a signed command (a task bundle of 256 line ids fits)

# Events and their attachments (docs/events.md).
CATEGORY_MAX = 65_535  # a category code of the catalogue: 1 .. 65,535
MAX_ATTACHMENTS = 5  # attachments one event lists
MAX_ATTACHMENT_BYTES = 4 * 1024 * 1024  # one attachment (a re-encoded photo: a few hundred kB)
MAX_NOTE_CHARS = 500  # a member's note (an attachment of kind 2, UTF-8 text)
MAX_CHUNK = 64 * 1024  # data bytes in one chunk of an attachment
# One chunk message: MAX_CHUNK of data, a 32-byte digest, three integers and the map's heads.
MAX_CHUNK_MESSAGE = MAX_CHUNK + 128


class Shape(enum.Enum):
    """The CBOR shape of a value."""

    UINT = "an unsigned integer"
    INT = "an integer"
    TEXT = "text"
    BYTES = "a byte string"
    BYTES_OR_UINT = "a byte string or an unsigned integer"
    ARRAY = "an array"
    TUPLE = "an array of fixed length"  # `items`: one kind per position


@dataclass(frozen=True, slots=True)
class Kind:
    """What a value must be: its shape, and its bounds, inclusive. For numbers `low..high`
    is the value; for text (UTF-8 bytes) and byte strings its length; for arrays the
    number of items, each of kind `item`. `BYTES_OR_UINT` bounds the bytes' length by
    `low..high` and the integer by `item`."""

    shape: Shape
    low: int
    high: int
    item: Kind | None = None
    note: str = ""  # instead of the generated description, when a name says more
    items: tuple[Kind, ...] = ()  # TUPLE: the kind of each position, in order

    @property
    def what(self) -> str:
        """How an error message names what a value must be."""
        if self.note:
            return self.note
        s = self.shape
        if s is Shape.UINT:
            return f"an unsigned integer up to {self.high}"
        if s is Shape.INT:
            return f"an integer {self.low}..{self.high}"
        if s is Shape.TEXT:
            if self.low == 0:
                return f"text of at most {self.high} UTF-8 bytes"
            return f"text of {self.low}..{self.high} UTF-8 bytes"
        if s is Shape.BYTES:
            if self.low == self.high:
                return f"a byte string of {self.low} bytes"
            return f"a byte string of {self.low}..{self.high} bytes"
        if s is Shape.BYTES_OR_UINT:
            assert self.item is not None
            return f"a byte string of up to {self.high} bytes or {self.item.what}"
        if s is Shape.TUPLE:
            return f"[{', '.join(k.what for k in self.items)}]"
        assert self.item is not None
        return f"an array of {self.low}..{self.high} items, each {self.item.what}"


# The constructors below run at import only, building the kinds; a mutation test cannot reach
# them (docs/testing.md, "Mutation benchmark"); the kinds they build are tested.
def uint(high: int, note: str = "") -> Kind:  # pragma: no mutate block
    return Kind(Shape.UINT, 0, high, note=note)


def sint(low: int, high: int, note: str = "") -> Kind:  # pragma: no mutate block
    return Kind(Shape.INT, low, high, note=note)


def text(high: int, low: int = 0) -> Kind:  # pragma: no mutate block
    return Kind(Shape.TEXT, low, high)


def byte_string(high: int, low: int = 0) -> Kind:  # pragma: no mutate block
    return Kind(Shape.BYTES, low, high)


def array(item: Kind, high: int, low: int = 0) -> Kind:  # pragma: no mutate block
    return Kind(Shape.ARRAY, low, high, item)


def tuple_of(*items: Kind, note: str = "") -> Kind:  # pragma: no mutate block
    return Kind(Shape.TUPLE, len(items), len(items), note=note, items=items)


SEQ = uint(SEQ_MAX)
BOOT = uint(UINT32_MAX)
COUNT32 = uint(UINT32_MAX)
BYTES_COUNT = uint(SEQ_MAX)
CODE = uint(CODE_MAX)
PERCENT = uint(100, "an unsigned integer up to 100")
INT32 = sint(-(2**31), 2**31 - 1)
TIME = uint(TIME_MS_MAX, f"a time in ms up to {TIME_MS_MAX} (2200-01-01)")
ID_TEXT = text(MAX_ID_TEXT)
FREE_TEXT = text(MAX_FREE_TEXT)
LAT_E7 = sint(-900_000_000, 900_000_000, "an integer within ±90° × 10⁷")
LON_E7 = sint(-1_800_000_000, 1_800_000_000, "an integer within ±180° × 10⁷")
CATEGORY = Kind(Shape.UINT, 1, CATEGORY_MAX, note=f"a category code 1..{CATEGORY_MAX}")
DIGEST = byte_string(32, 32)  # a SHA-256
ATTACHMENT_SIZE = Kind(
    Shape.UINT, 1, MAX_ATTACHMENT_BYTES, note=f"a size 1..{MAX_ATTACHMENT_BYTES}"
)
ATTACHMENT = tuple_of(  # one attachment of an event: [kind, sha256, size]
    Kind(Shape.UINT, 1, 3), DIGEST, ATTACHMENT_SIZE,
    note=f"[kind 1..3, a 32-byte SHA-256, a size 1..{MAX_ATTACHMENT_BYTES}]",
)  # fmt: skip
ATTACHMENTS = array(ATTACHMENT, MAX_ATTACHMENTS)
DEVICE_ID_KIND = Kind(
    Shape.TEXT, 1, 64, note="a device id (1-64 of A-Z a-z 0-9 _ . -, a letter or digit first)"
)


def _text_fits(kind: Kind, v: str) -> bool:
    n = len(v)
    if n > kind.high:  # a character is at least one UTF-8 byte
        return False
    if n * 4 > kind.high:  # and at most four
        n = len(v.encode("utf-8", "surrogatepass"))
    return kind.low <= n <= kind.high


def fits(kind: Kind, v: object) -> bool:
    """Whether `v` (as cbor2 decodes it) is a value of `kind`."""
    s = kind.shape
    if s is Shape.UINT or s is Shape.INT:
        # type(v) is int: a CBOR true/false is never a number (bool is an int subclass)
        return type(v) is int and kind.low <= v <= kind.high
    if s is Shape.TEXT:
        if not isinstance(v, str) or not _text_fits(kind, v):
            return False
        return kind is not DEVICE_ID_KIND or DEVICE_ID.fullmatch(v) is not None
    if s is Shape.BYTES:
        return isinstance(v, bytes) and kind.low <= len(v) <= kind.high
    if s is Shape.BYTES_OR_UINT:
        assert kind.item is not None
        if isinstance(v, bytes):
            return kind.low <= len(v) <= kind.high
        return fits(kind.item, v)
    if s is Shape.TUPLE:
        if not isinstance(v, list | tuple) or len(v) != len(kind.items):
            return False
        return all(fits(k, x) for k, x in zip(kind.items, v, strict=True))
    assert kind.item is not None
    if not isinstance(v, list | tuple) or not kind.low <= len(v) <= kind.high:
        return False
    item = kind.item
    return all(fits(item, x) for x in v)


def check(kind: Kind, v: object, field: str) -> None:
    """Raise RecordError("{field} must be {what}") unless `v` is a value of `kind`."""
    if not fits(kind, v):
        raise RecordError(f"{field} must be {kind.what}")


SHOWN_MAX = 60  # characters of a value quoted in an error message


def shown(value: object, limit: int = SHOWN_MAX) -> str:
    """`value` as an error message quotes it: its repr, cut to about `limit` characters; an
    integer too long to print whole as "an integer of N digits". Never raises."""
    if isinstance(value, int) and not isinstance(value, bool):
        bits = abs(int(value)).bit_length()
        if bits > 200:  # past 60 digits the count says enough (log10(2) digits a bit)
            return f"an integer of about {int(bits * 0.30103) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # a repr that fails: a huge integer inside a list, deep nesting
        return f"a {type(value).__name__} that cannot be shown"
    if len(text) > limit:
        return f"{text[: limit - 1]}… ({len(text)} characters)"
    return text
