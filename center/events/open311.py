"""Open311 GeoReport v2, as pure functions: the center's events as a city's service requests.

GeoReport v2 (wiki.open311.org/GeoReport_v2) is how civic tools and a city's hotline read
and file non-emergency reports. The mapping is plain: a category of the catalogue is a
*service* (service_code its code, service_name its English name, group its group); an event
is a *service request* whose service_request_id is the event's number. The field names and
the error format are the spec's, exactly: an error is the array
`[{"code": 400, "description": "..."}]` with the HTTP status of the same number (400 a
parameter missing or wrong, 403 no api_key or a wrong one, 404 an unknown service_code or
service_request_id). Nothing here touches a socket or a clock: center/events/api.py passes
in the parameters, the rows and the time, and sends what comes back.

Status: the spec knows `open` and `closed`. Closed are the events the center is done with
(closed, rejected, merged into another); every other status, resolved included (the center
has yet to check the result), is open, and `status_notes` says where it stands.

GET requests.json: `service_request_id` (comma separated) overrides every other filter;
else `status`, `service_code` (comma separated) and `start_date`/`end_date` (ISO 8601 with a
time zone, on requested_datetime) narrow. As the spec asks, the window may not span more
than 90 days and defaults to the most recent 90 days (or the 90 days after start_date, or
before end_date, when only one is given), and at most 1,000 requests are returned, the most
recent first.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from center.events.catalogue import Catalogue, find
from center.events.lifecycle import OPEN311, TEAM_PREFIX, label
from center.events.store import EventQuery, EventRow, NewEvent
from contract.eventcommands import EventStatusCode

__all__ = [
    "MAX_RESULTS",
    "WINDOW_DAYS",
    "Open311Error",
    "Posted",
    "iso",
    "parse_iso",
    "parse_post",
    "parse_query",
    "post_answer",
    "request_json",
    "service_definition",
    "services",
]

WINDOW_DAYS = 90
MAX_RESULTS = 1000
DAY_MS = 86_400_000
MAX_DESCRIPTION = 4000  # characters, as the spec allows
MAX_ADDRESS = 500
MAX_URL = 2000
MAX_IDS = 1000

S = EventStatusCode
CLOSED = (S.CLOSED, S.REJECTED, S.MERGED)
OPEN = tuple(s for s in S if s not in CLOSED)


class Open311Error(Exception):
    """A refusal in the spec's words: its HTTP status and description."""

    def __init__(self, code: int, description: str) -> None:
        super().__init__(description)
        self.code = code
        self.description = description

    def body(self) -> list[dict[str, Any]]:
        return [{"code": self.code, "description": self.description}]


# --- time ----------------------------------------------------------------------------------------


def iso(ms: int | None) -> str | None:
    """W3C date-time in UTC with `Z`, to the second, as the spec's examples."""
    if ms is None:
        return None
    t = dt.datetime.fromtimestamp(ms // 1000, tz=dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(name: str, text: str) -> int:
    """Milliseconds since the epoch of an ISO 8601 date-time with a time zone."""
    try:
        t = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise Open311Error(
            400, f"{name} {text[:40]!r} is not an ISO 8601 date-time (2010-01-01T00:00:00Z)"
        ) from None
    if t.tzinfo is None:
        raise Open311Error(400, f"{name} must give its time zone (Z or an offset such as +08:00)")
    return int(t.timestamp() * 1000)


# --- services ------------------------------------------------------------------------------------


def services(catalogue: Catalogue) -> list[dict[str, Any]]:
    """GET services.json."""
    return [
        {
            "service_code": str(c.code),
            "service_name": c.name_en,
            "description": f"{c.name_zh} ({c.name_en}); handled by {c.team}",
            "metadata": False,
            "type": "realtime",
            "keywords": ", ".join((c.name_zh, c.group)),
            "group": c.group,
        }
        for c in catalogue.categories
    ]


def _code(catalogue: Catalogue, text: str) -> int:
    code = int(text) if text.strip().isdigit() and len(text.strip()) < 7 else None
    if code is None or find(catalogue, code) is None:
        raise Open311Error(404, f"service_code {text[:40]!r} was not found")
    return code


def service_definition(catalogue: Catalogue, text: str) -> dict[str, Any]:
    """GET services/{code}.json: no service has extra attributes (metadata is false)."""
    return {"service_code": str(_code(catalogue, text)), "attributes": []}


# --- requests ------------------------------------------------------------------------------------


def _notes(row: EventRow) -> str:
    s = row.status
    if s is S.MERGED:
        return f"a duplicate: merged into request {row.merged_into}"
    if s is S.REJECTED:
        return f"rejected: {row.reason}"
    if s is S.REOPENED:
        return f"reopened: {row.reason}"
    if s in (S.RESOLVED, S.CLOSED) and row.result:
        return f"{label(s)}: {row.result}"
    if s is S.DISPATCHED:
        return f"dispatched to {_agency(row.assignee)}"
    return label(s)


def _agency(assignee: str | None) -> str | None:
    if assignee is None:
        return None
    return assignee.removeprefix(TEAM_PREFIX)


def request_json(
    row: EventRow, catalogue: Catalogue, *, media_base: str, photo: bytes | None
) -> dict[str, Any]:
    """One service request. `photo`: the digest of its first photo held, if any, served at
    `media_base`/media/{sha256}.jpg."""
    category = find(catalogue, row.category)
    if photo is not None:
        media: str | None = f"{media_base.rstrip('/')}/media/{photo.hex()}.jpg"
    else:
        media = row.media_url
    return {
        "service_request_id": str(row.number),
        "status": "closed" if row.status in CLOSED else "open",
        "status_notes": _notes(row),
        "service_name": category.name_en if category else f"category {row.category}",
        "service_code": str(row.category),
        "description": row.note,
        "agency_responsible": _agency(row.assignee) or (category.team if category else None),
        "service_notice": None,
        "requested_datetime": iso(row.reported_ms),
        "updated_datetime": iso(row.updated_ms),
        "expected_datetime": iso(row.deadline_ms),
        "address": row.address,
        "address_id": None,
        "zipcode": None,
        "lat": row.lat,
        "long": row.lon,
        "media_url": media,
    }


def _ids(name: str, text: str, most: int = MAX_IDS) -> tuple[int, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts or len(parts) > most:
        raise Open311Error(400, f"{name} must list from 1 to {most} values, comma separated")
    out: list[int] = []
    for p in parts:
        if not p.isdigit() or len(p) > 18:
            raise Open311Error(400, f"{name} {p[:40]!r} is not a number")
        out.append(int(p))
    return tuple(out)


def parse_request_id(text: str) -> int:
    """GET requests/{id}.json: the number, or 404 as for an id that was never given out."""
    t = text.strip()
    if not t.isdigit() or len(t) > 18:
        raise Open311Error(404, f"service_request_id {text[:40]!r} was not found")
    return int(t)


def parse_query(params: Mapping[str, str], now_ms: int) -> EventQuery:
    """The filters of GET requests.json."""
    if "service_request_id" in params:
        return EventQuery(numbers=_ids("service_request_id", params["service_request_id"]))
    statuses: tuple[EventStatusCode, ...] | None = None
    if "status" in params:
        words = {w.strip().lower() for w in params["status"].split(",") if w.strip()}
        if not words or not words <= {"open", "closed"}:
            raise Open311Error(400, "status must be open, closed, or both (comma separated)")
        statuses = tuple(s for s in S if ("closed" if s in CLOSED else "open") in words)
    codes = _ids("service_code", params["service_code"]) if "service_code" in params else None
    start = parse_iso("start_date", params["start_date"]) if "start_date" in params else None
    end = parse_iso("end_date", params["end_date"]) if "end_date" in params else None
    window = WINDOW_DAYS * DAY_MS
    if start is None and end is None:
        start, end = now_ms - window, now_ms
    elif start is None:
        assert end is not None
        start = end - window
    elif end is None:
        end = start + window
    if end < start:
        raise Open311Error(400, "end_date is before start_date")
    if end - start > window:
        raise Open311Error(400, f"start_date to end_date may not span more than {WINDOW_DAYS} days")
    return EventQuery(
        statuses=statuses, categories=codes, start_ms=start, end_ms=end, limit=MAX_RESULTS
    )


# --- POST requests.json --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posted:
    event: NewEvent
    key_name: str  # who filed it: the name of its api_key


def _coordinate(name: str, text: str, limit: float) -> int:
    try:
        value = float(text)
    except ValueError:
        raise Open311Error(400, f"{name} {text[:40]!r} is not a number") from None
    if not math.isfinite(value) or not -limit <= value <= limit:
        raise Open311Error(400, f"{name} {text[:40]!r} is outside -{limit:g} to {limit:g}")
    return round(value * 1e7)


def _key(form: Mapping[str, str], keys: Mapping[str, str]) -> str:
    given = form.get("api_key", "").strip()
    if not given:
        raise Open311Error(403, "api_key was not provided")
    name = keys.get(given)
    if name is None:
        raise Open311Error(403, "api_key is not valid")
    return name


def parse_post(
    form: Mapping[str, str], keys: Mapping[str, str], catalogue: Catalogue, now_ms: int
) -> Posted:
    """A new request from POST requests.json's fields; `keys` maps each api_key to a name."""
    name = _key(form, keys)
    if not form.get("service_code", "").strip():
        raise Open311Error(400, "service_code was not provided")
    code = _code(catalogue, form["service_code"])
    lat, lon = form.get("lat", "").strip(), form.get("long", "").strip()
    address = form.get("address_string", "").strip() or None
    if bool(lat) != bool(lon):
        raise Open311Error(400, "lat and long must be given together")
    if not lat and address is None:
        raise Open311Error(400, "a location is needed: lat and long, or address_string")
    if address is not None and len(address) > MAX_ADDRESS:
        raise Open311Error(400, f"address_string is over {MAX_ADDRESS} characters")
    lat_e7 = _coordinate("lat", lat, 90) if lat else None
    lon_e7 = _coordinate("long", lon, 180) if lon else None
    description = form.get("description", "").strip() or None
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise Open311Error(400, f"description is over {MAX_DESCRIPTION} characters")
    media = form.get("media_url", "").strip() or None
    if media is not None and (
        len(media) > MAX_URL or not media.lower().startswith(("http://", "https://"))
    ):
        raise Open311Error(400, "media_url must be an http:// or https:// URL")
    event = NewEvent(
        device=OPEN311,
        seq=None,
        category=code,
        reported_ms=now_ms,
        place=1 if lat_e7 is not None else 2,
        lat_e7=lat_e7,
        lon_e7=lon_e7,
        note=description,
        address=address,
        media_url=media,
    )
    return Posted(event, name)


def post_answer(number: int) -> list[dict[str, Any]]:
    """The answer to a POST: the new request's id."""
    return [{"service_request_id": str(number), "service_notice": None, "account_id": None}]
