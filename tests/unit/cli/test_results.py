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


def test_the_summary_shows_user_text_literally_markup_and_escapes_included(tmp_path):
    # Given results whose text, id, label and error contain Rich markup and terminal escape sequences
    import io as _io

    from rich.console import Console

    from zstc.results import Result, show_summary

    results = [
        Result(line=1, id="[/bold]", text="[/bold] closes nothing \x1b[2J\x1b]0;owned\x07", labels=["[red]x"],
               scores=[0.9]),
        Result(line=2, id="2", text="t", labels=[], scores=[], error="bad [/] \x1b[31mred"),
    ]  # fmt: skip
    buffer = _io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    # When the summary is printed (this used to raise rich.errors.MarkupError)
    show_summary(console, results, target=tmp_path / "r.csv")
    text = buffer.getvalue()
    # Then the text is shown as it is, and no escape character reaches the terminal
    assert "[/bold] closes nothing" in text and "[red]x" in text and "bad [/]" in text
    assert "\x1b" not in text.replace("\x1b[0m", "").replace("\x1b[1m", "")  # only the console's own styling
    assert "\\x1b[2J" in text and "\\x07" in text


def test_terminal_safe_escapes_controls_and_bidi_overrides_but_keeps_text():
    from zstc.results import terminal_safe

    assert terminal_safe("café\tok\n") == "café\tok\n"
    assert terminal_safe("a\x1b[31mb\x9bc\u202ed") == "a\\x1b[31mb\\x9bc\\u202ed"
