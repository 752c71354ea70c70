"""The trigger sizes each job's mini-batches from the target's pair rate and the files' first lines (moto)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.integration.batch.batch_moto import BUCKET, Env
from zstc_contract.settings import Target
from zstc_contract.sizing import SAMPLE_BYTES, sample_lines

SHARED_CSV = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "new_years_resolutions_2015.csv"
LABELS = [
    "Health & Fitness", "Personal Growth", "Finance", "Career", "Education/Training", "Humor",
    "Family/Friends/Relationships", "Recreation & Leisure", "Time Management/Organization", "Philanthropic",
]  # fmt: skip


def tweets() -> bytes:
    with SHARED_CSV.open(encoding="utf-8", errors="replace", newline="") as handle:
        rows = list(csv.DictReader(handle))
    return "".join(
        json.dumps({"id": str(i), "inputs": r["text"], "parameters": {"candidate_labels": LABELS}}) + "\n"
        for i, r in enumerate(rows)
    ).encode("utf-8")


def targets(*items: Target) -> str:
    return json.dumps([t.to_json() for t in items])


def started_job(env: Env, key: str, body: bytes, **overrides: str) -> dict:
    env.put(key, body)
    result = env.trigger(env.settings(**overrides)).process([env.message(key, size=len(body))])
    assert result.failures == {}
    (job,) = env.jobs()
    return job


def test_the_default_cpu_target_sends_the_tweets_one_record_per_invocation(env: Env) -> None:
    # bart-large on ml.m5.xlarge: a 1 MB mini-batch (~3,000 tweets × 10 labels) would take ~7,700 s > 3,600 s
    cpu = Target("ml.m5.xlarge", "zs-cpu", None, pairs_per_second=4.144, tokens_per_pair=36.1)
    job = started_job(env, "input/tweets.jsonl", tweets(), BATCH_TARGETS=targets(cpu))
    assert job["BatchStrategy"] == "SingleRecord"
    assert job["MaxPayloadInMB"] == 1
    assert job["TransformInput"]["ContentType"] == "application/jsonlines"  # our handler: one JSON Lines record


def test_a_gpu_target_keeps_multi_record_mini_batches_within_a_quarter_of_the_timeout(env: Env) -> None:
    gpu = Target("ml.g4dn.xlarge", "zs-gpu", None, pairs_per_second=370.0, tokens_per_pair=40.5)
    job = started_job(env, "input/tweets.jsonl", tweets(), BATCH_TARGETS=targets(gpu), MAX_PAYLOAD_MB="6")
    assert job["BatchStrategy"] == "MultiRecord"
    # ~32,000 pair-equivalents per MB at 370 pairs/s: ~87 s per MB, so 6 MB (~520 s) fits within 900 s
    assert job["MaxPayloadInMB"] == 6


def test_the_payload_shrinks_when_a_full_one_would_be_too_long(env: Env) -> None:
    gpu = Target("ml.g4dn.xlarge", "zs-gpu", None, pairs_per_second=100.0, tokens_per_pair=40.5)
    job = started_job(env, "input/tweets.jsonl", tweets(), BATCH_TARGETS=targets(gpu), MAX_PAYLOAD_MB="6")
    # the largest whole MB within a quarter of 3,600 s at the file's sampled density
    density = sample_lines(tweets()[:SAMPLE_BYTES], complete=False, tokens_per_pair=40.5).weighted_pairs_per_mb
    mb = job["MaxPayloadInMB"]
    assert job["BatchStrategy"] == "MultiRecord" and 1 <= mb < 6
    assert mb * density / 100.0 <= 900 < (mb + 1) * density / 100.0


def test_without_a_rate_the_configured_batching_stands(env: Env) -> None:
    unknown = Target("ml.g5.xlarge", "zs-gpu", None)
    job = started_job(env, "input/tweets.jsonl", tweets(), BATCH_TARGETS=targets(unknown), MAX_PAYLOAD_MB="3")
    assert (job["BatchStrategy"], job["MaxPayloadInMB"]) == ("MultiRecord", 3)


def test_an_unreadable_sample_leaves_the_file_out_and_the_job_keeps_the_configured_batching(env: Env) -> None:
    from botocore.exceptions import ClientError

    from functions.batch_trigger.sampling import read_heads

    class DeniedS3:
        def get_object(self, **request: str) -> None:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "denied"}}, "GetObject")

    class Log:
        def __init__(self) -> None:
            self.warnings: list[tuple[str, dict]] = []

        def warning(self, message: str, extra: dict) -> None:
            self.warnings.append((message, extra))

    log = Log()
    obj = type("Obj", (), {"bucket": "b", "key": "input/a.jsonl", "revision": "v-1", "size": 10})()
    assert read_heads(DeniedS3(), [obj], log) == []
    assert log.warnings == [("Could not sample an input file", {"key": "input/a.jsonl", "error_code": "AccessDenied"})]


def test_the_sample_reads_the_version_the_event_named(env: Env) -> None:
    from functions.batch_trigger.sampling import read_heads

    env.s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = env.s3.put_object(Bucket=BUCKET, Key="input/v.jsonl", Body=b'{"inputs": "old"}\n')
    env.s3.put_object(Bucket=BUCKET, Key="input/v.jsonl", Body=b'{"inputs": "new"}\n')
    obj = type(
        "Obj",
        (),
        {"bucket": BUCKET, "key": "input/v.jsonl", "revision": "v-" + first["VersionId"], "size": 18},
    )()
    assert read_heads(env.s3, [obj], None) == [(b'{"inputs": "old"}\n', True)]
