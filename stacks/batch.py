"""The batch path: S3 drop → SQS → trigger function → coalesced, idempotent SageMaker transform jobs → outcomes.

This module only wires the units of the path together; each unit is in a module of its own:

- ``stacks/batch_queue.py``: :class:`BatchQueue`, the queue the bucket notifies (and its dead-letter queue);
- ``stacks/batch_trigger.py``: :class:`TriggerFunction` and its :class:`ClaimsTable`, :class:`BatchTarget`;
- ``stacks/batch_outcome.py``: :class:`OutcomeFunction` (rule, dead-letter queue) and its :class:`FailureTopic`;
- ``stacks/lambda_function.py``: :class:`FunctionBuilder`, what both functions share;
- ``stacks/batch_environment.py``: the functions' environment (also used by the offline emulation).

Runtime code: ``functions/batch_trigger/`` and ``functions/job_outcome/``. Design and figures: ``docs/batch.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.batch_environment import (
    BatchResources,
    TargetDecision,
    max_receive_count,
    outcome_environment,
    queue_visibility_seconds,
    trigger_environment,
)
from stacks.batch_outcome import FailureTopic, OutcomeFunction
from stacks.batch_queue import BatchQueue
from stacks.batch_trigger import BatchTarget, ClaimsTable, TriggerFunction, job_name_prefix
from stacks.config import Settings
from stacks.lambda_function import FunctionBuilder
from stacks.network import Network
from zstc_contract.backoff import backoff_max_seconds

__all__ = ["BatchPipeline", "BatchTarget", "job_name_prefix"]

# Mirrors of the trigger's log messages the dashboard queries (functions/batch_trigger/logic.py; tests check they
# agree).
JOB_STARTED_MESSAGE: Final = "Transform job started"
INSTANCE_REFUSED_MESSAGE: Final = "Instance type refused: quota too small for the job"


class BatchPipeline(Construct):
    """The batch path of the stack.

    - ``inbox`` (:class:`BatchQueue`): the bucket's ``ObjectCreated`` events for every key under ``input/``;
      visibility ≥ 6 × the trigger's timeout + the batching window; after ``batch_patience_hours`` of deferrals (or
      repeated failures) a message moves to its dead-letter queue, the trigger having written its files' status
      records.
    - ``trigger`` (:class:`TriggerFunction`): consumes it in batches (window ``batch_window_seconds``), claims each
      object version in ``claims`` and starts at most ``batch_max_concurrent_jobs`` transform jobs named
      ``<job_name_prefix>-<hash>``.
    - ``outcome`` (:class:`OutcomeFunction`): receives the state changes of those jobs and writes a status record per
      input file; failures are published to ``failures`` (:class:`FailureTopic`).
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
        self.targets = list(targets)
        removal = RemovalPolicy.RETAIN if settings.retain_data else RemovalPolicy.DESTROY
        self.job_name_prefix = job_name_prefix(settings.stack_name)
        window = settings.batch_window_seconds
        patience = settings.batch_patience_hours * 3600
        self.backoff_max_seconds = backoff_max_seconds(patience)
        self.max_receive_count = max_receive_count(settings)

        self.inbox = BatchQueue(
            self,
            key=key,
            bucket=bucket,
            visibility=Duration.seconds(queue_visibility_seconds(settings)),
            max_receive_count=self.max_receive_count,
            removal=removal,
        )
        self.claims = ClaimsTable(self, key=key, removal=removal)
        self.failures = FailureTopic(self, key=key)
        # The jobs' VPC placement comes from the model (CreateTransformJob has no VPC parameter); the functions run
        # in the stack's isolated subnets when there is a VPC.
        functions = FunctionBuilder(self, key=key, network=network, log_retention=log_retention, removal=removal)
        resources = BatchResources(
            bucket_name=bucket.bucket_name,
            claims_table_name=self.claims.table.table_name,
            queue_url=self.inbox.queue.queue_url,
            topic_arn=self.failures.topic.topic_arn,
            key_arn=key.key_arn,
            job_name_prefix=self.job_name_prefix,
        )
        decisions = [
            TargetDecision(t.instance_type, t.model.model_name, key.key_arn if t.volume_encryptable else None)
            for t in self.targets
        ]
        self.trigger = TriggerFunction(
            self,
            functions=functions,
            environment=trigger_environment(settings, resources, decisions, encode_json=Stack.of(self).to_json_string),
            inbox=self.inbox,
            claims=self.claims,
            window_seconds=window,
            bucket=bucket,
            key=key,
            execution_role=execution_role,
            targets=self.targets,
            job_name_prefix=self.job_name_prefix,
        )
        self.failures.grant_publish(self.trigger.function)  # notices of files refused or given up
        self.outcome = OutcomeFunction(
            self,
            functions=functions,
            environment=outcome_environment(settings, resources),
            failures=self.failures,
            bucket=bucket,
            key=key,
            job_name_prefix=self.job_name_prefix,
            removal=removal,
        )
