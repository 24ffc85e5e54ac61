"""The hal.py interfaces on an RP2040 board with an SX1262 (a Pico with Waveshare's
Pico-LoRa-SX1262 pin-out), the only file that knows pins, peripherals and flash paths.

Wiring is a block of constants at the top so another board is an edit there. Everything
else is thin: UART0 to the Pi, the SX1262 driver (sx126x.py) on SPI1, plain GPIO for the
SOS button (to ground, internal pull-up), an active buzzer and a green and a red LED
(amber is both), the battery through a resistor divider into ADC0, the charger's status
pin, machine.WDT, and files on the internal flash (littlefs) for the staged image and
the boot state. The staged image is unpacked into its slot at the next start
(`install_staged`, called by main.py), never while the old image still runs.
"""

import os
import time

import machine
from machine import ADC, SPI, UART, WDT, Pin

TYPE_CHECKING = False
if TYPE_CHECKING:
    from firmware_bridge.firmware import boot, hal, sx126x
else:
    try:
        from firmware_bridge.firmware import boot, hal, sx126x
    except ImportError:  # flat on the board
        import boot
        import hal
        import sx126x

# --- wiring --------------------------------------------------------------------------------
UART_ID = 0
UART_TX_PIN = 0
UART_RX_PIN = 1
UART_BAUD = 115200
UART_BUFFER = 2048  # bytes each way: ~180 ms of traffic at 115200 baud

SPI_ID = 1
SPI_BAUD = 8_000_000  # the SX1262 takes up to 16 MHz (DS §8.3)
SPI_SCK_PIN = 10
SPI_MOSI_PIN = 11
SPI_MISO_PIN = 12
RADIO_NSS_PIN = 3
RADIO_RESET_PIN = 15
RADIO_BUSY_PIN = 2
RADIO_DIO1_PIN = 20
RADIO_TCXO_VOLTAGE = None  # a DIO3 code (0x02 = 1.8 V) when the module has a TCXO

BUTTON_PIN = 14  # SOS button to ground
BUZZER_PIN = 13  # active buzzer, high = on
LED_GREEN_PIN = 16
LED_RED_PIN = 17
BATTERY_ADC_PIN = 26  # ADC0, battery through a divider
BATTERY_DIVIDER = 2  # two equal resistors
ADC_REF_MV = 3300
BATTERY_SAMPLES = 8
CHARGING_PIN = 21  # charger STAT, low while charging

WDT_TIMEOUT_MS = 8000  # the RP2040 allows at most 8388 ms

FW_DIR = "/fw"
STAGED_PATH = "/fw/staged.bin"
STATE_PATH = "/fw/boot.json"
COPY_PIECE = 512


def reset_cause() -> int:
    """The hardware's reason for this start, as messages.RESET_* (boot.py refines it)."""
    if machine.reset_cause() == machine.WDT_RESET:
        return boot.RESET_WATCHDOG
    return boot.RESET_POWER_ON


def slot_dir(slot: str) -> str:
    return FW_DIR + "/" + slot if slot else ""


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _ensure_dir(path: str) -> None:
    if not _exists(path):
        os.mkdir(path)


def ensure_folders() -> None:
    """/fw exists before the boot state or a staged image is written there."""
    _ensure_dir(FW_DIR)


class Uart(hal.Uart):
    def __init__(self) -> None:
        self.port = UART(
            UART_ID,
            UART_BAUD,
            tx=Pin(UART_TX_PIN),
            rx=Pin(UART_RX_PIN),
            txbuf=UART_BUFFER,
            rxbuf=UART_BUFFER,
        )

    def write(self, data: bytes) -> None:
        self.port.write(data)

    def read(self) -> bytes:
        """Whatever arrived, without waiting (b"" when nothing)."""
        n = self.port.any()
        if not n:
            return b""
        return self.port.read(n) or b""

    def flush(self) -> None:
        self.port.flush()


class Button(hal.Button):
    def __init__(self) -> None:
        self.pin = Pin(BUTTON_PIN, Pin.IN, Pin.PULL_UP)

    def pressed(self) -> bool:
        return self.pin.value() == 0


class Indicator(hal.Indicator):
    def __init__(self) -> None:
        self.buzzer = Pin(BUZZER_PIN, Pin.OUT, value=0)
        self.green = Pin(LED_GREEN_PIN, Pin.OUT, value=0)
        self.red = Pin(LED_RED_PIN, Pin.OUT, value=0)

    def set(self, buzzer: bool, led: int) -> None:
        self.buzzer.value(1 if buzzer else 0)
        self.green.value(1 if led in (1, 3) else 0)
        self.red.value(1 if led in (2, 3) else 0)


class Battery(hal.Battery):
    def __init__(self) -> None:
        self.adc = ADC(Pin(BATTERY_ADC_PIN))
        self.stat = Pin(CHARGING_PIN, Pin.IN, Pin.PULL_UP)

    def millivolts(self) -> int:
        total = 0
        for _ in range(BATTERY_SAMPLES):
            total += self.adc.read_u16()
        return total * ADC_REF_MV * BATTERY_DIVIDER // (65535 * BATTERY_SAMPLES)

    def charging(self) -> bool:
        return self.stat.value() == 0


class Watchdog(hal.Watchdog):
    def __init__(self) -> None:
        self.wdt = WDT(timeout=WDT_TIMEOUT_MS)  # cannot be stopped once started

    def feed(self) -> None:
        self.wdt.feed()


class Storage(hal.Storage):
    """The staged image as one file; switching and resetting go through the boot state."""

    def __init__(self, state: "boot.Boot", uart: Uart) -> None:
        self.state = state
        self.uart = uart
        ensure_folders()

    def write_staged(self, offset: int, data: bytes) -> None:
        with open(STAGED_PATH, "r+b") as f:
            f.seek(offset)
            f.write(data)

    def read_staged(self, offset: int, size: int) -> bytes:
        with open(STAGED_PATH, "rb") as f:
            f.seek(offset)
            return bytes(f.read(size))

    def clear_staged(self) -> None:
        with open(STAGED_PATH, "wb"):
            pass

    def request_switch(self, version: "tuple[int, int, int]") -> None:
        self.state.request_switch(version)

    def reset(self) -> None:
        self.state.note_soft_reset()
        self.uart.flush()  # the FW_COMMIT reply must leave before we go
        time.sleep_ms(20)
        machine.reset()


def install_staged(slot: str) -> None:
    """Unpack the staged image into `slot`'s folder (replacing what was there), then drop
    the staged file. OSError or ValueError when it cannot: main.py rolls back."""
    size = os.stat(STAGED_PATH)[6]
    with open(STAGED_PATH, "rb") as src:

        def read(offset: int, n: int) -> bytes:
            src.seek(offset)
            got = bytes(src.read(n))
            if len(got) != n:
                raise ValueError("staged image shorter than it says")
            return got

        entries = boot.image_entries(read, size)
        folder = slot_dir(slot)
        _ensure_dir(folder)
        for name in os.listdir(folder):
            os.remove(folder + "/" + name)
        for name, offset, length in entries:
            with open(folder + "/" + name, "wb") as dst:
                done = 0
                while done < length:
                    n = min(COPY_PIECE, length - done)
                    dst.write(read(offset + done, n))
                    done += n
    os.remove(STAGED_PATH)


def build(state: "boot.Boot") -> "tuple[hal.Hal, Uart]":
    """The board's HAL and its UART, which main.py reads. The watchdog starts first: a
    radio that does not come up is reported by the logic (RADIO_ERROR, a LOG event), not
    allowed to hang the start."""
    watchdog = Watchdog()
    uart = Uart()
    radio = sx126x.SX1262(
        SPI(
            SPI_ID,
            SPI_BAUD,
            sck=Pin(SPI_SCK_PIN),
            mosi=Pin(SPI_MOSI_PIN),
            miso=Pin(SPI_MISO_PIN),
        ),
        nss=Pin(RADIO_NSS_PIN, Pin.OUT, value=1),
        busy=Pin(RADIO_BUSY_PIN, Pin.IN),
        dio1=Pin(RADIO_DIO1_PIN, Pin.IN),
        reset=Pin(RADIO_RESET_PIN, Pin.OUT, value=1),
        sleep_ms=time.sleep_ms,
        tcxo_voltage=RADIO_TCXO_VOLTAGE,
    )
    try:  # noqa: SIM105 (MicroPython has no contextlib)
        radio.begin()
    except OSError:
        pass  # BUSY stuck: every radio request now answers RADIO_ERROR
    parts = hal.Hal(
        uart,
        radio,
        Button(),
        Indicator(),
        Battery(),
        watchdog,
        Storage(state, uart),
    )
    return parts, uart
