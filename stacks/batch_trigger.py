"""The batch trigger: the function that turns queued input files into claimed, coalesced transform jobs, its claims
table and its event source. Runtime code: ``functions/batch_trigger/``.

Plain classes, not constructs (see ``stacks/lambda_function.py``): everything is created in the pipeline's scope so
the logical ids (``BatchTrigger…``, ``BatchClaims…``) stay as deployed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.batch_environment import (
    BATCH_SIZE_WITH_WINDOW,
    BATCH_SIZE_WITHOUT_WINDOW,
    TRIGGER_TIMEOUT_SECONDS,
)
from stacks.batch_queue import BatchQueue
from stacks.checks import acknowledge, checkov_skip, logical_id, nag_arn
from stacks.config import has_nvme_storage
from stacks.lambda_function import BatchFunction, FunctionBuilder
from stacks.model import SageMakerModel
from stacks.storage import PREFIXES, SCANS_PREFIX, STAGED_PREFIX
from zstc_contract.layout import STATUS_SUFFIX

TRIGGER_TIMEOUT: Final = Duration.seconds(TRIGGER_TIMEOUT_SECONDS)
TRIGGER_MAX_CONCURRENCY: Final = 2  # the job cap is counted per invocation: few concurrent invocations keep it tight
CLAIM_ACTIONS: Final = ("dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:GetItem", "dynamodb:DeleteItem")
_VIA_EVENT_SOURCE: Final = (
    "The function is invoked by its SQS event source, whose queue has the dead-letter queue; Lambda's asynchronous "
    "DLQ does not apply to event source mappings."
)


@dataclass(frozen=True)
class BatchTarget:
    """An instance type batch jobs may run on, with the model (container family) its jobs use."""

    instance_type: str
    model: SageMakerModel

    @property
    def volume_encryptable(self) -> bool:
        """SageMaker rejects a volume KMS key on instance types with local NVMe storage (encrypted by hardware)."""
        return not has_nvme_storage(self.instance_type)


def job_name_prefix(stack_name: str) -> str:
    """Lower-case prefix of this stack's transform-job names (SageMaker lowercases names in ARNs, which IAM
    matches). ``ZeroShotClassification`` → ``zeroshotclassification-batch``; at most 38 characters."""
    base = re.sub(r"-+", "-", re.sub(r"[^a-z0-9]", "-", stack_name.lower())).strip("-")[:24].strip("-")
    return f"{base or 'stack'}-batch"


def transform_job_arn(scope: Construct, prefix: str) -> str:
    """The ARN pattern of this stack's transform jobs (``<prefix>-*``)."""
    return Stack.of(scope).format_arn(service="sagemaker", resource="transform-job", resource_name=f"{prefix}-*")


class ClaimsTable:
    """``table``: one item per claimed object version (conditional writes, TTL ``expires_at``), and the remembered
    quota refusals of instance types; encrypted with the stack key, point-in-time recovery on."""

    def __init__(self, scope: Construct, *, key: kms.IKey, removal: RemovalPolicy) -> None:
        self.table = dynamodb.Table(
            scope,
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
        acknowledge(
            self.table,
            {
                f"{pack}-DynamoDBInBackupPlan": "Claims are short-lived de-duplication records (TTL = patience + 7 "
                "days) with point-in-time recovery on; losing them can at worst re-run a job, never lose data."
                for pack in ("HIPAA.Security", "NIST.800.53.R5")
            },
        )

    def grant_claims(self, grantee: iam.IGrantable) -> iam.Grant:
        """Claim, read and release items (no scans, no table-wide actions)."""
        return self.table.grant(grantee, *CLAIM_ACTIONS)


class TriggerFunction(BatchFunction):
    """The trigger consumes ``inbox`` in batches (window ``window_seconds``, partial batch responses), claims each
    object version in ``claims``, writes a manifest under ``manifests/`` and starts transform jobs named
    ``<job_name_prefix>-<hash>`` on ``targets`` (only those models and instance types)."""

    def __init__(
        self,
        scope: Construct,
        *,
        functions: FunctionBuilder,
        environment: Mapping[str, str],
        inbox: BatchQueue,
        claims: ClaimsTable,
        window_seconds: int,
        bucket: s3.IBucket,
        key: kms.IKey,
        execution_role: iam.IRole,
        targets: Sequence[BatchTarget],
        job_name_prefix: str,
    ) -> None:
        self.job_name_prefix = job_name_prefix
        job_arns = nag_arn(scope, "sagemaker", f"transform-job/{job_name_prefix}-*")
        bucket_arn = f"<{logical_id(bucket)}.Arn>"
        super().__init__(
            functions.build(
                "Trigger",
                function_findings={
                    "HIPAA.Security-LambdaDLQ": _VIA_EVENT_SOURCE,
                    "NIST.800.53.R5-LambdaDLQ": _VIA_EVENT_SOURCE,
                },
                package="batch_trigger",
                timeout=TRIGGER_TIMEOUT,
                environment=environment,
                description="Batch path: S3 events from SQS → claimed, coalesced SageMaker transform jobs",
                role_description="Batch trigger: claims files, starts transform jobs",
                role_findings={
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.manifests}*]": "The trigger writes and reads "
                    "one manifest per job, named after the job, and its scratch folders under manifests/ (a scan "
                    "per object version read, a job's staged files): only the manifests/ prefix.",
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.input}*]": "Confirms each input file "
                    "(HeadObject, any key under input/), reads the first 256 KB of a job's files to size its "
                    "mini-batches and reads a file once to find records larger than the payload limit (copying "
                    "parts of that version into its re-staged copy): read only, input/ only.",
                    **{
                        f"AwsSolutions-IAM5[Resource::{bucket_arn}/{prefix}*]": "The re-staged copy of a file (one per "
                        "object version, under manifests/_scans/) and a job's staged files (manifests/_staged/<job>/)"
                        " are multipart uploads with run-time names: aborting a failed one, in those folders only."
                        for prefix in (SCANS_PREFIX, STAGED_PREFIX)
                    },
                    f"AwsSolutions-IAM5[Resource::{bucket_arn}/{PREFIXES.errors}*{STATUS_SUFFIX}]": "Status records of "
                    "files refused before any job (empty, unsupported, keys too long, given up), one per input key: "
                    "only *.status.json under errors/.",
                    f"AwsSolutions-IAM5[Resource::{job_arns}]": "Job names are derived at run time from the files "
                    "they process; the wildcard is limited to this stack's job-name prefix.",
                    "AwsSolutions-IAM5[Resource::*]": "sagemaker:ListTransformJobs supports no resource-level "
                    "permissions; it counts this stack's running jobs for the concurrency cap.",
                    "AwsSolutions-IAM5[Action::kms:GenerateDataKey*]": "GenerateDataKey and "
                    "GenerateDataKeyWithoutPlaintext on the stack key only, for SSE-KMS objects, queue and table.",
                },
            )
        )
        self.event_source = sources.SqsEventSource(
            inbox.queue,
            batch_size=BATCH_SIZE_WITH_WINDOW if window_seconds else BATCH_SIZE_WITHOUT_WINDOW,
            max_batching_window=Duration.seconds(window_seconds) if window_seconds else None,
            report_batch_item_failures=True,
            max_concurrency=TRIGGER_MAX_CONCURRENCY,
        )
        self.function.add_event_source(self.event_source)
        claims.grant_claims(self.function)
        self._grant(scope, bucket, key, execution_role, targets)
        checkov_skip(self.function, "CKV_AWS_116", "Invoked by an SQS event source whose queue has a DLQ.")

    def _grant(
        self,
        scope: Construct,
        bucket: s3.IBucket,
        key: kms.IKey,
        execution_role: iam.IRole,
        targets: Sequence[BatchTarget],
    ) -> None:
        allow = self.allow
        jobs = transform_job_arn(scope, self.job_name_prefix)
        allow("UseStackKey", ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey*", "kms:DescribeKey"], [key.key_arn])
        allow(
            "LetSageMakerEncryptJobVolumes",
            ["kms:CreateGrant"],
            [key.key_arn],
            Bool={"kms:GrantIsForAWSResource": "true"},
        )
        # A missing manifest, or an input file deleted since its event, answers 404 (not 403) only with ListBucket.
        allow(
            "ListManifestsAndInputs",
            ["s3:ListBucket"],
            [bucket.bucket_arn],
            StringLike={"s3:prefix": [f"{PREFIXES.manifests}*", f"{PREFIXES.input}*"]},
        )
        allow(
            "ReadWriteManifests", ["s3:GetObject", "s3:PutObject"], [bucket.arn_for_objects(f"{PREFIXES.manifests}*")]
        )
        # The scans (zstc_contract.layout.scan_key, scan_copy_key) and a job's staged files (staged_prefix) lie under
        # manifests/ too: ReadWriteManifests covers their gets and puts, including a multipart upload's create, part
        # and complete calls (s3:PutObject); parts copied from an input's version read it with SampleInputFiles'
        # s3:GetObjectVersion. Only aborting a failed upload is added, in those two folders.
        allow(
            "AbortScratchUploads",
            ["s3:AbortMultipartUpload"],
            [bucket.arn_for_objects(f"{SCANS_PREFIX}*"), bucket.arn_for_objects(f"{STAGED_PREFIX}*")],
        )
        # HeadObject of each input file (the event's version) before claiming it, and its first bytes, to size the
        # job's mini-batches (zstc_contract.sizing).
        allow(
            "SampleInputFiles", ["s3:GetObject", "s3:GetObjectVersion"], [bucket.arn_for_objects(f"{PREFIXES.input}*")]
        )
        allow("WriteEmptyFileStatus", ["s3:PutObject"], [bucket.arn_for_objects(f"{PREFIXES.errors}*{STATUS_SUFFIX}")])
        # Only with this stack's batch models, on the configured instance types.
        allow(
            "StartThisStacksTransformJobs",
            ["sagemaker:CreateTransformJob"],
            [jobs],
            ArnEquals={"sagemaker:ModelArn": _unique(t.model.model_arn for t in targets)},
            **{"ForAllValues:StringEquals": {"sagemaker:InstanceTypes": [t.instance_type for t in targets]}},
        )
        allow("DescribeAndTagThisStacksTransformJobs", ["sagemaker:DescribeTransformJob", "sagemaker:AddTags"], [jobs])
        # List* actions support no resource-level permissions.
        allow("CountRunningTransformJobs", ["sagemaker:ListTransformJobs"], ["*"])
        # CreateTransformJob takes no role (the model carries it); the scoped PassRole only covers the model's
        # execution role should SageMaker ever check it on this path.
        allow(
            "PassOnlyTheExecutionRoleToSageMaker",
            ["iam:PassRole"],
            [execution_role.role_arn],
            StringEquals={"iam:PassedToService": "sagemaker.amazonaws.com"},
        )


def _unique(values: Iterable[str]) -> list[str]:
    """Distinct values in their first order (model ARNs are tokens: no sorting)."""
    return list(dict.fromkeys(values))
