"""Join the batch output back to the input rows, write the results file and summarise them."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from zstc.inputs import InputRecord, PreparedInput


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


def _output_value(raw: str) -> dict[str, Any] | str | None:
    raw = raw.rstrip("\r")
    if not raw.strip():
        return None
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return raw
    return value if isinstance(value, dict) else raw


def iter_output(lines: Iterable[bytes | str]) -> Iterator[dict[str, Any] | str]:
    """The ``.out`` object, line by line: one JSON object per line (blank lines between assembled mini-batches are
    dropped). A line that is not a JSON object is kept as its raw text so it shows up as an error row."""
    for line in lines:
        text = line.decode("utf-8", errors="replace") if isinstance(line, bytes) else line
        value = _output_value(text.rstrip("\n"))
        if value is not None:
            yield value


def parse_output(body: bytes) -> list[dict[str, Any] | str]:
    """The whole ``.out`` body in memory (small outputs and tests); stream files with :func:`iter_output`."""
    return list(iter_output(body.split(b"\n")))


def result_for(record: InputRecord, output: dict[str, Any] | str | None) -> Result:
    """One record's result from its output line (None: no line came back)."""

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


def _matches(record: InputRecord, out: dict[str, Any] | str) -> bool:
    return not isinstance(out, dict) or out.get("id") in (None, record.id) or str(out.get("id")) == record.id


def join_stream(prepared: PreparedInput, outputs: Callable[[], Iterable[dict[str, Any] | str]]) -> Iterator[Result]:
    """One result per input record, in input order, streamed: ``outputs()`` is called once or twice for the lines.

    The batch path keeps lines in order and one output per input line, so the join is by position; ids are the
    check (a first pass over both streams). If they disagree (which the contract rules out), the outputs are joined
    by unique id instead, and every record without an answer becomes an explicit error row: nothing is dropped
    silently.
    """
    positional = True
    records = prepared.iter_records()
    lines = iter(outputs())
    for record in records:
        out = next(lines, None)
        if out is None or not _matches(record, out):
            positional = False
            break
    if positional and next(lines, None) is not None:
        positional = False
    if positional:
        yield from (result_for(record, out) for record, out in zip(prepared.iter_records(), outputs(), strict=True))
        return
    by_id: dict[str, dict[str, Any] | str] = {}
    duplicates: set[str] = set()
    for out in outputs():
        if isinstance(out, dict) and out.get("id") is not None:
            key = str(out["id"])
            if key in by_id:
                duplicates.add(key)
            by_id[key] = out
    for record in prepared.iter_records():
        yield result_for(record, None if record.id in duplicates else by_id.get(record.id))


def join(prepared: PreparedInput, outputs: list[dict[str, Any] | str]) -> list[Result]:
    """:func:`join_stream` over outputs already in memory, as a list."""
    return list(join_stream(prepared, lambda: outputs))


def results_path(path: Path, fmt: str) -> Path:
    """``tweets.csv`` -> ``tweets.results.csv``; ``a.jsonl`` -> ``a.results.jsonl``."""
    return path.with_name(f"{path.stem}.results.{'csv' if fmt == 'csv' else 'jsonl'}")


class Summary:
    """What the summary shows, gathered while results stream past: counts, the first rows, the first errors."""

    def __init__(self, *, rows: int = 10, max_errors: int = 50) -> None:
        self.rows, self.max_errors = rows, max_errors
        self.total = self.ok_count = self.error_count = 0
        self.first_ok: list[Result] = []
        self.first_errors: list[Result] = []
        self.counts: Counter[str] = Counter()

    def add(self, result: Result) -> Result:
        self.total += 1
        if result.error is None:
            self.ok_count += 1
            self.counts[result.label or ""] += 1
            if len(self.first_ok) < self.rows:
                self.first_ok.append(result)
        else:
            self.error_count += 1
            if len(self.first_errors) < self.max_errors:
                self.first_errors.append(result)
        return result

    @classmethod
    def of(cls, results: Iterable[Result], *, rows: int = 10) -> Summary:
        summary = cls(rows=rows)
        for result in results:
            summary.add(result)
        return summary


def write_results(
    prepared: PreparedInput, results: Iterable[Result], target: Path | None = None, *, summary: Summary | None = None
) -> Path:
    """Write the results file (atomically, streaming); each result also goes to ``summary`` when given."""
    target = target or results_path(prepared.path, prepared.format)
    tmp = target.with_name(target.name + ".tmp")
    if summary is not None:
        results = (summary.add(result) for result in results)
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


# Control characters (terminal escape sequences start with ESC, 0x1b; C1 controls; DEL) and bidirectional overrides
# in user text are shown as escapes, never sent to the terminal.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(value: object) -> str:
    """``value`` as text that cannot drive the terminal: control characters become visible escapes (``\\x1b``)."""

    def escape(match: re.Match[str]) -> str:
        code = ord(match.group())
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"

    return _UNSAFE.sub(escape, str(value))


def plain(value: object) -> Text:
    """User text for a Rich table or print: never read as markup (``[/bold]`` stays literal), terminal-safe."""
    return Text(terminal_safe(value))


def _short(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def show_summary(
    console: Console, results: Iterable[Result] | Summary, *, target: Path | None = None, rows: int = 10
) -> None:
    """Label counts, the first rows, and the error lines with their messages (the first 50)."""
    summary = results if isinstance(results, Summary) else Summary.of(results, rows=rows)
    ok = summary.first_ok[:rows]
    if rows and ok:
        table = Table(title=f"First {len(ok)} of {summary.ok_count} classified", title_justify="left")
        table.add_column("line", justify="right")
        table.add_column("id")
        table.add_column("text")
        table.add_column("label")
        table.add_column("score", justify="right")
        for result in ok:
            table.add_row(
                str(result.line),
                plain(result.id),
                plain(_short(result.text)),
                plain(result.label or ""),
                f"{result.score:.3f}",
            )
        console.print(table)
    if summary.counts:
        table = Table(title="Top label counts", title_justify="left")
        table.add_column("label")
        table.add_column("records", justify="right")
        table.add_column("share", justify="right")
        for label, count in summary.counts.most_common():
            table.add_row(plain(label), str(count), f"{count / summary.total:.0%}")
        console.print(table)
    if summary.first_errors:
        more = summary.error_count - len(summary.first_errors)
        title = f"{summary.error_count} error line(s)" + (f" (the first {len(summary.first_errors)})" if more else "")
        table = Table(title=title, title_justify="left", title_style="bold red")
        table.add_column("line", justify="right")
        table.add_column("id")
        table.add_column("message")
        for result in summary.first_errors:
            table.add_row(str(result.line), plain(result.id), plain(result.error or ""))
        console.print(table)
    where = f" → {terminal_safe(target)}" if target else ""
    console.print(
        Text(
            f"{summary.ok_count} classified, {summary.error_count} error(s), {summary.total} records in total{where}",
            style="bold",
        )
    )
