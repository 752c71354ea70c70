"""The job-outcome function: finished transform jobs → status records per input file, failures to the failure topic.
Runtime code: ``functions/job_outcome/``.

Plain class, not a construct (see ``stacks/lambda_function.py``): everything is created in the pipeline's scope so
the logical ids (``BatchOutcome…``, ``BatchFailureTopic…``, ``BatchJobStateRule…``) stay as deployed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as event_targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from stacks.batch_environment import OUTCOME_TIMEOUT_SECONDS
from stacks.batch_queue import allow_service_to_use_key, dead_letters, encrypted_queue
from stacks.checks import acknowledge, logical_id
from stacks.lambda_function import BatchFunction, FunctionBuilder
from stacks.storage import PREFIXES, STAGED_PREFIX
from zstc_contract.layout import OUTPUT_SUFFIX, STATUS_SUFFIX

OUTCOME_TIMEOUT: Final = Duration.seconds(OUTCOME_TIMEOUT_SECONDS)
EVENT_RETRIES: Final = 8
EVENT_MAX_AGE: Final = Duration.hours(24)
EVENTBRIDGE_DLQ_KEY_ACTIONS: Final = ("kms:GenerateDataKey", "kms:Decrypt")


class FailureTopic:
    """``topic``: one notice per failed transform job, with its failed input files (KMS-encrypted, TLS only).

    Only IAM principals of this account that are granted ``sns:Publish`` can publish (the outcome function): the
    topic policy holds the TLS-only statement and no service principal.
    """

    def __init__(self, scope: Construct, *, key: kms.IKey) -> None:
        self.topic = sns.Topic(
            scope, "FailureTopic", display_name="Batch transform failures", master_key=key, enforce_ssl=True
        )

    def grant_publish(self, grantee: iam.IGrantable) -> iam.Grant:
        """Publish notices (``sns:Publish`` on this topic; the topic's key through its own grant)."""
        return self.topic.grant_publish(grantee)


class OutcomeFunction(BatchFunction):
    """The outcome function receives "SageMaker Transform Job State Change" events for this stack's jobs (``rule``,
    with retries and ``dead_letter_queue``) and writes a status record per input file; failures are published to
    ``failures``."""

    def __init__(
        self,
        scope: Construct,
        *,
        functions: FunctionBuilder,
        environment: Mapping[str, str],
        failures: FailureTopic,
        bucket: s3.IBucket,
        key: kms.IKey,
        job_name_prefix: str,
        removal: RemovalPolicy,
    ) -> None:
        self.dead_letter_queue = encrypted_queue(scope, "OutcomeDeadLetterQueue", key=key, removal=removal)
        acknowledge(self.dead_letter_queue, {"AwsSolutions-SQS3": "This is a dead-letter queue."})
        # EventBridge sends the events it could not deliver (after its retries) to that queue, which the stack key
        # encrypts: it must be able to use the key, for this account's rules only. This is the only statement for
        # EventBridge: nothing publishes to the failure topic through EventBridge (the function publishes with IAM).
        # Sources: https://docs.aws.amazon.com/AWSSimpleQueueService/latest/SQSDeveloperGuide/sqs-key-management.html
        # (a service that sends to an SSE-KMS queue needs kms:GenerateDataKey and kms:Decrypt in the key policy) and
        # https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-encryption-key-policy.html (bind EventBridge's
        # key use with aws:SourceAccount or aws:SourceArn). The rule's own ARN would make the key depend on the rule,
        # which depends on the queue and so on the key: a CloudFormation cycle.
        allow_service_to_use_key(
            key,
            "AllowEventBridgeToDeadLetterJobEvents",
            "events.amazonaws.com",
            EVENTBRIDGE_DLQ_KEY_ACTIONS,
            StringEquals={"aws:SourceAccount": Stack.of(scope).account},
        )
        bucket_arn = f"<{logical_id(bucket)}.Arn>"
        super().__init__(
            functions.build(
                "Outcome",
                dead_letter_queue=self.dead_letter_queue,  # of events Lambda could not deliver (asynchronous calls)
                package="job_outcome",
                timeout=OUTCOME_TIMEOUT,
                environment=environment,
                description="Batch path: transform job state changes → status records per file, failures to SNS",
                role_description="Batch job outcomes: status records, failure notices",
                function_findings={},
                role_findings={
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.manifests}*]": "Reads the manifest of the "
                    "finished job (named after the job) to find its input files.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.output}*]": "Reads what each job wrote in "
                    "its own folder under output/ (to copy it to the file's .out and count records and errors).",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.input}*]": "Reads each input file's current "
                    "version (HeadObject) to tell a file overwritten while its job ran: input/ only, no listing.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.output}*{OUTPUT_SUFFIX}]": "Publishes (copies)"
                    " each file's output to output/<file>.out and removes an earlier run's: only *.out under output/.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.output}*{STATUS_SUFFIX}]": "Writes one status "
                    "record per input file, named after it: only *.status.json under output/.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.errors}*{STATUS_SUFFIX}]": "Reads and writes "
                    "one status record per failed input file (a superseded job's write is conditional on what it "
                    "read): only *.status.json under errors/.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{STAGED_PREFIX}*]": "Deletes the finished job's "
                    "re-staged files (named after the job) once its outcome is recorded: only under "
                    "manifests/_staged/.",
                    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "GenerateDataKey variants on the stack key "
                    "only, for SSE-KMS status records and the encrypted topic.",
                },
            )
        )
        self.rule = events.Rule(
            scope,
            "JobStateRule",
            description=f"Finished transform jobs of {Stack.of(scope).stack_name} ({job_name_prefix}-*)",
            event_pattern=events.EventPattern(
                source=["aws.sagemaker"],
                detail_type=["SageMaker Transform Job State Change"],
                detail={
                    "TransformJobStatus": ["Completed", "Failed", "Stopped"],
                    "TransformJobName": [{"prefix": f"{job_name_prefix}-"}],
                },
            ),
        )
        self.rule.add_target(
            event_targets.LambdaFunction(
                self.function,
                dead_letter_queue=self.dead_letter_queue,
                retry_attempts=EVENT_RETRIES,
                max_event_age=EVENT_MAX_AGE,
            )
        )
        self._grant(bucket, key)
        failures.grant_publish(self.function)

    def _grant(self, bucket: s3.IBucket, key: kms.IKey) -> None:
        allow = self.allow
        allow("UseStackKey", ["kms:Decrypt", "kms:GenerateDataKey*"], [key.key_arn])
        # HeadObject / GetObject of a missing output, status record or deleted input answers 404, not 403, only
        # with ListBucket.
        allow(
            "ListOutputsAndInputs",
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{PREFIXES.output}*", f"{PREFIXES.input}*", f"{PREFIXES.errors}*"]},
        )
        allow(
            "ReadManifestsAndOutputs",
            ["s3:GetObject"],
            [bucket.arn_for_objects(f"{PREFIXES.manifests}*"), bucket.arn_for_objects(f"{PREFIXES.output}*")],
        )
        allow("ReadInputVersions", ["s3:GetObject"], [bucket.arn_for_objects(f"{PREFIXES.input}*")])
        # The job's re-staged files (manifests/_staged/<job>/) are needed no longer once its outcome is recorded:
        # listed and deleted there (DeleteObjects asks s3:DeleteObject per key), nowhere else under manifests/
        # (ReadManifestsAndOutputs already reads them).
        allow(
            "ListStagedFiles", ["s3:ListBucket"], [bucket.bucket_arn], StringLike={"s3:prefix": [f"{STAGED_PREFIX}*"]}
        )
        allow("DeleteStagedFiles", ["s3:DeleteObject"], [bucket.arn_for_objects(f"{STAGED_PREFIX}*")])
        # One place per input: the status record is written there and the other place's record removed; the output
        # is copied from the job's folder to output/<file>.out, and an earlier run's removed when the file failed.
        # A superseded job's record is read first and written conditionally (If-Match / If-None-Match; a conditional
        # delete asks s3:GetObject too), so it never replaces the newer version's.
        allow(
            "WriteStatusRecords",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            [
                bucket.arn_for_objects(f"{PREFIXES.output}*{STATUS_SUFFIX}"),
                bucket.arn_for_objects(f"{PREFIXES.errors}*{STATUS_SUFFIX}"),
            ],
        )
        allow(
            "PublishOutputs",
            ["s3:PutObject", "s3:DeleteObject"],
            [bucket.arn_for_objects(f"{PREFIXES.output}*{OUTPUT_SUFFIX}")],
        )

    def metric_dead_letters(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        """Job events the function could not process after its retries."""
        return dead_letters(self.dead_letter_queue, period=period, label=label)
