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


# --- reading safely: strict CSV, bounded memory, clear errors naming the line -----------------------------------


def test_an_unclosed_quote_is_an_error_naming_its_line_not_a_silent_merge(tmp_path):
    # Given a CSV whose row 1 opens a quote that is never closed (rows 2-7 would merge into it)
    rows = "".join(f"{i},text {i}\n" for i in range(2, 8))
    path = write(tmp_path, "a.csv", 'id,text\n1,"I will run\n' + rows)
    # Then preparing it fails before anything is uploaded, naming the line where the quote opened
    with pytest.raises(InputError, match=r"^a\.csv line 2: a quoted field opened here is never closed") as raised:
        prepare(path, Options(labels=("a",)))
    assert "\n" not in str(raised.value)


def test_a_quote_closed_in_the_middle_of_a_field_is_malformed_csv_naming_the_line(tmp_path):
    path = write(tmp_path, "a.csv", 'id,text\n1,ok\n2,"half"quoted\n')
    with pytest.raises(InputError, match=r"^a\.csv line 3: malformed CSV \(',' expected after '\"'\)"):
        prepare(path, Options(labels=("a",)))


def test_fields_spanning_lines_are_kept_with_a_warning_naming_where_they_start(tmp_path):
    path = write(tmp_path, "a.csv", 'id,text\n1,"two\nlines"\n2,plain\n3,"three\nof\nthem"\n')
    prepared = prepare(path, Options(labels=("a",)))
    assert [json.loads(r.payload)["inputs"] for r in prepared.records] == ["two\nlines", "plain", "three\nof\nthem"]
    assert prepared.warnings == [
        "2 row(s) have a quoted field spanning several lines (starting on line 2, 5): fine for texts with line "
        "breaks; if not intended, check the quotes."
    ]


def test_a_csv_field_over_128_kib_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path, "a.csv", "id,text\n1,short\n2," + "x" * (128 * 1024 + 1) + "\n")
    with pytest.raises(InputError, match=r"^a\.csv line 3: a field is longer than 128 KiB"):
        prepare(path, Options(labels=("a",)))


def test_a_field_of_exactly_128_kib_is_fine(tmp_path):
    path = write(tmp_path, "a.csv", "text\n" + "x" * (128 * 1024) + "\n")
    assert prepare(path, Options(labels=("a",))).count == 1


def test_a_jsonl_lone_surrogate_is_an_error_naming_the_line(tmp_path):
    path = write(tmp_path, "a.jsonl", '{"inputs": "fine"}\n{"inputs": "broken \\ud800 here"}\n')
    with pytest.raises(InputError, match=r"^a\.jsonl line 2 has a lone surrogate \\ud800"):
        prepare(path, Options(labels=("a",)))


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_jsonl_id_that_json_cannot_carry_is_an_error_naming_the_line(tmp_path, value):
    path = write(tmp_path, "a.jsonl", f'{{"id": 1, "inputs": "x"}}\n{{"id": {value}, "inputs": "y"}}\n')
    with pytest.raises(InputError, match=r"^a\.jsonl line 2: the id is .*give a string or a finite number"):
        prepare(path, Options(labels=("a",)))


@pytest.mark.parametrize("value", ['{"a": 1}', "[1]", "true"])
def test_a_jsonl_id_that_is_not_a_string_or_number_is_an_error(tmp_path, value):
    path = write(tmp_path, "a.jsonl", f'{{"id": {value}, "inputs": "y"}}\n')
    with pytest.raises(InputError, match=r"^a\.jsonl line 1: the id .* give a string or a number"):
        prepare(path, Options(labels=("a",)))


def test_string_integer_and_finite_number_ids_are_accepted(tmp_path):
    path = write(
        tmp_path, "a.jsonl", '{"id": "a", "inputs": "x"}\n{"id": 2, "inputs": "y"}\n{"id": 2.5, "inputs": "z"}\n'
    )
    assert [json.loads(r.payload)["id"] for r in prepare(path, Options(labels=("a",))).records] == ["a", 2, 2.5]


def test_preparing_a_20_mib_csv_holds_no_more_than_a_few_mib(tmp_path):
    # Given a 20 MiB CSV (the issue measured +350 MiB, 17x, before streaming)
    path = tmp_path / "big.csv"
    line = "tweet text with some words, and a comma inside quotes " * 3
    with path.open("w", encoding="utf-8") as handle:
        handle.write("id,text\n")
        i = 0
        while handle.tell() < 20 * 1024 * 1024:
            handle.write(f'{i},"{line}{i}"\n')
            i += 1
    import tracemalloc

    # When it is prepared (read, validated, converted, hashed)
    tracemalloc.start()
    prepared = prepare(path, Options(labels=("Health", "Career")))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Then the peak of Python allocations stays small (the converted body is in a temporary file)
    assert prepared.count == i and prepared.size > 20 * 1024 * 1024
    assert peak < 4 * 1024 * 1024, f"peak {peak / 1024 / 1024:.1f} MiB"
