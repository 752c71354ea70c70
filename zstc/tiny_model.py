"""Random-weight BART NLI models built locally, for tests, benchmarks and the offline demo.

No Hugging Face Hub download: the tokenizer is trained here with `tokenizers` (byte-level BPE, BART's scheme, so any
Unicode text tokenizes) and the weights are random with a fixed seed. Two shapes:

- ``tiny``: a few thousand parameters, ``model_max_length`` 128 so truncation is cheap to test; weights are drawn
  with a large standard deviation so that logits differ clearly between inputs (parity tests then compare real
  numbers, not near-uniform scores).
- ``bart-large``: the architecture of ``facebook/bart-large-mnli`` (12+12 layers, d_model 1024, vocabulary 50265,
  1024 positions, ~407M parameters) with random weights, for benchmarks.

Both configs map ids to ``contradiction`` / ``neutral`` / ``entailment`` like bart-large-mnli, so the zero-shot
pipeline and our handler find the entailment id the same way.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

SHAPES = ("tiny", "bart-large")
CACHE_VERSION = "v1"
ID2LABEL = {0: "contradiction", 1: "neutral", 2: "entailment"}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, as in BART's vocabulary

# A small, varied corpus: enough merges for realistic token lengths, non-ASCII included (byte-level BPE covers
# every byte anyway, so unseen scripts still tokenize).
_CORPUS = [
    "This example is about health and fitness.",
    "I will read more books and spend less time on my phone this year.",
    "New Year's resolution: run a marathon, eat better, save money, learn to cook.",
    "The quick brown fox jumps over the lazy dog.",
    "Career goals: find a new job, ask for a raise, finish the certification.",
    "Recreation & leisure, personal growth, family and friends, philanthropy, humor, time management.",
    "Finance: pay off the credit card, stop buying coffee every day.",
    "Education: learn Spanish, take an online course in statistics.",
    "今年こそは毎朝ジョギングをして、本をたくさん読みたい。",
    "Café, naïve, façade, jalapeño — résumé of the year 🎉.",
    "Ich möchte mehr Zeit mit meiner Familie verbringen.",
    "This text is about politics, sports, technology, business or entertainment.",
]


def _build_config(shape: str, vocab_size: int):
    from transformers import BartConfig

    common = {
        "id2label": dict(ID2LABEL),
        "label2id": {v: k for k, v in ID2LABEL.items()},
        "pad_token_id": 1,
        "bos_token_id": 0,
        "eos_token_id": 2,
        "decoder_start_token_id": 2,
        "forced_eos_token_id": 2,
        "dropout": 0.1,
        "attention_dropout": 0.0,
        "activation_dropout": 0.0,
        "classifier_dropout": 0.0,
        "scale_embedding": False,
        "add_final_layer_norm": False,
        "normalize_before": False,
    }
    if shape == "tiny":
        return BartConfig(
            vocab_size=vocab_size,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=128,
            init_std=0.3,
            **common,
        )
    # facebook/bart-large-mnli's architecture (config.json of the pinned revision), random weights.
    return BartConfig(
        vocab_size=50265,
        d_model=1024,
        encoder_layers=12,
        decoder_layers=12,
        encoder_attention_heads=16,
        decoder_attention_heads=16,
        encoder_ffn_dim=4096,
        decoder_ffn_dim=4096,
        max_position_embeddings=1024,
        init_std=0.02,
        **common,
    )


def _build_tokenizer(target: Path, model_max_length: int) -> None:
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(_CORPUS * 4, vocab_size=600, min_frequency=1, special_tokens=SPECIAL_TOKENS)
    with tempfile.TemporaryDirectory() as raw:
        bpe.save_model(raw)
        tokenizer: Any = BartTokenizerFast(
            vocab_file=str(Path(raw) / "vocab.json"),
            merges_file=str(Path(raw) / "merges.txt"),
            model_max_length=model_max_length,
        )
        tokenizer.save_pretrained(str(target))


def build_tiny_nli_model(target: Path, *, shape: str = "tiny", seed: int = 0) -> Path:
    """Write a random-weight ``BartForSequenceClassification`` NLI model and its tokenizer into ``target``.

    The directory then loads with ``AutoTokenizer`` / ``AutoModelForSequenceClassification`` /
    ``pipeline("zero-shot-classification", model=target)`` and serves with the Hugging Face inference toolkit.
    Same ``shape`` and ``seed`` give the same weights. Returns ``target``.
    """
    if shape not in SHAPES:
        raise ValueError(f"Unknown model shape {shape!r}: use one of {', '.join(SHAPES)}.")
    import torch
    from transformers import AutoTokenizer, BartForSequenceClassification

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    config = _build_config(shape, vocab_size=1)  # vocab size fixed below, once the tokenizer exists
    _build_tokenizer(target, model_max_length=config.max_position_embeddings)
    if shape == "tiny":
        config.vocab_size = len(AutoTokenizer.from_pretrained(str(target)))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = BartForSequenceClassification(config)
    model.eval()
    model.save_pretrained(str(target), safe_serialization=True)
    return target


def cache_root() -> Path:
    """``$ZSTC_CACHE_DIR`` when set, else ``~/.cache/zstc/models``."""
    configured = os.environ.get("ZSTC_CACHE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "zstc" / "models"


@functools.cache
def cached_tiny_model(shape: str = "tiny") -> Path:
    """Build the model of ``shape`` once per machine (``<cache root>/<shape>-v1``) and return its directory.

    Safe with parallel processes (pytest-xdist workers, several engineers): see :func:`build_once`.
    """
    if shape not in SHAPES:
        raise ValueError(f"Unknown model shape {shape!r}: use one of {', '.join(SHAPES)}.")
    return build_once(
        cache_root() / f"{shape}-{CACHE_VERSION}", lambda staging: build_tiny_nli_model(staging, shape=shape)
    )


def build_once(final: Path, build: Callable[[Path], object]) -> Path:
    """Return ``final``, building it first with ``build(staging_dir)`` unless a complete model is already there.

    The model is built in a temporary sibling directory and renamed into place, so parallel processes never see a
    half-written model: the first rename wins, the others discard theirs.
    """
    if (final / "config.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-building-", dir=final.parent))
    try:
        build(staging)
        try:
            os.rename(staging, final)
        except OSError:
            if not (final / "config.json").is_file():  # not a lost race: a real error
                raise
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
