"""The importer's pure rules: file selection, NLI and architecture checks, hashing, locations, messages."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.model_importer.logic import (
    Advice,
    HubFile,
    ImportFailure,
    ImportRequest,
    artifact_key,
    artifact_metadata,
    check_architecture,
    check_download,
    check_nli_config,
    check_request,
    check_resolved_commit,
    check_tokenizer_files,
    code_hash,
    hub_error_message,
    metadata_matches,
    new_digest,
    owned_artifact_key,
    parse_revision_info,
    read_code_zip,
    select_files,
    token_from_secret,
)

MODEL = "acme/nli"
REV = "a" * 40


def hub_file(path: str, content: bytes = b"x", *, lfs: bool | None = None) -> HubFile:
    lfs = path.endswith(".safetensors") if lfs is None else lfs
    blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
    return HubFile(
        path=path, size=len(content), blob_id=blob, sha256=hashlib.sha256(content).hexdigest() if lfs else None
    )


# --- parse_revision_info --------------------------------------------------------------------------------------------


def test_revision_info_reads_lfs_sha256_and_blob_ids():
    payload = {
        "sha": REV,
        "siblings": [
            {"rfilename": "config.json", "size": 10, "blobId": "b" * 40},
            {
                "rfilename": "model.safetensors",
                "size": 134,
                "blobId": "c" * 40,
                "lfs": {"sha256": "d" * 64, "size": 1000, "pointerSize": 134},
            },
        ],
    }

    info = parse_revision_info(MODEL, payload)

    assert info.sha == REV
    assert info.files[0] == HubFile("config.json", 10, "b" * 40, None)
    assert info.files[1] == HubFile("model.safetensors", 1000, "c" * 40, "d" * 64)  # the LFS size, not the pointer's


def test_revision_info_without_blobs_is_refused():
    with pytest.raises(ImportFailure, match="blobs=true"):
        parse_revision_info(MODEL, {"siblings": [{"rfilename": "config.json"}]})


# --- select_files ---------------------------------------------------------------------------------------------------


def test_keeps_config_tokenizer_and_safetensors_and_drops_other_weights_and_folders():
    files = [
        hub_file(p)
        for p in (
            ".gitattributes",
            "README.md",
            "config.json",
            "flax_model.msgpack",
            "merges.txt",
            "model.safetensors",
            "onnx/model.onnx",
            "onnx/config.json",
            "pytorch_model.bin",
            "rust_model.ot",
            "tf_model.h5",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.json",
            "spiece.model",
        )
    ]

    selected = [f.path for f in select_files(MODEL, REV, files)]

    assert selected == [
        "config.json",
        "merges.txt",
        "spiece.model",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "model.safetensors",
    ]


def test_sharded_weights_come_with_their_index():
    files = [
        hub_file(p) for p in ("config.json", "model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors")
    ]
    files.append(hub_file("model.safetensors.index.json"))

    selected = [f.path for f in select_files(MODEL, REV, files)]

    assert selected[-3:] == [
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]


def test_shards_without_index_are_refused():
    files = [hub_file(p) for p in ("config.json", "a.safetensors", "b.safetensors")]

    with pytest.raises(ImportFailure, match=r"no model\.safetensors\.index\.json"):
        select_files(MODEL, REV, files)


def test_a_model_with_only_pickled_weights_is_refused_with_the_alternatives():
    files = [hub_file(p) for p in ("config.json", "pytorch_model.bin")]

    with pytest.raises(
        ImportFailure, match=r"no \*\.safetensors weights \(found: pytorch_model\.bin\).*model_source=s3"
    ):
        select_files(MODEL, REV, files)


def test_a_repository_without_config_is_refused():
    with pytest.raises(ImportFailure, match=r"no config\.json"):
        select_files(MODEL, REV, [hub_file("model.safetensors")])


# --- check_nli_config -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        {"id2label": {"0": "contradiction", "1": "neutral", "2": "entailment"}},
        {"label2id": {"CONTRADICTION": 0, "ENTAILMENT": 1}},
        {"id2label": {"0": "entailment", "1": "not_entailment"}},
    ],
)
def test_nli_configs_are_accepted(config):
    assert check_nli_config(MODEL, REV, json.dumps(config).encode()) == config


def test_a_sentiment_classifier_is_refused_naming_its_labels():
    config = {"id2label": {"0": "NEGATIVE", "1": "POSITIVE"}}

    with pytest.raises(ImportFailure, match=r"not an NLI classifier.*labels: NEGATIVE, POSITIVE"):
        check_nli_config(MODEL, REV, json.dumps(config).encode())


def test_invalid_config_json_is_refused():
    with pytest.raises(ImportFailure, match="not valid JSON"):
        check_nli_config(MODEL, REV, b"{not json")


# --- code hash and location -----------------------------------------------------------------------------------------


def test_code_hash_depends_on_content_and_path():
    base = code_hash({"inference.py": b"a"})

    assert code_hash({"inference.py": b"a"}) == base
    assert code_hash({"inference.py": b"b"}) != base
    assert code_hash({"inference.py": b"a", "requirements.txt": b""}) != base
    assert len(base) == 16


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.binary(max_size=16), min_size=1, max_size=4))
def test_code_hash_ignores_insertion_order(files):
    reordered = dict(reversed(list(files.items())))

    assert code_hash(files) == code_hash(reordered)


def test_artifact_key_layout():
    assert artifact_key("models/", "facebook/bart-large-mnli", REV, "0123456789abcdef") == (
        f"models/facebook/bart-large-mnli/{REV}/0123456789abcdef/model.tar.gz"
    )


def test_code_zip_drops_caches_and_requires_inference_py():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inference.py", b"code")
        archive.writestr("__pycache__/inference.cpython-313.pyc", b"cache")
    assert read_code_zip(buffer.getvalue()) == {"inference.py": b"code"}

    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w") as archive:
        archive.writestr("other.py", b"")
    with pytest.raises(ImportFailure, match=r"no inference\.py"):
        read_code_zip(empty.getvalue())


# --- the request, the download's checks, the artifact's metadata and ownership -------------------------------------


def request(**changes: str) -> ImportRequest:
    fields = {"model_id": MODEL, "revision": REV, "bucket": "bucket", "prefix": "models/", **changes}
    return ImportRequest(code_files={"inference.py": b"code"}, supported_model_types=("bart",), **fields)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model_id": "acme/nli/extra"}, "Invalid model_id 'acme/nli/extra': expected e.g. facebook/bart-large-mnli"),
        ({"revision": "main"}, "Invalid model_revision 'main': expected e.g. d7645e127eaf1aefc7862fd59a17a5aa8558b8ce"),
        ({"revision": REV[:12]}, f"Invalid model_revision '{REV[:12]}'"),
    ],
)
def test_a_malformed_model_id_or_revision_is_refused(changes, message):
    with pytest.raises(ImportFailure, match=message):
        check_request(request(**changes))


def test_a_well_formed_request_passes():
    check_request(request())


def test_the_revision_must_resolve_to_itself():
    check_resolved_commit(request(), REV)

    with pytest.raises(ImportFailure, match=f"resolved revision {REV} of '{MODEL}' to commit {'b' * 40}"):
        check_resolved_commit(request(), "b" * 40)


@pytest.mark.parametrize("lfs", [True, False])
def test_a_download_checks_against_the_hubs_digest(lfs):
    content = b"weights" * 100
    file = hub_file("model.safetensors", content, lfs=lfs)
    digest = new_digest(file)
    digest.update(content)

    check_download(file, MODEL, received=len(content), digest=digest.hexdigest())

    kind = "SHA-256" if lfs else "Git blob id"
    with pytest.raises(ImportFailure, match=f"Checksum mismatch for 'model.safetensors' of model '{MODEL}': {kind}"):
        check_download(file, MODEL, received=len(content), digest="0" * 64)
    with pytest.raises(ImportFailure, match=f"ended after 5 of {len(content)} bytes"):
        check_download(file, MODEL, received=5, digest=digest.hexdigest())


def test_an_artifact_is_reused_only_for_the_same_model_revision_and_code():
    written = artifact_metadata(request())

    assert metadata_matches(written, request())
    assert not metadata_matches(written, request(revision="c" * 40))
    assert not metadata_matches({**written, "zstc-code-hash": "0" * 16}, request())
    assert not metadata_matches({}, request())


@pytest.mark.parametrize(
    "url",
    [
        "failed-create:2026/11/01/[$LATEST]abc",
        "s3://other-bucket/models/a/b/c/model.tar.gz",
        "s3://bucket/input/a.jsonl",
        "s3://bucket/models/a/b/c/manifest.json",
        "s3://bucket/models/../input/model.tar.gz",
    ],
)
def test_only_artifacts_under_the_prefix_of_the_bucket_are_ours(url):
    assert owned_artifact_key(url, bucket="bucket", prefix="models/") is None


def test_an_artifact_of_ours_gives_its_key():
    url = "s3://bucket/models/m/r/c/model.tar.gz"

    assert owned_artifact_key(url, bucket="bucket", prefix="models/") == "models/m/r/c/model.tar.gz"


# --- messages and secrets -------------------------------------------------------------------------------------------


def test_missing_revision_message_names_model_and_revision():
    message = hub_error_message(404, "RevisionNotFound", model_id=MODEL, revision=REV, path=None, has_token=False)

    assert MODEL in message and REV in message and "model_revision" in message


@pytest.mark.parametrize("status", [401, 403])
def test_gated_without_token_says_to_set_hf_token_secret(status):
    message = hub_error_message(status, "GatedRepo", model_id=MODEL, revision=REV, path="config.json", has_token=False)

    assert "gated" in message and "-c hf_token_secret=" in message


def test_unknown_repository_message_mentions_private_models():
    message = hub_error_message(401, "RepoNotFound", model_id=MODEL, revision=REV, path=None, has_token=False)

    assert f"Model '{MODEL}' was not found" in message and "hf_token_secret" in message


@pytest.mark.parametrize(
    ("secret", "token"),
    [
        ("hf_abc", "hf_abc"),
        ('{"token": "hf_abc"}', "hf_abc"),
        ('{"HF_TOKEN": "hf_abc"}', "hf_abc"),
        (" hf_abc\n", "hf_abc"),
    ],
)
def test_token_is_read_from_plain_or_json_secrets(secret, token):
    assert token_from_secret(secret, "hf/token") == token


def test_an_empty_secret_is_refused():
    with pytest.raises(ImportFailure, match="Secret 'hf/token' holds no Hugging Face token"):
        token_from_secret('{"other": "x"}', "hf/token")


# --- check_tokenizer_files / check_architecture ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "names",
    [
        ["tokenizer.json"],
        ["vocab.txt", "tokenizer_config.json"],
        ["vocab.json", "merges.txt"],
        ["spm.model", "tokenizer_config.json"],
        ["sentencepiece.bpe.model"],
    ],
)
def test_each_tokenizer_family_is_accepted(names):
    check_tokenizer_files(MODEL, REV, [hub_file(n) for n in ["config.json", "model.safetensors", *names]])


@pytest.mark.parametrize(
    "names", [["tokenizer_config.json", "special_tokens_map.json"], ["vocab.json"], ["onnx/tokenizer.json"]]
)
def test_a_revision_without_a_loadable_tokenizer_is_refused(names):
    with pytest.raises(ImportFailure, match=r"has no tokenizer files"):
        check_tokenizer_files(MODEL, REV, [hub_file(n) for n in ["config.json", "model.safetensors", *names]])


def test_a_supported_architecture_is_returned():
    assert check_architecture(MODEL, REV, {"model_type": "deberta-v2"}, ["bart", "deberta-v2"]) == "deberta-v2"


@pytest.mark.parametrize(("config", "shown"), [({"model_type": "gpt2"}, "'gpt2'"), ({}, "no model_type")])
def test_an_unsupported_architecture_names_the_supported_ones(config, shown):
    with pytest.raises(ImportFailure) as failure:
        check_architecture(MODEL, REV, config, ["roberta", "bart", "bert"])

    assert f"architecture {shown} (config.json model_type)" in str(failure.value)
    assert "Supported: bart, bert, roberta." in str(failure.value)


def test_an_empty_supported_list_refuses_everything():
    with pytest.raises(ImportFailure, match="No supported architectures"):
        check_architecture(MODEL, REV, {"model_type": "bart"}, [])


def test_cli_advice_replaces_the_deployment_hints():
    advice = Advice(holder="the token in $HF_TOKEN", authenticate="pass --token-env HF_TOKEN", retry="retry later")

    message = hub_error_message(
        401, "GatedRepo", model_id=MODEL, revision=REV, path="config.json", has_token=False, advice=advice
    )

    assert message.endswith("pass --token-env HF_TOKEN") and "hf_token_secret" not in message
