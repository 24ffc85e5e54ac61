"""The agent package's own errors. Every one is an `AgentError`, and a `LocalError` of the
contract's split: the device's state or environment failed (bad input from outside is the
contract's `RemoteError`, dropped and counted where it arrives)."""

from __future__ import annotations

from contract.errors import LocalError


class AgentError(LocalError):
    """Base of every error the agent package raises on purpose."""


class ConfigError(AgentError):
    """The device's configuration (config.toml and the files it names) is wrong."""


class StorageError(AgentError):
    """The outbox database could not be read or written."""
