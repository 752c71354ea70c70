"""Joining outputs back to inputs and writing results (no AWS)."""

from __future__ import annotations

import csv
import json

from zstc.inputs import Options, prepare
from zstc.results import join, parse_output, write_results


def prepared_jsonl(tmp_path, n=3):
    path = tmp_path / "in.jsonl"
    path.write_text(
        "".join(json.dumps({"id": f"r{i}", "inputs": f"text {i}"}) + "\n" for i in range(n)), encoding="utf-8"
    )
    return prepare(path, Options(labels=("a", "b")))


def ok(i, label="a"):
    return json.dumps({"id": f"r{i}", "sequence": f"text {i}", "labels": [label, "z"], "scores": [0.7, 0.3]})


def test_outputs_join_by_position_and_error_lines_become_error_rows(tmp_path):
    prepared = prepared_jsonl(tmp_path)
    body = "\n".join([ok(0), json.dumps({"id": "r1", "error": "empty text"}), ok(2, "b")]).encode() + b"\n\n"
    results = join(prepared, parse_output(body))
    assert [(r.id, r.label, r.error) for r in results] == [
        ("r0", "a", None),
        ("r1", None, "empty text"),
        ("r2", "b", None),
    ]


def test_a_missing_output_line_becomes_an_explicit_error_row(tmp_path):
    prepared = prepared_jsonl(tmp_path)
    results = join(prepared, parse_output((ok(0) + "\n" + ok(2) + "\n").encode()))
    assert [r.label for r in results] == ["a", None, "a"]
    assert results[1].error == "no result line came back for this record"


def test_an_unreadable_output_line_is_an_error_row_not_a_crash(tmp_path):
    prepared = prepared_jsonl(tmp_path, 2)
    results = join(prepared, parse_output(b"garbage\n" + ok(1).encode()))
    assert results[0].error.startswith("unreadable result line") and results[1].label == "a"


def test_csv_results_keep_every_original_column_and_add_the_prediction(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text('text,who\n"two\nlines",me\n', encoding="utf-8")
    prepared = prepare(path, Options(labels=("a",)))
    target = write_results(prepared, join(prepared, parse_output((ok(0).replace('"r0"', '"1"') + "\n").encode())))
    assert target.name == "t.results.csv"
    row = next(csv.DictReader(target.open(encoding="utf-8", newline="")))
    assert row["text"] == "two\nlines" and row["who"] == "me"
    assert row["predicted_label"] == "a" and json.loads(row["labels"]) == ["a", "z"] and row["error"] == ""
