"""Which firmware image the MCU runs at a start: the A/B decision with one try and rollback.

The decision is a pure function of a tiny state record (`State`, JSON on flash) and the
hardware's reset cause, so it is tested exhaustively off the board and the simulator can
keep the same record in a file of its own. The shape follows what must survive a power
cut at any moment:

* The factory image is the files flashed at the root of the board (slot ""); updates are
  installed into slot "a" or "b", whichever is not running, so the image to fall back to
  is never the one being overwritten.
* FW_COMMIT only records `pending` (`request_switch`) and resets. The next start turns
  pending into the running image, installs it from the staged file, and marks it `tried`
  and not `confirmed`: it gets exactly one start.
* The new image confirms itself (`confirm`) once it has run a while and answered a
  HELLO (logic.Mcu's `on_healthy`). If the MCU starts again while the image is tried but
  unconfirmed (it crashed, hung until the watchdog bit, or lost power), the decision
  rolls back to the previous image and reports RESET_ROLLBACK. Rollback wins over a
  pending update: an image that never confirmed cannot hand over to another.
* `machine.reset()` looks like a watchdog reset on the RP2040, so a reset the firmware
  asked for is recorded first (`soft`) and reported as RESET_SOFT.

Every change is written whole to a new file and renamed over the old one (`FileStore`).
Runs under MicroPython (json, os); typing only under TYPE_CHECKING. Named boot.py as the
design asks; on the board MicroPython also runs a /boot.py at power-up, which for this
module only defines names, harmlessly.
"""

import json
import os
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    Version = tuple[int, int, int]
    Entry = tuple[str, int, int]

# as messages.RESET_* (test_firmware checks): boot.py is the fixed first stage and must not
# import modules an updated image brings along in its own slot
RESET_POWER_ON = 0
RESET_WATCHDOG = 1
RESET_SOFT = 2
RESET_ROLLBACK = 3

FACTORY_SLOT = ""
UPDATE_SLOTS = ("a", "b")
STATE_FORMAT = 1


def _version(v: object) -> "Version":
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError("a version is three numbers")
    out = []
    for x in v:
        if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= 255:
            raise ValueError("a version number is 0-255")
        out.append(x)
    return (out[0], out[1], out[2])


class State:
    """What the boot decision remembers between starts."""

    def __init__(self, factory: "Version") -> None:
        self.factory = _version(factory)
        self.slot = FACTORY_SLOT  # the image that runs
        self.version = self.factory
        self.prev_slot = None  # type: str | None
        self.prev_version = None  # type: Version | None
        self.pending = None  # type: Version | None
        self.tried = False  # the running image is on its one start
        self.confirmed = True
        self.soft = False  # the firmware asked for the coming reset
        self.boots = 0

    def copy(self) -> "State":
        s = State(self.factory)
        s.slot = self.slot
        s.version = self.version
        s.prev_slot = self.prev_slot
        s.prev_version = self.prev_version
        s.pending = self.pending
        s.tried = self.tried
        s.confirmed = self.confirmed
        s.soft = self.soft
        s.boots = self.boots
        return s

    def to_json(self) -> bytes:
        doc = {
            "format": STATE_FORMAT,
            "factory": list(self.factory),
            "slot": self.slot,
            "version": list(self.version),
            "prev_slot": self.prev_slot,
            "prev_version": None if self.prev_version is None else list(self.prev_version),
            "pending": None if self.pending is None else list(self.pending),
            "tried": self.tried,
            "confirmed": self.confirmed,
            "soft": self.soft,
            "boots": self.boots,
        }
        # keys sorted by hand: MicroPython's dicts keep no order, and the same state should
        # be the same bytes on the board and in the simulator
        items = [json.dumps(k) + ": " + json.dumps(doc[k]) for k in sorted(doc)]
        return ("{" + ", ".join(items) + "}").encode()

    @staticmethod
    def from_json(raw: bytes) -> "State":
        """ValueError (or KeyError/TypeError) when the record is damaged or foreign."""
        doc = json.loads(bytes(raw).decode())
        if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
            raise ValueError("not a boot state record")
        s = State(_version(doc["factory"]))
        s.slot = _slot(doc["slot"])
        s.version = _version(doc["version"])
        prev = doc["prev_slot"]
        s.prev_slot = None if prev is None else _slot(prev)
        pv = doc["prev_version"]
        s.prev_version = None if pv is None else _version(pv)
        pending = doc["pending"]
        s.pending = None if pending is None else _version(pending)
        s.tried = doc["tried"] is True
        s.confirmed = doc["confirmed"] is True
        s.soft = doc["soft"] is True
        boots = doc["boots"]
        s.boots = boots if isinstance(boots, int) and boots >= 0 else 0
        return s


def _slot(v: object) -> str:
    if v == FACTORY_SLOT or v in UPDATE_SLOTS:
        return str(v)
    raise ValueError("unknown image slot")


class Decision:
    """What to run now: the slot and its version, what to tell the host, what to do first."""

    def __init__(
        self, slot: str, version: "Version", reset_cause: int, boot_count: int, install: bool
    ) -> None:
        self.slot = slot
        self.version = version
        self.reset_cause = reset_cause
        self.boot_count = boot_count
        self.install = install  # unpack the staged image into `slot` before running it
        self.trial = install  # the image's one start: it must confirm itself

    def __repr__(self) -> str:
        return (
            "Decision(slot=" + repr(self.slot) + ", version=" + repr(self.version)
            + ", cause=" + str(self.reset_cause) + ", boots=" + str(self.boot_count)
            + ", install=" + repr(self.install) + ")"
        )  # fmt: skip


def decide(state: State, hw_cause: int) -> "tuple[State, Decision]":
    """The new state to save before running anything, and what to run."""
    s = state.copy()
    s.boots += 1
    cause = RESET_SOFT if s.soft else hw_cause
    s.soft = False
    if s.tried and not s.confirmed:
        return rollback(s)
    if s.pending is not None:
        s.prev_slot, s.prev_version = s.slot, s.version
        s.slot = UPDATE_SLOTS[1] if s.slot == UPDATE_SLOTS[0] else UPDATE_SLOTS[0]
        s.version = s.pending
        s.pending = None
        s.tried = True
        s.confirmed = False
        return s, Decision(s.slot, s.version, RESET_SOFT, s.boots, True)
    return s, Decision(s.slot, s.version, cause, s.boots, False)


def rollback(state: State) -> "tuple[State, Decision]":
    """Back to the previous image (the factory one if that is unknown): RESET_ROLLBACK.

    decide() calls it for an image that never confirmed; main.py when installing failed.
    """
    s = state.copy()
    if s.prev_slot is not None and s.prev_version is not None:
        s.slot, s.version = s.prev_slot, s.prev_version
    else:
        s.slot, s.version = FACTORY_SLOT, s.factory
    s.prev_slot = None
    s.prev_version = None
    s.pending = None
    s.tried = False
    s.confirmed = True
    return s, Decision(s.slot, s.version, RESET_ROLLBACK, s.boots, False)


def confirm(state: State) -> State:
    """The running image works: keep it (a no-op for one already confirmed)."""
    s = state.copy()
    s.tried = False
    s.confirmed = True
    return s


def request_switch(state: State, version: "Version") -> State:
    """A verified image is staged: try it at the next start, which we ask for."""
    s = state.copy()
    s.pending = _version(version)
    s.soft = True
    return s


def note_soft_reset(state: State) -> State:
    s = state.copy()
    s.soft = True
    return s


# -- where the state lives --------------------------------------------------------------


class Store:
    """Bytes that survive a reset: the board's flash file, the simulator's file, memory."""

    def load(self) -> "bytes | None":
        raise NotImplementedError

    def save(self, data: bytes) -> None:
        raise NotImplementedError


class MemoryStore(Store):
    def __init__(self, data: "bytes | None" = None) -> None:
        self.data = data

    def load(self) -> "bytes | None":
        return self.data

    def save(self, data: bytes) -> None:
        self.data = bytes(data)


class FileStore(Store):
    """A file, replaced whole: written to `path`.tmp, then renamed over `path`."""

    def __init__(self, path: str) -> None:
        self.path = path

    def load(self) -> "bytes | None":
        for p in (self.path, self.path + ".tmp"):  # a cut between write and rename
            try:
                with open(p, "rb") as f:
                    return bytes(f.read())
            except OSError:
                pass
        return None

    def save(self, data: bytes) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, self.path)


class Boot:
    """The state on its store: what main.py, board_rp2.py and the simulator call."""

    def __init__(self, store: Store, factory: "Version") -> None:
        self.store = store
        raw = store.load()
        try:
            self.state = State.from_json(raw) if raw else State(factory)
        except (ValueError, KeyError, TypeError):
            self.state = State(factory)  # damaged: run the factory image, start afresh

    def _save(self, state: State) -> None:
        self.store.save(state.to_json())
        self.state = state

    def start(self, hw_cause: int) -> Decision:
        state, d = decide(self.state, hw_cause)
        self._save(state)
        return d

    def install_failed(self) -> Decision:
        state, d = rollback(self.state)
        self._save(state)
        return d

    def confirm(self) -> None:
        if not self.state.confirmed or self.state.tried:
            self._save(confirm(self.state))

    def request_switch(self, version: "Version") -> None:
        self._save(request_switch(self.state, version))

    def note_soft_reset(self) -> None:
        self._save(note_soft_reset(self.state))


# -- the image format: the files of one slot --------------------------------------------

IMAGE_MAGIC = b"PKI1"


def pack_image(files: "list[tuple[str, bytes]]") -> bytes:
    """An image: b"PKI1", file count u16, then per file name length u8, name, size u32,
    contents. What FW_BEGIN … FW_COMMIT carry (fwbundle.py signs it as `image`)."""
    out = bytearray(IMAGE_MAGIC)
    out.extend(struct.pack("<H", len(files)))
    for name, data in files:
        raw = _name(name).encode()
        out.extend(struct.pack("<B", len(raw)))
        out.extend(raw)
        out.extend(struct.pack("<I", len(data)))
        out.extend(data)
    return bytes(out)


def image_entries(read: "Callable[[int, int], bytes]", total: int) -> "list[Entry]":
    """(name, offset, size) of each file of an image read piecewise by `read(offset, n)`,
    so the board never holds a whole image in RAM. ValueError when it is malformed."""
    if total < 6 or read(0, 4) != IMAGE_MAGIC:
        raise ValueError("not a firmware image")
    count = struct.unpack("<H", read(4, 2))[0]
    at = 6
    entries = []
    for _ in range(count):
        if at + 1 > total:
            raise ValueError("image truncated")
        n = read(at, 1)[0]
        if at + 1 + n + 4 > total:
            raise ValueError("image truncated")
        name = _name(bytes(read(at + 1, n)).decode())
        size = struct.unpack("<I", read(at + 1 + n, 4))[0]
        at += 1 + n + 4
        if at + size > total:
            raise ValueError("image truncated")
        entries.append((name, at, size))
        at += size
    if at != total:
        raise ValueError("trailing bytes after the last file")
    return entries


def _name(name: str) -> str:
    """A plain file name: the slot is one flat folder."""
    if not name or len(name) > 64 or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError("bad file name in image: " + repr(name))
    return name
