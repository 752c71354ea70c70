"""Lambda entry point of the batch trigger: SQS (S3 events) → coalesced, idempotent SageMaker transform jobs.

Thin on purpose: it reads and validates the settings once (at import), builds the clients once per container and
hands each batch to :class:`batch_trigger_service.BatchTrigger`. Powertools reports the messages that must come
back to the queue (``ReportBatchItemFailures``); deferred ones get an exponential backoff first.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config

from .logic import TriggerSettings
from .service import BatchTrigger, Message, delay_deferred

SETTINGS = TriggerSettings.from_env(os.environ)  # fails the cold start with a message naming the bad variable

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "batch-trigger")
logger = Logger(service=SERVICE)
# The service is passed explicitly: Powertools shares its dimension set between Metrics instances of a process.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ZeroShotClassification"), service=SERVICE)
processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})
_clients: dict[str, Any] = {}


def _client(name: str) -> Any:
    if name not in _clients:
        _clients[name] = boto3.client(name, config=_CONFIG)
    return _clients[name]


def _trigger() -> BatchTrigger:
    return BatchTrigger(
        SETTINGS,
        s3=_client("s3"),
        dynamodb=_client("dynamodb"),
        sagemaker=_client("sagemaker"),
        logger=logger,
        metrics=metrics,
    )


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
    messages = [Message.from_record(record) for record in event.get("Records", [])]
    result = _trigger().process(messages)

    def record_handler(record: SQSRecord) -> None:
        failure = result.failures.get(record.message_id)
        if failure is not None:
            raise failure

    response = process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    delay_deferred(_client("sqs"), SETTINGS.queue_url, messages, result, logger)
    logger.info(
        "Batch done",
        extra={
            "messages": len(messages),
            "failed_messages": len(result.failures),
            "job_names": result.jobs_started,
        },
    )
    return response
