"""Lambda entry point of the job-outcome function: EventBridge transform-job state changes → status records + SNS.

:func:`build_handler` reads and validates the settings once; the work is in :class:`service.JobOutcome`.
``handler`` (what Lambda calls) is built from ``os.environ`` when the runtime resolves it during initialisation, so a
bad variable fails the cold start with a message naming it. The offline emulation and the tests build their own
handler from a declared environment with :func:`build_handler`, without touching ``os.environ``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from botocore.config import Config

from zstc_contract.function import ClientFactory, FunctionRuntime, lazy_handler
from zstc_contract.settings import OutcomeSettings

from .service import JobOutcome

SERVICE = "job-outcome"
CLIENT_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})


class OutcomeFunction(FunctionRuntime):
    """The job-outcome function's Lambda handler with its settings, Powertools logger and metrics, and clients.

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
        self.settings = OutcomeSettings.from_env(env)  # a bad variable fails here, with a message naming it
        super().__init__(
            env, service=SERVICE, client_config=CLIENT_CONFIG, clients=clients, logger=logger, metrics=metrics,
            make_logger=Logger, make_metrics=Metrics,
        )  # fmt: skip
        self._service: JobOutcome | None = None
        self._handle = self.entry(self._process)

    def service(self) -> JobOutcome:
        """The work, with the clients created on first use (once per container)."""
        if self._service is None:
            self._service = JobOutcome(
                self.settings,
                s3=self.client("s3"),
                sns=self.client("sns"),
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


# The job-outcome handler for an environment (in Lambda: ``os.environ``, as the stack declares it).
build_handler = OutcomeFunction
handler: OutcomeFunction  # Lambda's entry point, built on first access
__getattr__ = lazy_handler(__name__, build_handler)
