"""The center's HTTP API: Open311 GeoReport v2 over the events tables (aiohttp).

A thin driver around center/events/open311.py: each handler reads the request's parameters,
asks the database on the API's one database thread (the event loop never waits on SQL),
hands rows and the time to the pure mapping, and sends its JSON, or its error array with the
HTTP status of the same number. Every error the API gives, an unknown path included, is in
the spec's format, so a GeoReport client reads each the same way.

Routes: GET /services.json, GET /services/{code}.json, GET and POST /requests.json (POST with
an api_key), GET /requests/{id}.json, and GET /media/{sha256}.jpg, a photo the center holds
(a request's media_url). API keys come from a file, one a line, `NAME KEY` (`load_keys`);
what a key files is stored with its name as the one who reported it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from center.errors import CenterError
from center.events import open311
from center.events import store as events
from center.events.catalogue import Catalogue
from center.events.open311 import Open311Error
from center.events.store import EventDb
from center.tables import Sql

__all__ = ["MAX_BODY", "Api", "KeysError", "load_keys", "serve"]

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # a POST's body: the form of one request, never a photo
MIN_KEY = 16  # characters of an api_key
_SHA = re.compile(r"^[0-9a-f]{64}$")
T = TypeVar("T")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class KeysError(CenterError):
    """An API keys file that cannot be used; the message names the line."""


def load_keys(path: Path) -> dict[str, str]:
    """api_key -> name, from lines `NAME KEY` (blank lines and `#` comments skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysError(f"cannot read the API keys {path}: {exc}") from exc
    keys: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2:
            raise KeysError(f"{path} line {n}: expected NAME KEY (two words)")
        name, key = parts
        if len(key) < MIN_KEY or not key.isascii() or not key.isprintable():
            raise KeysError(f"{path} line {n}: the key of {name} must be {MIN_KEY}+ ASCII chars")
        if key in keys:
            raise KeysError(f"{path} line {n}: the key of {name} is also {keys[key]}'s")
        keys[key] = name
    if not keys:
        raise KeysError(f"{path} holds no API key (one a line: NAME KEY)")
    return keys


def _json(value: object, status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(value, ensure_ascii=False),
        status=status,
        content_type="application/json",
        charset="utf-8",
    )


def _error(code: int, description: str) -> web.Response:
    return _json(Open311Error(code, description).body(), code)


@web.middleware
async def _spec_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal in the spec's format, aiohttp's own (unknown path, method) too."""
    try:
        return await handler(request)
    except Open311Error as exc:
        return _json(exc.body(), exc.code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        if exc.status == 404:
            return _error(404, f"{request.path[:100]} was not found (JSON only: .json)")
        return _error(exc.status, exc.reason)


class Api:
    """The routes over one database, one catalogue and the API keys; `clock` gives the
    time in milliseconds (the tests and the benchmark pass their own)."""

    def __init__(
        self,
        db: EventDb,
        catalogue: Catalogue,
        keys: Mapping[str, str],
        clock: Callable[[], int],
        *,
        media_base: str | None = None,
    ) -> None:
        self.db = db
        self.catalogue = catalogue
        self.keys = dict(keys)
        self.clock = clock
        self.media_base = media_base
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="open311-db")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_spec_errors], client_max_size=MAX_BODY)
        app.add_routes(
            [
                web.get("/services.json", self.services),
                web.get("/services/{code}.json", self.service),
                web.get("/requests.json", self.requests),
                web.post("/requests.json", self.post),
                web.get("/requests/{id}.json", self.request),
                web.get("/media/{sha}.jpg", self.media),
            ]
        )
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, _app: web.Application) -> None:
        self._pool.shutdown(wait=True)

    async def _db(self, work: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work)

    def _base(self, request: web.Request) -> str:
        return self.media_base or f"{request.scheme}://{request.host}"

    # -- services

    async def services(self, _request: web.Request) -> web.Response:
        return _json(open311.services(self.catalogue))

    async def service(self, request: web.Request) -> web.Response:
        return _json(open311.service_definition(self.catalogue, request.match_info["code"]))

    # -- requests

    def _rows(self, sql: Sql, rows: list[events.EventRow], base: str) -> list[dict[str, Any]]:
        photos = events.first_photos(sql, [r.number for r in rows])
        return [
            open311.request_json(r, self.catalogue, media_base=base, photo=photos.get(r.number))
            for r in rows
        ]

    async def requests(self, request: web.Request) -> web.Response:
        query = open311.parse_query(request.query, self.clock())
        base = self._base(request)

        def read() -> list[dict[str, Any]]:
            with self.db.read() as sql:
                rows = events.list_events(sql, query, with_reporters=False)
                return self._rows(sql, rows, base)

        return _json(await self._db(read))

    async def request(self, request: web.Request) -> web.Response:
        number = open311.parse_request_id(request.match_info["id"])
        base = self._base(request)

        def read() -> list[dict[str, Any]]:
            with self.db.read() as sql:
                row = events.get_event(sql, number)
                return [] if row is None else self._rows(sql, [row], base)

        found = await self._db(read)
        if not found:
            raise Open311Error(404, f"service_request_id {number} was not found")
        return _json(found)

    async def post(self, request: web.Request) -> web.Response:
        try:
            body = await request.post()
        except ValueError:
            raise Open311Error(
                400, "the body is not a form (application/x-www-form-urlencoded)"
            ) from None
        form: dict[str, str] = {}
        for source in (body, request.query):
            for k, v in source.items():
                if isinstance(v, str):
                    form.setdefault(k, v)
        now = self.clock()
        posted = open311.parse_post(form, self.keys, self.catalogue, now)

        def write() -> int:
            with self.db.write() as sql:
                number, _ = events.add_event(sql, posted.event, now)
                return number

        number = await self._db(write)
        log.info("Open311 request %d filed by %s", number, posted.key_name)
        return _json(open311.post_answer(number))

    async def media(self, request: web.Request) -> web.Response:
        sha = request.match_info["sha"].lower()
        if not _SHA.match(sha):
            raise Open311Error(404, "media was not found")

        def read() -> bytes | None:
            with self.db.read() as sql:
                return events.media(sql, bytes.fromhex(sha))

        data = await self._db(read)
        if data is None:
            raise Open311Error(404, f"media {sha} was not found")
        return web.Response(body=data, content_type="image/jpeg")


async def serve(
    api: Api,
    host: str,
    port: int,
    stop: asyncio.Event,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Serve `api` on host:port until `stop` is set; `ready(port)` once listening (the port
    the system gave when `port` is 0)."""
    runner = web.AppRunner(api.app(), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        addresses = runner.addresses
        bound = int(addresses[0][1]) if addresses else port
        if ready is not None:
            ready(bound)
        await stop.wait()
    finally:
        with contextlib.suppress(Exception):
            await runner.cleanup()
