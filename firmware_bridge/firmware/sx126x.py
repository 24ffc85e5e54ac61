"""A minimal SX1262 LoRa driver over machine.SPI: exactly what hal.Radio needs, nothing more.

Semtech SX1261/2 datasheet rev. 2.1 ("DS") is the reference; each command cites its
section. Every command is one SPI transaction with NSS low: opcode, parameters, and for
reads a status byte then the data (DS §8.3, §13). The chip raises BUSY while it works on a
command, and no command may start until BUSY is low again (DS §8.3.1), hence `_wait`.

Shaped for the logic's polling loop: nothing waits for a transmission. `send` starts
SetTx and returns; `busy` and `receive` read GetIrqStatus (only when DIO1 is up, a cheap
pin read) and go back to continuous receive after TxDone. Register-level tuning beyond
the datasheet's errata fixes (DS §15.1, §15.2) is left out on purpose.

No clock of its own: the board passes `sleep_ms` (time.sleep_ms) for the reset pulse and
the calibration, so this module imports nothing from MicroPython at run time and type-
checks under CPython too.
"""

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from machine import SPI, Pin

    from firmware_bridge.firmware import hal
else:
    try:
        from firmware_bridge.firmware import hal
    except ImportError:  # flat on the board
        import hal

# --- opcodes (DS §13, the command tables) ---------------------------------------------------
SET_STANDBY = 0x80  # §13.1.2
SET_TX = 0x83  # §13.1.4
SET_RX = 0x82  # §13.1.5
SET_REGULATOR_MODE = 0x96  # §13.1.11
CALIBRATE = 0x89  # §13.1.12
CALIBRATE_IMAGE = 0x98  # §13.1.13
SET_PA_CONFIG = 0x95  # §13.1.14
WRITE_REGISTER = 0x0D  # §13.2.1
READ_REGISTER = 0x1D  # §13.2.2
WRITE_BUFFER = 0x0E  # §13.2.3
READ_BUFFER = 0x1E  # §13.2.4
SET_DIO_IRQ_PARAMS = 0x08  # §13.3.1
GET_IRQ_STATUS = 0x12  # §13.3.3
CLEAR_IRQ_STATUS = 0x02  # §13.3.4
SET_DIO2_AS_RF_SWITCH_CTRL = 0x9D  # §13.3.5
SET_DIO3_AS_TCXO_CTRL = 0x97  # §13.3.6
SET_RF_FREQUENCY = 0x86  # §13.4.1
SET_PACKET_TYPE = 0x8A  # §13.4.2
SET_TX_PARAMS = 0x8E  # §13.4.4
SET_MODULATION_PARAMS = 0x8B  # §13.4.5
SET_PACKET_PARAMS = 0x8C  # §13.4.6
SET_BUFFER_BASE_ADDRESS = 0x8F  # §13.4.8
GET_RX_BUFFER_STATUS = 0x13  # §13.5.2
GET_PACKET_STATUS = 0x14  # §13.5.3

STDBY_RC = 0x00  # §13.1.2
PACKET_TYPE_LORA = 0x01  # §13.4.2
REGULATOR_DC_DC = 0x01  # §13.1.11
CALIBRATE_ALL = 0x7F  # §13.1.12
RAMP_200_US = 0x04  # §13.4.4
RX_CONTINUOUS = 0xFFFFFF  # §13.1.5
TX_NO_TIMEOUT = 0x000000  # §13.1.4
HEADER_EXPLICIT = 0x00  # §13.4.6.2
CRC_ON = 0x01  # §13.4.6.2
IQ_STANDARD = 0x00  # §13.4.6.2
# SX1262 high-power PA, up to +22 dBm: paDutyCycle, hpMax, deviceSel, paLut (§13.1.14)
PA_CONFIG_22DBM = (0x04, 0x07, 0x00, 0x01)

# IRQ bits (§13.3.1)
IRQ_TX_DONE = 0x0001
IRQ_RX_DONE = 0x0002
IRQ_HEADER_ERR = 0x0020
IRQ_CRC_ERR = 0x0040
IRQ_TIMEOUT = 0x0200
IRQ_ALL = 0x43FF
IRQ_USED = IRQ_TX_DONE | IRQ_RX_DONE | IRQ_HEADER_ERR | IRQ_CRC_ERR | IRQ_TIMEOUT

# registers (§12.1, the register table)
REG_LORA_SYNC_WORD = 0x0740  # MSB at 0x0740, LSB at 0x0741
REG_TX_MODULATION = 0x0889  # errata §15.1
REG_TX_CLAMP_CONFIG = 0x08D8  # errata §15.2

# LoRa bandwidth codes (§13.4.5.2), keyed by Hz as the protocol sends them
BANDWIDTH_CODES = {
    7800: 0x00,
    10400: 0x08,
    15600: 0x01,
    20800: 0x09,
    31250: 0x02,
    41700: 0x0A,
    62500: 0x03,
    125000: 0x04,
    250000: 0x05,
    500000: 0x06,
}

# CalibrateImage band limits (§9.2.1): (lowest Hz, highest Hz, freq1, freq2)
IMAGE_BANDS = (
    (430_000_000, 440_000_000, 0x6B, 0x6F),
    (470_000_000, 510_000_000, 0x75, 0x81),
    (779_000_000, 787_000_000, 0xC1, 0xC5),
    (863_000_000, 870_000_000, 0xD7, 0xDB),
    (902_000_000, 928_000_000, 0xE1, 0xE9),
)

XTAL_HZ = 32_000_000
BUSY_SPINS = 200_000  # polls of BUSY before giving up (≈ 0.3 s on an RP2040)
MAX_PAYLOAD = 255


def frequency_word(freq_hz: int) -> int:
    """RfFreq = f · 2^25 / F_XTAL (§13.4.1)."""
    return (freq_hz << 25) // XTAL_HZ


def sync_word_registers(sync: int) -> "tuple[int, int]":
    """The one-byte sync word of the SX127x family as the SX126x's two registers: 0x12
    (private) → 0x14 0x24, 0x34 (LoRaWAN public) → 0x34 0x44 (registers 0x0740/1)."""
    return ((sync & 0xF0) | 0x04, ((sync & 0x0F) << 4) | 0x04)


def low_data_rate(sf: int, bw_hz: int) -> bool:
    """LDRO is mandatory when a symbol lasts 16 ms or more (§6.1.1), as lora.py assumes."""
    return (1 << sf) * 1000 >= 16 * bw_hz


class SX1262(hal.Radio):
    """hal.Radio on an SX1262. `begin` once after power-up, then `configure`."""

    def __init__(
        self,
        spi: "SPI",
        *,
        nss: "Pin",
        busy: "Pin",
        dio1: "Pin",
        reset: "Pin",
        sleep_ms: "Callable[[int], None]",
        tcxo_voltage: "int | None" = None,
        dio2_rf_switch: bool = True,
    ) -> None:
        self.spi = spi
        self.nss = nss
        self.busy_pin = busy
        self.dio1 = dio1
        self.reset_pin = reset
        self.sleep_ms = sleep_ms
        self.tcxo_voltage = tcxo_voltage  # DIO3 code (§13.3.6), None: crystal
        self.dio2_rf_switch = dio2_rf_switch
        self.preamble = 8
        self.transmitting = False
        self.errors = 0  # transactions that found BUSY stuck
        self.nss(1)

    # --- SPI transactions -------------------------------------------------------------

    def _wait(self) -> None:
        for _ in range(BUSY_SPINS):
            if not self.busy_pin():
                return
        self.errors += 1
        raise OSError("SX1262 BUSY stuck high")

    def _command(self, opcode: int, params: "bytes | bytearray" = b"") -> None:
        self._wait()
        buf = bytearray(1 + len(params))
        buf[0] = opcode
        buf[1:] = params
        self.nss(0)
        try:
            self.spi.write(buf)
        finally:
            self.nss(1)

    def _read(self, opcode: int, params: "bytes | bytearray", n: int) -> bytes:
        """A read command: opcode, params, one status byte (NOP), then n bytes (§8.3.1)."""
        self._wait()
        head = 1 + len(params) + 1
        buf = bytearray(head + n)
        buf[0] = opcode
        buf[1 : 1 + len(params)] = params
        self.nss(0)
        try:
            self.spi.write_readinto(buf, buf)
        finally:
            self.nss(1)
        return bytes(buf[head:])

    def _write_register(self, address: int, data: "bytes | bytearray") -> None:
        self._command(WRITE_REGISTER, bytes((address >> 8, address & 0xFF)) + bytes(data))

    def _read_register(self, address: int, n: int) -> bytes:
        return self._read(READ_REGISTER, bytes((address >> 8, address & 0xFF)), n)

    def _irq_status(self) -> int:
        r = self._read(GET_IRQ_STATUS, b"", 2)
        return (r[0] << 8) | r[1]

    def _clear_irq(self, mask: int = IRQ_ALL) -> None:
        self._command(CLEAR_IRQ_STATUS, bytes((mask >> 8, mask & 0xFF)))

    def _set_packet_params(self, payload_len: int) -> None:
        # PreambleLength (2), HeaderType, PayloadLength, CRCType, InvertIQ (§13.4.6.2)
        p = self.preamble
        self._command(
            SET_PACKET_PARAMS,
            bytes((p >> 8, p & 0xFF, HEADER_EXPLICIT, payload_len, CRC_ON, IQ_STANDARD)),
        )

    def _start_rx(self) -> None:
        self._set_packet_params(MAX_PAYLOAD)
        self._clear_irq()
        t = RX_CONTINUOUS
        self._command(SET_RX, bytes((t >> 16, (t >> 8) & 0xFF, t & 0xFF)))

    # --- bring-up ------------------------------------------------------------------------

    def begin(self) -> None:
        """Reset the chip and put it in LoRa mode (DS §9.1 and §14.5's sequence)."""
        self.reset_pin(0)
        self.sleep_ms(1)  # NRESET low ≥ 100 µs (§8.1)
        self.reset_pin(1)
        self.sleep_ms(5)
        self._command(SET_STANDBY, bytes((STDBY_RC,)))
        if self.tcxo_voltage is not None:
            delay = 320  # 5 ms in 15.625 µs steps
            self._command(
                SET_DIO3_AS_TCXO_CTRL,
                bytes((self.tcxo_voltage, delay >> 16, (delay >> 8) & 0xFF, delay & 0xFF)),
            )
        self._command(CALIBRATE, bytes((CALIBRATE_ALL,)))
        self.sleep_ms(5)  # calibration takes 3.5 ms (§13.1.12)
        self._command(SET_REGULATOR_MODE, bytes((REGULATOR_DC_DC,)))
        if self.dio2_rf_switch:
            self._command(SET_DIO2_AS_RF_SWITCH_CTRL, b"\x01")
        self._command(SET_PACKET_TYPE, bytes((PACKET_TYPE_LORA,)))
        self._command(SET_BUFFER_BASE_ADDRESS, bytes((0, 0)))
        self._command(SET_PA_CONFIG, bytes(PA_CONFIG_22DBM))
        # errata §15.2: better resistance of the PA to antenna mismatch
        clamp = self._read_register(REG_TX_CLAMP_CONFIG, 1)[0]
        self._write_register(REG_TX_CLAMP_CONFIG, bytes((clamp | 0x1E,)))
        m = IRQ_USED
        self._command(
            SET_DIO_IRQ_PARAMS,  # all used IRQs, all on DIO1 (§13.3.1)
            bytes((m >> 8, m & 0xFF, m >> 8, m & 0xFF, 0, 0, 0, 0)),
        )
        self._clear_irq()

    # --- hal.Radio -----------------------------------------------------------------------

    def configure(  # noqa: PLR0917 (hal.Radio's signature)
        self, freq_hz: int, sf: int, bw_hz: int, cr: int, power_dbm: int, preamble: int, sync: int
    ) -> bool:
        bw_code = BANDWIDTH_CODES.get(bw_hz)
        if bw_code is None or not 5 <= sf <= 12 or not 5 <= cr <= 8 or not -9 <= power_dbm <= 22:
            return False
        band = None
        for lo, hi, f1, f2 in IMAGE_BANDS:
            if lo <= freq_hz <= hi:
                band = (f1, f2)
        if band is None and not 150_000_000 <= freq_hz <= 960_000_000:
            return False
        if self.transmitting:
            return False
        self._command(SET_STANDBY, bytes((STDBY_RC,)))
        if band is not None:
            self._command(CALIBRATE_IMAGE, bytes(band))
        w = frequency_word(freq_hz)
        self._command(
            SET_RF_FREQUENCY, bytes((w >> 24, (w >> 16) & 0xFF, (w >> 8) & 0xFF, w & 0xFF))
        )
        ldro = 1 if low_data_rate(sf, bw_hz) else 0
        # SF, BW, CR (1-4 for 4/5-4/8), LowDataRateOptimize (§13.4.5.2)
        self._command(SET_MODULATION_PARAMS, bytes((sf, bw_code, cr - 4, ldro)))
        # errata §15.1: bit 2 of TxModulation clear at 500 kHz, set otherwise
        tx_mod = self._read_register(REG_TX_MODULATION, 1)[0]
        tx_mod = (tx_mod & 0xFB) if bw_hz == 500000 else (tx_mod | 0x04)
        self._write_register(REG_TX_MODULATION, bytes((tx_mod,)))
        self.preamble = preamble
        self._write_register(REG_LORA_SYNC_WORD, bytes(sync_word_registers(sync)))
        self._command(SET_TX_PARAMS, bytes((power_dbm & 0xFF, RAMP_200_US)))  # §13.4.4
        self._start_rx()
        return True

    def send(self, packet: bytes, now_ms: int) -> bool:
        if self.transmitting or not 1 <= len(packet) <= MAX_PAYLOAD:
            return False
        self._command(SET_STANDBY, bytes((STDBY_RC,)))
        self._set_packet_params(len(packet))
        self._command(WRITE_BUFFER, b"\x00" + bytes(packet))  # offset 0 (§13.2.3)
        self._clear_irq()
        t = TX_NO_TIMEOUT
        self._command(SET_TX, bytes((t >> 16, (t >> 8) & 0xFF, t & 0xFF)))
        self.transmitting = True
        return True

    def busy(self, now_ms: int) -> bool:
        if self.transmitting and self.dio1():
            irq = self._irq_status()
            if irq & (IRQ_TX_DONE | IRQ_TIMEOUT):
                self.transmitting = False
                self._start_rx()  # clears the IRQs too
        return self.transmitting

    def receive(self, now_ms: int) -> "tuple[bytes, int, float] | None":
        if self.transmitting or not self.dio1():
            return None
        irq = self._irq_status()
        if not irq & IRQ_RX_DONE:
            return None
        self._clear_irq(irq)
        if irq & (IRQ_CRC_ERR | IRQ_HEADER_ERR):
            return None  # a damaged packet is dropped, as a frame with a bad CRC is
        length, start = self._read(GET_RX_BUFFER_STATUS, b"", 2)  # §13.5.2
        data = self._read(READ_BUFFER, bytes((start,)), length)  # §13.2.4
        # LoRa: RssiPkt, SnrPkt, SignalRssiPkt (§13.5.3)
        st = self._read(GET_PACKET_STATUS, b"", 3)
        rssi = -st[0] // 2
        snr_raw = st[1] - 256 if st[1] > 127 else st[1]
        return data, rssi, snr_raw / 4.0
