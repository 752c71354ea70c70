"""Monitoring: the dashboard's widgets (parsed from the synthesized body), the alarms, the alarm topic and its key,
and the functions' log groups."""

from __future__ import annotations

import re
from typing import Any

import pytest

from stacks import batch
from stacks.monitoring import dashboard_body

TUNED = {
    "alarm_email": "ops@example.com",
    "queue_age_alarm_minutes": 30,
    "endpoint_5xx_alarm_percent": 2.5,
    "endpoint_p99_latency_alarm_ms": 1500,
    "log_retention_days": 90,
}
TRIGGER_METRICS = ["FilesReceived", "JobsStarted", "JobsMovedToAnotherInstanceType", "JobsRefused"]
OUTCOME_METRICS = ["JobsCompleted", "JobsFailed", "RecordsProcessed", "RecordErrors"]


# --- helpers ----------------------------------------------------------------------------------------------------------


def logical_id(s: Any, kind: str, prefix: str) -> str:
    (found,) = [k for k in s.resources(kind) if k.startswith(prefix)]
    return found


def widgets(s: Any) -> list[dict[str, Any]]:
    return dashboard_body(s.raw)["widgets"]


def widget(s: Any, title: str) -> dict[str, Any]:
    found = [w for w in widgets(s) if w["properties"].get("title") == title]
    assert len(found) == 1, f"no single widget titled {title!r}: {[w['properties'].get('title') for w in widgets(s)]}"
    return found[0]


def metric_lines(w: dict[str, Any]) -> list[tuple[str, str, dict[str, str], dict[str, Any]]]:
    """Each plain metric of a graph widget as (namespace, name, dimensions, options)."""
    lines = []
    for line in w["properties"]["metrics"]:
        options = line[-1] if isinstance(line[-1], dict) else {}
        values = [v for v in line if not isinstance(v, dict)]
        if not values:
            continue  # a math expression line
        namespace, name, *dims = values
        # CloudWatch's defaults, which CDK leaves out of the body: Average over 300 s
        options = {"stat": "Average", "period": 300, **options}
        lines.append((namespace, name, dict(zip(dims[::2], dims[1::2], strict=True)), options))
    return lines


def expressions(w: dict[str, Any]) -> list[dict[str, Any]]:
    return [line[0] for line in w["properties"]["metrics"] if len(line) == 1 and "expression" in line[0]]


def env_of(s: Any, prefix: str) -> dict[str, Any]:
    fn = s.resources("AWS::Lambda::Function")[logical_id(s, "AWS::Lambda::Function", prefix)]
    return fn["Properties"]["Environment"]["Variables"]


def alarm(s: Any, name_suffix: str) -> dict[str, Any]:
    found = [a["Properties"] for a in s.resources("AWS::CloudWatch::Alarm").values()]
    (props,) = [p for p in found if p["AlarmName"] == f"ZeroShotClassification-{name_suffix}"]
    return props


def single_metric(props: dict[str, Any]) -> dict[str, Any]:
    (m,) = props["Metrics"]
    return m["MetricStat"]


def topic_ref(s: Any) -> dict[str, str]:
    return {"Ref": logical_id(s, "AWS::SNS::Topic", "MonitoringAlarmTopic")}


# --- dashboard --------------------------------------------------------------------------------------------------------


def test_the_dashboard_is_named_after_the_stack_and_its_url_is_an_output(synth):
    # Given the default configuration / When synthesized
    s = synth()
    # Then one dashboard carries the stack's name and DashboardUrl opens it in the stack's region
    assert s.only("AWS::CloudWatch::Dashboard")["Properties"]["DashboardName"] == "ZeroShotClassification"
    url = s.raw["Outputs"]["DashboardUrl"]["Value"]["Fn::Join"][1]
    assert url[-1].endswith("#dashboards:name=ZeroShotClassification")
    assert {"Ref": "AWS::Region"} in url
    assert s.raw["Outputs"]["AlarmTopicArn"]["Value"] == topic_ref(s)


@pytest.mark.parametrize(
    ("title", "function_prefix", "names"),
    [
        ("Files received and jobs started", "BatchTrigger", TRIGGER_METRICS),
        ("Transform jobs completed and failed", "BatchOutcome", ["JobsCompleted", "JobsFailed"]),
        ("Records classified and error records", "BatchOutcome", ["RecordsProcessed", "RecordErrors"]),
    ],
)
def test_batch_widgets_chart_exactly_what_powertools_emits(synth, title, function_prefix, names):
    # Given the function's Powertools settings as deployed
    s = synth()
    env = env_of(s, function_prefix)
    # When the widget's metrics are read from the dashboard body
    lines = metric_lines(widget(s, title))
    charted = {name: (namespace, dims, options) for namespace, name, dims, options in lines}
    # Then each metric has the function's namespace and its only dimension, service = POWERTOOLS_SERVICE_NAME, summed
    for name in names:
        namespace, dims, options = charted[name]
        assert namespace == env["POWERTOOLS_METRICS_NAMESPACE"]
        assert dims == {"service": env["POWERTOOLS_SERVICE_NAME"]}
        assert options["stat"] == "Sum"


def test_queue_widget_shows_depth_and_the_age_of_the_oldest_file_with_the_alarm_line(synth):
    s = synth()
    queue = logical_id(s, "AWS::SQS::Queue", "BatchQueue")
    w = widget(s, "Queue: depth and oldest file age")
    lines = {(ns, name): (dims, options) for ns, name, dims, options in metric_lines(w)}
    assert lines[("AWS/SQS", "ApproximateNumberOfMessagesVisible")][0] == {"QueueName": f"<{queue}.QueueName>"}
    dims, options = lines[("AWS/SQS", "ApproximateAgeOfOldestMessage")]
    assert dims == {"QueueName": f"<{queue}.QueueName>"} and options["yAxis"] == "right"
    assert w["properties"]["annotations"]["horizontal"][0]["value"] == 120 * 60


def test_dead_letter_widget_shows_both_dead_letter_queues(synth):
    s = synth()
    w = widget(s, "Dead-letter queues")
    queues = {
        dims["QueueName"] for ns, name, dims, _ in metric_lines(w) if name == "ApproximateNumberOfMessagesVisible"
    }
    assert queues == {
        f"<{logical_id(s, 'AWS::SQS::Queue', 'BatchDeadLetterQueue')}.QueueName>",
        f"<{logical_id(s, 'AWS::SQS::Queue', 'BatchOutcomeDeadLetterQueue')}.QueueName>",
    }


def test_trigger_widgets_show_errors_throttles_and_duration_percentiles(synth):
    s = synth()
    trigger = {"FunctionName": f"<{logical_id(s, 'AWS::Lambda::Function', 'BatchTrigger')}>"}
    counts = metric_lines(widget(s, "Trigger: errors and throttles"))
    assert {name for ns, name, dims, _ in counts if ns == "AWS/Lambda" and dims == trigger} >= {
        "Invocations",
        "Errors",
        "Throttles",
    }
    duration = widget(s, "Trigger: duration")
    stats = {o["stat"] for ns, name, dims, o in metric_lines(duration) if name == "Duration" and dims == trigger}
    assert stats == {"p50", "p99", "Maximum"}
    assert duration["properties"]["annotations"]["horizontal"][0]["value"] == 120_000  # the 2-minute timeout


def test_recent_jobs_table_queries_the_outcome_log_line_with_its_counts(synth):
    s = synth()
    (w,) = [w for w in widgets(s) if w["type"] == "log" and "job-outcome" in w["properties"]["title"]]
    query = w["properties"]["query"]
    assert f"SOURCE '<{logical_id(s, 'AWS::Logs::LogGroup', 'BatchOutcomeLogs')}>'" in query
    assert 'filter message = "Job outcome recorded"' in query
    assert "instance_type" in query and "records, record_errors" in query


def test_job_widgets_show_the_instance_type_the_trigger_chose(synth):
    from functions.batch_trigger import logic as batch_trigger_logic

    # The dashboard's messages are the ones the trigger logs (two places: tests keep them equal)
    assert batch_trigger_logic.JOB_STARTED_MESSAGE == batch.JOB_STARTED_MESSAGE
    assert batch_trigger_logic.INSTANCE_REFUSED_MESSAGE == batch.INSTANCE_REFUSED_MESSAGE
    s = synth(batch_instance_types="ml.g4dn.xlarge,ml.m5.xlarge")
    trigger_logs = f"SOURCE '<{logical_id(s, 'AWS::Logs::LogGroup', 'BatchTriggerLogs')}>'"
    queries = [
        w["properties"]["query"] for w in widgets(s) if w["type"] == "log" and trigger_logs in w["properties"]["query"]
    ]
    assert len(queries) == 2
    by_type = next(q for q in queries if "stats" in q)
    assert "by instance_type" in by_type
    assert batch.JOB_STARTED_MESSAGE in by_type and batch.INSTANCE_REFUSED_MESSAGE in by_type
    recent = next(q for q in queries if "stats" not in q)
    assert "instance_type" in recent and "refused_instance_types" in recent


def test_the_alarm_status_widget_lists_every_alarm(synth):
    s = synth()
    (w,) = [w for w in widgets(s) if w["type"] == "alarm"]
    assert len(w["properties"]["alarms"]) == len(s.resources("AWS::CloudWatch::Alarm")) == 7


def endpoint_dims(s: Any) -> dict[str, str]:
    """The endpoint's dimensions: the name the endpoint's stack gives it (the main stack holds no reference)."""
    (endpoint,) = s.endpoint.resources("AWS::SageMaker::Endpoint").values()
    return {"EndpointName": endpoint["Properties"]["EndpointName"], "VariantName": "AllTraffic"}


def test_endpoint_widgets_show_invocations_latency_in_ms_and_errors(synth):
    s = synth()
    dims = endpoint_dims(s)
    invocations = metric_lines(widget(s, "Endpoint invocations"))
    assert [(ns, name, d) for ns, name, d, _ in invocations] == [("AWS/SageMaker", "Invocations", dims)]
    # Latency: microseconds → milliseconds through expressions over p50 and p99
    latency = widget(s, "Model latency p50 / p99 (ms)")
    stats = {o["stat"] for ns, name, d, o in metric_lines(latency) if name == "ModelLatency" and d == dims}
    assert stats == {"p50", "p99"}
    assert all(e["expression"].endswith("/ 1000") for e in expressions(latency))
    assert latency["properties"]["annotations"]["horizontal"][0]["value"] == 10000
    errors = {name for ns, name, d, _ in metric_lines(widget(s, "Endpoint errors 4xx / 5xx")) if d == dims}
    assert {"Invocation4XXErrors", "Invocation5XXErrors"} <= errors


def test_serverless_endpoints_get_cold_start_and_concurrency_widgets(synth):
    s = synth()  # endpoint_mode=serverless is the default
    dims = endpoint_dims(s)
    cold = metric_lines(widget(s, "Serverless cold starts (ModelSetupTime)"))
    assert ("AWS/SageMaker", "ModelSetupTime", dims, "SampleCount") in [(n, m, d, o["stat"]) for n, m, d, o in cold]
    concurrency = metric_lines(widget(s, "Serverless concurrency and memory"))
    names = {(ns, name) for ns, name, d, _ in concurrency if d == dims}
    assert ("AWS/SageMaker", "ServerlessConcurrentExecutionsUtilization") in names
    assert ("/aws/sagemaker/Endpoints", "MemoryUtilization") in names


def test_provisioned_endpoints_show_instance_utilization_instead_of_serverless_metrics(synth):
    s = synth(endpoint_mode="provisioned")
    names = {name for w in widgets(s) if w["type"] == "metric" for _, name, _, _ in metric_lines(w)}
    assert "CPUUtilization" in names and "Invocations" in names
    assert not names & {"ModelSetupTime", "ServerlessConcurrentExecutionsUtilization"}


def test_without_an_endpoint_there_are_no_endpoint_widgets_or_alarms(synth):
    s = synth(endpoint_mode="none")
    namespaces = {ns for w in widgets(s) if w["type"] == "metric" for ns, _, _, _ in metric_lines(w)}
    assert "AWS/SageMaker" not in namespaces and "ZeroShotClassification" in namespaces
    names = {a["Properties"]["AlarmName"] for a in s.resources("AWS::CloudWatch::Alarm").values()}
    assert not any("Endpoint" in n for n in names) and len(names) == 5


def test_widgets_fit_the_grid_without_overlapping(synth):
    for s in (synth(), synth(endpoint_mode="provisioned"), synth(endpoint_mode="none")):
        taken: set[tuple[int, int]] = set()
        for w in widgets(s):
            assert w["x"] + w["width"] <= 24
            cells = {(x, y) for x in range(w["x"], w["x"] + w["width"]) for y in range(w["y"], w["y"] + w["height"])}
            assert not cells & taken
            taken |= cells


# --- alarms -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "namespace", "metric", "stat", "threshold", "operator", "ok_action"),
    [
        ("DeadLetterMessages", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 1, ">=", True),
        ("OutcomeDeadLetterMessages", "AWS/SQS", "ApproximateNumberOfMessagesVisible", "Maximum", 1, ">=", True),
        ("TransformJobFailed", "ZeroShotClassification", "JobsFailed", "Sum", 1, ">=", False),
        ("QueuedFileTooOld", "AWS/SQS", "ApproximateAgeOfOldestMessage", "Maximum", 7200, ">", True),
        ("TriggerErrors", "AWS/Lambda", "Errors", "Sum", 1, ">=", False),
        ("EndpointP99Latency", "AWS/SageMaker", "ModelLatency", "p99", 10_000_000, ">", True),
    ],
)
def test_each_alarm_watches_its_metric_and_notifies_the_alarm_topic(
    synth, name, namespace, metric, stat, threshold, operator, ok_action
):
    # Given the default thresholds / When synthesized
    s = synth()
    props = alarm(s, name)
    watched = single_metric(props)
    # Then the alarm watches the metric with the statistic and threshold, silence never alarms, the topic is told
    assert (watched["Metric"]["Namespace"], watched["Metric"]["MetricName"], watched["Stat"]) == (
        namespace,
        metric,
        stat,
    )
    assert props["Threshold"] == threshold
    expected = {">=": "GreaterThanOrEqualToThreshold", ">": "GreaterThanThreshold"}[operator]
    assert props["ComparisonOperator"] == expected
    assert props["TreatMissingData"] == "notBreaching"
    assert props["AlarmActions"] == [topic_ref(s)]
    assert props.get("OKActions", []) == ([topic_ref(s)] if ok_action else [])


def test_alarms_watch_the_right_resources(synth):
    s = synth()

    def dimension(name: str) -> Any:
        return single_metric(alarm(s, name))["Metric"]["Dimensions"][0]["Value"]

    assert dimension("DeadLetterMessages") == {
        "Fn::GetAtt": [logical_id(s, "AWS::SQS::Queue", "BatchDeadLetterQueue"), "QueueName"]
    }
    assert dimension("OutcomeDeadLetterMessages") == {
        "Fn::GetAtt": [logical_id(s, "AWS::SQS::Queue", "BatchOutcomeDeadLetterQueue"), "QueueName"]
    }
    assert dimension("QueuedFileTooOld") == {
        "Fn::GetAtt": [logical_id(s, "AWS::SQS::Queue", "BatchQueue"), "QueueName"]
    }
    assert dimension("TriggerErrors") == {"Ref": logical_id(s, "AWS::Lambda::Function", "BatchTrigger")}
    assert dimension("TransformJobFailed") == env_of(s, "BatchOutcome")["POWERTOOLS_SERVICE_NAME"]


def test_the_5xx_alarm_is_a_rate_in_percent_of_invocations(synth):
    s = synth()
    props = alarm(s, "Endpoint5xxRate")
    by_id = {m["Id"]: m for m in props["Metrics"]}
    (expression,) = [m for m in props["Metrics"] if "Expression" in m]
    assert expression["Expression"] == "IF(invocations > 0, 100 * FILL(errors, 0) / invocations, 0)"
    assert expression["ReturnData"] is True
    assert by_id["invocations"]["MetricStat"]["Metric"]["MetricName"] == "Invocations"
    assert by_id["errors"]["MetricStat"]["Metric"]["MetricName"] == "Invocation5XXErrors"
    assert all(m["MetricStat"]["Stat"] == "Sum" for k, m in by_id.items() if k in ("invocations", "errors"))
    assert props["Threshold"] == 1.0 and props["ComparisonOperator"] == "GreaterThanThreshold"
    assert (props["EvaluationPeriods"], props["DatapointsToAlarm"]) == (3, 2)
    assert props["AlarmActions"] == props["OKActions"] == [topic_ref(s)]


def test_thresholds_follow_the_configuration(synth):
    # Given tuned thresholds
    s = synth(**TUNED)
    # Then the queue age is in seconds, the 5xx rate in percent and the latency in microseconds
    assert alarm(s, "QueuedFileTooOld")["Threshold"] == 30 * 60
    assert alarm(s, "Endpoint5xxRate")["Threshold"] == 2.5
    assert alarm(s, "EndpointP99Latency")["Threshold"] == 1500 * 1000
    assert "1500 ms" in alarm(s, "EndpointP99Latency")["AlarmDescription"]


def test_every_alarm_description_says_what_to_do_and_links_its_runbook_section(synth, repo_root):
    s = synth()
    runbook = (repo_root / "docs" / "operations.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in re.findall(r"^#+ (.+)$", runbook, re.M)
    }
    for props in (a["Properties"] for a in s.resources("AWS::CloudWatch::Alarm").values()):
        description = props["AlarmDescription"]
        assert len(description) <= 1024
        link = re.search(r"Runbook: docs/operations\.md#([a-z0-9-]+)$", description)
        assert link, description
        assert link.group(1) in anchors, f"{props['AlarmName']}: no section #{link.group(1)} in docs/operations.md"


# --- topic and key ----------------------------------------------------------------------------------------------------


def test_the_alarm_topic_is_encrypted_with_the_stack_key_and_tls_only(synth):
    s = synth()
    props = s.resources("AWS::SNS::Topic")[logical_id(s, "AWS::SNS::Topic", "MonitoringAlarmTopic")]["Properties"]
    assert props["KmsMasterKeyId"] == {"Fn::GetAtt": [logical_id(s, "AWS::KMS::Key", "EncryptionKey"), "Arn"]}
    (policy,) = [
        p["Properties"]["PolicyDocument"]["Statement"]
        for p in s.resources("AWS::SNS::TopicPolicy").values()
        if p["Properties"]["Topics"] == [topic_ref(s)]
    ]
    deny = [st for st in policy if st["Effect"] == "Deny"]
    assert deny and deny[0]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    (cloudwatch,) = [st for st in policy if st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert cloudwatch["Action"] == "sns:Publish"
    assert cloudwatch["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}
    assert ":alarm:*" in str(cloudwatch["Condition"]["ArnLike"]["aws:SourceArn"])


def test_the_key_policy_lets_cloudwatch_publish_to_the_encrypted_alarm_topic(synth):
    s = synth()
    statements = s.only("AWS::KMS::Key")["Properties"]["KeyPolicy"]["Statement"]
    (statement,) = [st for st in statements if st.get("Principal") == {"Service": "cloudwatch.amazonaws.com"}]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert statement["Condition"] == {"StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}}


def test_an_email_subscription_exists_only_when_alarm_email_is_set(synth):
    assert synth().resources("AWS::SNS::Subscription") == {}
    s = synth(**TUNED)
    (subscription,) = s.resources("AWS::SNS::Subscription").values()
    assert subscription["Properties"]["Protocol"] == "email"
    assert subscription["Properties"]["Endpoint"] == "ops@example.com"
    assert subscription["Properties"]["TopicArn"] == topic_ref(s)


# --- logs -------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("overrides", "days"), [({}, 365), (TUNED, 90)])
def test_every_function_of_ours_logs_json_to_an_encrypted_log_group_with_the_retention(synth, overrides, days):
    s = synth(**overrides)
    key = {"Fn::GetAtt": [logical_id(s, "AWS::KMS::Key", "EncryptionKey"), "Arn"]}
    ours = {k: v for k, v in s.resources("AWS::Lambda::Function").items() if not k.startswith("BucketNotifications")}
    assert {k[:-8] for k in ours} == {"BatchTrigger", "BatchOutcome", "ModelImportFunction"}
    groups = s.resources("AWS::Logs::LogGroup")
    for name, fn in ours.items():
        logging = fn["Properties"]["LoggingConfig"]
        assert logging["LogFormat"] == "JSON", name
        group = groups[logging["LogGroup"]["Ref"]]["Properties"]
        assert group["KmsKeyId"] == key and group["RetentionInDays"] == days, name


def test_monitoring_synthesizes_with_the_compliance_packs_in_every_endpoint_mode(synth):
    # The synth fixture runs cdk-nag's packs and raises on any unacknowledged finding.
    for mode in ("serverless", "provisioned", "none"):
        s = synth(endpoint_mode=mode) if mode != "serverless" else synth()
        assert s.resources("AWS::CloudWatch::Dashboard")
