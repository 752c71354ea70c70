"""Lambda entry point of the job-outcome function: EventBridge transform-job state changes → status records + SNS.

:func:`build_handler` reads and validates the settings once; the work is in :class:`service.OutcomeRecorder`.
``handler`` (what Lambda calls) and :func:`build_handler` (the emulation's and the tests', from a declared
environment): see ``zstc_contract.function``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_lambda_powertools import Logger, Metrics

from zstc_contract.function import FunctionRuntime, lazy_handler
from zstc_contract.settings import OutcomeSettings

from .service import OutcomeRecorder


class OutcomeFunction(FunctionRuntime, service="job-outcome", max_attempts=5, powertools=(Logger, Metrics)):
    """The job-outcome function's Lambda handler (see :class:`zstc_contract.function.FunctionRuntime`)."""

    settings: OutcomeSettings

    def configure(self, env: Mapping[str, str]) -> None:
        self.settings = OutcomeSettings.from_env(env)
        self._service: OutcomeRecorder | None = None

    def service(self) -> OutcomeRecorder:
        """The work, with the clients created on first use (once per container)."""
        if self._service is None:
            self._service = OutcomeRecorder(
                self.settings,
                s3=self.client("s3"),
                sns=self.client("sns"),
                logger=self.logger,
                metrics=self.metrics,
            )
        return self._service

    def process(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        # An exception here makes EventBridge retry the event (asynchronous invocation), then the function's DLQ.
        return self.service().process(event)


# The job-outcome handler for an environment (in Lambda: ``os.environ``, as the stack declares it).
build_handler = OutcomeFunction
handler: OutcomeFunction  # Lambda's entry point, built on first access
__getattr__ = lazy_handler(__name__, build_handler)
