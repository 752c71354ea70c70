"""A job that read re-staged files (the trigger took oversized records out of them, #13 item 3): its outputs are
published like any other job's, whichever naming SageMaker used, and its staged folder is removed (moto)."""

from __future__ import annotations

from typing import Any

import pytest

from functions.batch_trigger.logic import job_name, manifest_body
from tests.integration.batch.batch_moto import BUCKET, PREFIX
from tests.integration.batch.test_outcome_outputs import RECORD, Jobs
from zstc_contract.layout import FULL_KEY, OUTPUT_NAMINGS, job_output_prefix, manifest_key, staged_prefix

REJECTION = b'{"id": "big", "zstc_rejected": "line 2 is 1,500,000 bytes: over the limit"}\n'


@pytest.fixture
def jobs(env: Any) -> Jobs:
    return Jobs(env)


@pytest.mark.parametrize("naming", OUTPUT_NAMINGS)
def test_a_staged_jobs_outputs_are_published_and_its_folder_removed(jobs: Jobs, naming: str) -> None:
    # Given a job over two files, started the trigger's way from its staged folder (one file re-staged)
    objects = [jobs.put("input/a/x.jsonl", RECORD + b"X" * 100 + b"\n"), jobs.put("input/y.jsonl", RECORD * 2)]
    description = jobs.start(objects)
    name = description["TransformJobName"]
    assert name == job_name(PREFIX, objects)
    folder = staged_prefix("manifests/", name)
    jobs.env.s3.put_object(Bucket=BUCKET, Key=folder + "a/x.jsonl", Body=RECORD + REJECTION)
    jobs.env.s3.put_object(Bucket=BUCKET, Key=folder + "y.jsonl", Body=RECORD * 2)
    manifest = manifest_key("manifests/", name)
    jobs.env.s3.put_object(Bucket=BUCKET, Key=manifest, Body=manifest_body(jobs.settings, objects, folder))
    # When SageMaker runs it (naming outputs by ``naming``: the full key is then the staged copy's) and it ends
    event = jobs.run(description, naming)
    if naming == FULL_KEY:
        assert jobs.body(f"{job_output_prefix('output/', name)}{folder}a/x.jsonl.out") is not None
    result = jobs.outcome(event)
    # Then both outputs are published under the inputs' names, a line per line of the staged copy (this test's
    # model echoes each line; the real handler's answer to a rejection is tested end to end in the CLI tests)
    assert result["files_failed"] == 0
    published = jobs.body("output/a/x.jsonl.out")
    assert published is not None and published.count(b"\n") == 2 and b"zstc_rejected" in published
    status = jobs.status("output/a/x.jsonl.status.json")
    assert status["state"] == "Succeeded" and status["input"] == f"s3://{BUCKET}/input/a/x.jsonl"
    assert status["records"] == 2
    assert jobs.body("output/y.jsonl.out") is not None
    # And the staged copies are gone; the inputs are untouched
    assert "Contents" not in jobs.env.s3.list_objects_v2(Bucket=BUCKET, Prefix=folder)
    assert jobs.body("input/a/x.jsonl") == RECORD + b"X" * 100 + b"\n"
