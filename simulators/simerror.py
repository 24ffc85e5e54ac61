"""The simulators package's one error base, on the local side of the contract's split.

A simulator is our own harness, not a peer: when one fails, our options, our input files
(a scenario, members.csv, --faults) or our environment (Mosquitto, the center process) are
wrong, so every error here is a `contract.errors.LocalError`. Bytes a simulated peer sends
are judged by the code under test with its own errors, never with these. This module is
not simulators/errors.py, which holds the GNSS error *models* of the truth benchmark.

Errors that callers have always caught as `ValueError` (`ScenarioError`, `RosterError`,
`FaultError`) keep it as a second base.
"""

from __future__ import annotations

from contract.errors import LocalError

__all__ = ["SimulatorError"]


class SimulatorError(LocalError):
    """Base of every error the simulators raise on purpose."""
