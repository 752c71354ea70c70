"""``zstc doctor``: after a deploy, check on the AWS account what cannot be checked offline.

One table of checks, each with what holds or does not and the fix:

- **Quotas** (Service Quotas, service code ``sagemaker``): ``<instance type> for transform job usage`` for each batch
  instance type the stack's trigger is configured with, ``<instance type> for endpoint usage`` for the endpoint's
  instance type (its autoscaling maximum), and the account's serverless concurrency for a serverless endpoint.
  New accounts often have 0 for GPU types; a quota below need is named with the console link to raise it.
- **Smoke file**: three records dropped into the stack's input prefix the way ``zstc submit`` does it, followed to
  their status record; reports the status, the time from drop to status (S3's clock on both ends), and which output
  key naming SageMaker used for the job (the key relative to the job's input prefix, the base name or the full key).
- **Endpoint**: one tiny request to the real-time endpoint (when the stack has one) and the shape of its answer.

The instance types come from the deployed stack, never from defaults here: the trigger function's environment
(found through the stack's resources), else the newest transform job of the stack (the smoke job among them).
Exit code 0 only when every check holds (skipped ones aside); 1 when one fails or could not be checked.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import typer
from botocore.exceptions import BotoCoreError, ClientError

import zstc  # the command's options are zstc.cli's, resolved when typer reads the signature (no import cycle)
from zstc.jobs import staged_folder
from zstc.stack import DEFAULT_STACK_NAME, StackOutputs
from zstc_contract.layout import OUTPUT_NAMINGS, OUTPUT_SUFFIX, key_prefix, output_key
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import Env
from zstc_contract.status import SUCCEEDED, StatusRecord
from zstc_contract.uri import s3_uri, split_uri

if TYPE_CHECKING:
    from rich.console import Console

    import zstc.cli

# --- the facts the checks rest on ---------------------------------------------------------------------------------

QUOTA_SERVICE_CODE: Final = "sagemaker"
# Quota names as Service Quotas lists them for SageMaker, e.g. "ml.m5.xlarge for transform job usage".
TRANSFORM_QUOTA: Final = "{} for transform job usage"
ENDPOINT_QUOTA: Final = "{} for endpoint usage"
SERVERLESS_CONCURRENCY_QUOTA: Final = "Maximum total concurrency that can be allocated across all serverless endpoints"
QUOTA_PERMISSIONS: Final = "servicequotas:ListServiceQuotas and servicequotas:ListAWSDefaultServiceQuotas"
QUOTA_CONSOLE: Final = "https://{region}.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas/{code}"
QUOTA_SEARCH: Final = "https://{region}.console.aws.amazon.com/servicequotas/home/services/sagemaker/quotas"

SMOKE_FILE: Final = "doctor-smoke.jsonl"
SMOKE_LABELS: Final = ("health", "finance", "career")
SMOKE_TEXTS: Final = (
    "Run a marathon before the summer",
    "Put a tenth of every pay cheque into savings",
    "Ask for the promotion I have earned",
)
ENDPOINT_TEXT: Final = "Drink more water and sleep eight hours"
DEFAULT_SMOKE_TIMEOUT: Final = 3600.0  # a transform job takes minutes to start its instances

# What a check says.
OK: Final = "ok"
WARN: Final = "warn"
FAIL: Final = "FAIL"
UNKNOWN: Final = "could not check"
SKIP: Final = "skipped"
FAILING: Final = (FAIL, UNKNOWN)


@dataclass(frozen=True)
class Check:
    """One row of the table: what was checked, whether it holds, and the fix when it does not."""

    name: str
    state: str  # OK | WARN | FAIL | UNKNOWN | SKIP
    detail: str
    fix: str = ""

    @property
    def failing(self) -> bool:
        return self.state in FAILING


def _aws_message(error: BaseException) -> str:
    if isinstance(error, ClientError):
        details = error.response.get("Error", {})
        return f"{details.get('Code', '?')}: {details.get('Message', '')}".strip().rstrip(":")
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _is_access_denied(error: BaseException) -> bool:
    if not isinstance(error, ClientError):
        return False
    code = str(error.response.get("Error", {}).get("Code", ""))
    return code in ("AccessDenied", "AccessDeniedException", "403", "UnauthorizedOperation") or "AccessDenied" in code


# --- quotas ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Quota:
    name: str
    code: str
    value: float
    applied: bool  # False: the AWS default (Service Quotas lists no applied value for it)


@dataclass(frozen=True)
class QuotaTable:
    """The SageMaker quotas of the account in one region, or why they could not be read."""

    quotas: dict[str, Quota] = field(default_factory=dict)
    complete: bool = True  # False: the defaults could not be listed, so a missing name proves nothing
    error: str | None = None  # the applied values could not be listed at all


def read_quotas(service_quotas: Any) -> QuotaTable:
    """Applied values (ListServiceQuotas), with AWS defaults (ListAWSDefaultServiceQuotas) for quotas it omits."""
    quotas: dict[str, Quota] = {}
    try:
        for page in service_quotas.get_paginator("list_service_quotas").paginate(ServiceCode=QUOTA_SERVICE_CODE):
            for item in page.get("Quotas", []):
                quotas[item["QuotaName"]] = Quota(item["QuotaName"], item["QuotaCode"], float(item["Value"]), True)
    except (ClientError, BotoCoreError) as error:
        return QuotaTable(error=_aws_message(error) if not _is_access_denied(error) else "access denied")
    complete = True
    try:
        paginator = service_quotas.get_paginator("list_aws_default_service_quotas")
        for page in paginator.paginate(ServiceCode=QUOTA_SERVICE_CODE):
            for item in page.get("Quotas", []):
                name = item["QuotaName"]
                if name not in quotas:
                    quotas[name] = Quota(name, item["QuotaCode"], float(item["Value"]), False)
    except (ClientError, BotoCoreError):
        complete = False
    return QuotaTable(quotas=quotas, complete=complete)


def _count(value: float) -> str:
    return str(int(value)) if value == int(value) else f"{value:g}"


def quota_check(
    table: QuotaTable,
    *,
    check_name: str,
    quota_name: str,
    need: int,
    region: str,
    want: int | None = None,
    what: str = "instance(s)",
    needs: str = "one job needs",
    want_for: str = "at once (jobs wait for each other)",
    fallback: str | None = None,
) -> Check:
    """Compare one quota with what a job (``need``) and full parallelism (``want``) take.

    ``fallback`` names what still works when this quota is short (another instance type of the batch list): the
    row is then a warning, not a failure.
    """
    if table.error is not None:
        reason = table.error
        fix = (
            f"grant {QUOTA_PERMISSIONS} to these credentials"
            if reason == "access denied"
            else f"look up '{quota_name}' in {QUOTA_SEARCH.format(region=region)}"
        )
        return Check(check_name, UNKNOWN, f"{reason}: could not read '{quota_name}'", fix)
    quota = table.quotas.get(quota_name)
    if quota is None:
        if not table.complete:
            return Check(
                check_name,
                UNKNOWN,
                f"no applied value listed for '{quota_name}' and the AWS defaults could not be listed",
                f"grant servicequotas:ListAWSDefaultServiceQuotas, or look it up in "
                f"{QUOTA_SEARCH.format(region=region)}",
            )
        return Check(
            check_name,
            FAIL,
            f"no quota named '{quota_name}' in {region}: SageMaker does not offer this instance type for this use here",
            f"deploy with an instance type listed in {QUOTA_SEARCH.format(region=region)} for this region",
        )
    link = QUOTA_CONSOLE.format(region=region, code=quota.code)
    source = "" if quota.applied else " (AWS default)"
    have = f"'{quota_name}' is {_count(quota.value)}{source}"
    if quota.value < need:
        short = f"{have}; {needs} {need} {what}"
        if fallback:
            return Check(check_name, WARN, f"{short}: jobs fall back to {fallback}", f"raise it to {need}: {link}")
        return Check(check_name, FAIL, short, f"request {need} or more ({quota.code}): {link}")
    if want is not None and quota.value < want:
        return Check(
            check_name,
            WARN,
            f"{have}: enough for {need} {what}, not for {want} {want_for}",
            f"raise it to {want} for full parallelism: {link}",
        )
    return Check(check_name, OK, f"{have}; needs {want if want is not None else need}")


# --- what the stack is configured with ----------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchCapacity:
    instance_types: tuple[str, ...]  # most preferred first (the trigger falls back in order)
    instance_count: int  # per job
    max_concurrent_jobs: int
    source: str  # where this was read


def _positive_int(raw: str | None, default: int) -> int:
    try:
        value = int(raw) if raw is not None else default
    except ValueError:
        return default
    return value if value >= 1 else default


def batch_capacity_from_env(env: Mapping[str, str], source: str) -> BatchCapacity | None:
    """The batch instance types and counts of a trigger function's environment (``BATCH_TARGETS``, a JSON list of
    ``{instance_type, ...}``, or the single ``INSTANCE_TYPE`` of earlier versions); None when it names none."""
    types: list[str] = []
    raw_targets = env.get(Env.BATCH_TARGETS)
    if raw_targets:
        try:
            targets = json.loads(raw_targets)
        except ValueError:
            targets = []
        if isinstance(targets, list):
            types = [str(t["instance_type"]) for t in targets if isinstance(t, dict) and t.get("instance_type")]
    if not types and env.get(Env.INSTANCE_TYPE):
        types = [env[Env.INSTANCE_TYPE]]
    if not types:
        return None
    return BatchCapacity(
        instance_types=tuple(dict.fromkeys(types)),
        instance_count=_positive_int(env.get(Env.INSTANCE_COUNT), 1),
        max_concurrent_jobs=_positive_int(env.get(Env.MAX_CONCURRENT_JOBS), 1),
        source=source,
    )


def _stack_functions(cloudformation: Any, stack_name: str, depth: int = 0) -> Iterable[str]:
    """Physical names of the stack's Lambda functions (nested stacks included)."""
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for resource in page.get("StackResourceSummaries", []):
            kind, physical = resource.get("ResourceType"), resource.get("PhysicalResourceId")
            if not physical:
                continue
            if kind == "AWS::Lambda::Function":
                yield str(physical)
            elif kind == "AWS::CloudFormation::Stack" and depth < 3:
                yield from _stack_functions(cloudformation, str(physical), depth + 1)


def find_batch_capacity(
    *, cloudformation: Any, lambda_: Any, sagemaker: Any, stack: StackOutputs
) -> tuple[BatchCapacity | None, str]:
    """The batch configuration of the deployed stack, and a note on how it was found (or why not)."""
    notes: list[str] = []
    try:
        for name in _stack_functions(cloudformation, stack.stack_name):
            environment = lambda_.get_function_configuration(FunctionName=name).get("Environment", {})
            env = environment.get("Variables", {})
            if not env and environment.get("Error"):
                # The stack encrypts the functions' environment with its key: reading it takes kms:Decrypt.
                error = environment["Error"]
                note = f"function environments not readable ({error.get('ErrorCode', '')}: needs kms:Decrypt)"
                if note not in notes:
                    notes.append(note)
                continue
            if env.get(Env.JOB_NAME_PREFIX) != stack.transform_job_prefix:
                continue
            capacity = batch_capacity_from_env(env, f"the trigger function {name}")
            if capacity is not None:
                return capacity, ""
    except (ClientError, BotoCoreError) as error:
        notes.append(f"trigger function not readable ({_aws_message(error)})")
    capacity = capacity_of_newest_job(sagemaker, stack)
    if capacity is not None:
        return capacity, "; ".join(notes)
    notes.append(f"no transform job of prefix {stack.transform_job_prefix} yet")
    return None, "; ".join(notes)


def capacity_of_newest_job(sagemaker: Any, stack: StackOutputs, job_name: str | None = None) -> BatchCapacity | None:
    """Instance type and count of ``job_name``, or of the stack's newest transform job."""
    try:
        if job_name is None:
            summaries = sagemaker.list_transform_jobs(
                NameContains=stack.transform_job_prefix, SortBy="CreationTime", SortOrder="Descending", MaxResults=1
            ).get("TransformJobSummaries", [])
            if not summaries:
                return None
            job_name = str(summaries[0]["TransformJobName"])
        resources = sagemaker.describe_transform_job(TransformJobName=job_name).get("TransformResources", {})
    except (ClientError, BotoCoreError):
        return None
    if not resources.get("InstanceType"):
        return None
    return BatchCapacity(
        instance_types=(str(resources["InstanceType"]),),
        instance_count=int(resources.get("InstanceCount") or 1),
        max_concurrent_jobs=1,
        source=f"transform job {job_name}",
    )


def batch_quota_checks(table: QuotaTable, capacity: BatchCapacity, region: str) -> list[Check]:
    """One row per batch instance type. A short type is a warning while another type of the list has enough."""
    need, want = capacity.instance_count, capacity.instance_count * capacity.max_concurrent_jobs
    enough = [
        t
        for t in capacity.instance_types
        if (q := table.quotas.get(TRANSFORM_QUOTA.format(t))) is not None and q.value >= need
    ]
    rows = []
    for instance_type in capacity.instance_types:
        others = [t for t in enough if t != instance_type]
        rows.append(
            quota_check(
                table,
                check_name=f"quota: batch {instance_type}",
                quota_name=TRANSFORM_QUOTA.format(instance_type),
                need=need,
                want=want if want > need else None,
                region=region,
                fallback=others[0] if others and len(capacity.instance_types) > 1 else None,
            )
        )
    return [replace(row, detail=f"{row.detail} [configured in {capacity.source}]") for row in rows]


@dataclass(frozen=True)
class Variant:
    name: str
    instance_type: str | None  # None: serverless
    need: int  # instances (autoscaling maximum), or the serverless MaxConcurrency


def endpoint_variants(sagemaker: Any, autoscaling: Any, endpoint_name: str) -> tuple[str, str, list[Variant]]:
    """(status, failure reason, variants) of the endpoint: instance types and what they may scale to."""
    endpoint = sagemaker.describe_endpoint(EndpointName=endpoint_name)
    config = sagemaker.describe_endpoint_config(EndpointConfigName=endpoint["EndpointConfigName"])
    variants = []
    for variant in config.get("ProductionVariants", []):
        name = str(variant.get("VariantName", "AllTraffic"))
        serverless = variant.get("ServerlessConfig")
        if serverless:
            variants.append(Variant(name, None, int(serverless.get("MaxConcurrency", 1))))
            continue
        need = int(variant.get("InitialInstanceCount") or 1)
        try:
            targets = autoscaling.describe_scalable_targets(
                ServiceNamespace="sagemaker",
                ResourceIds=[f"endpoint/{endpoint_name}/variant/{name}"],
                ScalableDimension="sagemaker:variant:DesiredInstanceCount",
            ).get("ScalableTargets", [])
            need = max([need, *(int(t.get("MaxCapacity", 0)) for t in targets)])
        except (ClientError, BotoCoreError):
            pass  # without autoscaling read access, the initial count is what we know
        variants.append(Variant(name, str(variant["InstanceType"]), need))
    return str(endpoint.get("EndpointStatus", "?")), str(endpoint.get("FailureReason", "")), variants


def endpoint_quota_checks(table: QuotaTable, variants: Sequence[Variant], region: str) -> list[Check]:
    rows = []
    for variant in variants:
        if variant.instance_type is None:
            rows.append(
                quota_check(
                    table,
                    check_name=f"quota: serverless endpoint ({variant.name})",
                    quota_name=SERVERLESS_CONCURRENCY_QUOTA,
                    need=variant.need,
                    region=region,
                    what="concurrent invocations (shared by every serverless endpoint of the account)",
                    needs="the endpoint may use",
                )
            )
        else:
            rows.append(
                quota_check(
                    table,
                    check_name=f"quota: endpoint {variant.instance_type}",
                    quota_name=ENDPOINT_QUOTA.format(variant.instance_type),
                    need=variant.need,
                    want=2 * variant.need,
                    region=region,
                    what="instance(s)",
                    needs="the endpoint may scale to",
                    want_for="during an update (a blue/green deployment runs the old and the new fleet at once)",
                )
            )
    return rows


# --- output naming ----------------------------------------------------------------------------------------------

NAMING_FORMS: Final = OUTPUT_NAMINGS  # the contract's: the job-outcome function matches the same three


@dataclass(frozen=True)
class OutputNaming:
    """Which name SageMaker gave the output of one input: ``form`` is one of :data:`NAMING_FORMS` (None: no output
    object matched); ``also`` lists other forms that spell the same key (when they coincide)."""

    form: str | None
    key: str | None
    also: tuple[str, ...] = ()


def naming_candidates(input_key: str, source_prefix: str, output_prefix: str) -> dict[str, str]:
    """The output key each naming form gives ``input_key``: ``<output prefix><name>.out`` with name = the key
    relative to the job's input prefix (``source_prefix``), its last path segment, or the whole key."""
    out = key_prefix(output_prefix)
    source = key_prefix(source_prefix)
    names = {
        "relative key": input_key[len(source) :] if source and input_key.startswith(source) else None,
        "base name": input_key.rsplit("/", 1)[-1],
        "full key": input_key,
    }
    return {form: output_key(out, name) for form, name in names.items() if name}


def match_output_naming(
    *, input_key: str, source_prefix: str, output_prefix: str, produced: Iterable[str]
) -> OutputNaming:
    """Match the objects a job produced (``produced``, keys) to one input: which naming form SageMaker used."""
    candidates = naming_candidates(input_key, source_prefix, output_prefix)
    keys = set(produced)
    for form in NAMING_FORMS:
        key = candidates.get(form)
        if key is not None and key in keys:
            also = tuple(f for f in NAMING_FORMS if f != form and candidates.get(f) == key)
            return OutputNaming(form, key, also)
    return OutputNaming(None, None)


# --- the endpoint's answer ----------------------------------------------------------------------------------------


def answer_problem(body: bytes, labels: Sequence[str]) -> str | None:
    """What is wrong with an endpoint's answer to one record with ``labels``, or None when its shape is right:
    ``{"sequence", "labels": a permutation of the candidates, "scores": one probability per label}`` (alone or as
    the only item of a list)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return f"not JSON: {body[:120]!r}"
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if not isinstance(value, dict):
        return f"expected one JSON object, got {type(value).__name__}"
    if "error" in value:
        return f"the model answered an error: {str(value['error'])[:200]}"
    answered, scores = value.get("labels"), value.get("scores")
    if not isinstance(answered, list) or sorted(map(str, answered)) != sorted(labels):
        return f"'labels' should hold the candidates {list(labels)}, got {answered!r}"
    if (
        not isinstance(scores, list)
        or len(scores) != len(labels)
        or not all(isinstance(s, int | float) and not isinstance(s, bool) and math.isfinite(s) for s in scores)
        or not all(0.0 <= s <= 1.0 for s in scores)
    ):
        return f"'scores' should be {len(labels)} probabilities, got {scores!r}"
    return None


# --- the smoke file ---------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class SmokeResult:
    checks: list[Check]
    job_name: str | None = None


def _source_prefix(s3: Any, description: dict[str, Any]) -> str:
    """Key prefix the job's inputs are named relative to: the manifest's ``prefix`` entry (the job's own folder
    ``manifests/_staged/<job>/`` when it reads re-staged copies), or the S3 prefix."""
    source = description.get("TransformInput", {}).get("DataSource", {}).get("S3DataSource", {})
    uri = str(source.get("S3Uri", ""))
    if source.get("S3DataType") == "ManifestFile":
        bucket, key = split_uri(uri)
        uri = decode_manifest(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).prefix
    return split_uri(uri)[1]


def _list_keys(s3: Any, bucket: str, prefix: str, limit: int = 1000) -> list[str]:
    response = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=limit)
    return [str(item["Key"]) for item in response.get("Contents", [])]


def produced_objects(s3: Any, bucket: str, output_prefix: str, input_key: str, source_prefix: str) -> list[str]:
    """The job's output location, listed: under each candidate name (bounded even where many jobs share it)."""
    keys: set[str] = set(_list_keys(s3, bucket, key_prefix(output_prefix), limit=1000))
    for candidate in naming_candidates(input_key, source_prefix, output_prefix).values():
        keys.update(_list_keys(s3, bucket, candidate.removesuffix(OUTPUT_SUFFIX), limit=100))
    return sorted(keys)


def _head(s3: Any, bucket: str, key: str) -> dict[str, Any] | None:
    try:
        return dict(s3.head_object(Bucket=bucket, Key=key))
    except ClientError as error:
        if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    return (end - start).total_seconds() if start and end else None


def write_smoke_file(folder: Path) -> Path:
    path = folder / SMOKE_FILE
    lines = [json.dumps({"id": f"doctor-{i}", "inputs": text}) for i, text in enumerate(SMOKE_TEXTS, 1)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_smoke(
    aws: Any,
    stack: StackOutputs,
    *,
    timeout: float,
    poll: float,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = lambda _: None,
) -> SmokeResult:
    """Drop three records into the batch path as ``zstc submit`` does and follow them to their status record.

    ``say`` hears each new stage (uploaded, job started, job state): the wait can take many minutes."""
    from zstc import inputs, jobs, submit
    from zstc.errors import JobFailedError
    from zstc.stack import client

    s3, sagemaker = client(aws, "s3"), client(aws, "sagemaker")
    name = "batch smoke file"
    with tempfile.TemporaryDirectory(prefix="zstc-doctor-") as folder:
        prepared = inputs.prepare(write_smoke_file(Path(folder)), inputs.Options(labels=SMOKE_LABELS))
        submission = submit.start(aws, stack, prepared, resume=False)
    state = submission.state
    uri = s3_uri(state.bucket, state.key)
    say(f"smoke file uploaded to {uri}; waiting up to {timeout:.0f} s for its status record")
    watcher = submit.Watcher(s3=s3, sagemaker=sagemaker, stack=stack, state=state)
    stages: list[str] = []
    uploaded = datetime.fromisoformat(state.uploaded_at) if state.uploaded_at else None
    success_key, failure_key = stack.status_keys(state.key)
    deadline = time.monotonic() + timeout
    # The status record is the file's one documented result, wherever SageMaker put the output: wait for it, and let
    # the watcher find the job, follow its state and turn a failure status record into JobFailedError.
    status_head = _head(s3, stack.bucket, success_key)
    while status_head is None:
        try:
            progress, _ = watcher.poll()
            if progress.stage not in stages:
                stages.append(progress.stage)
                say(f"smoke file: {progress.stage}{f' ({progress.job_name})' if progress.job_name else ''}")
        except JobFailedError as error:
            failed = _head(s3, stack.bucket, failure_key)
            took = _seconds(uploaded, failed.get("LastModified")) if failed else None
            after = f" ({took:.0f} s from drop to status)" if took is not None else ""
            return SmokeResult(
                checks=[
                    Check(
                        name,
                        FAIL,
                        f"{error}{after}",
                        "read the status record's reason and the job's CloudWatch logs (/aws/sagemaker/TransformJobs)",
                    )
                ],
                job_name=state.job_name,
            )
        status_head = _head(s3, stack.bucket, success_key)
        if status_head is None:
            if time.monotonic() > deadline:
                stage = "no transform job started" if not state.job_name else f"job {state.job_name} ran"
                return SmokeResult(
                    checks=[
                        Check(
                            name,
                            FAIL,
                            f"{uri}: no status record after {timeout:.0f} s ({stage})",
                            "see `zstc jobs`, the dead-letter queue and the functions' logs; a quota of 0 keeps the "
                            "file queued (see the quota rows); --smoke-timeout waits longer",
                        )
                    ],
                    job_name=state.job_name,
                )
            sleep(poll)
    status = StatusRecord.decode(s3.get_object(Bucket=stack.bucket, Key=success_key)["Body"].read())
    # The watcher stops at the output and may not have looked the job up: the status record names it.
    state.job_name = status.job_name or state.job_name or watcher.find_job()
    took = _seconds(uploaded, status_head.get("LastModified"))
    took_text = f"{took:.0f} s from drop to status" if took is not None else "time unknown"
    state_text = status.state or "?"
    records, record_errors = status.records, status.record_errors
    checks: list[Check] = []
    if state_text == SUCCEEDED and records == len(SMOKE_TEXTS) and not record_errors:
        checks.append(Check(name, OK, f"{state_text}: {records} of {len(SMOKE_TEXTS)} records, {took_text} ({uri})"))
    else:
        checks.append(
            Check(
                name,
                FAIL,
                f"{state_text}: records {records}, record errors {record_errors}, {took_text}; "
                f"{status.reason or ''} ({s3_uri(stack.bucket, success_key)})".strip(),
                "read the output's error lines and the job's CloudWatch logs (/aws/sagemaker/TransformJobs)",
            )
        )
    found = naming_from_status(status, state.job_name)
    naming, output = found or naming_check(s3, sagemaker, stack, state.key, state.job_name)
    checks.append(naming)
    if output is not None:
        count = jobs.count_lines(s3, output[0], output[1])
        if count is not None and count != len(SMOKE_TEXTS):
            checks.append(
                Check(
                    "batch smoke output",
                    FAIL,
                    f"{count} output lines for {len(SMOKE_TEXTS)} records in s3://{output[0]}/{output[1]}",
                    "every input record must come back as one output line: report this to the maintainers",
                )
            )
    return SmokeResult(checks=checks, job_name=state.job_name)


def naming_from_status(status: StatusRecord, job_name: str | None) -> tuple[Check, tuple[str, str]] | None:
    """The naming the job-outcome function matched the output by, as the status record says, and the published
    output's (bucket, key); None for a record without it (a function of an earlier version: list the output)."""
    if not (status.output_naming and status.job_output and status.output):
        return None
    detail = (
        f"{status.output_naming}: {status.job_output} (job {job_name or status.job_name}), published as {status.output}"
    )
    return Check("batch output naming", OK, detail), split_uri(status.output)


def naming_check(
    s3: Any, sagemaker: Any, stack: StackOutputs, input_key: str, job_name: str | None
) -> tuple[Check, tuple[str, str] | None]:
    """Which naming form the job's output of ``input_key`` has, and that output's (bucket, key) when found."""
    name = "batch output naming"
    if not job_name:
        return Check(name, UNKNOWN, "the smoke file's transform job was not found", "see `zstc jobs`"), None
    try:
        description = sagemaker.describe_transform_job(TransformJobName=job_name)
        output_uri = str(description.get("TransformOutput", {}).get("S3OutputPath", ""))
        bucket, output_prefix = split_uri(output_uri)
        source_prefix = _source_prefix(s3, description)
        # SageMaker names the output after the key the job read: a re-staged copy's, where the job read copies
        read_key = input_key
        if source_prefix == staged_folder(description):
            read_key = source_prefix + stack.relative(input_key)
        produced = produced_objects(s3, bucket, output_prefix, read_key, source_prefix)
    except (ClientError, BotoCoreError, ValueError, KeyError, IndexError) as error:
        return Check(name, UNKNOWN, f"could not list the job's output: {_aws_message(error)}", "see `zstc jobs`"), None
    naming = match_output_naming(
        input_key=read_key, source_prefix=source_prefix, output_prefix=output_prefix, produced=produced
    )
    if naming.form is None:
        sample = ", ".join(produced[:3]) or "nothing"
        return Check(
            name,
            FAIL,
            f"job {job_name} wrote no output named after {input_key} under {output_uri} (found: {sample})",
            "report the keys SageMaker wrote to the maintainers: the job-outcome function cannot match them",
        ), None
    same = f" (same key as the {' and '.join(naming.also)})" if naming.also else ""
    detail = f"{naming.form}{same}: s3://{bucket}/{naming.key} (job {job_name})"
    return Check(name, OK, detail), (bucket, str(naming.key))


# --- the endpoint -------------------------------------------------------------------------------------------------


def invoke_check(runtime: Any, endpoint_name: str) -> Check:
    name = f"endpoint {endpoint_name} answers"
    body = json.dumps({"inputs": ENDPOINT_TEXT, "parameters": {"candidate_labels": list(SMOKE_LABELS)}}).encode()
    started = time.monotonic()
    try:
        response = runtime.invoke_endpoint(
            EndpointName=endpoint_name, ContentType="application/json", Accept="application/json", Body=body
        )
        answer = response["Body"].read()
    except (ClientError, BotoCoreError) as error:
        return Check(
            name,
            FAIL,
            f"InvokeEndpoint failed: {_aws_message(error)}",
            "see the endpoint's CloudWatch logs (/aws/sagemaker/Endpoints/" + endpoint_name + ")",
        )
    took = time.monotonic() - started
    problem = answer_problem(answer, SMOKE_LABELS)
    if problem:
        return Check(name, FAIL, f"answer in {took:.1f} s, wrong shape: {problem}", "see docs/handler.md")
    return Check(name, OK, f"labels and scores for {len(SMOKE_LABELS)} candidates in {took:.1f} s")


# --- all checks -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clients:
    cloudformation: Any
    lambda_: Any
    sagemaker: Any
    runtime: Any
    autoscaling: Any
    service_quotas: Any

    @classmethod
    def of(cls, aws: Any) -> Clients:
        from zstc.stack import client

        return cls(
            cloudformation=client(aws, "cloudformation"),
            lambda_=client(aws, "lambda"),
            sagemaker=client(aws, "sagemaker"),
            runtime=client(aws, "sagemaker-runtime"),
            autoscaling=client(aws, "application-autoscaling"),
            service_quotas=client(aws, "service-quotas"),
        )


def run_checks(
    aws: Any,
    stack: StackOutputs,
    clients: Clients,
    *,
    smoke: bool = True,
    smoke_timeout: float = DEFAULT_SMOKE_TIMEOUT,
    poll: float = 10.0,
    sleep: Callable[[float], None] = time.sleep,
    say: Callable[[str], None] = lambda _: None,
) -> list[Check]:
    """Every check, in the table's order. AWS errors of one check become its row; they do not stop the others.

    The smoke file is skipped when the quotas already show that no batch instance type can run a job (it would
    wait in the queue for the whole patience window)."""
    region = stack.region
    table = read_quotas(clients.service_quotas)
    checks: list[Check] = []

    capacity, note = find_batch_capacity(
        cloudformation=clients.cloudformation, lambda_=clients.lambda_, sagemaker=clients.sagemaker, stack=stack
    )
    batch_rows = batch_quota_checks(table, capacity, region) if capacity is not None else []
    checks.extend(batch_rows)

    if stack.endpoint_name:
        try:
            status, reason, variants = endpoint_variants(clients.sagemaker, clients.autoscaling, stack.endpoint_name)
        except (ClientError, BotoCoreError) as error:
            checks.append(
                Check(
                    f"endpoint {stack.endpoint_name}", UNKNOWN, _aws_message(error), "redeploy, or see CloudFormation"
                )
            )
            status, reason, variants = "?", "", []
        checks.extend(endpoint_quota_checks(table, variants, region))
        if status == "InService":
            checks.append(invoke_check(clients.runtime, stack.endpoint_name))
        elif status != "?":
            checks.append(
                Check(
                    f"endpoint {stack.endpoint_name}",
                    FAIL,
                    f"{status}{': ' + reason if reason else ''}",
                    "wait for InService, or fix the reason and redeploy",
                )
            )
    else:
        checks.append(Check("endpoint", SKIP, "the stack has no real-time endpoint (endpoint_mode=none)"))

    if smoke and batch_rows and all(row.state == FAIL for row in batch_rows):
        checks.append(
            Check(
                "batch smoke file",
                SKIP,
                "no batch instance type has the quota for one job: a file would wait in the queue",
                "raise a batch quota (rows above), then run `zstc doctor` again",
            )
        )
    elif smoke:
        from boto3.exceptions import Boto3Error

        from zstc.errors import ZstcError

        try:
            result = run_smoke(aws, stack, timeout=smoke_timeout, poll=poll, sleep=sleep, say=say)
        except (ClientError, BotoCoreError, Boto3Error, ZstcError) as error:
            result = SmokeResult(
                checks=[
                    Check(
                        "batch smoke file",
                        FAIL,
                        f"stopped: {_aws_message(error)}",
                        f"use credentials allowed to write s3://{stack.bucket}/{stack.input_prefix} and read the "
                        "stack's outputs and jobs (as `zstc submit` needs)",
                    )
                ]
            )
        checks.extend(result.checks)
        if capacity is None and result.job_name:
            capacity = capacity_of_newest_job(clients.sagemaker, stack, result.job_name)
            if capacity is not None:
                checks[:0] = batch_quota_checks(table, capacity, region)
    else:
        checks.append(Check("batch smoke file", SKIP, "--no-smoke"))
    if capacity is None:
        checks.insert(
            0,
            Check(
                "quota: batch",
                UNKNOWN,
                f"the batch instance types were not found ({note})",
                "grant cloudformation:ListStackResources, lambda:GetFunctionConfiguration and kms:Decrypt on the "
                "stack's key, or run the smoke file (its job shows the type)",
            ),
        )
    return checks


STYLE: Final = {OK: "green", WARN: "yellow", FAIL: "bold red", UNKNOWN: "red", SKIP: "dim"}


def render(checks: Sequence[Check], console: Console, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for column in ("check", "result", "detail", "fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        style = STYLE.get(check.state, "")
        table.add_row(check.name, f"[{style}]{check.state}[/]", check.detail, check.fix)
    console.print(table)


def doctor(
    stack: zstc.cli.StackOption = DEFAULT_STACK_NAME,
    region: zstc.cli.RegionOption = None,
    smoke: Annotated[
        bool, typer.Option("--smoke/--no-smoke", help="Run the three-record smoke file through the batch path.")
    ] = True,
    smoke_timeout: Annotated[
        float, typer.Option(help="Seconds to wait for the smoke file's status record.")
    ] = DEFAULT_SMOKE_TIMEOUT,
    poll: Annotated[float, typer.Option(help="Seconds between checks.", hidden=True)] = 10.0,
) -> None:
    """Check the deployed stack on your account: quotas, a three-record batch smoke file, one endpoint request."""
    from zstc import cli
    from zstc.stack import find_stack, session

    aws = session(region)
    outputs = find_stack(aws, stack)
    checks = run_checks(
        aws,
        outputs,
        Clients.of(aws),
        smoke=smoke,
        smoke_timeout=smoke_timeout,
        poll=poll,
        say=lambda line: cli.err.print(f"[dim]{line}[/]", highlight=False),
    )
    render(checks, cli.out, f"zstc doctor: stack {outputs.stack_name} in {outputs.region}")
    failing = [c for c in checks if c.failing]
    if failing:
        cli.err.print(f"[bold red]{len(failing)} of {len(checks)} check(s) do not hold[/]: see the fix column.")
        raise typer.Exit(1)
    cli.err.print(f"[green]All {len(checks)} checks hold.[/]")
