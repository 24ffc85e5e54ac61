"""The district's event categories: code, names in Chinese and English, group, team.

The catalogue is data (center/events/catalogue.json is the district's default), versioned:
the center distributes it to the devices in a signed CATALOGUE command (docs/events.md),
and a device replaces its own only with a higher version. Loading checks every entry and
says which one is wrong and how ("category 3 (人行道缺失树苗): name_en is empty"), so a
catalogue edited by hand is refused before the center serves it to anyone.

The values are the contract's (contract/eventcommands.py `Catalogue`, `Category`), which
the CATALOGUE command carries as they are. The Open311 API (center/events/open311.py)
serves the same entries as its services: the code is the service_code, the English name
the service_name, the group the group.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

from center.errors import CenterError
from contract.eventcommands import Catalogue, Category

__all__ = ["DEFAULT", "Catalogue", "CatalogueError", "Category", "find", "load", "parse"]

DEFAULT = Path(__file__).with_name("catalogue.json")
MAX_CATEGORIES = 256  # what one CATALOGUE command carries
MAX_CODE = 65535  # the record's category is 2 bytes
MAX_NAME = 64  # characters of a name, a group or a team


class CatalogueError(CenterError):
    """A catalogue file that cannot be used; the message names the entry."""


def find(catalogue: Catalogue, code: int) -> Category | None:
    """The category of `code`, if the catalogue has one."""
    return next((c for c in catalogue.categories if c.code == code), None)


def _text(entry: Mapping[str, object], key: str, where: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str) or not value.strip():
        raise CatalogueError(f"{where}: {key} is missing or empty")
    if len(value) > MAX_NAME:
        raise CatalogueError(f"{where}: {key} is {len(value)} characters; at most {MAX_NAME}")
    return value.strip()


def parse(data: object, source: str = "catalogue") -> Catalogue:
    """A catalogue from its JSON value; CatalogueError naming what is wrong."""
    if not isinstance(data, dict):
        raise CatalogueError(f"{source}: not a JSON object with version and categories")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CatalogueError(f"{source}: version must be a whole number of at least 1")
    entries = data.get("categories")
    if not isinstance(entries, list) or not entries:
        raise CatalogueError(f"{source}: categories must be a list of at least one category")
    if len(entries) > MAX_CATEGORIES:
        raise CatalogueError(
            f"{source}: {len(entries)} categories; a catalogue holds at most {MAX_CATEGORIES}"
        )
    seen: dict[int, str] = {}
    out: list[Category] = []
    for i, entry in enumerate(entries, 1):
        if not isinstance(entry, dict):
            raise CatalogueError(f"{source}: entry {i} is not an object")
        code = entry.get("code")
        name = entry.get("name_zh")
        where = f"{source}: entry {i}" + (f" ({name})" if isinstance(name, str) else "")
        if not isinstance(code, int) or isinstance(code, bool) or not 1 <= code <= MAX_CODE:
            raise CatalogueError(f"{where}: code must be a whole number from 1 to {MAX_CODE}")
        where = f"{source}: category {code}" + (f" ({name})" if isinstance(name, str) else "")
        if code in seen:
            raise CatalogueError(f"{where}: code {code} is also category {seen[code]}")
        unknown = sorted(set(entry) - {"code", "name_zh", "name_en", "group", "team"})
        if unknown:
            raise CatalogueError(f"{where}: unknown field {', '.join(unknown)}")
        cat = Category(
            code,
            _text(entry, "name_zh", where),
            _text(entry, "name_en", where),
            _text(entry, "group", where),
            _text(entry, "team", where),
        )
        seen[code] = cat.name_zh
        out.append(cat)
    return Catalogue(version, tuple(out))


def load(path: Path = DEFAULT) -> Catalogue:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogueError(f"cannot read the catalogue {path}: {exc}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CatalogueError(f"{path} is not JSON: {exc}") from exc
    return parse(data, str(path))
