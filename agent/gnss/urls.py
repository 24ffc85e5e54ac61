"""GNSS source URLs: the one place that turns text into a `SourceSpec` or refuses it.

    serial:///dev/ttyUSB0?baud=9600   NMEA from a receiver on a serial port (baud default 9600)
    tcp://host:port                   NMEA over TCP (a network receiver, ser2net, a simulator)
    gpsd://host[:port]                gpsd's JSON reports (port default 2947)
    file://path, file:///abs/path     an NMEA log, replayed once; ?pace=realtime keeps its timing
    path                              the same as file://path

Every refusal names the URL and what is wrong with it (unknown scheme, missing port, a baud
rate that is not a standard one, an unknown parameter, a host that is not a host name, a
control character), so a technician can fix a config file from the message alone.
`check_source` adds the one check that needs the file system, before a source is used: a
log to replay must be there and readable (a serial device may be plugged in later).
`host_problem` is the host-name rule, shared with the broker's host in config.toml.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import stat
from dataclasses import dataclass
from urllib.parse import SplitResult, parse_qsl, unquote, urlsplit

from agent.errors import AgentError
from contract.serialport import STANDARD_BAUDS

DEFAULT_BAUD = 9600
GPSD_PORT = 2947
MAX_URL = 4096  # PATH_MAX: no source URL is longer
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")  # one label of a host name (RFC 1123)


class SourceError(AgentError):
    """A GNSS source URL is wrong, or a file to replay cannot be read."""


class Scheme(enum.StrEnum):
    SERIAL = "serial"
    TCP = "tcp"
    GPSD = "gpsd"
    FILE = "file"


class Pace(enum.StrEnum):
    FAST = "fast"  # as fast as the consumer takes fixes
    REALTIME = "realtime"  # at the spacing of the fixes' GNSS times


@dataclass(frozen=True, slots=True)
class SourceSpec:
    scheme: Scheme
    path: str = ""  # serial device or file
    host: str = ""
    port: int = 0
    baud: int = 0
    pace: Pace = Pace.FAST

    @property
    def where(self) -> str:
        if self.scheme in (Scheme.SERIAL, Scheme.FILE):
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.scheme is Scheme.SERIAL:
            return f"serial://{self.path}?baud={self.baud}"
        if self.scheme is Scheme.FILE:
            return f"file://{self.path}" + ("?pace=realtime" if self.pace is Pace.REALTIME else "")
        return f"{self.scheme}://{self.where}"


_PARAMS = {Scheme.SERIAL: ("baud",), Scheme.FILE: ("pace",), Scheme.TCP: (), Scheme.GPSD: ()}


def host_problem(host: str) -> str | None:
    """Why `host` is neither a host name nor an IP address (None: it is one)."""
    if not host:
        return "is empty"
    if any(c.isspace() or not c.isprintable() for c in host):
        return "holds a space or a control character"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if host.startswith("[") and host.endswith("]"):
        return "is an IPv6 address in brackets: give it without them"
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        return "is not a host name or an IP address"
    return None


def _clean(url: str) -> str:
    """The URL without surrounding spaces; refused when empty, overlong or not printable."""
    text = url.strip()
    if not text:
        raise SourceError("empty GNSS source URL")
    if len(text) > MAX_URL:
        raise SourceError(f"GNSS source URL of {len(text)} characters: at most {MAX_URL}")
    if any(not c.isprintable() for c in text):
        raise SourceError(f"GNSS source {url!r}: holds a control character")
    return text


def parse_source_url(url: str) -> SourceSpec:
    text = _clean(url)
    if "://" not in text:
        head, colon, _ = text.partition(":")
        if colon and head.lower() in {s.value for s in Scheme}:
            raise SourceError(f"GNSS source {url!r}: missing '//' after '{head}:'")
        return SourceSpec(Scheme.FILE, path=text)  # a bare path is a file to replay
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # "Invalid IPv6 URL": a '[' without its ']'
        raise SourceError(
            f"GNSS source {url!r}: not a valid URL ({exc}; an IPv6 host is written [::1])"
        ) from None
    try:
        scheme = Scheme(parts.scheme.lower())
    except ValueError:
        raise SourceError(
            f"GNSS source {url!r}: unknown scheme {parts.scheme!r} "
            "(expected serial, tcp, gpsd or file)"
        ) from None
    if parts.fragment:
        raise SourceError(f"GNSS source {url!r}: unexpected fragment '#{parts.fragment}'")
    params = _params(url, scheme, parts.query)
    if scheme is Scheme.FILE:
        path = unquote(parts.netloc + parts.path)  # file://relative/path is relative
        if not path:
            raise SourceError(f"GNSS source {url!r}: no file path")
        _printable_path(url, path)
        pace = params.get("pace", Pace.FAST.value)
        if pace not in {p.value for p in Pace}:
            raise SourceError(f"GNSS source {url!r}: pace {pace!r} is not 'realtime' or 'fast'")
        return SourceSpec(scheme, path=path, pace=Pace(pace))
    if scheme is Scheme.SERIAL:
        path = unquote(parts.path)
        _printable_path(url, path)
        if parts.netloc or not path.startswith("/"):
            raise SourceError(
                f"GNSS source {url!r}: a serial device needs an absolute path, "
                "as in serial:///dev/ttyUSB0"
            )
        baud_text = params.get("baud", str(DEFAULT_BAUD))
        if not baud_text.isdigit() or int(baud_text) not in STANDARD_BAUDS:
            raise SourceError(
                f"GNSS source {url!r}: baud {baud_text!r} is not a standard rate "
                f"({', '.join(map(str, STANDARD_BAUDS))})"
            )
        return SourceSpec(scheme, path=path, baud=int(baud_text))
    return _network(url, scheme, parts)


def _printable_path(url: str, path: str) -> None:
    if any(not c.isprintable() for c in path):
        raise SourceError(f"GNSS source {url!r}: the path holds a control character (%00?)")


def _network(url: str, scheme: Scheme, parts: SplitResult) -> SourceSpec:
    host = parts.hostname
    if not host:
        raise SourceError(f"GNSS source {url!r}: missing host")
    why = host_problem(host)
    if why is not None:
        raise SourceError(f"GNSS source {url!r}: host {host!r} {why}")
    if "@" in parts.netloc:
        raise SourceError(f"GNSS source {url!r}: user names and passwords are not supported")
    if parts.path not in ("", "/"):
        raise SourceError(f"GNSS source {url!r}: unexpected path {parts.path!r} after the host")
    try:
        port = parts.port
    except ValueError:
        raise SourceError(f"GNSS source {url!r}: port is not a number in 1..65535") from None
    if port is None and scheme is Scheme.GPSD:
        port = GPSD_PORT
    if not port:
        raise SourceError(f"GNSS source {url!r}: missing port ({scheme}://HOST:PORT)")
    return SourceSpec(scheme, host=host, port=int(port))


def _params(url: str, scheme: Scheme, query: str) -> dict[str, str]:
    allowed = _PARAMS[scheme]
    out: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        if key not in allowed:
            expected = f"(expected {', '.join(allowed)})" if allowed else "(it takes none)"
            raise SourceError(f"GNSS source {url!r}: unknown parameter {key!r} {expected}")
        if key in out:
            raise SourceError(f"GNSS source {url!r}: parameter {key!r} given twice")
        out[key] = value
    return out


def check_source(spec: SourceSpec) -> None:
    """Refuse a file to replay that is not there or cannot be read, naming it. Other
    sources are not checked here: a receiver may be plugged in, or a server start, later."""
    if spec.scheme is not Scheme.FILE:
        return
    try:
        mode = os.stat(spec.path).st_mode
    except OSError as exc:
        raise SourceError(f"GNSS source {spec}: cannot open {spec.path}: {exc.strerror}") from None
    if stat.S_ISDIR(mode):
        raise SourceError(f"GNSS source {spec}: {spec.path} is a folder, not an NMEA log")
    if not os.access(spec.path, os.R_OK):
        raise SourceError(f"GNSS source {spec}: {spec.path} cannot be read (permission denied)")
