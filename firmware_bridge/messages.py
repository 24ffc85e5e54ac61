"""What the frames say: message types, payload layouts, status codes. Shared, like frame.py.

The host (the Pi) sends requests with an id 1-255 it chooses; the MCU answers each with the
same id and type | RESPONSE, the payload starting with a status byte. The MCU sends events
unasked, with id 0. Multi-byte integers are little-endian. docs/bridge.md is the contract;
this module is its code, importable by the firmware (MicroPython) and the host (CPython).

Payloads (request → response, after the status byte):
  HELLO         host_version u8                → proto u8, fw major/minor/patch u8×3,
                                                  boot_count u16, reset_cause u8, caps u8
  PING          echo (≤ 32 bytes)              → echo
  RADIO_CONFIG  freq_hz u32, sf u8, bw_hz u32,  → —
                cr u8 (5-8 for 4/5-4/8), power_dbm i8, preamble u16, sync u8
  RADIO_SEND    packet (≤ 255 bytes)           → time_on_air_ms u32
  FEEDBACK      pattern u8 (PATTERN_*)         → —
  BATTERY       —                              → millivolts u16, percent u8, charging u8
  FW_BEGIN      version u8×3, size u32, sha256 (32)   → —
  FW_CHUNK      offset u32, data               → —
  FW_COMMIT     —                              → — (the MCU resets into the new image)
  STATUS        —                              → fw u8×3, uptime_s u32, pending u8,
                                                  radio_busy u8, tx_budget_ms u32
Events (id 0):
  BOOT          proto u8, fw u8×3, boot_count u16, reset_cause u8   (sent at every start)
  RADIO_RX      rssi_dbm i16, snr_qdb i8 (SNR × 4), packet
  SOS           presses u8, held_ms u32
  LOG           level u8, text (UTF-8)
"""

import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    pass

PROTOCOL = 1  # the version HELLO negotiates; a host refuses an MCU with another major one

HELLO = 0x01
PING = 0x02
RADIO_CONFIG = 0x03
RADIO_SEND = 0x04
FEEDBACK = 0x05
BATTERY = 0x06
FW_BEGIN = 0x07
FW_CHUNK = 0x08
FW_COMMIT = 0x09
STATUS = 0x0A
RESPONSE = 0x80  # response type = request type | RESPONSE

BOOT = 0x40
RADIO_RX = 0x41
SOS = 0x42
LOG = 0x43

# status byte of every response
OK = 0
BAD_REQUEST = 1  # unknown type, wrong payload length or values out of range
BUSY = 2  # the radio is transmitting
RADIO_ERROR = 3
DUTY_CYCLE = 4  # sending now would exceed the regulatory duty cycle
UPDATE_ERROR = 5  # firmware image out of order, too big, or its digest does not match
UNSUPPORTED = 6  # a request this firmware version does not implement

STATUS_NAMES = {
    OK: "ok",
    BAD_REQUEST: "bad request",
    BUSY: "radio busy",
    RADIO_ERROR: "radio error",
    DUTY_CYCLE: "duty cycle exhausted",
    UPDATE_ERROR: "firmware update error",
    UNSUPPORTED: "unsupported",
}

# reset causes (BOOT, HELLO)
RESET_POWER_ON = 0
RESET_WATCHDOG = 1
RESET_SOFT = 2  # asked for: after a firmware update, or by the host
RESET_ROLLBACK = 3  # the new image did not come up; the previous one runs again

# FEEDBACK patterns: buzzer and LED together
PATTERN_CHECKIN = 1  # one short beep, green blink
PATTERN_MISSED = 2  # two long beeps, red blink
PATTERN_LOW_BATTERY = 3  # three short beeps, amber blink
PATTERN_SOS_ACK = 4  # continuous red for two seconds

CAP_RADIO = 0x01
CAP_SOS = 0x02
CAP_BATTERY = 0x04
CAP_UPDATE = 0x08

MAX_PACKET = 255  # one LoRa packet
MAX_ECHO = 32
FW_CHUNK_MAX = 256

HELLO_RESPONSE = "<BBBBHBB"  # proto, fw×3, boot_count, reset_cause, caps
BOOT_EVENT = "<BBBBHB"
RADIO_CONFIG_FMT = "<IBIBbHB"
BATTERY_RESPONSE = "<HBB"
FW_BEGIN_FMT = "<BBBI32s"
STATUS_RESPONSE = "<BBBIBBI"
RX_HEAD = "<hb"
SOS_EVENT = "<BI"


def pack(fmt: str, *values: object) -> bytes:
    return struct.pack(fmt, *values)


def unpack(fmt: str, payload: bytes) -> "tuple[object, ...]":
    """struct.unpack that insists on the exact length (ValueError otherwise)."""
    if len(payload) != struct.calcsize(fmt):
        raise ValueError("payload of " + str(len(payload)) + " bytes, expected " + fmt)
    return struct.unpack(fmt, payload)


def response(request_type: int) -> int:
    return request_type | RESPONSE
