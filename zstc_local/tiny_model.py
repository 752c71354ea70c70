"""Random-weight NLI models built locally, for tests, benchmarks and the offline demo.

No Hugging Face Hub download: tokenizers are trained here with `tokenizers` on a small English + Japanese corpus
and the weights are random with a fixed seed. The default is a BART model (the architecture of the default
``facebook/bart-large-mnli``) in two shapes:

- ``tiny``: a few thousand parameters, ``model_max_length`` 128 so truncation is cheap to test; weights are drawn
  with a large standard deviation so that logits differ clearly between inputs (parity tests then compare real
  numbers, not near-uniform scores).
- ``bart-large``: the architecture of ``facebook/bart-large-mnli`` (12+12 layers, d_model 1024, vocabulary 50265,
  1024 positions, ~407M parameters) with random weights, for benchmarks.

``architecture=`` builds a tiny model of another sequence-classification architecture (:data:`ARCHITECTURES`, the
Hugging Face ``model_type`` names), each with the tokenizer family of its real checkpoints (WordPiece for
BERT / DistilBERT / ELECTRA / MobileBERT, byte-level BPE for RoBERTa / BART, Unigram with Metaspace, as
sentencepiece, for XLM-RoBERTa / DeBERTa-v2 / ALBERT) and the label layout of a real NLI checkpoint of that family
(3-class in several orders and letter cases, or 2-class entailment / not_entailment). Two carry the traps of real
configs: XLM-RoBERTa has ``max_position_embeddings`` 130 with only 128 usable positions (padding-offset positions,
like the 514 / 512 of xlm-roberta-large) and neither it nor DeBERTa-v2 has a ``model_max_length`` in its tokenizer
config. :func:`build_nli_model` is the general builder (any config override, corpus or vocabulary size), for
benchmark shapes.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

SHAPES = ("tiny", "bart-large")
CACHE_VERSION = "v1"
# Hugging Face model_type of each architecture a tiny model can be built for (model/code/supported_architectures.json
# lists the ones the handler is tested with: the same set).
ARCHITECTURES = (
    "bart",
    "bert",
    "distilbert",
    "roberta",
    "xlm-roberta",
    "deberta-v2",
    "electra",
    "albert",
    "mobilebert",
)
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
# The corpus of the non-BART tokenizers: the one above plus Japanese news-like sentences and the Japanese
# hypothesis template, so Japanese text, labels and templates are tokenized into real pieces (not unknown tokens).
# (The BART tokenizer keeps the corpus above: its cached model and the benchmarks built on it stay unchanged.)
MULTILINGUAL_CORPUS = [
    *_CORPUS,
    "この文章はスポーツに関するものです。",
    "この文章は政治に関するものです。",
    "この文章は経済に関するものです。",
    "この文章は健康に関するものです。",
    "日本代表がワールドカップの初戦で勝利した。",
    "首相は新しい予算案を国会に提出した。",
    "毎日野菜を食べて、よく眠るようにしています。",
    "株価が上がり、円安が進んでいる。",
    "新しいスマートフォンが発表され、技術の進歩に驚いた。",
    "映画とアニメと音楽が好きです。",
    "スポーツ、政治、経済、健康、技術、娯楽。",
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


def byte_bpe_tokenizer(
    target: Path,
    corpus: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int = 1,
    model_max_length: int | None,
    tokenizer_class: Any = None,
) -> None:
    """A byte-level BPE trained on ``corpus``, saved into ``target`` as ``tokenizer_class`` (default BART's fast
    tokenizer; RoBERTa's for that architecture). Also used by the benchmark shapes, trained on the tweets."""
    from tokenizers import ByteLevelBPETokenizer

    if tokenizer_class is None:
        from transformers import BartTokenizerFast as tokenizer_class

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus, vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS)
    with tempfile.TemporaryDirectory() as raw:
        bpe.save_model(raw)
        extra = {} if model_max_length is None else {"model_max_length": model_max_length}
        tokenizer = tokenizer_class(
            vocab_file=str(Path(raw) / "vocab.json"), merges_file=str(Path(raw) / "merges.txt"), **extra
        )
        tokenizer.save_pretrained(str(target))


def _build_tokenizer(target: Path, model_max_length: int) -> None:
    byte_bpe_tokenizer(target, _CORPUS * 4, vocab_size=600, model_max_length=model_max_length)


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


# ---------------------------------------------------------------------------------------------------------------
# Other architectures
# ---------------------------------------------------------------------------------------------------------------
# Label layouts of real NLI checkpoints of each family: the handler must find entailment / contradiction the way the
# pipeline does in every one of them.
_LABELS: dict[str, dict[int, str]] = {
    "bert": {0: "ENTAILMENT", 1: "NEUTRAL", 2: "CONTRADICTION"},  # upper case, entailment first
    "distilbert": {0: "contradiction", 1: "entailment", 2: "neutral"},  # cross-encoder/nli-* order
    "roberta": {0: "CONTRADICTION", 1: "NEUTRAL", 2: "ENTAILMENT"},  # roberta-large-mnli
    "xlm-roberta": {0: "contradiction", 1: "neutral", 2: "entailment"},  # joeddav/xlm-roberta-large-xnli
    "deberta-v2": {0: "entailment", 1: "not_entailment"},  # MoritzLaurer/*-zeroshot-v2.0 (2 classes)
    "electra": {0: "entailment", 1: "neutral", 2: "contradiction"},
    "albert": {0: "contradiction", 1: "entailment", 2: "neutral"},
    "mobilebert": {0: "not_entailment", 1: "entailment"},  # 2 classes, entailment last
}
_TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64}
# The deberta-v3 / mDeBERTa-v3 layout (their published config.json, ``model_type`` deberta-v2): relative attention
# only, no absolute positions, no token types. The tiny model and the benchmark shapes (benchmarks/model_shapes.py)
# build on it, each with its own sizes and position buckets.
DEBERTA_V3_LAYOUT: Final[dict[str, Any]] = {
    "relative_attention": True,
    "max_relative_positions": -1,
    "norm_rel_ebd": "layer_norm",
    "share_att_key": True,
    "pos_att_type": ["p2c", "c2p"],
    "position_biased_input": False,
    "type_vocab_size": 0,
    "layer_norm_eps": 1e-7,
}
# Tiny configs: 128 usable positions everywhere (RoBERTa-style: 130 with padding offset 2). The initializer ranges
# are large so that entailment logits differ clearly between labels (std 1-3 over labels, |logit| < 20).
_CONFIGS: dict[str, dict[str, Any]] = {
    "bert": {**_TINY, "max_position_embeddings": 128, "type_vocab_size": 2, "initializer_range": 1.0},
    "distilbert": {
        "dim": 32,
        "n_layers": 2,
        "n_heads": 4,
        "hidden_dim": 64,
        "max_position_embeddings": 128,
        "initializer_range": 0.6,
        "seq_classif_dropout": 0.0,
    },
    "roberta": {**_TINY, "max_position_embeddings": 130, "type_vocab_size": 1, "initializer_range": 0.6},
    "xlm-roberta": {**_TINY, "max_position_embeddings": 130, "type_vocab_size": 1, "initializer_range": 0.6},
    "deberta-v2": {
        **_TINY,
        **DEBERTA_V3_LAYOUT,
        "max_position_embeddings": 128,
        "position_buckets": 32,
        "pooler_hidden_size": 32,
        "initializer_range": 0.3,
    },
    "electra": {**_TINY, "embedding_size": 16, "max_position_embeddings": 128, "initializer_range": 0.6},
    "albert": {**_TINY, "embedding_size": 16, "max_position_embeddings": 128, "initializer_range": 1.0},
    "mobilebert": {
        **_TINY,
        "intermediate_size": 32,
        "embedding_size": 16,
        "intra_bottleneck_size": 16,
        "true_hidden_size": 16,
        "num_feedforward_networks": 1,
        "max_position_embeddings": 128,
        "initializer_range": 0.3,
    },
}
# Tokenizer family of each architecture, its special tokens (in id order) and pad token.
_WORDPIECE_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
_TOKENIZERS: dict[str, str] = {
    "bert": "BertTokenizerFast",
    "distilbert": "DistilBertTokenizerFast",
    "electra": "ElectraTokenizerFast",
    "mobilebert": "MobileBertTokenizerFast",
    "roberta": "RobertaTokenizerFast",
    "xlm-roberta": "XLMRobertaTokenizerFast",
    "deberta-v2": "DebertaV2TokenizerFast",
    "albert": "AlbertTokenizerFast",
}
# Tokenizer configs without model_max_length, as some real checkpoints ship them.
_NO_MODEL_MAX_LENGTH = frozenset({"xlm-roberta", "deberta-v2"})


def _config_class(architecture: str):
    from transformers import AutoConfig

    return AutoConfig.for_model(architecture).__class__


def _train_wordpiece(target: Path, tokenizer_class: Any, corpus: list[str], vocab_size: int, max_length: int | None):
    from tokenizers import BertWordPieceTokenizer

    wordpiece = BertWordPieceTokenizer(lowercase=True, handle_chinese_chars=True)
    wordpiece.train_from_iterator(
        corpus * 4, vocab_size=vocab_size, min_frequency=1, special_tokens=_WORDPIECE_SPECIALS
    )
    with tempfile.TemporaryDirectory() as raw:
        wordpiece.save_model(raw)
        extra = {} if max_length is None else {"model_max_length": max_length}
        tokenizer = tokenizer_class(vocab_file=str(Path(raw) / "vocab.txt"), do_lower_case=True, **extra)
        tokenizer.save_pretrained(str(target))


def _train_byte_bpe(target: Path, tokenizer_class: Any, corpus: list[str], vocab_size: int, max_length: int | None):
    byte_bpe_tokenizer(
        target, corpus * 4, vocab_size=vocab_size, model_max_length=max_length, tokenizer_class=tokenizer_class
    )


def _train_unigram(
    target: Path, architecture: str, tokenizer_class: Any, corpus: list[str], vocab_size: int, max_length: int | None
):
    """A sentencepiece-style Unigram tokenizer, assembled as transformers' converters assemble the real ones."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    if architecture == "xlm-roberta":  # XLMRobertaConverter: <s> A </s> </s> B </s>, no token types
        specials, unk, mask = ["<s>", "<pad>", "</s>", "<unk>"], "<unk>", "<mask>"
        single, pair, template_tokens = "<s> $A </s>", "<s> $A </s> </s> $B </s>", ["<s>", "</s>"]
        names = {"bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>", "cls_token": "<s>", "pad_token": "<pad>"}
    elif architecture == "deberta-v2":  # DebertaV2Converter: [CLS] A [SEP] B [SEP] with token types 0 / 1
        specials, unk, mask = ["[PAD]", "[CLS]", "[SEP]", "[UNK]"], "[UNK]", "[MASK]"
        single, pair, template_tokens = "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", ["[CLS]", "[SEP]"]
        names = {
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
            "sep_token": "[SEP]",
            "cls_token": "[CLS]",
            "pad_token": "[PAD]",
        }
    else:  # albert (AlbertConverter): lower case, accents stripped, [CLS] A [SEP] B [SEP] with token types
        specials, unk, mask = ["<pad>", "<unk>", "[CLS]", "[SEP]"], "<unk>", "[MASK]"
        single, pair, template_tokens = "[CLS]:0 $A:0 [SEP]:0", "[CLS]:0 $A:0 [SEP]:0 $B:1 [SEP]:1", ["[CLS]", "[SEP]"]
        names = {
            "bos_token": "[CLS]",
            "eos_token": "[SEP]",
            "sep_token": "[SEP]",
            "cls_token": "[CLS]",
            "pad_token": "<pad>",
        }
    unigram = Tokenizer(models.Unigram())
    steps: list[Any] = []
    if architecture == "albert":
        steps += [normalizers.NFKD(), normalizers.StripAccents(), normalizers.Lowercase()]
    steps += [normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")]
    unigram.normalizer = normalizers.Sequence(steps)
    unigram.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    unigram.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=specials, unk_token=unk)
    unigram.train_from_iterator(corpus * 4, trainer=trainer)
    unigram.add_special_tokens([mask])
    unigram.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(token, unigram.token_to_id(token)) for token in template_tokens]
    )
    extra = {} if max_length is None else {"model_max_length": max_length}
    tokenizer = tokenizer_class(tokenizer_object=unigram, unk_token=unk, mask_token=mask, **names, **extra)
    tokenizer.save_pretrained(str(target))


def build_nli_model(
    target: Path,
    *,
    architecture: str,
    config: dict[str, Any] | None = None,
    corpus: list[str] | None = None,
    vocab_size: int = 800,
    model_max_length: int | None = None,
    seed: int = 0,
) -> Path:
    """Write a random-weight ``<Architecture>ForSequenceClassification`` NLI model and its tokenizer into ``target``.

    ``architecture`` is a Hugging Face ``model_type`` of :data:`ARCHITECTURES` other than ``bart`` (BART:
    :func:`build_tiny_nli_model`). ``config`` overrides the tiny config (e.g. a base-sized shape for benchmarks);
    ``corpus`` / ``vocab_size`` train the tokenizer (default: :data:`MULTILINGUAL_CORPUS`, 800 tokens);
    ``model_max_length`` is written into the tokenizer config (``None``: the key is left out). Returns ``target``.
    """
    if architecture not in _CONFIGS:
        choices = ", ".join(a for a in ARCHITECTURES if a != "bart")
        raise ValueError(f"Unknown architecture {architecture!r}: use one of {choices} (BART: build_tiny_nli_model).")
    import torch
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    tokenizer_class = getattr(transformers, _TOKENIZERS[architecture])
    words = list(corpus if corpus is not None else MULTILINGUAL_CORPUS)
    if architecture in ("bert", "distilbert", "electra", "mobilebert"):
        _train_wordpiece(target, tokenizer_class, words, vocab_size, model_max_length)
    elif architecture == "roberta":
        _train_byte_bpe(target, tokenizer_class, words, vocab_size, model_max_length)
    else:
        _train_unigram(target, architecture, tokenizer_class, words, vocab_size, model_max_length)
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    id2label = _LABELS[architecture]
    values = {
        **_CONFIGS[architecture],
        **(config or {}),
        "vocab_size": len(tokenizer),
        "id2label": dict(id2label),
        "label2id": {label: index for index, label in id2label.items()},
        "pad_token_id": tokenizer.pad_token_id,
    }
    for dropout in ("hidden_dropout_prob", "attention_probs_dropout_prob", "dropout", "attention_dropout"):
        values.setdefault(dropout, 0.0)
    model_config = _config_class(architecture)(**values)
    if architecture in ("roberta", "xlm-roberta"):
        model_config.bos_token_id, model_config.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model: Any = AutoModelForSequenceClassification.from_config(model_config)
    model.eval()
    model.save_pretrained(str(target), safe_serialization=True)
    return target


def build_tiny_architecture(target: Path, architecture: str, *, seed: int = 0) -> Path:
    """The tiny model of ``architecture`` (a model_type of :data:`ARCHITECTURES`): 128 usable positions."""
    if architecture == "bart":
        return build_tiny_nli_model(target, seed=seed)
    max_length = None if architecture in _NO_MODEL_MAX_LENGTH else 128
    return build_nli_model(target, architecture=architecture, model_max_length=max_length, seed=seed)


@functools.cache
def cached_tiny_architecture(architecture: str) -> Path:
    """The tiny model of ``architecture``, built once per machine (``<cache root>/tiny-<architecture>-v1``)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}.")
    if architecture == "bart":
        return cached_tiny_model()
    return build_once(
        cache_root() / f"tiny-{architecture}-{CACHE_VERSION}",
        lambda staging: build_tiny_architecture(staging, architecture),
    )
