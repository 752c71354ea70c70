"""The batch path's inbox: the queue the bucket notifies of each new input file, and its dead-letter queue.

Plain class, not a construct (see ``stacks/lambda_function.py``): the queues are created in the pipeline's scope so
their logical ids (``BatchQueue…``, ``BatchDeadLetterQueue…``) stay as deployed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import jsii
from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from stacks.checks import acknowledge
from stacks.storage import PREFIXES

RETENTION: Final = Duration.days(14)  # SQS's maximum: the longest patience (336 h) fits
DATA_KEY_REUSE: Final = Duration.hours(1)
# The statement AWS documents for letting S3 send event notifications to an SSE-KMS queue (or topic): the S3
# principal, kms:GenerateDataKey and kms:Decrypt, no condition. Source:
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/grant-destinations-permissions-to-s3.html ("AWS KMS key
# policy"). Least privilege within it: the two documented actions only (no GenerateDataKey* variants). What scopes
# the notifications to this bucket is the queue policy (aws:SourceArn, aws:SourceAccount), as documented there too; a
# condition on the key statement is not part of the documented statement and may make S3 reject the configuration.
S3_NOTIFICATION_KEY_ACTIONS: Final = ("kms:GenerateDataKey", "kms:Decrypt")
# The notification's key filter (S3's rule names → values): every suffix under input/, so that the trigger answers each
# file with a job or a status record (one it cannot read gets "not supported") rather than S3 dropping it unseen.
NOTIFICATION_KEY_FILTER: Final = {"prefix": PREFIXES.input}


def encrypted_queue(scope: Construct, id_: str, *, key: kms.IKey, removal: RemovalPolicy, **options: Any) -> sqs.Queue:
    """A queue of the batch path: encrypted with the stack key, TLS only, kept 14 days (``options``: the rest)."""
    return sqs.Queue(
        scope,
        id_,
        encryption=sqs.QueueEncryption.KMS,
        encryption_master_key=key,
        enforce_ssl=True,
        retention_period=RETENTION,
        removal_policy=removal,
        **options,
    )


def allow_service_to_use_key(
    key: kms.IKey, sid: str, service: str, actions: Sequence[str], **conditions: Mapping[str, Any]
) -> None:
    """Let an AWS service principal use ``key`` for ``actions`` (``conditions``: ``{operator: {key: value}}``)."""
    key.add_to_resource_policy(
        iam.PolicyStatement(
            sid=sid,
            principals=[iam.ServicePrincipal(service)],
            actions=list(actions),
            resources=["*"],  # in a key policy, "*" means this key
            conditions=conditions or None,
        )
    )


@jsii.implements(s3.IBucketNotificationDestination)
class _QueueDestination:
    """S3 → SQS notification destination.

    CDK's ``SqsDestination`` grants S3 the queue's key with a condition naming the bucket; the bucket is encrypted
    with that same key, so the key policy and the bucket would depend on each other (a CloudFormation cycle). The
    key statement is added once by :class:`BatchQueue` (the documented one, no condition), and the queue policy
    names the bucket.
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


class BatchQueue:
    """``queue`` receives the bucket's ``ObjectCreated`` events for every key under ``input/`` (KMS-encrypted with the
    stack key, TLS only, 14 days retention, visibility ``visibility``); after ``max_receive_count`` receives a message
    moves to ``dead_letter_queue``. The key lets S3 encrypt the notifications (the documented statement)."""

    def __init__(
        self,
        scope: Construct,
        *,
        key: kms.IKey,
        bucket: s3.IBucket,
        visibility: Duration,
        max_receive_count: int,
        removal: RemovalPolicy,
    ) -> None:
        self.dead_letter_queue = encrypted_queue(
            scope, "DeadLetterQueue", key=key, removal=removal, data_key_reuse=DATA_KEY_REUSE
        )
        self.queue = encrypted_queue(
            scope,
            "Queue",
            key=key,
            removal=removal,
            data_key_reuse=DATA_KEY_REUSE,
            visibility_timeout=visibility,
            dead_letter_queue=sqs.DeadLetterQueue(queue=self.dead_letter_queue, max_receive_count=max_receive_count),
        )
        allow_service_to_use_key(
            key, "AllowS3ToSendBatchNotifications", "s3.amazonaws.com", S3_NOTIFICATION_KEY_ACTIONS
        )
        bucket.add_event_notification(
            s3.EventType.OBJECT_CREATED,
            _QueueDestination(self.queue),  # type: ignore[arg-type]
            s3.NotificationKeyFilter(**NOTIFICATION_KEY_FILTER),
        )
        acknowledge(self.dead_letter_queue, {"AwsSolutions-SQS3": "This is a dead-letter queue."})
        _acknowledge_notification_handler(Stack.of(scope), bucket)

    # --- metrics (queue depth and age are gauges: their maximum over the period) -------------------------------------

    def metric_waiting(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        """Files queued and not yet received by the trigger."""
        return _deepest(self.queue.metric_approximate_number_of_messages_visible, period, label)

    def metric_in_flight(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        """Files being handled by the trigger, or deferred by it (invisible until their backoff ends)."""
        return _deepest(self.queue.metric_approximate_number_of_messages_not_visible, period, label)

    def metric_oldest_age(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        """Seconds the oldest queued file has waited."""
        return _deepest(self.queue.metric_approximate_age_of_oldest_message, period, label)

    def metric_dead_letters(self, *, period: Duration, label: str) -> cloudwatch.Metric:
        """Files in the dead-letter queue."""
        return dead_letters(self.dead_letter_queue, period=period, label=label)


def dead_letters(queue: sqs.IQueue, *, period: Duration, label: str) -> cloudwatch.Metric:
    """Messages in a dead-letter queue (the maximum over the period)."""
    return _deepest(queue.metric_approximate_number_of_messages_visible, period, label)


def _deepest(metric: Callable[..., cloudwatch.Metric], period: Duration, label: str) -> cloudwatch.Metric:
    """A queue gauge's maximum over the period."""
    return metric(period=period, statistic="Maximum", label=label)


def _acknowledge_notification_handler(stack: Stack, bucket: s3.IBucket) -> None:
    """The bucket-notification machinery CDK adds for the S3 → SQS notification (one per stack)."""
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
