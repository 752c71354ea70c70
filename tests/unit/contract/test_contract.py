"""The batch contract (``zstc_contract``): names round-trip, parsers refuse what is not theirs, the status record
reads back what it wrote, and no module of the batch path keeps its own copy of what the contract declares."""

from __future__ import annotations

import ast
import json
from fnmatch import fnmatch
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stacks.batch_environment import (
    BACKOFF_BASE_SECONDS,
    BatchResources,
    TargetDecision,
    max_receive_count,
    outcome_environment,
    trigger_environment,
)
from stacks.config import Settings
from stacks.serving_env import HANDLER_REJECTED_RECORD_FIELD
from zstc_contract.backoff import backoff_max_seconds
from zstc_contract.jobs import JOB_NAME, TERMINAL_JOB_STATES, is_stack_job, job_name
from zstc_contract.layout import (
    PREFIXES,
    input_key,
    key_prefix,
    manifest_key,
    output_key,
    relative_key,
    status_key,
)
from zstc_contract.manifest import decode_manifest, encode_manifest
from zstc_contract.settings import Env, OutcomeSettings, SettingsError, TriggerSettings
from zstc_contract.status import FAILED, SKIPPED, SUCCEEDED, StatusRecord
from zstc_contract.uri import s3_uri, split_uri

ROOT = Path(__file__).parents[3]
# Key names: any text S3 accepts below the prefix (no leading "/", which would make an empty path segment).
RELATIVE = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=80).filter(
    lambda s: not s.startswith("/")
)
BUCKET = st.from_regex(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", fullmatch=True)


# --- layout ------------------------------------------------------------------------------------------------------


@given(RELATIVE)
def test_an_input_keeps_its_name_below_every_prefix(relative: str) -> None:
    key = input_key(PREFIXES.input, relative)
    assert relative_key(key, PREFIXES.input) == relative
    assert output_key(PREFIXES.output, relative) == f"output/{relative}.out"
    assert status_key(PREFIXES.errors, relative) == f"errors/{relative}.status.json"
    # the three names of one input never collide, and none of them is under the input prefix (no job loops)
    names = {key, output_key(PREFIXES.output, relative), status_key(PREFIXES.output, relative)}
    assert len(names) == 3
    assert not output_key(PREFIXES.output, relative).startswith(PREFIXES.input)


def test_a_key_outside_the_input_prefix_has_no_relative_name() -> None:
    with pytest.raises(ValueError, match="not under the input prefix"):
        relative_key("output/a.jsonl.out", PREFIXES.input)


def test_manifest_keys_and_key_prefixes() -> None:
    assert manifest_key(PREFIXES.manifests, "zs-abc") == "manifests/zs-abc.json"
    assert [key_prefix(p) for p in ("", "out", "out/")] == ["", "out/", "out/"]


# --- s3 URIs -----------------------------------------------------------------------------------------------------


@given(BUCKET, st.text(max_size=60))
def test_uris_round_trip(bucket: str, key: str) -> None:
    assert split_uri(s3_uri(bucket, key)) == (bucket, key)


@pytest.mark.parametrize("uri", ["", "bucket/key", "S3://bucket/key", "s3:/bucket/key", "s3://", "s3:///key", None])
def test_what_is_not_an_s3_uri_is_refused(uri: str) -> None:
    with pytest.raises(ValueError, match="not an s3://bucket/key URI"):
        split_uri(uri)


# --- manifests ---------------------------------------------------------------------------------------------------


@given(BUCKET, st.lists(RELATIVE, max_size=20))
def test_a_manifest_reads_back_what_was_written(bucket: str, relatives: list[str]) -> None:
    prefix = s3_uri(bucket, PREFIXES.input)
    manifest = decode_manifest(encode_manifest(prefix, relatives))
    assert manifest.prefix == prefix and list(manifest.entries) == relatives
    assert manifest.uris() == [s3_uri(bucket, input_key(PREFIXES.input, r)) for r in relatives]


@pytest.mark.parametrize("body", [b"{", b"{}", b"[]", b'["a.jsonl"]', b'[{"no": "prefix"}, "a.jsonl"]'])
def test_what_is_not_a_manifest_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        decode_manifest(body)


# --- job names and states ------------------------------------------------------------------------------------------


class _Version:
    def __init__(self, claim_id: str) -> None:
        self.claim_id = claim_id


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=10), st.integers(0, 5))
def test_job_names_are_stable_valid_and_recognised(claims: list[str], generation: int) -> None:
    name = job_name("zs-batch", [_Version(c) for c in claims], generation)
    assert name == job_name("zs-batch", [_Version(c) for c in reversed(claims)], generation)
    assert name != job_name("zs-batch", [_Version(c) for c in claims], generation + 1)
    assert JOB_NAME.match(name) and is_stack_job(name, "zs-batch")
    assert not is_stack_job(name, "zs") and not is_stack_job(name + "0", "zs-batch")


def test_the_terminal_states_are_sagemakers() -> None:
    assert set(TERMINAL_JOB_STATES) == {"Completed", "Failed", "Stopped"}


# --- the status record -------------------------------------------------------------------------------------------

# Each kind's JSON exactly as the functions wrote it before the contract existed (keys, order and values).
KINDS = {
    "succeeded": (
        StatusRecord.succeeded(
            input="s3://b/input/a.jsonl", output="s3://b/output/a.jsonl.out", job_name="zs-1", job_status="Completed",
            finished_at="2026-12-01T00:00:00Z", instance_type="ml.m5.xlarge", records=3, record_errors=None,
        ),
        {
            "input": "s3://b/input/a.jsonl", "job_name": "zs-1", "job_status": "Completed",
            "finished_at": "2026-12-01T00:00:00Z", "instance_type": "ml.m5.xlarge", "state": "Succeeded",
            "output": "s3://b/output/a.jsonl.out", "records": 3, "record_errors": None,
        },
    ),
    "failed": (
        StatusRecord.job_failed(
            input="s3://b/input/a.jsonl", job_name="zs-1", job_status="Failed", finished_at=None,
            instance_type=None, reason="broken",
        ),
        {
            "input": "s3://b/input/a.jsonl", "job_name": "zs-1", "job_status": "Failed", "finished_at": None,
            "instance_type": None, "state": "Failed", "output": None, "reason": "broken",
        },
    ),
    "skipped": (
        StatusRecord.skipped(input="s3://b/input/e.jsonl", revision="v-1", reason="empty"),
        {"input": "s3://b/input/e.jsonl", "revision": "v-1", "state": "Skipped", "job_name": None, "reason": "empty"},
    ),
    "refused": (
        StatusRecord.refused(
            input="s3://b/input/a.jsonl", revision="s-2", job_name="zs-2", refused_instance_types=["ml.g5.xlarge"],
            reason="no quota",
        ),
        {
            "input": "s3://b/input/a.jsonl", "revision": "s-2", "job_name": "zs-2", "job_status": "NotStarted",
            "state": "Failed", "output": None, "instance_type": None, "refused_instance_types": ["ml.g5.xlarge"],
            "reason": "no quota",
        },
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
def test_a_status_record_is_written_as_before_and_reads_back(kind: str) -> None:
    record, expected = KINDS[kind]
    body = record.encode()
    assert list(json.loads(body).items()) == list(expected.items())  # same keys, same order, same values
    again = StatusRecord.decode(body)
    assert again == record and again.encode() == body


def test_a_status_record_goes_next_to_the_output_only_on_success() -> None:
    where = {"output_prefix": PREFIXES.output, "errors_prefix": PREFIXES.errors, "relative": "a.jsonl"}
    assert [KINDS[k][0].key(**where) for k in KINDS] == [
        "output/a.jsonl.status.json",
        "errors/a.jsonl.status.json",
        "errors/a.jsonl.status.json",
        "errors/a.jsonl.status.json",
    ]
    assert {KINDS[k][0].state for k in KINDS} == {SUCCEEDED, FAILED, SKIPPED}


def test_the_reader_tolerates_foreign_or_partial_records_and_refuses_non_objects() -> None:
    record = StatusRecord.decode(b'{"state": "Failed", "records": true, "extra": 1}')
    assert record.state == FAILED and record.records is None and record.reason is None and record.input == ""
    with pytest.raises(ValueError):
        StatusRecord.decode(b"[1]")


# --- the environment: every name the stack sets is one the functions read -----------------------------------------


RESOURCES = BatchResources(
    bucket_name="b", claims_table_name="t", queue_url="https://sqs/q", topic_arn="arn:aws:sns:r:1:t",
    key_arn="arn:aws:kms:r:1:key/k", job_name_prefix="zs-batch",
)  # fmt: skip
TARGETS = [TargetDecision("ml.m5.xlarge", "zs-cpu", "arn:aws:kms:r:1:key/k")]
# The environments the stack declares for the configuration's defaults (``Settings``, the one place for them).
TRIGGER_ENV = trigger_environment(Settings(), RESOURCES, TARGETS)
OUTCOME_ENV = outcome_environment(Settings(), RESOURCES)
# Declared, but read by Powertools for AWS Lambda, not by ``from_env``.
READ_BY_POWERTOOLS = {Env.METRICS_NAMESPACE, Env.LOG_LEVEL, Env.SERVICE_NAME}
# Declared, but each has a meaning when absent or empty (the field is None), so the trigger runs without it.
OPTIONAL_FOR_THE_TRIGGER = {
    Env.TOPIC_ARN: "topic_arn",  # notices logged only
    Env.MAX_RECEIVE_COUNT: "max_receive_count",  # the last receive before the dead-letter queue unknown
    Env.REJECTED_RECORD_FIELD: "rejected_record_field",  # the stock handler (the stack writes it empty for hub)
}
# Every other variable the stack declares: missing or empty, the function fails naming it.
REQUIRED_BY_THE_TRIGGER = sorted(set(TRIGGER_ENV) - READ_BY_POWERTOOLS - set(OPTIONAL_FOR_THE_TRIGGER))
REQUIRED_BY_THE_OUTCOME = sorted(set(OUTCOME_ENV) - READ_BY_POWERTOOLS)
# A configuration with every batch setting away from its default (and the stock handler of model_source=hub).
CHANGED = {
    "model_source": "hub",
    "batch_instance_count": 3,
    "batch_window_seconds": 17,
    "batch_max_concurrent_jobs": 7,
    "batch_max_payload_mb": 6,
    "batch_model_timeout_seconds": 1234,
    "batch_model_retries": 3,
    "batch_patience_hours": 48,
}


def without(env: dict[str, str], name: str, how: str) -> dict[str, str]:
    """``env`` with ``name`` left out (``how="missing"``) or set to the empty string."""
    return {k: v for k, v in env.items() if k != name} if how == "missing" else {**env, name: ""}


def test_the_declared_environment_is_read_back_by_both_functions() -> None:
    names = {value for key, value in vars(Env).items() if key.isupper()}
    assert set(TRIGGER_ENV) <= names and set(OUTCOME_ENV) <= names
    parsed = TriggerSettings.from_env(TRIGGER_ENV)
    assert parsed.bucket == "b" and parsed.input_prefix == PREFIXES.input
    # the decided target, with the pair rate synthesis adds from the table (bart-large on 2 physical cores)
    (target,) = parsed.targets
    assert (target.instance_type, target.model_name, target.volume_kms_key) == (
        "ml.m5.xlarge",
        "zs-cpu",
        TARGETS[0].volume_kms_key,
    )
    assert target.pairs_per_second is not None and target.pairs_per_second > 0
    assert OutcomeSettings.from_env(OUTCOME_ENV).topic_arn == RESOURCES.topic_arn


@pytest.mark.parametrize("settings", [Settings(), Settings.from_context(CHANGED)], ids=["defaults", "changed"])
def test_the_functions_read_the_configurations_values_from_the_declared_environment(settings: Settings) -> None:
    # Given the environments the stack declares for a configuration
    trigger = TriggerSettings.from_env(trigger_environment(settings, RESOURCES, TARGETS))
    outcome = OutcomeSettings.from_env(outcome_environment(settings, RESOURCES))
    # Then each user setting reaches the trigger as configured (no fallback of the functions' own)
    assert trigger.instance_count == settings.batch_instance_count
    assert trigger.max_concurrent_jobs == settings.batch_max_concurrent_jobs
    assert trigger.max_payload_mb == settings.batch_max_payload_mb
    assert trigger.model_timeout_seconds == settings.batch_model_timeout_seconds
    assert trigger.model_retries == settings.batch_model_retries
    assert trigger.window_seconds == settings.batch_window_seconds
    # and so do the stack's derivations from them
    patience = settings.batch_patience_hours * 3600
    assert trigger.max_receive_count == max_receive_count(settings)
    assert trigger.backoff_base_seconds == BACKOFF_BASE_SECONDS
    assert trigger.backoff_max_seconds == backoff_max_seconds(patience)
    assert trigger.claim_ttl_seconds > patience
    hub = settings.model_source == "hub"
    assert trigger.batch_strategy == ("SingleRecord" if hub else "MultiRecord")
    assert trigger.rejected_record_field == (None if hub else HANDLER_REJECTED_RECORD_FIELD)
    # and the resources' names and the layout's prefixes reach both functions
    for read in (trigger, outcome):
        assert (read.bucket, read.job_name_prefix, read.topic_arn) == ("b", "zs-batch", RESOURCES.topic_arn)
        prefixes = (read.input_prefix, read.output_prefix, read.errors_prefix, read.manifest_prefix)
        assert prefixes == (PREFIXES.input, PREFIXES.output, PREFIXES.errors, PREFIXES.manifests)
    assert (trigger.claims_table, trigger.queue_url, trigger.kms_key_arn) == ("t", "https://sqs/q", RESOURCES.key_arn)


def test_the_defaults_case_is_the_configurations_defaults() -> None:
    # The stack's defaults differ from the CHANGED ones everywhere, so the test above reads each variable.
    defaults = Settings()
    assert all(getattr(defaults, key) != value for key, value in CHANGED.items())


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize("name", REQUIRED_BY_THE_TRIGGER)
def test_each_variable_the_stack_sets_on_the_trigger_is_required(name: str, how: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is not set"):
        TriggerSettings.from_env(without(TRIGGER_ENV, name, how))


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize("name", REQUIRED_BY_THE_OUTCOME)
def test_each_variable_the_stack_sets_on_the_job_outcome_function_is_required(name: str, how: str) -> None:
    with pytest.raises(SettingsError, match=f"^{name} is not set"):
        OutcomeSettings.from_env(without(OUTCOME_ENV, name, how))


def test_the_required_variables_include_every_user_setting_and_the_resources() -> None:
    assert {
        Env.BUCKET_NAME, Env.CLAIMS_TABLE, Env.QUEUE_URL, Env.KMS_KEY_ARN, Env.JOB_NAME_PREFIX, Env.BATCH_TARGETS,
        Env.INSTANCE_COUNT, Env.MAX_CONCURRENT_JOBS, Env.MAX_PAYLOAD_MB, Env.MODEL_TIMEOUT_SECONDS,
        Env.MODEL_RETRIES, Env.BATCH_WINDOW_SECONDS, Env.BACKOFF_MAX_SECONDS, Env.INPUT_PREFIX,
    } <= set(REQUIRED_BY_THE_TRIGGER)  # fmt: skip
    assert {Env.BUCKET_NAME, Env.JOB_NAME_PREFIX, Env.TOPIC_ARN, Env.OUTPUT_PREFIX} <= set(REQUIRED_BY_THE_OUTCOME)


@pytest.mark.parametrize("how", ["missing", "empty"])
@pytest.mark.parametrize(("name", "field"), sorted(OPTIONAL_FOR_THE_TRIGGER.items()))
def test_the_trigger_runs_without_an_optional_variable(name: str, field: str, how: str) -> None:
    # Given the declared environment, which sets it (the staged model: our handler)
    assert getattr(TriggerSettings.from_env(TRIGGER_ENV), field) is not None
    # When it is absent, the trigger reads it as None (see TriggerSettings' fields for what that means)
    assert getattr(TriggerSettings.from_env(without(TRIGGER_ENV, name, how)), field) is None


# --- no copies -----------------------------------------------------------------------------------------------------

# The code of the batch path (docs and tests may spell the names out).
SCANNED = ("functions", "stacks", "zstc", "zstc_local")
# Files (glob patterns) that still spell a name out, with the reason; each must still be needed (else the test fails).
PENDING: dict[str, str] = {}


def _docstrings(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                ids.add(id(first.value))
    return ids


def copies_in(source: str) -> list[str]:
    """The contract's literals spelled out in ``source``: the URI scheme, the status-record and output suffixes."""
    tree = ast.parse(source)
    skip = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            parts = [v.value for v in node.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
            skip.update(id(v) for v in node.values)
            last = node.values[-1] if node.values else None
            if any(".status.json" in p for p in parts) or (
                isinstance(last, ast.Constant) and str(last.value).endswith(".out")
            ):
                found.append(f"line {node.lineno}: f-string naming a status record or an output")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            spelled = node.value in ("s3://", ".out") or node.value.endswith(".status.json")
            if spelled:
                found.append(f"line {node.lineno}: {node.value!r}")
    return found


def test_the_scan_finds_copies() -> None:
    copy = 'def f(u):\n    """Reads s3:// URIs and .status.json keys."""\n    return u.removeprefix("s3://")\n'
    assert copies_in(copy) == ["line 3: 's3://'"]
    assert copies_in('reason = "writes only *.status.json under errors/."\nkey = rel + ".status.json"\n') == [
        "line 2: '.status.json'"
    ]
    assert copies_in('k = f"{p}{r}.status.json"\no = p + r + ".out"\n') == [
        "line 1: f-string naming a status record or an output",
        "line 2: '.out'",
    ]
    assert copies_in('message = f"wrote s3://{bucket}/{key}"\n') == []


def test_no_module_of_the_batch_path_keeps_its_own_copy_of_the_contract() -> None:
    found = {}
    for folder in SCANNED:
        for path in sorted((ROOT / folder).rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            copies = copies_in(path.read_text(encoding="utf-8"))
            if copies:
                found[relative] = copies
    unexpected = {path: copies for path, copies in found.items() if not any(fnmatch(path, p) for p in PENDING)}
    assert not unexpected, f"use zstc_contract (layout, uri, status) instead: {unexpected}"
    stale = {pattern for pattern in PENDING if not any(fnmatch(path, pattern) for path in found)}
    assert not stale, f"no copy left in {stale}: remove them from PENDING"
