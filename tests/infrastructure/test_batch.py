"""The batch path's resources: queue/DLQ/mapping settings, the rule, the claims table, the topic and IAM scope."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_lambda as lambda_
from aws_cdk.assertions import Match

from functions.batch_trigger import logic as batch_trigger_logic
from stacks import batch, batch_trigger
from zstc_contract import backoff


def statements_of(s: Any, function_logical_prefix: str) -> list[dict[str, Any]]:
    """Statements of the policies attached to the role of the function whose logical id starts with the prefix."""
    functions = {k: v for k, v in s.resources("AWS::Lambda::Function").items() if k.startswith(function_logical_prefix)}
    assert len(functions) == 1, functions.keys()
    role = next(iter(functions.values()))["Properties"]["Role"]["Fn::GetAtt"][0]
    found = []
    for policy in s.resources("AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return found


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def plain(value: Any) -> str:
    """A synthesized string value with each CloudFormation reference replaced by ``ref-<what it names>``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return separator.join(plain(p) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return f"ref-{value['Ref']}"
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return "ref-" + ".".join(value["Fn::GetAtt"])
    return "x"


def env_of(s: Any, prefix: str) -> dict[str, Any]:
    fn = next(v for k, v in s.resources("AWS::Lambda::Function").items() if k.startswith(prefix))
    return fn["Properties"]["Environment"]["Variables"]


def test_the_batch_path_synthesizes_with_the_compliance_packs(synth):
    # Given the default configuration / When synthesized (cdk-nag runs in app.synth())
    s = synth()
    # Then it has its two functions, queues, table, rule and topic
    assert len([k for k in s.resources("AWS::Lambda::Function") if k.startswith("Batch")]) == 2
    assert len([k for k in s.resources("AWS::SQS::Queue") if k.startswith("Batch")]) == 3
    s.template.resource_count_is("AWS::DynamoDB::Table", 1)


# The logical ids of the deployed batch resources: a changed id makes CloudFormation replace the resource (a new,
# empty queue, claims table or topic). Splitting or moving the units must keep these.
DEPLOYED_IDS = {
    "BatchClaimsB7AED848": "AWS::DynamoDB::Table",
    "BatchDeadLetterQueueF9DFFFE6": "AWS::SQS::Queue",
    "BatchQueue00F466B7": "AWS::SQS::Queue",
    "BatchOutcomeDeadLetterQueueD0C3DB2D": "AWS::SQS::Queue",
    "BatchFailureTopic300C5089": "AWS::SNS::Topic",
    "BatchJobStateRuleBE81420E": "AWS::Events::Rule",
    "BatchTrigger8D9E9196": "AWS::Lambda::Function",
    "BatchOutcome0B8DB508": "AWS::Lambda::Function",
    "BatchTriggerLogs8C332DE5": "AWS::Logs::LogGroup",
    "BatchOutcomeLogsC53E21C4": "AWS::Logs::LogGroup",
    "BatchTriggerRole4275A133": "AWS::IAM::Role",
    "BatchOutcomeRoleE256F8C6": "AWS::IAM::Role",
}


@pytest.mark.parametrize(
    "overrides",
    [{}, {"vpc": True, "endpoint_mode": "provisioned"}, {"batch_instance_types": "ml.g4dn.xlarge,ml.m5.xlarge"}],
)
def test_the_batch_resources_keep_their_deployed_logical_ids(synth, overrides):
    resources = synth(**overrides).raw["Resources"]
    assert {k: resources[k]["Type"] for k in DEPLOYED_IDS if k in resources} == DEPLOYED_IDS


def test_queue_visibility_covers_six_function_timeouts_plus_the_window(synth):
    s = synth()
    queue = next(v for k, v in s.resources("AWS::SQS::Queue").items() if k.startswith("BatchQueue"))
    trigger_timeout = next(v for k, v in s.resources("AWS::Lambda::Function").items() if k.startswith("BatchTrigger"))[
        "Properties"
    ]["Timeout"]
    props = queue["Properties"]
    assert props["VisibilityTimeout"] >= 6 * trigger_timeout + s.stack.settings.batch_window_seconds
    assert props["MessageRetentionPeriod"] == 14 * 86400
    assert "KmsMasterKeyId" in props


def test_messages_reach_the_dlq_only_after_the_patience(synth):
    # Given the default patience (24 h)
    s = synth()
    queue = next(v for k, v in s.resources("AWS::SQS::Queue").items() if k.startswith("BatchQueue"))
    receives = queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    env = env_of(s, "BatchTrigger")
    base, maximum = int(env["BACKOFF_BASE_SECONDS"]), int(env["BACKOFF_MAX_SECONDS"])
    # Then the function's backoff over maxReceiveCount - 1 deferrals is at least 24 hours
    waited = sum(backoff.backoff_seconds(n, base=base, maximum=maximum) for n in range(1, receives))
    assert waited >= 24 * 3600
    assert receives == backoff.receives_for_patience(24 * 3600, base=base, maximum=maximum)


@pytest.mark.parametrize("hours", [1, 24, 336])
def test_the_dlq_keeps_long_patience_within_a_thousand_receives(synth, hours):
    # The stack and the trigger share one backoff arithmetic (zstc_contract.backoff): no mirror to keep equal.
    s = synth(batch_patience_hours=hours)
    queue = next(v for k, v in s.resources("AWS::SQS::Queue").items() if k.startswith("BatchQueue"))
    receives = queue["Properties"]["RedrivePolicy"]["maxReceiveCount"]
    env = env_of(s, "BatchTrigger")
    base, maximum = int(env["BACKOFF_BASE_SECONDS"]), int(env["BACKOFF_MAX_SECONDS"])
    assert receives == backoff.receives_for_patience(hours * 3600, base=base, maximum=maximum) <= 1000


@pytest.mark.parametrize("window", [None, 45])
def test_event_source_mapping_reports_partial_failures_with_the_window(synth, cdk_context, window):
    # The window is the configured one (cdk.json's default, or -c batch_window_seconds=45), nothing else
    s = synth() if window is None else synth(batch_window_seconds=window)
    mapping = s.only("AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert mapping["MaximumBatchingWindowInSeconds"] == s.stack.settings.batch_window_seconds
    assert mapping["MaximumBatchingWindowInSeconds"] == (window or cdk_context["batch_window_seconds"])
    assert mapping["BatchSize"] == 1000


def test_window_zero_maps_small_batches_without_a_window(synth):
    s = synth(batch_window_seconds=0)
    mapping = s.only("AWS::Lambda::EventSourceMapping")["Properties"]
    assert mapping["BatchSize"] == 10 and "MaximumBatchingWindowInSeconds" not in mapping
    assert env_of(s, "BatchTrigger")["BATCH_WINDOW_SECONDS"] == "0"


def test_the_bucket_notifies_the_queue_for_every_key_under_input(synth):
    # every suffix: the trigger gives a file it cannot read a "not supported" status instead of S3 dropping it
    s = synth()
    notifications = s.only("Custom::S3BucketNotifications")["Properties"]["NotificationConfiguration"]
    (config,) = notifications["QueueConfigurations"]
    rules = {r["Name"]: r["Value"] for r in config["Filter"]["Key"]["FilterRules"]}
    assert rules == {"prefix": "input/"}
    assert config["Events"] == ["s3:ObjectCreated:*"]


def key_statements(s: Any, service: str) -> list[dict[str, Any]]:
    statements = s.only("AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    return [st for st in statements if st.get("Principal") == {"Service": service}]


@pytest.mark.parametrize("overrides", [{}, {"vpc": True, "endpoint_mode": "provisioned"}])
def test_the_key_lets_s3_notify_the_queue_with_the_documented_statement(synth, overrides):
    # The statement AWS documents for S3 event notifications to an SSE-KMS queue: the S3 principal, GenerateDataKey
    # and Decrypt, on the key, without a condition (a condition may make S3 refuse the notification configuration)
    (statement,) = key_statements(synth(**overrides), "s3.amazonaws.com")
    assert statement["Effect"] == "Allow" and statement["Resource"] == "*"
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert "Condition" not in statement
    # and the queue policy is what binds the notifications to this bucket and account
    s = synth(**overrides)
    queue = logical_id_of(s, "AWS::SQS::Queue", "BatchQueue")
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in s.resources("AWS::SQS::QueuePolicy").values()
        if p["Properties"]["Queues"] == [{"Ref": queue}]
    ]
    (allow,) = [st for st in policy if st["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "s3.amazonaws.com"}
    notified = s.only("Custom::S3BucketNotifications")["Properties"]["BucketName"]["Ref"]
    assert allow["Condition"]["ArnLike"] == {"aws:SourceArn": {"Fn::GetAtt": [notified, "Arn"]}}
    assert allow["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_eventbridge_may_use_the_key_only_to_dead_letter_job_events(synth):
    # Its one statement is for the outcome rule's SSE-KMS dead-letter queue, bound to the account
    s = synth()
    (statement,) = key_statements(s, "events.amazonaws.com")
    assert statement["Sid"] == "AllowEventBridgeToDeadLetterJobEvents"
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey"]
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}
    (target,) = s.only("AWS::Events::Rule")["Properties"]["Targets"]
    dlq = logical_id_of(s, "AWS::SQS::Queue", "BatchOutcomeDeadLetterQueue")
    assert target["DeadLetterConfig"]["Arn"] == {"Fn::GetAtt": [dlq, "Arn"]}
    assert "KmsMasterKeyId" in s.resources("AWS::SQS::Queue")[dlq]["Properties"]


def test_only_the_batch_functions_iam_roles_can_publish_failures(synth):
    s = synth()
    topic = {"Ref": logical_id_of(s, "AWS::SNS::Topic", "BatchFailureTopic")}
    # No service principal (EventBridge or other) may publish: the topic policy only denies plain HTTP
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in s.resources("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [topic]
    ]
    assert [st["Effect"] for st in policy] == ["Deny"]
    assert policy[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    # and of the stack's roles, only the outcome function's and the trigger's (notices of files it refuses or gives
    # up on) are granted sns:Publish on it
    publishers = set()
    for policy_resource in s.resources("AWS::IAM::Policy").values():
        for st in policy_resource["Properties"]["PolicyDocument"]["Statement"]:
            if "sns:Publish" in as_list(st["Action"]) and topic in as_list(st["Resource"]):
                publishers.update(r["Ref"] for r in policy_resource["Properties"]["Roles"])
    functions = s.resources("AWS::Lambda::Function")
    assert publishers == {
        functions[logical_id_of(s, "AWS::Lambda::Function", name)]["Properties"]["Role"]["Fn::GetAtt"][0]
        for name in ("BatchOutcome", "BatchTrigger")
    }


def logical_id_of(s: Any, kind: str, prefix: str) -> str:
    (found,) = [k for k in s.resources(kind) if k.startswith(prefix)]
    return found


def test_the_claims_table_is_encrypted_recoverable_and_expiring(synth):
    synth().template.has_resource_properties(
        "AWS::DynamoDB::Table",
        {
            "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": Match.any_value()},
            "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
            "TimeToLiveSpecification": {"AttributeName": "expires_at", "Enabled": True},
        },
    )


def test_the_rule_matches_only_this_stacks_finished_jobs(synth):
    s = synth()
    pattern = s.only("AWS::Events::Rule")["Properties"]["EventPattern"]
    assert pattern["source"] == ["aws.sagemaker"]
    assert pattern["detail-type"] == ["SageMaker Transform Job State Change"]
    assert sorted(pattern["detail"]["TransformJobStatus"]) == ["Completed", "Failed", "Stopped"]
    assert pattern["detail"]["TransformJobName"] == [{"prefix": "zeroshotclassification-batch-"}]


def test_the_failure_topic_is_encrypted(synth):
    synth().template.has_resource_properties("AWS::SNS::Topic", {"KmsMasterKeyId": Match.any_value()})


def test_transform_jobs_can_only_be_created_with_this_stacks_prefix(synth):
    s = synth()
    creating = [
        st for st in statements_of(s, "BatchTrigger") if "sagemaker:CreateTransformJob" in as_list(st["Action"])
    ]
    assert len(creating) == 1
    (resource,) = as_list(creating[0]["Resource"])
    assert json.dumps(resource).endswith(':transform-job/zeroshotclassification-batch-*"]]}')


FALLBACK = {"batch_instance_types": "ml.g4dn.xlarge,ml.m5.xlarge"}


def models(s: Any) -> dict[str, dict[str, Any]]:
    return s.resources("AWS::SageMaker::Model")


def family_of(model: dict[str, Any]) -> str:
    return model["Properties"]["PrimaryContainer"]["Image"]["Fn::FindInMap"][2]


def test_one_model_per_container_family_of_the_instance_types(synth):
    # Given a GPU type then a CPU type (no endpoint, so only batch models)
    s = synth(**FALLBACK, endpoint_mode="none")
    # Then there is one GPU and one CPU model, and the first type's keeps the construct id "Model"
    assert sorted(family_of(m) for m in models(s).values()) == ["cpu", "gpu"]
    first = next(m for k, m in models(s).items() if k.startswith("Model") and not k.startswith("ModelM5"))
    assert family_of(first) == "gpu"
    # and a single type (the default) has one model
    assert len(models(synth(endpoint_mode="none"))) == 1


def test_two_types_of_one_family_and_environment_share_their_model(synth):
    # g5 and g6 (xlarge): the same GPU container, worker count, threads and token budget
    s = synth(batch_instance_types="ml.g5.xlarge,ml.g6.xlarge", endpoint_mode="none")
    assert [family_of(m) for m in models(s).values()] == ["gpu"]


def test_types_whose_handler_settings_differ_get_a_model_each(synth):
    # g4dn (T4) and g5 (A10G) take different token budgets per forward pass
    s = synth(batch_instance_types="ml.g4dn.xlarge,ml.g5.xlarge", endpoint_mode="none")
    budgets = sorted(
        m["Properties"]["PrimaryContainer"]["Environment"]["ZSTC_MAX_BATCH_TOKENS"] for m in models(s).values()
    )
    assert [family_of(m) for m in models(s).values()] == ["gpu", "gpu"] and budgets[0] != budgets[1]


def test_the_trigger_gets_each_types_model_and_volume_key_decision_in_order(synth):
    s = synth(**FALLBACK, endpoint_mode="none")
    # The value is JSON whose model names and key ARN are CloudFormation references
    targets = json.loads(plain(env_of(s, "BatchTrigger")["BATCH_TARGETS"]))
    assert [t["instance_type"] for t in targets] == ["ml.g4dn.xlarge", "ml.m5.xlarge"]
    assert targets[0].get("volume_kms_key") is None  # g4dn has NVMe instance storage (CDK drops the null)
    assert targets[1]["volume_kms_key"].startswith("ref-EncryptionKey")
    # and each target names the model of its family
    gpu_id = next(k for k, m in models(s).items() if family_of(m) == "gpu")
    cpu_id = next(k for k, m in models(s).items() if family_of(m) == "cpu")
    assert targets[0]["model_name"] == f"ref-{gpu_id}.ModelName"
    assert targets[1]["model_name"] == f"ref-{cpu_id}.ModelName"


def test_transform_jobs_can_only_use_this_stacks_models_and_instance_types(synth):
    s = synth(**FALLBACK, endpoint_mode="none")
    (creating,) = [
        st for st in statements_of(s, "BatchTrigger") if "sagemaker:CreateTransformJob" in as_list(st["Action"])
    ]
    assert as_list(creating["Action"]) == ["sagemaker:CreateTransformJob"]
    arns = creating["Condition"]["ArnEquals"]["sagemaker:ModelArn"]
    assert sorted(a["Ref"] for a in arns) == sorted(models(s))
    assert creating["Condition"]["ForAllValues:StringEquals"]["sagemaker:InstanceTypes"] == [
        "ml.g4dn.xlarge",
        "ml.m5.xlarge",
    ]
    # the endpoint's own model (serverless here) is in the endpoint's stack, out of the trigger's reach
    s2 = synth(**FALLBACK)
    (creating2,) = [
        st for st in statements_of(s2, "BatchTrigger") if "sagemaker:CreateTransformJob" in as_list(st["Action"])
    ]
    assert sorted(a["Ref"] for a in creating2["Condition"]["ArnEquals"]["sagemaker:ModelArn"]) == sorted(models(s2))
    assert len(models(s2)) == 2 and len(models(s2.endpoint)) == 1


def test_the_fallback_configuration_passes_the_compliance_packs(synth):
    # synth() runs cdk-nag (AwsSolutions, HIPAA, NIST): an unacknowledged finding raises
    s = synth(**FALLBACK)
    assert len(models(s)) == 2  # GPU and CPU batch models
    assert len(models(s.endpoint)) == 1  # the serverless endpoint's model, in the endpoint's stack


def test_pass_role_is_only_for_the_execution_role_and_sagemaker(synth):
    s = synth()
    passing = [st for st in statements_of(s, "BatchTrigger") if "iam:PassRole" in as_list(st["Action"])]
    assert len(passing) == 1
    assert passing[0]["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}
    (resource,) = as_list(passing[0]["Resource"])
    assert "ExecutionRole" in json.dumps(resource)


def test_no_batch_function_gets_a_wildcard_action_or_bucket_wide_write(synth):
    s = synth()
    for prefix in ("BatchTrigger", "BatchOutcome"):
        for st in statements_of(s, prefix):
            assert not any(a.endswith(":*") or a == "*" for a in as_list(st["Action"])), st
            if "s3:PutObject" in as_list(st["Action"]):
                assert all("/input/" not in json.dumps(r) for r in as_list(st["Resource"])), st


def test_functions_have_encrypted_logs_with_retention_and_the_powertools_layer(synth):
    s = synth()
    groups = [v for k, v in s.resources("AWS::Logs::LogGroup").items() if k.startswith("Batch")]
    assert len(groups) == 2
    assert all("KmsKeyId" in g["Properties"] and g["Properties"]["RetentionInDays"] == 365 for g in groups)
    layers = json.dumps(
        [v["Properties"]["Layers"] for k, v in s.resources("AWS::Lambda::Function").items() if k.startswith("Batch")]
    )
    parameters = json.dumps(s.raw.get("Parameters", {}))
    assert "/aws/service/powertools/python/x86_64/python3.13/3.22.1" in parameters and "Ref" in layers


def test_the_function_settings_are_valid_for_the_runtime(synth):
    # Given the trigger's environment as synthesized (tokens replaced by plausible values)
    for overrides in ({}, FALLBACK):
        env = {k: plain(v) for k, v in env_of(synth(**overrides), "BatchTrigger").items()}
        env["QUEUE_URL"] = "https://sqs/x"
        # Then the function's own validation accepts it
        settings = batch_trigger_logic.TriggerSettings.from_env(env)
        assert settings.job_name_prefix == "zeroshotclassification-batch"
        assert settings.max_payload_mb * settings.max_concurrent_transforms <= 100
        assert [t.instance_type for t in settings.targets] == list(
            synth(**overrides).stack.settings.batch_instance_types
        )


def test_stack_outputs_name_the_queue_dlq_and_job_prefix(synth):
    outputs = synth().raw["Outputs"]
    assert {"QueueUrl", "DeadLetterQueueUrl", "TransformJobPrefix"} <= set(outputs)


@pytest.mark.parametrize(
    ("stack_name", "prefix"),
    [
        ("ZeroShotClassification", "zeroshotclassification-batch"),
        ("My_Stack--2", "my-stack-2-batch"),
        ("A" * 128, "a" * 24 + "-batch"),
    ],
)
def test_job_name_prefixes_are_valid_for_the_function(stack_name, prefix):
    assert batch.job_name_prefix(stack_name) == prefix
    assert batch_trigger_logic.JOB_PREFIX.match(prefix)


def test_hub_models_get_single_record_jobs_and_packaged_models_multi_record(synth) -> None:
    # The stock handler of model_source=hub takes one application/json record per request; ours takes mini-batches.
    def strategy(s) -> str:
        (trigger,) = [f for k, f in s.resources("AWS::Lambda::Function").items() if k.startswith("BatchTrigger")]
        return trigger["Properties"]["Environment"]["Variables"]["BATCH_STRATEGY"]

    assert strategy(synth()) == "MultiRecord"
    assert strategy(synth(model_source="hub")) == "SingleRecord"


def test_functions_ship_their_package_and_the_contract_layer(tmp_path: Path) -> None:
    """Each function's archive is its package (handler ``<name>.handler.handler``); the layer holds zstc_contract."""
    from stacks.code_assets import contract_layer, function_code, function_handler

    app = cdk.App(outdir=str(tmp_path))
    stack = cdk.Stack(app, "Assets")
    lambda_.Function(
        stack,
        "Fn",
        runtime=lambda_.Runtime.PYTHON_3_13,
        handler=function_handler("batch_trigger"),
        code=function_code("batch_trigger"),
        layers=[contract_layer(stack, "Contract")],
    )
    app.synth()
    assets = sorted(p for p in tmp_path.iterdir() if p.name.startswith("asset.") and p.is_dir())
    contents = {str(f.relative_to(a)) for a in assets for f in a.rglob("*.py")}
    assert "batch_trigger/handler.py" in contents and "batch_trigger/logic.py" in contents
    assert "python/zstc_contract/__init__.py" in contents
    assert not any("__pycache__" in c for c in contents)


# --- the units' methods (what monitoring and the units use instead of reading CloudFormation properties) ----------


def resolved_dimensions(s: Any, metric: Any) -> dict[str, Any]:
    return {k: s.stack.resolve(v) for k, v in metric.dimensions.items()}


def test_function_metrics_are_on_their_own_function(synth):
    s = synth()
    b = s.stack.batch
    period = cdk.Duration.minutes(5)
    for unit, prefix in ((b.trigger, "BatchTrigger"), (b.outcome, "BatchOutcome")):
        function = {"Ref": logical_id_of(s, "AWS::Lambda::Function", prefix)}
        for metric, name, statistic in (
            (unit.metric_errors(period=period, label="e"), "Errors", "Sum"),
            (unit.metric_invocations(period=period, label="i"), "Invocations", "Sum"),
            (unit.metric_throttles(period=period, label="t"), "Throttles", "Sum"),
            (unit.metric_duration("p99", period=period, label="d"), "Duration", "p99"),
        ):
            assert (metric.namespace, metric.metric_name, metric.statistic) == ("AWS/Lambda", name, statistic)
            assert resolved_dimensions(s, metric) == {"FunctionName": function}
        # Powertools metrics: the namespace and service the function's environment gives Powertools
        env = env_of(s, prefix)
        custom = unit.metric("JobsFailed", period=period)
        assert (custom.namespace, custom.metric_name, custom.statistic) == (
            env["POWERTOOLS_METRICS_NAMESPACE"],
            "JobsFailed",
            "Sum",
        )
        assert custom.dimensions == {"service": env["POWERTOOLS_SERVICE_NAME"]}
        assert unit.timeout_ms == s.resources("AWS::Lambda::Function")[function["Ref"]]["Properties"]["Timeout"] * 1000
        assert s.stack.resolve(unit.log_group.log_group_name) == {
            "Ref": logical_id_of(s, "AWS::Logs::LogGroup", f"{prefix}Logs")
        }
    assert b.trigger.service != b.outcome.service


def test_queue_metrics_are_on_their_own_queue(synth):
    s = synth()
    b = s.stack.batch
    period = cdk.Duration.minutes(5)

    def queue(prefix: str) -> dict[str, Any]:
        return {"QueueName": {"Fn::GetAtt": [logical_id_of(s, "AWS::SQS::Queue", prefix), "QueueName"]}}

    for metric, name, on in (
        (b.inbox.metric_waiting(period=period, label="w"), "ApproximateNumberOfMessagesVisible", "BatchQueue"),
        (b.inbox.metric_in_flight(period=period, label="f"), "ApproximateNumberOfMessagesNotVisible", "BatchQueue"),
        (b.inbox.metric_oldest_age(period=period, label="a"), "ApproximateAgeOfOldestMessage", "BatchQueue"),
        (
            b.inbox.metric_dead_letters(period=period, label="d"),
            "ApproximateNumberOfMessagesVisible",
            "BatchDeadLetter",
        ),
        (
            b.outcome.metric_dead_letters(period=period, label="o"),
            "ApproximateNumberOfMessagesVisible",
            "BatchOutcomeDead",
        ),
    ):
        assert (metric.namespace, metric.metric_name, metric.statistic) == ("AWS/SQS", name, "Maximum")
        assert resolved_dimensions(s, metric) == queue(on)


def test_the_claims_grant_gives_item_access_to_the_claims_table_only(synth):
    s = synth()
    table = {"Fn::GetAtt": [logical_id_of(s, "AWS::DynamoDB::Table", "BatchClaims"), "Arn"]}
    dynamo = [
        st for st in statements_of(s, "BatchTrigger") if any(a.startswith("dynamodb:") for a in as_list(st["Action"]))
    ]
    assert len(dynamo) == 1
    assert sorted(as_list(dynamo[0]["Action"])) == sorted(batch_trigger.CLAIM_ACTIONS)
    assert as_list(dynamo[0]["Resource"])[0] == table
    assert all(r == table or r == {"Ref": "AWS::NoValue"} for r in as_list(dynamo[0]["Resource"]))
    # the outcome function has no access to the table
    assert not [
        st for st in statements_of(s, "BatchOutcome") if any(a.startswith("dynamodb:") for a in as_list(st["Action"]))
    ]


def test_the_publish_grant_gives_publish_on_the_failure_topic_only(synth):
    s = synth()
    topic = {"Ref": logical_id_of(s, "AWS::SNS::Topic", "BatchFailureTopic")}
    # both functions publish (the trigger: files it refuses or gives up on), only sns:Publish, only on that topic
    for function in ("BatchOutcome", "BatchTrigger"):
        publishing = [
            st for st in statements_of(s, function) if any(a.startswith("sns:") for a in as_list(st["Action"]))
        ]
        assert [(as_list(st["Action"]), as_list(st["Resource"])) for st in publishing] == [(["sns:Publish"], [topic])]
