"""Lambda entry point of the job-outcome function: EventBridge transform-job state changes → status records + SNS.

:func:`build_handler` reads and validates the settings once; the work is in :class:`service.JobOutcome`.
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
from botocore.config import Config

from zstc_contract.settings import Env, OutcomeSettings

from .service import JobOutcome

SERVICE = "job-outcome"
NAMESPACE = "ZeroShotClassification"
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
# (service name, client config) → a boto3 client; the default is boto3.client (the function's own credentials).
ClientFactory = Callable[[str, Config], Any]


def _default_client(name: str, config: Config) -> Any:
    return boto3.client(name, config=config)  # type: ignore[call-overload]


class OutcomeFunction:
    """The job-outcome function's Lambda handler with its settings, Powertools logger and metrics, and clients."""

    def __init__(
        self,
        env: Mapping[str, str],
        clients: ClientFactory | None = None,
        *,
        logger: Logger | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.settings = OutcomeSettings.from_env(env)  # a bad variable fails here, with a message naming it
        service = env.get(Env.SERVICE_NAME, SERVICE)
        self.logger = logger or Logger(service=service)
        # The service is passed explicitly: Powertools shares its dimension set between Metrics instances of a process.
        self.metrics = metrics or Metrics(namespace=env.get(Env.METRICS_NAMESPACE, NAMESPACE), service=service)
        self._make_client = clients or _default_client
        self._service: JobOutcome | None = None
        self._handle = self.logger.inject_lambda_context(clear_state=True)(self.metrics.log_metrics(self._process))

    def service(self) -> JobOutcome:
        """The work, with the clients created on first use (once per container)."""
        if self._service is None:
            self._service = JobOutcome(
                self.settings,
                s3=self._make_client("s3", CLIENT_CONFIG),
                sns=self._make_client("sns", CLIENT_CONFIG),
                logger=self.logger,
                metrics=self.metrics,
            )
        return self._service

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        response: dict[str, Any] = self._handle(event, context)
        return response

    def _process(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        # An exception here makes EventBridge retry the event (asynchronous invocation), then the function's DLQ.
        return self.service().process(event)


def build_handler(
    env: Mapping[str, str],
    clients: ClientFactory | None = None,
    *,
    logger: Logger | None = None,
    metrics: Metrics | None = None,
) -> OutcomeFunction:
    """The job-outcome handler for the environment ``env`` (in Lambda: ``os.environ``, as the stack declares it).

    ``clients`` makes the boto3 clients (default: ``boto3.client``); ``logger``/``metrics`` replace the Powertools
    ones the function creates itself (e.g. to write elsewhere than stdout).
    """
    return OutcomeFunction(env, clients, logger=logger, metrics=metrics)


handler: OutcomeFunction  # Lambda's entry point, built on first access (see __getattr__)


def __getattr__(name: str) -> Any:
    # Lambda's runtime looks ``handler`` up while initialising the container: the settings are read then, once.
    if name == "handler":
        built = build_handler(os.environ)
        globals()["handler"] = built
        return built
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
