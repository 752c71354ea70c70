"""The importer's pure logic: file selection, NLI check, hashing, verification, multipart writing, messages."""

from __future__ import annotations

import hashlib
import io
import json
import urllib.request
import zipfile
from http.client import IncompleteRead

import pytest
from hypothesis import given
from hypothesis import strategies as st

from functions.model_importer.logic import (
    Advice,
    HubFile,
    ImportFailure,
    MultipartWriter,
    VerifiedStream,
    _SameOriginAuthRedirects,
    artifact_key,
    check_architecture,
    check_nli_config,
    check_tokenizer_files,
    code_hash,
    delete_artifact,
    hub_error_message,
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


# --- VerifiedStream -------------------------------------------------------------------------------------------------


class FlakyResponse(io.BytesIO):
    """Serves ``data`` from ``offset``; raises IncompleteRead after ``fail_after`` bytes (once per instance)."""

    def __init__(self, data: bytes, fail_after: int | None = None) -> None:
        super().__init__(data)
        self.fail_after = fail_after

    def read(self, size: int = -1) -> bytes:
        if self.fail_after is not None and self.tell() >= self.fail_after:
            raise IncompleteRead(b"")
        if self.fail_after is not None:
            size = min(size, self.fail_after - self.tell())
        return super().read(size)


@pytest.mark.parametrize("lfs", [True, False])
def test_verified_stream_accepts_matching_content(lfs):
    content = b"weights" * 1000
    stream = VerifiedStream(
        hub_file("model.safetensors", content, lfs=lfs), lambda offset: io.BytesIO(content[offset:])
    )

    assert stream.read(len(content) + 10) == content
    stream.verify(MODEL)


@pytest.mark.parametrize("lfs", [True, False])
def test_verified_stream_rejects_altered_content(lfs):
    content = b"weights" * 1000
    altered = content[:-1] + b"X"
    stream = VerifiedStream(
        hub_file("model.safetensors", content, lfs=lfs), lambda offset: io.BytesIO(altered[offset:])
    )
    stream.read()

    with pytest.raises(ImportFailure, match="Checksum mismatch"):
        stream.verify(MODEL)


def test_verified_stream_resumes_at_the_byte_it_stopped():
    content = bytes(range(256)) * 40
    offsets: list[int] = []

    def opener(offset: int) -> FlakyResponse:
        offsets.append(offset)
        return FlakyResponse(content[offset:], fail_after=3000 if offset == 0 else None)

    stream = VerifiedStream(hub_file("model.safetensors", content), opener)

    assert stream.read(len(content)) == content  # one read: exactly the bytes asked for, despite the break
    stream.verify(MODEL)
    assert offsets == [0, 3000]


def test_verified_stream_gives_up_after_repeated_failures(monkeypatch):
    monkeypatch.setattr("functions.model_importer.logic.time.sleep", lambda _s: None)
    content = b"a" * 100
    stream = VerifiedStream(hub_file("model.safetensors", content), lambda offset: FlakyResponse(b"", fail_after=0))

    with pytest.raises(ImportFailure, match="failed 4 times at byte 0 of 100"):
        stream.read()


def test_verified_stream_detects_a_short_file():
    content = b"a" * 100
    stream = VerifiedStream(hub_file("model.safetensors", content), lambda offset: io.BytesIO(b"a" * 50))
    stream.done = 50  # as if the server had closed cleanly without sending the rest

    with pytest.raises(ImportFailure, match="ended after 50 of 100 bytes"):
        stream.verify(MODEL)


# --- MultipartWriter ------------------------------------------------------------------------------------------------


class RecordingS3:
    def __init__(self) -> None:
        self.parts: dict[int, bytes] = {}
        self.completed: list[dict] | None = None
        self.aborted = False
        self.deleted: list[str] = []

    def create_multipart_upload(self, **kwargs):
        self.created = kwargs
        return {"UploadId": "u1"}

    def upload_part(self, *, PartNumber, Body, **_):
        self.parts[PartNumber] = Body
        return {"ETag": f'"{PartNumber}"', "ChecksumCRC32": f"crc{PartNumber}"}

    def complete_multipart_upload(self, *, MultipartUpload, **_):
        self.completed = MultipartUpload["Parts"]
        return {}

    def abort_multipart_upload(self, **_):
        self.aborted = True

    def delete_object(self, *, Key, **_):
        self.deleted.append(Key)


def test_writer_cuts_fixed_size_parts_and_completes_with_their_checksums():
    s3 = RecordingS3()
    writer = MultipartWriter(s3, "b", "k", part_size=10, extra_args={"Metadata": {"a": "b"}})
    data = bytes(range(25))

    for i in range(0, 25, 3):
        writer.write(data[i : i + 3])
    writer.complete()

    assert [s3.parts[n] for n in sorted(s3.parts)] == [data[:10], data[10:20], data[20:]]
    assert s3.completed == [{"PartNumber": n, "ETag": f'"{n}"', "ChecksumCRC32": f"crc{n}"} for n in (1, 2, 3)]
    assert writer.sha256.hexdigest() == hashlib.sha256(data).hexdigest()
    assert s3.created["Metadata"] == {"a": "b"}


def test_writer_abort_discards_the_upload():
    s3 = RecordingS3()
    writer = MultipartWriter(s3, "b", "k", part_size=10)
    writer.write(b"x" * 15)

    writer.abort()

    assert s3.aborted is True
    assert s3.completed is None


# --- delete_artifact ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "failed-create:2026/11/01/[$LATEST]abc",
        "s3://other-bucket/models/a/b/c/model.tar.gz",
        "s3://bucket/input/a.jsonl",
        "s3://bucket/models/../input/model.tar.gz",
    ],
)
def test_delete_leaves_anything_not_ours_alone(url):
    s3 = RecordingS3()

    assert delete_artifact(s3, bucket="bucket", prefix="models/", url=url) is False
    assert s3.deleted == []


def test_delete_removes_the_artifact_and_its_manifest():
    s3 = RecordingS3()

    assert delete_artifact(s3, bucket="bucket", prefix="models/", url="s3://bucket/models/m/r/c/model.tar.gz")
    assert s3.deleted == ["models/m/r/c/model.tar.gz", "models/m/r/c/manifest.json"]


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


# --- the token on redirects (issue 13 item 5) -----------------------------------------------------------------------


def redirected(hub_url: str, target: str) -> urllib.request.Request:
    request = urllib.request.Request(f"{hub_url}/acme/nli/resolve/{REV}/config.json")
    request.add_header("Authorization", "Bearer hf_secret")
    new = _SameOriginAuthRedirects(hub_url).redirect_request(request, None, 302, "Found", {}, target)
    assert new is not None
    return new


@pytest.mark.parametrize(
    "target",
    [
        "http://huggingface.co/acme/nli/resolve/main/config.json",  # https -> http, same host: clear text
        "https://cdn-lfs.huggingface.co/repos/ab/cd/file?X-Amz-Signature=1",  # another host
        "https://huggingface.co:8443/acme/nli/config.json",  # another port
    ],
)
def test_the_token_is_dropped_on_any_scheme_host_or_port_change(target):
    assert not redirected("https://huggingface.co", target).has_header("Authorization")


def test_the_token_is_kept_on_the_hubs_own_origin_whatever_the_case():
    new = redirected("https://huggingface.co", "https://HuggingFace.co/api/resolve-cache/x")

    assert new.get_header("Authorization") == "Bearer hf_secret"


def test_cli_advice_replaces_the_deployment_hints():
    advice = Advice(holder="the token in $HF_TOKEN", authenticate="pass --token-env HF_TOKEN", retry="retry later")

    message = hub_error_message(
        401, "GatedRepo", model_id=MODEL, revision=REV, path="config.json", has_token=False, advice=advice
    )

    assert message.endswith("pass --token-env HF_TOKEN") and "hf_token_secret" not in message
