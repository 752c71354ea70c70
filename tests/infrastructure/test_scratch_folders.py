"""The batch path's scratch folders: the jobs' own output folders (``output/_jobs/``), the re-staged files
(``manifests/_staged/``) and the trigger's scans, each a record and possibly a re-staged copy (``manifests/_scans/``).
They expire by lifecycle, after anything can still need them, and the grants that write, read and delete them stay
inside their folders."""

from __future__ import annotations

import fnmatch
import json
import re
from typing import Any

import pytest

from stacks import storage
from stacks.batch_outcome import EVENT_MAX_AGE
from stacks.batch_queue import RETENTION
from stacks.config import ConfigError, Settings
from tests.infrastructure.test_batch import as_list, env_of, plain, statements_of
from tests.infrastructure.test_foundation import data_bucket, execution_role_statements
from zstc_contract.layout import (
    INPUT_SUFFIX,
    MANIFEST_SUFFIX,
    PREFIXES,
    SCANS_FOLDER,
    STAGED_FOLDER,
    input_key,
    job_output_prefix,
    manifest_key,
    output_key,
    scan_key,
    staged_prefix,
    status_key,
    versions_key,
)
from zstc_contract.settings import Env

JOB = "zeroshotclassification-batch-0123456789abcdef"
RELATIVE = "a/b.jsonl"
JOB_OUTPUT = f"{job_output_prefix(PREFIXES.output, JOB)}{RELATIVE}.out"
STAGED = staged_prefix(PREFIXES.manifests, JOB) + RELATIVE
SCAN = scan_key(PREFIXES.manifests, f"{input_key(PREFIXES.input, RELATIVE)}#version-1")
# the re-staged copy beside the record (layout.scan_copy_key: the record's name with the input suffix)
SCAN_COPY = SCAN.removesuffix(MANIFEST_SUFFIX) + INPUT_SUFFIX
INPUT = input_key(PREFIXES.input, RELATIVE)
# What no scratch rule may reach: inputs, canonical outputs, status records, manifests and their sidecars.
KEPT = (
    INPUT,
    output_key(PREFIXES.output, RELATIVE),
    status_key(PREFIXES.output, RELATIVE),
    status_key(PREFIXES.errors, RELATIVE),
    manifest_key(PREFIXES.manifests, JOB),
    versions_key(PREFIXES.manifests, JOB),
)


# --- lifecycle ------------------------------------------------------------------------------------------------------


def rules(s: Any) -> list[dict[str, Any]]:
    return list(data_bucket(s)["LifecycleConfiguration"]["Rules"])


def applying(s: Any, key: str, field: str) -> list[Any]:
    """The values of ``field`` of every enabled rule whose filter covers ``key`` (S3 honours the shortest)."""
    return [
        r[field] for r in rules(s) if r["Status"] == "Enabled" and key.startswith(r.get("Prefix", "")) and field in r
    ]


def expiry_days(s: Any, key: str) -> int | None:
    days = applying(s, key, "ExpirationInDays")
    return min(days) if days else None


def noncurrent_days(s: Any, key: str) -> int:
    return min(v["NoncurrentDays"] for v in applying(s, key, "NoncurrentVersionExpiration"))


def abort_days(s: Any, key: str) -> int:
    return min(v["DaysAfterInitiation"] for v in applying(s, key, "AbortIncompleteMultipartUpload"))


def test_each_scratch_folder_expires_by_its_own_rule(synth):
    s = synth()
    by_id = {r["Id"]: r for r in rules(s)}
    assert JOB_OUTPUT.startswith(by_id["ExpireJobFolders"]["Prefix"])
    assert STAGED.startswith(by_id["ExpireStagedFiles"]["Prefix"])
    assert SCAN.startswith(by_id["ExpireScans"]["Prefix"]) and SCAN_COPY.startswith(by_id["ExpireScans"]["Prefix"])
    assert expiry_days(s, JOB_OUTPUT) == storage.JOB_FOLDER_EXPIRY_DAYS == 22
    assert expiry_days(s, STAGED) == storage.STAGED_EXPIRY_DAYS == 21
    assert expiry_days(s, SCAN) == expiry_days(s, SCAN_COPY) == storage.SCAN_EXPIRY_DAYS == 15
    # deleted or overwritten scratch objects are not kept as noncurrent versions for the bucket's 30 days
    for key in (JOB_OUTPUT, STAGED, SCAN, SCAN_COPY):
        assert noncurrent_days(s, key) == 1, key
    # an abandoned multipart upload of the trigger's is aborted after a day; elsewhere the bucket's 7 days hold
    assert abort_days(s, STAGED) == abort_days(s, SCAN_COPY) == 1
    assert abort_days(s, JOB_OUTPUT) == abort_days(s, INPUT) == 7


def test_nothing_but_the_scratch_folders_expires_by_default(synth):
    s = synth()
    for key in KEPT:
        assert expiry_days(s, key) is None, key
        assert noncurrent_days(s, key) == 30, key  # the bucket-wide ExpireOldVersions rule, as before


def test_a_shorter_output_expiry_also_covers_the_job_folders(synth):
    s = synth(output_expiry_days=5)
    assert expiry_days(s, JOB_OUTPUT) == expiry_days(s, output_key(PREFIXES.output, RELATIVE)) == 5
    assert expiry_days(s, STAGED) == storage.STAGED_EXPIRY_DAYS
    assert expiry_days(s, manifest_key(PREFIXES.manifests, JOB)) is None


def test_the_figures_behind_the_expiry_are_the_stacks_own(synth):
    # the queues' retention and EventBridge's retries, as the stack configures them
    assert RETENTION.to_days() == storage.QUEUE_RETENTION_DAYS
    assert EVENT_MAX_AGE.to_hours() == storage.EVENT_RETRY_DAYS * 24
    # the job allowance is the claims' (TTL = patience + the allowance)
    for hours in (24, 336):
        env = env_of(synth(batch_patience_hours=hours), "BatchTrigger")
        assert int(env[Env.CLAIM_TTL_SECONDS]) == hours * 3600 + storage.LONGEST_JOB_DAYS * 86_400
    # no file waits longer than the queue keeps its message: the longest patience accepted is the retention
    longest = int(RETENTION.to_hours())
    assert Settings.from_context({"batch_patience_hours": longest}).batch_patience_hours == longest
    with pytest.raises(ConfigError):
        Settings.from_context({"batch_patience_hours": longest + 1})


def test_scratch_files_outlive_every_wait_that_can_still_need_them(synth):
    s = synth(batch_patience_hours=int(RETENTION.to_hours()))
    longest_job_hours = storage.LONGEST_JOB_DAYS * 24
    # a staged copy made at the file's first receive still serves the longest job started at its last
    assert expiry_days(s, STAGED) * 24 >= RETENTION.to_hours() + longest_job_hours
    # a scan is still there on the last receive of the file's message
    assert expiry_days(s, SCAN) * 24 > RETENTION.to_hours() and expiry_days(s, SCAN_COPY) * 24 > RETENTION.to_hours()
    # an output written when the longest job started must still be there when its event is replayed from the
    # outcome's dead-letter queue on the last day it keeps the event
    assert expiry_days(s, JOB_OUTPUT) * 24 >= longest_job_hours + EVENT_MAX_AGE.to_hours() + RETENTION.to_hours()


# --- grants ---------------------------------------------------------------------------------------------------------


def bucket_arn(s: Any) -> str:
    (logical,) = [k for k, v in s.resources("AWS::S3::Bucket").items() if "LoggingConfiguration" in v["Properties"]]
    return f"ref-{logical}.Arn"


def key_arn(s: Any) -> str:
    (logical,) = s.resources("AWS::KMS::Key")
    return f"ref-{logical}.Arn"


def allows(statements: list[dict[str, Any]], action: str, resource: str) -> bool:
    """Whether an Allow statement grants ``action`` on ``resource`` (IAM wildcards; conditions not evaluated)."""
    return any(
        st["Effect"] == "Allow"
        and any(fnmatch.fnmatchcase(action.lower(), a.lower()) for a in as_list(st["Action"]))
        and any(fnmatch.fnmatchcase(resource, plain(r)) for r in as_list(st["Resource"]))
        for st in statements
    )


def lists(statements: list[dict[str, Any]], bucket: str, prefix: str) -> bool:
    """Whether ``s3:ListBucket`` on ``bucket`` is allowed for the request prefix ``prefix``."""
    for st in statements:
        if st["Effect"] != "Allow" or not allows([st], "s3:ListBucket", bucket):
            continue
        patterns = st.get("Condition", {}).get("StringLike", {}).get("s3:prefix")
        if patterns is None or any(fnmatch.fnmatchcase(prefix, p) for p in as_list(patterns)):
            return True
    return False


def by_sid(statements: list[dict[str, Any]], sid: str) -> dict[str, Any]:
    (found,) = [st for st in statements if st.get("Sid") == sid]
    return found


def test_the_trigger_writes_scans_and_staged_files_with_multipart_uploads(synth):
    s = synth()
    trigger, bucket, key = statements_of(s, "BatchTrigger"), bucket_arn(s), key_arn(s)
    # create / upload_part / upload_part_copy / complete are s3:PutObject (the manifests grant), abort its own
    for scratch in (STAGED, SCAN_COPY):
        for action in ("s3:PutObject", "s3:GetObject", "s3:AbortMultipartUpload"):
            assert allows(trigger, action, f"{bucket}/{scratch}"), (action, scratch)
    for action in ("s3:PutObject", "s3:GetObject"):
        assert allows(trigger, action, f"{bucket}/{SCAN}"), action
    # upload_part_copy and the staged copy of an unchanged file read a version of the input
    assert allows(trigger, "s3:GetObjectVersion", f"{bucket}/{INPUT}")
    # SSE-KMS with the stack key (the bucket default) for the parts and for reading the input
    for action in ("kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt"):
        assert allows(trigger, action, key), action
    # aborting reaches nothing else; the trigger deletes nothing and writes no input
    for other in (INPUT, manifest_key(PREFIXES.manifests, JOB), JOB_OUTPUT):
        assert not allows(trigger, "s3:AbortMultipartUpload", f"{bucket}/{other}"), other
    assert not any(allows(trigger, "s3:DeleteObject", f"{bucket}/{k}") for k in (STAGED, SCAN, SCAN_COPY, INPUT))
    assert not allows(trigger, "s3:PutObject", f"{bucket}/{INPUT}")


def test_the_outcome_lists_and_deletes_the_jobs_staged_folder_and_deletes_nothing_else_under_manifests(synth):
    s = synth()
    outcome, bucket = statements_of(s, "BatchOutcome"), bucket_arn(s)
    assert lists(outcome, bucket, staged_prefix(PREFIXES.manifests, JOB))
    assert allows(outcome, "s3:DeleteObject", f"{bucket}/{STAGED}")
    for other in (manifest_key(PREFIXES.manifests, JOB), versions_key(PREFIXES.manifests, JOB), SCAN, SCAN_COPY, INPUT):
        assert not allows(outcome, "s3:DeleteObject", f"{bucket}/{other}"), other
    assert not lists(outcome, bucket, PREFIXES.manifests)  # no listing of the manifests or scan records
    assert not lists(outcome, bucket, f"{PREFIXES.manifests}{SCANS_FOLDER}")
    # every delete the role may make: the staged files plus what it already removed (outputs, status records)
    deletable = {
        plain(r)
        for st in outcome
        if any(a.startswith("s3:Delete") for a in as_list(st["Action"]))
        for r in as_list(st["Resource"])
    }
    assert deletable == {
        f"{bucket}/{PREFIXES.manifests}{STAGED_FOLDER}*",
        f"{bucket}/{PREFIXES.output}*.out",
        f"{bucket}/{PREFIXES.output}*.status.json",
        f"{bucket}/{PREFIXES.errors}*.status.json",
    }
    assert not any("s3:DeleteObjectVersion" in as_list(st["Action"]) for st in outcome)


@pytest.mark.parametrize("overrides", [{}, {"model_source": "hub"}], ids=["staged-model", "hub"])
def test_sagemaker_reads_the_staged_files_through_its_manifests_grant_and_gains_nothing(synth, overrides):
    s = synth(**overrides)
    role, bucket = execution_role_statements(s), bucket_arn(s)
    for action in ("s3:GetObject", "s3:GetObjectVersion"):
        assert allows(role, action, f"{bucket}/{STAGED}"), action
    assert allows(role, "kms:Decrypt", key_arn(s))
    assert not any(allows(role, a, f"{bucket}/{STAGED}") for a in ("s3:PutObject", "s3:DeleteObject"))
    assert STAGED_FOLDER not in json.dumps(role)  # no statement of its own: the manifests/ read covers the folder


def test_the_new_grants_name_only_the_scratch_folders(synth):
    s = synth()
    bucket = bucket_arn(s)
    staged, scans = f"{bucket}/{PREFIXES.manifests}{STAGED_FOLDER}*", f"{bucket}/{PREFIXES.manifests}{SCANS_FOLDER}*"
    aborting = by_sid(statements_of(s, "BatchTrigger"), "AbortScratchUploads")
    assert as_list(aborting["Action"]) == ["s3:AbortMultipartUpload"]
    assert [plain(r) for r in as_list(aborting["Resource"])] == [scans, staged]
    deleting = by_sid(statements_of(s, "BatchOutcome"), "DeleteStagedFiles")
    assert as_list(deleting["Action"]) == ["s3:DeleteObject"]
    assert [plain(r) for r in as_list(deleting["Resource"])] == [staged]
    listing = by_sid(statements_of(s, "BatchOutcome"), "ListStagedFiles")
    assert [plain(r) for r in as_list(listing["Resource"])] == [bucket]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": [f"{PREFIXES.manifests}{STAGED_FOLDER}*"]}}
    # the only whole-account resource stays the trigger's ListTransformJobs
    for function in ("BatchTrigger", "BatchOutcome"):
        star = [st.get("Sid") for st in statements_of(s, function) if "*" in as_list(st["Resource"])]
        assert star == (["CountRunningTransformJobs"] if function == "BatchTrigger" else []), star


def test_the_readme_states_when_each_scratch_folder_expires(repo_root):
    text = " ".join((repo_root / "README.md").read_text().split())
    for folder, days in (
        (job_output_prefix(PREFIXES.output, "<job>"), storage.JOB_FOLDER_EXPIRY_DAYS),
        (staged_prefix(PREFIXES.manifests, "<job>"), storage.STAGED_EXPIRY_DAYS),
        (f"{PREFIXES.manifests}{SCANS_FOLDER}", storage.SCAN_EXPIRY_DAYS),
    ):
        assert re.search(rf"`{re.escape(folder)}` (\([^)]*\) )?after {days} days", text), folder
