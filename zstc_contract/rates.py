"""The pair-rate table: how many (text, label) pairs per second the handler classifies, per hardware and model shape.

The table is ``zstc/data/throughput.json`` (measured rows written by ``make bench-handler``, published or estimated
rows by hand, each with its source). One lookup, standard library only, used by synthesis (the batch path's
mini-batch sizing: the rate of each instance type is a decision passed to the trigger), by ``zstc estimate`` and
the README's cost table, and by the offline emulation's transform runner (its invocation timeout).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

# Shipped beside this package: in a checkout and in an installed client (``pip install .`` ships both packages).
DATA_DIR: Final = Path(__file__).resolve().parents[1] / "zstc" / "data"
THROUGHPUT_FILE: Final = DATA_DIR / "throughput.json"
CATALOGUE_FILE: Final = DATA_DIR / "models.json"
DEFAULT_SHAPE: Final = "bart-large"  # the default model's; used for models outside the catalogue
DEFAULT_TOKENS_PER_PAIR: Final = 40.0
# Accelerator of each GPU family, as throughput.json names hardware; CPU families are "cpu".
ACCELERATORS: Final = {"g4dn": "t4", "g5": "a10g", "g6": "l4", "g6e": "l40s", "p3": "v100", "p4d": "a100"}
SOURCE_ORDER: Final = {"measured": 0, "published": 1, "estimated": 2}


@dataclass(frozen=True)
class Rate:
    """The handler's pair rate on one instance type, at ``tokens_per_pair`` tokens per pair."""

    pairs_per_second: float
    tokens_per_pair: float
    source: str  # measured | published | estimated
    basis: str  # where the figure comes from, in words


def read_entries(path: Path = THROUGHPUT_FILE) -> list[dict[str, Any]]:
    """The table's rows (raises OSError / ValueError on an unreadable file: callers word the error)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    entries = data.get("entries", []) if isinstance(data, dict) else []
    return [e for e in entries if isinstance(e, dict)]


def catalogue_shape(model_id: str, path: Path = CATALOGUE_FILE) -> str | None:
    """The benchmark shape the catalogue gives ``model_id`` (None: not in the catalogue)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    for model in data.get("models", []) if isinstance(data, dict) else []:
        if isinstance(model, dict) and model.get("id") == model_id and model.get("shape"):
            return str(model["shape"])
    return None


def _negated_date(entry: dict[str, Any]) -> tuple[int, ...]:
    digits = [int(p) for p in str(entry.get("date", "0")).split("-") if p.isdigit()]
    return tuple(-d for d in digits)


def select_rate(
    instance_type: str,
    shape: str,
    entries: Sequence[dict[str, Any]],
    *,
    physical_cores: Callable[[str], int],
    is_gpu: Callable[[str], bool],
) -> Rate | None:
    """The best-founded pair rate of ``shape`` on ``instance_type`` (measured before published before estimated).

    CPU rows are scaled by physical cores (``physical_cores``: the app's instance sizes) and marked estimated when
    the core count differs from the measured machine's. None: no row for that hardware and shape.
    """
    family = instance_type.split(".")[1]
    hardware = ACCELERATORS.get(family, "cpu")
    if is_gpu(instance_type) and family not in ACCELERATORS:
        return None
    rows = [
        e
        for e in entries
        if e.get("shape") == shape and e.get("hardware") == hardware and e.get("handler", "zstc") == "zstc"
    ]
    if hardware == "cpu":
        rows = [e for e in rows if e.get("dtype") == "float32"]
    if not rows:
        return None
    row = min(rows, key=lambda e: (SOURCE_ORDER.get(str(e.get("source")), 9), _negated_date(e)))
    rate = float(row["pairs_per_second"])
    tokens = float(row.get("tokens_per_pair") or DEFAULT_TOKENS_PER_PAIR)
    source = str(row.get("source", "estimated"))
    basis = f"{source} {row.get('date', '?')} on {row.get('machine') or '?'}"
    if row.get("reference"):
        basis += f"; from {row['reference']}"
    if row.get("basis"):
        basis += f"; {row['basis']}"
    if hardware == "cpu":
        measured_cores = int(row.get("cores") or 2)
        cores = physical_cores(instance_type)
        if cores != measured_cores:
            rate *= cores / measured_cores
            source = "estimated"
            basis += f"; scaled ×{cores}/{measured_cores} by physical cores (estimated)"
        basis += "; measured on that machine, not on a SageMaker instance: CPU generations differ"
    return Rate(pairs_per_second=rate, tokens_per_pair=tokens, source=source, basis=basis)
