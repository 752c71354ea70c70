"""Lambda entry point of the batch trigger: SQS (S3 events) → coalesced, idempotent SageMaker transform jobs.

Thin on purpose: :func:`build_handler` reads and validates the settings once, builds the clients once per container
and hands each batch to :class:`service.BatchTrigger`. Powertools reports the messages that must come back to the
queue (``ReportBatchItemFailures``); deferred ones get an exponential backoff first.

``handler`` (what Lambda calls) is built from ``os.environ`` when the runtime resolves it during initialisation, so a
bad variable fails the cold start with a message naming it. The offline emulation and the tests build their own
handler from a declared environment with :func:`build_handler`, without touching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config

from zstc_contract.function import ClientFactory, FunctionRuntime, lazy_handler
from zstc_contract.settings import TriggerSettings

from .service import BatchTrigger, Message, delay_deferred

SERVICE = "batch-trigger"
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})


class TriggerFunction(FunctionRuntime):
    """The trigger's Lambda handler with its settings, Powertools logger and metrics, and clients.

    ``clients`` makes the boto3 clients (default: ``boto3.client``); ``logger``/``metrics`` replace the Powertools
    ones the function creates itself (e.g. to write elsewhere than stdout).
    """

    def __init__(
        self,
        env: Mapping[str, str],
        clients: ClientFactory | None = None,
        *,
        logger: Logger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = TriggerSettings.from_env(env)  # a bad variable fails here, with a message naming it
        super().__init__(
            env, service=SERVICE, client_config=CLIENT_CONFIG, clients=clients, logger=logger, metrics=metrics,
            make_logger=Logger, make_metrics=Metrics,
        )  # fmt: skip
        self.processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._handle = self.entry(self._process)

    def __call__(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        response: PartialItemFailureResponse = self._handle(event, context)
        return response

    def _process(self, event: dict[str, Any], context: Any) -> PartialItemFailureResponse:
        messages = [Message.from_record(record) for record in event.get("Records", [])]
        trigger = BatchTrigger(
            self.settings,
            s3=self.client("s3"),
            dynamodb=self.client("dynamodb"),
            sagemaker=self.client("sagemaker"),
            sns=self.client("sns") if self.settings.topic_arn else None,
            logger=self.logger,
            metrics=self.metrics,
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


# The trigger's handler for an environment (in Lambda: ``os.environ``, as the stack declares it).
build_handler = TriggerFunction
handler: TriggerFunction  # Lambda's entry point, built on first access
__getattr__ = lazy_handler(__name__, build_handler)
