"""Zero-shot classification handler for the Hugging Face inference toolkit (SageMaker HF inference container).

The toolkit imports ``code/inference.py`` from the model directory and calls ``model_fn(model_dir, context)`` once
per worker, then ``transform_fn(model, body, content_type, accept, context)`` per request. Compared with the stock
handler this one:

- accepts one JSON object (real-time) or JSON Lines (batch transform MultiRecord), as ``application/json`` or
  ``application/jsonlines``, with or without ``; charset=...``;
- answers every record, in order: a result, or ``{"error": ...}`` saying what is wrong and how to fix it, so one bad
  line never fails the request (nor the batch transform file);
- flattens the (text, label) pairs of all records, sorts them by length and runs fixed-size padded batches under
  ``torch.inference_mode()``; scores equal the ``transformers`` zero-shot pipeline's (same model, same inputs) to
  1e-5 in float32.

Environment (all optional):

- ``ZSTC_BATCH_SIZE``: (text, label) pairs per forward pass, default 16.
- ``ZSTC_DTYPE``: ``auto`` (default: float16 on GPU, float32 on CPU), ``float32``, ``float16`` (GPU only),
  ``bfloat16``, ``int8`` (CPU only: dynamic quantization of the linear layers). Anything but float32 changes scores.

See docs/handler.md for the request/response contract.
"""

from __future__ import annotations

import codecs
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

logger = logging.getLogger(__name__)

ENV_BATCH_SIZE = "ZSTC_BATCH_SIZE"
ENV_DTYPE = "ZSTC_DTYPE"
DEFAULT_BATCH_SIZE = 16
DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")

JSON = "application/json"
JSON_LINES = "application/jsonlines"
JSON_TYPES = frozenset({JSON})
JSON_LINES_TYPES = frozenset({JSON_LINES, "application/x-jsonlines", "application/jsonl", "application/json-lines"})
DEFAULT_TEMPLATE = "This example is {}."
PARAMETERS = ("candidate_labels", "multi_label", "hypothesis_template")
# Pairs tokenized and sorted together: bounds memory on 100 MB batch transform payloads while keeping batches full.
CHUNK_PAIRS = 32768


class RequestError(ValueError):
    """The request as a whole cannot be read (content type, charset, accept): the toolkit answers HTTP 400."""


class RecordError(ValueError):
    """One record is invalid: it gets an error object, the other records are classified."""


@dataclass
class ZeroShotModel:
    """What ``model_fn`` loads once per worker."""

    tokenizer: Any
    model: Any
    device: torch.device
    dtype: str
    batch_size: int
    max_length: int
    entailment_id: int
    contradiction_id: int
    eos_token_id: int
    pad_token_id: int


@dataclass
class Record:
    """One request record after validation; ``error`` set when it cannot be classified."""

    has_id: bool = False
    id: Any = None
    texts: list[str] = field(default_factory=list)
    batched_inputs: bool = False  # "inputs" was a list: the answer is a list too, as with the pipeline
    labels: list[str] = field(default_factory=list)
    multi_label: bool = False
    template: str = DEFAULT_TEMPLATE
    error: str | None = None
    pair_ids: list[list[int]] = field(default_factory=list)  # per text: unique-pair index of each label


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def _env_batch_size() -> int:
    raw = os.environ.get(ENV_BATCH_SIZE, "").strip()
    if not raw:
        return DEFAULT_BATCH_SIZE
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= 4096:
        raise ValueError(f"{ENV_BATCH_SIZE}={raw!r} is invalid: set a whole number of pairs from 1 to 4096.")
    return value


def _env_dtype(device: torch.device) -> str:
    raw = os.environ.get(ENV_DTYPE, "auto").strip().lower() or "auto"
    if raw not in DTYPES:
        raise ValueError(f"{ENV_DTYPE}={raw!r} is invalid: use one of {', '.join(DTYPES)}.")
    if raw == "auto":
        return "float16" if device.type == "cuda" else "float32"
    if raw == "float16" and device.type != "cuda":
        raise ValueError(f"{ENV_DTYPE}=float16 needs a GPU: on CPU use bfloat16, int8 or float32.")
    if raw == "int8" and device.type != "cpu":
        raise ValueError(f"{ENV_DTYPE}=int8 is for CPU instances: on GPU use float16 or float32.")
    return raw


def _device(context: Any) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    gpu_id = 0
    if context is not None:
        gpu_id = int(context.system_properties.get("gpu_id") or 0)
    return torch.device("cuda", gpu_id)


def _receive_raw_bytes() -> None:
    """Make the toolkit hand us ``application/json`` bodies as bytes instead of decoding them itself.

    The toolkit decodes exact ``application/json`` bodies as UTF-8 before calling ``transform_fn``: one invalid byte
    in one JSON Lines record would fail the whole request (HTTP 400) and with it the batch transform file. We decode
    per line instead, so only that record gets an error. No effect if the toolkit changes (we accept str too).
    """
    try:
        from sagemaker_huggingface_inference_toolkit import content_types
    except ImportError:  # not running under the toolkit
        return
    while JSON in content_types.UTF8_TYPES:
        content_types.UTF8_TYPES.remove(JSON)


def model_fn(model_dir: str, context: Any = None) -> ZeroShotModel:
    """Load tokenizer and NLI model once per worker (device, precision and batch size from the environment)."""
    _receive_raw_bytes()
    device = _device(context)
    dtype = _env_dtype(device)
    batch_size = _env_batch_size()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    model.eval()
    if dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif dtype in ("float16", "bfloat16"):
        model = model.to(getattr(torch, dtype))
    model.to(device)

    # Same rule as transformers' ZeroShotClassificationPipeline.entailment_id / postprocess.
    entailment_id = -1
    for label, index in model.config.label2id.items():
        if label.lower().startswith("entail"):
            entailment_id = int(index)
            break
    if entailment_id == -1:
        logger.warning("No label starting with 'entail' in the model's label2id: using the last logit as entailment.")
    contradiction_id = -1 if entailment_id == 0 else 0

    limits = [
        value
        for value in (tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None))
        if isinstance(value, int) and 0 < value < 1_000_000
    ]
    if tokenizer.pad_token is None:  # as the pipeline does
        tokenizer.pad_token = tokenizer.eos_token
    loaded = ZeroShotModel(
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_length=min(limits) if limits else 512,
        entailment_id=entailment_id,
        contradiction_id=contradiction_id,
        eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1,
        pad_token_id=tokenizer.pad_token_id,
    )
    logger.info(
        "zero-shot handler ready: device=%s dtype=%s batch_size=%d max_length=%d threads=%d",
        device,
        dtype,
        batch_size,
        loaded.max_length,
        torch.get_num_threads(),
    )
    return loaded


# ---------------------------------------------------------------------------------------------------------------
# Request parsing
# ---------------------------------------------------------------------------------------------------------------
def _media_type(header: str | None, default: str) -> tuple[str, dict[str, str]]:
    if not header or not header.strip():
        return default, {}
    media, *params = header.split(";")
    options = {}
    for param in params:
        key, _, value = param.partition("=")
        options[key.strip().lower()] = value.strip().strip('"')
    return media.strip().lower(), options


def _charset(content_type: str | None) -> str:
    media, options = _media_type(content_type, JSON)
    if media not in JSON_TYPES | JSON_LINES_TYPES:
        raise RequestError(
            f"Unsupported Content-Type {content_type!r}: send {JSON} (one object, or one object per line) "
            f"or {JSON_LINES} (one object per line)."
        )
    charset = options.get("charset", "utf-8") or "utf-8"
    try:
        codecs.lookup(charset)
    except LookupError:
        raise RequestError(f"Unknown charset {charset!r} in Content-Type {content_type!r}: send UTF-8.") from None
    return "utf-8-sig" if codecs.lookup(charset).name == "utf-8" else charset


def _check_accept(accept: str | None) -> None:
    if not accept:
        return
    for candidate in accept.split(","):
        media, _ = _media_type(candidate, JSON)
        if media in JSON_TYPES | JSON_LINES_TYPES or media in ("*/*", "application/*"):
            return
    raise RequestError(f"Unsupported Accept {accept!r}: this model answers {JSON} or {JSON_LINES}.")


def _split_records(body: bytes | bytearray | str, charset: str) -> tuple[list[Any], bool]:
    """Decoded JSON values (or RecordError for unreadable lines) and whether the body was one JSON document."""
    raw = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    if isinstance(body, str):
        charset = "utf-8"
    if not raw.strip():
        return [RecordError(f"The request body is empty: send {JSON_EXAMPLE}.")], True
    try:
        return [json.loads(raw.decode(charset))], True  # one JSON document, possibly pretty-printed
    except (UnicodeDecodeError, ValueError):
        pass
    values: list[Any] = []
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue  # blank lines (e.g. a trailing newline) are not records
        try:
            text = line.decode(charset)
        except UnicodeDecodeError as exc:
            values.append(RecordError(f"Line {number} is not valid {charset} text ({exc.reason}): re-encode it."))
            continue
        try:
            values.append(json.loads(text))
        except ValueError as exc:
            values.append(
                RecordError(
                    f"Line {number} is not valid JSON ({exc}): write one JSON object per line, e.g. {JSON_EXAMPLE}."
                )
            )
    return values, len(values) == 1 and raw.count(b"\n") == 0


JSON_EXAMPLE = '{"inputs": "text to classify", "parameters": {"candidate_labels": ["label a", "label b"]}}'


def _labels(value: Any) -> list[str]:
    if isinstance(value, str):  # the pipeline accepts "a, b, c"
        labels = [label.strip() for label in value.split(",") if label.strip()]
    elif isinstance(value, list):
        labels = value
        for index, label in enumerate(labels):
            if not isinstance(label, str):
                raise RecordError(
                    f"parameters.candidate_labels[{index}] is {type(label).__name__}, not a string: "
                    'give labels as strings, e.g. ["sports", "politics"].'
                )
            if not label.strip():
                raise RecordError(f"parameters.candidate_labels[{index}] is empty: remove it or give it a name.")
    elif value is None:
        labels = []
    else:
        raise RecordError(
            f"parameters.candidate_labels is {type(value).__name__}: give a list of strings, "
            'e.g. ["sports", "politics"], or a comma-separated string.'
        )
    if not labels:
        raise RecordError(
            'parameters.candidate_labels is missing or empty: give at least one label, e.g. ["sports", "politics"].'
        )
    return labels


def _template(value: Any, first_label: str) -> str:
    if value is None:
        return DEFAULT_TEMPLATE
    if not isinstance(value, str):
        raise RecordError(
            f"parameters.hypothesis_template is {type(value).__name__}: give a string with {{}} where the label goes, "
            f'e.g. "{DEFAULT_TEMPLATE}".'
        )
    try:
        formatted = value.format(first_label)
    except (IndexError, KeyError, ValueError) as exc:
        raise RecordError(
            f"parameters.hypothesis_template {value!r} cannot be formatted ({type(exc).__name__}: {exc}): "
            f'use exactly one {{}} where the label goes and double other braces, e.g. "{DEFAULT_TEMPLATE}".'
        ) from None
    if formatted == value:
        raise RecordError(
            f"parameters.hypothesis_template {value!r} has no {{}}: put {{}} where the label goes, "
            f'e.g. "{DEFAULT_TEMPLATE}".'
        )
    return value


def _texts(value: Any) -> tuple[list[str], bool]:
    if isinstance(value, str):
        if not value.strip():
            raise RecordError('"inputs" is empty: give the text to classify.')
        return [value], False
    if isinstance(value, list):
        if not value:
            raise RecordError('"inputs" is an empty list: give a text, or a list of texts.')
        for index, text in enumerate(value):
            if not isinstance(text, str):
                raise RecordError(f'"inputs"[{index}] is {type(text).__name__}, not a string: give texts as strings.')
            if not text.strip():
                raise RecordError(f'"inputs"[{index}] is empty: remove it or give the text to classify.')
        return list(value), True
    if value is None:
        raise RecordError(f'"inputs" is missing: each record needs the text to classify, e.g. {JSON_EXAMPLE}.')
    raise RecordError(f'"inputs" is {type(value).__name__}: give a string, or a list of strings.')


def parse_record(value: Any) -> Record:
    """Validate one decoded JSON value into a Record (``error`` set when it cannot be classified)."""
    record = Record()
    if isinstance(value, RecordError):
        record.error = str(value)
        return record
    if not isinstance(value, dict):
        record.error = (
            f"A record must be a JSON object, got {type(value).__name__}: send {JSON_EXAMPLE} "
            "(several records: one object per line, JSON Lines)."
        )
        return record
    if "id" in value:
        record.has_id, record.id = True, value["id"]
    try:
        parameters = value.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise RecordError(
                f'"parameters" is {type(parameters).__name__}: give an object with candidate_labels, '
                "multi_label and hypothesis_template."
            )
        unknown = sorted(set(parameters) - {*PARAMETERS, "multi_class"})
        if unknown:
            raise RecordError(
                f"Unknown parameter(s) {', '.join(unknown)}: the supported parameters are {', '.join(PARAMETERS)}."
            )
        record.texts, record.batched_inputs = _texts(value.get("inputs"))
        record.labels = _labels(parameters.get("candidate_labels"))
        multi_label = parameters.get("multi_label", parameters.get("multi_class", False))
        if not isinstance(multi_label, bool):
            raise RecordError(f"parameters.multi_label is {multi_label!r}: give true or false.")
        record.multi_label = multi_label
        record.template = _template(parameters.get("hypothesis_template"), record.labels[0])
    except RecordError as exc:
        record.error = str(exc)
    return record


# ---------------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------------
def _tokenize_record(loaded: ZeroShotModel, record: Record) -> list[list[list[int]]]:
    """Token ids of every (text, hypothesis) pair of the record, the way the pipeline tokenizes them."""
    hypotheses = [record.template.format(label) for label in record.labels]
    per_text = []
    for text in record.texts:
        try:
            encoded = loaded.tokenizer(
                [text] * len(hypotheses),
                hypotheses,
                truncation="only_first",  # truncate the premise (the text), keep the hypothesis
                max_length=loaded.max_length,
                add_special_tokens=True,
            )
        except Exception as exc:
            if "too short" in str(exc):
                raise RecordError(
                    f"A hypothesis alone is longer than the model's {loaded.max_length} tokens: shorten the label "
                    "or parameters.hypothesis_template."
                ) from None
            raise
        per_text.append(encoded["input_ids"])
    return per_text


def _batches(order: list[int], pairs: list[list[int]], eos_counts: list[int], size: int) -> Iterator[list[int]]:
    """Fixed-size batches over pairs sorted by length; a batch never mixes pairs with different numbers of </s>.

    BART's classification head reads the last </s> and requires the same count of </s> in every row of a batch:
    a text containing "</s>" would otherwise fail the whole batch.
    """
    batch: list[int] = []
    for index in order:
        if batch and (len(batch) == size or eos_counts[batch[0]] != eos_counts[index]):
            yield batch
            batch = []
        batch.append(index)
    if batch:
        yield batch


def _logits(loaded: ZeroShotModel, pairs: list[list[int]]) -> np.ndarray:
    """Logits (float32, shape pairs × classes) of every pair, computed in sorted, padded batches."""
    eos_counts = [ids.count(loaded.eos_token_id) for ids in pairs]
    order = sorted(range(len(pairs)), key=lambda i: (eos_counts[i], len(pairs[i])))
    out = np.zeros((len(pairs), loaded.model.config.num_labels), dtype=np.float32)
    with torch.inference_mode():
        for batch in _batches(order, pairs, eos_counts, loaded.batch_size):
            width = max(len(pairs[i]) for i in batch)
            input_ids = torch.full((len(batch), width), loaded.pad_token_id, dtype=torch.long)
            attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
            for row, index in enumerate(batch):
                ids = pairs[index]
                input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                attention_mask[row, : len(ids)] = 1
            logits = loaded.model(
                input_ids=input_ids.to(loaded.device),
                attention_mask=attention_mask.to(loaded.device),
                use_cache=False,
            ).logits
            out[batch] = logits.float().cpu().numpy()
    return out


def _scores(loaded: ZeroShotModel, logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """The pipeline's postprocess, for one text: logits (labels × classes) → one score per label."""
    if multi_label or logits.shape[0] == 1:
        # One label alone, or multi-label: each label independently, entailment vs contradiction (pipeline rule).
        pair = logits[:, [loaded.contradiction_id, loaded.entailment_id]]
        return (np.exp(pair) / np.exp(pair).sum(-1, keepdims=True))[:, 1]
    entail = logits[:, loaded.entailment_id]
    return np.exp(entail) / np.exp(entail).sum(-1, keepdims=True)


def _result(record: Record, text: str, scores: np.ndarray) -> dict[str, Any]:
    top = list(reversed(scores.argsort()))  # the pipeline's order, ties included
    result: dict[str, Any] = {"id": record.id} if record.has_id else {}
    result["sequence"] = text
    result["labels"] = [record.labels[i] for i in top]
    result["scores"] = scores[top].tolist()
    for score in result["scores"]:
        if not math.isfinite(score):
            raise RecordError("The model produced a non-finite score for this text: report it with the input.")
    return result


def _error(record: Record) -> dict[str, Any]:
    answer: dict[str, Any] = {"id": record.id} if record.has_id else {}
    answer["error"] = record.error
    return answer


def classify(loaded: ZeroShotModel, records: list[Record]) -> list[Any]:
    """One answer per record, in order: a result (a list of results for list inputs) or an error object."""
    answers: list[Any] = [None] * len(records)
    chunk: list[int] = []
    chunk_pairs = 0
    for index, record in enumerate(records):
        if record.error is not None:
            answers[index] = _error(record)
            continue
        chunk.append(index)
        chunk_pairs += len(record.texts) * len(record.labels)
        if chunk_pairs >= CHUNK_PAIRS:
            _classify_chunk(loaded, records, chunk, answers)
            chunk, chunk_pairs = [], 0
    if chunk:
        _classify_chunk(loaded, records, chunk, answers)
    return answers


def _classify_chunk(loaded: ZeroShotModel, records: list[Record], chunk: list[int], answers: list[Any]) -> None:
    unique: dict[tuple[int, ...], int] = {}  # identical pairs (duplicate labels, repeated texts) run once
    pairs: list[list[int]] = []
    tokenized: list[int] = []
    for index in chunk:
        record = records[index]
        try:
            per_text = _tokenize_record(loaded, record)
        except RecordError as exc:
            record.error = str(exc)
            answers[index] = _error(record)
            continue
        except Exception as exc:  # one unreadable record must not fail the others
            logger.exception("tokenizing record %d failed", index)
            record.error = f"This record could not be tokenized ({type(exc).__name__}: {exc}): check its text."
            answers[index] = _error(record)
            continue
        record.pair_ids = []
        for encoded in per_text:
            ids_of_text = []
            for ids in encoded:
                key = tuple(ids)
                if key not in unique:
                    unique[key] = len(pairs)
                    pairs.append(ids)
                ids_of_text.append(unique[key])
            record.pair_ids.append(ids_of_text)
        tokenized.append(index)
    if not pairs:
        return
    logits = _logits(loaded, pairs)
    for index in tokenized:
        record = records[index]
        try:
            results = [
                _result(record, text, _scores(loaded, logits[ids], record.multi_label))
                for text, ids in zip(record.texts, record.pair_ids, strict=True)
            ]
        except RecordError as exc:
            record.error = str(exc)
            answers[index] = _error(record)
            continue
        answers[index] = results if record.batched_inputs else results[0]


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def transform_fn(loaded: ZeroShotModel, input_data: Any, content_type: str | None, accept: str | None, context=None):
    """Answer one request: a JSON object for a one-object body, else one JSON line per input line."""
    del context  # part of the toolkit's signature; nothing request-specific is needed from it
    started = time.perf_counter()
    charset = _charset(content_type)
    _check_accept(accept)
    values, single_document = _split_records(input_data, charset)
    records = [parse_record(value) for value in values]
    answers = classify(loaded, records)
    errors = sum(1 for record in records if record.error is not None)
    logger.info(
        "zero-shot request: %d records, %d errors, %.1f ms",
        len(records),
        errors,
        (time.perf_counter() - started) * 1000,
    )
    if single_document:
        return _dumps(answers[0])
    return "\n".join(_dumps(answer) for answer in answers)
