"""The hardware the firmware logic may touch: small interfaces, one method per need.

The logic (logic.py) sees only these; board_rp2.py implements them on an RP2040 with an
SX1262, simulators/mcusim.py implements them in CPython behind a pseudo-terminal, and
the tests implement them inside real MicroPython. Every method is non-blocking: the main
loop calls `Mcu.feed` and `Mcu.tick` often, and slow work (a radio transmission) reports
completion by polling. Times are milliseconds from a monotonic clock the caller passes in.

Runs under MicroPython: plain classes, no typing at run time.
"""


class Uart:
    def write(self, data: bytes) -> None:
        """Queue bytes for the host (the frame codec's output)."""
        raise NotImplementedError


class Radio:
    def configure(  # noqa: PLR0917 - the radio's settings, in the SX126x's order
        self, freq_hz: int, sf: int, bw_hz: int, cr: int, power_dbm: int, preamble: int, sync: int
    ) -> bool:
        """Apply LoRa settings; False when the radio rejects them."""
        raise NotImplementedError

    def send(self, packet: bytes, now_ms: int) -> bool:
        """Start transmitting; False when busy or failed."""
        raise NotImplementedError

    def busy(self, now_ms: int) -> bool:
        raise NotImplementedError

    def receive(self, now_ms: int) -> "tuple[bytes, int, float] | None":
        """A packet heard since the last call: (packet, rssi_dbm, snr_db), or None."""
        raise NotImplementedError


class Button:
    def pressed(self) -> bool:
        """The SOS button's level now (True while held)."""
        raise NotImplementedError


class Indicator:
    def set(self, buzzer: bool, led: int) -> None:
        """Buzzer on/off and LED colour (0 off, 1 green, 2 red, 3 amber)."""
        raise NotImplementedError


class Battery:
    def millivolts(self) -> int:
        raise NotImplementedError

    def charging(self) -> bool:
        raise NotImplementedError


class Watchdog:
    def feed(self) -> None:
        raise NotImplementedError


class Storage:
    """Where firmware images live: the running one, and a staged new one (boot.py)."""

    def write_staged(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def read_staged(self, offset: int, size: int) -> bytes:
        raise NotImplementedError

    def clear_staged(self) -> None:
        raise NotImplementedError

    def request_switch(self, version: "tuple[int, int, int]") -> None:
        """Mark the staged image to be tried at the next start (boot.py decides)."""
        raise NotImplementedError

    def reset(self) -> None:
        """Restart the MCU (soft reset)."""
        raise NotImplementedError


class Hal:
    """Everything at once, as the logic receives it."""

    def __init__(  # noqa: PLR0917 - MicroPython callers build it positionally
        self,
        uart: Uart,
        radio: Radio,
        button: Button,
        indicator: Indicator,
        battery: Battery,
        watchdog: Watchdog,
        storage: Storage,
    ) -> None:
        self.uart = uart
        self.radio = radio
        self.button = button
        self.indicator = indicator
        self.battery = battery
        self.watchdog = watchdog
        self.storage = storage
