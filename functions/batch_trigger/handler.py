"""Lambda entry point of the batch trigger: SQS (S3 events) → coalesced, idempotent SageMaker transform jobs.

Thin on purpose: :func:`build_handler` reads and validates the settings once, builds the clients once per container
and hands each batch to :class:`service.BatchTrigger`. Powertools reports the messages that must come back to the
queue (``ReportBatchItemFailures``); deferred ones get an exponential backoff first.

``handler`` (what Lambda calls) is built from ``os.environ`` when the runtime resolves it during initialisation, so a
bad variable fails the cold start with a message naming it. The offline emulation and the tests build their own
handler from a declared environment with :func:`build_handler`, without touching ``os.environ``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response
from aws_lambda_powertools.utilities.batch.types import PartialItemFailureResponse
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord
from botocore.config import Config

from zstc_contract.settings import Env, TriggerSettings

from .service import BatchTrigger, Message, delay_deferred

SERVICE = "batch-trigger"
NAMESPACE = "ZeroShotClassification"
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 3})
# (service name, client config) → a boto3 client; the default is boto3.client (the function's own credentials).
ClientFactory = Callable[[str, Config], Any]


def _default_client(name: str, config: Config) -> Any:
    return boto3.client(name, config=config)  # type: ignore[call-overload]


class TriggerFunction:
    """The trigger's Lambda handler with its settings, Powertools logger and metrics, and clients."""

    def __init__(
        self,
        env: Mapping[str, str],
        clients: ClientFactory | None = None,
        *,
        logger: Logger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = TriggerSettings.from_env(env)  # a bad variable fails here, with a message naming it
        service = env.get(Env.SERVICE_NAME, SERVICE)
        self.logger = logger or Logger(service=service)
        # The service is passed explicitly: Powertools shares its dimension set between Metrics instances of a process.
        self.metrics = metrics or Metrics(namespace=env.get(Env.METRICS_NAMESPACE, NAMESPACE), service=service)
        self.processor = BatchProcessor(event_type=EventType.SQS, raise_on_entire_batch_failure=False)
        self._make_client = clients or _default_client
        self._clients: dict[str, Any] = {}
        self._handle = self.logger.inject_lambda_context(clear_state=True)(self.metrics.log_metrics(self._process))

    def client(self, name: str) -> Any:
        """The function's client for an AWS service, created on first use (once per container)."""
        if name not in self._clients:
            self._clients[name] = self._make_client(name, CLIENT_CONFIG)
        return self._clients[name]
            sns=self.client("sns") if self.settings.topic_arn else None,

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


def build_handler(
    env: Mapping[str, str],
    clients: ClientFactory | None = None,
    *,
    logger: Logger | None = None,
    metrics: Metrics | None = None,
) -> TriggerFunction:
    """The trigger's handler for the environment ``env`` (in Lambda: ``os.environ``, as the stack declares it).

    ``clients`` makes the boto3 clients (default: ``boto3.client``); ``logger``/``metrics`` replace the Powertools
    ones the function creates itself (e.g. to write elsewhere than stdout).
    """
    return TriggerFunction(env, clients, logger=logger, metrics=metrics)


handler: TriggerFunction  # Lambda's entry point, built on first access (see __getattr__)


def __getattr__(name: str) -> Any:
    # Lambda's runtime looks ``handler`` up while initialising the container: the settings are read then, once.
    if name == "handler":
        built = build_handler(os.environ)
        globals()["handler"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
