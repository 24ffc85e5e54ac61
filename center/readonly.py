"""The center's SQLite database, opened by the tools that read it beside a live center.

Export, the command tools' answers and key rotation read the center's database while a
center may be writing it, so they open it read-only (`mode=ro`: a mistyped path is never
created, a live WAL database is read as of each statement) and say in one way what is
wrong with a path that is no center database: missing, not SQLite, or without the tables
a center makes. `check_center` is the same check for a connection opened otherwise (the
command signer, which writes its numbers beside the records).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path

from center.errors import CenterDbError

__all__ = ["check_center", "open_readonly"]


def open_readonly(db: Path, *, center: Sequence[str] = (), hint: str = "") -> sqlite3.Connection:
    """`db` for reading. `center`: the tables without which it is no center database (see
    `check_center`); none: the path is only opened, not checked."""
    if not db.is_file():
        raise CenterDbError(f"no center database at {db}")
    try:
        con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise CenterDbError(f"cannot open {db}: {exc}") from exc
    if center:
        try:
            check_center(con, db, center, hint)
        except BaseException:
            con.close()
            raise
    return con


def check_center(
    con: sqlite3.Connection, db: Path, center: Sequence[str] = ("records",), hint: str = ""
) -> set[str]:
    """The names of `db`'s tables; CenterDbError unless it is SQLite and has each of the
    `center` tables (`hint` is said after what is missing)."""
    try:
        names = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.DatabaseError as exc:
        raise CenterDbError(f"{db} is not a SQLite database ({exc})") from exc
    if any(t not in names for t in center):
        raise CenterDbError(f"{db} is not a Picket center database (it has no records table{hint})")
    return names
