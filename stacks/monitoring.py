"""Operating the stack: one CloudWatch dashboard, alarms that say when a human is needed, and their SNS topic.

Runbook and dashboard picture: ``docs/operations.md``. Metric names of the batch functions: ``docs/batch.md``.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aws_cdk import Duration, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as actions
from aws_cdk import aws_iam as iam
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from constructs import Construct

from stacks.batch import INSTANCE_REFUSED_MESSAGE, JOB_STARTED_MESSAGE, BatchPipeline
from stacks.config import Settings
from stacks.encryption import EncryptionKey
from stacks.endpoint import VARIANT

PERIOD: Final = Duration.minutes(5)
RUNBOOK: Final = "docs/operations.md"
SAGEMAKER_NAMESPACE: Final = "AWS/SageMaker"
# Instance-level utilization of endpoints (serverless: memory only) is published in this namespace.
ENDPOINT_INSTANCE_NAMESPACE: Final = "/aws/sagemaker/Endpoints"
MICROSECONDS_PER_MS: Final = 1000
WIDTH: Final = 24  # the dashboard grid's columns


class Monitoring(Construct):
    """Dashboard, alarms and the alarm topic of the stack.

    - ``topic``: SNS topic encrypted with the stack key (TLS only); CloudWatch may publish to it and use the key
      (bound to this account). With ``alarm_email`` set, that address is subscribed (the recipient must confirm).
    - ``alarms``: dead-letter messages (batch queue and outcome events), a failed transform job, the oldest queued
      file older than ``queue_age_alarm_minutes``, trigger function errors and, when an endpoint exists, its 5xx
      rate above ``endpoint_5xx_alarm_percent`` and p99 model latency above ``endpoint_p99_latency_alarm_ms``. Each
      description says what it means and what to do; missing data never alarms (idle queues and endpoints publish
      nothing). Condition alarms also notify when they return to OK; event alarms (a job failed, a function
      error) notify once.
    - ``dashboard``: named after the stack: batch path, functions, queues and, with an endpoint, its invocations,
      latency, errors and (serverless) cold starts and concurrency, or (provisioned) instance utilization.
    The endpoint is watched by its name (``endpoint_name``, :func:`stacks.endpoint.endpoint_name`): it lives in the
    endpoint's own stack, deployed after this one, which this stack never references. Until that stack is deployed
    the endpoint's metrics are simply empty (missing data never alarms).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: Settings,
        encryption: EncryptionKey,
        batch: BatchPipeline,
        endpoint_name: str | None,
    ) -> None:
        super().__init__(scope, id_)
        stack = Stack.of(self)
        self.settings = settings
        self.batch = batch
        self.endpoint_name = endpoint_name

        # --- alarm topic ----------------------------------------------------------------------------------------
        self.topic = sns.Topic(
            self,
            "AlarmTopic",
            display_name=f"{stack.stack_name} alarms",
            master_key=encryption.key,
            enforce_ssl=True,
        )
        # CloudWatch publishes alarm notifications: it must be able to use the key and the topic (this account's
        # alarms only).
        encryption.allow_service("AllowCloudWatchAlarmsToNotify", "cloudwatch.amazonaws.com")
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowCloudWatchAlarmsOfThisAccount",
                principals=[iam.ServicePrincipal("cloudwatch.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={
                    "StringEquals": {"aws:SourceAccount": stack.account},
                    "ArnLike": {
                        "aws:SourceArn": f"arn:{stack.partition}:cloudwatch:{stack.region}:{stack.account}:alarm:*"
                    },
                },
            )
        )
        if settings.alarm_email:
            self.topic.add_subscription(subscriptions.EmailSubscription(settings.alarm_email))
        self._notify = actions.SnsAction(self.topic)

        # --- alarms ---------------------------------------------------------------------------------------------
        self.alarms: dict[str, cloudwatch.Alarm] = {}
        self._batch_alarms()
        if endpoint_name is not None:
            self._endpoint_alarms()

        # --- dashboard ------------------------------------------------------------------------------------------
        self.dashboard_name = stack.stack_name
        self.dashboard = cloudwatch.Dashboard(
            self,
            "Dashboard",
            dashboard_name=self.dashboard_name,
            default_interval=Duration.hours(6),
            widgets=self._rows(),
        )
        self.dashboard_url = (
            f"https://{stack.region}.console.aws.amazon.com/cloudwatch/home?region={stack.region}"
            f"#dashboards:name={self.dashboard_name}"
        )

    # --- metrics --------------------------------------------------------------------------------------------------

    def endpoint_metric(
        self, name: str, statistic: str, *, namespace: str = SAGEMAKER_NAMESPACE, label: str | None = None
    ) -> cloudwatch.Metric:
        assert self.endpoint_name is not None
        return cloudwatch.Metric(
            namespace=namespace,
            metric_name=name,
            dimensions_map={"EndpointName": self.endpoint_name, "VariantName": VARIANT},
            statistic=statistic,
            period=PERIOD,
            label=label or name,
        )

    def _latency_ms(self, name: str, statistic: str, label: str) -> cloudwatch.MathExpression:
        """SageMaker reports latencies in microseconds: shown in milliseconds."""
        metric_id = f"{name}_{statistic}".lower()  # ids must be unique within a graph
        return cloudwatch.MathExpression(
            expression=f"{metric_id} / {MICROSECONDS_PER_MS}",
            using_metrics={metric_id: self.endpoint_metric(name, statistic)},
            label=label,
            period=PERIOD,
        )

    # --- alarms ---------------------------------------------------------------------------------------------------

    def _alarm(
        self,
        id_: str,
        *,
        metric: cloudwatch.IMetric,
        threshold: float,
        description: str,
        comparison: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluation_periods: int = 1,
        datapoints: int = 1,
        notify_ok: bool = True,
    ) -> cloudwatch.Alarm:
        stack = Stack.of(self)
        alarm = cloudwatch.Alarm(
            self,
            id_,
            alarm_name=f"{stack.stack_name}-{id_}",
            alarm_description=f"{description} Runbook: {RUNBOOK}#{id_.lower()}",
            metric=metric,
            threshold=threshold,
            comparison_operator=comparison,
            evaluation_periods=evaluation_periods,
            datapoints_to_alarm=datapoints,
            # Idle queues, functions and endpoints publish no data: silence is normal, never an alarm.
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        alarm.add_alarm_action(self._notify)
        if notify_ok:
            alarm.add_ok_action(self._notify)
        self.alarms[id_] = alarm
        return alarm

    def _batch_alarms(self) -> None:
        b = self.batch
        s = self.settings
        self._alarm(
            "DeadLetterMessages",
            metric=b.inbox.metric_dead_letters(period=PERIOD, label="Files in the dead-letter queue"),
            threshold=1,
            description=(
                f"Input files reached the batch dead-letter queue: no transform job could be started for them within "
                f"batch_patience_hours ({s.batch_patience_hours} h) or the trigger failed on them repeatedly. They "
                "are not being classified. Read the trigger's logs for their object_key, fix the cause (quota, "
                "permissions, model), then redrive the messages to the batch queue (SQS console: Start DLQ redrive)."
            ),
        )
        self._alarm(
            "OutcomeDeadLetterMessages",
            metric=b.outcome.metric_dead_letters(period=PERIOD, label="Job events in the outcome dead-letter queue"),
            threshold=1,
            description=(
                "Transform-job state changes the job-outcome function could not process (after retries): the files "
                "of those jobs have no status record and failures were not notified. Read the outcome function's "
                "logs for the job_name, fix the cause, then replay the events from the dead-letter queue."
            ),
        )
        self._alarm(
            "TransformJobFailed",
            metric=b.outcome.metric("JobsFailed", period=PERIOD, label="Transform jobs failed"),
            threshold=1,
            notify_ok=False,
            description=(
                "A batch transform job failed or was stopped. Its files have status records under errors/ naming "
                "the reason; the batch failure topic has the list of failed inputs. Read the job's FailureReason in "
                "the SageMaker console, fix the input or model, then upload the files again."
            ),
        )
        self._alarm(
            "QueuedFileTooOld",
            metric=b.inbox.metric_oldest_age(period=PERIOD, label="Age of the oldest queued file (s)"),
            threshold=s.queue_age_alarm_minutes * 60,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            description=(
                f"A file has waited more than {s.queue_age_alarm_minutes} minutes (queue_age_alarm_minutes) for its "
                "transform job. Jobs are being deferred (concurrency cap, instance quota, throttling) or the trigger "
                "is failing. Check JobsDeferred on the dashboard and the trigger's logs; raise the instance quota or "
                "batch_max_concurrent_jobs, or wait for running jobs to finish."
            ),
        )
        self._alarm(
            "TriggerErrors",
            metric=b.trigger.metric_errors(period=PERIOD, label="Trigger errors"),
            threshold=1,
            notify_ok=False,
            description=(
                "The batch trigger function failed (an unhandled error or a timeout): its messages return to the "
                "queue and are retried, and reach the dead-letter queue if it keeps failing. Read the function's "
                "logs (ERROR lines name the object_key or job_name) and fix the cause."
            ),
        )

    def _endpoint_alarms(self) -> None:
        s = self.settings
        rate = cloudwatch.MathExpression(
            expression="IF(invocations > 0, 100 * FILL(errors, 0) / invocations, 0)",
            using_metrics={
                "invocations": self.endpoint_metric("Invocations", "Sum"),
                "errors": self.endpoint_metric("Invocation5XXErrors", "Sum"),
            },
            label="5xx responses (% of invocations)",
            period=PERIOD,
        )
        self._alarm(
            "Endpoint5xxRate",
            metric=rate,
            threshold=s.endpoint_5xx_alarm_percent,
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints=2,
            description=(
                f"More than {s.endpoint_5xx_alarm_percent:g}% of the endpoint's requests failed with a server error "
                "(5xx) in 2 of the last 3 five-minute periods (endpoint_5xx_alarm_percent). Read the endpoint's "
                "CloudWatch logs (/aws/sagemaker/Endpoints/<name>); check memory, timeouts and the model artifact."
            ),
        )
        self._alarm(
            "EndpointP99Latency",
            metric=self.endpoint_metric("ModelLatency", "p99", label="Model latency p99 (µs)"),
            threshold=s.endpoint_p99_latency_alarm_ms * MICROSECONDS_PER_MS,  # ModelLatency is in microseconds
            comparison=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            evaluation_periods=3,
            datapoints=2,
            description=(
                f"The endpoint's p99 model latency exceeded {s.endpoint_p99_latency_alarm_ms} ms "
                "(endpoint_p99_latency_alarm_ms) in 2 of the last 3 five-minute periods. Requests are too large "
                "(texts × candidate labels) or the endpoint is saturated: check invocations and concurrency on the "
                "dashboard; send fewer labels per request, raise the capacity, or use the batch path."
            ),
        )

    # --- dashboard ------------------------------------------------------------------------------------------------

    def _rows(self) -> list[list[cloudwatch.IWidget]]:
        b = self.batch
        t, o = b.trigger, b.outcome
        rows: list[list[cloudwatch.IWidget]] = [
            [
                cloudwatch.TextWidget(
                    markdown=f"## Batch path\nDrop `.jsonl` files under `input/`; results under `output/`, status "
                    f"records of failed files under `errors/`. Runbook: `{RUNBOOK}`.",
                    width=WIDTH,
                    height=2,
                )
            ],
            [
                cloudwatch.GraphWidget(
                    title="Files received and jobs started",
                    left=[
                        t.metric("FilesReceived", period=PERIOD),
                        t.metric("FilesDuplicate", period=PERIOD),
                        t.metric("FilesEmpty", period=PERIOD),
                        t.metric("FilesDeferred", period=PERIOD),
                    ],
                    right=[
                        t.metric("JobsStarted", period=PERIOD),
                        t.metric("JobsDeferred", period=PERIOD),
                        t.metric("JobsMovedToAnotherInstanceType", period=PERIOD, label="Jobs moved to the next type"),
                        t.metric("JobsRefused", period=PERIOD, label="Jobs no type had quota for"),
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="files", show_units=False),
                    right_y_axis=cloudwatch.YAxisProps(min=0, label="jobs", show_units=False),
                    width=8,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Transform jobs completed and failed",
                    left=[o.metric("JobsCompleted", period=PERIOD), o.metric("JobsFailed", period=PERIOD)],
                    right=[
                        o.metric("FilesSucceeded", period=PERIOD),
                        o.metric("FilesFailed", period=PERIOD),
                        o.metric("OutputsMissing", period=PERIOD),
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="jobs", show_units=False),
                    right_y_axis=cloudwatch.YAxisProps(min=0, label="files", show_units=False),
                    width=8,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Records classified and error records",
                    left=[o.metric("RecordsProcessed", period=PERIOD), o.metric("RecordErrors", period=PERIOD)],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="records", show_units=False),
                    width=8,
                    height=6,
                ),
            ],
            [
                cloudwatch.GraphWidget(
                    title="Queue: depth and oldest file age",
                    left=[
                        b.inbox.metric_waiting(period=PERIOD, label="Waiting"),
                        b.inbox.metric_in_flight(period=PERIOD, label="In flight or deferred"),
                    ],
                    right=[b.inbox.metric_oldest_age(period=PERIOD, label="Oldest (s)")],
                    right_annotations=[
                        cloudwatch.HorizontalAnnotation(
                            value=self.settings.queue_age_alarm_minutes * 60, label="Alarm: QueuedFileTooOld"
                        )
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="messages", show_units=False),
                    right_y_axis=cloudwatch.YAxisProps(min=0, label="seconds", show_units=False),
                    width=6,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Dead-letter queues",
                    left=[
                        b.inbox.metric_dead_letters(period=PERIOD, label="Batch DLQ (files)"),
                        b.outcome.metric_dead_letters(period=PERIOD, label="Outcome DLQ (job events)"),
                    ],
                    left_annotations=[cloudwatch.HorizontalAnnotation(value=1, label="Alarm")],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="messages", show_units=False),
                    width=6,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Trigger: errors and throttles",
                    left=[
                        b.trigger.metric_invocations(period=PERIOD, label="Invocations"),
                        b.trigger.metric_errors(period=PERIOD, label="Errors"),
                        b.trigger.metric_throttles(period=PERIOD, label="Throttles"),
                        b.outcome.metric_errors(period=PERIOD, label="Outcome errors"),
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                    width=6,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Trigger: duration",
                    left=[
                        b.trigger.metric_duration("p50", period=PERIOD, label="p50"),
                        b.trigger.metric_duration("p99", period=PERIOD, label="p99"),
                        b.trigger.metric_duration("Maximum", period=PERIOD, label="Max"),
                    ],
                    left_annotations=[cloudwatch.HorizontalAnnotation(value=b.trigger.timeout_ms, label="Timeout")],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="ms", show_units=False),
                    width=6,
                    height=6,
                ),
            ],
        ]
        if self.endpoint_name is not None:
            rows.extend(self._endpoint_rows())
        rows.append(
            [
                cloudwatch.LogQueryWidget(
                    title="Recent transform jobs (job-outcome logs)",
                    log_group_names=[b.outcome.log_group.log_group_name],
                    query_lines=[
                        "fields @timestamp, job_name, job_status, instance_type, files, files_failed, records, "
                        "record_errors",
                        'filter message = "Job outcome recorded"',
                        "sort @timestamp desc",
                        "limit 20",
                    ],
                    view=cloudwatch.LogQueryVisualizationType.TABLE,
                    width=16,
                    height=6,
                ),
                cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=8, height=6),
            ]
        )
        # Which instance type the trigger chose (it falls back in the configured order when a quota is too small).
        rows.append(
            [
                cloudwatch.LogQueryWidget(
                    title="Jobs started and quota refusals by instance type (trigger logs)",
                    log_group_names=[b.trigger.log_group.log_group_name],
                    query_lines=[
                        f'filter message in ["{JOB_STARTED_MESSAGE}", "{INSTANCE_REFUSED_MESSAGE}"]',
                        "stats count(*) as jobs by instance_type, message",
                        "sort jobs desc",
                    ],
                    view=cloudwatch.LogQueryVisualizationType.TABLE,
                    width=12,
                    height=6,
                ),
                cloudwatch.LogQueryWidget(
                    title="Recent job starts (trigger logs)",
                    log_group_names=[b.trigger.log_group.log_group_name],
                    query_lines=[
                        "fields @timestamp, job_name, instance_type, files, refused_instance_types, "
                        "skipped_instance_types",
                        f'filter message = "{JOB_STARTED_MESSAGE}"',
                        "sort @timestamp desc",
                        "limit 20",
                    ],
                    view=cloudwatch.LogQueryVisualizationType.TABLE,
                    width=12,
                    height=6,
                ),
            ]
        )
        return rows

    def _endpoint_rows(self) -> list[list[cloudwatch.IWidget]]:
        serverless = self.settings.endpoint_mode == "serverless"
        rows: list[list[cloudwatch.IWidget]] = [
            [
                cloudwatch.TextWidget(
                    markdown=f"## Real-time endpoint ({self.settings.endpoint_mode})\nVariant `{VARIANT}`. "
                    "Latencies are converted from SageMaker's microseconds to milliseconds.",
                    width=WIDTH,
                    height=2,
                )
            ],
            [
                cloudwatch.GraphWidget(
                    title="Endpoint invocations",
                    left=[self.endpoint_metric("Invocations", "Sum")],
                    left_y_axis=cloudwatch.YAxisProps(min=0, show_units=False),
                    width=8,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Model latency p50 / p99 (ms)",
                    left=[
                        self._latency_ms("ModelLatency", "p50", "ModelLatency p50 (ms)"),
                        self._latency_ms("ModelLatency", "p99", "ModelLatency p99 (ms)"),
                        self._latency_ms("OverheadLatency", "p99", "OverheadLatency p99 (ms)"),
                    ],
                    left_annotations=[
                        cloudwatch.HorizontalAnnotation(
                            value=self.settings.endpoint_p99_latency_alarm_ms, label="Alarm: p99"
                        )
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="ms", show_units=False),
                    width=8,
                    height=6,
                ),
                cloudwatch.GraphWidget(
                    title="Endpoint errors 4xx / 5xx",
                    left=[
                        self.endpoint_metric("Invocation4XXErrors", "Sum", label="4xx"),
                        self.endpoint_metric("Invocation5XXErrors", "Sum", label="5xx"),
                    ],
                    right=[self.alarms["Endpoint5xxRate"].metric],
                    right_annotations=[
                        cloudwatch.HorizontalAnnotation(
                            value=self.settings.endpoint_5xx_alarm_percent, label="Alarm: 5xx %"
                        )
                    ],
                    left_y_axis=cloudwatch.YAxisProps(min=0, label="requests", show_units=False),
                    right_y_axis=cloudwatch.YAxisProps(min=0, label="%", show_units=False),
                    width=8,
                    height=6,
                ),
            ],
        ]
        if serverless:
            rows.append(
                [
                    cloudwatch.GraphWidget(
                        title="Serverless cold starts (ModelSetupTime)",
                        left=[self.endpoint_metric("ModelSetupTime", "SampleCount", label="Cold starts")],
                        right=[
                            self._latency_ms("ModelSetupTime", "Average", "Setup time avg (ms)"),
                            self._latency_ms("ModelSetupTime", "Maximum", "Setup time max (ms)"),
                        ],
                        left_y_axis=cloudwatch.YAxisProps(min=0, label="cold starts", show_units=False),
                        right_y_axis=cloudwatch.YAxisProps(min=0, label="ms", show_units=False),
                        width=12,
                        height=6,
                    ),
                    cloudwatch.GraphWidget(
                        title="Serverless concurrency and memory",
                        left=[
                            self.endpoint_metric(
                                "ServerlessConcurrentExecutionsUtilization", "Maximum", label="Concurrency used (max)"
                            ),
                            self.endpoint_metric(
                                "ServerlessConcurrentExecutionsUtilization", "Average", label="Concurrency used (avg)"
                            ),
                        ],
                        right=[
                            self.endpoint_metric(
                                "MemoryUtilization",
                                "Maximum",
                                namespace=ENDPOINT_INSTANCE_NAMESPACE,
                                label="Memory used % (max)",
                            )
                        ],
                        left_annotations=[cloudwatch.HorizontalAnnotation(value=1, label="max_concurrency")],
                        left_y_axis=cloudwatch.YAxisProps(min=0, label="fraction of max concurrency", show_units=False),
                        right_y_axis=cloudwatch.YAxisProps(min=0, max=100, label="%", show_units=False),
                        width=12,
                        height=6,
                    ),
                ]
            )
        else:
            rows.append(
                [
                    cloudwatch.GraphWidget(
                        title="Endpoint instances: CPU and memory",
                        left=[
                            self.endpoint_metric(
                                "CPUUtilization", "Average", namespace=ENDPOINT_INSTANCE_NAMESPACE, label="CPU %"
                            ),
                            self.endpoint_metric(
                                "MemoryUtilization",
                                "Maximum",
                                namespace=ENDPOINT_INSTANCE_NAMESPACE,
                                label="Memory % (max)",
                            ),
                        ],
                        left_y_axis=cloudwatch.YAxisProps(min=0, label="%", show_units=False),
                        width=WIDTH,
                        height=6,
                    )
                ]
            )
        return rows


# --- reading the synthesized dashboard (tests, scripts/render_dashboard.py) -----------------------------------------


def dashboard_body(template: dict[str, Any], *, placeholder: str = "<{}>") -> dict[str, Any]:
    """The dashboard's body from a synthesized template, tokens (``Ref``, ``Fn::GetAtt``, pseudo parameters) replaced
    by ``placeholder`` formatted with the logical id / attribute (``<AWS::Region>``, ``<BatchQueue1234.QueueName>``)."""
    (dashboard,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::CloudWatch::Dashboard"]
    return json.loads(_resolve(dashboard["Properties"]["DashboardBody"], placeholder))


def _resolve(value: Any, placeholder: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        separator, parts = value["Fn::Join"]
        return str(separator).join(_resolve(p, placeholder) for p in parts)
    if isinstance(value, dict) and "Ref" in value:
        return placeholder.format(value["Ref"])
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        return placeholder.format(".".join(value["Fn::GetAtt"]))
    raise ValueError(f"Unexpected token in the dashboard body: {value!r}")
