"""Pure logic of the batch trigger: names, parsing, grouping, the request, claims and backoff (no AWS)."""

from __future__ import annotations

import json
import random
from urllib.parse import quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from functions.batch_trigger.logic import (
    CLAIMED,
    STARTED,
    Claim,
    S3Object,
    claim_decision,
    group_objects,
    instance_quota_answer,
    is_deferrable,
    is_name_taken,
    manifest_body,
    parse_message,
    refusal_reason,
    transform_request,
    try_order,
)
from tests.declared_env import KEY_ARN, declared_trigger_environment
from zstc_contract.backoff import backoff_seconds, receives_for_patience
from zstc_contract.jobs import JOB_NAME, is_stack_job, job_name
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import SettingsError, Target, TriggerSettings, parse_targets

GPU, CPU = (
    Target("ml.g5.xlarge", "zstc-gpu", None),
    Target("ml.m5.xlarge", "zstc-cpu", KEY_ARN),
)
# The trigger's environment as the stack declares it (cdk.json's settings; synthesis adds each target's pair rate),
# with two targets: a GPU type first, then the CPU type. Each test overrides what it exercises.
BASE_ENV = declared_trigger_environment([GPU, CPU])


def make_settings(**overrides: str) -> TriggerSettings:
    return TriggerSettings.from_env({**BASE_ENV, **overrides})


def s3_message(*records: dict) -> str:
    return json.dumps({"Records": list(records)})


def s3_record(key: str, *, size: int = 10, bucket: str = "data-bucket", event: str = "ObjectCreated:Put") -> dict:
    return {
        "eventName": event,
        "s3": {"bucket": {"name": bucket}, "object": {"key": quote_plus(key, safe="/"), "size": size, "eTag": "e1"}},
    }


def obj(key: str, revision: str = "v-1") -> S3Object:
    return S3Object(bucket="data-bucket", key=key, revision=revision, size=1)


# --- job names ----------------------------------------------------------------------------------------------------

keys = st.text(min_size=1, max_size=1024).map(lambda k: "input/" + k)
revisions = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)


@settings(max_examples=300, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(keys, revisions), min_size=1, max_size=20))
def test_job_names_are_valid_and_independent_of_order(pairs: list[tuple[str, str]]) -> None:
    # Given any set of object versions, in any order, with duplicates
    objects = [obj(k, r) for k, r in pairs]
    shuffled = list(reversed(objects)) + objects[:1]
    # When the job name is derived twice
    name, again = job_name("zeroshot-batch", objects), job_name("zeroshot-batch", shuffled)
    # Then it matches SageMaker's pattern, starts with the prefix and is the same
    assert JOB_NAME.match(name) and len(name) <= 63
    assert name.startswith("zeroshot-batch-") and is_stack_job(name, "zeroshot-batch")
    assert name == again


@settings(max_examples=300, derandomize=True)
@given(keys, revisions, revisions)
def test_a_new_version_of_a_key_gets_a_new_job_name(key: str, first: str, second: str) -> None:
    # Given two versions of one key
    if first == second:
        return
    # Then their jobs have different names
    assert job_name("p", [obj(key, first)]) != job_name("p", [obj(key, second)])


def test_job_names_of_100000_random_keys_are_valid_and_collision_free() -> None:
    # Given 10^5 random keys: unicode, spaces, '+', '%', deep folders, up to 1024 characters, each with a version
    rng = random.Random(5)
    alphabet = "abcXYZ019 +%:/._-üé名字🙂\u00a0"
    names: set[str] = set()
    seen: set[tuple[str, str]] = set()
    while len(seen) < 100_000:
        length = rng.choice((1, 5, 20, 200, 1000))
        key = "input/" + "".join(rng.choices(alphabet, k=length))
        pair = (key, f"v{rng.randrange(3)}")
        if pair in seen:
            continue
        seen.add(pair)
        # When each gets a job of its own (window 0)
        name = job_name("zeroshot-batch", [obj(*pair)])
        # Then the name is valid
        assert JOB_NAME.match(name), name
        names.add(name)
    # And no two object versions share a name
    assert len(names) == 100_000


def test_another_stacks_jobs_are_not_counted_as_ours() -> None:
    # Given stack "zs" and another stack "zs-dev" whose prefix starts with ours
    ours = job_name("zs", [obj("input/a.jsonl")])
    theirs = job_name("zs-dev", [obj("input/a.jsonl")])
    # Then only our names are ours
    assert is_stack_job(ours, "zs") and not is_stack_job(theirs, "zs")


def test_the_generation_changes_the_name() -> None:
    assert job_name("p", [obj("input/a.jsonl")], 0) != job_name("p", [obj("input/a.jsonl")], 1)


# --- event parsing: keys ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key",
    [
        "input/red flower.jsonl",
        "input/c++.jsonl",
        "input/ü/名.jsonl",
        "input/a%2Bb.jsonl",
        "input/5:00.jsonl",
        "input/deep/er/and/deeper/folders/x.jsonl",
    ],
)
def test_event_keys_are_decoded_to_the_stored_key(key: str) -> None:
    # Given S3's URL-encoded key in an event
    parsed = parse_message(s3_message(s3_record(key)), make_settings())
    # Then the object's key is the exact stored key
    assert [o.key for o in parsed.objects] == [key]


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "data-bucket"}), "s3:TestEvent"),
        (s3_message(s3_record("input/folder/")), "folder placeholder"),
        (s3_message(s3_record("input/a.jsonl.status.json")), "status record"),
        (s3_message(s3_record("output/a.jsonl")), "outside the input prefix"),
        (s3_message(s3_record("manifests/a.jsonl")), "outside the input prefix"),
        (s3_message(s3_record("input/a.jsonl", bucket="other-bucket")), "not the stack's bucket"),
        (s3_message(s3_record("input/a.jsonl", event="ObjectRemoved:Delete")), "not an object creation"),
        ("not json", "not JSON"),
        (json.dumps([1, 2]), "not an S3 event"),
        (json.dumps({"Records": [{"s3": {}}]}), "malformed"),
    ],
)
def test_noise_is_ignored_with_a_reason(body: str, reason: str) -> None:
    parsed = parse_message(body, make_settings())
    assert parsed.objects == []
    assert len(parsed.ignored) == 1 and reason in parsed.ignored[0].reason


def test_other_suffixes_and_zero_sizes_are_files_for_s3_to_confirm() -> None:
    # Given events for a .jsonl.gz, a .csv and a .jsonl whose body claims 0 bytes
    keys = ["input/a.jsonl.gz", "input/b.csv", "input/c.jsonl"]
    body = s3_message(*(s3_record(k, size=0 if k.endswith(".jsonl") else 5) for k in keys))
    # Then each is a file (S3's HeadObject decides its size; the refusal rules its suffix), none is noise
    parsed = parse_message(body, make_settings())
    assert [o.key for o in parsed.objects] == keys and parsed.ignored == []


def test_the_version_id_identifies_the_object_version() -> None:
    # Given two events for one key: another version, and a re-delivery of the first
    record = s3_record("input/a.jsonl")
    first = {**record, "s3": {**record["s3"], "object": {**record["s3"]["object"], "versionId": "A", "sequencer": "1"}}}
    second = {
        **record,
        "s3": {**record["s3"], "object": {**record["s3"]["object"], "versionId": "B", "sequencer": "2"}},
    }
    parsed = parse_message(s3_message(first, second, first), make_settings())
    # Then the versions differ and the re-delivery is the same version
    ids = [o.claim_id for o in parsed.objects]
    assert ids[0] != ids[1] and ids[0] == ids[2]


# --- grouping, manifest, request -----------------------------------------------------------------------------------


def test_a_window_groups_a_batch_into_one_job() -> None:
    objects = [obj(f"input/{i}.jsonl") for i in range(50)]
    groups = group_objects(objects + objects[:5], window_seconds=60, max_files=1000)
    assert len(groups) == 1 and len(groups[0]) == 50


def test_window_zero_gives_one_job_per_object() -> None:
    objects = [obj(f"input/{i}.jsonl") for i in range(7)]
    assert [len(g) for g in group_objects(objects, window_seconds=0, max_files=1000)] == [1] * 7


def test_groups_are_capped_at_max_files_per_job() -> None:
    objects = [obj(f"input/{i}.jsonl") for i in range(25)]
    assert [len(g) for g in group_objects(objects, window_seconds=60, max_files=10)] == [10, 10, 5]


def test_manifest_lists_keys_relative_to_the_input_prefix() -> None:
    # Given objects with awkward keys
    settings_ = make_settings()
    objects = [obj("input/ü/名.jsonl"), obj("input/red flower.jsonl"), obj("input/a%2Bb.jsonl")]
    # When the manifest is written and read back
    manifest = decode_manifest(manifest_body(settings_, objects))
    prefix, entries = manifest.prefix, list(manifest.entries)
    # Then prefix + entry is each exact key (which SageMaker names each output after)
    assert prefix == "s3://data-bucket/input/"
    assert [prefix + e for e in entries] == [f"s3://data-bucket/{o.key}" for o in objects]


def test_request_keeps_the_line_for_line_contract() -> None:
    request = transform_request(make_settings(), "zeroshot-batch-x", "s3://data-bucket/manifests/x.json", 3, CPU)
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformOutput"]["AssembleWith"] == "Line"
    assert request["BatchStrategy"] == "MultiRecord"
    assert request["TransformInput"]["DataSource"]["S3DataSource"] == {
        "S3DataType": "ManifestFile",
        "S3Uri": "s3://data-bucket/manifests/x.json",
    }
    # each job writes in its own folder (the job-outcome function publishes output/<entry>.out from there)
    assert request["TransformOutput"]["S3OutputPath"] == "s3://data-bucket/output/_jobs/zeroshot-batch-x/"
    assert request["DataProcessing"]["JoinSource"] == "None"
    assert request["ModelClientConfig"] == {"InvocationsTimeoutInSeconds": 3600, "InvocationsMaxRetries": 1}
    assert request["MaxPayloadInMB"] * request["MaxConcurrentTransforms"] <= 100
    assert {"Key": "zstc:batch", "Value": "zeroshot-batch-x"} in request["Tags"]
    assert "VpcConfig" not in request and "RoleArn" not in request  # both come from the model


def test_request_encrypts_output_and_volume_with_the_stack_key() -> None:
    request = transform_request(make_settings(), "n", "s3://b/m.json", 1, CPU)
    assert request["TransformOutput"]["KmsKeyId"] == KEY_ARN
    assert request["TransformResources"]["VolumeKmsKeyId"] == KEY_ARN


def test_request_omits_the_volume_key_where_the_stack_decided_so() -> None:
    # The stack passes no volume key for NVMe instance types (SageMaker rejects one there).
    request = transform_request(make_settings(), "n", "s3://b/m.json", 1, GPU)
    assert "VolumeKmsKeyId" not in request["TransformResources"]
    assert request["TransformOutput"]["KmsKeyId"] == KEY_ARN


def test_request_runs_the_targets_model_on_its_instance_type() -> None:
    request = transform_request(make_settings(), "n", "s3://b/m.json", 1, GPU)
    assert request["ModelName"] == "zstc-gpu"
    assert request["TransformResources"] == {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1}
    assert {"Key": "zstc:instance-type", "Value": "ml.g5.xlarge"} in request["Tags"]


def test_targets_keep_the_configured_order() -> None:
    decided = [(t.instance_type, t.model_name, t.volume_kms_key) for t in make_settings().targets]
    assert decided == [(t.instance_type, t.model_name, t.volume_kms_key) for t in (GPU, CPU)]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "BATCH_TARGETS is not set"),
        ("not json", "expected a non-empty JSON list"),
        ("[]", "expected a non-empty JSON list"),
        ('[{"instance_type": "m5.xlarge", "model_name": "m", "volume_kms_key": null}]', "entry"),
        ('[{"instance_type": "ml.m5.xlarge", "model_name": "", "volume_kms_key": null}]', "entry"),
        (
            '[{"instance_type": "ml.m5.xlarge", "model_name": "a", "volume_kms_key": null},'
            ' {"instance_type": "ml.m5.xlarge", "model_name": "b", "volume_kms_key": null}]',
            "listed once",
        ),
    ],
)
def test_bad_targets_fail_naming_the_variable(raw: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_targets(raw)


# The texts SageMaker answers with (account-level service limits; the same sentence for every limit).
QUOTA_ZERO = (
    "The account-level service limit 'ml.g5.xlarge for transform job usage' is 0 Instances, with current "
    "utilization of 0 Instances and a request delta of 1 Instances. Please contact AWS support to request an "
    "increase for this limit."
)
QUOTA_IN_USE = (
    "The account-level service limit 'ml.g5.xlarge for transform job usage' is 2 Instances, with current "
    "utilization of 2 Instances and a request delta of 1 Instances. Please contact AWS support to request an "
    "increase for this limit."
)
ALL_INSTANCES = (
    "The account-level service limit 'Number of instances across all transform jobs' is 20 Instances, with current "
    "utilization of 20 Instances and a request delta of 1 Instances. Please contact AWS support to request an "
    "increase for this limit."
)


def test_a_quota_of_zero_for_the_instance_type_is_too_small() -> None:
    answer = instance_quota_answer("ResourceLimitExceeded", QUOTA_ZERO, "ml.g5.xlarge")
    assert answer is not None and answer.too_small
    assert (answer.limit, answer.used, answer.needed) == (0, 0, 1)


def test_a_quota_that_is_only_in_use_is_not_too_small() -> None:
    answer = instance_quota_answer("ResourceLimitExceeded", QUOTA_IN_USE, "ml.g5.xlarge")
    assert answer is not None and not answer.too_small


@pytest.mark.parametrize(
    ("code", "message", "instance_type"),
    [
        ("ResourceLimitExceeded", ALL_INSTANCES, "ml.g5.xlarge"),  # account-wide limit: not about one type
        ("ResourceLimitExceeded", QUOTA_ZERO, "ml.m5.xlarge"),  # names another type
        ("ThrottlingException", QUOTA_ZERO, "ml.g5.xlarge"),
        ("ResourceLimitExceeded", "Too many concurrent transform jobs", "ml.g5.xlarge"),
    ],
)
def test_other_limits_are_not_an_instance_type_refusal(code: str, message: str, instance_type: str) -> None:
    assert instance_quota_answer(code, message, instance_type) is None


def test_an_unparsed_instance_type_quota_text_still_counts_as_a_refusal() -> None:
    answer = instance_quota_answer(
        "ResourceLimitExceeded", "Quota 'ml.g5.xlarge for transform job usage'", "ml.g5.xlarge"
    )
    assert answer is not None and answer.too_small and answer.limit is None


def test_remembered_refusals_are_skipped_unless_every_type_is_refused() -> None:
    assert try_order([GPU, CPU], []) == [GPU, CPU]
    assert try_order([GPU, CPU], ["ml.g5.xlarge"]) == [CPU]
    assert try_order([GPU, CPU], ["ml.g5.xlarge", "ml.m5.xlarge"]) == [GPU, CPU]


def test_the_refusal_reason_names_each_quota_and_the_fix() -> None:
    answers = [instance_quota_answer("ResourceLimitExceeded", QUOTA_ZERO, "ml.g5.xlarge")]
    reason = refusal_reason([a for a in answers if a], 1)
    assert "'ml.g5.xlarge for transform job usage' is 0" in reason
    assert "Service Quotas" in reason and "-c batch_instance_types=" in reason


def test_request_sends_json_lines_mini_batches_to_our_handler_by_default() -> None:
    request = transform_request(make_settings(), "n", "s3://b/m.json", 1, CPU)
    assert request["TransformInput"]["ContentType"] == "application/jsonlines"
    assert request["TransformOutput"]["Accept"] == "application/jsonlines"


def test_request_sends_one_json_record_per_request_to_the_stock_handler() -> None:
    # model_source=hub: the toolkit's stock handler accepts exactly application/json, one record per request.
    request = transform_request(make_settings(BATCH_STRATEGY="SingleRecord"), "n", "s3://b/m.json", 1, CPU)
    assert request["BatchStrategy"] == "SingleRecord"
    assert request["TransformInput"]["ContentType"] == "application/json"
    assert request["TransformInput"]["SplitType"] == "Line"
    assert request["TransformOutput"]["AssembleWith"] == "Line"


def test_unknown_batch_strategy_is_refused() -> None:
    with pytest.raises(SettingsError, match="BATCH_STRATEGY='Multi'"):
        make_settings(BATCH_STRATEGY="Multi")


# --- settings ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"BUCKET_NAME": ""}, "BUCKET_NAME is not set"),
        ({"JOB_NAME_PREFIX": "Upper_Case"}, "JOB_NAME_PREFIX"),
        ({"JOB_NAME_PREFIX": "x" * 39}, "JOB_NAME_PREFIX"),
        ({"MAX_PAYLOAD_MB": "20", "MAX_CONCURRENT_TRANSFORMS": "6"}, "exceeds SageMaker's limit of 100"),
        ({"MODEL_RETRIES": "4"}, "MODEL_RETRIES"),
        ({"BATCH_WINDOW_SECONDS": "301"}, "BATCH_WINDOW_SECONDS"),
        ({"OUTPUT_PREFIX": "input/out/"}, "overlaps"),
        ({"INPUT_PREFIX": "input"}, "ending in '/'"),
    ],
)
def test_bad_settings_fail_with_the_variable_named(overrides: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        make_settings(**overrides)


# --- SageMaker answers, claims, backoff ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "message", "taken"),
    [
        ("ValidationException", "Job name must be unique within an AWS account and region", True),
        ("ValidationException", "Transform job name zs-1 is already in use", True),
        ("ResourceInUse", "", True),
        ("ValidationException", "Could not find model zstc-model", False),
        ("ResourceLimitExceeded", "", False),
    ],
)
def test_name_already_in_use_counts_as_done(code: str, message: str, taken: bool) -> None:
    assert is_name_taken(code, message) is taken


@pytest.mark.parametrize(
    ("code", "deferrable"),
    [("ResourceLimitExceeded", True), ("ThrottlingException", True), ("ValidationException", False)],
)
def test_quota_and_throttling_are_deferred(code: str, deferrable: bool) -> None:
    assert is_deferrable(code) is deferrable


NOW = 1_800_000_000


@pytest.mark.parametrize(
    ("claim", "message_ids", "decision"),
    [
        (Claim("j", STARTED, "m1", NOW), ["m1"], "duplicate"),  # the job exists
        (Claim("j", CLAIMED, "m1", NOW - 10), ["m2"], "duplicate"),  # another live invocation holds it
        (Claim("j", CLAIMED, "m1", NOW - 10), ["m1"], "resume"),  # our own earlier attempt
        (Claim("j", CLAIMED, "m1", NOW - 301), ["m2"], "resume"),  # its owner is certainly gone
    ],
)
def test_claim_decisions(claim: Claim, message_ids: list[str], decision: str) -> None:
    assert claim_decision(claim, message_ids=message_ids, now=NOW, grace_seconds=300) == decision


def test_claim_reads_both_item_shapes() -> None:
    low = {"job_name": {"S": "j"}, "state": {"S": STARTED}, "owner": {"S": "m"}, "claimed_at": {"N": "5"}}
    assert Claim.from_item(low) == Claim("j", STARTED, "m", 5)
    assert Claim.from_item({"job_name": "j", "state": STARTED, "owner": "m", "claimed_at": 5}) == Claim(
        "j", STARTED, "m", 5
    )


def test_backoff_doubles_up_to_its_cap() -> None:
    assert [backoff_seconds(n, base=60, maximum=900) for n in range(1, 8)] == [60, 120, 240, 480, 900, 900, 900]
    assert backoff_seconds(100, base=60, maximum=10**9) == 43_200  # SQS's maximum visibility


def test_receive_count_covers_the_patience() -> None:
    # Given a patience of 24 hours and the default backoff
    receives = receives_for_patience(24 * 3600, base=60, maximum=900)
    # Then a message deferred on every receive but the last has waited at least 24 hours before the DLQ
    waited = sum(backoff_seconds(n, base=60, maximum=900) for n in range(1, receives))
    assert waited >= 24 * 3600
    assert receives <= 1000  # SQS's maximum maxReceiveCount
