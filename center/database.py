"""Which store holds the center's database: SQLite for a path, PostgreSQL for a URL.

The choice is made by the name alone, here, above both stores, so that neither store nor
the status that reads one has to know the other exists. The PostgreSQL store is imported
only when a URL asks for it: psycopg takes longer to import than the rest of the center
together, and `picket center status` on a SQLite file should not pay for it.
"""

from __future__ import annotations

from pathlib import Path

from center.batch import Store
from center.store import CenterStore

__all__ = ["is_postgres", "open_store"]


def is_postgres(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def open_store(db: str | Path, *, readonly: bool = False) -> Store:
    """A SQLite path, or a postgresql:// URL (libpq's; `?options=-csearch_path%3DS` picks
    a schema)."""
    if is_postgres(db):
        from center.pgstore import PgStore

        return PgStore(str(db), readonly=readonly)
    return CenterStore(Path(db), readonly=readonly)
