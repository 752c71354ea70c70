"""The stack's batch path, offline: moto server for AWS, the real functions, a local runner for SageMaker.

:class:`LocalPipeline` starts a moto server on 127.0.0.1 (S3, SQS, DynamoDB, SNS, KMS, SageMaker's API), creates the
stack's batch resources there with :func:`zstc_local.resources.create_batch_resources` (the same builder the tests
and the benchmarks use), builds the REAL trigger and job-outcome handlers (``functions.<name>.handler.build_handler``)
with the environment ``stacks.batch_environment`` declares for them, from the stack's settings (cdk.json's context
plus the pipeline's ``overrides``, like ``cdk deploy -c key=value``), and runs a pump thread that does what AWS does
between them:

- the SQS event source mapping: receive up to 10 messages (after the batching window), invoke the trigger with an
  SQS event, delete the messages it did not report in ``batchItemFailures``;
- SageMaker: for every transform job created in moto, run it with :class:`~zstc_local.runner.LocalTransformRunner`
  against the model server, then invoke the job-outcome function with the "Transform Job State Change" event.

Time runs ``speedup`` times faster than in AWS where the emulation waits on AWS's clock: the queue's visibility
timeout, the trigger's deferral backoffs (visibility changes through its SQS client) and the event source's batching
window are divided by it; the functions' environment is exactly the deployed one.

Nothing here changes ``os.environ`` or ``sys.path``: the functions get clients for the moto server, and their logs
(and EMF metrics) go to ``log_path``. :meth:`LocalPipeline.aws_environment` points an AWS client of this process (the
``zstc`` command line) at the pipeline for the duration of a ``with`` block.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import threading
import time
import traceback
import uuid
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics.provider.cloudwatch_emf.cloudwatch import AmazonCloudWatchEMFProvider
from botocore.config import Config

from functions.batch_trigger.handler import TriggerFunction
from functions.batch_trigger.handler import build_handler as build_trigger
from functions.job_outcome.handler import OutcomeFunction
from functions.job_outcome.handler import build_handler as build_outcome
from zstc.stack import StackOutputs
from zstc_contract.layout import PREFIXES
from zstc_contract.settings import Env, parse_targets
from zstc_local.resources import ACCOUNT, EmulatedBatch, ResourceNames, create_batch_resources, stack_settings
from zstc_local.runner import Invoke, LocalTransformRunner, TransformRun, state_change_event

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}  # moto accepts any
SPEEDUP = 120.0  # a 60 s backoff step takes 0.5 s (rounded up to SQS's 1 s), the 780 s visibility timeout 7 s
_instances = itertools.count(1)


class FakeLambdaContext:
    """What Powertools reads from a Lambda context."""

    def __init__(self, name: str) -> None:
        self.function_name = name
        self.function_version = "$LATEST"
        self.memory_limit_in_mb = 512
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "local"

    def get_remaining_time_in_millis(self) -> int:
        return 300_000


@dataclass
class PipelineStats:
    trigger_invocations: int = 0
    messages: int = 0
    jobs: list[TransformRun] = field(default_factory=list)
    outcome_invocations: int = 0
    errors: list[str] = field(default_factory=list)


class _EmfToLog(AmazonCloudWatchEMFProvider):
    """Powertools' EMF metrics written to the function log (CloudWatch Logs gets them from stdout in Lambda)."""

    def __init__(self, stream: IO[str], *, namespace: str, service: str) -> None:
        super().__init__(namespace=namespace, service=service)
        self._stream = stream

    def flush_metrics(self, raise_on_empty_metrics: bool = False) -> None:
        if self.metric_set:
            self._stream.write(json.dumps(self.serialize_metric_set(), separators=(",", ":")) + "\n")
            self._stream.flush()
            self.clear_metrics()


class _ScaledVisibility:
    """An SQS client whose visibility changes (the trigger's deferral backoffs) last ``1 / speedup`` as long."""

    def __init__(self, client: Any, speedup: float) -> None:
        self._client = client
        self._speedup = speedup

    def change_message_visibility_batch(self, *, Entries: list[dict[str, Any]], **kwargs: Any) -> Any:
        scaled = [
            {**e, "VisibilityTimeout": max(1, math.ceil(e["VisibilityTimeout"] / self._speedup))} for e in Entries
        ]
        return self._client.change_message_visibility_batch(Entries=scaled, **kwargs)

    def _scaled(self, seconds: int) -> int:
        return max(1, math.ceil(seconds / self._speedup))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class LocalPipeline:
    def __init__(
        self,
        invoke: Invoke,
        *,
        workdir: Path,
        overrides: Mapping[str, Any] | None = None,
        speedup: float = SPEEDUP,
        poll_interval: float = 0.2,
    ) -> None:
        """``overrides``: settings (cdk.json context keys) as ``cdk deploy -c key=value`` would set them."""
        self.invoke = invoke
        self.workdir = workdir
        self.instance = next(_instances)
        # Each pipeline of a process is a stack of its own (moto's state is per process): its own job-name prefix.
        self.settings = stack_settings({"stack_name": f"ZstcLocal{self.instance}", **(overrides or {})})
        self.speedup = speedup
        self.batching_window = self.settings.batch_window_seconds / speedup  # the event source's, scaled
        self.poll_interval = poll_interval
        self.log_path = workdir / "functions.log"
        self.stats = PipelineStats()
        self.resources: EmulatedBatch | None = None
        self.endpoint_url = ""
        self._server: Any = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: IO[str] | None = None
        self._done_jobs: set[str] = set()
        self._lock = threading.Lock()

    # --- lifecycle -----------------------------------------------------------------------------------------------

    def __enter__(self) -> LocalPipeline:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from moto.server import ThreadedMotoServer

        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("a", encoding="utf-8")
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's HTTP server logs every request otherwise
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{port}"
        try:
            names = ResourceNames.based_on(f"zstc-local-{self.instance}")
            self.resources = create_batch_resources(self.client, self.settings, names, speedup=self.speedup)
            self._create_functions(self.resources, self._log)
        except BaseException:
            self.stop()
            raise
        self._thread = threading.Thread(target=self._pump, name="zstc-local-pipeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def client(self, service: str, config: Config | None = None) -> Any:
        """A client of the emulated account (what the functions and the pump use)."""
        return boto3.client(  # type: ignore[call-overload]
            service, region_name=REGION, endpoint_url=self.endpoint_url, config=config, **CREDENTIALS
        )

    def aws_environment(self) -> contextlib.AbstractContextManager[None]:
        """Within ``with``, AWS clients this process creates from the environment (``zstc``'s) use the pipeline."""
        return _scoped_environment(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": CREDENTIALS["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": CREDENTIALS["aws_secret_access_key"],
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-credentials"),
                "AWS_CONFIG_FILE": str(self.workdir / "no-config"),
            },
            unset=("AWS_PROFILE", "AWS_SESSION_TOKEN"),
            unset_prefixes=("AWS_ENDPOINT_URL_",),
        )

    # --- the stack's outputs ---------------------------------------------------------------------------------------

    def stack_outputs(self) -> StackOutputs:
        r = self._resources
        return StackOutputs(
            stack_name="ZeroShotClassification (local)",
            region=REGION,
            bucket=r.bucket,
            input_prefix=PREFIXES.input,
            output_prefix=PREFIXES.output,
            errors_prefix=PREFIXES.errors,
            model_name=r.model_name,
            queue_url=r.queue_url,
            dead_letter_queue_url=r.dead_letter_queue_url,
            transform_job_prefix=r.job_name_prefix,
        )

    def publish_stack(self, stack_name: str = "ZeroShotClassification", *, endpoint_name: str | None = None) -> None:
        """Create a CloudFormation stack in moto whose outputs are the stack's contract, so that the command line's
        own stack discovery (DescribeStacks) finds this local pipeline."""
        outputs = self.stack_outputs()
        values = {
            "BucketName": outputs.bucket,
            "InputPrefix": outputs.input_prefix,
            "OutputPrefix": outputs.output_prefix,
            "ErrorsPrefix": outputs.errors_prefix,
            "ModelName": outputs.model_name,
            "QueueUrl": outputs.queue_url,
            "DeadLetterQueueUrl": outputs.dead_letter_queue_url,
            "TransformJobPrefix": outputs.transform_job_prefix,
            "DashboardUrl": "http://127.0.0.1/local-dashboard",
        }
        if endpoint_name:
            values["EndpointName"] = endpoint_name
        template = {
            "Resources": {"Placeholder": {"Type": "AWS::CloudFormation::WaitConditionHandle"}},
            "Outputs": {key: {"Value": value} for key, value in values.items()},
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # moto only records the placeholder resource
            self.client("cloudformation").create_stack(StackName=stack_name, TemplateBody=json.dumps(template))

    @property
    def _resources(self) -> EmulatedBatch:
        if self.resources is None:
            raise RuntimeError("the pipeline is not started")
        return self.resources

    # --- the functions ---------------------------------------------------------------------------------------------

    def _create_functions(self, batch: EmulatedBatch, log: IO[str]) -> None:
        """The real handlers, from the environment the stack declares; their clients use the moto server."""
        trigger_env, outcome_env = batch.trigger_environment(), batch.outcome_environment()

        def trigger_clients(service: str, config: Config) -> Any:
            client = self.client(service, config)
            return _ScaledVisibility(client, self.speedup) if service == "sqs" else client

        self.trigger: TriggerFunction = build_trigger(
            trigger_env, trigger_clients, logger=self._logger(trigger_env, log), metrics=_metrics(trigger_env, log)
        )
        self.outcome: OutcomeFunction = build_outcome(
            outcome_env, self.client, logger=self._logger(outcome_env, log), metrics=_metrics(outcome_env, log)
        )

    def _logger(self, env: Mapping[str, str], log: IO[str]) -> Logger:
        # A Logger reuses the handler (and stream) of an earlier one with the same service name: one name per pipeline.
        return Logger(
            service=f"{env[Env.SERVICE_NAME]}-local-{self.instance}",
            level=env[Env.LOG_LEVEL],
            stream=log,
        )

    # --- what AWS does between them ----------------------------------------------------------------------------

    def _sqs_event(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        r = self._resources
        return {
            "Records": [
                {
                    "messageId": m["MessageId"],
                    "receiptHandle": m["ReceiptHandle"],
                    "body": m["Body"],
                    "attributes": {
                        "ApproximateReceiveCount": m.get("Attributes", {}).get("ApproximateReceiveCount", "1"),
                        "SentTimestamp": m.get("Attributes", {}).get("SentTimestamp", "0"),
                        "SenderId": "s3.amazonaws.com",
                        "ApproximateFirstReceiveTimestamp": str(int(time.time() * 1000)),
                    },
                    "messageAttributes": {},
                    "md5OfBody": m.get("MD5OfBody", ""),
                    "eventSource": "aws:sqs",
                    "eventSourceARN": r.queue_arn,
                    "awsRegion": REGION,
                }
                for m in messages
            ]
        }

    def _deliver_queue(self, sqs: Any) -> bool:
        r = self._resources
        answer = sqs.receive_message(
            QueueUrl=r.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, AttributeNames=["All"]
        )
        messages = answer.get("Messages", [])
        if not messages:
            return False
        if self.batching_window:
            time.sleep(self.batching_window)  # the event source mapping's batching window, in small
            more = sqs.receive_message(
                QueueUrl=r.queue_url, MaxNumberOfMessages=10 - len(messages), WaitTimeSeconds=0, AttributeNames=["All"]
            ).get("Messages", [])
            messages.extend(more)
        response = self.trigger(self._sqs_event(messages), FakeLambdaContext("batch-trigger"))
        failed = {item["itemIdentifier"] for item in (response or {}).get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=r.queue_url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        with self._lock:
            self.stats.trigger_invocations += 1
            self.stats.messages += len(messages)
        return True

    def _run_jobs(self, sagemaker: Any, s3: Any) -> bool:
        r = self._resources
        ran = False
        paginator = sagemaker.get_paginator("list_transform_jobs")
        for page in paginator.paginate(NameContains=r.job_name_prefix, SortBy="CreationTime", SortOrder="Ascending"):
            for summary in page.get("TransformJobSummaries", []):
                name = summary["TransformJobName"]
                if name in self._done_jobs:
                    continue
                self._done_jobs.add(name)
                description = sagemaker.describe_transform_job(TransformJobName=name)
                # The invocation timeout is applied at the real hardware's speed: the stack's decided pair rates.
                targets = parse_targets(r.trigger_environment()[Env.BATCH_TARGETS])
                outcome = LocalTransformRunner(s3=s3, invoke=self.invoke, targets=targets).run(description)
                event = state_change_event(description, outcome, region=REGION, account=ACCOUNT)
                self.outcome(event, FakeLambdaContext("job-outcome"))
                with self._lock:
                    self.stats.jobs.append(outcome)
                    self.stats.outcome_invocations += 1
                ran = True
        return ran

    def _pump(self) -> None:
        sqs, sagemaker, s3 = self.client("sqs"), self.client("sagemaker"), self.client("s3")
        while not self._stop.is_set():
            try:
                busy = self._deliver_queue(sqs)
                busy = self._run_jobs(sagemaker, s3) or busy
            except Exception:  # noqa: BLE001 - the pump must survive to report; the error is kept and logged
                message = traceback.format_exc()
                with self._lock:
                    self.stats.errors.append(message)
                if self._log is not None:
                    self._log.write(message)
                    self._log.flush()
                busy = False
            if not busy:
                self._stop.wait(self.poll_interval)


def _metrics(env: Mapping[str, str], log: IO[str]) -> Metrics:
    namespace, service = env[Env.METRICS_NAMESPACE], env[Env.SERVICE_NAME]
    return Metrics(namespace=namespace, service=service, provider=_EmfToLog(log, namespace=namespace, service=service))


@contextlib.contextmanager
def _scoped_environment(
    values: Mapping[str, str], *, unset: tuple[str, ...], unset_prefixes: tuple[str, ...]
) -> Iterator[None]:
    """Set ``values`` and remove the other names in ``os.environ``; restore exactly those names on exit."""
    touched = {*values, *unset, *(name for name in os.environ if name.startswith(unset_prefixes))}
    saved = {name: os.environ.get(name) for name in touched}
    for name in touched - set(values):
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
