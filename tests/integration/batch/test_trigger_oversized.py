"""Records larger than the payload limit, found by the trigger before the job (#13 item 3, moto).

The trigger reads each file that could hold one (larger than 1 MB) once; a file with any is re-staged: the job reads
a copy in which each of them is a one-line rejection (answered by the handler with an error record), so the rest
of the file runs and every line keeps its output line.
"""

from __future__ import annotations

import json
from typing import Any

from tests.integration.batch.batch_moto import BUCKET, Env
from zstc_contract.layout import scan_copy_key, scan_key, staged_prefix
from zstc_contract.oversize import ScanResult
from zstc_contract.settings import Target
from zstc_contract.sizing import SAMPLE_BYTES, record_limit_bytes, sample_lines
from zstc_contract.status import FAILED, NOT_STARTED, StatusRecord

LIMIT = record_limit_bytes(1)  # the default MaxPayloadInMB
FIELD = "zstc_rejected"  # model/code/zstc_handler_settings.py REJECTED_RECORD_FIELD, as the stack passes it


def record(record_id: str, text: str = "Run a marathon") -> bytes:
    line = {"id": record_id, "inputs": text, "parameters": {"candidate_labels": ["a", "b"]}}
    return (json.dumps(line) + "\n").encode()


def filler(count: int) -> bytes:
    """``count`` ordinary records, each ~2 KB: a file past 1 MB needs a read."""
    return b"".join(record(f"r{i}", "word " * 400) for i in range(count))


def big(record_id: str, size: int) -> bytes:
    """One record of exactly ``size`` bytes, newline included."""
    head = record(record_id, "")
    return record(record_id, "x" * (size - len(head)))


def manifest_of(env: Env, job: dict[str, Any]) -> tuple[str, list[str]]:
    uri = job["TransformInput"]["DataSource"]["S3DataSource"]["S3Uri"]
    bucket, key = uri[len("s3://") :].split("/", 1)
    entries = json.loads(env.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    return entries[0]["prefix"], entries[1:]


def body(env: Env, key: str) -> bytes:
    return env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_a_file_with_an_oversized_record_runs_from_a_copy_where_that_record_is_a_rejection(env: Env) -> None:
    # Given a file whose third line is 1,500,000 bytes (over the 1 MB payload), among ordinary records
    data = record("a") + record("b") + big("huge", 1_500_000) + filler(300) + record("z")
    env.put("input/docs/mixed.jsonl", data)
    message = env.message("input/docs/mixed.jsonl", size=len(data))
    # When the trigger handles its event
    result = env.trigger().process([message])
    # Then one job starts, reading the file from its own staged folder
    assert result.failures == {}
    (job,) = env.jobs()
    name = job["TransformJobName"]
    prefix, entries = manifest_of(env, job)
    assert prefix == f"s3://{BUCKET}/{staged_prefix('manifests/', name)}" and entries == ["docs/mixed.jsonl"]
    # And the copy is the file with that line replaced by a rejection naming the id, the line, the size and the fix
    staged = body(env, staged_prefix("manifests/", name) + "docs/mixed.jsonl")
    lines, original = staged.split(b"\n"), data.split(b"\n")
    assert len(lines) == len(original)
    assert [n for n, (x, y) in enumerate(zip(lines, original, strict=True)) if x != y] == [2]
    rejection = json.loads(lines[2])
    assert rejection["id"] == "huge" and set(rejection) == {"id", FIELD}
    assert "Line 3" in rejection[FIELD] and "1,500,000 bytes" in rejection[FIELD]
    assert "batch_max_payload_mb" in rejection[FIELD]
    # And what the read found is kept for retries
    claim = f"{BUCKET}/input/docs/mixed.jsonl#{_revision(env, message)}"
    scan = ScanResult.decode(body(env, scan_key("manifests/", claim)))
    assert scan.oversized_count == 1 and scan.oversized[0].line == 3 and scan.limit_bytes == LIMIT


def _revision(env: Env, message: Any) -> str:
    from functions.batch_trigger.logic import parse_message

    (obj,) = parse_message(message.body, env.settings()).objects
    return obj.revision


def test_a_clean_large_file_is_read_once_and_runs_from_the_input_prefix(env: Env) -> None:
    data = filler(700)  # ~1.4 MB, no record over 1 MB
    env.put("input/clean.jsonl", data)
    message = env.message("input/clean.jsonl", size=len(data))
    reads: list[str] = []
    s3 = _CountingS3(env.s3, reads)
    assert env.trigger(s3=s3).process([message]).failures == {}
    (job,) = env.jobs()
    prefix, entries = manifest_of(env, job)
    assert prefix == f"s3://{BUCKET}/input/" and entries == ["clean.jsonl"]
    full_reads = [k for k in reads if k == "input/clean.jsonl"]
    assert full_reads == ["input/clean.jsonl"]  # one streaming read (the sizing's ranged read is not counted)
    claim = f"{BUCKET}/input/clean.jsonl#{_revision(env, message)}"
    assert not ScanResult.decode(body(env, scan_key("manifests/", claim))).oversized_count
    assert "Contents" not in env.s3.list_objects_v2(Bucket=BUCKET, Prefix=scan_copy_key("manifests/", claim))
    # And the same event again reads nothing: the scan record answers
    reads.clear()
    assert env.trigger(s3=s3).process([env.message_again(message, receive_count=2)]).failures == {}
    assert [k for k in reads if k == "input/clean.jsonl"] == []
    assert len(env.jobs()) == 1


def test_every_file_of_a_job_with_one_restaged_file_is_read_from_the_jobs_folder(env: Env) -> None:
    bad = record("a") + big("huge", 1_200_000) + record("c")
    good = record("x") + record("y")
    env.put("input/bad.jsonl", bad)
    env.put("input/sub/good.jsonl", good)
    messages = [env.message("input/bad.jsonl", size=len(bad)), env.message("input/sub/good.jsonl", size=len(good))]
    assert env.trigger().process(messages).failures == {}
    (job,) = env.jobs()
    folder = staged_prefix("manifests/", job["TransformJobName"])
    prefix, entries = manifest_of(env, job)
    assert prefix == f"s3://{BUCKET}/{folder}" and sorted(entries) == ["bad.jsonl", "sub/good.jsonl"]
    assert body(env, folder + "sub/good.jsonl") == good  # copied as it was
    assert body(env, folder + "bad.jsonl").count(b"\n") == bad.count(b"\n")


def test_files_not_read_in_time_wait_for_the_next_receive_and_the_others_go_on(env: Env) -> None:
    data = filler(700)
    env.put("input/later.jsonl", data)
    env.put("input/small.jsonl", record("s"))
    late = env.message("input/later.jsonl", size=len(data))
    small = env.message("input/small.jsonl", size=100)
    # Given an invocation with 40 s left (less than the reserve the reads leave)
    trigger = env.trigger()
    trigger.scanner.remaining_seconds = lambda: 40.0
    result = trigger.process([late, small])
    # Then the large file's message comes back soon, unclaimed; the small file's job starts
    from functions.batch_trigger.service import Deferred
    from functions.batch_trigger.staging import CONTINUE_SECONDS

    assert set(result.failures) == {late.message_id}
    failure = result.failures[late.message_id]
    assert isinstance(failure, Deferred) and failure.visibility_seconds == CONTINUE_SECONDS
    (job,) = env.jobs()
    assert manifest_of(env, job)[1] == ["small.jsonl"]
    # And with time, the next receive reads it and starts its job
    assert env.trigger().process([env.message_again(late, receive_count=2)]).failures == {}
    assert sorted(e for j in env.jobs() for e in manifest_of(env, j)[1]) == ["later.jsonl", "small.jsonl"]


def test_with_the_stock_handler_a_file_with_an_oversized_record_gets_a_status_instead_of_a_job(env: Env) -> None:
    data = record("a") + big("huge", 1_100_000)
    env.put("input/hub.jsonl", data)
    settings = env.settings(REJECTED_RECORD_FIELD="", BATCH_STRATEGY="SingleRecord")
    result = env.trigger(settings).process([env.message("input/hub.jsonl", size=len(data))])
    assert result.failures == {} and env.jobs() == []
    status = StatusRecord.decode(body(env, "errors/hub.jsonl.status.json"))
    assert (status.state, status.job_status) == (FAILED, NOT_STARTED)
    assert "line 2" in (status.reason or "") and "batch_max_payload_mb" in (status.reason or "")


def test_a_multi_record_payload_holds_the_largest_record_that_runs(env: Env) -> None:
    # Given a file of ordinary records and one of 2,500,000 bytes, a 6 MB payload limit, and a target whose rate
    # lets a 2 MB mini-batch of these records finish within a quarter of the timeout, but not a 3 MB one
    data = filler(150) + big("wide", 2_500_000) + filler(10)
    density = sample_lines(data[:SAMPLE_BYTES], complete=False, tokens_per_pair=40.5).weighted_pairs_per_mb
    rate = density * 2.5 / 900
    gpu = Target("ml.g4dn.xlarge", "zs-gpu", None, pairs_per_second=rate, tokens_per_pair=40.5)
    settings = env.settings(BATCH_TARGETS=json.dumps([gpu.to_json()]), MAX_PAYLOAD_MB="6")
    without = filler(150) + filler(10)
    env.put("input/narrow.jsonl", without)
    assert env.trigger(settings).process([env.message("input/narrow.jsonl", size=len(without))]).failures == {}
    (narrow,) = env.jobs()
    assert (narrow["BatchStrategy"], narrow["MaxPayloadInMB"]) == ("MultiRecord", 2)
    # When the file with the wide record comes
    env.put("input/wide.jsonl", data)
    assert env.trigger(settings).process([env.message("input/wide.jsonl", size=len(data))]).failures == {}
    (wide,) = [j for j in env.jobs() if j["TransformJobName"] != narrow["TransformJobName"]]
    # Then no MultiRecord payload both holds it (3 MB) and finishes in time: one record per invocation, 6 MB
    assert (wide["BatchStrategy"], wide["MaxPayloadInMB"]) == ("SingleRecord", 6)
    assert manifest_of(env, wide)[0] == f"s3://{BUCKET}/input/"  # nothing over 6 MB: not re-staged


class _CountingS3:
    """The S3 client, recording the key of every whole-object GET (ranged reads are the sizing's samples)."""

    def __init__(self, s3: Any, reads: list[str]) -> None:
        self._s3 = s3
        self._reads = reads

    def get_object(self, **kwargs: Any) -> Any:
        if "Range" not in kwargs:
            self._reads.append(kwargs["Key"])
        return self._s3.get_object(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._s3, name)


def test_a_scan_record_whose_copy_expired_is_read_again(env: Env) -> None:
    # Given a file read once (its copy kept beside the scan record), whose copy the lifecycle rule has removed
    data = record("a") + big("huge", 1_100_000)
    env.put("input/old.jsonl", data)
    message = env.message("input/old.jsonl", size=len(data))
    trigger = env.trigger()
    obj = trigger.scanner.scan(_objects(env, message)).results
    (result,) = obj.values()
    assert result.staged_key is not None
    env.s3.delete_object(Bucket=BUCKET, Key=result.staged_key)
    # When its message comes back (a re-drive, weeks later)
    assert env.trigger().process([env.message_again(message, receive_count=2)]).failures == {}
    # Then the file is read again and its job runs from a fresh copy
    (job,) = env.jobs()
    staged = body(env, staged_prefix("manifests/", job["TransformJobName"]) + "old.jsonl")
    assert staged.count(b"\n") == 2 and b"zstc_rejected" in staged


def _objects(env: Env, message: Any) -> list[Any]:
    from dataclasses import replace

    from functions.batch_trigger.logic import parse_message

    return [replace(o, size=len(body(env, o.key))) for o in parse_message(message.body, env.settings()).objects]
