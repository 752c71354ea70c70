"""Validate a JSON Lines or CSV file and convert it into the JSON Lines the batch path takes.

File-level problems (empty file, missing column, no labels anywhere, undecodable bytes) stop with an
:class:`~zstc.errors.InputError` before anything is uploaded. Line-level problems (a line that is not JSON, an empty
text, a line without labels) do not: the line is sent as it is, the model-side handler answers it with an error
line, and the results show it as an error row, so every input line ends as a result or an explicit error.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from zstc.errors import InputError

Format = Literal["jsonl", "csv"]
EXAMPLE_LINE = '{"id": "1", "inputs": "Run a marathon", "parameters": {"candidate_labels": ["Health", "Career"]}}'


@dataclass(frozen=True, kw_only=True)
class Options:
    """How to read the file: everything ``zstc wait`` needs to rebuild the same records (saved in the state file)."""

    text_column: str = "text"
    id_column: str | None = None
    labels: tuple[str, ...] = ()
    label_column: str | None = None
    multi_label: bool | None = None
    template: str | None = None
    encoding: str = "utf-8"
    format: Format | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "text_column": self.text_column,
            "id_column": self.id_column,
            "labels": list(self.labels),
            "label_column": self.label_column,
            "multi_label": self.multi_label,
            "template": self.template,
            "encoding": self.encoding,
            "format": self.format,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Options:
        return cls(**{**data, "labels": tuple(data.get("labels") or ())})


@dataclass(frozen=True, kw_only=True)
class Record:
    """One input line or row, as sent."""

    line: int  # 1-based line (JSON Lines) or data row (CSV) of the source file
    id: str
    payload: str  # the JSON line uploaded for this record
    text: str | None
    problem: str | None = None  # why the handler will answer this line with an error
    row: dict[str, str] | None = None  # the CSV row, to join results back


@dataclass(frozen=True, kw_only=True)
class PreparedInput:
    path: Path
    format: Format
    records: list[Record]
    columns: list[str] = field(default_factory=list)
    blank_lines: int = 0

    @property
    def body(self) -> bytes:
        return "".join(record.payload + "\n" for record in self.records).encode("utf-8")

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.body).hexdigest()

    @property
    def problems(self) -> list[Record]:
        return [record for record in self.records if record.problem]


def parse_labels(value: str | None) -> tuple[str, ...]:
    """``"Health, Career,,Finance"`` -> ``("Health", "Career", "Finance")``."""
    if not value:
        return ()
    return tuple(label.strip() for label in value.split(",") if label.strip())


def detect_format(path: Path, requested: Format | None = None) -> Format:
    if requested:
        return requested
    suffixes = [suffix.lower() for suffix in path.suffixes]
    if suffixes[-1:] in ([".jsonl"], [".ndjson"], [".json"]):
        return "jsonl"
    if suffixes[-1:] in ([".csv"], [".tsv"]):
        return "csv"
    raise InputError(f"Cannot tell the format of {path.name}: name it .jsonl or .csv, or pass --format jsonl|csv.")


def check_template(template: str | None) -> None:
    if template is not None and "{}" not in template:
        raise InputError(
            f"--template {template!r} has no {{}}: put {{}} where the label goes, e.g. 'This is about {{}}.'"
        )


def read_text(path: Path, encoding: str = "utf-8") -> str:
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    if path.is_dir():
        raise InputError(f"{path} is a directory: pass a .jsonl or .csv file.")
    data = path.read_bytes()
    if not data.strip():
        raise InputError(f"{path} is empty: add one record per line, e.g. {EXAMPLE_LINE}")
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as error:
        raise InputError(
            f"{path} is not valid {encoding} (byte 0x{data[error.start]:02x} at offset {error.start}). "
            "Pass --encoding with the file's encoding, e.g. --encoding cp1252."
        ) from error
    except LookupError as error:
        raise InputError(f"Unknown --encoding {encoding!r}: use e.g. utf-8, cp1252, latin-1.") from error


def prepare(path: Path, options: Options) -> PreparedInput:
    """Read, validate and convert ``path``. Raises :class:`InputError` for file-level problems."""
    check_template(options.template)
    fmt = detect_format(path, options.format)
    text = read_text(path, options.encoding)
    return _prepare_csv(path, text, options) if fmt == "csv" else _prepare_jsonl(path, text, options)


def _parameters(existing: Any, options: Options, labels: tuple[str, ...]) -> dict[str, Any]:
    """Per-line settings win; the command line's fill in what a line does not say."""
    parameters: dict[str, Any] = dict(existing) if isinstance(existing, dict) else {}
    if labels and not parameters.get("candidate_labels"):
        parameters["candidate_labels"] = list(labels)
    if options.multi_label is not None and "multi_label" not in parameters:
        parameters["multi_label"] = options.multi_label
    if options.template is not None and "hypothesis_template" not in parameters:
        parameters["hypothesis_template"] = options.template
    return parameters


def _dumps(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def _prepare_jsonl(path: Path, text: str, options: Options) -> PreparedInput:
    records: list[Record] = []
    blank = 0
    with_labels = 0
    # split on "\n" only: str.splitlines() would also split on U+2028 and friends, which JSON strings may contain
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line; it does not start a blank one
    for number, raw in enumerate(lines, start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            blank += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            records.append(
                Record(line=number, id=str(number), payload=line, text=None, problem=f"not valid JSON ({error.msg})")
            )
            continue
        if not isinstance(obj, dict):
            records.append(Record(line=number, id=str(number), payload=line, text=None, problem="not a JSON object"))
            continue
        record_id = str(obj["id"]) if obj.get("id") not in (None, "") else str(number)
        parameters = _parameters(obj.get("parameters"), options, options.labels)
        converted = {**obj, "id": obj["id"] if obj.get("id") not in (None, "") else record_id, "parameters": parameters}
        inputs = obj.get("inputs")
        problem = None
        if not isinstance(inputs, str) or not inputs.strip():
            problem = "no text in 'inputs'"
        if parameters.get("candidate_labels"):
            with_labels += 1
        else:
            problem = problem or "no candidate_labels"
        records.append(
            Record(
                line=number,
                id=record_id,
                payload=_dumps(converted),
                text=inputs if isinstance(inputs, str) else None,
                problem=problem,
            )
        )
    if not records:
        raise InputError(f"{path} has no records, only blank lines: add one record per line, e.g. {EXAMPLE_LINE}")
    if not with_labels:
        raise InputError(
            f"Labels missing: no line of {path.name} has parameters.candidate_labels. "
            'Pass --labels "Health,Career,Finance" or add them to each line.'
        )
    return PreparedInput(path=path, format="jsonl", records=records, blank_lines=blank)


def _column(path: Path, columns: list[str], name: str, option: str) -> str:
    if name in columns:
        return name
    folded = {column.casefold(): column for column in columns}
    if name.casefold() in folded:
        return folded[name.casefold()]
    raise InputError(f"{path.name} has no column '{name}'. Its columns: {', '.join(columns)}. Pass {option} NAME.")


def _prepare_csv(path: Path, text: str, options: Options) -> PreparedInput:
    dialect: type[csv.Dialect] = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    reader = csv.DictReader(io.StringIO(text, newline=""), dialect=dialect)
    columns = [column for column in (reader.fieldnames or []) if column is not None]
    if not any(column.strip() for column in columns):
        raise InputError(f"{path} has no header row: the first line must name the columns, e.g. id,text")
    text_column = _column(path, columns, options.text_column, "--text-column")
    id_column = _column(path, columns, options.id_column, "--id-column") if options.id_column else None
    label_column = _column(path, columns, options.label_column, "--label-column") if options.label_column else None
    if not options.labels and not label_column:
        raise InputError(
            'Labels missing: pass --labels "Health,Career,Finance" (the same labels for every row) '
            "or --label-column COLUMN (comma-separated labels per row)."
        )
    records: list[Record] = []
    for number, row in enumerate(reader, start=1):
        row.pop(None, None)  # type: ignore[call-overload]  # extra fields beyond the header
        clean = {key: value if value is not None else "" for key, value in row.items()}
        body = clean.get(text_column, "")
        record_id = (clean.get(id_column) or "").strip() if id_column else ""
        record_id = record_id or str(number)
        labels = parse_labels(clean.get(label_column)) if label_column else ()
        parameters = _parameters(None, options, labels or options.labels)
        problem = None
        if not body.strip():
            problem = f"empty '{text_column}'"
        elif not parameters.get("candidate_labels"):
            problem = f"no labels in '{label_column}'"
        payload = _dumps({"id": record_id, "inputs": body, "parameters": parameters})
        records.append(Record(line=number, id=record_id, payload=payload, text=body, problem=problem, row=clean))
    if not records:
        raise InputError(f"{path} has a header but no rows: add one row per text to classify.")
    return PreparedInput(path=path, format="csv", records=records, columns=columns)
