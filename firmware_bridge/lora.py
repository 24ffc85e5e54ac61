"""LoRa arithmetic shared by the MCU firmware, the host, the simulator and the gateway.

One source for three questions: how long a packet occupies the air (Semtech's time-on-air
formula), whether the regulatory duty cycle lets a radio send now (a sliding window), and
whether a packet at a given distance arrives (a link budget against the demodulation
floors). The firmware answers DUTY_CYCLE from `DutyCycle` and RADIO_SEND's time on air
from `time_on_air_ms`; simulators/lora_medium.py decides delivery from `link_budget` and
`delivery_probability`, so the simulated radio and the real one cannot disagree.

It also defines the LoRa packet of a record (`record_packet`, `split_packet`), which the
handset sends and center/lora_gateway.py reads, and the fragments of a record longer than
one packet (`fragment_packets`, `parse_fragment`) with their pure, bounded `Reassembly`
(docs/bridge.md, "LoRa packets").

Runs unchanged under MicroPython (the firmware imports it; tests run it under the real
interpreter): no dataclasses, no typing (annotations that name types are strings, and an
attribute's type is a type comment), no imports beyond `math`. Times are
integer milliseconds from a clock the caller passes in; nothing here reads a clock.

**Time on air** (SX1276 datasheet §4.1.1.6, SX1261/2 datasheet §6.1.4, AN1200.13)::

    T_sym      = 2^SF / BW
    T_preamble = (n_preamble + 4.25) · T_sym
    n_payload  = 8 + max(ceil((8·PL − 4·SF + 28 + 16·CRC − 20·IH) / (4·(SF − 2·DE))) · CR, 0)
    T_packet   = T_preamble + n_payload · T_sym

where CR is the coding rate's denominator (5 to 8 for 4/5 to 4/8; the datasheets write it
CR + 4 with CR = 1..4), IH = 1 for an implicit header, and DE = 1 with low data rate
optimisation, which the radios require when a symbol lasts 16 ms or more (SF11 and SF12 at
125 kHz). It is computed in integers and rounded UP: `time_on_air_us` to the microsecond,
`time_on_air_ms` to the millisecond (46.336 ms → 47), because a budget that charges less
than the air really carried would let a radio exceed its duty cycle. SF7 to SF12 only (the
SX126x counts SF5 and SF6 differently).

**Duty cycle.** `DutyCycle` keeps the transmissions of the last window (an hour by default)
and lets a new one start only if it and everything that ended inside the window together
stay within `fraction` of the window. A transmission straddling the window's start counts
whole: the check is conservative, never lenient.

**Link model.** Log-distance path loss, `PL(d) = ref_loss + 10·n·log10(d / 1 m)` with the
reference loss by default the free-space loss at 1 m for the frequency (25.9 dB at 470 MHz,
CN470, the band used in China); n = 3 is a built-up area (free space is 2, dense
city 3.5–4). The noise floor is thermal noise over the bandwidth plus the receiver's noise
figure, `−174 dBm/Hz + 10·log10(BW) + NF`, so SNR = RSSI − noise floor. A packet is
demodulated when its SNR is above the spreading factor's floor (SX1276 datasheet table 13:
SF7 −7.5 dB … SF12 −20 dB, 2.5 dB per step); `delivery_probability` is a logistic step
around that floor, 10 % at 1 dB below it and 90 % at 1 dB above. Together: SF12 at 125 kHz
and NF 6 dB needs −137 dBm, the datasheet's sensitivity. No fading or shadowing here: the
medium adds those, seeded.
"""

import math

MIN_SF = 7
MAX_SF = 12
MAX_PACKET = 255  # one LoRa packet (messages.MAX_PACKET)

# SNR below which a spreading factor cannot demodulate (SX1276 datasheet, table 13), dB.
SNR_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
TRANSITION_DB = 2.0  # delivery goes from 10 % to 90 % over this span around the floor
_LOGISTIC_K = 2.0 * math.log(9.0) / TRANSITION_DB  # slope: logit(0.9) at half the span
THERMAL_NOISE_DBM_HZ = -174.0  # kT at 290 K
SPEED_OF_LIGHT = 299_792_458.0

# --- the packet of a record -----------------------------------------------------------------

# A LoRa packet carries one signed record: either bare (its first byte is then 0xD2, the CBOR
# head of tag 18, COSE_Sign1), or after a one-byte kind. Kinds are below 0x80, so they can
# never be taken for a bare record's first byte; unknown kinds are refused, not guessed at.
COSE_SIGN1_HEAD = 0xD2
KIND_RECORD = 0x01  # the rest of the packet is one signed record (COSE_Sign1)
KIND_FRAGMENT = 0x02  # one piece of a record too long for one packet (below)

# A fragment: kind, message id (4 bytes, big-endian), index (from 0), count, then the piece.
FRAGMENT_HEAD = 7
FRAGMENT_PIECE = MAX_PACKET - FRAGMENT_HEAD  # 248 bytes of the record in a full fragment
MAX_MESSAGE = 1024  # the longest record sent in fragments (contract/bounds.py MAX_RECORD)


def record_packet(record: bytes, prefixed: bool = True) -> bytes:
    """The LoRa packet for one signed record: KIND_RECORD + record, or the bare record."""
    packet = (bytes((KIND_RECORD,)) + record) if prefixed else bytes(record)
    if len(packet) > MAX_PACKET:
        raise ValueError("packet of " + str(len(packet)) + " bytes; at most 255")
    return packet


def fragment_packets(record: bytes, message_id: int) -> "list[bytes]":
    """The packets that carry `record`: one KIND_RECORD packet when it fits, otherwise
    KIND_FRAGMENT packets of at most MAX_PACKET bytes, every piece but the last full.
    `message_id` (0 to 2^32 - 1) must differ from the sender's other messages still in
    flight. ValueError for an empty record or one over MAX_MESSAGE bytes."""
    if not record:
        raise ValueError("empty record")
    if 1 + len(record) <= MAX_PACKET:
        return [record_packet(record)]
    if len(record) > MAX_MESSAGE:
        raise ValueError(
            "record of " + str(len(record)) + " bytes; at most " + str(MAX_MESSAGE)
            + " go in fragments"
        )  # fmt: skip
    if not 0 <= message_id <= 0xFFFFFFFF:
        raise ValueError("message id " + str(message_id) + " is not 0 to 2^32 - 1")
    count = -(-len(record) // FRAGMENT_PIECE)
    head = bytes((KIND_FRAGMENT,)) + message_id.to_bytes(4, "big")
    out = []
    for i in range(count):
        piece = record[i * FRAGMENT_PIECE : (i + 1) * FRAGMENT_PIECE]
        out.append(head + bytes((i, count)) + bytes(piece))
    return out


def parse_fragment(packet: bytes) -> "tuple[int, int, int, bytes]":
    """(message id, index, count, piece) of a KIND_FRAGMENT packet; ValueError when it is
    not one, or its header cannot be true (count 0, index not below count, no piece)."""
    if len(packet) < 1 or packet[0] != KIND_FRAGMENT:
        raise ValueError("not a fragment")
    if len(packet) <= FRAGMENT_HEAD:
        raise ValueError("fragment of " + str(len(packet)) + " bytes: no piece after the header")
    count = packet[6]
    index = packet[5]
    if count == 0:
        raise ValueError("fragment count 0")
    if index >= count:
        raise ValueError("fragment index " + str(index) + " of a count of " + str(count))
    return int.from_bytes(packet[1:5], "big"), index, count, bytes(packet[FRAGMENT_HEAD:])


def split_packet(packet: bytes) -> "tuple[int, bytes]":
    """(kind, body) of a packet: a bare record is (KIND_RECORD, packet); a fragment is
    (KIND_FRAGMENT, the packet whole), its header checked (`parse_fragment`). ValueError when
    the packet is empty, malformed, or its kind is not one this version knows."""
    if not packet:
        raise ValueError("empty packet")
    head = packet[0]
    if head == COSE_SIGN1_HEAD:
        return KIND_RECORD, bytes(packet)
    if head == KIND_RECORD:
        if len(packet) < 2:
            raise ValueError("record packet without a record")
        return KIND_RECORD, bytes(packet[1:])
    if head == KIND_FRAGMENT:
        parse_fragment(packet)
        return KIND_FRAGMENT, bytes(packet)
    raise ValueError(f"unknown packet kind 0x{head:02x}")


class _Partial:
    """One message waiting for pieces."""

    def __init__(self, first_ms: int, order: int, count: int) -> None:
        self.first_ms = first_ms
        self.order = order  # breaks ties between messages begun in the same millisecond
        self.count = count
        self.pieces = [None] * count  # type: list[bytes | None]
        self.held = 0
        self.size = 0


class Reassembly:
    """Fragments in, whole records out: `add(packet, now_ms)` returns the record when its
    last missing piece arrives, else None, and raises ValueError (counted in `refused`) for
    a fragment that cannot belong to a true message.

    Bounded: at most `max_partial` messages wait for pieces (a new one pushes out the one
    that began first) and none longer than `max_age_ms` from its first piece; at most
    `max_bytes` per message. Every incomplete message given up is counted in `dropped`.
    A fragment heard again (the same piece, or any piece of one of the last `max_partial`
    messages completed) is counted in `duplicates` and changes nothing. Refused: a header
    that cannot be true (`parse_fragment`), a count other than the message's earlier
    fragments said, another piece at an index already held, a message over `max_bytes`
    (that message is given up too). Times are the caller's clock, in ms.
    """

    def __init__(
        self, max_partial: int = 64, max_age_ms: int = 120_000, max_bytes: int = MAX_MESSAGE
    ) -> None:
        if max_partial < 1 or max_age_ms < 0 or max_bytes < 1:
            raise ValueError("reassembly bounds must be positive")
        self.max_partial = max_partial
        self.max_age_ms = max_age_ms
        self.max_bytes = max_bytes
        self._partial = {}  # type: dict[int, _Partial]
        self._done = []  # type: list[int]
        self._order = 0
        self.completed = 0
        self.dropped = 0
        self.duplicates = 0
        self.refused = 0

    @property
    def pending(self) -> int:
        """Messages waiting for pieces."""
        return len(self._partial)

    def expire(self, now_ms: int) -> int:
        """Give up the messages begun more than `max_age_ms` before `now_ms`; how many."""
        old = [k for k, p in self._partial.items() if now_ms - p.first_ms > self.max_age_ms]
        for k in old:
            del self._partial[k]
        self.dropped += len(old)
        return len(old)

    def add(self, packet: bytes, now_ms: int) -> "bytes | None":
        try:
            return self._add(packet, now_ms)
        except ValueError:
            self.refused += 1
            raise

    def _add(self, packet: bytes, now_ms: int) -> "bytes | None":
        mid, index, count, piece = parse_fragment(packet)
        self.expire(now_ms)
        if mid in self._done:
            self.duplicates += 1
            return None
        if count > self.max_bytes:
            raise ValueError(
                "message " + _hex_id(mid) + " of " + str(count) + " pieces exceeds "
                + str(self.max_bytes) + " bytes"
            )  # fmt: skip
        p = self._partial.get(mid)
        if p is None:
            if len(self._partial) >= self.max_partial:
                self._drop_first()
            self._order += 1
            p = _Partial(now_ms, self._order, count)
            self._partial[mid] = p
        elif p.count != count:
            raise ValueError(
                "fragment of message " + _hex_id(mid) + " says " + str(count)
                + " pieces; an earlier one said " + str(p.count)
            )  # fmt: skip
        held = p.pieces[index]
        if held is not None:
            if held == piece:
                self.duplicates += 1
                return None
            raise ValueError(
                "fragment " + str(index) + " of message " + _hex_id(mid)
                + " differs from the one already held"
            )  # fmt: skip
        if p.size + len(piece) > self.max_bytes:
            del self._partial[mid]
            self.dropped += 1
            raise ValueError(
                "message " + _hex_id(mid) + " exceeds " + str(self.max_bytes) + " bytes"
            )
        p.pieces[index] = piece
        p.held += 1
        p.size += len(piece)
        if p.held < count:
            return None
        del self._partial[mid]
        self._done.append(mid)
        if len(self._done) > self.max_partial:
            self._done.pop(0)
        self.completed += 1
        return b"".join([x for x in p.pieces if x is not None])

    def _drop_first(self) -> None:
        first = -1
        key = None  # type: tuple[int, int] | None
        for k, p in self._partial.items():
            if key is None or (p.first_ms, p.order) < key:
                first, key = k, (p.first_ms, p.order)
        del self._partial[first]
        self.dropped += 1


def _hex_id(message_id: int) -> str:
    return f"0x{message_id:08x}"


# --- time on air ----------------------------------------------------------------------------


def _check_modem(sf: int, bw_hz: int, cr: int, preamble: int) -> None:
    if not MIN_SF <= sf <= MAX_SF:
        raise ValueError("spreading factor " + str(sf) + " is not 7-12")
    if bw_hz <= 0:
        raise ValueError("bandwidth must be positive")
    if not 5 <= cr <= 8:
        raise ValueError("coding rate " + str(cr) + " is not 5-8 (4/5-4/8)")
    if preamble < 0:
        raise ValueError("preamble must not be negative")


def low_data_rate_needed(sf: int, bw_hz: int) -> bool:
    """Whether a symbol lasts 16 ms or more, where the radios need low data rate
    optimisation: 2^SF / BW ≥ 0.016 s, in integers."""
    return (1 << sf) * 1000 >= 16 * bw_hz


def payload_symbols(  # noqa: PLR0917 - the datasheet's parameters, in its order
    payload_len: int,
    sf: int,
    bw_hz: int,
    cr: int = 5,
    explicit_header: bool = True,
    crc: bool = True,
    low_data_rate: "bool | None" = None,
) -> int:
    """Symbols after the preamble: header, payload and CRC (the 8 + … term)."""
    _check_modem(sf, bw_hz, cr, 0)
    if not 0 <= payload_len <= MAX_PACKET:
        raise ValueError("payload of " + str(payload_len) + " bytes is not 0-255")
    de = low_data_rate_needed(sf, bw_hz) if low_data_rate is None else low_data_rate
    bits = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - (0 if explicit_header else 20)
    per_block = 4 * (sf - (2 if de else 0))
    blocks = -(-bits // per_block)  # ceil, exact in integers
    return 8 + max(blocks * cr, 0)


def _time_on_air(  # noqa: PLR0917 - the datasheet's parameters, in its order
    payload_len: int,
    sf: int,
    bw_hz: int,
    cr: int,
    preamble: int,
    explicit_header: bool,
    crc: bool,
    low_data_rate: "bool | None",
    per_second: int,
) -> int:
    _check_modem(sf, bw_hz, cr, preamble)
    n = payload_symbols(payload_len, sf, bw_hz, cr, explicit_header, crc, low_data_rate)
    # (preamble + 4.25 + n) · 2^SF / BW seconds, in quarter symbols so it stays an integer.
    quarters = 4 * preamble + 17 + 4 * n
    num = quarters * (1 << sf) * per_second
    den = 4 * bw_hz
    return -(-num // den)


def time_on_air_us(  # noqa: PLR0917 - the datasheet's parameters, in its order
    payload_len: int,
    sf: int,
    bw_hz: int,
    cr: int = 5,
    preamble: int = 8,
    explicit_header: bool = True,
    crc: bool = True,
    low_data_rate: "bool | None" = None,
) -> int:
    """Time on air in microseconds, rounded up (exact for the usual bandwidths)."""
    return _time_on_air(
        payload_len, sf, bw_hz, cr, preamble, explicit_header, crc, low_data_rate, 1_000_000
    )


def time_on_air_ms(  # noqa: PLR0917 - the datasheet's parameters, in its order
    payload_len: int,
    sf: int,
    bw_hz: int,
    cr: int = 5,
    preamble: int = 8,
    explicit_header: bool = True,
    crc: bool = True,
    low_data_rate: "bool | None" = None,
) -> int:
    """Time on air in milliseconds, rounded up: what a duty-cycle budget is charged.

    `cr` is 5-8 for 4/5-4/8; `low_data_rate` None means as the radio must (symbol ≥ 16 ms).
    """
    return _time_on_air(
        payload_len, sf, bw_hz, cr, preamble, explicit_header, crc, low_data_rate, 1000
    )


# --- duty cycle -----------------------------------------------------------------------------


class DutyCycle:
    """A sliding-window airtime budget: at most `fraction` of any `window_ms` on air.

    `record` each transmission when it starts; `allowed` says whether one of `toa_ms`
    may start now, `wait_ms` how long until it may, `budget_ms` what is left now. Memory
    is bounded: a transmission is forgotten once it ended a whole window ago. Times must
    not go backwards.
    """

    def __init__(self, fraction: float = 0.01, window_ms: int = 3_600_000) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError("duty cycle fraction must be in (0, 1]")
        if window_ms <= 0:
            raise ValueError("duty cycle window must be positive")
        self.fraction = fraction
        self.window_ms = window_ms
        self.limit_ms = round(fraction * window_ms)
        # (start_ms, end_ms) of each transmission that ended less than a window ago
        self._sent = []  # type: list[tuple[int, int]]
        self._used = 0  # their airtime, summed

    def _forget(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        if self._sent and min(end for _, end in self._sent) <= horizon:
            self._sent = [s for s in self._sent if s[1] > horizon]
            self._used = sum(end - start for start, end in self._sent)

    def used_ms(self, now_ms: int) -> int:
        """Airtime charged in the window that ends at `now_ms` (including transmissions
        still on air)."""
        self._forget(now_ms)
        return self._used

    def budget_ms(self, now_ms: int) -> int:
        """Airtime a transmission starting now may still take (0 when none)."""
        return max(0, self.limit_ms - self.used_ms(now_ms))

    def allowed(self, now_ms: int, toa_ms: int) -> bool:
        return toa_ms <= self.budget_ms(now_ms)

    def record(self, now_ms: int, toa_ms: int) -> None:
        """Charge a transmission of `toa_ms` that starts at `now_ms`."""
        if toa_ms < 0:
            raise ValueError("time on air must not be negative")
        if self._sent and now_ms < self._sent[-1][0]:
            raise ValueError("time went backwards")
        self._forget(now_ms)
        self._sent.append((now_ms, now_ms + toa_ms))
        self._used += toa_ms

    def wait_ms(self, now_ms: int, toa_ms: int) -> int:
        """Milliseconds from `now_ms` until a transmission of `toa_ms` is allowed (0: now).

        ValueError when it never will be: longer than the whole budget of a window.
        """
        if toa_ms > self.limit_ms:
            raise ValueError(
                "a transmission of " + str(toa_ms) + " ms exceeds the whole budget of "
                + str(self.limit_ms) + " ms"
            )  # fmt: skip
        self._forget(now_ms)
        excess = self._used + toa_ms - self.limit_ms
        if excess <= 0:
            return 0
        # Transmissions leave the window in the order they ended: wait until enough have left.
        for start, end in sorted(self._sent, key=lambda s: s[1]):
            excess -= end - start
            if excess <= 0:
                return end + self.window_ms - now_ms
        return 0  # unreachable: toa_ms alone fits the limit


# --- link budget ----------------------------------------------------------------------------


def free_space_loss_db(distance_m: float, freq_hz: float) -> float:
    """Free-space path loss, 20·log10(4π·d·f / c)."""
    return 20.0 * math.log10(4.0 * math.pi * distance_m * freq_hz / SPEED_OF_LIGHT)


def noise_floor_dbm(bw_hz: int, noise_figure_db: float = 6.0) -> float:
    return THERMAL_NOISE_DBM_HZ + 10.0 * math.log10(bw_hz) + noise_figure_db


def link_budget(
    distance_m: float,
    tx_dbm: float,
    sf: int,
    bw_hz: int,
    *,
    freq_hz: int = 470_000_000,
    path_loss_exponent: float = 3.0,
    ref_loss_db: "float | None" = None,
    noise_figure_db: float = 6.0,
    gain_db: float = 0.0,
) -> "tuple[float, float]":
    """(RSSI dBm, SNR dB) of a packet sent with `tx_dbm` from `distance_m` away.

    `ref_loss_db`: path loss at 1 m (None: free space at `freq_hz`); `gain_db`: both
    antennas' gains together, less cable losses. Distances under 1 m count as 1 m. `sf`
    is checked but does not change the budget: it decides the floor the SNR must clear
    (`delivery_probability`).
    """
    _check_modem(sf, bw_hz, 5, 0)
    if distance_m < 0:
        raise ValueError("distance must not be negative")
    ref = free_space_loss_db(1.0, freq_hz) if ref_loss_db is None else ref_loss_db
    loss = ref + 10.0 * path_loss_exponent * math.log10(max(distance_m, 1.0))
    rssi = tx_dbm + gain_db - loss
    return rssi, rssi - noise_floor_dbm(bw_hz, noise_figure_db)


def delivery_probability(snr_db: float, sf: int) -> float:
    """Chance that a packet at `snr_db` is demodulated at `sf` (collisions aside): 0.5 at
    the floor, 0.1 one dB below, 0.9 one dB above."""
    if sf not in SNR_FLOOR_DB:
        raise ValueError("spreading factor " + str(sf) + " is not 7-12")
    x = _LOGISTIC_K * (snr_db - SNR_FLOOR_DB[sf])
    if x > 40.0:
        return 1.0
    if x < -40.0:
        return 0.0
    return 1.0 / (1.0 + math.exp(-x))


def max_range_m(
    tx_dbm: float,
    sf: int,
    bw_hz: int,
    *,
    freq_hz: int = 470_000_000,
    path_loss_exponent: float = 3.0,
    ref_loss_db: "float | None" = None,
    noise_figure_db: float = 6.0,
    gain_db: float = 0.0,
) -> float:
    """The distance at which the SNR meets the floor (delivery 50 %) under this model."""
    _rssi, snr_at_1m = link_budget(
        1.0,
        tx_dbm,
        sf,
        bw_hz,
        freq_hz=freq_hz,
        path_loss_exponent=path_loss_exponent,
        ref_loss_db=ref_loss_db,
        noise_figure_db=noise_figure_db,
        gain_db=gain_db,
    )
    margin = snr_at_1m - SNR_FLOOR_DB[sf]
    return math.pow(10.0, margin / (10.0 * path_loss_exponent))
