"""``zstc submit`` of a file under a key too long for its derived keys, through the local pipeline on moto server:
the real trigger refuses it, files the status record under the key's hash, and zstc reports that record."""

from __future__ import annotations

import json

from zstc_contract.layout import key_bytes, long_key_status_key
from zstc_contract.uri import s3_uri


def test_submit_of_a_1015_byte_key_ends_with_the_refusal_and_its_reason(pipeline, zstc, tmp_path, monkeypatch):
    # Given a submission whose object key is 1,015 bytes (its status key errors/<relative>.status.json would not fit)
    key = "input/zstc/" + "k" * (1015 - len("input/zstc/") - len(".jsonl")) + ".jsonl"
    assert key_bytes(key) == 1015
    monkeypatch.setattr("zstc.submit.object_key", lambda stack, path, sha256, now: key)
    path = tmp_path / "long.jsonl"
    path.write_text('{"inputs": "Run a marathon"}\n', encoding="utf-8")
    # When it is submitted through the whole batch path
    result = zstc("submit", path, "--labels", "Health,Finance", "--poll", "0.2", "--timeout", "60")
    # Then zstc ends with the trigger's Failed / NotStarted record, its reason and where it lies
    assert result.code == 4, result.text
    assert "long.jsonl: Failed before any transform job (job status NotStarted): The key is 1015 bytes" in result.text
    bucket = json.loads((tmp_path / "long.jsonl.zstc-state.json").read_text())["bucket"]
    assert f"(status record {s3_uri(bucket, long_key_status_key('errors/', key))})" in result.text
    assert json.loads((tmp_path / "long.jsonl.zstc-state.json").read_text())["status"] == "failed"
