"""The data bucket (inputs, outputs, errors, model artifacts) and its access-log bucket."""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.checks import acknowledge, checkov_skip
from zstc_contract.layout import PREFIXES as PREFIXES  # re-exported: the stacks read the layout from here


class DataStorage(Construct):
    """An SSE-KMS bucket (bucket key on) for all data, plus a bucket for its server access logs.

    Defaults: public access blocked, TLS 1.2+ only, versioning on (an overwritten input or output can be
    recovered for 30 days), incomplete multipart uploads aborted after 7 days, outputs kept forever unless
    ``output_expiry_days`` is set. With ``retain`` (the default) both buckets survive stack deletion; without it
    they are emptied and deleted with the stack.
    """

    def __init__(self, scope: Construct, id_: str, *, key: kms.IKey, retain: bool, output_expiry_days: int) -> None:
        super().__init__(scope, id_)
        removal = RemovalPolicy.RETAIN if retain else RemovalPolicy.DESTROY

        # S3 server access logs can only be delivered to a bucket with SSE-S3 default encryption (not SSE-KMS).
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_PREFERRED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="ExpireAccessLogs",
                    expiration=Duration.days(365),
                    noncurrent_version_expiration=Duration.days(30),
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                )
            ],
            removal_policy=removal,
            auto_delete_objects=not retain,
        )
        checkov_skip(self.log_bucket, "CKV_AWS_18", "This is the access-log bucket itself; logging it would loop.")
        acknowledge(
            self.log_bucket,
            {
                "AwsSolutions-S1": "This is the access-log bucket itself; logging it to itself would loop.",
                "HIPAA.Security-S3BucketLoggingEnabled": "This is the access-log bucket itself.",
                "NIST.800.53.R5-S3BucketLoggingEnabled": "This is the access-log bucket itself.",
                "HIPAA.Security-S3DefaultEncryptionKMS": "S3 delivers server access logs only to SSE-S3 buckets.",
                "NIST.800.53.R5-S3DefaultEncryptionKMS": "S3 delivers server access logs only to SSE-S3 buckets.",
                "HIPAA.Security-S3BucketReplicationEnabled": "Access logs are kept in-region; replication is a "
                "per-organisation choice (cross-region bucket and role) outside this stack.",
                "NIST.800.53.R5-S3BucketReplicationEnabled": "Access logs are kept in-region; replication is a "
                "per-organisation choice (cross-region bucket and role) outside this stack.",
            },
        )

        rules = [
            s3.LifecycleRule(id="AbortIncompleteUploads", abort_incomplete_multipart_upload_after=Duration.days(7)),
            s3.LifecycleRule(id="ExpireOldVersions", noncurrent_version_expiration=Duration.days(30)),
        ]
        if output_expiry_days:
            for prefix in (PREFIXES.output, PREFIXES.errors):
                rules.append(
                    s3.LifecycleRule(
                        id=f"Expire{prefix.strip('/').title()}", prefix=prefix,
                        expiration=Duration.days(output_expiry_days),
                    )
                )  # fmt: skip
        self.bucket = s3.Bucket(
            self,
            "Data",
            encryption=s3.BucketEncryption.KMS,
            encryption_key=key,
            bucket_key_enabled=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            versioned=True,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="data-bucket/",
            lifecycle_rules=rules,
            removal_policy=removal,
            auto_delete_objects=not retain,
        )
        acknowledge(
            self.bucket,
            {
                "HIPAA.Security-S3BucketReplicationEnabled": "Inputs and results stay in the deployment region; "
                "cross-region replication is a per-organisation choice outside this stack (versioning is on).",
                "NIST.800.53.R5-S3BucketReplicationEnabled": "Inputs and results stay in the deployment region; "
                "cross-region replication is a per-organisation choice outside this stack (versioning is on).",
            },
        )
