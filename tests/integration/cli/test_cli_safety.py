"""Bad input files and hostile text through the command line: one line, exit code 2, user text shown literally."""

from __future__ import annotations


def test_an_unclosed_quote_stops_submit_with_one_line_naming_it(zstc, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text('id,text\n1,"I will run\n2,more\n3,and more\n', encoding="utf-8")
    result = zstc("submit", path, "--labels", "a,b")
    assert result.code == 2
    assert result.err.strip().splitlines() == [
        'error: a.csv line 2: a quoted field opened here is never closed (an unbalanced "), so the rest of the file '
        'would merge into it. Close the quote, or double a quote inside a quoted field ("").'
    ]


def test_markup_and_escapes_in_an_error_message_are_printed_literally(zstc, tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("[/bold],\x1b[2Jx\nhello,1\n", encoding="utf-8")
    result = zstc("submit", path, "--labels", "a,b")
    assert result.code == 2
    assert "has no column 'text'. Its columns: [/bold], \\x1b[2Jx." in result.text
    assert "\x1b" not in result.err
