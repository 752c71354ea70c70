"""Validation and conversion of JSON Lines and CSV inputs (no AWS)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from zstc.errors import InputError
from zstc.inputs import Options, parse_labels, prepare

SHARED_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_jsonl_lines_get_ids_and_the_command_line_labels_where_they_have_none(tmp_path):
    # Given a line without id or labels and a line with its own labels
    path = write(
        tmp_path,
        "a.jsonl",
        '{"inputs": "Run a marathon"}\n'
        '{"id": "x", "inputs": "Save money", "parameters": {"candidate_labels": ["F"]}}\n',
    )
    # When it is prepared with --labels
    prepared = prepare(path, Options(labels=("Health", "Career")))
    # Then the first line gets its line number as id and the labels; the second keeps its own
    first, second = (json.loads(record.payload) for record in prepared.records)
    assert first == {"id": "1", "inputs": "Run a marathon", "parameters": {"candidate_labels": ["Health", "Career"]}}
    assert second["id"] == "x" and second["parameters"]["candidate_labels"] == ["F"]


def test_bad_jsonl_lines_are_kept_and_flagged_so_they_come_back_as_error_rows(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"inputs": "ok", "parameters": {"candidate_labels": ["a"]}}\n{not json\n\n')
    prepared = prepare(path, Options())
    assert [record.problem for record in prepared.records] == [
        None,
        "not valid JSON (Expecting property name enclosed in double quotes)",
    ]
    assert prepared.records[1].payload == "{not json"
    assert prepared.blank_lines == 1


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_an_empty_file_is_an_input_error(tmp_path, content):
    with pytest.raises(InputError, match="is empty"):
        prepare(write(tmp_path, "e.jsonl", content), Options(labels=("a",)))


def test_jsonl_without_labels_anywhere_says_how_to_give_them(tmp_path):
    with pytest.raises(InputError, match=r"Labels missing.*--labels"):
        prepare(write(tmp_path, "a.jsonl", '{"inputs": "x"}\n'), Options())


def test_csv_without_the_named_column_lists_the_columns(tmp_path):
    path = write(tmp_path, "a.csv", "id,body\n1,hello\n")
    with pytest.raises(InputError, match=r"no column 'text'\. Its columns: id, body\. Pass --text-column"):
        prepare(path, Options(labels=("a",)))


def test_csv_without_labels_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="Labels missing"):
        prepare(write(tmp_path, "a.csv", "text\nhello\n"), Options())


def test_csv_with_only_a_header_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no rows"):
        prepare(write(tmp_path, "a.csv", "text\n"), Options(labels=("a",)))


def test_csv_label_column_gives_each_row_its_labels(tmp_path):
    path = write(tmp_path, "a.csv", 'text,choices\nhello,"x, y"\nbye,\n')
    prepared = prepare(path, Options(label_column="choices"))
    assert json.loads(prepared.records[0].payload)["parameters"]["candidate_labels"] == ["x", "y"]
    assert prepared.records[1].problem == "no labels in 'choices'"


def test_undecodable_bytes_name_the_offset_and_the_option(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(InputError, match=r"not valid utf-8 on line 2 \(byte 0xe9 at offset 8\).*--encoding"):
        prepare(path, Options(labels=("a",)))
    assert json.loads(prepare(path, Options(labels=("a",), encoding="cp1252")).records[0].payload)["inputs"] == "café"


def test_a_template_without_a_placeholder_is_rejected(tmp_path):
    with pytest.raises(InputError, match=r"has no \{\}"):
        prepare(write(tmp_path, "a.jsonl", '{"inputs": "x"}\n'), Options(labels=("a",), template="About it."))


def test_labels_are_split_on_commas_and_trimmed():
    assert parse_labels(" Health & Fitness, Career,,Finance ") == ("Health & Fitness", "Career", "Finance")


def test_real_tweets_with_newlines_and_mojibake_survive_the_conversion_exactly(tmp_path):
    # Given real rows of the 2015 tweets, including line breaks inside fields and replacement characters
    rows = list(csv.DictReader(io.StringIO(SHARED_CSV.read_text(encoding="utf-8"), newline="")))
    chosen = [r for r in rows if "\n" in r["text"]][:5] + [r for r in rows if "\ufffd" in r["text"]][:5]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(chosen)
    path = tmp_path / "tweets.csv"
    path.write_text(buffer.getvalue(), encoding="utf-8", newline="")
    # When prepared
    prepared = prepare(path, Options(labels=("Health & Fitness", "Humor")))
    # Then every row is one JSON line whose text is byte-for-byte the original
    assert prepared.body.count(b"\n") == len(chosen)
    assert [json.loads(line)["inputs"] for line in prepared.body.decode().splitlines()] == [r["text"] for r in chosen]
