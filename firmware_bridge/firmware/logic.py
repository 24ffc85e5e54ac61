"""The radio MCU's behaviour, with no hardware in it: frames in, frames and HAL calls out.

Everything the MCU decides lives here so that one source runs on the board (main.py with
board_rp2.py), in the CPython simulator (mcusim.py) and inside real MicroPython in the
tests, and behaves the same byte for byte in all three. Hence its shape:

* No clock of its own: every entry point takes `now_ms` from a monotonic millisecond
  counter that never wraps (main.py extends `time.ticks_ms`).
* No blocking: `feed` answers requests at once, `tick` does everything that happens over
  time (received packets, the SOS button's debounce, indicator patterns, time-outs, the
  watchdog). Nothing here sleeps or waits for the radio.
* MicroPython's subset only: no dataclasses, no `match`, no f-strings, typing only under
  TYPE_CHECKING, `struct` and `hashlib.sha256` for the byte work. The imports work both
  as the package `firmware_bridge.firmware.logic` and flat on the board, where
  frame.py, messages.py and lora.py sit next to this file.

The request/response contract is messages.py's docstring; the choices it leaves open are
made here: the radio starts with DEFAULT_RADIO, a RADIO_SEND is transmitted at most once
per request id (a repeat of the last one, same id and same packet, is answered from memory:
the host retries with the same id when an answer was lost), an SOS event goes out on every
debounced release and counts the presses of one burst, a new image must run
CONFIRM_AFTER_MS and answer a HELLO before it calls itself healthy (boot.py's
confirmation), and a firmware update left idle for FW_IDLE_MS is abandoned.
"""

import hashlib
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from firmware_bridge import frame, lora
    from firmware_bridge import messages as m
    from firmware_bridge.firmware.hal import Hal

    Reply = tuple[int, bytes]
    Handler = Callable[[bytes, int], Reply]
else:
    try:
        from firmware_bridge import frame, lora
        from firmware_bridge import messages as m
    except ImportError:  # flat on the board and in the MicroPython tests
        import frame
        import lora
        import messages as m

# (freq_hz, sf, bw_hz, cr, power_dbm, preamble, sync): CN470 as lora.py's link model, SF9,
# the private sync word; the host sends RADIO_CONFIG for its own plan.
DEFAULT_RADIO = (470_300_000, 9, 125_000, 5, 14, 8, 0x12)
FREQ_MIN_HZ = 150_000_000  # SX1262 synthesiser range (datasheet §3.1)
FREQ_MAX_HZ = 960_000_000
LORA_BANDWIDTHS = (7800, 10400, 15600, 20800, 31250, 41700, 62500, 125000, 250000, 500000)
POWER_MIN_DBM = -9  # SX1262 high-power PA (datasheet §13.4.4 SetTxParams)
POWER_MAX_DBM = 22
PREAMBLE_MIN = 6

DEBOUNCE_MS = 50  # a button level counts once it has held this long
BURST_GAP_MS = 1500  # presses closer than this (release → next press) form one burst
CONFIRM_AFTER_MS = 10_000  # a trial image is healthy after this long plus one HELLO
FW_MAX_SIZE = 1 << 20  # as fwbundle.MAX_IMAGE: two images fit the module's flash
FW_IDLE_MS = 60_000  # an update with no chunk for this long is abandoned
TX_STUCK_MS = 2_000  # past the time on air: the radio hangs, let the watchdog reset us
RX_PER_TICK = 4  # packets drained from the radio per tick at most

LOG_INFO = 1
LOG_WARNING = 2
LOG_ERROR = 3

CAPS = m.CAP_RADIO | m.CAP_SOS | m.CAP_BATTERY | m.CAP_UPDATE

LED_OFF = 0
LED_GREEN = 1
LED_RED = 2
LED_AMBER = 3

# pattern → steps of (duration_ms, buzzer, led); the indicator goes dark after the last
PATTERNS = {
    m.PATTERN_CHECKIN: ((150, True, LED_GREEN),),
    m.PATTERN_MISSED: ((600, True, LED_RED), (300, False, LED_OFF), (600, True, LED_RED)),
    m.PATTERN_LOW_BATTERY: (
        (120, True, LED_AMBER),
        (120, False, LED_OFF),
        (120, True, LED_AMBER),
        (120, False, LED_OFF),
        (120, True, LED_AMBER),
    ),
    m.PATTERN_SOS_ACK: ((2000, False, LED_RED),),
}

# single Li-ion cell at rest: (millivolts, percent), interpolated linearly in between
BATTERY_CURVE = (
    (3300, 0),
    (3500, 5),
    (3600, 10),
    (3700, 30),
    (3800, 55),
    (3900, 70),
    (4000, 80),
    (4100, 92),
    (4200, 100),
)


def battery_percent(mv: int) -> int:
    if mv <= BATTERY_CURVE[0][0]:
        return 0
    for i in range(1, len(BATTERY_CURVE)):
        hi_mv, hi_pct = BATTERY_CURVE[i]
        if mv <= hi_mv:
            lo_mv, lo_pct = BATTERY_CURVE[i - 1]
            return lo_pct + (hi_pct - lo_pct) * (mv - lo_mv) // (hi_mv - lo_mv)
    return 100


def _clamp(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def _unpack(fmt: str, payload: bytes) -> "tuple[int, ...] | None":
    """The fields of a fixed-size payload, or None when its length is wrong."""
    if len(payload) != struct.calcsize(fmt):
        return None
    return tuple(struct.unpack(fmt, payload))


class _Update:
    """One firmware transfer in progress (FW_BEGIN … FW_COMMIT)."""

    def __init__(self, version: "tuple[int, int, int]", size: int, digest: bytes, now: int):
        self.version = version
        self.size = size
        self.digest = digest
        self.received = 0
        self.last_offset = -1  # the last chunk written, to acknowledge a retry of it again
        self.last_len = 0
        self.last_crc = 0
        self.touched = now


class Mcu:
    """The MCU: `start` once, then `feed` whatever the UART brought and `tick` often.

    `trial` says the running image is on its one try (boot.py): it then refuses a new
    firmware update until it is healthy, so the image it would roll back to stays intact.
    `on_healthy` is called once, from `tick`, when the image has run `confirm_after_ms` and
    answered a HELLO; main.py confirms the image in the boot state there.
    """

    def __init__(
        self,
        hal: "Hal",
        *,
        version: "tuple[int, int, int]" = (1, 0, 0),
        boot_count: int = 1,
        reset_cause: int = 0,
        duty_cycle: float = 0.01,
        trial: bool = False,
        confirm_after_ms: int = CONFIRM_AFTER_MS,
        on_healthy: "Callable[[], None] | None" = None,
    ) -> None:
        self.hal = hal
        self.version = (version[0], version[1], version[2])
        self.boot_count = boot_count
        self.reset_cause = reset_cause
        self.trial = trial
        self.confirm_after_ms = confirm_after_ms
        self.on_healthy = on_healthy
        self.duty = lora.DutyCycle(duty_cycle)
        self.decoder = frame.Decoder()
        self.radio_config = DEFAULT_RADIO
        self.healthy = False
        self.stuck = False  # the radio hung: the watchdog is no longer fed
        self.resetting = False  # FW_COMMIT asked for a reset: nothing more is done
        self.switch_requested = False
        self._started = 0
        self._hello_seen = False
        self._tx_since = -1  # when the running transmission started, -1 when idle
        self._tx_toa = 0
        # the last RADIO_SEND: (id, packet, status, answer), to answer a retry from memory
        self._last_send = None  # type: tuple[int, bytes, int, bytes] | None
        self._update = None  # type: _Update | None
        # button: raw level and since when, debounced level, the burst
        self._raw = False
        self._raw_since = 0
        self._down = False
        self._down_since = 0
        self._presses = 0
        self._last_release = -1
        # indicator
        self._pattern = ()  # type: tuple[tuple[int, bool, int], ...]
        self._pattern_since = 0
        self._pattern_step = -1
        self._handlers = {
            m.HELLO: self._hello,
            m.PING: self._ping,
            m.RADIO_CONFIG: self._radio_config,
            m.RADIO_SEND: self._radio_send,
            m.FEEDBACK: self._feedback,
            m.BATTERY: self._battery,
            m.FW_BEGIN: self._fw_begin,
            m.FW_CHUNK: self._fw_chunk,
            m.FW_COMMIT: self._fw_commit,
            m.STATUS: self._status,
        }  # type: dict[int, Handler]

    # -- entry points ---------------------------------------------------------------------

    def start(self, now_ms: int) -> None:
        """Apply the default radio settings and announce the start (BOOT, id 0)."""
        self._started = now_ms
        freq, sf, bw, cr, power, preamble, sync = DEFAULT_RADIO
        try:
            ok = self.hal.radio.configure(freq, sf, bw, cr, power, preamble, sync)
        except Exception:
            ok = False
        v = self.version
        self._event(
            m.BOOT,
            m.pack(m.BOOT_EVENT, m.PROTOCOL, v[0], v[1], v[2], self._boot16(), self.reset_cause),
        )
        if not ok:
            self.log(LOG_ERROR, "radio rejected the default settings")

    def feed(self, data: bytes, now_ms: int) -> None:
        for ftype, fid, payload in self.decoder.feed(data):
            if self.resetting:
                return
            self._request(ftype, fid, payload, now_ms)

    def tick(self, now_ms: int) -> None:
        if self.resetting:
            return
        self._poll_radio(now_ms)
        self._poll_button(now_ms)
        self._run_pattern(now_ms)
        update = self._update
        if update is not None and now_ms - update.touched >= FW_IDLE_MS:
            self._abandon_update()
            self.log(LOG_WARNING, "firmware update abandoned: no chunk for 60 s")
        if (
            not self.healthy
            and self._hello_seen
            and now_ms - self._started >= self.confirm_after_ms
        ):
            self.healthy = True
            if self.on_healthy is not None:
                try:
                    self.on_healthy()
                except Exception:  # e.g. the flash refused the boot state: say so, run on
                    self.log(LOG_ERROR, "could not confirm this image")
        if not self.stuck:
            self.hal.watchdog.feed()

    def log(self, level: int, text: str) -> None:
        """A LOG event for the host (cut to fit one frame)."""
        self._event(m.LOG, bytes([level]) + text.encode()[: frame.MAX_PAYLOAD - 1])

    # -- frames ---------------------------------------------------------------------------

    def _event(self, etype: int, payload: bytes) -> None:
        self.hal.uart.write(frame.encode(etype, 0, payload))

    def _request(self, ftype: int, fid: int, payload: bytes, now: int) -> None:
        handler = self._handlers.get(ftype)
        if handler is None or fid == 0:  # unknown type; id 0 is reserved for events
            status, body = m.BAD_REQUEST, b""
        elif ftype == m.RADIO_SEND:
            status, body = self._radio_send_once(fid, payload, now)
        else:
            status, body = handler(payload, now)
        self.hal.uart.write(frame.encode(m.response(ftype), fid, bytes([status]) + body))
        if self.switch_requested and ftype == m.FW_COMMIT and status == m.OK:
            self.resetting = True  # the reply is out: restart into the new image
            self.hal.storage.reset()

    def _boot16(self) -> int:
        return _clamp(self.boot_count, 0, 0xFFFF)

    # -- requests (each returns status, payload after the status byte) ------------------

    def _hello(self, p: bytes, now: int) -> "Reply":
        if len(p) != 1:
            return m.BAD_REQUEST, b""
        self._hello_seen = True
        # a host (re)starting its session numbers requests afresh: an id it uses next is
        # not a retry of anything sent before
        self._last_send = None
        v = self.version
        return m.OK, m.pack(
            m.HELLO_RESPONSE,
            m.PROTOCOL,
            v[0],
            v[1],
            v[2],
            self._boot16(),
            self.reset_cause,
            CAPS,
        )

    def _ping(self, p: bytes, now: int) -> "Reply":
        if len(p) > m.MAX_ECHO:
            return m.BAD_REQUEST, b""
        return m.OK, bytes(p)

    def _radio_config(self, p: bytes, now: int) -> "Reply":
        f = _unpack(m.RADIO_CONFIG_FMT, p)
        if f is None:
            return m.BAD_REQUEST, b""
        freq, sf, bw, cr, power, preamble, sync = f
        if (
            not FREQ_MIN_HZ <= freq <= FREQ_MAX_HZ
            or not lora.MIN_SF <= sf <= lora.MAX_SF  # lora.py times SF7-12 only
            or bw not in LORA_BANDWIDTHS
            or not 5 <= cr <= 8
            or not POWER_MIN_DBM <= power <= POWER_MAX_DBM
            or preamble < PREAMBLE_MIN
        ):
            return m.BAD_REQUEST, b""
        if self._transmitting(now):
            return m.BUSY, b""
        try:
            ok = self.hal.radio.configure(freq, sf, bw, cr, power, preamble, sync)
        except Exception:
            ok = False
        if not ok:
            return m.RADIO_ERROR, b""
        self.radio_config = (freq, sf, bw, cr, power, preamble, sync)
        return m.OK, b""

    def _radio_send_once(self, fid: int, p: bytes, now: int) -> "Reply":
        """RADIO_SEND, idempotent per request id: the host sends a request again, with the
        same id, when no answer came back (the answer may be what was lost). A repeat of
        the last RADIO_SEND (same id, same packet) gets the answer that request got, and
        nothing goes on the air again; any other RADIO_SEND is a new request."""
        last = self._last_send
        if last is not None and last[0] == fid and last[1] == p:
            return last[2], last[3]
        status, body = self._radio_send(p, now)
        self._last_send = (fid, bytes(p), status, body)
        return status, body

    def _radio_send(self, p: bytes, now: int) -> "Reply":
        if not 1 <= len(p) <= m.MAX_PACKET:
            return m.BAD_REQUEST, b""
        if self._transmitting(now):
            return m.BUSY, b""
        toa = self.time_on_air(len(p))
        if not self.duty.allowed(now, toa):
            return m.DUTY_CYCLE, b""
        try:
            ok = self.hal.radio.send(bytes(p), now)
        except Exception:
            ok = False
        if not ok:
            return m.RADIO_ERROR, b""
        self.duty.record(now, toa)
        self._tx_since = now
        self._tx_toa = toa
        return m.OK, m.pack("<I", toa)

    def time_on_air(self, length: int) -> int:
        """Milliseconds a packet of `length` bytes takes with the current settings."""
        c = self.radio_config
        return lora.time_on_air_ms(length, c[1], c[2], c[3], preamble=c[5])

    def _feedback(self, p: bytes, now: int) -> "Reply":
        if len(p) != 1 or p[0] not in PATTERNS:
            return m.BAD_REQUEST, b""
        self._pattern = PATTERNS[p[0]]
        self._pattern_since = now
        self._pattern_step = -1
        self._run_pattern(now)
        return m.OK, b""

    def _battery(self, p: bytes, now: int) -> "Reply":
        if p:
            return m.BAD_REQUEST, b""
        mv = _clamp(int(self.hal.battery.millivolts()), 0, 0xFFFF)
        charging = 1 if self.hal.battery.charging() else 0
        return m.OK, m.pack(m.BATTERY_RESPONSE, mv, battery_percent(mv), charging)

    def _status(self, p: bytes, now: int) -> "Reply":
        if p:
            return m.BAD_REQUEST, b""
        v = self.version
        uptime_s = _clamp((now - self._started) // 1000, 0, 0xFFFFFFFF)
        pending = 1 if self._update is not None or self.switch_requested else 0
        busy = 1 if self._transmitting(now) else 0
        budget = _clamp(int(self.duty.budget_ms(now)), 0, 0xFFFFFFFF)
        return m.OK, m.pack(m.STATUS_RESPONSE, v[0], v[1], v[2], uptime_s, pending, busy, budget)

    # -- firmware update ------------------------------------------------------------------

    def _fw_begin(self, p: bytes, now: int) -> "Reply":
        if len(p) != struct.calcsize(m.FW_BEGIN_FMT):
            return m.BAD_REQUEST, b""
        major, minor, patch, size, digest = struct.unpack(m.FW_BEGIN_FMT, p)
        if size == 0:
            return m.BAD_REQUEST, b""
        if size > FW_MAX_SIZE or self.switch_requested or (self.trial and not self.healthy):
            return m.UPDATE_ERROR, b""
        try:
            self.hal.storage.clear_staged()
        except Exception:
            return m.UPDATE_ERROR, b""
        self._update = _Update((major, minor, patch), size, bytes(digest), now)
        return m.OK, b""

    def _fw_chunk(self, p: bytes, now: int) -> "Reply":
        if len(p) < 5 or len(p) - 4 > m.FW_CHUNK_MAX:
            return m.BAD_REQUEST, b""
        u = self._update
        if u is None:
            return m.UPDATE_ERROR, b""
        offset = struct.unpack("<I", p[:4])[0]
        data = bytes(p[4:])
        u.touched = now
        if (
            offset == u.last_offset
            and len(data) == u.last_len
            and offset + len(data) == u.received
            and frame.crc32(data) == u.last_crc
        ):
            return m.OK, b""  # the host retried the chunk we already wrote
        if offset != u.received or u.received + len(data) > u.size:
            return m.UPDATE_ERROR, b""
        try:
            self.hal.storage.write_staged(offset, data)
        except Exception:
            return m.UPDATE_ERROR, b""
        u.received += len(data)
        u.last_offset = offset
        u.last_len = len(data)
        u.last_crc = frame.crc32(data)
        return m.OK, b""

    def _fw_commit(self, p: bytes, now: int) -> "Reply":
        if p:
            return m.BAD_REQUEST, b""
        u = self._update
        if u is None or u.received != u.size:
            return m.UPDATE_ERROR, b""
        try:
            digest = self._staged_digest(u.size)
        except Exception:
            digest = b""
        if digest != u.digest:
            self._abandon_update()
            return m.UPDATE_ERROR, b""
        try:
            self.hal.storage.request_switch(u.version)
        except Exception:
            self._abandon_update()
            return m.UPDATE_ERROR, b""
        self._update = None
        self.switch_requested = True  # _request resets once the reply is written
        return m.OK, b""

    def _staged_digest(self, size: int) -> bytes:
        """SHA-256 of what the flash holds now, read back piece by piece."""
        h = hashlib.sha256()
        offset = 0
        while offset < size:
            n = min(m.FW_CHUNK_MAX, size - offset)
            piece = self.hal.storage.read_staged(offset, n)
            if len(piece) != n:
                raise OSError("short read of the staged image")
            h.update(piece)
            offset += n
        return bytes(h.digest())

    def _abandon_update(self) -> None:
        self._update = None
        try:
            self.hal.storage.clear_staged()
        except Exception:
            self.log(LOG_ERROR, "could not clear the staged image")

    # -- over time ------------------------------------------------------------------------

    def _transmitting(self, now: int) -> bool:
        try:
            return bool(self.hal.radio.busy(now))
        except Exception:
            return True

    def _poll_radio(self, now: int) -> None:
        if self._tx_since >= 0:
            if not self._transmitting(now):
                self._tx_since = -1
            elif not self.stuck and now - self._tx_since > self._tx_toa + TX_STUCK_MS:
                self.stuck = True
                self.log(LOG_ERROR, "radio stuck transmitting; waiting for the watchdog")
        for _ in range(RX_PER_TICK):
            try:
                got = self.hal.radio.receive(now)
            except Exception:
                self.log(LOG_WARNING, "radio receive failed")
                return
            if got is None:
                return
            packet, rssi, snr = got
            rssi_i = _clamp(int(rssi), -32768, 32767)
            snr_q = _clamp(int(snr * 4 + (0.5 if snr >= 0 else -0.5)), -128, 127)
            self._event(m.RADIO_RX, m.pack(m.RX_HEAD, rssi_i, snr_q) + bytes(packet))

    def _poll_button(self, now: int) -> None:
        level = bool(self.hal.button.pressed())
        if level != self._raw:
            self._raw = level
            self._raw_since = now
            return
        if level == self._down or now - self._raw_since < DEBOUNCE_MS:
            return
        self._down = level
        edge = self._raw_since  # when the level really changed, not when it settled
        if level:
            if self._last_release >= 0 and edge - self._last_release <= BURST_GAP_MS:
                self._presses += 1
            else:
                self._presses = 1
            self._down_since = edge
        else:
            self._last_release = edge
            held = _clamp(edge - self._down_since, 0, 0xFFFFFFFF)
            self._event(m.SOS, m.pack(m.SOS_EVENT, _clamp(self._presses, 0, 255), held))

    def _run_pattern(self, now: int) -> None:
        steps = self._pattern
        if not steps:
            return
        elapsed = now - self._pattern_since
        i = 0
        while i < len(steps) and elapsed >= steps[i][0]:
            elapsed -= steps[i][0]
            i += 1
        if i == self._pattern_step:
            return
        self._pattern_step = i
        if i >= len(steps):
            self._pattern = ()
            self.hal.indicator.set(False, LED_OFF)
        else:
            self.hal.indicator.set(steps[i][1], steps[i][2])
