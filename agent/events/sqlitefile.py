"""One SQLite file of the events room, opened durably: WAL, `synchronous=FULL`, its tables
made in one transaction; errors as `StorageError`s that name the file and say "disk full"
when it is. The attachment store and the device's own events (agent/events/attachstore.py,
mine.py) share attachments.db, each on its own connection, and this."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from agent.errors import StorageError
from agent.store.schema import transaction


class SqliteFile:
    """`label` names the file in errors ("attachments", "events")."""

    label = "sqlite"

    def __init__(self, path: Path, tables: Sequence[str], *, first: Sequence[str] = ()) -> None:
        """Open `path` and make `tables`; `first` are pragmas that must come before any
        table (auto_vacuum)."""
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise self._error("cannot open", exc) from exc
        try:
            for pragma in (*first, "PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL"):
                self._db.execute(pragma)
            with transaction(self._db):
                for sql in tables:
                    self._db.execute(sql)
        except sqlite3.Error as exc:
            self._db.close()
            raise self._error("cannot open", exc) from exc

    def _error(self, what: str, exc: sqlite3.Error | OSError) -> StorageError:
        code = getattr(exc, "sqlite_errorcode", None)
        full = (isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL) or (
            isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)
        )
        head = "disk full: " if full else ""
        return StorageError(f"{self.label} {self.path}: {head}{what}: {exc}")

    def close(self) -> None:
        self._db.close()

    def _query(self, sql: str, args: Sequence[object]) -> list[tuple[object, ...]]:
        try:
            return list(self._db.execute(sql, args).fetchall())
        except sqlite3.Error as exc:
            raise self._error("cannot read", exc) from exc

    def _write(self, sql: str, args: Sequence[object], what: str) -> None:
        try:
            with transaction(self._db):
                self._db.execute(sql, args)
        except sqlite3.Error as exc:
            raise self._error(what, exc) from exc
