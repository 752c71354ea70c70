"""The job-outcome function against moto (#13 items 2 and 4): per-job outputs published to ``output/<rel>.out``
whichever naming SageMaker used, never an earlier run's result, overwritten inputs superseded, and each file handled
on its own. Jobs are started as the trigger starts them (its manifest, sidecar and request) and run by the local
transform runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from functions.batch_trigger.logic import S3Object, job_name, manifest_body, transform_request, versions_sidecar
from functions.job_outcome.handler import OutcomeFunction
from functions.job_outcome.handler import build_handler as build_outcome
from tests.integration.batch.batch_moto import BUCKET, KEY_ARN, PREFIX, REGION, Env
from tests.integration.batch.test_handlers_end_to_end import _context
from zstc_contract.layout import (
    BASE_NAME,
    FULL_KEY,
    OUTPUT_NAMINGS,
    RELATIVE_KEY,
    job_output_prefix,
    long_key_status_key,
    manifest_key,
)
from zstc_contract.uri import s3_uri
from zstc_local.runner import InvocationError, LocalTransformRunner, state_change_event

RECORD = b'{"id": "r1", "inputs": "a text", "parameters": {"candidate_labels": ["x", "y"]}}\n'


def answer(body: bytes, content_type: str, accept: str, timeout: float) -> bytes:
    """The model server: one answer per line; a body holding FAIL fails (the whole object, as SageMaker does)."""
    if b"FAIL" in body:
        raise InvocationError("model server answered HTTP 400: bad record")
    return b"\n".join(
        b'{"labels": ["x", "y"], "scores": [0.9, 0.1], "echo": ' + line + b"}" for line in body.split(b"\n")
    )


class Faulty:
    """An S3 client that fails the calls ``fails(operation, kwargs)`` picks, and passes the rest to moto."""

    def __init__(self, real: Any, fails: Callable[[str, dict[str, Any]], bool]) -> None:
        self._real, self._fails = real, fails

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._real, name)
        if not callable(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._fails(name, {**kwargs, "args": args}):
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, name)
            return method(*args, **kwargs)

        return call


class Jobs:
    """Starts jobs the trigger's way and delivers their end to the job-outcome function."""

    def __init__(self, env: Env, s3: Any = None) -> None:
        self.env = env
        self.settings = env.settings()
        self.s3 = s3
        queue = env.sqs.create_queue(QueueName="failures-probe")["QueueUrl"]
        arn = env.sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        boto3.client("sns", region_name=REGION).subscribe(
            TopicArn=env.topic_arn, Protocol="sqs", Endpoint=arn, Attributes={"RawMessageDelivery": "true"}
        )
        self.probe = queue

    def put(self, key: str, body: bytes = RECORD) -> S3Object:
        version = self.env.s3.put_object(Bucket=BUCKET, Key=key, Body=body)["VersionId"]
        return S3Object(BUCKET, key, "v-" + version, len(body))

    def start(self, objects: list[S3Object], generation: int = 0) -> dict[str, Any]:
        """Manifest, version sidecar and request, as the trigger writes them; the job's description."""
        name = job_name(PREFIX, objects, generation)
        sidecar_key, sidecar = versions_sidecar(self.settings, name, objects)
        self.env.s3.put_object(Bucket=BUCKET, Key=sidecar_key, Body=sidecar)
        key = manifest_key(self.settings.manifest_prefix, name)
        self.env.s3.put_object(Bucket=BUCKET, Key=key, Body=manifest_body(self.settings, objects))
        request = transform_request(self.settings, name, s3_uri(BUCKET, key), len(objects), self.settings.targets[0])
        return {**request, "TransformJobArn": f"arn:aws:sagemaker:{REGION}:123456789012:transform-job/{name}"}

    def run(self, description: dict[str, Any], naming: str = RELATIVE_KEY) -> dict[str, Any]:
        """The job on the local runner, named as ``naming`` says; its state-change event."""
        run = LocalTransformRunner(s3=self.env.s3, invoke=answer, naming=naming).run(description)
        return state_change_event(description, run, region=REGION)

    def outcome(self, event: dict[str, Any]) -> dict[str, Any]:
        function: OutcomeFunction = build_outcome(self.env.outcome_environment(), self._clients)
        result: dict[str, Any] = function(event, _context())
        return result

    def _clients(self, service: str, config: Config) -> Any:
        real = boto3.client(service, region_name=REGION, config=config)
        return self.s3(real) if service == "s3" and self.s3 else real

    def body(self, key: str) -> bytes | None:
        try:
            return bytes(self.env.s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except ClientError:
            return None

    def status(self, key: str) -> dict[str, Any] | None:
        body = self.body(key)
        return json.loads(body) if body is not None else None

    def notices(self) -> list[dict[str, Any]]:
        messages = self.env.sqs.receive_message(QueueUrl=self.probe, MaxNumberOfMessages=10).get("Messages", [])
        return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def jobs(env: Env) -> Jobs:
    return Jobs(env)


@pytest.mark.parametrize("naming", OUTPUT_NAMINGS)
def test_each_naming_sagemaker_may_use_ends_at_the_canonical_output(jobs: Jobs, naming: str) -> None:
    # Given a job over a nested and a top-level file, whose outputs SageMaker names by ``naming``
    objects = [jobs.put("input/a/x.jsonl"), jobs.put("input/y.jsonl", RECORD * 2)]
    description = jobs.start(objects)
    event = jobs.run(description, naming)
    folder = job_output_prefix("output/", description["TransformJobName"])
    names = {RELATIVE_KEY: "a/x.jsonl", FULL_KEY: "input/a/x.jsonl", BASE_NAME: "x.jsonl"}
    assert jobs.body(f"{folder}{names[naming]}.out") is not None  # the runner wrote where SageMaker would
    # When the job's end reaches the outcome function
    result = jobs.outcome(event)
    # Then each file's output is published at output/<rel>.out, with its status beside it naming the naming
    assert result["files"] == 2 and result["files_failed"] == 0
    for obj, lines in ((objects[0], 1), (objects[1], 2)):
        relative = obj.key.removeprefix("input/")
        published = jobs.body(f"output/{relative}.out")
        assert published is not None and published.count(b"\n") == lines and b'"echo"' in published
        status = jobs.status(f"output/{relative}.status.json")
        assert status["state"] == "Succeeded" and status["records"] == lines
        assert status["version_id"] == obj.revision.removeprefix("v-")
        assert status["job_output"].startswith(s3_uri(BUCKET, folder))
    assert jobs.status("output/a/x.jsonl.status.json")["output_naming"] == naming
    assert jobs.notices() == []


def test_same_base_names_in_two_folders_keep_their_own_outputs(jobs: Jobs) -> None:
    objects = [jobs.put("input/a/x.jsonl", RECORD), jobs.put("input/b/x.jsonl", RECORD * 3)]
    jobs.outcome(jobs.run(jobs.start(objects)))
    assert jobs.body("output/a/x.jsonl.out").count(b"\n") == 1
    assert jobs.body("output/b/x.jsonl.out").count(b"\n") == 3
    assert jobs.status("output/b/x.jsonl.status.json")["records"] == 3


def test_same_base_names_named_by_base_name_are_failed_as_ambiguous_not_guessed(jobs: Jobs) -> None:
    # Given SageMaker naming by base name: the second file's output replaced the first's in the job's folder
    objects = [jobs.put("input/a/x.jsonl", RECORD), jobs.put("input/b/x.jsonl", RECORD * 3)]
    result = jobs.outcome(jobs.run(jobs.start(objects), BASE_NAME))
    # Then neither is published and both say why
    assert result["files_failed"] == 2
    for relative in ("a/x.jsonl", "b/x.jsonl"):
        assert jobs.body(f"output/{relative}.out") is None
        status = jobs.status(f"errors/{relative}.status.json")
        assert status["state"] == "Failed" and "cannot be told" in status["reason"]
    (notice,) = jobs.notices()
    assert notice["files_failed"] == 2


def test_a_failed_new_job_after_an_old_success_is_reported_failed(jobs: Jobs) -> None:
    # Given a file that succeeded once
    first = jobs.put("input/a.jsonl")
    jobs.outcome(jobs.run(jobs.start([first])))
    assert jobs.status("output/a.jsonl.status.json")["state"] == "Succeeded"
    # When a new version of it fails in its own job
    second = jobs.put("input/a.jsonl", b'{"id": "FAIL", "inputs": "x"}\n')
    event = jobs.run(jobs.start([second]))
    assert event["detail"]["TransformJobStatus"] == "Failed"
    result = jobs.outcome(event)
    # Then it is reported failed, with the new version, and the old result is no longer where results are read
    assert result["files_failed"] == 1
    status = jobs.status("errors/a.jsonl.status.json")
    assert status["state"] == "Failed" and status["version_id"] == second.revision.removeprefix("v-")
    assert "bad record" in status["reason"]
    assert jobs.body("output/a.jsonl.out") is None and jobs.body("output/a.jsonl.status.json") is None
    # (the earlier run's output stays a noncurrent version of the versioned bucket)
    versions = jobs.env.s3.list_object_versions(Bucket=BUCKET, Prefix="output/a.jsonl.out").get("Versions", [])
    assert len(versions) == 1
    (notice,) = jobs.notices()
    assert notice["failed_inputs"] == [f"s3://{BUCKET}/input/a.jsonl"]
    # And a later success of a third version clears the failure
    third = jobs.put("input/a.jsonl")
    jobs.outcome(jobs.run(jobs.start([third])))
    assert jobs.status("output/a.jsonl.status.json")["version_id"] == third.revision.removeprefix("v-")
    assert jobs.body("errors/a.jsonl.status.json") is None


def test_an_input_overwritten_while_its_job_ran_is_superseded_not_mixed(jobs: Jobs) -> None:
    # Given a job that read version 1 of a file and another file
    old, other = jobs.put("input/a.jsonl", RECORD), jobs.put("input/b.jsonl")
    event = jobs.run(jobs.start([old, other]))
    # When version 2 is uploaded before the job's end is recorded
    new = jobs.put("input/a.jsonl", RECORD * 2)
    result = jobs.outcome(event)
    # Then the file is Superseded with both versions, its old result unpublished; the other file is published
    status = jobs.status("errors/a.jsonl.status.json")
    assert status["state"] == "Superseded"
    assert status["version_id"] == old.revision.removeprefix("v-")
    assert status["current_version_id"] == new.revision.removeprefix("v-")
    assert jobs.body("output/a.jsonl.out") is None
    assert jobs.status("output/b.jsonl.status.json")["state"] == "Succeeded"
    assert result["files_superseded"] == 1 and result["files_failed"] == 0
    # And when version 2's job finished first, the late superseded job leaves its result alone
    jobs.outcome(jobs.run(jobs.start([new])))
    published = jobs.body("output/a.jsonl.out")
    assert published is not None and published.count(b"\n") == 2
    jobs.outcome(event)  # version 1's event again (re-delivered, or late)
    assert jobs.body("output/a.jsonl.out") == published
    assert jobs.status("output/a.jsonl.status.json")["version_id"] == new.revision.removeprefix("v-")


def test_one_bad_file_does_not_fail_the_others(env: Env) -> None:
    # Given S3 failing the copy of one file's output and the status record of another
    def fails(operation: str, kwargs: dict[str, Any]) -> bool:
        target = kwargs["args"][2] if operation == "copy" else kwargs.get("Key", "")
        return (operation == "copy" and "bad-copy" in target) or (
            operation == "put_object" and kwargs.get("Key") == "output/bad-status.jsonl.status.json"
        )

    jobs = Jobs(env, s3=lambda real: Faulty(real, fails))
    objects = [jobs.put(f"input/{name}.jsonl") for name in ("good", "bad-copy", "bad-status")]
    result = jobs.outcome(jobs.run(jobs.start(objects)))
    # Then the good file is published, the copy failure is that file's failure status, and the unwritten status
    # record is named in the notice
    assert jobs.status("output/good.jsonl.status.json")["state"] == "Succeeded"
    failed = jobs.status("errors/bad-copy.jsonl.status.json")
    assert failed["state"] == "Failed" and "InternalError" in failed["reason"]
    assert result["files_failed"] == 1 and result["status_records_not_written"] == ["bad-status.jsonl"]
    (notice,) = jobs.notices()
    assert notice["failed_inputs"] == [f"s3://{BUCKET}/input/bad-copy.jsonl"]
    assert notice["status_records_not_written"] == [f"s3://{BUCKET}/input/bad-status.jsonl"]


def test_a_key_too_long_for_its_status_record_gets_one_under_a_hashed_key(jobs: Jobs) -> None:
    # Given a file whose output key fits S3's 1,024 bytes but whose status keys do not (and whose name in the job's
    # folder does not either: SageMaker cannot write its output)
    relative = "d/" + "k" * (1024 - len("output/") - len(".out") - len("d/") - len(".jsonl")) + ".jsonl"
    long_one, short = jobs.put("input/" + relative), jobs.put("input/short.jsonl")
    description = jobs.start([long_one, short])
    event = jobs.run(description)
    # (moto takes keys past 1,024 bytes; S3 does not: SageMaker could not upload that output and fails the job)
    folder = job_output_prefix("output/", description["TransformJobName"])
    jobs.env.s3.delete_object(Bucket=BUCKET, Key=f"{folder}{relative}.out")
    event["detail"]["TransformJobStatus"] = "Failed"
    result = jobs.outcome(event)
    # Then the other file is published and the long one has a status record under a fixed-length key
    assert jobs.status("output/short.jsonl.status.json")["state"] == "Succeeded"
    status = jobs.status(long_key_status_key("errors/", "input/" + relative))
    assert status["state"] == "Failed" and status["input"] == s3_uri(BUCKET, "input/" + relative)
    assert result["files_failed"] == 1
    (notice,) = jobs.notices()
    assert notice["failed_inputs"] == [s3_uri(BUCKET, "input/" + relative)]


def test_a_completed_job_without_an_output_for_a_file_says_where_it_looked(jobs: Jobs) -> None:
    objects = [jobs.put("input/a.jsonl"), jobs.put("input/b.jsonl")]
    description = jobs.start(objects)
    event = jobs.run(description)
    folder = job_output_prefix("output/", description["TransformJobName"])
    jobs.env.s3.delete_object(Bucket=BUCKET, Key=f"{folder}b.jsonl.out")
    result = jobs.outcome(event)
    status = jobs.status("errors/b.jsonl.status.json")
    assert result["files_failed"] == 1 and "no output named after this file" in status["reason"]
    assert s3_uri(BUCKET, folder) in status["reason"]


def test_the_published_copy_keeps_sse_kms_with_the_stack_key(jobs: Jobs) -> None:
    obj = jobs.put("input/k.jsonl")
    description = jobs.start([obj])
    folder = job_output_prefix("output/", description["TransformJobName"])
    event = jobs.run(description)
    # SageMaker encrypts the output with the job's KmsKeyId (the runner does not emulate KMS: rewrite it so)
    body = jobs.body(f"{folder}k.jsonl.out")
    jobs.env.s3.put_object(
        Bucket=BUCKET, Key=f"{folder}k.jsonl.out", Body=body, ServerSideEncryption="aws:kms", SSEKMSKeyId=KEY_ARN
    )
    jobs.outcome(event)
    head = jobs.env.s3.head_object(Bucket=BUCKET, Key="output/k.jsonl.out")
    assert head["ServerSideEncryption"] == "aws:kms" and head["SSEKMSKeyId"] == KEY_ARN
