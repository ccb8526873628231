"""The one output rule of every subcommand: ``--json`` prints exactly one JSON line on stdout."""

from __future__ import annotations

import json
from typing import Any


def emit(payload: dict[str, Any], as_json: bool, text: str) -> None:
    """Print the result: one JSON line (sorted keys) with ``--json``, else ``text``."""
    if as_json:
        print(json.dumps(payload, sort_keys=True, default=str))
    else:
        print(text)
