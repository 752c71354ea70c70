"""Per-job outputs (#13 item 2): which produced object is which input's output, whichever naming SageMaker used;
the version sidecar; what a superseded, an ambiguous or a matched file's status record says."""

from __future__ import annotations

import json

import pytest

from functions.batch_trigger.logic import S3Object, transform_request, versions_sidecar
from functions.job_outcome.logic import (
    FileOutcome,
    JobEvent,
    OutputMatch,
    ambiguous_reason,
    candidate_keys,
    is_superseded,
    match_outputs,
    status_record,
)
from tests.declared_env import declared_outcome_environment, declared_trigger_environment, resource_names
from tests.events import load_event
from zstc_contract.layout import (
    BASE_NAME,
    FULL_KEY,
    OUTPUT_NAMINGS,
    PREFIXES,
    RELATIVE_KEY,
    is_job_output_key,
    job_output_prefix,
    output_key,
    status_key,
    versions_key,
)
from zstc_contract.settings import OutcomeSettings, Target, TriggerSettings
from zstc_contract.status import SUPERSEDED, StatusRecord
from zstc_contract.versions import decode_versions, encode_versions, version_id_of

JOB = "zstc-test-0123456789abcdef01234567"
JOB_PREFIX = job_output_prefix(PREFIXES.output, JOB)
# Both functions' environments as the stack declares them, for a bucket "bkt" and the job-name prefix "zstc-test".
NAMES = resource_names(bucket="bkt", job_name_prefix="zstc-test")
SETTINGS = OutcomeSettings.from_env(declared_outcome_environment(resources=NAMES))
TRIGGER_SETTINGS = TriggerSettings.from_env(
    declared_trigger_environment([Target("ml.m5.xlarge", "m", None)], resources=NAMES)
)


def produced(naming: str, *relatives: str) -> list[str]:
    return [candidate_keys(JOB_PREFIX, r, PREFIXES.input)[naming] for r in relatives]


def match(entries: list[str], keys: list[str]) -> dict[str, OutputMatch]:
    return match_outputs(entries, keys, job_prefix=JOB_PREFIX, input_prefix=PREFIXES.input)


# --- the job's own folder --------------------------------------------------------------------------------------------


def test_each_job_writes_in_its_own_folder_apart_from_inputs_and_published_results() -> None:
    settings = TRIGGER_SETTINGS
    target = Target("ml.m5.xlarge", "m", None)
    one = transform_request(settings, JOB, "s3://bkt/manifests/x.json", 1, target)
    other = transform_request(settings, JOB[:-1] + "8", "s3://bkt/manifests/y.json", 1, target)
    paths = {one["TransformOutput"]["S3OutputPath"], other["TransformOutput"]["S3OutputPath"]}
    assert paths == {f"s3://bkt/output/_jobs/{JOB}/", f"s3://bkt/output/_jobs/{JOB[:-1]}8/"}
    assert not JOB_PREFIX.startswith(PREFIXES.input) and is_job_output_key(JOB_PREFIX, PREFIXES.output)
    # an ordinary input's published output and status record are never in a job's folder
    for relative in ("a.jsonl", "jobs/a.jsonl", "_jobsx/a.jsonl"):
        for key in (output_key(PREFIXES.output, relative), status_key(PREFIXES.output, relative)):
            assert not is_job_output_key(key, PREFIXES.output)


def test_the_version_sidecar_lies_next_to_the_manifest_and_keeps_each_entrys_version() -> None:
    settings = TRIGGER_SETTINGS
    objects = [S3Object("bkt", "input/a/x.jsonl", "v-3HL4kqtJlcpXroDTDmJ"), S3Object("bkt", "input/b.jsonl", "s-0A1")]
    key, body = versions_sidecar(settings, JOB, objects)
    assert key == versions_key("manifests/", JOB) == f"manifests/{JOB}.versions.json"
    versions = decode_versions(body)
    assert versions["a/x.jsonl"].version_id == "3HL4kqtJlcpXroDTDmJ" and versions["a/x.jsonl"].revision.startswith("v-")
    assert versions["b.jsonl"].version_id is None  # an unversioned bucket's sequencer is no version id
    assert decode_versions(encode_versions(JOB, [("c.jsonl", "v-9")]))["c.jsonl"].version_id == "9"
    assert version_id_of("v-") is None and version_id_of("e-abc") is None
    with pytest.raises(ValueError, match="not a versions sidecar"):
        decode_versions(b'[{"prefix": "s3://bkt/input/"}, "a.jsonl"]')  # a manifest is not one


# --- matching ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("naming", OUTPUT_NAMINGS)
def test_every_naming_sagemaker_may_use_is_matched(naming: str) -> None:
    entries = ["a/x.jsonl", "b/y.jsonl", "z.jsonl"]
    matches = match(entries, produced(naming, *entries))
    for relative in entries:
        found = matches[relative]
        assert found.key == candidate_keys(JOB_PREFIX, relative, PREFIXES.input)[naming]
        assert not found.ambiguous_with
    assert matches["a/x.jsonl"].naming == naming  # a nested entry tells the naming apart
    assert matches["a/x.jsonl"].key.startswith(JOB_PREFIX) and matches["a/x.jsonl"].key.endswith(".out")


def test_the_three_namings_spell_three_keys() -> None:
    keys = candidate_keys(JOB_PREFIX, "a/x.jsonl", "input/")
    assert keys == {
        RELATIVE_KEY: f"{JOB_PREFIX}a/x.jsonl.out",
        FULL_KEY: f"{JOB_PREFIX}input/a/x.jsonl.out",
        BASE_NAME: f"{JOB_PREFIX}x.jsonl.out",
    }


def test_same_base_names_in_two_folders_named_by_relative_key_do_not_collide() -> None:
    entries = ["a/x.jsonl", "b/x.jsonl", "x.jsonl"]
    matches = match(entries, produced(RELATIVE_KEY, *entries))
    assert {r: m.key for r, m in matches.items()} == {
        "a/x.jsonl": f"{JOB_PREFIX}a/x.jsonl.out",
        "b/x.jsonl": f"{JOB_PREFIX}b/x.jsonl.out",
        "x.jsonl": f"{JOB_PREFIX}x.jsonl.out",
    }
    assert all(m.naming == RELATIVE_KEY and not m.ambiguous_with for m in matches.values())
    assert matches["x.jsonl"].also == (BASE_NAME,)  # at the top, the base name is the same key


def test_same_base_names_named_by_base_name_are_ambiguous_and_not_guessed() -> None:
    entries = ["a/x.jsonl", "b/x.jsonl", "c/y.jsonl"]
    matches = match(entries, [f"{JOB_PREFIX}x.jsonl.out", f"{JOB_PREFIX}y.jsonl.out"])
    assert matches["a/x.jsonl"].key is None and matches["a/x.jsonl"].ambiguous_with == ("b/x.jsonl",)
    assert matches["b/x.jsonl"].key is None and matches["b/x.jsonl"].ambiguous_with == ("a/x.jsonl",)
    assert matches["c/y.jsonl"].key == f"{JOB_PREFIX}y.jsonl.out" and matches["c/y.jsonl"].naming == BASE_NAME
    reason = ambiguous_reason(matches["a/x.jsonl"], JOB_PREFIX)
    assert "b/x.jsonl" in reason and "cannot be told" in reason


def test_a_key_no_naming_tells_apart_is_not_given_to_either_claimant() -> None:
    # a/x.jsonl failed; the one output may be x.jsonl's (relative key) or a/x.jsonl's (base name)
    matches = match(["a/x.jsonl", "x.jsonl"], [f"{JOB_PREFIX}x.jsonl.out"])
    assert matches["x.jsonl"].key is None and matches["x.jsonl"].ambiguous_with == ("a/x.jsonl",)
    assert matches["a/x.jsonl"].key is None and matches["a/x.jsonl"].ambiguous_with == ("x.jsonl",)


def test_once_the_naming_is_known_a_top_level_entry_is_not_ambiguous() -> None:
    # a/x.jsonl's output tells the relative key: x.jsonl.out is then x.jsonl's
    entries = ["a/x.jsonl", "x.jsonl"]
    matches = match(entries, produced(RELATIVE_KEY, *entries))
    assert matches["x.jsonl"].key == f"{JOB_PREFIX}x.jsonl.out" and not matches["x.jsonl"].ambiguous_with


def test_a_file_without_output_and_objects_of_no_input_match_nothing() -> None:
    matches = match(["a.jsonl", "b.jsonl"], [f"{JOB_PREFIX}a.jsonl.out", f"{JOB_PREFIX}other.jsonl.out"])
    assert matches["a.jsonl"].key == f"{JOB_PREFIX}a.jsonl.out"
    assert matches["b.jsonl"] == OutputMatch("b.jsonl")


# --- superseded and the status record ------------------------------------------------------------------------------


def test_superseded_needs_two_known_and_different_versions() -> None:
    assert is_superseded("v1", "v2")
    assert not is_superseded("v1", "v1")
    assert not is_superseded(None, "v2")  # no sidecar (a job started before it existed)
    assert not is_superseded("v1", None)  # deleted since, or unversioned


def _event(name: str) -> JobEvent:
    return JobEvent.from_event(load_event(name))


def test_a_superseded_file_is_reported_under_errors_with_both_versions() -> None:
    job = _event("batch_transform_job_completed.json")
    outcome = FileOutcome(
        "a.jsonl", False, True, version_id="v1", current_version_id="v2", superseded=True, job_output=f"{JOB_PREFIX}a"
    )
    key, record = status_record(SETTINGS, job, outcome)
    assert key == "errors/a.jsonl.status.json"
    body = json.loads(record.encode())
    assert body["state"] == SUPERSEDED and body["version_id"] == "v1" and body["current_version_id"] == "v2"
    assert "v1" in body["reason"] and "v2" in body["reason"] and body["output"] is None
    assert StatusRecord.decode(record.encode()) == record


def test_a_published_file_records_its_version_naming_and_what_the_job_wrote() -> None:
    job = _event("batch_transform_job_completed.json")
    outcome = FileOutcome(
        "a/b.jsonl", True, True, records=2, record_errors=0, naming=FULL_KEY,
        job_output=f"{JOB_PREFIX}input/a/b.jsonl.out", version_id="v7", current_version_id="v7",
    )  # fmt: skip
    key, record = status_record(SETTINGS, job, outcome)
    body = json.loads(record.encode())
    assert key == "output/a/b.jsonl.status.json" and body["output"] == "s3://bkt/output/a/b.jsonl.out"
    assert body["output_naming"] == FULL_KEY and body["job_output"] == f"s3://bkt/{JOB_PREFIX}input/a/b.jsonl.out"
    assert body["version_id"] == "v7"


def test_a_failed_file_gives_its_own_problem_before_the_jobs_reason() -> None:
    job = _event("batch_transform_job_failed.json")
    _, record = status_record(SETTINGS, job, FileOutcome("a.jsonl", False, False, problem="too long"))
    assert record.reason == "too long" and record.state == "Failed"
