"""What the simulators need of a progress display, passed in by whoever runs them.

The CLI passes its terminal progress line (picket/progress.py); tests and the pytest fleet
fixture pass `QUIET`. The simulators never choose how progress is shown."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    def update(self, text: str, force: bool = False) -> None:
        """The run's state now; may be shown or skipped (shown at once when `force`)."""

    def done(self, text: str) -> None:
        """The run's last line, always shown."""


class _Quiet:
    def update(self, text: str, force: bool = False) -> None:
        pass

    def done(self, text: str) -> None:
        pass


QUIET: ProgressSink = _Quiet()
