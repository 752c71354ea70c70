"""Lambda entry point of the batch trigger: SQS (S3 events) → coalesced, idempotent SageMaker transform jobs.

Thin on purpose: :func:`build_handler` reads and validates the settings once, builds the clients once per container
and hands each batch to :class:`service.BatchTrigger`. Powertools reports the messages that must come back to the
queue (``ReportBatchItemFailures``); deferred ones get an exponential backoff first.

``handler`` (what Lambda calls) and :func:`build_handler` (the emulation's and the tests', from a declared
environment): see ``zstc_contract.function``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from zstc_contract.function import FunctionRuntime, lazy_handler
from zstc_contract.settings import TriggerSettings

from .service import BatchTrigger, Message, delay_deferred


class TriggerFunction(FunctionRuntime, service="batch-trigger", max_attempts=3, powertools=(Logger, Metrics)):
    """The trigger's Lambda handler (see :class:`zstc_contract.function.FunctionRuntime`)."""

    settings: TriggerSettings

    def configure(self, env: Mapping[str, str]) -> None:
        self.settings = TriggerSettings.from_env(env)
        self.processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)

    def process(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        messages = [Message.from_record(record) for record in event.get("Records", [])]
        trigger = BatchTrigger(
            self.settings,
            s3=self.client("s3"),
            dynamodb=self.client("dynamodb"),
            sagemaker=self.client("sagemaker"),
            sns=self.client("sns") if self.settings.topic_arn else None,
            logger=self.logger,
            metrics=self.metrics,
            remaining_seconds=_remaining_seconds(context),
        )
        result = trigger.process(messages)

        def record_handler(record: SQSRecord) -> None:
            failure = result.failures.get(record.message_id)
            if failure is not None:
                raise failure

        response = process_partial_response(
            event=event, record_handler=record_handler, processor=self.processor, context=context
        )
        delay_deferred(self.client("sqs"), self.settings.queue_url, messages, result, self.logger)
        self.logger.info(
            "Batch done",
            extra={
                "messages": len(messages),
                "failed_messages": len(result.failures),
                "job_names": result.jobs_started,
            },
        )
        return response


def _remaining_seconds(context: Any) -> Callable[[], float] | None:
    """The invocation's time left, from Lambda's context (None where the caller gives no such context)."""
    remaining = getattr(context, "get_remaining_time_in_millis", None)
    if not callable(remaining):
        return None
    return lambda: float(remaining()) / 1000.0


# The trigger's handler for an environment (in Lambda: ``os.environ``, as the stack declares it).
build_handler = TriggerFunction
handler: TriggerFunction  # Lambda's entry point, built on first access
__getattr__ = lazy_handler(__name__, build_handler)
