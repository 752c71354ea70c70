"""Deploy-time model import: a custom resource that stages the pinned Hub model in the stack's bucket."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from aws_cdk import CustomResource, Duration, RemovalPolicy
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_assets as s3_assets
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from stacks.checks import INLINE_POLICY_REASON, acknowledge, checkov_skip, logical_id
from stacks.code_assets import ASSET_EXCLUDE, ROOT, function_code, function_handler
from stacks.config import Settings
from stacks.storage import PREFIXES

HANDLER_CODE: Final = ROOT / "model" / "code"
# The one list of architectures the handler supports (owned by the handler): read at synth, passed to the importer.
SUPPORTED_ARCHITECTURES: Final = HANDLER_CODE / "supported_architectures.json"

# Streaming keeps memory flat whatever the model's size; the memory buys CPU for gzip and hashing (2 GB ≈ 1.2 vCPU).
MEMORY_MB: Final = 2048
# Lambda's maximum. bart-large-mnli (1.6 GB) takes a few minutes; the importer stops a minute early and reports.
TIMEOUT: Final = Duration.minutes(15)
# CloudFormation gives up on a silent custom resource (a crashed function) after this, instead of after one hour.
SERVICE_TIMEOUT: Final = Duration.minutes(20)

_OUTSIDE_VPC = (
    "The importer downloads the model from the Hugging Face Hub at deploy time, so it runs outside the VPC (which "
    "has no internet egress by design); it touches only the model prefix of the bucket and the stack's key."
)
_NO_DLQ = (
    "CloudFormation invokes the importer as a custom resource; every outcome, failures included, is reported back "
    "to CloudFormation, and retries are disabled: a dead-letter queue would hold nothing actionable."
)
_NO_RESERVED_CONCURRENCY = (
    "The importer runs once per deployment; reserving concurrency would take capacity from the account's pool "
    "(and fails on accounts with the minimum concurrency quota)."
)


def supported_model_types(path: Path = SUPPORTED_ARCHITECTURES) -> list[str]:
    """The ``config.json`` ``model_type`` values the handler supports, sorted; synthesis fails on a bad file."""
    try:
        types = json.loads(path.read_text(encoding="utf-8"))["model_types"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} must be JSON with a 'model_types' list of strings: {error}") from None
    if not isinstance(types, list) or not types or not all(isinstance(t, str) and t for t in types):
        raise ValueError(f"{path}: 'model_types' must be a non-empty list of strings, got {types!r}")
    return sorted(set(types))


class ModelImport(Construct):
    """Stages ``settings.model_id`` at ``settings.model_revision`` as ``model.tar.gz`` under ``models/`` of ``bucket``.

    A Lambda-backed custom resource (``Custom::ModelImport``) copies the model's config, tokenizer and safetensors
    files from the Hugging Face Hub, verifies each against the Hub's checksums, adds our handler (``model/code/``,
    shipped as an asset) under ``code/`` and streams the tarball into S3, encrypted with ``key``. The location is
    ``models/<model_id>/<revision>/<code hash>/model.tar.gz``: a re-deploy with the same model, revision and handler
    copies nothing; a change of any of them writes a new artifact, and the model that uses :attr:`model_data_url`
    is replaced. A model whose ``config.json`` ``model_type`` is not in ``model/code/supported_architectures.json``
    (read at synth, passed as ``SupportedModelTypes``) fails the deployment with a message naming the supported ones.
    When the resource is deleted the artifact is kept if ``settings.retain_data``, deleted otherwise.

    The function runs outside the VPC (it needs the Hub), may read and write only ``models/*`` of the bucket, use
    only ``key``, read only the handler asset and, when ``settings.hf_token_secret`` is set, only that secret.
    ``hub_endpoint`` overrides the Hub's URL (a mirror); by default ``https://huggingface.co``.
    """

    def __init__(
        self,
        scope: Construct,
        id_: str,
        *,
        settings: Settings,
        bucket: s3.IBucket,
        key: kms.IKey,
        log_retention: logs.RetentionDays,
        hub_endpoint: str | None = None,
    ) -> None:
        super().__init__(scope, id_)
        prefix = PREFIXES.models

        handler_code = s3_assets.Asset(self, "HandlerCode", path=str(HANDLER_CODE), exclude=ASSET_EXCLUDE)

        self.log_group = logs.LogGroup(
            self,
            "Logs",
            encryption_key=key,
            retention=log_retention,
            removal_policy=RemovalPolicy.RETAIN if settings.retain_data else RemovalPolicy.DESTROY,
        )
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="Model importer: writes the model artifact under models/ of the data bucket",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="WriteLogs",
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[self.log_group.log_group_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ListModelPrefix",
                actions=["s3:ListBucket"],
                resources=[bucket.bucket_arn],
                conditions={"StringLike": {"s3:prefix": [f"{prefix}*"]}},
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadWriteModelArtifacts",
                actions=["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:DeleteObject"],
                resources=[bucket.arn_for_objects(f"{prefix}*")],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="UseStackKey",
                actions=["kms:GenerateDataKey", "kms:Decrypt"],
                resources=[key.key_arn],
            )
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                sid="ReadHandlerCodeAsset",
                actions=["s3:GetObject"],
                resources=[handler_code.bucket.arn_for_objects(handler_code.s3_object_key)],
            )
        )
        if settings.hf_token_secret:
            secret = secretsmanager.Secret.from_secret_name_v2(self, "HubToken", settings.hf_token_secret)
            secret.grant_read(self.role)

        environment = {"LOG_LEVEL": "INFO"}
        if hub_endpoint:
            environment["HF_ENDPOINT"] = hub_endpoint
        self.function = lambda_.Function(
            self,
            "Function",
            description="Stages the pinned Hugging Face model in the data bucket (CloudFormation custom resource)",
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=function_handler("model_importer"),
            code=function_code("model_importer"),
            memory_size=MEMORY_MB,
            timeout=TIMEOUT,
            role=self.role,
            environment=environment,
            environment_encryption=key,
            log_group=self.log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            retry_attempts=0,
        )
        # The role's policy must exist before CloudFormation invokes the function.
        self.function.node.add_dependency(self.role)

        self.resource = CustomResource(
            self,
            "Artifact",
            service_token=self.function.function_arn,
            resource_type="Custom::ModelImport",
            service_timeout=SERVICE_TIMEOUT,
            properties={
                "ModelId": settings.model_id,
                "ModelRevision": settings.model_revision,
                "Bucket": bucket.bucket_name,
                "Prefix": prefix,
                "KmsKeyArn": key.key_arn,
                "HandlerCodeBucket": handler_code.s3_bucket_name,
                # The key holds the asset's content hash: a handler change updates the resource.
                "HandlerCodeKey": handler_code.s3_object_key,
                "HfTokenSecret": settings.hf_token_secret or "",
                "RetainData": "true" if settings.retain_data else "false",
                "SupportedModelTypes": supported_model_types(),
            },
        )

        self.model_data_url: str = self.resource.get_att_string("ModelDataUrl")
        """``s3://<bucket>/models/<model_id>/<revision>/<code hash>/model.tar.gz`` (a token)."""

        self._acknowledge(bucket)

    def _acknowledge(self, bucket: s3.IBucket) -> None:
        findings = {
            **INLINE_POLICY_REASON,
            f"AwsSolutions-IAM5[Resource::<{logical_id(bucket)}.Arn>/{PREFIXES.models}*]": "The importer reads "
            "and writes model artifacts only: the wildcard is the models/ prefix of the data bucket.",
            "AwsSolutions-L1": "Python 3.13 is the project's Lambda runtime (one runtime for all functions, "
            "tested locally); moving to a newer one is a project-wide change.",
            "HIPAA.Security-LambdaInsideVPC": _OUTSIDE_VPC,
            "NIST.800.53.R5-LambdaInsideVPC": _OUTSIDE_VPC,
            "HIPAA.Security-LambdaDLQ": _NO_DLQ,
            "NIST.800.53.R5-LambdaDLQ": _NO_DLQ,
            "HIPAA.Security-LambdaConcurrency": _NO_RESERVED_CONCURRENCY,
            "NIST.800.53.R5-LambdaConcurrency": _NO_RESERVED_CONCURRENCY,
        }
        acknowledge(self, findings)
        checkov_skip(self.function, "CKV_AWS_117", _OUTSIDE_VPC)
        checkov_skip(self.function, "CKV_AWS_116", _NO_DLQ)
        checkov_skip(self.function, "CKV_AWS_115", _NO_RESERVED_CONCURRENCY)
