"""The center database opened for the events tables, in either dialect.

`EventDb` opens the center's database by its name as every center tool does (a SQLite path
or a postgresql:// URL; a SQLite path must exist: a mistyped one is never created), makes
the center's tables first when it may write (center/database.py `open_store`: the events
tables come with them), and holds one connection of its own behind `tables.Sql`, with one
write transaction (`write`) and one consistent read (`read`) for both dialects.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from center.database import is_postgres, open_store
from center.errors import CenterDbError, StoreError
from center.tables import Dialect, Sql, SqliteSql

__all__ = ["EventDb"]

BUSY_TIMEOUT_S = 30.0  # another center process holding the write lock: wait, don't fail


@functools.cache
def _marks(sql: str) -> str:
    return sql.replace("?", "%s")


class _Pg:
    dialect = Dialect.POSTGRESQL

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        cur = self.conn.execute(_marks(sql), params or None)
        return cur.fetchall() if cur.description is not None else []

    def run(self, sql: str, params: Sequence[object] = ()) -> None:
        self.conn.execute(_marks(sql), params or None)

    def run_many(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(_marks(sql), rows)


class EventDb:
    """The center database, for the events tables. Used from one thread at a time."""

    def __init__(self, db: str | Path, *, readonly: bool = False) -> None:
        self.name = str(db)
        self.sql: Sql
        if not is_postgres(db) and not Path(db).is_file():
            raise CenterDbError(f"no center database at {db}")
        if not readonly:
            open_store(db).close()  # the center's tables, the events tables among them
        if is_postgres(db):
            self._open_pg(str(db), readonly)
        else:
            self._open_sqlite(Path(db), readonly)

    def _open_sqlite(self, path: Path, readonly: bool) -> None:
        uri = f"{path.resolve().as_uri()}?mode={'ro' if readonly else 'rw'}"
        try:
            con = sqlite3.connect(
                uri, uri=True, isolation_level=None, timeout=BUSY_TIMEOUT_S, check_same_thread=False
            )
            self._lite: sqlite3.Connection | None = con
            self.sql = SqliteSql(con)
            found = con.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
            ).fetchone()
        except sqlite3.DatabaseError as exc:
            raise CenterDbError(f"cannot open center database {path}: {exc}") from exc
        if found is None:
            self.close()
            raise CenterDbError(
                f"{path} has no events tables (is it a center database? "
                "`picket center run` on it once adds them)"
            )

    def _open_pg(self, url: str, readonly: bool) -> None:
        import psycopg

        from center.pgstore import redact

        self._lite = None
        try:
            self._pg = psycopg.connect(url, autocommit=True, connect_timeout=10)
            row = self._pg.execute("SELECT to_regclass('events') IS NOT NULL").fetchone()
        except psycopg.Error as exc:
            raise CenterDbError(f"cannot connect to {redact(url)}: {exc}") from exc
        self.sql = _Pg(self._pg)
        if not row or not row[0]:
            self.close()
            raise CenterDbError(f"{redact(url)} has no events tables")

    @contextlib.contextmanager
    def write(self) -> Iterator[Sql]:
        """One write transaction; StoreError when the database fails."""
        if self._lite is not None:
            db = self._lite
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    yield self.sql
                    db.execute("COMMIT")
                except BaseException:
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StoreError(f"center database {self.name}: {exc}") from exc
            return
        import psycopg

        try:
            with self._pg.transaction():
                yield self.sql
        except psycopg.Error as exc:
            raise StoreError(f"center database: {exc}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Sql]:
        """One consistent view for several reads."""
        if self._lite is not None:
            db = self._lite
            try:
                db.execute("BEGIN")
                try:
                    yield self.sql
                finally:
                    db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise CenterDbError(f"cannot read {self.name}: {exc}") from exc
            return
        import psycopg

        try:
            with self._pg.transaction():
                self._pg.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                yield self.sql
        except psycopg.Error as exc:
            raise CenterDbError(f"cannot read the center database: {exc}") from exc

    def close(self) -> None:
        if self._lite is not None:
            self._lite.close()
        else:
            self._pg.close()
