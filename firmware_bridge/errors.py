"""The errors of the bridge to the radio MCU: one base, `BridgeError`, for the whole package.

`BridgeError` is a `contract.errors.PicketError`, like every Picket package's base, so a
supervisor can catch Picket's errors in one clause, and `except BridgeError` catches every
error this package raises on purpose, a refused firmware bundle (fwbundle.py `BundleError`,
also a `RemoteError`: the bytes came from outside) included. The driver (host.py) turns
`OSError` from the port into `LinkDown` at its one boundary; nothing here wraps anything else.
Most of these say what the MCU did or did not do (no answer, a restart, a refusal, another
protocol); which request and which status is in the text and in the attributes.
"""

from __future__ import annotations

from contract.errors import PicketError
from firmware_bridge import messages as m
from firmware_bridge.values import NAMES, Version

__all__ = [
    "BridgeError",
    "BridgeTimeout",
    "DutyCycleExceeded",
    "LinkDown",
    "McuReset",
    "SendUncertain",
    "StatusError",
    "UpdateFailed",
    "VersionMismatch",
]


class BridgeError(PicketError):
    """Base of every error the bridge raises on purpose."""


class LinkDown(BridgeError):
    """The port is closed, missing or failed, or the MCU did not come up in time."""


class BridgeTimeout(BridgeError):
    """The MCU did not answer a request, retries included."""


class McuReset(BridgeError):
    """The MCU restarted while a request was in flight; it forgot the request."""


class VersionMismatch(BridgeError):
    """The MCU speaks another major version of the bridge protocol."""

    def __init__(self, text: str, mcu_protocol: int, mcu_firmware: Version) -> None:
        super().__init__(text)
        self.mcu_protocol = mcu_protocol
        self.mcu_firmware = mcu_firmware


class StatusError(BridgeError):
    """The MCU answered with a status other than OK."""

    def __init__(self, request: int, status: int) -> None:
        name = m.STATUS_NAMES.get(status, f"status {status}")
        super().__init__(f"{NAMES.get(request, hex(request))} refused by the MCU: {name}")
        self.request = request
        self.status = status
        self.status_name = name


class DutyCycleExceeded(StatusError):
    """RADIO_SEND refused: sending now would exceed the regulatory duty cycle."""


class SendUncertain(BridgeError):
    """RADIO_SEND's answer arrived garbled: the packet may or may not be on the air."""


class UpdateFailed(BridgeError):
    """A firmware update did not end with the new image running."""

    def __init__(self, text: str, *, rolled_back_to: Version | None = None) -> None:
        super().__init__(text)
        self.rolled_back_to = rolled_back_to
