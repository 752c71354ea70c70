"""``zstc doctor`` against moto: stack discovery, the trigger's configuration, the endpoint, and the smoke file
through the local batch path (real trigger and job-outcome functions on moto server, the handler on the tiny model).

moto implements no SageMaker quotas (ListServiceQuotas raises NotImplementedError), so the quota tables come from
botocore's Stubber on a real service-quotas client.
"""

from __future__ import annotations

import json
from dataclasses import replace

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from zstc import doctor
from zstc.stack import find_stack

from .conftest import STACK

REGION = "us-east-1"
ROLE_POLICY = json.dumps(
    {"Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"}, "Action": "sts:AssumeRole"}]}
)
OUTPUTS = {
    "BucketName": "zs-data",
    "InputPrefix": "input/",
    "OutputPrefix": "output/",
    "ErrorsPrefix": "errors/",
    "ModelName": "zs-model",
    "QueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/q",
    "DeadLetterQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/dlq",
    "TransformJobPrefix": "zs-batch",
}


def _quota(name: str, code: str, value: float) -> dict:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value}


def stubbed_quotas(applied: list[dict], defaults: list[dict] | None = None):
    """A service-quotas client answering one ListServiceQuotas and one ListAWSDefaultServiceQuotas."""
    client = boto3.client(
        "service-quotas", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    stubber = Stubber(client)
    stubber.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "sagemaker"})
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": defaults or []}, {"ServiceCode": "sagemaker"})
    stubber.activate()
    return client, stubber


def _deploy_stack_with_trigger_and_endpoint(env: dict[str, str], *, endpoint: bool = True) -> None:
    """A stack in moto: the contract's outputs, a trigger function with its environment, and an endpoint."""
    iam = boto3.client("iam", region_name=REGION)
    role = iam.create_role(RoleName="trigger", AssumeRolePolicyDocument=ROLE_POLICY)["Role"]["Arn"]
    outputs = dict(OUTPUTS)
    if endpoint:
        sagemaker = boto3.client("sagemaker", region_name=REGION)
        sagemaker.create_model(ModelName="zs-model", ExecutionRoleArn=role, PrimaryContainer={"Image": "image"})
        sagemaker.create_endpoint_config(
            EndpointConfigName="zs-config",
            ProductionVariants=[
                {
                    "VariantName": "AllTraffic",
                    "ModelName": "zs-model",
                    "InstanceType": "ml.g4dn.xlarge",
                    "InitialInstanceCount": 1,
                }
            ],
        )
        sagemaker.create_endpoint(EndpointName="zs-endpoint", EndpointConfigName="zs-config")
        boto3.client("application-autoscaling", region_name=REGION).register_scalable_target(
            ServiceNamespace="sagemaker",
            ResourceId="endpoint/zs-endpoint/variant/AllTraffic",
            ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            MinCapacity=1,
            MaxCapacity=3,
        )
        outputs["EndpointName"] = "zs-endpoint"
    template = {
        "Resources": {
            "Trigger": {
                "Type": "AWS::Lambda::Function",
                "Properties": {
                    "Runtime": "python3.12",
                    "Handler": "index.handler",
                    "Role": role,
                    "Code": {"ZipFile": "def handler(event, context):\n    return None\n"},
                    "Environment": {"Variables": env},
                },
            },
        },
        "Outputs": {key: {"Value": value} for key, value in outputs.items()},
    }
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="ZeroShotClassification", TemplateBody=json.dumps(template)
    )


def _answer(body: dict) -> None:
    """Queue the body moto's InvokeEndpoint returns next."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.sagemakerruntime.models import sagemakerruntime_backends

    backend = sagemakerruntime_backends[DEFAULT_ACCOUNT_ID][REGION]
    backend.results_queue.append((json.dumps(body), "application/json", "AllTraffic", ""))


TRIGGER_ENV = {
    "JOB_NAME_PREFIX": "zs-batch",
    "BATCH_TARGETS": json.dumps(
        [
            {"instance_type": "ml.g4dn.xlarge", "model_name": "zs-gpu", "volume_kms_key": None},
            {"instance_type": "ml.m5.xlarge", "model_name": "zs-model", "volume_kms_key": "arn:aws:kms:k"},
        ]
    ),
    "INSTANCE_COUNT": "1",
    "MAX_CONCURRENT_JOBS": "2",
}


@pytest.fixture
def aws(monkeypatch):
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def _rows(checks):
    return {check.name: check for check in checks}


def test_quotas_come_from_the_trigger_and_the_endpoint_and_the_endpoint_is_invoked(aws):
    # Given a deployed stack whose trigger falls back from g4dn to m5, and a g4dn endpoint scaling to 3
    _deploy_stack_with_trigger_and_endpoint(TRIGGER_ENV)
    _answer({"sequence": doctor.ENDPOINT_TEXT, "labels": ["health", "career", "finance"], "scores": [0.7, 0.2, 0.1]})
    quotas, stubber = stubbed_quotas(
        [
            _quota("ml.g4dn.xlarge for transform job usage", "L-G4T", 0.0),
            _quota("ml.m5.xlarge for transform job usage", "L-M5T", 2.0),
            _quota("ml.g4dn.xlarge for endpoint usage", "L-G4E", 2.0),
        ]
    )
    stack = find_stack(aws, "ZeroShotClassification")
    clients = replace(doctor.Clients.of(aws), service_quotas=quotas)
    # When the doctor runs without the smoke file
    checks = doctor.run_checks(aws, stack, clients, smoke=False)
    stubber.assert_no_pending_responses()
    rows = _rows(checks)
    # Then the batch types are the trigger's, in its order: g4dn is short but the trigger falls back to m5
    assert rows["quota: batch ml.g4dn.xlarge"].state == doctor.WARN
    assert "jobs fall back to ml.m5.xlarge" in rows["quota: batch ml.g4dn.xlarge"].detail
    assert rows["quota: batch ml.m5.xlarge"].state == doctor.OK
    # the endpoint may scale to 3 g4dn instances, the quota allows 2
    endpoint_row = rows["quota: endpoint ml.g4dn.xlarge"]
    assert endpoint_row.state == doctor.FAIL
    assert "the endpoint may scale to 3" in endpoint_row.detail
    assert "servicequotas/home/services/sagemaker/quotas/L-G4E" in endpoint_row.fix
    assert rows["endpoint zs-endpoint answers"].state == doctor.OK
    assert rows["batch smoke file"].state == doctor.SKIP


def test_an_endpoint_answer_of_the_wrong_shape_fails_its_row(aws):
    _deploy_stack_with_trigger_and_endpoint(TRIGGER_ENV)
    _answer({"sequence": "x", "labels": ["health"], "scores": [1.0]})
    quotas, _ = stubbed_quotas([])
    stack = find_stack(aws, "ZeroShotClassification")
    checks = doctor.run_checks(aws, stack, replace(doctor.Clients.of(aws), service_quotas=quotas), smoke=False)
    row = _rows(checks)["endpoint zs-endpoint answers"]
    assert row.state == doctor.FAIL
    assert "'labels' should hold the candidates" in row.detail


def test_the_command_prints_one_table_and_exits_non_zero_when_a_check_fails(aws, zstc, monkeypatch):
    _deploy_stack_with_trigger_and_endpoint({**TRIGGER_ENV, "BATCH_TARGETS": "", "INSTANCE_TYPE": "ml.m5.xlarge"})
    _answer({"sequence": doctor.ENDPOINT_TEXT, "labels": ["health", "career", "finance"], "scores": [0.7, 0.2, 0.1]})
    # credentials not allowed to read quotas
    denied = boto3.client("service-quotas", region_name=REGION)
    stubber = Stubber(denied)
    stubber.add_client_error("list_service_quotas", "AccessDeniedException", "not authorized")
    stubber.activate()
    real_of = doctor.Clients.of
    monkeypatch.setattr(doctor.Clients, "of", classmethod(lambda cls, a: replace(real_of(a), service_quotas=denied)))
    result = zstc("doctor", "--no-smoke", "--region", REGION)
    assert result.code == 1, result.text
    assert "could not check" in result.text
    assert "grant servicequotas:ListServiceQuotas" in result.text
    assert "quota: batch ml.m5.xlarge" in result.text
    assert "check(s) do not hold" in result.text


def test_a_smoke_file_that_cannot_be_uploaded_is_a_failed_row_not_a_crash(aws):
    # Given a stack whose bucket is gone (or credentials that may not write to it)
    _deploy_stack_with_trigger_and_endpoint(TRIGGER_ENV, endpoint=False)
    quotas, _ = stubbed_quotas([_quota("ml.m5.xlarge for transform job usage", "L-M5T", 2.0)])
    stack = find_stack(aws, "ZeroShotClassification")
    clients = replace(doctor.Clients.of(aws), service_quotas=quotas)
    # When the doctor runs the smoke file
    checks = doctor.run_checks(aws, stack, clients, smoke=True, smoke_timeout=5, poll=0.1)
    # Then its row fails naming the cause, and the other rows are still there
    row = _rows(checks)["batch smoke file"]
    assert row.state == doctor.FAIL
    assert "NoSuchBucket" in row.detail
    assert "s3://zs-data/input/" in row.fix
    assert _rows(checks)["quota: batch ml.m5.xlarge"].state == doctor.OK


class FakeBatchPath:
    """Between the doctor's polls, does what the deployed batch path does with the smoke file: a transform job over a
    manifest, its output under the naming ``form``, and the job-outcome function's status record (or failure)."""

    def __init__(self, *, form: str = "base name", fail: bool = False, run: bool = True) -> None:
        self.s3 = boto3.client("s3", region_name=REGION)
        self.sagemaker = boto3.client("sagemaker", region_name=REGION)
        self.form, self.fail, self.run, self.done = form, fail, run, False

    def __call__(self, seconds: float) -> None:
        if self.done or not self.run:
            return
        keys = [o["Key"] for o in self.s3.list_objects_v2(Bucket="zs-data", Prefix="input/").get("Contents", [])]
        key = next(k for k in keys if "doctor-smoke" in k)
        relative = key.removeprefix("input/")
        job = "zs-batch-0123456789abcdef01234567"
        manifest = f"manifests/{job}.manifest"
        self.s3.put_object(
            Bucket="zs-data", Key=manifest, Body=json.dumps([{"prefix": "s3://zs-data/input/"}, relative])
        )
        self.sagemaker.create_transform_job(
            TransformJobName=job,
            ModelName="zs-model",
            TransformInput={
                "DataSource": {"S3DataSource": {"S3DataType": "ManifestFile", "S3Uri": f"s3://zs-data/{manifest}"}}
            },
            TransformOutput={"S3OutputPath": "s3://zs-data/output/"},
            TransformResources={"InstanceType": "ml.c5.xlarge", "InstanceCount": 1},
        )
        record: dict[str, object]
        if self.fail:
            record = {"job_name": job, "state": "Failed", "reason": "ClientError: See job logs for more information"}
            self.s3.put_object(Bucket="zs-data", Key=f"errors/{relative}.status.json", Body=json.dumps(record))
        else:
            name = {"relative key": relative, "base name": key.rsplit("/", 1)[-1], "full key": key}[self.form]
            lines = [json.dumps({"id": f"doctor-{i}", "labels": ["health"], "scores": [1.0]}) for i in (1, 2, 3)]
            self.s3.put_object(Bucket="zs-data", Key=f"output/{name}.out", Body="\n".join(lines) + "\n")
            record = {"job_name": job, "state": "Succeeded", "records": 3, "record_errors": 0}
            self.s3.put_object(Bucket="zs-data", Key=f"output/{relative}.status.json", Body=json.dumps(record))
        self.done = True


def _smoke(aws, batch_path: FakeBatchPath, timeout: float = 30.0):
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="zs-data")
    _deploy_stack_with_trigger_and_endpoint({"JOB_NAME_PREFIX": "other"}, endpoint=False)
    quotas, _ = stubbed_quotas([_quota("ml.c5.xlarge for transform job usage", "L-C5T", 0.0)])
    stack = find_stack(aws, "ZeroShotClassification")
    clients = replace(doctor.Clients.of(aws), service_quotas=quotas)
    return _rows(doctor.run_checks(aws, stack, clients, smoke_timeout=timeout, poll=0.01, sleep=batch_path))


@pytest.mark.parametrize("form", doctor.NAMING_FORMS)
def test_the_smoke_file_reports_the_output_naming_sagemaker_used_whatever_it_is(aws, form):
    rows = _smoke(aws, FakeBatchPath(form=form))
    assert rows["batch smoke file"].state == doctor.OK
    assert "Succeeded: 3 of 3 records" in rows["batch smoke file"].detail
    naming = rows["batch output naming"]
    assert naming.state == doctor.OK
    assert naming.detail.startswith(form + ":")
    assert "(job zs-batch-0123456789abcdef01234567)" in naming.detail
    # no trigger of this stack was found, so the quota row comes from the smoke job: c5 has quota 0
    quota = rows["quota: batch ml.c5.xlarge"]
    assert quota.state == doctor.FAIL
    assert "[configured in transform job zs-batch-0123456789abcdef01234567]" in quota.detail


def test_a_failed_smoke_file_gives_the_status_record_reason(aws):
    rows = _smoke(aws, FakeBatchPath(fail=True))
    row = rows["batch smoke file"]
    assert row.state == doctor.FAIL
    assert "ClientError: See job logs" in row.detail
    assert "s from drop to status" in row.detail


def test_a_smoke_file_nobody_picks_up_times_out_with_the_stage(aws):
    rows = _smoke(aws, FakeBatchPath(run=False), timeout=0.2)
    row = rows["batch smoke file"]
    assert row.state == doctor.FAIL
    assert "no status record after 0 s (no transform job started)" in row.detail
    assert "quota: batch" in rows and rows["quota: batch"].state == doctor.UNKNOWN


def test_no_smoke_file_is_dropped_when_no_batch_type_has_the_quota_for_one_job(aws):
    # Given a trigger configured with g4dn only, and a g4dn transform quota of 0
    boto3.client("s3", region_name=REGION).create_bucket(Bucket="zs-data")
    _deploy_stack_with_trigger_and_endpoint(
        {"JOB_NAME_PREFIX": "zs-batch", "INSTANCE_TYPE": "ml.g4dn.xlarge"}, endpoint=False
    )
    quotas, _ = stubbed_quotas([], [_quota("ml.g4dn.xlarge for transform job usage", "L-G4T", 0.0)])
    stack = find_stack(aws, "ZeroShotClassification")
    clients = replace(doctor.Clients.of(aws), service_quotas=quotas)
    rows = _rows(doctor.run_checks(aws, stack, clients, smoke=True, smoke_timeout=5, poll=0.01))
    # Then the quota row fails, the smoke file is skipped with the reason, and nothing was uploaded
    assert rows["quota: batch ml.g4dn.xlarge"].state == doctor.FAIL
    assert rows["batch smoke file"].state == doctor.SKIP
    assert "would wait in the queue" in rows["batch smoke file"].detail
    listed = boto3.client("s3", region_name=REGION).list_objects_v2(Bucket="zs-data", Prefix="input/")
    assert listed.get("KeyCount") == 0


# --- the smoke file through the local batch path ------------------------------------------------------------------


def test_the_smoke_file_reaches_its_status_record_and_the_output_naming_is_reported(pipeline, zstc, monkeypatch):
    # Given the batch path on moto server, and an account with enough transform quota for what the job uses
    s3 = pipeline.client("s3")
    quotas_applied = [
        _quota(f"{instance_type} for transform job usage", f"L-{n}", 4.0)
        for n, instance_type in enumerate(("ml.m5.xlarge", "ml.c5.xlarge", "ml.g4dn.xlarge"))
    ]
    client, stubber = stubbed_quotas(quotas_applied)
    real_of = doctor.Clients.of
    monkeypatch.setattr(doctor.Clients, "of", classmethod(lambda cls, a: replace(real_of(a), service_quotas=client)))
    # When the doctor runs, smoke file included
    result = zstc("doctor", "--stack", STACK, "--poll", "0.2", "--smoke-timeout", "240")
    # Then every check holds: the stack has no endpoint (skipped), the smoke file succeeded
    assert result.code == 0, result.text
    assert "All" in result.text and "checks hold" in result.text
    assert "Succeeded: 3 of 3 records" in result.text
    assert "s from drop to status" in result.text
    assert "the stack has no real-time endpoint" in result.text
    # the naming row names the form and the output object SageMaker (here the local runner) wrote
    line = next(line for line in result.out.splitlines() if "batch output naming" in line)
    assert any(form in result.text for form in doctor.NAMING_FORMS), line
    bucket = pipeline.resources.bucket
    outputs = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="output/").get("Contents", [])]
    produced = [key for key in outputs if "doctor-smoke" in key and key.endswith(".out")]
    in_job_folder = [key for key in produced if key.startswith("output/_jobs/")]
    assert len(in_job_folder) == 1 and len(produced) == 2  # what the job wrote, and its published copy
    assert f"s3://{bucket}/{in_job_folder[0]}" in result.text
    assert f"published as s3://{bucket}/{next(k for k in produced if k not in in_job_folder)}" in result.text
    # and the batch quota row was found from the smoke job itself (no trigger function in the local stack)
    assert "quota: batch ml." in result.text
    stubber.assert_no_pending_responses()
