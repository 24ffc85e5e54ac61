"""The center package's own errors, all under one base, `CenterError`.

One base so that a caller can tell "the center refused or failed" from everything else, and
so that every error the center raises on purpose is a `PicketError` (contract/errors.py).
They sit here together because several modules raise the same one: the read-only tools
(export, commands, status) and both stores all say `CenterDbError` when the database is not
a readable center's, and both stores say `StoreError` when a batch could not be committed.

`PacketError` is still a `ValueError` as well: the LoRa gateway's callers catch it as one.
"""

from __future__ import annotations

from contract.errors import PicketError

__all__ = ["CenterDbError", "CenterError", "DispatchError", "PacketError", "StoreError"]


class CenterError(PicketError):
    """Base of every error the center package raises on purpose."""


class CenterDbError(CenterError):
    """The path or URL is not a readable Picket center database."""


class StoreError(CenterError):
    """The database failed (locked too long, disk full, connection lost): nothing of the
    batch was committed, so nothing was acknowledged; the device will send it again."""


class DispatchError(CenterError):
    """A command could not be handed to the broker."""


class PacketError(CenterError, ValueError):
    """A packet the LoRa gateway heard that carries no routable record."""
