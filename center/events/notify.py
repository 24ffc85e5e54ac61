"""What the devices are told of events: EVENT_STATUS for each change, CATALOGUE on demand.

Each lifecycle action (center/events/store.py `act`) returns who to tell; this module makes
the command body each of them gets (`status_body`: the event as it is after the change) and
numbers and signs one command per device with the center's key (`sign_statuses`,
`sign_catalogue`), through center/commands.py's `CommandSigner`, as every other command is:
the numbers live in the center database beside the records that answer them, and the caller
publishes them (`center.commands.publish_all`, QoS 1 and retained on each device's command
topic) after the action's transaction committed. A device that is offline gets the newest
command for it when it next subscribes.

Text that crosses the wire is bounded in UTF-8 bytes (contract/bounds.py), while the center
stores reasons and results in characters (at most 500, up to 1,500 bytes of Chinese): what
a command carries is cut to the bound at a character boundary; the center keeps the whole.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from center.commands import CommandSigner, Signed
from center.events.lifecycle import Change
from center.events.store import EventRow
from contract.bounds import MAX_FREE_TEXT, MAX_ID_TEXT
from contract.eventcommands import Catalogue, EventStatus, EventStatusCode

__all__ = ["STATUS_TTL_S", "cut", "sign_catalogue", "sign_statuses", "status_body"]

STATUS_TTL_S = 7 * 86_400  # a status change still matters to a device back after a week
CATALOGUE_TTL_S = 30 * 86_400


def cut(text: str, most: int) -> str:
    """`text` in at most `most` UTF-8 bytes, cut at a character boundary."""
    data = text.encode("utf-8")
    if len(data) <= most:
        return text
    return data[:most].decode("utf-8", errors="ignore")


def _text(row: EventRow) -> str | None:
    if row.status in (EventStatusCode.REJECTED, EventStatusCode.REOPENED):
        return row.reason
    if row.status is EventStatusCode.RESOLVED:
        return row.result
    return None


def status_body(row: EventRow, change: Change) -> EventStatus:
    """The EVENT_STATUS body of `change`, with `row` the event as it is after it."""
    text = _text(row)
    both = row.lat_e7 is not None and row.lon_e7 is not None
    return EventStatus(
        event=row.number,
        status=row.status,
        reporter=row.device,
        report_seq=row.seq or 0,  # 0: a request filed through Open311, no record
        category=row.category,
        text=None if text is None else cut(text, MAX_FREE_TEXT),
        assignee=None if row.assignee is None else cut(row.assignee, MAX_ID_TEXT),
        deadline_ms=row.deadline_ms,
        changed_ms=change.at_ms,
        by=cut(change.by, MAX_ID_TEXT),
        lat_e7=row.lat_e7 if both else None,
        lon_e7=row.lon_e7 if both else None,
        merged_into=row.merged_into if row.status is EventStatusCode.MERGED else None,
    )


def sign_statuses(
    signer: CommandSigner,
    row: EventRow,
    change: Change,
    devices: Iterable[str],
    *,
    now_ms: int,
    ttl_s: int = STATUS_TTL_S,
) -> list[Signed]:
    """One signed EVENT_STATUS command for each of `devices` (each numbered in its own
    sequence), telling `change` of the event `row`."""
    body = status_body(row, change)
    return [signer.build(d, body, now_ms=now_ms, ttl_s=ttl_s) for d in dict.fromkeys(devices)]


def sign_catalogue(
    signer: CommandSigner,
    catalogue: Catalogue,
    devices: Sequence[str],
    *,
    now_ms: int,
    team: str | None = None,
    ttl_s: int = CATALOGUE_TTL_S,
) -> list[Signed]:
    """One signed CATALOGUE command for each of `devices`."""
    return [
        signer.build(d, catalogue, now_ms=now_ms, ttl_s=ttl_s, team=team)
        for d in dict.fromkeys(devices)
    ]
