"""Lambda entry point of the job-outcome function: EventBridge transform-job state changes → status records + SNS.

Settings are read and validated once at import; the work is in :class:`job_outcome_service.JobOutcome`.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
from aws_lambda_powertools import Logger, Metrics
from botocore.config import Config

from .logic import OutcomeSettings
from .service import JobOutcome

SETTINGS = OutcomeSettings.from_env(os.environ)

SERVICE = os.environ.get("POWERTOOLS_SERVICE_NAME", "job-outcome")
logger = Logger(service=SERVICE)
# The service is passed explicitly: Powertools shares its dimension set between Metrics instances of a process.
metrics = Metrics(namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "ZeroShotClassification"), service=SERVICE)
_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5})
_outcome: JobOutcome | None = None


def _service() -> JobOutcome:
    global _outcome
    if _outcome is None:
        _outcome = JobOutcome(
            SETTINGS,
            s3=boto3.client("s3", config=_CONFIG),
            sns=boto3.client("sns", config=_CONFIG),
            logger=logger,
            metrics=metrics,
        )
    return _outcome


@logger.inject_lambda_context(clear_state=True)
@metrics.log_metrics
def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    # An exception here makes EventBridge retry the event (asynchronous invocation), then the function's DLQ.
    return _service().process(event)
