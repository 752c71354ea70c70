"""``zstc doctor``'s pure parts and its quota checks against botocore's Stubber (moto has no SageMaker quotas)."""

from __future__ import annotations

import json

import boto3
import pytest
from botocore.stub import Stubber

from zstc.doctor import (
    FAIL,
    OK,
    UNKNOWN,
    WARN,
    BatchCapacity,
    QuotaTable,
    Variant,
    answer_problem,
    batch_capacity_from_env,
    batch_quota_checks,
    endpoint_quota_checks,
    match_output_naming,
    quota_check,
    read_quotas,
)

REGION = "eu-west-1"
INPUT = "input/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl"


# --- which output naming SageMaker used ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("produced", "form"),
    [
        (["output/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl.out"], "relative key"),
        (["output/doctor-smoke-20261201T210000Z-abcd1234.jsonl.out"], "base name"),
        (["output/input/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl.out"], "full key"),
    ],
)
def test_each_naming_form_is_recognised(produced, form):
    naming = match_output_naming(input_key=INPUT, source_prefix="input/", output_prefix="output/", produced=produced)
    assert naming.form == form
    assert naming.key == produced[0]
    assert naming.also == ()


def test_other_objects_under_the_output_prefix_do_not_match():
    produced = [
        "output/zstc/other-file.jsonl.out",
        "output/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl.status.json",
        "output/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl",  # no .out
    ]
    naming = match_output_naming(input_key=INPUT, source_prefix="input/", output_prefix="output/", produced=produced)
    assert naming.form is None and naming.key is None


def test_a_per_job_output_prefix_without_a_slash_is_a_folder():
    produced = ["output/job-1/zstc/doctor-smoke-20261201T210000Z-abcd1234.jsonl.out"]
    naming = match_output_naming(
        input_key=INPUT, source_prefix="input", output_prefix="output/job-1", produced=produced
    )
    assert naming.form == "relative key"


def test_forms_that_spell_the_same_key_are_reported_together():
    # an input right under the job's input prefix: relative key and base name coincide
    naming = match_output_naming(
        input_key="input/a.jsonl", source_prefix="input/", output_prefix="output/", produced=["output/a.jsonl.out"]
    )
    assert naming.form == "relative key"
    assert naming.also == ("base name",)


def test_an_input_outside_the_job_prefix_has_no_relative_form():
    naming = match_output_naming(
        input_key="elsewhere/x/a.jsonl",
        source_prefix="input/",
        output_prefix="output/",
        produced=["output/x/a.jsonl.out", "output/a.jsonl.out"],
    )
    assert naming.form == "base name"


# --- the endpoint's answer ---------------------------------------------------------------------------------------

LABELS = ("health", "finance", "career")
GOOD = {"sequence": "Drink water", "labels": ["health", "career", "finance"], "scores": [0.8, 0.15, 0.05]}


@pytest.mark.parametrize("body", [GOOD, [GOOD]])
def test_a_well_formed_answer_has_no_problem(body):
    assert answer_problem(json.dumps(body).encode(), LABELS) is None


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"body", "not JSON"),
        (b"[1, 2]", "expected one JSON object"),
        (json.dumps({"error": "too long"}).encode(), "the model answered an error: too long"),
        (json.dumps({**GOOD, "labels": ["health", "finance"]}).encode(), "'labels' should hold the candidates"),
        (json.dumps({**GOOD, "labels": ["health", "finance", "sports"]}).encode(), "'labels' should hold"),
        (json.dumps({**GOOD, "scores": [0.8, 0.2]}).encode(), "'scores' should be 3 probabilities"),
        (json.dumps({**GOOD, "scores": [0.8, 0.2, True]}).encode(), "'scores' should be 3"),
        (json.dumps({**GOOD, "scores": [1.5, 0.2, 0.1]}).encode(), "'scores' should be 3"),
        (b'{"sequence": "x", "labels": ["health", "finance", "career"], "scores": [NaN, 0.5, 0.5]}', "'scores'"),
    ],
)
def test_a_wrong_answer_names_what_is_wrong(body, problem):
    assert problem in (answer_problem(body, LABELS) or "")


# --- what the trigger is configured with -----------------------------------------------------------------------


def test_capacity_from_the_trigger_targets_keeps_their_order():
    env = {
        "BATCH_TARGETS": json.dumps(
            [
                {"instance_type": "ml.g4dn.xlarge", "model_name": "gpu", "volume_kms_key": None},
                {"instance_type": "ml.m5.xlarge", "model_name": "cpu", "volume_kms_key": "arn:k"},
            ]
        ),
        "INSTANCE_COUNT": "2",
        "MAX_CONCURRENT_JOBS": "3",
    }
    capacity = batch_capacity_from_env(env, "trigger")
    assert capacity == BatchCapacity(
        instance_types=("ml.g4dn.xlarge", "ml.m5.xlarge"), instance_count=2, max_concurrent_jobs=3, source="trigger"
    )


def test_capacity_from_the_single_instance_type_of_earlier_versions():
    capacity = batch_capacity_from_env({"INSTANCE_TYPE": "ml.c5.2xlarge"}, "trigger")
    assert capacity is not None
    assert capacity.instance_types == ("ml.c5.2xlarge",)
    assert (capacity.instance_count, capacity.max_concurrent_jobs) == (1, 1)


@pytest.mark.parametrize("env", [{}, {"BATCH_TARGETS": "not json"}, {"BATCH_TARGETS": "[]"}, {"OTHER": "x"}])
def test_an_environment_without_instance_types_gives_none(env):
    assert batch_capacity_from_env(env, "f") is None


# --- quotas against Stubber ----------------------------------------------------------------------------------------


def _quota(name: str, code: str, value: float) -> dict:
    return {"ServiceCode": "sagemaker", "QuotaName": name, "QuotaCode": code, "Value": value}


@pytest.fixture
def quotas_client():
    client = boto3.client(
        "service-quotas", region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing"
    )
    with Stubber(client) as stubber:
        yield client, stubber
        stubber.assert_no_pending_responses()


def _stub_tables(stubber: Stubber, applied: list[dict], defaults: list[dict]) -> None:
    stubber.add_response("list_service_quotas", {"Quotas": applied}, {"ServiceCode": "sagemaker"})
    stubber.add_response("list_aws_default_service_quotas", {"Quotas": defaults}, {"ServiceCode": "sagemaker"})


def test_applied_values_win_over_defaults_and_pages_are_followed(quotas_client):
    client, stubber = quotas_client
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": [_quota("ml.m5.xlarge for transform job usage", "L-M5", 4.0)], "NextToken": "page2"},
        {"ServiceCode": "sagemaker"},
    )
    stubber.add_response(
        "list_service_quotas",
        {"Quotas": [_quota("ml.g5.xlarge for endpoint usage", "L-G5E", 1.0)]},
        {"ServiceCode": "sagemaker", "NextToken": "page2"},
    )
    stubber.add_response(
        "list_aws_default_service_quotas",
        {
            "Quotas": [
                _quota("ml.m5.xlarge for transform job usage", "L-M5", 20.0),
                _quota("ml.g4dn.xlarge for transform job usage", "L-G4", 0.0),
            ]
        },
        {"ServiceCode": "sagemaker"},
    )
    table = read_quotas(client)
    assert table.error is None and table.complete
    assert table.quotas["ml.m5.xlarge for transform job usage"].value == 4.0
    assert table.quotas["ml.m5.xlarge for transform job usage"].applied
    assert table.quotas["ml.g5.xlarge for endpoint usage"].value == 1.0
    assert not table.quotas["ml.g4dn.xlarge for transform job usage"].applied


def _check(table: QuotaTable, need: int = 1, want: int | None = None, **kwargs):
    return quota_check(
        table,
        check_name="quota: batch ml.g4dn.xlarge",
        quota_name="ml.g4dn.xlarge for transform job usage",
        need=need,
        want=want,
        region=REGION,
        **kwargs,
    )


def test_a_quota_of_zero_fails_with_the_console_link_to_raise_it(quotas_client):
    client, stubber = quotas_client
    _stub_tables(stubber, [], [_quota("ml.g4dn.xlarge for transform job usage", "L-G4DN", 0.0)])
    check = _check(read_quotas(client))
    assert check.state == FAIL
    assert "'ml.g4dn.xlarge for transform job usage' is 0 (AWS default); one job needs 1 instance(s)" in check.detail
    assert "https://eu-west-1.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/L-G4DN" in check.fix


def test_a_quota_below_the_instance_count_fails(quotas_client):
    client, stubber = quotas_client
    _stub_tables(stubber, [_quota("ml.g4dn.xlarge for transform job usage", "L-G4DN", 1.0)], [])
    check = _check(read_quotas(client), need=2)
    assert check.state == FAIL
    assert "is 1; one job needs 2" in check.detail
    assert check.fix.startswith("request 2 or more (L-G4DN)")


def test_a_quota_enough_for_one_job_but_not_for_all_at_once_warns(quotas_client):
    client, stubber = quotas_client
    _stub_tables(stubber, [_quota("ml.g4dn.xlarge for transform job usage", "L-G4DN", 2.0)], [])
    check = _check(read_quotas(client), need=2, want=4)
    assert check.state == WARN
    assert "not for 4 at once" in check.detail


def test_a_quota_that_covers_the_need_holds(quotas_client):
    client, stubber = quotas_client
    _stub_tables(stubber, [_quota("ml.g4dn.xlarge for transform job usage", "L-G4DN", 4.0)], [])
    check = _check(read_quotas(client), need=2, want=4)
    assert check.state == OK
    assert not check.failing


def test_a_missing_quota_means_the_type_is_not_offered_for_that_use_here(quotas_client):
    client, stubber = quotas_client
    _stub_tables(stubber, [], [_quota("ml.m5.xlarge for transform job usage", "L-M5", 20.0)])
    check = _check(read_quotas(client))
    assert check.state == FAIL
    assert "no quota named 'ml.g4dn.xlarge for transform job usage' in eu-west-1" in check.detail


def test_a_missing_quota_when_the_defaults_cannot_be_listed_proves_nothing(quotas_client):
    client, stubber = quotas_client
    stubber.add_response("list_service_quotas", {"Quotas": []}, {"ServiceCode": "sagemaker"})
    stubber.add_client_error("list_aws_default_service_quotas", "AccessDeniedException", "not allowed")
    table = read_quotas(client)
    assert not table.complete
    check = _check(table)
    assert check.state == UNKNOWN
    assert "servicequotas:ListAWSDefaultServiceQuotas" in check.fix


def test_access_denied_is_a_could_not_check_row_naming_the_permission(quotas_client):
    client, stubber = quotas_client
    stubber.add_client_error("list_service_quotas", "AccessDeniedException", "User is not authorized")
    check = _check(read_quotas(client))
    assert check.state == UNKNOWN
    assert check.failing
    assert "grant servicequotas:ListServiceQuotas" in check.fix


def test_another_error_is_a_could_not_check_row_with_its_message(quotas_client):
    client, stubber = quotas_client
    stubber.add_client_error("list_service_quotas", "ServiceException", "try later", http_status_code=500)
    check = _check(read_quotas(client))
    assert check.state == UNKNOWN
    assert "ServiceException: try later" in check.detail


def _table(**values: float) -> QuotaTable:
    from zstc.doctor import Quota

    quotas = {}
    for code, (name, value) in enumerate(values.items()):
        quota_name = f"ml.{name.replace('_', '.')} for transform job usage"
        quotas[quota_name] = Quota(quota_name, f"L-{code}", value, True)
    return QuotaTable(quotas=quotas)


def test_a_short_batch_type_only_warns_while_the_trigger_can_fall_back_to_another():
    capacity = BatchCapacity(
        instance_types=("ml.g4dn.xlarge", "ml.m5.xlarge"), instance_count=1, max_concurrent_jobs=1, source="t"
    )
    rows = batch_quota_checks(_table(g4dn_xlarge=0, m5_xlarge=2), capacity, REGION)
    assert [(r.name, r.state) for r in rows] == [
        ("quota: batch ml.g4dn.xlarge", WARN),
        ("quota: batch ml.m5.xlarge", OK),
    ]
    assert "jobs fall back to ml.m5.xlarge" in rows[0].detail


def test_every_batch_type_short_fails_every_row():
    capacity = BatchCapacity(
        instance_types=("ml.g4dn.xlarge", "ml.m5.xlarge"), instance_count=2, max_concurrent_jobs=1, source="t"
    )
    rows = batch_quota_checks(_table(g4dn_xlarge=0, m5_xlarge=1), capacity, REGION)
    assert [r.state for r in rows] == [FAIL, FAIL]


def test_endpoint_rows_use_the_autoscaling_maximum_and_the_serverless_concurrency():
    from zstc.doctor import ENDPOINT_QUOTA, SERVERLESS_CONCURRENCY_QUOTA, Quota

    table = QuotaTable(
        quotas={
            ENDPOINT_QUOTA.format("ml.g5.xlarge"): Quota("g5", "L-G5", 2.0, True),
            SERVERLESS_CONCURRENCY_QUOTA: Quota("sc", "L-SC", 10.0, False),
        }
    )
    rows = endpoint_quota_checks(table, [Variant("AllTraffic", "ml.g5.xlarge", 4), Variant("S", None, 5)], REGION)
    assert [r.state for r in rows] == [FAIL, OK]
    assert "is 2; the endpoint may scale to 4 instance(s)" in rows[0].detail


def test_an_endpoint_quota_without_room_for_an_update_warns():
    from zstc.doctor import ENDPOINT_QUOTA, Quota

    table = QuotaTable(quotas={ENDPOINT_QUOTA.format("ml.m5.xlarge"): Quota("m5", "L-M5E", 4.0, True)})
    [row] = endpoint_quota_checks(table, [Variant("AllTraffic", "ml.m5.xlarge", 3)], REGION)
    assert row.state == WARN
    assert "not for 6 during an update" in row.detail
    [enough] = endpoint_quota_checks(table, [Variant("AllTraffic", "ml.m5.xlarge", 2)], REGION)
    assert enough.state == OK


def test_an_encrypted_trigger_environment_falls_back_to_the_newest_job_and_says_why():
    from zstc.doctor import find_batch_capacity
    from zstc.stack import StackOutputs

    def client(service: str):
        return boto3.client(service, region_name=REGION, aws_access_key_id="testing", aws_secret_access_key="testing")

    cloudformation, lambda_, sagemaker = client("cloudformation"), client("lambda"), client("sagemaker")
    stack = StackOutputs(
        stack_name="S",
        region=REGION,
        bucket="b",
        input_prefix="input/",
        output_prefix="output/",
        errors_prefix="errors/",
        model_name="m",
        queue_url="q",
        dead_letter_queue_url="d",
        transform_job_prefix="s-batch",
    )
    summary = {
        "LogicalResourceId": "Trigger",
        "PhysicalResourceId": "S-Trigger-1",
        "ResourceType": "AWS::Lambda::Function",
        "LastUpdatedTimestamp": "2026-12-01T00:00:00Z",
        "ResourceStatus": "CREATE_COMPLETE",
    }
    error = {"ErrorCode": "KMSAccessDeniedException", "Message": "Lambda was unable to decrypt"}
    with Stubber(cloudformation) as cf, Stubber(lambda_) as lam, Stubber(sagemaker) as sm:
        cf.add_response("list_stack_resources", {"StackResourceSummaries": [summary]}, {"StackName": "S"})
        lam.add_response(
            "get_function_configuration", {"Environment": {"Error": error}}, {"FunctionName": "S-Trigger-1"}
        )
        sm.add_response(
            "list_transform_jobs",
            {"TransformJobSummaries": []},
            {"NameContains": "s-batch", "SortBy": "CreationTime", "SortOrder": "Descending", "MaxResults": 1},
        )
        capacity, note = find_batch_capacity(
            cloudformation=cloudformation, lambda_=lambda_, sagemaker=sagemaker, stack=stack
        )
    assert capacity is None
    assert "KMSAccessDeniedException: needs kms:Decrypt" in note
    assert "no transform job of prefix s-batch yet" in note
