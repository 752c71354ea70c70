"""Join the batch output back to the input rows, write the results file and summarise them."""

from __future__ import annotations

import csv
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from zstc.inputs import PreparedInput, Record


@dataclass(frozen=True, kw_only=True)
class Result:
    line: int
    id: str
    text: str | None
    labels: list[str]
    scores: list[float]
    error: str | None = None
    row: dict[str, str] | None = None

    @property
    def label(self) -> str | None:
        return self.labels[0] if self.labels else None

    @property
    def score(self) -> float | None:
        return self.scores[0] if self.scores else None

    def to_json(self) -> dict[str, Any]:
        if self.error is not None:
            return {"line": self.line, "id": self.id, "text": self.text, "error": self.error}
        return {
            "line": self.line,
            "id": self.id,
            "text": self.text,
            "label": self.label,
            "score": self.score,
            "labels": self.labels,
            "scores": self.scores,
        }


def parse_output(body: bytes) -> list[dict[str, Any] | str]:
    """The ``.out`` object: one JSON object per line (blank lines between assembled mini-batches are dropped).

    A line that is not a JSON object is kept as its raw text so it shows up as an error row.
    """
    lines: list[dict[str, Any] | str] = []
    for raw in body.decode("utf-8", errors="replace").split("\n"):
        raw = raw.rstrip("\r")
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            lines.append(raw)
            continue
        lines.append(value if isinstance(value, dict) else raw)
    return lines


def _result(record: Record, output: dict[str, Any] | str | None) -> Result:
    def make(labels: list[str], scores: list[float], error: str | None = None) -> Result:
        return Result(
            line=record.line, id=record.id, text=record.text, row=record.row, labels=labels, scores=scores, error=error
        )

    if output is None:
        return make(labels=[], scores=[], error="no result line came back for this record")
    if isinstance(output, str):
        return make(labels=[], scores=[], error=f"unreadable result line: {output[:200]}")
    if output.get("error") is not None:
        return make(labels=[], scores=[], error=str(output["error"]))
    labels, scores = output.get("labels"), output.get("scores")
    if not isinstance(labels, list) or not isinstance(scores, list) or len(labels) != len(scores):
        return make(labels=[], scores=[], error=f"result line has no labels/scores: {json.dumps(output)[:200]}")
    return make(labels=[str(label) for label in labels], scores=[float(score) for score in scores])


def join(prepared: PreparedInput, outputs: list[dict[str, Any] | str]) -> list[Result]:
    """One result per input record, in input order.

    The batch path keeps lines in order and one output per input line, so the join is by position; ids are the
    check. If the counts differ (which the contract rules out), fall back to joining by unique id, and every record
    without an answer becomes an explicit error row: nothing is dropped silently.
    """
    records = prepared.records
    positional = len(outputs) == len(records) and all(
        not isinstance(out, dict) or out.get("id") in (None, record.id) or str(out.get("id")) == record.id
        for record, out in zip(records, outputs, strict=True)
    )
    if positional:
        return [_result(record, out) for record, out in zip(records, outputs, strict=True)]
    by_id: dict[str, dict[str, Any] | str] = {}
    duplicates: set[str] = set()
    for out in outputs:
        if isinstance(out, dict) and out.get("id") is not None:
            key = str(out["id"])
            if key in by_id:
                duplicates.add(key)
            by_id[key] = out
    return [_result(record, None if record.id in duplicates else by_id.get(record.id)) for record in records]


def results_path(path: Path, fmt: str) -> Path:
    """``tweets.csv`` -> ``tweets.results.csv``; ``a.jsonl`` -> ``a.results.jsonl``."""
    return path.with_name(f"{path.stem}.results.{'csv' if fmt == 'csv' else 'jsonl'}")


def write_results(prepared: PreparedInput, results: list[Result], target: Path | None = None) -> Path:
    target = target or results_path(prepared.path, prepared.format)
    tmp = target.with_name(target.name + ".tmp")
    if prepared.format == "csv":
        extra = ["predicted_label", "score", "labels", "scores", "error"]
        columns = prepared.columns + [column for column in extra if column not in prepared.columns]
        with tmp.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
            writer.writeheader()
            for result in results:
                writer.writerow(
                    {
                        **(result.row or {}),
                        "predicted_label": result.label or "",
                        "score": f"{result.score:.6f}" if result.score is not None else "",
                        "labels": json.dumps(result.labels, ensure_ascii=False) if result.labels else "",
                        "scores": json.dumps([round(s, 6) for s in result.scores]) if result.scores else "",
                        "error": result.error or "",
                    }
                )
    else:
        with tmp.open("w", encoding="utf-8") as handle:
            for result in results:
                handle.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
    tmp.replace(target)
    return target


def _short(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def show_summary(console: Console, results: list[Result], *, target: Path | None = None, rows: int = 10) -> None:
    """Label counts, the first rows, and every error line with its message."""
    ok = [result for result in results if result.error is None]
    errors = [result for result in results if result.error is not None]
    if rows and ok:
        table = Table(title=f"First {min(rows, len(ok))} of {len(ok)} classified", title_justify="left")
        table.add_column("line", justify="right")
        table.add_column("id")
        table.add_column("text")
        table.add_column("label")
        table.add_column("score", justify="right")
        for result in ok[:rows]:
            table.add_row(str(result.line), result.id, _short(result.text), result.label or "", f"{result.score:.3f}")
        console.print(table)
    counts = Counter(result.label for result in ok)
    if counts:
        table = Table(title="Top label counts", title_justify="left")
        table.add_column("label")
        table.add_column("records", justify="right")
        table.add_column("share", justify="right")
        for label, count in counts.most_common():
            table.add_row(str(label), str(count), f"{count / len(results):.0%}")
        console.print(table)
    if errors:
        table = Table(title=f"{len(errors)} error line(s)", title_justify="left", title_style="bold red")
        table.add_column("line", justify="right")
        table.add_column("id")
        table.add_column("message")
        for result in errors:
            table.add_row(str(result.line), result.id, result.error or "")
        console.print(table)
    where = f" → {target}" if target else ""
    console.print(f"[bold]{len(ok)} classified, {len(errors)} error(s), {len(results)} records in total{where}")
