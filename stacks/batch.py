"""The batch path: S3 drop → SQS → trigger function → coalesced, idempotent SageMaker transform jobs → outcomes.

Runtime code: ``functions/batch_trigger/`` and ``functions/job_outcome/``. Design and figures: ``docs/batch.md``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as event_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_ssm as ssm
from constructs import Construct

from stacks.batch_environment import (
    BACKOFF_BASE_SECONDS,
    BATCH_SIZE_WITH_WINDOW,
    BATCH_SIZE_WITHOUT_WINDOW,
    OUTCOME_TIMEOUT_SECONDS,
    TRIGGER_TIMEOUT_SECONDS,
    BatchResources,
    TargetDecision,
    outcome_environment,
    trigger_environment,
)
from stacks.checks import INLINE_POLICY_REASON, acknowledge, checkov_skip, logical_id, nag_arn
from stacks.code_assets import contract_layer, function_code, function_handler
from stacks.config import Settings, has_nvme_storage
from stacks.model import ZeroShotModel
from stacks.network import Network
from stacks.storage import PREFIXES
from zstc_contract.backoff import backoff_max_seconds, receives_for_patience

POWERTOOLS_LAYER_PARAMETER: Final = "/aws/service/powertools/python/x86_64/python3.13/3.22.1"
TRIGGER_TIMEOUT: Final = Duration.seconds(TRIGGER_TIMEOUT_SECONDS)
OUTCOME_TIMEOUT: Final = Duration.seconds(OUTCOME_TIMEOUT_SECONDS)
RETENTION: Final = Duration.days(14)  # SQS's maximum: the longest patience (336 h) fits
# Mirrors of the trigger's log messages the dashboard queries (batch_trigger_logic; tests check they agree).
JOB_STARTED_MESSAGE: Final = "Transform job started"
INSTANCE_REFUSED_MESSAGE: Final = "Instance type refused: quota too small for the job"
TRIGGER_MAX_CONCURRENCY: Final = 2  # the job cap is counted per invocation: few concurrent invocations keep it tight

_OUTSIDE_VPC: Final = (
    "vpc=false (the default): the function only calls AWS APIs (S3, DynamoDB, SageMaker, SQS, SNS) over TLS with "
    "IAM. With vpc=true it runs in the stack's isolated subnets and reaches those APIs through VPC endpoints."
)
_VPC_ENI: Final = (
    " With vpc=true: the EC2 network-interface actions Lambda needs to attach the function to the VPC support no "
    "resource-level permissions."
)
_NO_RESERVED_CONCURRENCY: Final = (
    "Concurrency is bounded by the SQS event source's maximum concurrency (trigger) or by EventBridge's event rate "
    "(one event per finished job); reserving account concurrency would fail on accounts with the default quota."
)
_PYTHON_313: Final = (
    "Python 3.13 is the project's Lambda runtime (one runtime for all functions, matched to the Powertools layer "
    "3.22.1); moving to a newer one is a project-wide change."
)


@dataclass(frozen=True)
class BatchTarget:
    """An instance type batch jobs may run on, with the model (container family) its jobs use."""

    instance_type: str
    model: ZeroShotModel

    @property
    def volume_encryptable(self) -> bool:
        """SageMaker rejects a volume KMS key on instance types with local NVMe storage (encrypted by hardware)."""
        return not has_nvme_storage(self.instance_type)


def job_name_prefix(stack_name: str) -> str:
    """Lower-case prefix of this stack's transform-job names (SageMaker lowercases names in ARNs, which IAM
    matches). ``ZeroShotClassification`` → ``zeroshotclassification-batch``; at most 38 characters."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", stack_name.lower())).strip("-")[:24].strip("-")
    return f"{base or 'stack'}-batch"


def _unique(values: Any) -> list[str]:
    """Distinct values in their first order (model ARNs are tokens: no sorting)."""
    return list(dict.fromkeys(values))


@jsii.implements(s3.IBucketNotificationDestination)
class _QueueDestination:
    """S3 → SQS notification destination.

    CDK's ``SqsDestination`` grants S3 the queue's key with a condition naming the bucket; the bucket is encrypted
    with that same key, so the key policy and the bucket would depend on each other (a CloudFormation cycle). The
    key statement is added once, bound to the account, and the queue policy names the bucket.
    """

    def __init__(self, queue: sqs.Queue) -> None:
        self.queue = queue

    def bind(self, scope: Construct, bucket: s3.IBucket) -> s3.BucketNotificationDestinationConfig:
        result = self.queue.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowBucketNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["sqs:SendMessage", "sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
                resources=[self.queue.queue_arn],
                conditions={
                    "ArnLike": {"aws:SourceArn": bucket.bucket_arn},
                    "StringEquals": {"aws:SourceAccount": Stack.of(scope).account},
                },
            )
        )
        dependencies = [result.policy_dependable] if result.policy_dependable else []
        return s3.BucketNotificationDestinationConfig(
            arn=self.queue.queue_arn, type=s3.BucketNotificationDestinationType.QUEUE, dependencies=dependencies
        )


class BatchPipeline(Construct):
    """The batch path of the stack.

    - ``queue`` receives the bucket's ``ObjectCreated`` events for ``input/*.jsonl`` (KMS-encrypted with the stack
      key, TLS only, 14 days retention, visibility ≥ 6 × the trigger's timeout + the batching window); after
      ``batch_patience_hours`` of deferrals (or repeated failures) a message moves to ``dead_letter_queue``.
    - ``trigger_function`` consumes it in batches (window ``batch_window_seconds``, partial batch responses), claims
      each object version in ``claims_table`` (conditional write, TTL), writes a manifest under ``manifests/`` and
      starts at most ``batch_max_concurrent_jobs`` transform jobs named ``<job_name_prefix>-<hash>``.
    - ``outcome_function`` receives "SageMaker Transform Job State Change" events for those jobs (rule ``rule``) and
      writes a status record per input file; failures are published to ``topic``.
    The transform jobs run with the model's execution role and VPC configuration; outputs and volumes are encrypted
    with the stack key (the volume key is omitted on NVMe instance types, which SageMaker rejects it for).
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: Settings,
        key: kms.IKey,
        bucket: s3.IBucket,
        execution_role: iam.IRole,
        targets: Sequence[BatchTarget],
        network: Network | None,
        log_retention: logs.RetentionDays,
    ) -> None:
        super().__init__(scope, id_)
        if not targets:
            raise ValueError("The batch path needs at least one instance type (batch_instance_types)")
        stack = Stack.of(self)
        self.targets = list(targets)
        removal = RemovalPolicy.RETAIN if settings.retain_data else RemovalPolicy.DESTROY
        self.job_name_prefix = job_name_prefix(settings.stack_name)
        # The jobs' VPC placement comes from the model (CreateTransformJob has no VPC parameter); the functions run
        # in the stack's isolated subnets when there is a VPC.
        self._in_vpc = network is not None
        placement: dict[str, Any] = (
            {
                "vpc": network.vpc,
                "vpc_subnets": network.subnets,
                "security_groups": [network.security_group],
            }
            if network is not None
            else {}
        )

        patience = settings.batch_patience_hours * 3600
        self.backoff_max_seconds = backoff_max_seconds(patience)
        self.max_receive_count = receives_for_patience(
            patience, base=BACKOFF_BASE_SECONDS, maximum=self.backoff_max_seconds
        )
        window = settings.batch_window_seconds

        # --- queues -----------------------------------------------------------------------------------------------
        self.dead_letter_queue = sqs.Queue(
            self,
            "DeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.hours(1),
            enforce_ssl=True,
            retention_period=RETENTION,
            removal_policy=removal,
        )
        self.queue = sqs.Queue(
            self,
            "Queue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            data_key_reuse=Duration.hours(1),
            enforce_ssl=True,
            retention_period=RETENTION,
            visibility_timeout=Duration.seconds(6 * TRIGGER_TIMEOUT.to_seconds() + window),
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=self.max_receive_count
            ),
            removal_policy=removal,
        )
        # S3 sends the notifications: the key must let it encrypt them (for this account's buckets only).
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowS3ToSendBatchNotifications",
                principals=[iam.ServicePrincipal("s3.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],  # in a key policy, "*" means this key
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            _QueueDestination(self.queue),  # type: ignore[arg-type]
            s3.NotificationKeyFilter(prefix=PREFIXES.input, suffix=".jsonl"),
        )

        # --- claims -----------------------------------------------------------------------------------------------
        self.claims_table = dynamodb.Table(
            self,
            "Claims",
            partition_key=dynamodb.Attribute(name="pk", type=dynamodb.AttributeType.STRING),
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True
            ),
            time_to_live_attribute="expires_at",
            removal_policy=removal,
        )

        # --- failure topic ----------------------------------------------------------------------------------------
        self.topic = sns.Topic(
            self, "FailureTopic", display_name="Batch transform failures", master_key=key, enforce_ssl=True
        )
        key.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeToPublishBatchFailures",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["kms:GenerateDataKey*", "kms:Decrypt"],
                resources=["*"],
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )
        self.topic.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AllowEventBridgeRulesOfThisAccount",
                principals=[iam.ServicePrincipal("events.amazonaws.com")],
                actions=["sns:Publish"],
                resources=[self.topic.topic_arn],
                conditions={"StringEquals": {"aws:SourceAccount": stack.account}},
            )
        )

        layer = lambda_.LayerVersion.from_layer_version_arn(
            self,
            "Powertools",
            ssm.StringParameter.value_for_string_parameter(self, POWERTOOLS_LAYER_PARAMETER),
        )
        # What the trigger and the outcome function must agree on (manifest format, job names, status keys).
        contract = contract_layer(self, "Contract")
        resources = BatchResources(
            bucket_name=bucket.bucket_name,
            claims_table_name=self.claims_table.table_name,
            queue_url=self.queue.queue_url,
            topic_arn=self.topic.topic_arn,
            key_arn=key.key_arn,
            job_name_prefix=self.job_name_prefix,
        )
        decisions = [
            TargetDecision(t.instance_type, t.model.model_name, key.key_arn if t.volume_encryptable else None)
            for t in self.targets
        ]

        # --- trigger ----------------------------------------------------------------------------------------------
        self.trigger_log_group = logs.LogGroup(
            self, "TriggerLogs", encryption_key=key, retention=log_retention, removal_policy=removal
        )
        self.trigger_role = trigger_role = self._function_role(
            "TriggerRole", "Batch trigger: claims files, starts transform jobs", self.trigger_log_group
        )
        self.trigger_function = lambda_.Function(
            self,
            "Trigger",
            role=trigger_role,
            description="Batch path: S3 events from SQS → claimed, coalesced SageMaker transform jobs",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,  # the Powertools layer parameter is the x86_64 one
            handler=function_handler("batch_trigger"),
            code=function_code("batch_trigger"),
            layers=[layer, contract],
            memory_size=512,
            timeout=TRIGGER_TIMEOUT,
            **placement,
            environment=trigger_environment(settings, resources, decisions, encode_json=stack.to_json_string),
            environment_encryption=key,
            log_group=self.trigger_log_group,
            logging_format=lambda_.LoggingFormat.JSON,
        )
        self.event_source = sources.SqsEventSource(
            self.queue,
            batch_size=BATCH_SIZE_WITH_WINDOW if window else BATCH_SIZE_WITHOUT_WINDOW,
            max_batching_window=Duration.seconds(window) if window else None,
            report_batch_item_failures=True,
            max_concurrency=TRIGGER_MAX_CONCURRENCY,
        )
        self.trigger_function.add_event_source(self.event_source)
        self._grant_trigger(bucket, key, execution_role)

        # --- outcome ----------------------------------------------------------------------------------------------
        self.outcome_dead_letter_queue = sqs.Queue(
            self,
            "OutcomeDeadLetterQueue",
            encryption=sqs.QueueEncryption.KMS,
            encryption_master_key=key,
            enforce_ssl=True,
            retention_period=RETENTION,
            removal_policy=removal,
        )
        self.outcome_log_group = logs.LogGroup(
            self, "OutcomeLogs", encryption_key=key, retention=log_retention, removal_policy=removal
        )
        self.outcome_role = outcome_role = self._function_role(
            "OutcomeRole", "Batch job outcomes: status records, failure notices", self.outcome_log_group
        )
        self.outcome_function = lambda_.Function(
            self,
            "Outcome",
            role=outcome_role,
            description="Batch path: transform job state changes → status records per file, failures to SNS",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.X86_64,
            handler=function_handler("job_outcome"),
            code=function_code("job_outcome"),
            layers=[layer, contract],
            memory_size=512,
            timeout=OUTCOME_TIMEOUT,
            **placement,
            environment=outcome_environment(settings, resources),
            environment_encryption=key,
            log_group=self.outcome_log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            dead_letter_queue=self.outcome_dead_letter_queue,
        )
        self.rule = events.Rule(
            self,
            "JobStateRule",
            description=f"Finished transform jobs of {stack.stack_name} ({self.job_name_prefix}-*)",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Transform Job State Change"],
                detail={
                    "TransformJobStatus": ["Completed", "Failed", "Stopped"],
                    "TransformJobName": [{"prefix": f"{self.job_name_prefix}-"}],
                },
            ),
        )
        self.rule.add_target(
            event_targets.LambdaFunction(
                self.outcome_function,
                dead_letter_queue=self.outcome_dead_letter_queue,
                retry_attempts=8,
                max_event_age=Duration.hours(24),
            )
        )
        self._grant_outcome(bucket, key)
        self._acknowledge(bucket, in_vpc=network is not None)

    # --- permissions ----------------------------------------------------------------------------------------------

    def _function_role(self, id_: str, description: str, log_group: logs.ILogGroup) -> iam.Role:
        role = iam.Role(self, id_, assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"), description=description)
        role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        if self._in_vpc:
            # Lambda attaches the function to the VPC through network interfaces it manages; these EC2 actions
            # support no resource-level permissions for this use (AWSLambdaVPCAccessExecutionRole uses "*" too).
            role.add_to_policy(
                iam.PolicyStatement(
                    sid="VpcNetworkInterfaces",
                    actions=[
                        "ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
                        "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses",
                    ],
                    resources=["*"],
                )
            )  # fmt: skip
            checkov_skip(role.node.find_child("DefaultPolicy"), "CKV_AWS_111", _VPC_ENI.strip())
        return role

    def _transform_job_arn(self) -> str:
        stack = Stack.of(self)
        return stack.format_arn(
            service="sagemaker", resource="transform-job", resource_name=f"{self.job_name_prefix}-*"
        )

    def _grant_trigger(self, bucket: s3.IBucket, key: kms.IKey, execution_role: iam.IRole) -> None:
        fn = self.trigger_function
        # Claims, and the remembered quota refusals of instance types (deleted when a type works again).
        self.claims_table.grant(
            fn, "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DeleteItem"
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseStackKey",
                actions=["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"],
                resources=[key.key_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="LetSageMakerEncryptJobVolumes",
                actions=["kms:CreateGrant"],
                resources=[key.key_arn],
                conditions={"Bool": {"kms:GrantIsForAWSResource": "true"}},
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListManifests",
                actions=["s3:ListBucket"],  # a missing manifest answers 404 (not 403) only with ListBucket
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{PREFIXES.manifests}*"]}},
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadWriteManifests",
                actions=["s3:GetObject", "s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{PREFIXES.manifests}*")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteEmptyFileStatus",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{PREFIXES.errors}*.status.json")],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="StartThisStacksTransformJobs",
                actions=["sagemaker:CreateTransformJob"],
                resources=[self._transform_job_arn()],
                # Only with this stack's batch models, on the configured instance types.
                conditions={
                    "ArnEquals": {"sagemaker:ModelArn": _unique(t.model.model_arn for t in self.targets)},
                    "ForAllValues:StringEquals": {"sagemaker:InstanceTypes": [t.instance_type for t in self.targets]},
                },
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="DescribeAndTagThisStacksTransformJobs",
                actions=["sagemaker:DescribeTransformJob", "sagemaker:AddTags"],
                resources=[self._transform_job_arn()],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="CountRunningTransformJobs",
                actions=["sagemaker:ListTransformJobs"],
                resources=["*"],  # List* actions support no resource-level permissions
            )
        )
        # CreateTransformJob takes no role (the model carries it); the scoped PassRole only covers the model's
        # execution role should SageMaker ever check it on this path.
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="PassOnlyTheExecutionRoleToSageMaker",
                actions=["iam:PassRole"],
                resources=[execution_role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}},
            )
        )

    def _grant_outcome(self, bucket: s3.IBucket, key: kms.IKey) -> None:
        fn = self.outcome_function
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="UseStackKey",
                actions=["kms:Decrypt", "kms:GenerateDataKey*"],
                resources=[key.key_arn],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ListOutputs",
                actions=["s3:ListBucket"],  # HeadObject on a missing output answers 404 (not 403) only with this
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{PREFIXES.output}*"]}},
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="ReadManifestsAndOutputs",
                actions=["s3:GetObject"],
                resources=[
                    bucket.arn_for_objects(f"{PREFIXES.manifests}*"),
                    bucket.arn_for_objects(f"{PREFIXES.output}*"),
                ],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(
                sid="WriteStatusRecords",
                actions=["s3:PutObject"],
                resources=[
                    bucket.arn_for_objects(f"{PREFIXES.output}*.status.json"),
                    bucket.arn_for_objects(f"{PREFIXES.errors}*.status.json"),
                ],
            )
        )
        self.topic.grant_publish(fn)

    # --- checks ---------------------------------------------------------------------------------------------------

    def _acknowledge(self, bucket: s3.IBucket, *, in_vpc: bool) -> None:
        bucket_arn = f"<{logical_id(bucket)}.Arn>"
        function_findings = {
            "AwsSolutions-L1": _PYTHON_313,
            **(
                {}
                if in_vpc
                else {"HIPAA.Security-LambdaInsideVPC": _OUTSIDE_VPC, "NIST.800.53.R5-LambdaInsideVPC": _OUTSIDE_VPC}
            ),
            "HIPAA.Security-LambdaConcurrency": _NO_RESERVED_CONCURRENCY,
            "NIST.800.53.R5-LambdaConcurrency": _NO_RESERVED_CONCURRENCY,
        }
        acknowledge(
            self.trigger_function,
            {
                **function_findings,
                "HIPAA.Security-LambdaDLQ": "The function is invoked by its SQS event source, whose queue has the "
                "dead-letter queue; Lambda's asynchronous DLQ does not apply to event source mappings.",
                "NIST.800.53.R5-LambdaDLQ": "The function is invoked by its SQS event source, whose queue has the "
                "dead-letter queue; Lambda's asynchronous DLQ does not apply to event source mappings.",
            },
        )
        job_arns = nag_arn(self, "sagemaker", f"transform-job/{self.job_name_prefix}-*")
        acknowledge(
            self.trigger_role,
            {
                **INLINE_POLICY_REASON,
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.manifests}*]": "The trigger writes and reads "
                "one manifest per job, named after the job: only the manifests/ prefix.",
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.errors}*.status.json]": "Status records of "
                "empty input files, one per input key: only *.status.json under errors/.",
                f"AwsSolutions-IAM5[Resource::{job_arns}]": "Job names are derived at run time from the files "
                "they process; the wildcard is limited to this stack's job-name prefix.",
                "AwsSolutions-IAM5[Resource::*]": "sagemaker:ListTransformJobs supports no resource-level "
                "permissions; it counts this stack's running jobs for the concurrency cap."
                + (_VPC_ENI if in_vpc else ""),
                "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "GenerateDataKey and "
                "GenerateDataKeyWithoutPlaintext on the stack key only, for SSE-KMS objects, queue and table.",
            },
        )
        acknowledge(self.outcome_function, function_findings)
        acknowledge(
            self.outcome_role,
            {
                **INLINE_POLICY_REASON,
                **({"AwsSolutions-IAM5[Resource::*]": _VPC_ENI.strip()} if in_vpc else {}),
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.manifests}*]": "Reads the manifest of the "
                "finished job (named after the job) to find its input files.",
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.output}*]": "Reads each input file's .out "
                "(to count records and errors) under output/ only.",
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.output}*.status.json]": "Writes one status "
                "record per input file, named after it: only *.status.json under output/.",
                f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.errors}*.status.json]": "Writes one status "
                "record per failed input file: only *.status.json under errors/.",
                "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "GenerateDataKey variants on the stack key "
                "only, for SSE-KMS status records and the encrypted topic.",
            },
        )
        for fn in (self.trigger_function, self.outcome_function):
            checkov_skip(fn, "CKV_AWS_117", _OUTSIDE_VPC)
            checkov_skip(fn, "CKV_AWS_115", _NO_RESERVED_CONCURRENCY)
        checkov_skip(self.trigger_function, "CKV_AWS_116", "Invoked by an SQS event source whose queue has a DLQ.")
        acknowledge(
            self.claims_table,
            {
                f"{pack}-DynamoDBInBackupPlan": "Claims are short-lived de-duplication records (TTL = patience + 7 "
                "days) with point-in-time recovery on; losing them can at worst re-run a job, never lose data."
                for pack in ("HIPAA.Security", "NIST.800.53.R5")
            },
        )
        # The bucket-notification machinery CDK adds for the S3 → SQS notification (one per stack).
        stack = Stack.of(self)
        handler = stack.node.try_find_child("BucketNotificationsHandler050a0587b7544547bf325f094a3db834")
        if handler is not None:
            basic_execution = "arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole"
            acknowledge(
                handler,
                {
                    f"AwsSolutions-IAM4[Policy::{basic_execution}]": (
                        "CDK's bucket-notification handler (a deploy-time custom resource) writes only its own "
                        "logs with the basic execution role."
                    )
                },
            )
        notifications = bucket.node.try_find_child("Notifications")
        if notifications is not None:
            acknowledge(
                notifications,
                {
                    f"{pack}-IAMNoInlinePolicy": "CDK's bucket-notification handler policy: one action "
                    "(s3:PutBucketNotification) on this bucket, generated with the stack."
                    for pack in ("HIPAA.Security", "NIST.800.53.R5")
                },
            )
        for queue in (self.dead_letter_queue, self.outcome_dead_letter_queue):
            acknowledge(
                queue,
                {
                    "AwsSolutions-SQS3": "This is a dead-letter queue.",
                },
            )
