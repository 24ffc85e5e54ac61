"""The provisioning package's errors, under one base: `ProvisioningBaseError`.

Every error the technician's tools raise on purpose is one, and a `PicketError`
(contract/errors.py), so a caller can tell "provisioning refused" from a bug. The base is new;
the errors under it keep their places and their old relations, which callers rely on:
`RegistryError` (provisioning/registry.py: the registry cannot be opened or changed) is caught
for everything but a label, so `ProvisioningError` (a provisioning step refused, saying how to
fix it) stays under it, and `CaError` (provisioning/ca.py) under that; `LabelError`
(provisioning/label.py) is a `ValueError` too, as its callers and tests expect.
"""

from __future__ import annotations

from contract.errors import PicketError

__all__ = ["ProvisioningBaseError"]


class ProvisioningBaseError(PicketError):
    """Base of every error the provisioning package raises on purpose."""
