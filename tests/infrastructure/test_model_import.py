"""Model sources (staged, hub, s3) and the model importer's resources and permissions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aws_cdk as cdk
import pytest
from aws_cdk import aws_kms as kms
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Template

import stacks.model_import as model_import_module
from stacks.config import Settings
from stacks.model_import import ModelImport

MODEL_URL = "s3://my-models/nli/model.tar.gz"
S3_SOURCE = {"model_source": "s3", "model_data_url": MODEL_URL}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def importer_statements(synthesized: Any) -> list[dict[str, Any]]:
    found = []
    for logical_id, policy in synthesized.resources("AWS::IAM::Policy").items():
        if logical_id.startswith("ModelImportRole"):
            found.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    assert found, "the importer role has no policy"
    return found


def logical_id_of(synthesized: Any, construct: Any) -> str:
    stack = synthesized.stack
    return stack.resolve(stack.get_logical_id(construct.node.default_child))


def models(synthesized: Any) -> list[dict[str, Any]]:
    return [m["Properties"] for m in synthesized.resources("AWS::SageMaker::Model").values()]


# --- model_source=staged (the default) ------------------------------------------------------------------------------


def test_staged_model_has_no_hub_variables_and_is_network_isolated(synth):
    s = synth(endpoint_mode="none")

    (model,) = models(s)
    assert "HF_MODEL_ID" not in model["PrimaryContainer"]["Environment"]
    assert "HF_MODEL_REVISION" not in model["PrimaryContainer"]["Environment"]
    assert model["EnableNetworkIsolation"] is True


def test_staged_model_data_comes_from_the_import_custom_resource(synth):
    s = synth(endpoint_mode="none")

    (model,) = models(s)
    (artifact_id,) = s.resources("Custom::ModelImport")
    assert model["PrimaryContainer"]["ModelDataUrl"] == {"Fn::GetAtt": [artifact_id, "ModelDataUrl"]}


def test_import_writes_into_the_stacks_bucket_under_models_with_the_stack_key(synth):
    s = synth()

    props = s.only("Custom::ModelImport")["Properties"]
    assert props["Bucket"] == {"Ref": logical_id_of(s, s.stack.bucket)}
    assert props["Prefix"] == "models/"
    assert props["KmsKeyArn"] == {"Fn::GetAtt": [logical_id_of(s, s.stack.key), "Arn"]}
    assert props["ModelId"] == "facebook/bart-large-mnli"
    assert props["ModelRevision"] == "d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"


def main_output(main: Any, value: Any) -> Any:
    """A value of the endpoint's stack with ``Fn::GetStackOutput`` of the main stack replaced by that output's value."""
    if isinstance(value, dict) and "Fn::GetStackOutput" in value:
        read = value["Fn::GetStackOutput"]
        assert read["StackName"] == main.stack.stack_name
        return main.raw["Outputs"][read["OutputName"]]["Value"]
    return value


@pytest.mark.parametrize("retain_data", [True, False])
def test_the_endpoint_model_gets_the_staged_artifact_from_the_same_importer_request(synth, retain_data):
    # Given the staged model (default) with a serverless endpoint
    s = synth(endpoint_mode="serverless", retain_data=retain_data)
    main_request = s.only("Custom::ModelImport")["Properties"]
    endpoint_request = s.endpoint.only("Custom::ModelImport")["Properties"]
    # Then the endpoint's stack asks the main stack's importer for the same artifact (same model, revision, handler
    # asset, bucket, key): a new artifact changes the endpoint's template too
    resolved = {k: main_output(s, v) for k, v in endpoint_request.items()}
    assert {k: v for k, v in resolved.items() if k != "RetainData"} == {
        k: v for k, v in main_request.items() if k != "RetainData"
    }
    # and its request never deletes the main stack's artifact
    assert endpoint_request["RetainData"] == "true"
    assert main_request["RetainData"] == ("true" if retain_data else "false")
    # the endpoint's model reads the URL that request returns; the batch model the main stack's
    (request_id,) = s.endpoint.resources("Custom::ModelImport")
    (endpoint_model,) = models(s.endpoint)
    assert endpoint_model["PrimaryContainer"]["ModelDataUrl"] == {"Fn::GetAtt": [request_id, "ModelDataUrl"]}
    (batch_model,) = models(s)
    assert "ModelImport" in json.dumps(batch_model["PrimaryContainer"]["ModelDataUrl"])


def test_provisioned_models_are_network_isolated_with_the_staged_artifact(synth):
    s = synth(endpoint_mode="provisioned")

    assert len(models(s)) == 1 and len(models(s.endpoint)) == 1
    assert all(m["EnableNetworkIsolation"] is True for m in models(s) + models(s.endpoint))


def test_retain_data_decides_whether_the_artifact_is_deleted_with_the_stack(synth):
    assert synth().only("Custom::ModelImport")["Properties"]["RetainData"] == "true"
    assert synth(retain_data=False).only("Custom::ModelImport")["Properties"]["RetainData"] == "false"


def test_cloudformation_stops_waiting_for_a_silent_importer_after_20_minutes(synth):
    props = synth().only("Custom::ModelImport")["Properties"]

    assert int(props["ServiceTimeout"]) == 1200


# --- model_source=hub and s3 ----------------------------------------------------------------------------------------


def test_hub_source_has_no_importer_and_downloads_at_container_start(synth):
    s = synth(model_source="hub", endpoint_mode="none")

    assert s.resources("Custom::ModelImport") == {}
    assert not any("ModelImport" in k for k in s.resources("AWS::Lambda::Function"))
    (model,) = models(s)
    assert model["PrimaryContainer"]["Environment"]["HF_MODEL_ID"] == "facebook/bart-large-mnli"
    assert "ModelDataUrl" not in model["PrimaryContainer"]
    assert model["EnableNetworkIsolation"] is False


def test_s3_source_uses_the_given_artifact_network_isolated_without_importer(synth):
    s = synth(**S3_SOURCE, endpoint_mode="none")

    assert s.resources("Custom::ModelImport") == {}
    (model,) = models(s)
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_URL
    assert "HF_MODEL_ID" not in model["PrimaryContainer"]["Environment"]
    assert model["EnableNetworkIsolation"] is True


def test_s3_source_gives_the_endpoint_model_the_same_artifact_without_importer(synth):
    s = synth(**S3_SOURCE, endpoint_mode="provisioned")

    assert s.endpoint.resources("Custom::ModelImport") == {}
    (model,) = models(s.endpoint)
    assert model["PrimaryContainer"]["ModelDataUrl"] == MODEL_URL
    assert model["EnableNetworkIsolation"] is True


# --- the importer function ------------------------------------------------------------------------------------------


def importer_function(s: Any) -> dict[str, Any]:
    (function,) = [f for k, f in s.resources("AWS::Lambda::Function").items() if k.startswith("ModelImport")]
    return function["Properties"]


def test_importer_runs_outside_the_vpc_even_when_the_stack_has_one(synth):
    s = synth(endpoint_mode="provisioned", vpc=True)

    assert "VpcConfig" not in importer_function(s)


def test_importer_has_time_memory_runtime_and_encrypted_environment(synth):
    s = synth()

    function = importer_function(s)
    assert function["Timeout"] == 900
    assert function["MemorySize"] >= 2048
    assert function["Runtime"] == "python3.13"
    assert function["Handler"] == "model_importer.handler.handler"  # the package functions/model_importer
    assert function["KmsKeyArn"] == {"Fn::GetAtt": [logical_id_of(s, s.stack.key), "Arn"]}


def test_importer_logs_to_a_kms_encrypted_log_group_with_retention(synth):
    s = synth(log_retention_days=90)

    function = importer_function(s)
    log_group_id = function["LoggingConfig"]["LogGroup"]["Ref"]
    log_group = s.raw["Resources"][log_group_id]["Properties"]
    assert log_group["RetentionInDays"] == 90
    assert log_group["KmsKeyId"] == {"Fn::GetAtt": [logical_id_of(s, s.stack.key), "Arn"]}


def test_importer_gets_no_retries_and_no_managed_policies(synth):
    s = synth()

    (config,) = [c for k, c in s.resources("AWS::Lambda::EventInvokeConfig").items() if k.startswith("ModelImport")]
    assert config["Properties"]["MaximumRetryAttempts"] == 0
    (role,) = [r for k, r in s.resources("AWS::IAM::Role").items() if k.startswith("ModelImportRole")]
    assert "ManagedPolicyArns" not in role["Properties"]


# --- the importer's permissions -------------------------------------------------------------------------------------


def test_importer_objects_access_is_limited_to_the_models_prefix(synth):
    s = synth()
    bucket_id = logical_id_of(s, s.stack.bucket)

    object_statements = [
        st
        for st in importer_statements(s)
        if any(a.startswith("s3:") and a != "s3:ListBucket" for a in as_list(st["Action"]))
    ]
    data_bucket = [st for st in object_statements if bucket_id in json.dumps(st["Resource"])]
    assert len(data_bucket) == 1
    assert data_bucket[0]["Resource"] == {"Fn::Join": ["", [{"Fn::GetAtt": [bucket_id, "Arn"]}, "/models/*"]]}
    assert set(data_bucket[0]["Action"]) == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:AbortMultipartUpload",
        "s3:DeleteObject",
    }


def test_importer_may_list_only_the_models_prefix(synth):
    s = synth()

    (listing,) = [st for st in importer_statements(s) if "s3:ListBucket" in as_list(st["Action"])]
    assert listing["Condition"] == {"StringLike": {"s3:prefix": ["models/*"]}}


def test_importer_reads_only_the_handler_code_asset_outside_the_data_bucket(synth):
    s = synth()
    bucket_id = logical_id_of(s, s.stack.bucket)

    others = [
        st
        for st in importer_statements(s)
        if "s3:GetObject" in as_list(st["Action"]) and bucket_id not in json.dumps(st["Resource"])
    ]
    assert len(others) == 1
    assert as_list(others[0]["Action"]) == ["s3:GetObject"]
    resource = json.dumps(others[0]["Resource"])
    assert ".zip" in resource
    assert "*" not in resource.replace('"*"', "")


def test_importer_uses_only_the_stack_key(synth):
    s = synth()

    kms_statements = [st for st in importer_statements(s) if any(a.startswith("kms:") for a in as_list(st["Action"]))]
    assert kms_statements
    for statement in kms_statements:
        assert as_list(statement["Resource"]) == [{"Fn::GetAtt": [logical_id_of(s, s.stack.key), "Arn"]}]
        assert set(as_list(statement["Action"])) <= {"kms:Decrypt", "kms:GenerateDataKey"}


def test_importer_reads_the_token_secret_only_when_configured(synth):
    without = synth()
    with_secret = synth(hf_token_secret="hf/token")

    assert not any("secretsmanager:" in json.dumps(st["Action"]) for st in importer_statements(without))
    (secret,) = [st for st in importer_statements(with_secret) if "secretsmanager:GetSecretValue" in st["Action"]]
    assert ":secret:hf/token-??????" in json.dumps(secret["Resource"])
    assert with_secret.only("Custom::ModelImport")["Properties"]["HfTokenSecret"] == "hf/token"


# --- the handler code asset -----------------------------------------------------------------------------------------


def handler_code_key(code_dir: Path, monkeypatch: pytest.MonkeyPatch, outdir: Path) -> str:
    """The HandlerCodeKey property of a ModelImport in a bare stack whose handler code is ``code_dir``."""
    monkeypatch.setattr(model_import_module, "HANDLER_CODE", code_dir)
    app = cdk.App(outdir=str(outdir))
    stack = cdk.Stack(app, "Bare")
    ModelImport(
        stack,
        "ModelImport",
        settings=Settings(),
        bucket=s3.Bucket(stack, "Bucket"),
        key=kms.Key(stack, "Key"),
        log_retention=logs.RetentionDays.ONE_YEAR,
    )
    template = Template.from_stack(stack).to_json()
    (props,) = [r["Properties"] for r in template["Resources"].values() if r["Type"] == "Custom::ModelImport"]
    return json.dumps(props["HandlerCodeKey"])


def test_a_handler_change_changes_the_resource_but_caches_do_not(tmp_path, monkeypatch):
    code = tmp_path / "code"
    code.mkdir()
    (code / "inference.py").write_text("def model_fn(model_dir):\n    return None\n")
    before = handler_code_key(code, monkeypatch, tmp_path / "out1")

    (code / "__pycache__").mkdir()
    (code / "__pycache__" / "inference.cpython-313.pyc").write_bytes(b"cache")
    with_cache = handler_code_key(code, monkeypatch, tmp_path / "out2")
    (code / "inference.py").write_text("def model_fn(model_dir):\n    return 1\n")
    changed = handler_code_key(code, monkeypatch, tmp_path / "out3")

    assert with_cache == before
    assert changed != before


def test_the_importer_is_given_the_handlers_supported_architectures(synth):
    # The one list the handler owns, read at synth: the importer refuses any other architecture at deploy time
    listed = json.loads(model_import_module.SUPPORTED_ARCHITECTURES.read_text())["model_types"]

    props = synth().only("Custom::ModelImport")["Properties"]

    assert props["SupportedModelTypes"] == sorted(set(listed))
    assert {"bart", "deberta-v2", "xlm-roberta"} <= set(props["SupportedModelTypes"])


@pytest.mark.parametrize("content", ['{"model_types": []}', '{"types": ["bart"]}', "not json", '{"model_types": [1]}'])
def test_a_broken_architecture_list_fails_synthesis_naming_the_file(tmp_path, content):
    path = tmp_path / "supported_architectures.json"
    path.write_text(content)

    with pytest.raises(ValueError, match=r"supported_architectures\.json"):
        model_import_module.supported_model_types(path)
