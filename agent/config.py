"""The device's one TOML file, decoded once into a typed value and passed explicitly.

Secrets stay in files referenced by path (the signing key), never in the config itself.
Relative paths are resolved against the config file's folder, so a provisioned device
directory can be moved as a whole. Every problem is reported with the key that caused it,
and unknown keys are refused (a typo must not silently fall back to a default). What a
value names is checked here too, before the agent starts anything: the broker's host is a
host name, the TLS files are readable regular files holding PEM of the right kind (the
certificate and its key a pair), the outbox's folder exists and the outbox is not a folder
or a device, and the GNSS source URL is one `agent/gnss/urls.py` accepts. A room's
own section is parsed by that room's settings module (agent/radio/settings.py,
agent/dock/settings.py), which imports no driver, so decoding a config opens nothing.

    device = "h0001"
    key = "device.key"            # Ed25519 private key, PEM (PKCS#8)
    outbox = "outbox.db"          # default
    plan = "plan.geojson"         # optional: patrol points (docs/plans.md)
    team = "T01"                  # optional: the device's team, for team assignments
    center_key = "center.pub"     # optional: the center's Ed25519 public key (PEM, or the
                                  # raw 32 bytes); with it the agent accepts signed commands
                                  # (docs/commands.md), without it it subscribes to none

    [broker]
    host = "127.0.0.1"
    port = 8883
    ca = "ca.crt"                 # optional: with it the link is TLS, the broker must present
                                  # a certificate from this CA (docs/provisioning.md)
    cert = "device.crt"           # optional: the device's client certificate
    cert_key = "device.key"       # its EC private key (0600)

    [gnss]                        # optional section
    source = "gpsd://127.0.0.1:2947"   # default; see docs/gnss.md for serial/tcp/file
    not_before = 2026-01-01       # default: a GNSS date before this is week-rollover suspect

    [bridge]                      # optional: the radio co-processor (agent/radio/settings.py)
    [events]                      # optional: camera, photo size, attachment quota
                                  # (agent/events/settings.py, docs/events.md)
    [dock]                        # optional: this device is a drone dock (agent/dock/settings.py,
                                  # docs/docks.md); it needs `center_key`, and reads GNSS only
                                  # when [gnss] is given (the dock's own receiver: time)
"""

from __future__ import annotations

import datetime as dt
import stat
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PublicKeyTypes

from agent.dock.settings import DockSection, parse_dock_section
from agent.errors import ConfigError
from agent.events.settings import EventsConfig, parse_events_section
from agent.gnss.urls import SourceError, check_source, host_problem, parse_source_url
from agent.radio.settings import BridgeConfig, parse_bridge_section
from contract.keyfiles import too_open
from contract.protocol import DEVICE_ID
from contract.tls import BrokerTls

__all__ = [
    "DEFAULT_GNSS",
    "DEFAULT_NOT_BEFORE",
    "AgentConfig",
    "ConfigError",  # defined in agent.errors (the section parsers raise it too)
    "load_config",
    "read_center_key",
]

DEFAULT_GNSS = "gpsd://127.0.0.1:2947"
# No GNSS date before this can be right for this software: it was released after it.
DEFAULT_NOT_BEFORE = dt.date(2026, 1, 1)
MAX_KEY_FILE = 1024 * 1024  # a key or certificate file is a few KiB; a chain, tens
MAX_TEAM_BYTES = 32  # as a team id in a plan (agent/checkin/planchecks.py)


@dataclass(frozen=True, slots=True)
class AgentConfig:
    device: str
    key_path: Path
    outbox_path: Path
    broker_host: str
    broker_port: int
    plan_path: Path | None = None
    team: str | None = None
    gnss_source: str = DEFAULT_GNSS
    not_before: dt.date = DEFAULT_NOT_BEFORE
    center_key_path: Path | None = None
    tls: BrokerTls | None = None
    bridge: BridgeConfig | None = None
    dock: DockSection | None = None
    gnss_given: bool = True  # a [gnss] section is in the file (a dock reads GNSS only then)
    events: EventsConfig = field(default_factory=EventsConfig)

    def load_center_key(self) -> Ed25519PublicKey | None:
        """The key that signs commands (None: no `center_key`, commands are not accepted)."""
        path = self.center_key_path
        return None if path is None else read_center_key(path)

    def load_key(self) -> Ed25519PrivateKey:
        """Read the signing key once; refuse it if anyone but its owner could read it."""
        try:
            data = read_small_file(self.key_path, "signing key")
            problem = too_open(self.key_path, "signing key")
            if problem is not None:
                raise ConfigError(problem)
            key = serialization.load_pem_private_key(data, password=None)
        except (OSError, ValueError, TypeError) as exc:  # TypeError: it needs a password
            raise ConfigError(f"signing key {self.key_path}: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError(f"signing key {self.key_path}: not an Ed25519 private key")
        return key


def read_center_key(path: Path) -> Ed25519PublicKey:
    """The center's Ed25519 public key: PEM, or the raw 32 bytes."""
    try:
        data = read_small_file(path, "center key")
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
        key = serialization.load_pem_public_key(data)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"center key {path}: {exc}") from exc
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"center key {path}: not an Ed25519 public key")
    return key


def read_small_file(path: Path, what: str) -> bytes:
    """The bytes of a key or certificate file: a regular file of at most MAX_KEY_FILE bytes
    (never a folder, a device or a pipe). ConfigError naming `what` and the path."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"{what} {path}: {exc.strerror or exc}") from None
    except ValueError:  # a NUL byte in the path
        raise ConfigError(f"{what} {path!r}: a path cannot hold a NUL byte") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "a device or a pipe"
        raise ConfigError(f"{what} {path} is {kind}, not a file")
    if info.st_size > MAX_KEY_FILE:
        raise ConfigError(
            f"{what} {path} is {info.st_size} bytes: too large for a key or certificate"
        )
    try:
        with path.open("rb") as fh:
            return fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None


def _certificates(path: Path, what: str) -> list[x509.Certificate]:
    data = read_small_file(path, what)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except (ValueError, x509.InvalidVersion):
        certs = []
    if not certs:
        raise ConfigError(f"{what} {path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)")
    return certs


def _spki(key: PublicKeyTypes) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _check_tls_files(paths: dict[str, Path], where: str) -> None:
    """Each TLS file is a readable regular file of the right kind, the key its cert's."""
    _certificates(paths["ca"], f"{where}: 'ca'")
    if "cert" not in paths:
        return
    cert = _certificates(paths["cert"], f"{where}: 'cert'")[0]
    key_path = paths["cert_key"]
    data = read_small_file(key_path, f"{where}: 'cert_key'")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise ConfigError(
            f"{where}: 'cert_key' {key_path} is not an unencrypted PEM private key"
        ) from None
    if _spki(key.public_key()) != _spki(cert.public_key()):
        raise ConfigError(
            f"{where}: 'cert_key' {key_path} is not the key of 'cert' {paths['cert']}"
        )


def _tls(broker: dict[str, object], base: Path, where: str) -> BrokerTls | None:
    paths: dict[str, Path] = {}
    for name in ("ca", "cert", "cert_key"):
        value = broker.get(name)
        if value is None:
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {name!r} must be a path")
        paths[name] = _path(base, value, name, where)
    if not paths:
        return None
    if "ca" not in paths:
        raise ConfigError(f"{where}: 'cert' needs 'ca' (the CA that signed the broker)")
    if ("cert" in paths) != ("cert_key" in paths):
        raise ConfigError(f"{where}: 'cert' and 'cert_key' go together")
    _check_tls_files(paths, where)
    key = paths.get("cert_key")
    if key is not None:
        try:
            problem = too_open(key, "TLS key")
        except OSError as exc:
            raise ConfigError(f"{where}: 'cert_key' {key}: {exc}") from exc
        if problem is not None:
            raise ConfigError(problem)
    return BrokerTls(paths["ca"], paths.get("cert"), key)


def _path(base: Path, value: str, name: str, where: str) -> Path:
    """A path value, relative to the config's folder; never empty or holding a NUL byte."""
    if not value.strip():
        raise ConfigError(f"{where}: {name!r} is empty: give a path")
    if "\0" in value:
        raise ConfigError(f"{where}: {name!r} {value!r} holds a NUL byte")
    return base / value


def _outbox(base: Path, value: object, where: str) -> Path:
    """The outbox's path: in a folder that exists, and a file (or nothing yet) there, never a
    folder or a device (SQLite would fail later, or write into /dev/null)."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: 'outbox' must be a path")
    path = _path(base, value, "outbox", where)
    if not path.parent.is_dir():
        raise ConfigError(
            f"{where}: 'outbox' {path}: the folder {path.parent} does not exist (create it)"
        )
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return path  # made on first start
    except OSError as exc:
        raise ConfigError(f"{where}: 'outbox' {path}: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a folder" if stat.S_ISDIR(mode) else "a device or a pipe"
        raise ConfigError(f"{where}: 'outbox' {path} is {kind}; it must be a file, as outbox.db")
    return path


def _host(broker: dict[str, object], where: str) -> str:
    host = str(_get(broker, "host", str, where))
    why = host_problem(host)
    if why is not None:
        raise ConfigError(f"{where}: 'host' {host!r} {why}")
    return host


def _gnss_source(value: object, where: str) -> str:
    """The source URL, parsed now (then again by the agent) so a bad one stops nothing."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: 'source' must be a URL string")
    try:
        check_source(parse_source_url(value))
    except SourceError as exc:
        raise ConfigError(f"{where}: 'source': {exc}") from None
    return value


def _get(table: dict[str, object], key: str, kind: type, where: str) -> object:
    if key not in table:
        raise ConfigError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: {key!r} must be {kind.__name__}, got {value!r}")
    return value


def _only(table: dict[str, object], allowed: set[str], where: str) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(map(repr, unknown))}")


def _dock(doc: dict[str, object], base: Path, where: str) -> DockSection | None:
    dock = parse_dock_section(doc.get("dock"), base, where)
    if dock is None:
        return None
    if doc.get("center_key") is None:
        raise ConfigError(
            f"{where} [dock]: a dock flies only what the center signs: set 'center_key'"
        )
    if dock.plan_path is None and doc.get("plan") is None:
        raise ConfigError(f"{where} [dock]: no aerial plan: set 'plan' here or at the top")
    if dock.plan_path is not None and doc.get("plan") is not None:
        raise ConfigError(f"{where}: 'plan' is given twice (at the top and in [dock]): keep one")
    return dock


def _plan_path(base: Path, plan: str | None, dock: DockSection | None, where: str) -> Path | None:
    """The plan the agent runs: the top-level one, or a dock's aerial plan."""
    if plan is not None:
        return _path(base, plan, "plan", where)
    return None if dock is None else dock.plan_path


def load_config(path: Path) -> AgentConfig:
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc}") from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    where = str(path)
    base = path.parent
    allowed = {"device", "key", "outbox", "plan", "team", "center_key", "broker", "gnss"}
    allowed |= {"bridge", "dock", "events"}
    _only(doc, allowed, where)
    device = str(_get(doc, "device", str, where))
    if not DEVICE_ID.fullmatch(device):
        raise ConfigError(f"{where}: 'device' {device!r} is not a valid device id")
    broker = _get(doc, "broker", dict, where)
    assert isinstance(broker, dict)
    _only(broker, {"host", "port", "ca", "cert", "cert_key"}, f"{where} [broker]")
    port = _get(broker, "port", int, f"{where} [broker]")
    assert isinstance(port, int)
    if not 0 < port < 65536:
        raise ConfigError(f"{where} [broker]: 'port' {port} is out of range")
    gnss = doc.get("gnss", {})
    if not isinstance(gnss, dict):
        raise ConfigError(f"{where}: [gnss] must be a table")
    _only(gnss, {"source", "not_before"}, f"{where} [gnss]")
    source = _gnss_source(gnss.get("source", DEFAULT_GNSS), f"{where} [gnss]")
    not_before = gnss.get("not_before", DEFAULT_NOT_BEFORE)
    if isinstance(not_before, dt.datetime) or not isinstance(not_before, dt.date):
        raise ConfigError(f"{where} [gnss]: 'not_before' must be a date like 2026-01-01")
    team = doc.get("team")
    if team is not None and not isinstance(team, str):
        raise ConfigError(f"{where}: 'team' must be text")
    if team is not None and (
        not team.isprintable() or not 0 < len(team.encode()) <= MAX_TEAM_BYTES
    ):
        raise ConfigError(
            f"{where}: 'team' {team!r} must be 1 to {MAX_TEAM_BYTES} bytes of printable text"
        )
    plan = doc.get("plan")
    if plan is not None and not isinstance(plan, str):
        raise ConfigError(f"{where}: 'plan' must be a path")
    center_key = doc.get("center_key")
    if center_key is not None and not isinstance(center_key, str):
        raise ConfigError(f"{where}: 'center_key' must be a path")
    outbox_path = _outbox(base, doc.get("outbox", "outbox.db"), where)
    dock = _dock(doc, base, where)
    return AgentConfig(
        device=device,
        key_path=_path(base, str(_get(doc, "key", str, where)), "key", where),
        outbox_path=outbox_path,
        broker_host=_host(broker, f"{where} [broker]"),
        broker_port=port,
        plan_path=_plan_path(base, plan, dock, where),
        team=team,
        gnss_source=source,
        not_before=not_before,
        center_key_path=None
        if center_key is None
        else _path(base, center_key, "center_key", where),
        tls=_tls(broker, base, f"{where} [broker]"),
        bridge=parse_bridge_section(doc.get("bridge"), base, where),
        dock=dock,
        gnss_given="gnss" in doc,
        events=parse_events_section(doc.get("events"), base, where),
    )
