"""The stack's batch path, offline: moto server for AWS, the real functions, a local runner for SageMaker.

:class:`LocalPipeline` starts a moto server on 127.0.0.1 (S3, SQS, DynamoDB, SNS, KMS, SageMaker's API), creates the
resources the stack defines for the batch path (a versioned bucket whose ``ObjectCreated`` notifications for
``input/`` + ``.jsonl`` go to an SQS queue with a dead-letter queue, the claims table, the alarm topic, the model),
loads the REAL trigger and job-outcome functions from ``functions/`` with the environment the stack gives them, and runs
a pump thread that does what AWS does between them:

- the SQS event source mapping: receive up to 10 messages (after a short batching window), invoke the trigger with
  an SQS event, delete the messages it did not report in ``batchItemFailures``;
- SageMaker: for every transform job created in moto, run it with :class:`~zstc_local.runner.LocalTransformRunner`
  against the model server, then invoke the job-outcome function with the "Transform Job State Change" event.

Inside, ``os.environ`` points boto3 at the moto server (``AWS_ENDPOINT_URL``, fake credentials); it is restored on
exit. Everything the functions log goes to ``log_path``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import logging
import os
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3

from zstc.stack import StackOutputs
from zstc_local.runner import Invoke, JobOutcome, LocalTransformRunner, state_change_event

REPO = Path(__file__).resolve().parents[1]
LAMBDA_DIR = REPO / "functions"
REGION = "us-east-1"
ACCOUNT = "123456789012"
LOCAL_INSTANCE_TYPE = "ml.m5.xlarge"  # what the emulated jobs report (the stack's default batch instance type)
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


@dataclass(kw_only=True)
class Resources:
    bucket: str
    queue_url: str
    queue_arn: str
    dead_letter_queue_url: str
    claims_table: str
    topic_arn: str
    kms_key_arn: str
    model_name: str
    job_prefix: str
    input_prefix: str = "input/"
    output_prefix: str = "output/"
    errors_prefix: str = "errors/"
    manifest_prefix: str = "manifests/"


@dataclass
class PipelineStats:
    trigger_invocations: int = 0
    messages: int = 0
    jobs: list[JobOutcome] = field(default_factory=list)
    outcome_invocations: int = 0
    errors: list[str] = field(default_factory=list)


def _load(path: Path, name: str) -> ModuleType:
    """A fresh copy of a function's entry module (its settings and clients are read at import)."""
    spec = importlib.util.spec_from_file_location(f"functions.{path.parent.name}.{name}", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class LocalPipeline:
    def __init__(
        self,
        invoke: Invoke,
        *,
        workdir: Path,
        window_seconds: int = 60,
        batching_window: float = 0.3,
        poll_interval: float = 0.2,
        max_payload_mb: int = 1,
    ) -> None:
        self.invoke = invoke
        self.workdir = workdir
        self.window_seconds = window_seconds
        self.batching_window = batching_window
        self.poll_interval = poll_interval
        self.max_payload_mb = max_payload_mb
        self.log_path = workdir / "functions.log"
        self.stats = PipelineStats()
        self.instance = next(_instances)
        self.resources: Resources | None = None
        self._server: Any = None
        self._saved_env: dict[str, str] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._log: Any = None
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
        self._saved_env = dict(os.environ)
        try:
            self._point_boto3_at_moto()
            self.resources = self._create_resources()
            self._load_functions()
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
        if self._saved_env is not None:
            os.environ.clear()
            os.environ.update(self._saved_env)
            self._saved_env = None
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def _point_boto3_at_moto(self) -> None:
        for name in list(os.environ):
            if name.startswith("AWS_ENDPOINT_URL_") or name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_CONFIG_FILE"):
                os.environ.pop(name)
        os.environ.update(
            {
                "AWS_ENDPOINT_URL": self.endpoint_url,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION,
                "AWS_SHARED_CREDENTIALS_FILE": str(self.workdir / "no-credentials"),
                "POWERTOOLS_METRICS_DISABLED": "true",
                "POWERTOOLS_METRICS_NAMESPACE": "ZeroShotClassificationLocal",
            }
        )

    def client(self, service: str) -> Any:
        return boto3.client(service, region_name=REGION, endpoint_url=self.endpoint_url)

    # --- the stack's batch resources, as stacks/ defines them -----------------------------------------------------

    def _create_resources(self) -> Resources:
        s3, sqs, dynamodb = self.client("s3"), self.client("sqs"), self.client("dynamodb")
        name = f"zstc-local-{self.instance}"
        kms_key_arn = self.client("kms").create_key(Description="zstc local stack key")["KeyMetadata"]["Arn"]
        bucket = f"{name}-data"
        s3.create_bucket(Bucket=bucket)
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        queue_url = sqs.create_queue(
            QueueName=f"{name}-queue",
            Attributes={
                # short here so that deferred or failed messages come back within the demo
                "VisibilityTimeout": "5",
                "RedrivePolicy": json.dumps({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": "5"}),
            },
        )["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        s3.put_bucket_notification_configuration(
            Bucket=bucket,
            NotificationConfiguration={
                "QueueConfigurations": [
                    {
                        "QueueArn": queue_arn,
                        "Events": ["s3:ObjectCreated:*"],
                        "Filter": {
                            "Key": {
                                "FilterRules": [
                                    {"Name": "prefix", "Value": "input/"},
                                    {"Name": "suffix", "Value": ".jsonl"},
                                ]
                            }
                        },
                    }
                ]
            },
        )
        table = f"{name}-claims"
        dynamodb.create_table(
            TableName=table,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        dynamodb.update_time_to_live(
            TableName=table, TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"}
        )
        topic_arn = self.client("sns").create_topic(Name=f"{name}-alarms")["TopicArn"]
        model_name = f"{name}-model"
        self.client("sagemaker").create_model(
            ModelName=model_name,
            ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/{name}-execution",
            PrimaryContainer={"Image": "local/huggingface-pytorch-inference:local", "ModelDataUrl": f"s3://{bucket}/m"},
        )
        return Resources(
            bucket=bucket,
            queue_url=queue_url,
            queue_arn=queue_arn,
            dead_letter_queue_url=dlq_url,
            claims_table=table,
            topic_arn=topic_arn,
            kms_key_arn=kms_key_arn,
            model_name=model_name,
            job_prefix=f"zstc-local{self.instance}",
        )

    def stack_outputs(self) -> StackOutputs:
        r = self._resources
        return StackOutputs(
            stack_name="ZeroShotClassification (local)",
            region=REGION,
            bucket=r.bucket,
            input_prefix=r.input_prefix,
            output_prefix=r.output_prefix,
            errors_prefix=r.errors_prefix,
            model_name=r.model_name,
            queue_url=r.queue_url,
            dead_letter_queue_url=r.dead_letter_queue_url,
            transform_job_prefix=r.job_prefix,
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
    def _resources(self) -> Resources:
        if self.resources is None:
            raise RuntimeError("the pipeline is not started")
        return self.resources

    # --- the functions ---------------------------------------------------------------------------------------------

    def _function_env(self) -> dict[str, str]:
        r = self._resources
        return {
            "BUCKET_NAME": r.bucket,
            "INPUT_PREFIX": r.input_prefix,
            "OUTPUT_PREFIX": r.output_prefix,
            "ERRORS_PREFIX": r.errors_prefix,
            "MANIFEST_PREFIX": r.manifest_prefix,
            "CLAIMS_TABLE": r.claims_table,
            "QUEUE_URL": r.queue_url,
            "JOB_NAME_PREFIX": r.job_prefix,
            # As the stack sets it: the instance types in order, each with its model and volume-key decision.
            "BATCH_TARGETS": json.dumps(
                [{"instance_type": LOCAL_INSTANCE_TYPE, "model_name": r.model_name, "volume_kms_key": r.kms_key_arn}]
            ),
            "KMS_KEY_ARN": r.kms_key_arn,
            "TOPIC_ARN": r.topic_arn,
            "BATCH_WINDOW_SECONDS": str(self.window_seconds),
            "MAX_PAYLOAD_MB": str(self.max_payload_mb),
            "BACKOFF_BASE_SECONDS": "1",
            "BACKOFF_MAX_SECONDS": "5",
        }

    def _load_functions(self) -> None:
        # The functions' folders and the batch layer (mounted at /opt/python in Lambda).
        for path in (str(REPO),):
            if path not in sys.path:
                sys.path.append(path)
        os.environ.update(self._function_env())
        # Powertools loggers bind to sys.stdout when created: create them with stdout pointing at our log file, under
        # service names of their own (a Logger reuses the handler of an earlier one with the same name).
        with contextlib.redirect_stdout(self._log):
            os.environ["POWERTOOLS_SERVICE_NAME"] = f"batch-trigger-local-{self.instance}"
            self.trigger = _load(LAMBDA_DIR / "batch_trigger" / "handler.py", f"_zstc_trigger_{self.instance}")
            os.environ["POWERTOOLS_SERVICE_NAME"] = f"job-outcome-local-{self.instance}"
            self.outcome = _load(LAMBDA_DIR / "job_outcome" / "handler.py", f"_zstc_outcome_{self.instance}")

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
        response = self.trigger.handler(self._sqs_event(messages), FakeLambdaContext("batch-trigger"))
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
        for page in paginator.paginate(NameContains=r.job_prefix, SortBy="CreationTime", SortOrder="Ascending"):
            for summary in page.get("TransformJobSummaries", []):
                name = summary["TransformJobName"]
                if name in self._done_jobs:
                    continue
                self._done_jobs.add(name)
                description = sagemaker.describe_transform_job(TransformJobName=name)
                outcome = LocalTransformRunner(s3=s3, invoke=self.invoke).run(description)
                event = state_change_event(description, outcome, region=REGION, account=ACCOUNT)
                self.outcome.handler(event, FakeLambdaContext("job-outcome"))
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
