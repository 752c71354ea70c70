"""zstc submit/wait and zstc jobs find a file's status record under the hashed name of a key too long for its
derived keys (``errors/_long-keys/<sha256>.status.json``), and take it only for that file."""

from __future__ import annotations

import pytest

from zstc.errors import JobFailedError
from zstc.jobs import records_of
from zstc_contract.layout import MAX_KEY_BYTES, key_bytes, long_key_status_key, status_key
from zstc_contract.status import OutcomeDetail, StatusRecord, put_status_record

BUCKET = "zstc-versions"  # the conftest's bucket
LONG_KEY = "input/" + "k" * (1015 - len("input/") - len(".jsonl")) + ".jsonl"  # 1,015 bytes
HASHED = long_key_status_key("errors/", LONG_KEY)
REASON = "The key is 1015 bytes (UTF-8): its output or status record would be 1061 bytes"


def refusal(key: str, *, revision: str = "v-v1", input: str | None = None) -> StatusRecord:
    """The trigger's record of a file it refused before any job."""
    return StatusRecord.rejected(input=input or f"s3://{BUCKET}/{key}", revision=revision, reason=REASON)


def test_a_refused_long_key_fails_the_upload_with_the_record_state_and_reason(aws, watcher):
    s3, _ = aws
    assert key_bytes(LONG_KEY) == 1015 and key_bytes(status_key("errors/", LONG_KEY[6:])) > MAX_KEY_BYTES
    # Given the trigger's refusal under the key's hash
    put_status_record(s3, BUCKET, HASHED, refusal(LONG_KEY))
    # When the upload is polled, then it fails with the record's state, job status and reason, naming the record
    with pytest.raises(JobFailedError) as failure:
        watcher("v1", LONG_KEY).poll()
    message = str(failure.value)
    assert f"Failed before any transform job (job status NotStarted): {REASON}" in message
    assert f"(status record s3://{BUCKET}/{HASHED})" in message


def test_a_record_under_the_hash_that_names_another_input_is_not_taken(aws, watcher):
    s3, _ = aws
    put_status_record(s3, BUCKET, HASHED, refusal(LONG_KEY, input=f"s3://{BUCKET}/input/other.jsonl"))
    progress, output = watcher("v1", LONG_KEY).poll()
    assert output is None and progress.stage == "queued"


def test_the_hashed_name_is_read_where_the_relative_record_fits_but_is_absent(aws, watcher):
    s3, _ = aws
    # Given a key whose own status key fits, refused because a longer derived key (the job folder's) would not
    key = "input/" + "m" * 940 + ".jsonl"
    assert key_bytes(status_key("errors/", key[6:])) <= MAX_KEY_BYTES
    put_status_record(s3, BUCKET, long_key_status_key("errors/", key), refusal(key))
    with pytest.raises(JobFailedError, match="job status NotStarted"):
        watcher("v1", key).poll()


def test_an_earlier_versions_refusal_is_not_this_uploads_answer(aws, watcher):
    s3, _ = aws
    put_status_record(s3, BUCKET, HASHED, refusal(LONG_KEY, revision="v-old"))
    assert watcher("new", LONG_KEY).poll()[1] is None
    with pytest.raises(JobFailedError, match="NotStarted"):
        watcher("old", LONG_KEY).poll()


def succeeded(key: str, *, job_name: str, records: int, version_id: str = "v1") -> StatusRecord:
    return StatusRecord.succeeded(
        input=f"s3://{BUCKET}/{key}", output=f"s3://{BUCKET}/output/{key[6:]}.out", job_name=job_name,
        job_status="Completed", finished_at=None, instance_type="ml.m5.xlarge", records=records, record_errors=0,
        detail=OutcomeDetail(version_id=version_id),
    )  # fmt: skip


def test_a_success_record_under_the_hash_answers_for_its_version(aws, watcher):
    s3, _ = aws
    # Given a published output whose success record's own key would be too long (the outcome function hashes it),
    # written for an earlier upload
    output = f"output/{LONG_KEY[6:]}.out"
    s3.put_object(Bucket=BUCKET, Key=output, Body=b'{"labels": ["x"]}\n')
    put_status_record(s3, BUCKET, HASHED, succeeded(LONG_KEY, job_name="s-batch-0", records=1, version_id="v0"))
    # Then this upload waits on, until the record answers for its version
    assert watcher("v1", LONG_KEY).poll()[1] is None
    put_status_record(s3, BUCKET, HASHED, succeeded(LONG_KEY, job_name="s-batch-1", records=1))
    assert watcher("v1", LONG_KEY).poll()[1] == output


def job(name: str) -> dict:
    return {
        "TransformJobName": name,
        "TransformJobStatus": "Completed",
        "TransformOutput": {"S3OutputPath": f"s3://{BUCKET}/output/_jobs/{name}/"},
    }


def test_jobs_counts_the_records_of_a_success_record_under_the_hash(aws, stack_outputs):
    s3, _ = aws
    put_status_record(s3, BUCKET, HASHED, succeeded(LONG_KEY, job_name="s-batch-1", records=7))
    assert records_of(s3, stack_outputs, job("s-batch-1"), [f"s3://{BUCKET}/{LONG_KEY}"]) == 7


def test_jobs_counts_a_jobs_own_output_when_the_record_answers_for_another_job(aws, stack_outputs):
    s3, _ = aws
    # Given the canonical record of a later job, and this job's output in its own folder
    put_status_record(s3, BUCKET, "output/a.jsonl.status.json", succeeded("input/a.jsonl", job_name="s-2", records=9))
    s3.put_object(Bucket=BUCKET, Key="output/_jobs/s-1/a.jsonl.out", Body=b"{}\n{}\n")
    # Then each job counts its own records
    assert records_of(s3, stack_outputs, job("s-1"), [f"s3://{BUCKET}/input/a.jsonl"]) == 2
    assert records_of(s3, stack_outputs, job("s-2"), [f"s3://{BUCKET}/input/a.jsonl"]) == 9
