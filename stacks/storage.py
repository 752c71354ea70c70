"""The data bucket (inputs, outputs, errors, model artifacts) and its access-log bucket."""

from __future__ import annotations

from typing import Final

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from constructs import Construct

from stacks.checks import acknowledge, checkov_skip
from zstc_contract.layout import JOBS_FOLDER, SCANS_FOLDER, STAGED_FOLDER
from zstc_contract.layout import PREFIXES as PREFIXES  # re-exported: the stacks read the layout from here

# The batch path's scratch folders (zstc_contract.layout): the jobs' own output folders, the jobs' staged files and
# the trigger's scans. The lifecycle rules below and the functions' grants use these.
JOB_FOLDERS_PREFIX: Final = f"{PREFIXES.output}{JOBS_FOLDER}"
STAGED_PREFIX: Final = f"{PREFIXES.manifests}{STAGED_FOLDER}"
SCANS_PREFIX: Final = f"{PREFIXES.manifests}{SCANS_FOLDER}"

# The batch path's scratch folders, expired by lifecycle (days after each object's creation; S3 removes an object at
# the first midnight UTC after that, never earlier). The figures they are derived from:
# - A transform job is allowed 7 days to run: the claims' TTL is the patience plus the same 7 days
#   (stacks/batch_environment.py, CLAIM_TTL_SECONDS).
LONGEST_JOB_DAYS: Final = 7
# - The batch queues keep a message 14 days (SQS's maximum, stacks.batch_queue.RETENTION; a test keeps the two
#   equal), counted from the S3 event (a standard queue's dead-letter queue keeps the enqueue time): no file is
#   deferred longer (batch_patience_hours is at most 336 h). The job-outcome function's dead-letter queue keeps a job
#   event that long after EventBridge gave up, for the replay docs/operations.md describes.
QUEUE_RETENTION_DAYS: Final = 14
# - EventBridge retries a job's state event for 24 hours (stacks.batch_outcome.EVENT_MAX_AGE; a test keeps the two
#   equal) before it dead-letters it.
EVENT_RETRY_DAYS: Final = 1
# output/_jobs/<job>/: the job's own output, which the job-outcome function copies to output/<file>.out; after that
# only an audit copy. It must outlive the last moment the outcome can still copy it: an output written at the start
# of the longest job, its event retried for a day, then replayed from the outcome's dead-letter queue on its last
# day: 7 + 1 + 14 = 22 days (canonical outputs are kept as output_expiry_days says).
JOB_FOLDER_EXPIRY_DAYS: Final = LONGEST_JOB_DAYS + EVENT_RETRY_DAYS + QUEUE_RETENTION_DAYS
# manifests/_staged/<job>/: the files of a job with re-staged files, copied there by the trigger when it creates the
# job, read by SageMaker while it runs; the job-outcome function deletes the folder once it recorded the outcome, so
# this removes only what a failure left. 14 + 7 = 21 days: the longest a file can wait for its job plus the longest
# job, so a copy is never removed under a job, whenever in the file's wait it was made.
STAGED_EXPIRY_DAYS: Final = QUEUE_RETENTION_DAYS + LONGEST_JOB_DAYS
# manifests/_scans/: per object version read, what the trigger found (<sha256>.json) and the copy with its oversized
# records rejected (<sha256>.jsonl, the source of the job's staged files). Needed only while the file's message can
# still come back to the trigger: at most 14 days after its S3 event, which precedes the read; one day's margin:
# 15 days. Nothing else deletes them. (A message redriven from a dead-letter queue is a new message with a new
# retention: the trigger cannot count on finding an older scan.)
SCAN_EXPIRY_DAYS: Final = QUEUE_RETENTION_DAYS + 1
# Overwritten or deleted scratch objects (the outcome's delete only adds a delete marker: versioning is on) are not
# worth recovering: their noncurrent versions go after 1 day instead of the bucket's 30.
SCRATCH_NONCURRENT_DAYS: Final = 1
# The trigger's multipart uploads (the scan copies, large staged copies) are made within one invocation (2 minutes):
# one still open a day later was left by an invocation that timed out, and its parts are billed until aborted (the
# bucket-wide rule waits 7 days).
SCRATCH_UPLOAD_ABORT_DAYS: Final = 1


class DataStorage(Construct):
    """An SSE-KMS bucket (bucket key on) for all data, plus a bucket for its server access logs.

    Defaults: public access blocked, TLS 1.2+ only, versioning on (an overwritten input or output can be
    recovered for 30 days), incomplete multipart uploads aborted after 7 days, outputs kept forever unless
    ``output_expiry_days`` is set. The batch path's scratch folders expire: the jobs' own output folders
    (``output/_jobs/``, copied to ``output/<file>.out``) after :data:`JOB_FOLDER_EXPIRY_DAYS`, the jobs' staged files
    (``manifests/_staged/``) after :data:`STAGED_EXPIRY_DAYS`, the trigger's scans and re-staged copies
    (``manifests/_scans/``) after :data:`SCAN_EXPIRY_DAYS`, their noncurrent versions after
    :data:`SCRATCH_NONCURRENT_DAYS`. With ``retain`` (the default) both buckets
    survive stack deletion; without it they are emptied and deleted with the stack.
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
            *scratch_rules(),
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


def scratch_rules() -> list[s3.LifecycleRule]:
    """The lifecycle rules of the batch path's scratch folders (ids fixed: a rule is known by its id)."""
    noncurrent = Duration.days(SCRATCH_NONCURRENT_DAYS)
    return [
        s3.LifecycleRule(
            id="ExpireJobFolders",
            prefix=JOB_FOLDERS_PREFIX,
            expiration=Duration.days(JOB_FOLDER_EXPIRY_DAYS),
            noncurrent_version_expiration=noncurrent,
        ),
        s3.LifecycleRule(
            id="ExpireStagedFiles",
            prefix=STAGED_PREFIX,
            expiration=Duration.days(STAGED_EXPIRY_DAYS),
            noncurrent_version_expiration=noncurrent,
            abort_incomplete_multipart_upload_after=Duration.days(SCRATCH_UPLOAD_ABORT_DAYS),
        ),
        s3.LifecycleRule(
            id="ExpireScans",
            prefix=SCANS_PREFIX,
            expiration=Duration.days(SCAN_EXPIRY_DAYS),
            noncurrent_version_expiration=noncurrent,
            abort_incomplete_multipart_upload_after=Duration.days(SCRATCH_UPLOAD_ABORT_DAYS),
        ),
    ]
