"""A local stand-in for SageMaker batch transform: runs one transform job's description against a model server.

It does what SageMaker does with the job's settings, so the batch path's configuration is exercised for real:

- reads the inputs: an ``S3Prefix`` (every object under it) or a ``ManifestFile`` (a JSON list whose first
  element is ``{"prefix": "s3://bucket/path/"}`` and the rest keys relative to it); gunzips with
  ``CompressionType: Gzip``;
- ``SplitType: Line`` splits each object into lines (blank lines are not records); ``None`` sends it whole;
- ``BatchStrategy: MultiRecord`` packs as many lines per request as fit in ``MaxPayloadInMB``;
  ``SingleRecord`` sends one line per request; a single record over the limit fails the object;
- POSTs each mini-batch to ``/invocations`` with the job's ``ContentType`` and ``Accept``, retrying
  ``ModelClientConfig.InvocationsMaxRetries`` times with ``InvocationsTimeoutInSeconds`` per call;
- ``AssembleWith: Line`` joins the responses line by line into ``<S3OutputPath>/<name>.out``, written only when
  the whole object succeeded (as SageMaker does); the job fails if any object failed. SageMaker does not document
  ``<name>`` for ``ManifestFile`` input: the emulation's choice is the manifest entry (``RELATIVE_KEY``), the other
  namings of ``zstc_contract.layout.OUTPUT_NAMINGS`` are there with ``naming=`` (the job-outcome function matches
  all three); the trigger's ``S3OutputPath`` is the job's own folder, ``output/_jobs/<job>/``;
- builds the EventBridge "SageMaker Transform Job State Change" event the job-outcome function consumes.

What it does not do: several instances or concurrent transforms, data/output filters (``DataProcessing``), KMS.
"""

from __future__ import annotations

import gzip
import json
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from zstc_contract.jobs import COMPLETED, FAILED
from zstc_contract.layout import OUTPUT_NAMINGS, OUTPUT_SUFFIX, RELATIVE_KEY, output_names
from zstc_contract.manifest import decode_manifest
from zstc_contract.settings import Target
from zstc_contract.sizing import record_weighted_pairs
from zstc_contract.uri import s3_uri, split_uri

Invoke = Callable[[bytes, str, str, float], bytes]
MIB = 1024 * 1024


class InvocationError(Exception):
    """The model server answered with an error (or not at all)."""


def http_invoker(url: str) -> Invoke:
    """POST to ``<url>/invocations`` the way SageMaker's transform agent calls the container."""

    def invoke(body: bytes, content_type: str, accept: str, timeout: float) -> bytes:
        request = urllib.request.Request(  # noqa: S310 - a local model server URL
            url.rstrip("/") + "/invocations",
            data=body,
            method="POST",
            headers={"Content-Type": content_type, "Accept": accept},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
                return bytes(response.read())
        except urllib.error.HTTPError as error:
            detail = error.read().decode("utf-8", errors="replace")[:500]
            raise InvocationError(f"model server answered HTTP {error.code}: {detail}") from error
        except (urllib.error.URLError, TimeoutError, ConnectionError) as error:
            raise InvocationError(f"model server did not answer: {error}") from error

    return invoke


@dataclass(kw_only=True)
class ObjectOutcome:
    input_uri: str
    output_uri: str
    records: int = 0
    requests: int = 0
    error: str | None = None


@dataclass(kw_only=True)
class TransformRun:
    """What one emulated transform job did: its final state and each input object's outcome."""

    job_name: str
    status: str  # Completed | Failed
    failure_reason: str | None = None
    objects: list[ObjectOutcome] = field(default_factory=list)
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    ended: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def records(self) -> int:
        return sum(item.records for item in self.objects)


def _join_uri(base: str, relative: str) -> str:
    return base if not relative else base.rstrip("/") + "/" + relative


class LocalTransformRunner:
    """``targets``: the instance types the stack decided (``BATCH_TARGETS``), whose pair rates give the time a
    mini-batch would take on the real hardware and model. The tiny test model answers in milliseconds: without this,
    a mini-batch that would outlive ``InvocationsTimeoutInSeconds`` on SageMaker would pass here."""

    def __init__(self, *, s3: Any, invoke: Invoke, targets: Sequence[Target] = (), naming: str = RELATIVE_KEY) -> None:
        if naming not in OUTPUT_NAMINGS:
            raise ValueError(f"naming {naming!r}: expected one of {', '.join(OUTPUT_NAMINGS)}")
        self.s3 = s3
        self.invoke = invoke
        self.targets = {t.instance_type: t for t in targets}
        self.naming = naming  # how a ManifestFile entry's output is named (see the module's docstring)

    def expected_seconds(self, description: dict[str, Any], batch: Sequence[bytes]) -> float | None:
        """How long ``batch`` would take on the job's instance type (None: no pair rate decided for it)."""
        target = self.targets.get(description.get("TransformResources", {}).get("InstanceType", ""))
        if target is None or not target.pairs_per_second:
            return None
        pairs = 0.0
        for record in batch:
            try:
                pairs += record_weighted_pairs(json.loads(record), tokens_per_pair=target.tokens_per_pair)
            except ValueError:
                continue  # answered with an error record, without the model
        return pairs / target.pairs_per_second

    # --- inputs --------------------------------------------------------------------------------------------------

    def inputs(self, description: dict[str, Any]) -> list[tuple[str, str, str]]:
        """(bucket, key, relative path used for the output name) of every input object."""
        source = description["TransformInput"]["DataSource"]["S3DataSource"]
        bucket, key = split_uri(source["S3Uri"])
        if source.get("S3DataType") == "ManifestFile":
            try:
                manifest = decode_manifest(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read())
            except ValueError as error:
                raise ValueError(f"manifest {s3_uri(bucket, key)}: {error}") from error
            prefix_bucket, prefix_key = split_uri(manifest.prefix)
            return [
                (prefix_bucket, prefix_key + entry, self._output_name(entry, prefix_key)) for entry in manifest.entries
            ]
        # S3Prefix: every object whose key starts with the prefix; output names keep the part after the prefix's
        # last "/" (an exact object key therefore keeps its file name)
        base = key[: key.rfind("/") + 1]
        found = []
        for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for item in page.get("Contents", []):
                if not item["Key"].endswith("/"):
                    found.append((bucket, item["Key"], item["Key"][len(base) :]))
        return found

    def _output_name(self, entry: str, prefix_key: str) -> str:
        """The name of ``entry``'s output (before ``.out``): the manifest's prefix is the input prefix."""
        return output_names(entry, prefix_key)[self.naming]

    # --- one object ----------------------------------------------------------------------------------------------

    @staticmethod
    def mini_batches(records: list[bytes], *, strategy: str, max_payload: int) -> Iterator[list[bytes]]:
        batch: list[bytes] = []
        size = 0
        for record in records:
            if len(record) > max_payload:
                raise ValueError(
                    f"a record of {len(record)} bytes is larger than MaxPayloadInMB ({max_payload // MIB} MB)"
                )
            if batch and (strategy != "MultiRecord" or size + len(record) + 1 > max_payload):
                yield batch
                batch, size = [], 0
            batch.append(record)
            size += len(record) + 1
        if batch:
            yield batch

    def _invoke_with_retries(self, body: bytes, content_type: str, accept: str, client: dict[str, Any]) -> bytes:
        retries = int(client.get("InvocationsMaxRetries", 3))
        timeout = float(client.get("InvocationsTimeoutInSeconds", 600))
        for attempt in range(retries + 1):
            try:
                return self.invoke(body, content_type, accept, timeout)
            except InvocationError:
                if attempt == retries:
                    raise
                time.sleep(min(0.2 * 2**attempt, 2.0))
        raise AssertionError("unreachable")

    def run_object(self, description: dict[str, Any], bucket: str, key: str, relative: str) -> ObjectOutcome:
        transform_input = description["TransformInput"]
        transform_output = description["TransformOutput"]
        output_uri = _join_uri(transform_output["S3OutputPath"], relative) + OUTPUT_SUFFIX
        outcome = ObjectOutcome(input_uri=s3_uri(bucket, key), output_uri=output_uri)
        content_type = transform_input.get("ContentType", "application/json")
        accept = transform_output.get("Accept", "application/json")
        max_payload = int(description.get("MaxPayloadInMB", 6)) * MIB
        strategy = description.get("BatchStrategy", "SingleRecord")
        client = description.get("ModelClientConfig", {})
        try:
            data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            if transform_input.get("CompressionType") == "Gzip":
                data = gzip.decompress(data)
            if transform_input.get("SplitType", "None") == "Line":
                records = [line.rstrip(b"\r") for line in data.split(b"\n") if line.strip()]
                batches = list(self.mini_batches(records, strategy=strategy, max_payload=max_payload))
            else:
                if len(data) > max_payload:
                    raise ValueError(f"the object is larger than MaxPayloadInMB ({max_payload // MIB} MB)")
                records, batches = [data], [[data]]
            parts = []
            timeout = float(client.get("InvocationsTimeoutInSeconds", 600))
            for batch in batches:
                expected = self.expected_seconds(description, batch)
                if expected is not None and expected > timeout:
                    # SageMaker waits out the timeout on every attempt, then fails the object.
                    outcome.requests += 1 + int(client.get("InvocationsMaxRetries", 3))
                    raise InvocationError(
                        f"a mini-batch of {len(batch)} records needs about {expected:,.0f} s on "
                        f"{description['TransformResources']['InstanceType']}, more than InvocationsTimeoutInSeconds "
                        f"({timeout:.0f} s): the invocation timed out"
                    )
                response = self._invoke_with_retries(b"\n".join(batch), content_type, accept, client)
                outcome.requests += 1
                parts.append(response if response.endswith(b"\n") else response + b"\n")
            outcome.records = len(records)
        except (InvocationError, ValueError, OSError) as error:
            outcome.error = f"{key}: {error}"
            return outcome
        assemble = transform_output.get("AssembleWith", "None")
        body = b"".join(parts) if assemble == "Line" else b"".join(part.rstrip(b"\n") for part in parts)
        out_bucket, out_key = split_uri(output_uri)
        self.s3.put_object(Bucket=out_bucket, Key=out_key, Body=body)
        return outcome

    # --- the job -------------------------------------------------------------------------------------------------

    def run(self, description: dict[str, Any]) -> TransformRun:
        job = TransformRun(job_name=description["TransformJobName"], status=COMPLETED)
        try:
            objects = self.inputs(description)
        except (ValueError, OSError, KeyError) as error:
            job.status, job.failure_reason = FAILED, f"ClientError: cannot read the job's input: {error}"
            job.ended = datetime.now(UTC)
            return job
        if not objects:
            job.status, job.failure_reason = FAILED, "ClientError: no input objects found"
        for bucket, key, relative in objects:
            job.objects.append(self.run_object(description, bucket, key, relative))
        failed = [item for item in job.objects if item.error]
        if failed:
            job.status = FAILED
            job.failure_reason = f"ClientError: {len(failed)} of {len(job.objects)} input(s) failed: {failed[0].error}"[
                :1024
            ]
        job.ended = datetime.now(UTC)
        return job


def _millis(value: Any) -> Any:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else value


def state_change_event(
    description: dict[str, Any], outcome: TransformRun, *, region: str, account: str = "123456789012"
) -> dict[str, Any]:
    """The EventBridge event SageMaker emits when the job reaches its final state (times in epoch milliseconds)."""
    keys = (
        "TransformJobName",
        "TransformJobArn",
        "ModelName",
        "MaxConcurrentTransforms",
        "MaxPayloadInMB",
        "BatchStrategy",
        "Environment",
        "TransformInput",
        "TransformOutput",
        "TransformResources",
        "DataProcessing",
        "CreationTime",
    )
    detail = {key: _millis(description[key]) for key in keys if key in description}
    detail["TransformJobStatus"] = outcome.status
    detail["TransformStartTime"] = _millis(outcome.started)
    detail["TransformEndTime"] = _millis(outcome.ended)
    if outcome.failure_reason:
        detail["FailureReason"] = outcome.failure_reason
    detail["Tags"] = {tag["Key"]: tag["Value"] for tag in description.get("Tags", [])}
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "SageMaker Transform Job State Change",
        "source": "aws.sagemaker",
        "account": account,
        "time": outcome.ended.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [description.get("TransformJobArn", "")],
        "detail": detail,
    }
