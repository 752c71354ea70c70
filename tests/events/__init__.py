"""Recorded AWS events (the JSON files here), loaded by name: ``load_event("batch_transform_job_failed")``.

Every test that needs one of these events reads it through :func:`load_event`, so a fixture file is found in one
way and a test changes only what it states, by overrides merged into the recorded event.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

EVENTS = Path(__file__).resolve().parent


def _merge(base: Any, override: Any) -> Any:
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in override.items()}}
    return override


def load_event(name: str, **overrides: Any) -> dict[str, Any]:
    """The event recorded in ``<name>.json`` (``.json`` optional), a fresh copy, with ``overrides`` merged in:
    a dict merges key by key into the recorded dict (recursively), any other value replaces it."""
    path = EVENTS / (name if name.endswith(".json") else f"{name}.json")
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in EVENTS.glob("*.json")))
        raise FileNotFoundError(f"no recorded event {name!r} in {EVENTS} (known: {known})")
    event: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return _merge(event, overrides) if overrides else event
