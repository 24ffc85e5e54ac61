"""Which PostgreSQL server the tests use: one for the whole session (the `pg` fixture).

- PICKET_TEST_PG set to a libpq URL: that server, as it is. Nothing is started or stopped,
  and when it does not answer, the PostgreSQL cases skip and name it. A server given
  explicitly always wins.
- PICKET_TEST_PG unset (or empty): a private server (simulators/pgserver.py) in a temporary
  folder on a free port, stopped and removed after the session, even when a server answers
  on 127.0.0.1:5432: the suite never touches a user's database unless told to.
- No server binaries and no PICKET_TEST_PG: the PostgreSQL cases skip and say what to
  install (`./run test` installs it when run as root).

Each test then makes a schema of its own in that database (tests/test_center_pg.py's
`target`), so one server serves every test.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from simulators.pgserver import PgMissing, PgServer, find_bindir

ENV = "PICKET_TEST_PG"


@dataclass(frozen=True, slots=True)
class PgSession:
    """The server the session's PostgreSQL cases use: its URL, and the private server
    behind it (None when PICKET_TEST_PG named one)."""

    url: str
    server: PgServer | None


@functools.cache
def unreachable(url: str) -> str | None:
    """Why the server at url cannot be used, or None when it answers."""
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"no PostgreSQL server reachable at {ENV}={url} ({first})"
    return None


@contextlib.contextmanager
def session_postgres(
    environ: Mapping[str, str] = os.environ, *, search: Iterable[Path] | None = None
) -> Iterator[PgSession]:
    """The session's server as above; pytest.skip when there is none to be had.
    `search`: where to look for server binaries instead of /usr/lib/postgresql and PATH."""
    given = environ.get(ENV, "")
    if given:
        reason = unreachable(given)
        if reason is not None:
            pytest.skip(reason)
        yield PgSession(given, None)
        return
    try:
        bindir = find_bindir(search)
    except PgMissing as exc:
        pytest.skip(f"{exc}; or set {ENV} to a server's URL")
    with PgServer(bindir=bindir) as server:
        yield PgSession(server.url, server)
