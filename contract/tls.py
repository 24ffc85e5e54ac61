"""TLS to the broker, the same for every client of it: a device's uplink, the center, a LoRa
gateway bridge. Each trusts the fleet's CA and presents a certificate of its own
(docs/provisioning.md); `explain_tls` turns OpenSSL's words for a refused handshake into a
sentence a technician can act on."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from contract.errors import LocalError
from contract.keyfiles import too_open


@dataclass(frozen=True, slots=True)
class BrokerTls:
    """TLS to the broker: trust `ca_path` (the system store when None) and, when given,
    present this client's certificate (`cert_path`, with `key_path` unless the key is in it).
    The file holding the key must be readable by its owner alone, as every private key is
    (contract/keyfiles.py); `check_key` says why not, and `context` refuses it."""

    ca_path: Path | None = None
    cert_path: Path | None = None
    key_path: Path | None = None

    def check_key(self) -> str | None:
        """Why the file holding the TLS key must not be used, or None. OSError if it cannot be
        looked at."""
        key = self.key_path or self.cert_path
        return None if key is None else too_open(key, "TLS key")

    def context(self) -> ssl.SSLContext:
        if self.key_path is not None and self.cert_path is None:
            raise LocalError(f"TLS: key {self.key_path} given without a certificate")
        try:
            problem = self.check_key()
            if problem is not None:
                raise LocalError(problem)
            ctx = ssl.create_default_context(
                cafile=None if self.ca_path is None else str(self.ca_path)
            )
            if self.cert_path is not None:
                ctx.load_cert_chain(
                    str(self.cert_path), None if self.key_path is None else str(self.key_path)
                )
        except (OSError, ssl.SSLError) as exc:
            raise LocalError(f"TLS: cannot load CA, certificate or key: {exc}") from exc
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        return ctx


# What OpenSSL says when a TLS handshake fails, and what it means for a field device.
_TLS_FAILURES = (
    ("certificate expired", "the broker refused this device's certificate: it has expired"),
    ("certificate revoked", "the broker refused this device's certificate: it was revoked"),
    ("unknown ca", "the broker refused this device's certificate: issued by a CA it does not "
     "trust (a certificate from another fleet?)"),
    ("certificate required", "the broker requires a client certificate and got none"),
    ("bad certificate", "the broker refused this device's certificate"),
    ("certificate verify failed", "the broker's certificate was not accepted (not issued by "
     "this device's fleet CA, wrong host name, or expired)"),
)  # fmt: skip


def explain_tls(message: str) -> str | None:
    """A clear sentence for a TLS refusal (None: not one); OpenSSL's words follow it."""
    low = message.lower()
    for needle, meaning in _TLS_FAILURES:
        if needle in low:
            return f"TLS: {meaning} [{message}]"
    return None
