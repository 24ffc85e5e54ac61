"""How a run's report is printed: one JSON line (`--json`, the last line of stdout), or one
`key  value` line per key, aligned, for people. One place, so every command reads alike."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import TextIO


def print_report(report: Mapping[str, object], as_json: bool, out: TextIO | None = None) -> None:
    out = sys.stdout if out is None else out
    if as_json:
        print(json.dumps(report, sort_keys=True), file=out)
        return
    width = max((len(k) for k in report), default=0)
    for k, v in report.items():
        print(f"{k:<{width}}  {v}", file=out)
