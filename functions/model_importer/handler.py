"""CloudFormation custom resource: stage the pinned Hugging Face model in the stack's bucket (thin handler).

Resource properties (CloudFormation passes every value as a string):

- ``ModelId``, ``ModelRevision``: the model and its 40-digit commit.
- ``Bucket``, ``Prefix`` (default ``models/``), ``KmsKeyArn`` (optional): where the artifact goes, SSE-KMS.
- ``HandlerCodeBucket``, ``HandlerCodeKey``: the zip asset of ``model/code/`` (its key changes with its content,
  so a handler change updates the resource and moves the artifact).
- ``HfTokenSecret`` (optional): Secrets Manager secret name holding a Hub token, for gated or private models.
- ``RetainData``: ``true`` keeps the artifact when the resource is deleted; ``false`` deletes it.
- ``SupportedModelTypes``: the ``config.json`` ``model_type`` values the handler supports (a list, or one
  comma-separated string); the stack reads them from ``model/code/supported_architectures.json`` at synth. A model
  of another architecture fails the deployment with a message naming the supported ones.

Environment: ``HF_ENDPOINT`` (default ``https://huggingface.co``; tests point it at a fake Hub).

Returns ``ModelDataUrl`` (also the physical id), ``Key``, ``CodeHash``, ``Sha256`` and ``Copied`` as attributes.
Every outcome is reported to CloudFormation: a failure the user can act on becomes the FAILED reason, and the
function stops before its own time limit rather than leave CloudFormation waiting.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any, Final

import boto3

from .logic import DEFAULT_HUB, ImportFailure, ImportRequest, OutOfTime, read_code_zip, token_from_secret
from .service import HubClient, delete_artifact, import_model

logger = logging.getLogger()
logger.setLevel(os.environ.get("LOG_LEVEL", "INFO"))

HF_ENDPOINT: Final = os.environ.get("HF_ENDPOINT", DEFAULT_HUB)
SAFETY_MARGIN_MS: Final = int(os.environ.get("SAFETY_MARGIN_MS", "60000"))  # time kept to abort and report
MAX_REASON: Final = 1500  # the whole response must stay under 4 KiB


def _flag(value: Any, name: str) -> bool:
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ImportFailure(f"Property {name} must be 'true' or 'false', got {value!r}")
    return text == "true"


def _required(props: Mapping[str, Any], name: str) -> str:
    value = props.get(name)
    if not value:
        raise ImportFailure(f"Property {name} is missing from the custom resource")
    return str(value)


def _deadline(context: Any) -> Callable[[], None]:
    def check() -> None:
        if context.get_remaining_time_in_millis() < SAFETY_MARGIN_MS:
            raise OutOfTime(
                "The model copy did not finish within the importer's time limit (15 minutes) and was abandoned. "
                "The Hub may be slow or the model too large for one run: retry the deployment, or stage the "
                "model yourself and deploy with -c model_source=s3 -c model_data_url=s3://…/model.tar.gz"
            )

    return check


def _hub_token(secret_name: str | None) -> str | None:
    if not secret_name:
        return None
    client = boto3.client("secretsmanager")
    try:
        secret = client.get_secret_value(SecretId=secret_name)
    except client.exceptions.ResourceNotFoundException:
        raise ImportFailure(
            f"Secret '{secret_name}' (hf_token_secret) does not exist in this account and region: create it with "
            "the Hub token as its value, or remove hf_token_secret"
        ) from None
    return token_from_secret(secret.get("SecretString"), secret_name)


def _model_types(props: Mapping[str, Any]) -> tuple[str, ...]:
    value = props.get("SupportedModelTypes")
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, list) else []
    types = tuple(str(item).strip() for item in items if str(item).strip())
    if not types:
        raise ImportFailure(
            "Property SupportedModelTypes is missing from the custom resource: deploy with the stack's own template"
        )
    return types


def _create_or_update(props: Mapping[str, Any], context: Any) -> tuple[str, dict[str, str]]:
    s3 = boto3.client("s3")
    code_zip = s3.get_object(Bucket=_required(props, "HandlerCodeBucket"), Key=_required(props, "HandlerCodeKey"))
    request = ImportRequest(
        model_id=_required(props, "ModelId"),
        revision=_required(props, "ModelRevision"),
        bucket=_required(props, "Bucket"),
        prefix=str(props.get("Prefix") or "models/"),
        code_files=read_code_zip(code_zip["Body"].read()),
        supported_model_types=_model_types(props),
        kms_key_arn=props.get("KmsKeyArn") or None,
    )
    hub = HubClient(HF_ENDPOINT, token=_hub_token(props.get("HfTokenSecret") or None))
    result = import_model(hub, s3, request, deadline=_deadline(context))
    data = {
        "ModelDataUrl": result.url,
        "Key": result.key,
        "CodeHash": result.code_digest,
        "Sha256": result.sha256,
        "Copied": str(result.copied).lower(),
    }
    return result.url, data


def _delete(props: Mapping[str, Any], physical_id: str) -> None:
    if _flag(props.get("RetainData", "true"), "RetainData"):
        logger.info("RetainData is true: keeping %s", physical_id)
        return
    bucket = _required(props, "Bucket")
    deleted = delete_artifact(
        boto3.client("s3"), bucket=bucket, prefix=str(props.get("Prefix") or "models/"), url=physical_id
    )
    logger.info("%s %s", "Deleted" if deleted else "Nothing of ours to delete at", physical_id)


def handler(event: Mapping[str, Any], context: Any) -> None:
    request_type = event["RequestType"]
    props = event.get("ResourceProperties", {})
    # A failed Create still needs a physical id; the Delete that follows must find nothing to delete there.
    physical_id = str(event.get("PhysicalResourceId") or f"failed-create:{context.log_stream_name}")
    logger.info(
        "%s %s: model %s@%s",
        request_type,
        event.get("LogicalResourceId"),
        props.get("ModelId"),
        props.get("ModelRevision"),
    )
    status, reason = "SUCCESS", ""
    data: dict[str, Any] = {}
    try:
        if request_type == "Delete":
            _delete(props, physical_id)
        else:
            physical_id, data = _create_or_update(props, context)
    except ImportFailure as failure:
        logger.error("%s failed: %s", request_type, failure)
        status, reason = "FAILED", str(failure)
    except Exception as error:  # CloudFormation must get an answer, whatever happened
        logger.exception("%s failed unexpectedly", request_type)
        status = "FAILED"
        reason = (
            f"Unexpected {type(error).__name__} in the model importer: {error}. "
            f"Details in CloudWatch Logs {context.log_group_name} stream {context.log_stream_name}"
        )
    send_response(event, status=status, physical_id=physical_id, reason=reason, data=data)


def send_response(
    event: Mapping[str, Any],
    *,
    status: str,
    physical_id: str,
    reason: str = "",
    data: Mapping[str, str] | None = None,
    attempts: int = 3,
) -> None:
    """PUT the result to CloudFormation's pre-signed ``ResponseURL`` (no content type: the URL is signed without)."""
    body = json.dumps(
        {
            "Status": status,
            "Reason": (reason or status)[:MAX_REASON],
            "PhysicalResourceId": physical_id,
            "StackId": event["StackId"],
            "RequestId": event["RequestId"],
            "LogicalResourceId": event["LogicalResourceId"],
            "NoEcho": False,
            "Data": dict(data or {}),
        }
    ).encode()
    request = urllib.request.Request(  # noqa: S310 - CloudFormation's https pre-signed URL
        event["ResponseURL"],
        data=body,
        method="PUT",
        headers={"Content-Type": "", "Content-Length": str(len(body))},
    )
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                logger.info("Sent %s to CloudFormation (HTTP %s)", status, response.status)
                return
        except OSError:
            logger.exception("Sending the response failed (attempt %d of %d)", attempt, attempts)
    raise RuntimeError("Could not send the response to CloudFormation")
