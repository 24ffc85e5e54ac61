"""MAVLink source URLs: the one place that turns text into a `MavlinkSpec` or refuses it.

    udp://HOST:PORT                   listen there for the drone's datagrams (port 0: any free one)
    serial:///dev/ttyACM0?baud=57600  a telemetry radio or an autopilot's TELEM port (baud
                                      default 57600)

Kept apart from the decoder (agent/dock/mavlink.py) and the driver (agent/dock/mavsource.py)
so that decoding a device's config (agent/dock/settings.py) checks a `[dock]` section's
`mavlink` URL without loading pymavlink or opening anything: this module is text in, a
value or a `MavlinkError` out. Every refusal names the URL and what is wrong with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from agent.errors import AgentError
from contract.serialport import STANDARD_BAUDS

__all__ = ["DEFAULT_SERIAL_BAUD", "MavlinkError", "MavlinkSpec", "parse_mavlink_url"]

DEFAULT_SERIAL_BAUD = 57600  # SiK telemetry radios and most autopilot TELEM ports


class MavlinkError(AgentError):
    """A MAVLink source URL is wrong."""


@dataclass(frozen=True, slots=True)
class MavlinkSpec:
    scheme: str  # "udp" (listen) or "serial"
    host: str = ""
    port: int = 0
    path: str = ""
    baud: int = 0

    def __str__(self) -> str:
        if self.scheme == "serial":
            return f"serial://{self.path}?baud={self.baud}"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"udp://{host}:{self.port}"


def parse_mavlink_url(url: str) -> MavlinkSpec:
    """udp://HOST:PORT (listen there; port 0: any free one) or serial:///dev/X[?baud=N]."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme == "udp":
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise MavlinkError(f"MAVLink source {url!r}: expected udp://HOST:PORT and nothing more")
        try:
            port = parts.port
        except ValueError:
            raise MavlinkError(
                f"MAVLink source {url!r}: port is not a number in 0..65535"
            ) from None
        if not parts.hostname or port is None:
            raise MavlinkError(f"MAVLink source {url!r}: expected udp://HOST:PORT")
        return MavlinkSpec("udp", host=parts.hostname, port=port)
    if scheme == "serial":
        path = unquote(parts.path)
        if parts.netloc or not path.startswith("/") or parts.fragment:
            raise MavlinkError(
                f"MAVLink source {url!r}: a serial device needs an absolute path, "
                "as in serial:///dev/ttyACM0?baud=57600"
            )
        params = dict(parse_qsl(parts.query, keep_blank_values=True))
        if set(params) - {"baud"}:
            raise MavlinkError(f"MAVLink source {url!r}: the only parameter is 'baud'")
        baud_text = params.get("baud", str(DEFAULT_SERIAL_BAUD))
        if not baud_text.isdigit() or int(baud_text) not in STANDARD_BAUDS:
            raise MavlinkError(
                f"MAVLink source {url!r}: baud {baud_text!r} is not a standard rate "
                f"({', '.join(map(str, STANDARD_BAUDS))})"
            )
        return MavlinkSpec("serial", path=path, baud=int(baud_text))
    raise MavlinkError(f"MAVLink source {url!r}: unknown scheme (expected udp or serial)")
