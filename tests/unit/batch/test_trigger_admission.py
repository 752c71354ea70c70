"""The trigger's rules for files that get a status record instead of a job (#13 item 4): keys too long for their
derived keys, suffixes the model handler cannot read, and the last receive before the dead-letter queue (no AWS)."""

from __future__ import annotations

import json

import pytest

from functions.batch_trigger.logic import (
    GAVE_UP,
    LONG_KEY,
    NOT_SUPPORTED,
    RESERVED,
    S3Object,
    gave_up_reason,
    input_suffix,
    is_last_receive,
    refusal,
    refusal_notice,
    waited_seconds,
)
from stacks.batch_environment import max_receive_count
from tests.unit.batch.test_batch_trigger_logic import make_settings
from zstc_contract.jobs import job_name
from zstc_contract.layout import (
    MAX_KEY_BYTES,
    derived_keys,
    job_output_prefix,
    key_bytes,
    long_key_status_key,
    relative_key,
)
from zstc_contract.settings import SettingsError
from zstc_contract.status import FAILED, NOT_STARTED, StatusRecord
from zstc_local.resources import stack_settings


def obj(key: str) -> S3Object:
    return S3Object(bucket="data-bucket", key=key, revision="v-1", size=10)


def longest_real_key(key: str) -> int:
    """The longest key the batch path derives for ``key`` with a real job name of the stack."""
    settings = make_settings()
    keys = derived_keys(
        input_prefix=settings.input_prefix,
        output_prefix=settings.output_prefix,
        errors_prefix=settings.errors_prefix,
        manifest_prefix=settings.manifest_prefix,
        relative=relative_key(key, settings.input_prefix),
        job_name=job_name(settings.job_name_prefix, [obj(key)]),
    )
    return max(key_bytes(k) for k in keys)


def test_a_1015_byte_key_is_refused_with_a_status_under_its_hash() -> None:
    # Given an input key of 1,015 bytes (S3 accepts it; its output and status keys would not fit)
    key = "input/" + "k" * (1015 - len("input/") - len(".jsonl")) + ".jsonl"
    assert key_bytes(key) == 1015
    # When the trigger judges it
    refused = refusal(obj(key), make_settings())
    # Then it is refused as a long key, its status record under the SHA-256 of the key, with the limit in the reason
    assert refused is not None and refused.kind == LONG_KEY
    assert refused.status_key == long_key_status_key("errors/", key)
    assert refused.status_key.startswith("errors/_long-keys/") and key_bytes(refused.status_key) < 100
    assert "1015 bytes" in refused.reason and "1024" in refused.reason


def test_the_key_limit_is_the_longest_derived_key_including_the_job_folder() -> None:
    settings = make_settings()
    # Given the longest input key the trigger still accepts, and one byte more
    refused = refusal(obj("input/" + "x" * 1000 + ".jsonl"), settings)
    assert refused is not None
    allowed = int(refused.reason.rsplit("at most ", 1)[1].split(" ")[0])
    fits = "input/" + "y" * (allowed - len("input/") - len(".jsonl")) + ".jsonl"
    too_long = fits[:-6] + "z.jsonl"
    # Then the accepted one's every derived key (the job folder's full-key output name among them) fits in S3's
    # limit exactly, and one more byte is refused
    assert key_bytes(fits) == allowed and refusal(obj(fits), settings) is None
    assert longest_real_key(fits) == MAX_KEY_BYTES
    assert refusal(obj(too_long), settings) is not None
    job_folder = job_output_prefix(settings.output_prefix, job_name(settings.job_name_prefix, [obj(fits)]))
    assert key_bytes(job_folder + fits + ".out") == MAX_KEY_BYTES  # the full-key naming is the longest


def test_multibyte_keys_are_measured_in_utf8_bytes() -> None:
    # 330 characters of 3 bytes each: under 1,024 characters, over 1,024 bytes
    refused = refusal(obj("input/" + "名" * 330 + ".jsonl"), make_settings())
    assert refused is not None and refused.kind == LONG_KEY


@pytest.mark.parametrize(
    ("key", "suffix"),
    [
        ("input/a/data.jsonl.gz", ".jsonl.gz"),
        ("input/data.csv", ".csv"),
        ("input/data.json", ".json"),
        ("input/README", "(no suffix)"),
        ("input/.hidden", "(no suffix)"),
        ("input/v1.2/data.txt", ".txt"),
    ],
)
def test_other_suffixes_are_not_supported_with_a_status_next_to_the_others(key: str, suffix: str) -> None:
    refused = refusal(obj(key), make_settings())
    assert input_suffix(key) == suffix
    assert refused is not None and refused.kind == NOT_SUPPORTED
    assert refused.status_key == f"errors/{key[len('input/') :]}.status.json"
    assert refused.reason.startswith(f"not supported: {suffix}")
    assert "upload JSON Lines as .jsonl (uncompressed)" in refused.reason


def test_gzip_says_why() -> None:
    refused = refusal(obj("input/a.jsonl.gz"), make_settings())
    assert refused is not None and "gzip" in refused.reason


def test_a_file_under_the_reserved_jobs_folder_is_refused_before_any_job() -> None:
    # Given an input whose output would land inside the transform jobs' own folder (output/_jobs/...)
    refused = refusal(obj("input/_jobs/x/data.jsonl"), make_settings())
    # Then the trigger refuses it, with a status record next to the others and what to do
    assert refused is not None and refused.kind == RESERVED
    assert refused.status_key == "errors/_jobs/x/data.jsonl.status.json"
    assert "input/_jobs/" in refused.reason and "move the file" in refused.reason
    # while a folder that merely starts alike is work
    assert refusal(obj("input/_jobsx/data.jsonl"), make_settings()) is None


def test_the_staged_copy_of_a_file_counts_among_its_derived_keys() -> None:
    settings = make_settings()
    relative = "a/b.jsonl"
    keys = derived_keys(
        input_prefix=settings.input_prefix,
        output_prefix=settings.output_prefix,
        errors_prefix=settings.errors_prefix,
        manifest_prefix=settings.manifest_prefix,
        relative=relative,
        job_name="zstc-j",
    )
    assert "manifests/_staged/zstc-j/a/b.jsonl" in keys


def test_jsonl_under_the_limit_is_work() -> None:
    assert refusal(obj("input/a/b.jsonl"), make_settings()) is None


def test_the_last_receive_is_the_queues_max_receive_count() -> None:
    settings = make_settings(MAX_RECEIVE_COUNT="40")
    assert [n for n in range(1, 45) if is_last_receive(n, settings)] == [40, 41, 42, 43, 44]
    unknown = make_settings(MAX_RECEIVE_COUNT="")  # an environment without the queue's count
    assert not any(is_last_receive(n, unknown) for n in range(1, 2000))  # unknown: never


def test_the_stack_gives_the_trigger_its_queues_max_receive_count() -> None:
    from stacks.batch_environment import BatchResources, trigger_environment
    from zstc_contract.settings import Env, Target, TriggerSettings

    settings = stack_settings({"batch_patience_hours": 24})
    resources = BatchResources("b", "t", "https://sqs/q", "arn:aws:sns:r:1:t", "arn:k", "p-batch")
    env = trigger_environment(settings, resources, [Target("ml.m5.xlarge", "m", None)])
    read = TriggerSettings.from_env(env)
    assert read.max_receive_count == max_receive_count(settings) == int(env[Env.MAX_RECEIVE_COUNT])
    assert read.topic_arn == resources.topic_arn
    # And by the time of the last receive, the backoffs have waited at least the patience
    assert waited_seconds(read.max_receive_count, read) >= 24 * 3600


def test_max_receive_count_is_checked() -> None:
    with pytest.raises(SettingsError, match="MAX_RECEIVE_COUNT"):
        make_settings(MAX_RECEIVE_COUNT="0")


def test_the_gave_up_reason_says_how_long_why_and_what_to_do() -> None:
    settings = make_settings(MAX_RECEIVE_COUNT="3", BACKOFF_BASE_SECONDS="1800", BACKOFF_MAX_SECONDS="3600")
    reason = gave_up_reason(3, settings, "2 jobs running, the limit is 2")
    # 1,800 s + 3,600 s of backoff before the third receive
    assert reason.startswith("gave up after 1.5 hours (3 tries): 2 jobs running, the limit is 2")
    assert "dead-letter queue" in reason and "re-drive" in reason and "re-upload" in reason


def test_the_trigger_records_are_failed_not_started() -> None:
    rejected = StatusRecord.rejected(input="s3://b/input/a.csv", revision="v-1", reason="not supported: .csv")
    gave_up = StatusRecord.gave_up(input="s3://b/input/a.jsonl", revision="v-1", job_name=None, reason="gave up")
    for record in (rejected, gave_up):
        assert record.state == FAILED and record.job_status == NOT_STARTED
        assert StatusRecord.decode(record.encode()) == record
    assert list(rejected.to_json()) == ["input", "revision", "state", "job_status", "reason"]


def test_a_notice_lists_the_files_and_where_their_status_records_are() -> None:
    files = [(f"s3://data-bucket/input/{i}.csv", "not supported: .csv") for i in range(60)]
    notice = refusal_notice(make_settings(), NOT_SUPPORTED, files)
    body = json.loads(notice["Message"])
    assert len(notice["Subject"]) <= 100 and notice["Subject"].isascii()
    assert body["files"] == 60 and len(body["inputs"]) == 50
    assert body["inputs"][0] == {"input": files[0][0], "reason": files[0][1]}
    assert body["status_records"] == "s3://data-bucket/errors/"
    assert "dead-letter" in refusal_notice(make_settings(), GAVE_UP, files[:1])["Subject"]
