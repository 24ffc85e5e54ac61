"""The fault split every Picket package builds its errors on (as h11 does).

`RemoteError`: bytes from outside (a receiver, the broker, the center, a device) were
malformed; the caller drops and counts them. `LocalError`: our own state or environment is
wrong (a damaged outbox, a full disk, a bad config); the caller must stop or report, never
carry on silently. Each package has one base of its own (`agent.errors.AgentError`,
`center.errors.CenterError`, …) and says which side of the split each error is on.
"""

from __future__ import annotations


class PicketError(Exception):
    """Base of every error Picket raises on purpose."""


class RemoteError(PicketError):
    """Input from outside did not parse or verify."""


class LocalError(PicketError):
    """Our own state or environment failed."""


class RecordError(RemoteError):
    """A record, command or bundle is not a valid, correctly signed Picket COSE_Sign1."""
