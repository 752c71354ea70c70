"""Real-dimension, random-weight model shapes for the handler benchmark, with tokenizers trained on real tweets.

The cost of a (text, label) pair depends on the architecture's dimensions and on how many tokens the pair has, not
on the weights' values: each shape here has the dimensions of the published ``config.json`` of the checkpoints it
stands for (:attr:`Shape.source`), random weights (seed 0), and a tokenizer of its family trained on the tweets of
the shared New Year's resolutions data set (read from ``/work/shared/data``, never copied into the repository), so
that a (tweet, hypothesis) pair has a realistic length (~40 tokens, as with the real tokenizers).

- ``bart-large``: the tests' cached bart-large weights (``zstc_local.tiny_model``), byte-level BPE;
- ``distilbart-12-1``: bart-large with one decoder layer (``valhalla/distilbart-mnli-12-1``), byte-level BPE;
- ``deberta-v3-base`` / ``deberta-v3-large``: DeBERTa-v2 architecture (relative attention, 256 position buckets),
  sentencepiece-style Unigram, ``[CLS] A [SEP] B [SEP]`` with token types;
- ``xlm-roberta-large``: XLM-RoBERTa (514 positions, 512 usable), Unigram, ``<s> A </s></s> B </s>``.

The embedding matrices have as many rows as the trained tokenizer (16,000 instead of 128,100 / 250,002): an
embedding lookup costs the same whatever the row count, so the pair rate is unaffected (the memory is smaller).
Models are built once per machine under ``<zstc cache root>/bench-<shape>-tweets<vocab>-<version>``.
"""

from __future__ import annotations

import csv
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from zstc_contract.rates import DEFAULT_SHAPE  # noqa: E402
from zstc_local.tiny_model import (  # noqa: E402
    DEBERTA_V3_LAYOUT,
    build_once,
    byte_bpe_tokenizer,
    cache_root,
    cached_tiny_model,
)

DATA: Final = ROOT.parent / "shared" / "data" / "new_years_resolutions_2015.csv"
# Merges / pieces seen at least twice in ~5000 tweets: ~38-41 tokens per (tweet, "This example is {}.") pair.
TWEET_VOCAB_SIZE: Final = 16000
TWEET_MIN_FREQUENCY: Final = 2
VERSION: Final = "v1"
REFERENCE: Final = DEFAULT_SHAPE  # the default model's shape: relative costs are against it

# the published deberta-v3 configs: the family's layout (zstc_local.tiny_model) at their position buckets and sizes
_DEBERTA_V3 = {
    **DEBERTA_V3_LAYOUT,
    "position_buckets": 256,
    "max_position_embeddings": 512,
    "hidden_act": "gelu",
    "initializer_range": 0.02,
}


@dataclass(frozen=True)
class Shape:
    name: str
    model_type: str  # config.json model_type
    config: dict[str, Any] = field(default_factory=dict)  # the published dimensions (on top of the family's defaults)
    model_max_length: int = 512
    source: str = ""  # where the dimensions come from


SHAPES: Final[dict[str, Shape]] = {
    shape.name: shape
    for shape in (
        Shape(
            "bart-large",
            "bart",
            model_max_length=1024,
            source="facebook/bart-large-mnli config.json at the pinned revision (zstc_local.tiny_model)",
        ),
        Shape(
            "distilbart-12-1",
            "bart",
            {"decoder_layers": 1},
            model_max_length=1024,
            source="valhalla/distilbart-mnli-12-1 config.json: bart-large with decoder_layers 1",
        ),
        Shape(
            "deberta-v3-base",
            "deberta-v2",
            {
                **_DEBERTA_V3,
                "hidden_size": 768,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "intermediate_size": 3072,
                "pooler_hidden_size": 768,
            },
            source="MoritzLaurer/deberta-v3-base-zeroshot-v2.0 config.json (= microsoft/deberta-v3-base dimensions)",
        ),
        Shape(
            "deberta-v3-large",
            "deberta-v2",
            {
                **_DEBERTA_V3,
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "intermediate_size": 4096,
                "pooler_hidden_size": 1024,
            },
            source="MoritzLaurer/deberta-v3-large-zeroshot-v2.0 config.json (= microsoft/deberta-v3-large dimensions)",
        ),
        Shape(
            "xlm-roberta-large",
            "xlm-roberta",
            {
                "hidden_size": 1024,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "intermediate_size": 4096,
                "max_position_embeddings": 514,
                "type_vocab_size": 1,
                "layer_norm_eps": 1e-5,
                "hidden_act": "gelu",
                "initializer_range": 0.02,
            },
            source="joeddav/xlm-roberta-large-xnli config.json (= xlm-roberta-large; bge-m3 has the same layers)",
        ),
    )
}


def read_rows() -> list[dict[str, str]]:
    """The shared data set's rows (``text``, ``Resolution_Category``, ...)."""
    if not DATA.is_file():
        sys.exit(f"Data set not found: {DATA} (the shared New Year's resolutions CSV).")
    with DATA.open(newline="", encoding="utf-8", errors="replace") as handle:
        return list(csv.DictReader(handle))


def tweets() -> list[str]:
    return [row["text"] for row in read_rows()]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _bart_tweet_tokenizer(staging: Path, vocab_size: int, model_max_length: int) -> None:
    byte_bpe_tokenizer(
        staging, tweets(), vocab_size=vocab_size, min_frequency=TWEET_MIN_FREQUENCY, model_max_length=model_max_length
    )


def _build_bart(shape: Shape, staging: Path, vocab_size: int) -> None:
    base = cached_tiny_model("bart-large")
    if not shape.config:  # bart-large itself: the tests' cached weights, only the tokenizer differs
        for weights in [base / "config.json", *sorted(base.glob("*.safetensors"))]:
            _link_or_copy(weights, staging / weights.name)
    else:
        import torch
        from transformers import BartConfig, BartForSequenceClassification

        config = BartConfig.from_pretrained(str(base))
        for key, value in shape.config.items():
            setattr(config, key, value)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model: Any = BartForSequenceClassification(config)
        model.eval()
        model.save_pretrained(str(staging), safe_serialization=True)
    # bart-large's embedding keeps bart-large-mnli's 50265 rows: any tokenizer of at most that many tokens fits.
    _bart_tweet_tokenizer(staging, vocab_size, shape.model_max_length)


def _build_encoder(shape: Shape, staging: Path, vocab_size: int) -> None:
    from zstc_local import tiny_model

    builder = getattr(tiny_model, "build_nli_model", None)
    if builder is None:
        raise RuntimeError(
            f"Shape {shape.name} ({shape.model_type}) needs zstc_local.tiny_model.build_nli_model "
            "(the multi-architecture test models), which this checkout does not have yet"
        )
    builder(
        staging,
        architecture=shape.model_type,
        config=dict(shape.config),
        corpus=tweets(),
        vocab_size=vocab_size,
        model_max_length=shape.model_max_length,
    )


def shape_model(name: str, vocab_size: int = TWEET_VOCAB_SIZE) -> Path:
    """The model directory of shape ``name`` with a tokenizer trained on the tweets, built once per machine."""
    if name not in SHAPES:
        raise ValueError(f"Unknown shape {name!r}: use one of {', '.join(SHAPES)}")
    shape = SHAPES[name]

    def build(staging: Path) -> None:
        if shape.model_type == "bart":
            _build_bart(shape, staging, vocab_size)
        else:
            _build_encoder(shape, staging, vocab_size)

    return build_once(cache_root() / f"bench-{name}-tweets{vocab_size}-{VERSION}", build)


def parameter_count(model_dir: Path) -> int:
    """Parameters stored in the model's safetensors files (read from the headers, no tensor is loaded)."""
    from safetensors import safe_open

    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as weights:
            for key in weights.keys():  # noqa: SIM118 - safe_open has keys(), not iteration
                count = 1
                for size in weights.get_slice(key).get_shape():
                    count *= int(size)
                total += count
    return total
