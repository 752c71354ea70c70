"""The importer end to end: fake Hub on 127.0.0.1 -> tar.gz stream -> moto S3."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile

import pytest

from functions.model_importer.logic import ImportFailure, ImportRequest, OutOfTime
from functions.model_importer.service import HubClient, import_model

EXPECTED_MEMBERS = {
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "model.safetensors",
}


@pytest.fixture
def repo(hub, fx, tiny_model_dir):
    files = fx.model_files(tiny_model_dir)
    hub.add(fx.MODEL_ID, fx.REVISION, files)
    return files


def make_request(fx, aws, code_files, *, prefix="models/", model_id=None, revision=None) -> ImportRequest:
    return ImportRequest(
        model_id=model_id or fx.MODEL_ID,
        revision=revision or fx.REVISION,
        bucket=fx.BUCKET,
        prefix=prefix,
        code_files=code_files,
        supported_model_types=fx.SUPPORTED_MODEL_TYPES,
        kms_key_arn=aws.key_arn,
    )


def read_members(s3, bucket: str, key: str) -> dict[str, bytes]:
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}


def test_artifact_holds_only_config_tokenizer_safetensors_and_handler(hub, fx, aws, repo, handler_code_files):
    # Given a repo with other framework weights, a README and an onnx/ folder
    request = make_request(fx, aws, handler_code_files)

    # When the model is imported
    result = import_model(HubClient(hub.base_url), aws.s3, request)

    # Then the tarball holds only what the model needs, plus our handler under code/
    members = read_members(aws.s3, fx.BUCKET, result.key)
    assert set(members) == EXPECTED_MEMBERS | {f"code/{p}" for p in handler_code_files}
    assert members["model.safetensors"] == repo["model.safetensors"]
    assert members["code/inference.py"] == handler_code_files["inference.py"]
    assert not hub.downloads("pytorch_model.bin")


def test_artifact_location_is_model_revision_and_code_hash(hub, fx, aws, repo, handler_code_files):
    request = make_request(fx, aws, handler_code_files)

    result = import_model(HubClient(hub.base_url), aws.s3, request)

    assert result.url == f"s3://{fx.BUCKET}/models/{fx.MODEL_ID}/{fx.REVISION}/{request.code_digest}/model.tar.gz"
    head = aws.s3.head_object(Bucket=fx.BUCKET, Key=result.key)
    assert head["ServerSideEncryption"] == "aws:kms"
    assert head["Metadata"]["zstc-model-id"] == fx.MODEL_ID
    assert head["Metadata"]["zstc-revision"] == fx.REVISION


def test_manifest_records_each_file_checksum_and_the_artifact_sha256(hub, fx, aws, repo, handler_code_files):
    result = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    manifest_key = result.key.replace("model.tar.gz", "manifest.json")
    manifest = json.loads(aws.s3.get_object(Bucket=fx.BUCKET, Key=manifest_key)["Body"].read())
    artifact = aws.s3.get_object(Bucket=fx.BUCKET, Key=result.key)["Body"].read()
    assert manifest["artifact"]["sha256"] == hashlib.sha256(artifact).hexdigest() == result.sha256
    by_path = {f["path"]: f for f in manifest["files"]}
    assert by_path["model.safetensors"]["sha256"] == hashlib.sha256(repo["model.safetensors"]).hexdigest()


def test_same_inputs_give_byte_identical_artifacts(hub, fx, aws, repo, handler_code_files):
    first = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files, prefix="models/a/"))

    second = import_model(
        HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files, prefix="models/b/")
    )

    assert first.sha256 == second.sha256


def test_second_import_copies_nothing(hub, fx, aws, repo, handler_code_files):
    # Given an artifact imported once
    import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))
    hub.requests.clear()

    # When the same model, revision and code are imported again (a re-deploy)
    result = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    # Then the Hub is not contacted at all and the result points at the same artifact
    assert result.copied is False
    assert hub.requests == []
    assert result.sha256 != "unknown"


def test_changed_handler_code_gives_a_new_artifact(hub, fx, aws, repo, handler_code_files):
    first = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    changed = {**handler_code_files, "inference.py": handler_code_files["inference.py"] + b"\n# changed\n"}
    second = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, changed))

    assert second.copied is True
    assert second.url != first.url


def test_corrupted_weights_are_rejected_and_nothing_is_written(hub, fx, aws, repo, handler_code_files):
    # Given a download whose bytes differ from the Hub's SHA-256 (same length)
    weights = bytearray(repo["model.safetensors"])
    weights[-1] ^= 0xFF
    hub.corrupt["model.safetensors"] = bytes(weights)
    request = make_request(fx, aws, handler_code_files)

    # When the model is imported
    with pytest.raises(ImportFailure, match=r"Checksum mismatch for 'model\.safetensors'.*SHA-256"):
        import_model(HubClient(hub.base_url), aws.s3, request)

    # Then no artifact and no pending multipart upload remain
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=fx.BUCKET)
    assert not aws.s3.list_multipart_uploads(Bucket=fx.BUCKET).get("Uploads")


def test_corrupted_tokenizer_file_is_rejected_by_its_git_blob_id(hub, fx, aws, repo, handler_code_files):
    hub.corrupt["tokenizer.json"] = repo["tokenizer.json"].replace(b'"', b"'", 1)

    with pytest.raises(ImportFailure, match=r"Checksum mismatch for 'tokenizer\.json'.*Git blob id"):
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))


def test_dropped_connection_resumes_where_it_stopped(hub, fx, aws, repo, handler_code_files):
    hub.drop_once.add("model.safetensors")

    result = import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    assert read_members(aws.s3, fx.BUCKET, result.key)["model.safetensors"] == repo["model.safetensors"]
    ranges = [r["range"] for r in hub.downloads("model.safetensors")]
    assert ranges[0] is None
    assert ranges[1] == f"bytes={len(repo['model.safetensors']) // 2}-"


def test_large_weights_stream_in_several_parts(hub, fx, aws, tiny_model_dir, handler_code_files):
    # Given weights larger than two 5 MiB parts (incompressible)
    files = fx.model_files(tiny_model_dir, extras=False)
    files["model.safetensors"] = os.urandom(11 * 1024 * 1024)
    hub.add(fx.MODEL_ID, fx.REVISION, files)

    result = import_model(
        HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files), part_size=5 * 1024 * 1024
    )

    assert read_members(aws.s3, fx.BUCKET, result.key)["model.safetensors"] == files["model.safetensors"]
    assert aws.s3.head_object(Bucket=fx.BUCKET, Key=result.key, PartNumber=1)["PartsCount"] == 3


def test_missing_revision_names_the_model_and_the_revision(hub, fx, aws, repo, handler_code_files):
    request = make_request(fx, aws, handler_code_files, revision="2" * 40)

    with pytest.raises(ImportFailure) as failure:
        import_model(HubClient(hub.base_url), aws.s3, request)

    message = str(failure.value)
    assert f"Revision {'2' * 40} of model '{fx.MODEL_ID}' was not found" in message
    assert "model_revision" in message


def test_unknown_model_is_named_with_a_hint(hub, fx, aws, repo, handler_code_files):
    request = make_request(fx, aws, handler_code_files, model_id="acme/no-such-model")

    with pytest.raises(ImportFailure, match=r"Model 'acme/no-such-model' was not found.*hf_token_secret"):
        import_model(HubClient(hub.base_url), aws.s3, request)


def test_gated_model_without_token_says_to_set_hf_token_secret(hub, fx, aws, tiny_model_dir, handler_code_files):
    hub.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir), gated=True)

    with pytest.raises(ImportFailure, match=r"is gated \(HTTP 401\).*-c hf_token_secret="):
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))


def test_gated_model_with_a_token_without_access_says_so(hub, fx, aws, tiny_model_dir, handler_code_files):
    hub.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir), gated=True)

    with pytest.raises(ImportFailure, match=r"token in hf_token_secret has no access \(HTTP 403\)"):
        import_model(HubClient(hub.base_url, token="hf_other"), aws.s3, make_request(fx, aws, handler_code_files))


def test_gated_model_with_token_imports_without_sending_the_token_to_the_cdn(
    hub, fx, aws, tiny_model_dir, handler_code_files
):
    hub.add(fx.MODEL_ID, fx.REVISION, fx.model_files(tiny_model_dir), gated=True)

    result = import_model(
        HubClient(hub.base_url, token=fx.VALID_TOKEN), aws.s3, make_request(fx, aws, handler_code_files)
    )

    assert result.copied is True
    assert all(r["auth"] == f"Bearer {fx.VALID_TOKEN}" for r in hub.requests if r["kind"] == "resolve")
    assert all(r["auth"] is None for r in hub.downloads())


def test_model_without_entailment_label_is_refused_before_downloading_weights(
    hub, fx, aws, tiny_model_dir, handler_code_files
):
    files = fx.model_files(tiny_model_dir)
    config = json.loads(files["config.json"])
    config["id2label"] = {"0": "NEGATIVE", "1": "POSITIVE"}
    config["label2id"] = {"NEGATIVE": 0, "POSITIVE": 1}
    files["config.json"] = json.dumps(config).encode()
    hub.add(fx.MODEL_ID, fx.REVISION, files)

    with pytest.raises(
        ImportFailure, match=r"not an NLI classifier.*no 'entailment' label \(labels: NEGATIVE, POSITIVE"
    ):
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    assert not hub.downloads("model.safetensors")


def test_running_out_of_time_aborts_the_upload(hub, fx, aws, repo, handler_code_files):
    calls = {"n": 0}

    def deadline() -> None:
        calls["n"] += 1
        if calls["n"] > 3:
            raise OutOfTime("out of time")

    with pytest.raises(OutOfTime):
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files), deadline=deadline)

    assert "Contents" not in aws.s3.list_objects_v2(Bucket=fx.BUCKET)
    assert not aws.s3.list_multipart_uploads(Bucket=fx.BUCKET).get("Uploads")


def with_config(files: dict[str, bytes], **changes) -> dict[str, bytes]:
    config = json.loads(files["config.json"])
    config.update(changes)
    return {**files, "config.json": json.dumps(config).encode()}


def test_unsupported_architecture_is_refused_naming_the_supported_ones_before_downloading_weights(
    hub, fx, aws, tiny_model_dir, handler_code_files
):
    # Given an NLI model whose architecture the handler does not support (e.g. a GPT-2 classifier)
    hub.add(fx.MODEL_ID, fx.REVISION, with_config(fx.model_files(tiny_model_dir), model_type="gpt2"))

    # When it is imported, Then the import fails naming the architecture and every supported one
    with pytest.raises(ImportFailure) as failure:
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    message = str(failure.value)
    assert "architecture 'gpt2' (config.json model_type)" in message
    assert f"Supported: {', '.join(sorted(fx.SUPPORTED_MODEL_TYPES))}." in message
    assert not hub.downloads("model.safetensors")
    assert "Contents" not in aws.s3.list_objects_v2(Bucket=fx.BUCKET)


def test_the_supported_list_is_the_one_passed_in(hub, fx, aws, repo, handler_code_files):
    # The importer decides with the list it is given (the stack's), not a copy of its own
    request = make_request(fx, aws, handler_code_files)
    narrowed = ImportRequest(**{**request.__dict__, "supported_model_types": ("bert",)})

    with pytest.raises(ImportFailure, match=r"architecture 'bart'.*Supported: bert\."):
        import_model(HubClient(hub.base_url), aws.s3, narrowed)

    assert import_model(HubClient(hub.base_url), aws.s3, request).copied is True


def test_a_revision_without_tokenizer_files_is_refused_before_downloading_weights(
    hub, fx, aws, tiny_model_dir, handler_code_files
):
    files = {k: v for k, v in fx.model_files(tiny_model_dir).items() if k not in ("tokenizer.json", "vocab.json")}
    hub.add(fx.MODEL_ID, fx.REVISION, files)

    with pytest.raises(ImportFailure, match=r"has no tokenizer files \(found: merges\.txt, special_tokens_map"):
        import_model(HubClient(hub.base_url), aws.s3, make_request(fx, aws, handler_code_files))

    assert not hub.downloads("model.safetensors")
