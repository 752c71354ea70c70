"""Validate a JSON Lines or CSV file and convert it into the JSON Lines the batch path takes, in bounded memory.

The file is read line by line (never whole) and converted into a temporary file, hashed on the way; the records are
read again from the source when the results are joined, so memory does not grow with the file.

File-level problems (empty file, missing column, no labels anywhere, undecodable bytes, an unclosed CSV quote, a CSV
field over 128 KiB, a lone surrogate in a JSON string, an id that is not a string or a finite number) stop with an
:class:`~zstc.errors.InputError` naming the line, before anything is uploaded. Line-level problems (a line that is
not JSON, an empty text, a line without labels) do not: the line is sent as it is, the model-side handler answers it
with an error line, and the results show it as an error row, so every input line ends as a result or an explicit
error. The same reader serves the command line (``zstc submit``) and the Python API (``Classifier.submit``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import math
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

from zstc.errors import InputError

Format = Literal["jsonl", "csv"]
EXAMPLE_LINE = '{"id": "1", "inputs": "Run a marathon", "parameters": {"candidate_labels": ["Health", "Career"]}}'
KIB = 1024
MIB = 1024 * KIB
CSV_FIELD_LIMIT = 128 * KIB  # Python's csv default (131072 characters); a bigger field is almost always a lost quote
MAX_LINE_BYTES = 8 * MIB  # one physical line; far beyond any text worth classifying (truncated at ~1024 tokens)
KEPT_PROBLEMS = 1000  # problem records kept for display; the count covers all of them


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
class InputRecord:
    """One input line or row, as sent."""

    line: int  # 1-based line (JSON Lines) or data row (CSV) of the source file
    id: str
    payload: str  # the JSON line uploaded for this record
    text: str | None
    problem: str | None = None  # why the handler will answer this line with an error
    row: dict[str, str] | None = None  # the CSV row, to join results back
    start_line: int = 0  # the physical line of the file where the record starts (CSV rows may span lines)


@dataclass(kw_only=True)
class PreparedInput:
    """A validated, converted file. The converted JSON Lines live in a temporary file (``open_body()``)."""

    path: Path
    format: Format
    options: Options
    columns: list[str] = field(default_factory=list)
    blank_lines: int = 0
    count: int = 0
    size: int = 0  # bytes of the converted body
    sha256: str = ""
    problems: list[InputRecord] = field(default_factory=list)  # the first KEPT_PROBLEMS of them
    problem_count: int = 0
    warnings: list[str] = field(default_factory=list)
    _body: IO[bytes] | None = None

    def open_body(self) -> IO[bytes]:
        """The converted JSON Lines, rewound (the same file object each time: read it before calling again)."""
        if self._body is None or self._body.closed:
            self._body = _convert(self)
        self._body.seek(0)
        return self._body

    @property
    def body(self) -> bytes:
        """The whole converted body in memory: for small files and tests; uploads stream ``open_body()``."""
        return self.open_body().read()

    def iter_records(self) -> Iterator[InputRecord]:
        """The records again, read from the source file (nothing is kept in memory between calls)."""
        return _records(self.path, self.format, self.options, self.columns)

    @property
    def records(self) -> list[InputRecord]:
        """All records in a list: for small files and tests; stream with ``iter_records()``."""
        return list(self.iter_records())

    def close(self) -> None:
        if self._body is not None:
            self._body.close()


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


def check_id(value: Any, where: str) -> Any:
    """An id as the handler can echo it: a string, an integer or a finite number (JSON has no NaN/Infinity)."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise InputError(
            f"{where}: the id {json.dumps(value, default=str)[:60]} is a {type(value).__name__}; "
            "give a string or a number."
        )
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{where}: the id is {value!r}, which JSON cannot carry; give a string or a finite number.")
    return value


def _codec(encoding: str) -> str:
    try:
        name = codecs.lookup(encoding).name
    except LookupError as error:
        raise InputError(f"Unknown --encoding {encoding!r}: use e.g. utf-8, cp1252, latin-1.") from error
    if "\n".encode(name) != b"\n":
        raise InputError(f"--encoding {encoding} is not supported (not ASCII-compatible): convert the file to UTF-8.")
    return name


def iter_lines(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, str]]:
    """(line number, decoded line with its line ending) for each physical line, split on ``\\n`` only.

    Decoding is strict and per line, so an undecodable byte is reported with its offset in the file; a line over
    MAX_LINE_BYTES is an error (it would have to be held whole).
    """
    if not path.exists():
        raise InputError(f"{path} does not exist.")
    if path.is_dir():
        raise InputError(f"{path} is a directory: pass a .jsonl or .csv file.")
    codec = _codec(encoding)
    offset = 0
    with path.open("rb") as handle:
        number = 0
        while True:
            raw = handle.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            number += 1
            if len(raw) > MAX_LINE_BYTES:
                raise InputError(
                    f"{path.name} line {number} is longer than {MAX_LINE_BYTES // MIB} MiB: split it, or check "
                    "that it is a text file with one record per line."
                )
            if number == 1 and codec == "utf-8" and raw.startswith(codecs.BOM_UTF8):
                raw, offset = raw[len(codecs.BOM_UTF8) :], len(codecs.BOM_UTF8)
            try:
                text = raw.decode(codec)
            except UnicodeDecodeError as error:
                raise InputError(
                    f"{path} is not valid {encoding} on line {number} (byte 0x{raw[error.start]:02x} at offset "
                    f"{offset + error.start}). Pass --encoding with the file's encoding, e.g. --encoding cp1252."
                ) from None
            offset += len(raw)
            yield number, text


def read_text(path: Path, encoding: str = "utf-8") -> str:
    """The whole file as text (checked as :func:`iter_lines` checks it): only for files known to be small."""
    text = "".join(line for _, line in iter_lines(path, encoding))
    if not text.strip():
        raise InputError(f"{path} is empty: add one record per line, e.g. {EXAMPLE_LINE}")
    return text


def prepare(path: Path, options: Options) -> PreparedInput:
    """Read, validate and convert ``path`` in one streaming pass. Raises :class:`InputError` for file-level problems."""
    check_template(options.template)
    fmt = detect_format(path, options.format)
    prepared = PreparedInput(path=path, format=fmt, options=options)
    if fmt == "csv":
        prepared.columns = _csv_header(path, options)
    prepared._body = _convert(prepared)
    return prepared


def _convert(prepared: PreparedInput) -> IO[bytes]:
    """One pass over the records: the converted body into a temporary file, counts, sha256, problems, warnings."""
    body: IO[bytes] = tempfile.TemporaryFile(prefix="zstc-body-")  # noqa: SIM115 - owned by the PreparedInput
    digest = hashlib.sha256()
    count = size = problem_count = 0
    problems: list[InputRecord] = []
    stats: dict[str, Any] = {"blank": 0}
    try:
        for record in _records(prepared.path, prepared.format, prepared.options, prepared.columns, stats):
            data = (record.payload + "\n").encode("utf-8")
            digest.update(data)
            body.write(data)
            count += 1
            size += len(data)
            if record.problem:
                problem_count += 1
                if len(problems) < KEPT_PROBLEMS:
                    problems.append(record)
    except BaseException:
        body.close()
        raise
    if count == 0:
        body.close()
        if prepared.format == "csv":
            raise InputError(f"{prepared.path} has a header but no rows: add one row per text to classify.")
        raise InputError(f"{prepared.path} is empty: add one record per line, e.g. {EXAMPLE_LINE}")
    if prepared.format == "jsonl" and not stats.get("with_labels"):
        body.close()
        if not stats.get("objects"):
            raise InputError(
                f"{prepared.path} has no JSON object on any line: write one record per line, e.g. {EXAMPLE_LINE}"
            )
        raise InputError(
            f"Labels missing: no line of {prepared.path.name} has parameters.candidate_labels. "
            'Pass --labels "Health,Career,Finance" or add them to each line.'
        )
    prepared.count, prepared.size, prepared.sha256 = count, size, digest.hexdigest()
    prepared.problems, prepared.problem_count = problems, problem_count
    prepared.blank_lines = stats["blank"]
    spanning: list[int] = stats.get("spanning", [])
    if spanning:
        shown = ", ".join(str(line) for line in spanning) + (" …" if stats["spanning_count"] > len(spanning) else "")
        prepared.warnings = [
            f"{stats['spanning_count']} row(s) have a quoted field spanning several lines (starting on line {shown}): "
            "fine for texts with line breaks; if not intended, check the quotes."
        ]
    if stats.get("extra_fields"):
        prepared.warnings.append(
            f"{stats['extra_fields']} row(s) have more fields than the header (first on line "
            f"{stats['first_extra_line']}); the extra fields are ignored."
        )
    return body


def _records(
    path: Path, fmt: Format, options: Options, columns: list[str], stats: dict[str, Any] | None = None
) -> Iterator[InputRecord]:
    stats = stats if stats is not None else {"blank": 0}
    if fmt == "csv":
        return _csv_records(path, options, columns, stats)
    return _jsonl_records(path, options, stats)


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


def _check_encodable(path: Path, number: int, payload: str) -> None:
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError as error:
        bad = payload[error.start]
        raise InputError(
            f"{path.name} line {number} has a lone surrogate \\u{ord(bad):04x} (an escape that is not a Unicode "
            "character): fix or remove it, e.g. write the character itself instead of its \\u escape."
        ) from None


def _jsonl_records(path: Path, options: Options, stats: dict[str, Any]) -> Iterator[InputRecord]:
    for number, raw in iter_lines(path, options.encoding):
        line = raw.rstrip("\n").rstrip("\r")
        if not line.strip():
            stats["blank"] += 1
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            yield InputRecord(
                line=number,
                id=str(number),
                payload=line,
                text=None,
                problem=f"not valid JSON ({error.msg})",
                start_line=number,
            )
            continue
        if not isinstance(obj, dict):
            yield InputRecord(
                line=number, id=str(number), payload=line, text=None, problem="not a JSON object", start_line=number
            )
            continue
        stats["objects"] = stats.get("objects", 0) + 1
        has_id = obj.get("id") not in (None, "")
        if has_id:
            check_id(obj["id"], f"{path.name} line {number}")
        record_id = str(obj["id"]) if has_id else str(number)
        parameters = _parameters(obj.get("parameters"), options, options.labels)
        converted = {**obj, "id": obj["id"] if has_id else record_id, "parameters": parameters}
        inputs = obj.get("inputs")
        problem = None
        if not isinstance(inputs, str) or not inputs.strip():
            problem = "no text in 'inputs'"
        if parameters.get("candidate_labels"):
            stats["with_labels"] = stats.get("with_labels", 0) + 1
        else:
            problem = problem or "no candidate_labels"
        try:
            payload = _dumps(converted)
        except ValueError:  # NaN elsewhere in the record is fine for json.dumps; this is belt and braces
            payload = line
        _check_encodable(path, number, payload)
        yield InputRecord(
            line=number,
            id=record_id,
            payload=payload,
            text=inputs if isinstance(inputs, str) else None,
            problem=problem,
            start_line=number,
        )


def _column(path: Path, columns: list[str], name: str, option: str) -> str:
    if name in columns:
        return name
    folded = {column.casefold(): column for column in columns}
    if name.casefold() in folded:
        return folded[name.casefold()]
    raise InputError(f"{path.name} has no column '{name}'. Its columns: {', '.join(columns)}. Pass {option} NAME.")


class _Lines:
    """Feeds csv.reader physical lines and remembers where each record starts (for messages naming the line)."""

    def __init__(self, path: Path, encoding: str) -> None:
        self._lines = iter_lines(path, encoding)
        self.number = 0  # the last line handed to the reader
        self.seen_content = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        self.number, text = next(self._lines)
        if text.strip():
            self.seen_content = True
        return text


def _csv_reader(path: Path, encoding: str) -> tuple[_Lines, Any]:
    lines = _Lines(path, encoding)
    dialect: type[csv.Dialect] = csv.excel_tab if path.suffix.lower() == ".tsv" else csv.excel
    return lines, csv.reader(lines, dialect=dialect, strict=True)


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, int, list[str]]]:
    """(first line, last line, fields) of each CSV record, strictly parsed; quoting mistakes name the line."""
    previous = csv.field_size_limit()
    csv.field_size_limit(CSV_FIELD_LIMIT)
    try:
        lines, reader = _csv_reader(path, encoding)
        end = 0
        while True:
            start = end + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as error:
                message = str(error)
                if "field larger than field limit" in message:
                    raise InputError(
                        f"{path.name} line {start}: a field is longer than {CSV_FIELD_LIMIT // KIB} KiB (the CSV "
                        "reader's limit). Is a quote left open? Otherwise shorten the text."
                    ) from None
                if "unexpected end of data" in message:
                    raise InputError(
                        f'{path.name} line {start}: a quoted field opened here is never closed (an unbalanced "), '
                        "so the rest of the file would merge into it. Close the quote, or double a quote inside "
                        'a quoted field ("").'
                    ) from None
                raise InputError(
                    f"{path.name} line {lines.number}: malformed CSV ({message}) in the row starting on line {start}. "
                    'Quote fields that contain commas or quotes, and double quotes inside them ("").'
                ) from None
            end = reader.line_num
            yield start, end, fields
    finally:
        csv.field_size_limit(previous)


def csv_dicts(path: Path, encoding: str = "utf-8") -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header and an iterator of (first line, row) for a CSV file, strictly parsed in bounded memory."""
    rows = _csv_rows(path, encoding)
    first = next(rows, None)
    if first is None or not any(column.strip() for column in first[2]):
        raise InputError(f"{path} has no header row: the first line must name the columns, e.g. id,text")
    columns = first[2]

    def dicts() -> Iterator[tuple[int, dict[str, str]]]:
        for start, _end, fields in rows:
            if fields:
                yield start, {column: fields[i] if i < len(fields) else "" for i, column in enumerate(columns)}

    return columns, dicts()


def _csv_header(path: Path, options: Options) -> list[str]:
    first = next(iter(_csv_rows(path, options.encoding)), None)
    if first is None:
        raise InputError(f"{path} is empty: the first line must name the columns, e.g. id,text")
    columns = first[2]
    if not any(column.strip() for column in columns):
        raise InputError(f"{path} has no header row: the first line must name the columns, e.g. id,text")
    _column(path, columns, options.text_column, "--text-column")
    if options.id_column:
        _column(path, columns, options.id_column, "--id-column")
    label_column = _column(path, columns, options.label_column, "--label-column") if options.label_column else None
    if not options.labels and not label_column:
        raise InputError(
            'Labels missing: pass --labels "Health,Career,Finance" (the same labels for every row) '
            "or --label-column COLUMN (comma-separated labels per row)."
        )
    return columns


def _csv_records(path: Path, options: Options, columns: list[str], stats: dict[str, Any]) -> Iterator[InputRecord]:
    text_column = _column(path, columns, options.text_column, "--text-column")
    id_column = _column(path, columns, options.id_column, "--id-column") if options.id_column else None
    label_column = _column(path, columns, options.label_column, "--label-column") if options.label_column else None
    rows = _csv_rows(path, options.encoding)
    next(rows, None)  # the header
    number = 0
    for start, end, fields in rows:
        if not fields:  # a blank line (csv.reader yields [] for it)
            stats["blank"] += 1
            continue
        number += 1
        if end > start:
            stats["spanning_count"] = stats.get("spanning_count", 0) + 1
            if len(stats.setdefault("spanning", [])) < 5:
                stats["spanning"].append(start)
        if len(fields) > len(columns):
            stats["extra_fields"] = stats.get("extra_fields", 0) + 1
            stats.setdefault("first_extra_line", start)
        clean = {column: fields[index] if index < len(fields) else "" for index, column in enumerate(columns)}
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
        yield InputRecord(
            line=number, id=record_id, payload=payload, text=body, problem=problem, row=clean, start_line=start
        )
