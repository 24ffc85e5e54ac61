"""The agent package's errors, split by who is at fault (as h11 does).

`RemoteError`: bytes from outside (a receiver, the broker, the center) were malformed;
the caller drops and counts them. `LocalError`: our own state or environment is wrong
(a damaged outbox, a full disk); the caller must stop or report, never carry on silently.
"""

from __future__ import annotations


class AgentError(Exception):
    """Base of every error the agent package raises on purpose."""


class RemoteError(AgentError):
    """Input from outside did not parse or verify."""


class LocalError(AgentError):
    """The device's own state or environment failed."""


class ConfigError(LocalError):
    """The device's configuration (config.toml and the files it names) is wrong."""


class RecordError(RemoteError):
    """A record is not a valid, correctly signed Picket COSE_Sign1."""


class StorageError(LocalError):
    """The outbox database could not be read or written."""
