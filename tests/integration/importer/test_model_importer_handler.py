"""The custom-resource handler: CloudFormation events in, responses PUT to the (fake) ResponseURL, moto S3."""

from __future__ import annotations

import json

import pytest

from functions.model_importer import handler as model_importer
from tests.events import load_event


@pytest.fixture
def deployed(hub, fx, aws, tiny_model_dir, handler_code_files, monkeypatch):
    """The Hub has the model, the handler code asset is in the assets bucket, the function points at the fake Hub."""
    hub.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir))
    aws.s3.put_object(Bucket=fx.ASSETS_BUCKET, Key=fx.CODE_KEY, Body=fx.code_zip(handler_code_files))
    monkeypatch.setattr(model_importer, "HF_ENDPOINT", hub.base_url)
    return hub


def event(hub, fx, aws, request_type: str, **properties) -> dict:
    payload = load_event(f"model_import_{request_type.lower()}")
    payload["ResponseURL"] = f"{hub.base_url}/cfn-response/{request_type}"
    payload["ResourceProperties"].update(
        {
            "ModelId": fx.MODEL_ID,
            "ModelRevision": fx.REVISION,
            "Bucket": fx.BUCKET,
            "KmsKeyArn": aws.key_arn,
            "HandlerCodeBucket": fx.ASSETS_BUCKET,
            "HandlerCodeKey": fx.CODE_KEY,
            "SupportedModelTypes": list(fx.SUPPORTED_MODEL_TYPES),
            **properties,
        }
    )
    if "OldResourceProperties" in payload:
        payload["OldResourceProperties"] = dict(payload["ResourceProperties"])
    return payload


def respond(hub, fx, aws, request_type: str, **kwargs) -> dict:
    physical_id = kwargs.pop("physical_id", None)
    payload = event(hub, fx, aws, request_type, **kwargs)
    if physical_id is not None:
        payload["PhysicalResourceId"] = physical_id
    model_importer.handler(payload, fx.FakeContext())
    assert len(hub.responses) >= 1
    return hub.responses[-1]


def keys(aws, fx) -> set[str]:
    return {o["Key"] for o in aws.s3.list_objects_v2(Bucket=fx.BUCKET).get("Contents", [])}


def test_create_reports_success_with_the_artifact_url(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create")

    body = response["body"]
    assert body["Status"] == "SUCCESS"
    assert body["PhysicalResourceId"] == body["Data"]["ModelDataUrl"]
    assert body["Data"]["ModelDataUrl"].startswith(f"s3://{fx.BUCKET}/models/{fx.MODEL_ID}/{fx.REVISION}/")
    assert body["Data"]["Copied"] == "true"
    assert body["RequestId"] == "req-create"
    assert response["content_type"] == ""  # the pre-signed URL is signed without a content type
    assert body["Data"]["Key"] in keys(aws, fx)


def test_update_with_same_inputs_keeps_the_physical_id_and_copies_nothing(deployed, fx, aws):
    created = respond(deployed, fx, aws, "Create")["body"]
    deployed.requests.clear()

    updated = respond(deployed, fx, aws, "Update", physical_id=created["PhysicalResourceId"])["body"]

    assert updated["Status"] == "SUCCESS"
    assert updated["PhysicalResourceId"] == created["PhysicalResourceId"]
    assert updated["Data"]["Copied"] == "false"
    assert deployed.downloads() == []


def test_delete_with_retain_data_keeps_the_artifact(deployed, fx, aws):
    created = respond(deployed, fx, aws, "Create")["body"]

    deleted = respond(deployed, fx, aws, "Delete", RetainData="true", physical_id=created["PhysicalResourceId"])

    assert deleted["body"]["Status"] == "SUCCESS"
    assert created["Data"]["Key"] in keys(aws, fx)


def test_delete_without_retain_data_removes_the_artifact_and_manifest(deployed, fx, aws):
    created = respond(deployed, fx, aws, "Create")["body"]

    deleted = respond(deployed, fx, aws, "Delete", RetainData="false", physical_id=created["PhysicalResourceId"])

    assert deleted["body"]["Status"] == "SUCCESS"
    assert keys(aws, fx) == set()


def test_failed_create_reports_the_reason_to_cloudformation(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create", ModelRevision="3" * 40)["body"]

    assert response["Status"] == "FAILED"
    assert f"Revision {'3' * 40} of model '{fx.MODEL_ID}' was not found" in response["Reason"]
    assert response["PhysicalResourceId"].startswith("failed-create:")


def test_delete_after_a_failed_create_succeeds_and_deletes_nothing(deployed, fx, aws):
    created = respond(deployed, fx, aws, "Create")["body"]

    deleted = respond(deployed, fx, aws, "Delete", RetainData="false", physical_id="failed-create:stream")["body"]

    assert deleted["Status"] == "SUCCESS"
    assert created["Data"]["Key"] in keys(aws, fx)


def test_gated_model_reads_the_token_from_the_secret(deployed, fx, aws, tiny_model_dir):
    deployed.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir), gated=True)
    aws.secrets.create_secret(Name="hf/token", SecretString=json.dumps({"token": fx.VALID_TOKEN}))

    response = respond(deployed, fx, aws, "Create", HfTokenSecret="hf/token")["body"]

    assert response["Status"] == "SUCCESS"


def test_gated_model_without_secret_fails_with_the_fix(deployed, fx, aws, tiny_model_dir):
    deployed.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir), gated=True)

    response = respond(deployed, fx, aws, "Create")["body"]

    assert response["Status"] == "FAILED"
    assert "hf_token_secret" in response["Reason"]


def test_missing_secret_fails_naming_it(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create", HfTokenSecret="hf/missing")["body"]

    assert response["Status"] == "FAILED"
    assert "Secret 'hf/missing'" in response["Reason"]


def test_near_the_time_limit_the_import_stops_and_reports(deployed, fx, aws):
    payload = event(deployed, fx, aws, "Create")

    model_importer.handler(payload, fx.FakeContext(remaining_ms=10_000))

    body = deployed.responses[-1]["body"]
    assert body["Status"] == "FAILED"
    assert "time limit" in body["Reason"]
    assert keys(aws, fx) == set()


def test_unexpected_error_is_reported_with_the_log_location(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create", HandlerCodeKey="assets/missing.zip")["body"]

    assert response["Status"] == "FAILED"
    assert "NoSuchKey" in response["Reason"]
    assert "CloudWatch Logs /aws/lambda/model-importer" in response["Reason"]


def test_an_unsupported_architecture_fails_the_deployment_naming_the_supported_ones(deployed, fx, aws, tiny_model_dir):
    files = fx.model_files(tiny_model_dir)
    config = json.loads(files["config.json"])
    deployed.add(
        fx.MODEL_ID, fx.REVISION, {**files, "config.json": json.dumps({**config, "model_type": "t5"}).encode()}
    )

    response = respond(deployed, fx, aws, "Create")["body"]

    assert response["Status"] == "FAILED"
    assert "architecture 't5'" in response["Reason"]
    assert "Supported: " + ", ".join(sorted(fx.SUPPORTED_MODEL_TYPES)) in response["Reason"]
    assert keys(aws, fx) == set()


def test_supported_model_types_may_arrive_as_one_comma_separated_string(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create", SupportedModelTypes="bert, bart")["body"]

    assert response["Status"] == "SUCCESS"


def test_a_template_without_supported_model_types_fails_clearly(deployed, fx, aws):
    response = respond(deployed, fx, aws, "Create", SupportedModelTypes="")["body"]

    assert response["Status"] == "FAILED"
    assert "Property SupportedModelTypes is missing" in response["Reason"]
