"""Zero-shot classification handler for the Hugging Face inference toolkit (SageMaker HF inference container).

The toolkit imports ``code/inference.py`` from the model directory and calls ``model_fn(model_dir, context)`` once
per worker, then ``transform_fn(model, body, content_type, accept, context)`` per request. Compared with the stock
handler this one:

- serves any NLI sequence-classification model of the architectures in ``supported_architectures.json`` (BERT,
  DistilBERT, RoBERTa, XLM-RoBERTa, DeBERTa-v2/v3, ELECTRA, ALBERT, MobileBERT, BART) with the scores of the
  ``transformers`` zero-shot pipeline (same model, same inputs) to 1e-5 in float32: the model gets exactly the
  tokenizer's ``model_input_names`` (``token_type_ids`` included where the tokenizer makes them), ``use_cache`` only
  where its forward pass takes it, and the entailment / contradiction logits are chosen as the pipeline chooses
  them; a model that cannot work fails in ``model_fn`` with the reason, never per request;
- accepts one JSON object (real-time) or JSON Lines (batch transform MultiRecord), as ``application/json`` or
  ``application/jsonlines``, with or without ``; charset=...``, in the Hugging Face contract
  (``{"inputs", "parameters"}``) or the SageMaker JumpStart one (``{"sequences", "candidate_labels", "multi_class"}``);
- answers every record, in order: a result, or ``{"error": ...}`` saying what is wrong and how to fix it, so one bad
  line (or one record the model fails on) never fails the request, nor the batch transform file;
- answers a record holding ``REJECTED_RECORD_FIELD`` (``zstc_rejected``: a line the batch trigger took out of its
  file because it was larger than the job's payload limit) with ``{"id"?, "error": <its message>}``, running nothing;
- flattens the (text, label) pairs of all records, sorts them by length and runs padded batches under
  ``torch.inference_mode()``.

Environment (all optional; names and defaults in ``zstc_handler_settings.py``):

- ``ZSTC_BATCH_SIZE``: (text, label) pairs per forward pass, default 16.
- ``ZSTC_MAX_BATCH_TOKENS``: padded tokens per forward pass; when set (or on GPU, default 16384), batches are
  bounded by it rather than by a pair count.
- ``ZSTC_DTYPE``: ``auto`` (default: float16 on GPU, float32 on CPU), ``float32``, ``float16`` (GPU only),
  ``bfloat16``, ``int8`` (CPU only: dynamic quantization of the linear layers). Anything but float32 changes scores.
- ``ZSTC_HYPOTHESIS_TEMPLATE``: the template of records that give none, default ``This example is {}.``.

See docs/handler.md for the request/response contract.
"""

from __future__ import annotations

import codecs
import inspect
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer
from zstc_handler_settings import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GPU_BATCH_TOKENS,
    DEFAULT_TEMPLATE,
    ENV_BATCH_SIZE,
    ENV_DTYPE,
    ENV_HYPOTHESIS_TEMPLATE,
    ENV_MAX_BATCH_TOKENS,
    MAX_BATCH_SIZE,
    MAX_BATCH_TOKENS,
    REJECTED_RECORD_FIELD,
    SUPPORTED_ARCHITECTURES_FILE,
    template_parts,
)

logger = logging.getLogger(__name__)

DTYPES = ("auto", "float32", "float16", "bfloat16", "int8")
JSON = "application/json"
JSON_LINES = "application/jsonlines"
JSON_TYPES = frozenset({JSON})
JSON_LINES_TYPES = frozenset({JSON_LINES, "application/x-jsonlines", "application/jsonl", "application/json-lines"})
PARAMETERS = ("candidate_labels", "multi_label", "hypothesis_template")
# The SageMaker JumpStart zero-shot contract: these fields at the top level of the record, the text in "sequences".
JUMPSTART_FIELDS = ("candidate_labels", "multi_class", "multi_label", "hypothesis_template")
# Inputs this handler builds from the tokenizer's encoding (a tokenizer asking for others is refused at load).
MODEL_INPUTS = frozenset({"input_ids", "attention_mask", "token_type_ids"})
# Architectures whose classification head pools the hidden state of the last </s>: the model requires the same
# number of </s> in every row of a batch (BartForSequenceClassification raises otherwise).
EOS_POOLED_MODEL_TYPES = frozenset({"bart", "mbart", "plbart", "mvp", "led", "bigbird_pegasus"})
# A tokenizer model_max_length above this means "not set" (transformers' placeholder is 1e30).
UNSET_MAX_LENGTH = 1_000_000
# Pairs tokenized and sorted together: bounds memory on 100 MB batch transform payloads while keeping batches full
# (whichever bound is reached first: pairs, or tokens of the unique pairs).
CHUNK_PAIRS = 32768
CHUNK_TOKENS = 2_000_000
# Per-record limits (each breach is that record's error, with the limit and the fix).
MAX_RECORD_PAIRS = 10_000  # texts x labels of one record
MAX_LABEL_CHARS = 1024
# A text is cut to this many characters per token of the model's limit before tokenizing (a 200 KB text would be
# tokenized in full once per label, then truncated). Every token covers at least one character, so the cut text
# still fills the model; if it does not (a text of mostly whitespace), the cut is doubled until it does.
CHARS_PER_TOKEN = 32
# Tokens the cut text must exceed the limit by, so that a word split by the cut is truncated away.
CUT_MARGIN_TOKENS = 16
# Characters of a rejected record's message echoed as its error (the trigger writes a few hundred; the field can
# come from anyone, so a larger value is cut).
MAX_REJECTION_CHARS = 2000
SUPPORTED_ARCHITECTURES_PATH = Path(__file__).resolve().parent / SUPPORTED_ARCHITECTURES_FILE


class RequestError(ValueError):
    """The request as a whole cannot be read (content type, charset, accept): the toolkit answers HTTP 400."""


class RecordError(ValueError):
    """One record is invalid: it gets an error object, the other records are classified."""


class ModelError(ValueError):
    """The model in the model directory cannot serve zero-shot classification: ``model_fn`` fails with the reason."""


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
    input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    use_cache: bool = False  # pass use_cache=False (the forward pass takes it: encoder-decoder models)
    eos_pooled: bool = False  # batches must not mix pairs with different numbers of </s> (BART's head)
    pad_token_type_id: int = 0
    max_batch_tokens: int = 0  # > 0: batches bounded by padded tokens instead of batch_size pairs
    hypothesis_template: str = DEFAULT_TEMPLATE
    model_type: str = ""


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
    rejected: bool = False  # a record the batch trigger took out of its file (REJECTED_RECORD_FIELD): never run
    pair_ids: list[list[int]] = field(default_factory=list)  # per text: unique-pair index of each label


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------
def _env_int(name: str, default: int, low: int, high: int, unit: str) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{name}={raw!r} is invalid: set a whole number of {unit} from {low} to {high}.")
    return value


def _env_batch_size() -> int:
    return _env_int(ENV_BATCH_SIZE, DEFAULT_BATCH_SIZE, 1, MAX_BATCH_SIZE, "pairs")


def _env_max_batch_tokens(device: torch.device) -> int:
    """Token budget per forward pass: the environment's, else the GPU default; 0 (pair batches) on CPU."""
    default = DEFAULT_GPU_BATCH_TOKENS if device.type == "cuda" else 0
    return _env_int(ENV_MAX_BATCH_TOKENS, default, 1, MAX_BATCH_TOKENS, "tokens")


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


def _env_template() -> str:
    raw = os.environ.get(ENV_HYPOTHESIS_TEMPLATE)
    if raw is None or raw == "":
        return DEFAULT_TEMPLATE
    try:
        template_parts(raw)
    except ValueError as exc:
        raise ValueError(f"{ENV_HYPOTHESIS_TEMPLATE}={raw!r} {exc}") from None
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


def supported_architectures() -> tuple[str, ...]:
    """The ``model_type`` values this handler is tested with (``supported_architectures.json``)."""
    data = json.loads(SUPPORTED_ARCHITECTURES_PATH.read_text(encoding="utf-8"))
    return tuple(data["model_types"])


def nli_label_ids(label2id: dict[str, Any], num_labels: int) -> tuple[int, int]:
    """``(entailment_id, contradiction_id)`` as the zero-shot pipeline chooses them (transformers 4.51).

    Entailment: the first ``label2id`` entry whose lower-cased name starts with "entail". Contradiction: id 0, or
    the last id when entailment is 0 (for a 2-class model that is the "not entailment" class). The pipeline falls
    back to the last logit without an entailment label; a model without one cannot do NLI, so it is refused here.
    """
    entailment_id = None
    for label, index in label2id.items():
        if str(label).lower().startswith("entail"):
            entailment_id = int(index)
            break
    labels = ", ".join(f"{index}: {label}" for label, index in sorted(label2id.items(), key=lambda item: item[1]))
    if entailment_id is None:
        raise ModelError(
            f"The model's labels ({labels or 'none'}) include none starting with 'entail': zero-shot classification "
            "needs an NLI model whose config.json maps an 'entailment' label (e.g. facebook/bart-large-mnli, "
            "MoritzLaurer/deberta-v3-base-zeroshot-v2.0)."
        )
    if num_labels < 2 or not 0 <= entailment_id < num_labels:
        raise ModelError(
            f"The model has {num_labels} output class(es) with labels {labels}: an NLI model needs at least two "
            "(entailment and contradiction / not_entailment), the entailment id among them."
        )
    contradiction_id = num_labels - 1 if entailment_id == 0 else 0
    return entailment_id, contradiction_id


def _check_architecture(config: Any) -> None:
    supported = supported_architectures()
    model_type = getattr(config, "model_type", None)
    if model_type not in supported:
        raise ModelError(
            f"The model's architecture (config.json model_type {model_type!r}) is not one this handler supports "
            f"and is tested with: {', '.join(supported)}. Choose an NLI model of one of these architectures "
            "(README: Choosing a model)."
        )
    architectures = list(getattr(config, "architectures", None) or [])
    if architectures and not any(name.endswith("ForSequenceClassification") for name in architectures):
        raise ModelError(
            f"The model is a {', '.join(architectures)}, not a sequence-classification model: zero-shot "
            "classification needs an NLI checkpoint with a classification head (…ForSequenceClassification)."
        )


def position_limit(model: Any) -> int | None:
    """Tokens the model's learned absolute position embeddings can take, or None if it has none (relative only).

    RoBERTa-style embeddings (XLM-R, CamemBERT…) number positions from ``padding_idx + 1``: of
    ``max_position_embeddings`` 514 only 512 are usable. BART's learned positions carry an ``offset`` of 2.
    """
    limits = []
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Embedding):
            continue
        if not name.endswith(("position_embeddings", "embed_positions")):
            continue
        usable = module.num_embeddings - int(getattr(module, "offset", 0) or 0)
        if module.padding_idx is not None:
            usable -= module.padding_idx + 1
        limits.append(usable)
    return min(limits) if limits else None


def length_limit(tokenizer: Any, model: Any) -> int:
    """The longest (text, hypothesis) pair, in tokens, that the model really takes.

    The tokenizer's ``model_max_length`` (the pipeline's truncation length) when the model can take it; the
    position embeddings' usable size when smaller or when the tokenizer config has no ``model_max_length``; for a
    model without absolute positions and a tokenizer without a limit, the config's ``max_position_embeddings``.
    """
    limits = []
    declared = getattr(tokenizer, "model_max_length", None)
    if isinstance(declared, int) and 0 < declared <= UNSET_MAX_LENGTH:
        limits.append(declared)
    positions = position_limit(model)
    if positions is not None:
        limits.append(positions)
    if not limits:
        configured = getattr(model.config, "max_position_embeddings", None)
        limits.append(configured if isinstance(configured, int) and 0 < configured <= UNSET_MAX_LENGTH else 512)
    return min(limits)


def _forward_inputs(tokenizer: Any, model: Any) -> tuple[tuple[str, ...], bool]:
    """The tokenizer's ``model_input_names`` (what the pipeline passes) and whether to pass ``use_cache=False``."""
    parameters = inspect.signature(model.forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    names = tuple(tokenizer.model_input_names)
    unknown = [name for name in names if name not in MODEL_INPUTS]
    if unknown or "input_ids" not in names:
        raise ModelError(
            f"The tokenizer's model inputs {list(names)} are not a text-pair encoding this handler builds "
            f"({', '.join(sorted(MODEL_INPUTS))}): use a text NLI model."
        )
    refused = [name for name in names if name not in parameters and not takes_any]
    if refused:
        raise ModelError(
            f"The model's forward pass ({type(model).__name__}) does not take {', '.join(refused)}, which its "
            "tokenizer produces: the tokenizer does not belong to this model."
        )
    return names, "use_cache" in parameters


def _load_model(model_dir: str) -> tuple[Any, Any]:
    try:
        config = AutoConfig.from_pretrained(model_dir)
    except (ValueError, KeyError, OSError) as exc:
        raise ModelError(f"The model's config.json cannot be read ({type(exc).__name__}: {exc}).") from None
    _check_architecture(config)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    try:
        model, info = AutoModelForSequenceClassification.from_pretrained(model_dir, output_loading_info=True)
    except ValueError as exc:
        raise ModelError(
            f"transformers has no sequence-classification model for this config ({exc}): use an NLI model."
        ) from None
    missing = list(info.get("missing_keys") or [])
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise ModelError(
            f"The checkpoint lacks weights of {type(model).__name__} ({shown}): it has no trained "
            "sequence-classification head, so its scores would be random. Use an NLI fine-tuned checkpoint."
        )
    return tokenizer, model


def model_fn(model_dir: str, context: Any = None) -> ZeroShotModel:
    """Load tokenizer and NLI model once per worker (device, precision and batching from the environment).

    Raises ``ModelError`` (a ``ValueError``) when the model cannot serve zero-shot classification: an architecture
    not supported, no sequence-classification head, no entailment label, a tokenizer that is not the model's.
    """
    _receive_raw_bytes()
    device = _device(context)
    dtype = _env_dtype(device)
    batch_size = _env_batch_size()
    max_batch_tokens = _env_max_batch_tokens(device)
    template = _env_template()
    tokenizer, model = _load_model(model_dir)
    model.eval()
    entailment_id, contradiction_id = nli_label_ids(dict(model.config.label2id), int(model.config.num_labels))
    input_names, use_cache = _forward_inputs(tokenizer, model)
    max_length = length_limit(tokenizer, model)
    if dtype == "int8":
        from torch.ao.quantization import quantize_dynamic

        model = quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
    elif dtype in ("float16", "bfloat16"):
        model = model.to(getattr(torch, dtype))
    model.to(device)

    if tokenizer.pad_token is None:  # as the pipeline does
        tokenizer.pad_token = tokenizer.eos_token
    if tokenizer.pad_token_id is None:
        raise ModelError("The tokenizer has neither a pad token nor an end-of-sequence token to pad batches with.")
    if getattr(tokenizer, "padding_side", "right") != "right":
        # The pipeline runs each pair alone, unpadded. Every supported head reads the first token (BERT family,
        # DeBERTa, ELECTRA…) or has absolute positions (BART): only right padding leaves the scores unchanged (left
        # padding moved an XLM-R score by 0.44 in the tests).
        logger.warning("The tokenizer pads on the %s: batches are padded on the right.", tokenizer.padding_side)
    model_type = str(model.config.model_type)
    loaded = ZeroShotModel(
        tokenizer=tokenizer,
        model=model,
        device=device,
        dtype=dtype,
        batch_size=batch_size,
        max_length=max_length,
        entailment_id=entailment_id,
        contradiction_id=contradiction_id,
        eos_token_id=tokenizer.eos_token_id if tokenizer.eos_token_id is not None else -1,
        pad_token_id=int(tokenizer.pad_token_id),
        input_names=input_names,
        use_cache=use_cache,
        eos_pooled=model_type in EOS_POOLED_MODEL_TYPES,
        pad_token_type_id=int(getattr(tokenizer, "pad_token_type_id", 0) or 0),
        max_batch_tokens=max_batch_tokens,
        hypothesis_template=template,
        model_type=model_type,
    )
    logger.info(
        "zero-shot handler ready: model_type=%s inputs=%s device=%s dtype=%s batch_size=%d max_batch_tokens=%d "
        "max_length=%d entailment=%d contradiction=%d threads=%d",
        model_type,
        ",".join(input_names),
        device,
        dtype,
        batch_size,
        max_batch_tokens,
        max_length,
        entailment_id,
        contradiction_id,
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
    except (UnicodeDecodeError, ValueError, RecursionError):
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
        except RecursionError:
            values.append(
                RecordError(f"Line {number} is nested too deeply to read: send a flat object, e.g. {JSON_EXAMPLE}.")
            )
    return values, len(values) == 1 and raw.count(b"\n") == 0


JSON_EXAMPLE = '{"inputs": "text to classify", "parameters": {"candidate_labels": ["label a", "label b"]}}'


def _check_unicode(value: str, where: str) -> None:
    """Refuse a string the answer could not carry: JSON's "\\ud800" escapes decode to lone surrogates, which have
    no UTF-8 encoding (the whole response would fail to encode)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise RecordError(
            f"{where} contains an unpaired surrogate ({value[exc.start : exc.end]!a} at character {exc.start}): "
            "send valid Unicode (a surrogate pair, or the character itself)."
        ) from None


def _check_id(value: Any) -> None:
    """An id is echoed on the answer: a string, an integer or a finite number (JSON's NaN / Infinity / 1e999 and
    lone surrogates cannot be written back; objects and lists are not ids)."""
    if isinstance(value, str):
        _check_unicode(value, '"id"')
        return
    if isinstance(value, int) and not isinstance(value, bool):
        return
    if isinstance(value, float) and math.isfinite(value):
        return
    shown = ascii(value) if isinstance(value, float | bool) or value is None else type(value).__name__
    raise RecordError(f'"id" is {shown}: give a string, an integer or a finite number, e.g. "id": "tweet-1".')


def _labels(value: Any, where: str) -> list[str]:
    if isinstance(value, str):  # the pipeline accepts "a, b, c"
        labels = [label.strip() for label in value.split(",") if label.strip()]
    elif isinstance(value, list):
        labels = value
        for index, label in enumerate(labels):
            if not isinstance(label, str):
                raise RecordError(
                    f"{where}candidate_labels[{index}] is {type(label).__name__}, not a string: "
                    'give labels as strings, e.g. ["sports", "politics"].'
                )
            if not label.strip():
                raise RecordError(f"{where}candidate_labels[{index}] is empty: remove it or give it a name.")
            if len(label) > MAX_LABEL_CHARS:
                raise RecordError(
                    f"{where}candidate_labels[{index}] is {len(label)} characters long: keep labels under "
                    f'{MAX_LABEL_CHARS} characters (a label is a few words, e.g. "sports").'
                )
            _check_unicode(label, f"{where}candidate_labels[{index}]")
    elif value is None:
        labels = []
    else:
        raise RecordError(
            f"{where}candidate_labels is {type(value).__name__}: give a list of strings, "
            'e.g. ["sports", "politics"], or a comma-separated string.'
        )
    if not labels:
        raise RecordError(
            f'{where}candidate_labels is missing or empty: give at least one label, e.g. ["sports", "politics"].'
        )
    if isinstance(value, str):
        for index, label in enumerate(labels):
            if len(label) > MAX_LABEL_CHARS:
                raise RecordError(
                    f"{where}candidate_labels label {index} is {len(label)} characters long: keep labels under "
                    f"{MAX_LABEL_CHARS} characters."
                )
            _check_unicode(label, f"{where}candidate_labels")
    return labels


def _template(value: Any, default: str, where: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str):
        raise RecordError(
            f"{where}hypothesis_template is {type(value).__name__}: give a string with {{}} where the label goes, "
            f'e.g. "{DEFAULT_TEMPLATE}".'
        )
    _check_unicode(value, f"{where}hypothesis_template")  # first: the message below quotes the template
    try:
        template_parts(value)
    except ValueError as exc:
        shown = value if len(value) <= 80 else value[:80] + "…"
        raise RecordError(f"{where}hypothesis_template {shown!r} {exc}") from None
    return value


def _texts(value: Any, name: str) -> tuple[list[str], bool]:
    if isinstance(value, str):
        if not value.strip():
            raise RecordError(f'"{name}" is empty: give the text to classify.')
        _check_unicode(value, f'"{name}"')
        return [value], False
    if isinstance(value, list):
        if not value:
            raise RecordError(f'"{name}" is an empty list: give a text, or a list of texts.')
        for index, text in enumerate(value):
            if not isinstance(text, str):
                raise RecordError(f'"{name}"[{index}] is {type(text).__name__}, not a string: give texts as strings.')
            if not text.strip():
                raise RecordError(f'"{name}"[{index}] is empty: remove it or give the text to classify.')
            _check_unicode(text, f'"{name}"[{index}]')
        return list(value), True
    if value is None:
        raise RecordError(f'"{name}" is missing: each record needs the text to classify, e.g. {JSON_EXAMPLE}.')
    raise RecordError(f'"{name}" is {type(value).__name__}: give a string, or a list of strings.')


def _multi_label(parameters: dict[str, Any], where: str) -> bool:
    values = {name: parameters[name] for name in ("multi_label", "multi_class") if name in parameters}
    for name, flag in values.items():
        if not isinstance(flag, bool):
            raise RecordError(f"{where}{name} is {flag!r}: give true or false.")
    if len(set(values.values())) > 1:
        raise RecordError(
            f"{where}multi_label and {where}multi_class disagree: give one of them (multi_class is its old name)."
        )
    return bool(next(iter(values.values()), False))


def _parameters(value: dict[str, Any]) -> tuple[dict[str, Any], str, str]:
    """The record's parameters, the name of its text field and the prefix of its parameters in error messages."""
    if "sequences" in value:  # SageMaker JumpStart: {"sequences": ..., "candidate_labels": [...], "multi_class": ...}
        if "inputs" in value:
            raise RecordError(
                'The record has both "inputs" and "sequences": send {"inputs", "parameters"} (Hugging Face) '
                'or {"sequences", "candidate_labels", "multi_class"} (SageMaker JumpStart), not both.'
            )
        if "parameters" in value:
            raise RecordError(
                'A JumpStart record ("sequences") takes candidate_labels and multi_class at the top level, not in '
                '"parameters": move them up, or send "inputs" with "parameters".'
            )
        return {name: value[name] for name in JUMPSTART_FIELDS if name in value}, "sequences", ""
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
    return parameters, "inputs", "parameters."


def _rejection_message(value: Any) -> str:
    """The error of a rejected record: the trigger's message (cut to ``MAX_REJECTION_CHARS``), or why it is none."""
    if not isinstance(value, str):
        return (
            f'"{REJECTED_RECORD_FIELD}" is {type(value).__name__}: this field is reserved for the batch trigger (the '
            "message of a record it took out of its file) and must be a string; rename the field in your record."
        )
    # Lone surrogates ("\\ud800" escapes) have no UTF-8 encoding: replaced, so the answer can still be written.
    message = value.encode("utf-8", "replace").decode("utf-8")
    if not message.strip():
        return f'This record was rejected by the batch trigger ("{REJECTED_RECORD_FIELD}" gives no reason).'
    if len(message) > MAX_REJECTION_CHARS:
        message = f"{message[:MAX_REJECTION_CHARS]}… (message cut: it was {len(message)} characters)"
    return message


def _rejected_record(value: dict[str, Any]) -> Record:
    """A record the batch trigger rejected: its error is the trigger's message, its id echoed when valid."""
    record = Record(rejected=True, error=_rejection_message(value[REJECTED_RECORD_FIELD]))
    if "id" in value:
        try:
            _check_id(value["id"])
        except RecordError:
            pass  # not echoed, as for any record: the rejection's message says more than the id's
        else:
            record.has_id, record.id = True, value["id"]
    return record


def parse_record(value: Any, default_template: str = DEFAULT_TEMPLATE) -> Record:
    """Validate one decoded JSON value into a Record (``error`` set when it cannot be classified).

    Both contracts: ``{"inputs", "parameters": {...}}`` (Hugging Face) and ``{"sequences", "candidate_labels",
    "multi_class"}`` (SageMaker JumpStart). ``default_template`` is used when the record gives no template. An object
    with the key ``REJECTED_RECORD_FIELD`` is a record the batch trigger rejected, whatever else it holds: its error
    is that field's message.
    """
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
    try:
        if REJECTED_RECORD_FIELD in value:
            return _rejected_record(value)
        if "id" in value:
            _check_id(value["id"])  # an invalid id is not echoed: the answer keeps its place in the output
            record.has_id, record.id = True, value["id"]
        parameters, text_field, where = _parameters(value)
        record.texts, record.batched_inputs = _texts(value.get(text_field), text_field)
        record.labels = _labels(parameters.get("candidate_labels"), where)
        pairs = len(record.texts) * len(record.labels)
        if pairs > MAX_RECORD_PAIRS:
            raise RecordError(
                f"The record has {len(record.texts)} text(s) x {len(record.labels)} label(s) = {pairs} pairs: at most "
                f"{MAX_RECORD_PAIRS} per record; split it into several records (one text per line)."
            )
        record.multi_label = _multi_label(parameters, where)
        record.template = _template(parameters.get("hypothesis_template"), default_template, where)
    except RecordError as exc:
        record.error = str(exc)
    except Exception as exc:  # noqa: BLE001 - whatever one record holds, the others are classified
        logger.warning("reading a record failed: %s", type(exc).__name__)
        record.error = f"This record could not be read ({type(exc).__name__}): check it against {JSON_EXAMPLE}."
    return record


# ---------------------------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------------------------
@dataclass
class Pair:
    """One tokenized (text, hypothesis) pair: token ids and, when the model takes them, token type ids."""

    ids: np.ndarray
    types: np.ndarray | None

    def key(self) -> bytes:
        """Identity of the pair, compact (4 bytes a token): identical pairs run once."""
        return self.ids.tobytes() + (b"|" + self.types.tobytes() if self.types is not None else b"")


def _premise(loaded: ZeroShotModel, text: str) -> str:
    """``text`` cut to a character bound that still fills the model (same truncated tokens, bounded work)."""
    bound = CHARS_PER_TOKEN * loaded.max_length
    while len(text) > bound:
        cut = text[:bound]
        tokens = len(loaded.tokenizer(cut, add_special_tokens=False)["input_ids"])
        if tokens >= loaded.max_length + CUT_MARGIN_TOKENS:
            return cut
        bound *= 4  # mostly whitespace or markup: take more
    return text


def _tokenize_record(loaded: ZeroShotModel, record: Record) -> list[list[Pair]]:
    """Every (text, hypothesis) pair of the record, tokenized the way the pipeline tokenizes it."""
    before, after = template_parts(record.template)
    hypotheses = [before + label + after for label in record.labels]
    with_types = "token_type_ids" in loaded.input_names
    per_text = []
    for text in record.texts:
        premise = _premise(loaded, text)
        try:
            encoded = loaded.tokenizer(
                [premise] * len(hypotheses),
                hypotheses,
                truncation="only_first",  # truncate the premise (the text), keep the hypothesis
                max_length=loaded.max_length,
                add_special_tokens=True,
                return_token_type_ids=with_types,
            )
        except Exception as exc:
            if "too short" in str(exc):
                raise RecordError(
                    f"A hypothesis alone is longer than the model's {loaded.max_length} tokens: shorten the label "
                    "or the hypothesis_template."
                ) from None
            raise
        types = encoded["token_type_ids"] if with_types else [None] * len(hypotheses)
        per_text.append(
            [
                Pair(np.asarray(ids, dtype=np.int64), None if kinds is None else np.asarray(kinds, dtype=np.int64))
                for ids, kinds in zip(encoded["input_ids"], types, strict=True)
            ]
        )
    return per_text


def _batches(
    order: list[int], lengths: list[int], eos_counts: list[int], size: int, max_tokens: int = 0
) -> Iterator[list[int]]:
    """Batches over pairs sorted by length: ``size`` pairs each, or as many as fit ``max_tokens`` padded tokens.

    With ``max_tokens`` > 0 a batch holds as many pairs as keep (pairs x its longest pair) within the budget (at
    least one pair); otherwise ``size`` pairs. A batch never mixes pairs with different numbers of </s>
    (``eos_counts``, all 0 except for EOS-pooled heads): BART's classification head reads the last </s> and requires
    the same count in every row, so a text containing "</s>" would otherwise fail the whole batch.
    """
    batch: list[int] = []
    width = 0
    for index in order:
        if batch:
            grown = max(width, lengths[index]) * (len(batch) + 1)
            full = grown > max_tokens if max_tokens > 0 else len(batch) == size
            if full or eos_counts[batch[0]] != eos_counts[index]:
                yield batch
                batch, width = [], 0
        batch.append(index)
        width = max(width, lengths[index])
    if batch:
        yield batch


def _tensors(loaded: ZeroShotModel, pairs: list[Pair], batch: list[int]) -> dict[str, torch.Tensor]:
    """The batch padded on the right with the tokenizer's pad id and pad token type, as the model's inputs."""
    width = max(len(pairs[i].ids) for i in batch)
    input_ids = np.full((len(batch), width), loaded.pad_token_id, dtype=np.int64)
    attention_mask = np.zeros((len(batch), width), dtype=np.int64)
    with_types = "token_type_ids" in loaded.input_names
    token_types = np.full((len(batch), width), loaded.pad_token_type_id, dtype=np.int64) if with_types else None
    for row, index in enumerate(batch):
        pair = pairs[index]
        n = len(pair.ids)
        input_ids[row, :n] = pair.ids
        attention_mask[row, :n] = 1
        if token_types is not None and pair.types is not None:
            token_types[row, :n] = pair.types
    arrays = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_types}
    return {name: torch.from_numpy(arrays[name]).to(loaded.device) for name in loaded.input_names}


def _forward(loaded: ZeroShotModel, pairs: list[Pair], batch: list[int]) -> np.ndarray:
    inputs: dict[str, Any] = dict(_tensors(loaded, pairs, batch))
    if loaded.use_cache:  # as the pipeline: sequence classification never uses the cache
        inputs["use_cache"] = False
    return loaded.model(**inputs).logits.float().cpu().numpy()


def _forward_or_split(
    loaded: ZeroShotModel, pairs: list[Pair], batch: list[int], out: np.ndarray, failed: dict[int, str]
) -> None:
    """Logits of ``batch`` into ``out``; if the forward pass fails, retry each half, down to single pairs.

    A pair that fails alone is recorded in ``failed`` (its record then gets an error); the other pairs of the batch
    are still classified. This also recovers from running out of memory on a large batch.
    """
    try:
        out[batch] = _forward(loaded, pairs, batch)
        return
    except Exception as exc:  # noqa: BLE001 - one pair the model cannot take must not fail the other records
        if loaded.device.type == "cuda":
            torch.cuda.empty_cache()
        if len(batch) == 1:
            logger.warning("forward pass of one pair (%d tokens) failed: %r", len(pairs[batch[0]].ids), exc)
            failed[batch[0]] = f"{type(exc).__name__}: {str(exc)[:200]}"
            return
        logger.warning("forward pass of %d pairs failed (%s): retrying in halves", len(batch), type(exc).__name__)
    half = len(batch) // 2
    _forward_or_split(loaded, pairs, batch[:half], out, failed)
    _forward_or_split(loaded, pairs, batch[half:], out, failed)


def _logits(loaded: ZeroShotModel, pairs: list[Pair]) -> tuple[np.ndarray, dict[int, str]]:
    """Logits (float32, shape pairs x classes) of every pair in sorted, padded batches, and the pairs that failed."""
    lengths = [len(pair.ids) for pair in pairs]
    eos = loaded.eos_token_id
    eos_counts = [int((pair.ids == eos).sum()) for pair in pairs] if loaded.eos_pooled else [0] * len(pairs)
    order = sorted(range(len(pairs)), key=lambda i: (eos_counts[i], lengths[i]))
    out = np.zeros((len(pairs), loaded.model.config.num_labels), dtype=np.float32)
    failed: dict[int, str] = {}
    with torch.inference_mode():
        for batch in _batches(order, lengths, eos_counts, loaded.batch_size, loaded.max_batch_tokens):
            _forward_or_split(loaded, pairs, batch, out, failed)
    return out, failed


def _scores(loaded: ZeroShotModel, logits: np.ndarray, multi_label: bool) -> np.ndarray:
    """The pipeline's postprocess, for one text: logits (labels x classes) -> one score per label."""
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


def _fail(record: Record, answers: list[Any], index: int, message: str) -> None:
    record.error = message
    answers[index] = _error(record)


@dataclass
class _Chunk:
    """Records tokenized together, their unique pairs and the tokens those hold."""

    indices: list[int] = field(default_factory=list)
    unique: dict[bytes, int] = field(default_factory=dict)
    pairs: list[Pair] = field(default_factory=list)
    tokens: int = 0


def classify(loaded: ZeroShotModel, records: list[Record]) -> list[Any]:
    """One answer per record, in order: a result (a list of results for list inputs) or an error object.

    Records are tokenized one by one into chunks of at most ``CHUNK_PAIRS`` unique pairs / ``CHUNK_TOKENS`` tokens,
    each chunk run in batches; whatever fails for one record (tokenizing, a forward pass, scoring) is its error.
    """
    answers: list[Any] = [None] * len(records)
    chunk = _Chunk()
    for index, record in enumerate(records):
        if record.error is not None:
            answers[index] = _error(record)
            continue
        if _add_record(loaded, record, index, chunk, answers) and (
            len(chunk.pairs) >= CHUNK_PAIRS or chunk.tokens >= CHUNK_TOKENS
        ):
            _run_chunk(loaded, records, chunk, answers)
            chunk = _Chunk()
    if chunk.indices:
        _run_chunk(loaded, records, chunk, answers)
    return answers


def _add_record(loaded: ZeroShotModel, record: Record, index: int, chunk: _Chunk, answers: list[Any]) -> bool:
    """Tokenize one record into the chunk; False (and the record's error) when it cannot be tokenized."""
    try:
        per_text = _tokenize_record(loaded, record)
    except RecordError as exc:
        _fail(record, answers, index, str(exc))
        return False
    except Exception as exc:  # noqa: BLE001 - one unreadable record must not fail the others
        logger.warning("tokenizing record %d failed: %r", index, exc)
        _fail(record, answers, index, f"This record could not be tokenized ({type(exc).__name__}): check its text.")
        return False
    record.pair_ids = []
    for encoded in per_text:
        ids_of_text = []
        for pair in encoded:
            key = pair.key()
            if key not in chunk.unique:
                chunk.unique[key] = len(chunk.pairs)
                chunk.pairs.append(pair)
                chunk.tokens += len(pair.ids)
            ids_of_text.append(chunk.unique[key])
        record.pair_ids.append(ids_of_text)
    chunk.indices.append(index)
    return True


def _run_chunk(loaded: ZeroShotModel, records: list[Record], chunk: _Chunk, answers: list[Any]) -> None:
    logits, failed = _logits(loaded, chunk.pairs)
    for index in chunk.indices:
        record = records[index]
        reasons = {failed[i] for ids in record.pair_ids for i in ids if i in failed}
        if reasons:
            _fail(
                record,
                answers,
                index,
                f"The model failed on this record ({sorted(reasons)[0]}): shorten the text or use fewer labels; "
                "if it persists, report it with the input.",
            )
            continue
        try:
            results = [
                _result(record, text, _scores(loaded, logits[ids], record.multi_label))
                for text, ids in zip(record.texts, record.pair_ids, strict=True)
            ]
        except RecordError as exc:
            _fail(record, answers, index, str(exc))
            continue
        except Exception as exc:  # noqa: BLE001 - scoring one record must not fail the others
            logger.warning("scoring record %d failed: %r", index, exc)
            _fail(record, answers, index, f"This record could not be scored ({type(exc).__name__}): report it.")
            continue
        answers[index] = results if record.batched_inputs else results[0]
        record.pair_ids = []  # the chunk's ids mean nothing after it


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _dumps_answer(answer: Any, record: Record) -> str:
    """One answer as JSON, or that record's error if it cannot be written (never the whole response)."""
    try:
        text = _dumps(answer)
        text.encode("utf-8")
        return text
    except Exception as exc:  # noqa: BLE001 - one unwritable answer must not fail the others
        logger.warning("writing an answer failed: %s", type(exc).__name__)
        fallback: dict[str, Any] = {"id": record.id} if record.has_id else {}
        fallback["error"] = f"This record's answer could not be written as JSON ({type(exc).__name__}): report it."
        try:
            return _dumps(fallback)
        except Exception:  # noqa: BLE001 - the id itself cannot be written
            return _dumps({"error": fallback["error"]})


def transform_fn(loaded: ZeroShotModel, input_data: Any, content_type: str | None, accept: str | None, context=None):
    """Answer one request: a JSON object for a one-object body, else one JSON line per input line."""
    del context  # part of the toolkit's signature; nothing request-specific is needed from it
    started = time.perf_counter()
    charset = _charset(content_type)
    _check_accept(accept)
    values, single_document = _split_records(input_data, charset)
    records = [parse_record(value, loaded.hypothesis_template) for value in values]
    answers = classify(loaded, records)
    errors = sum(1 for record in records if record.error is not None)
    rejected = sum(1 for record in records if record.rejected)
    logger.info(
        "zero-shot request: %d records, %d errors (%d rejected by the batch trigger), %.1f ms",
        len(records),
        errors,
        rejected,
        (time.perf_counter() - started) * 1000,
    )
    lines = [_dumps_answer(answer, record) for answer, record in zip(answers, records, strict=True)]
    if single_document:
        return lines[0]
    return "\n".join(lines)
