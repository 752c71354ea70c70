"""End to end on the emulated batch path (the real functions, the local transform runner, the tiny model's handler):
a record larger than the job's payload limit ends as its own error row, and the rest of its file is classified
(#13 item 3). Without the trigger's re-staging, SageMaker (and the runner) fail the whole file."""

from __future__ import annotations

import json


def test_an_oversized_record_is_an_error_row_and_the_rest_of_the_file_is_classified(pipeline, zstc, tmp_path):
    # Given a JSON Lines file whose second record is 1.2 MB (the default payload limit is 1 MB), among ordinary ones
    path = tmp_path / "with-a-huge-record.jsonl"
    huge = "Save money and " + "spend less " * 110_000
    lines = [
        {"id": "a", "inputs": "Run a marathon"},
        {"id": "huge", "inputs": huge},
        *({"id": f"f{i}", "inputs": "Read more books " * 60} for i in range(40)),
        {"id": "z", "inputs": "Save money"},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    assert path.stat().st_size > 1_000_000
    # When it is submitted
    result = zstc("submit", path, "--labels", "Health,Finance", "--poll", "0.2")
    # Then every record has its result row, in order; the huge one is an error naming its size, the limit and the fix
    assert result.code == 0, result.text
    back = [json.loads(line) for line in (tmp_path / "with-a-huge-record.results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in back] == [line["id"] for line in lines]
    errors = [r for r in back if "error" in r]
    assert [r["id"] for r in errors] == ["huge"]
    assert "payload" in errors[0]["error"] and "batch_max_payload_mb" in errors[0]["error"]
    assert all(r["label"] in ("Health", "Finance") for r in back if "error" not in r)
    assert f"{len(lines) - 1} classified, 1 error(s)" in result.text
