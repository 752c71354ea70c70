"""Stock handler vs ours, in the real serving stack (toolkit + Multi Model Server), on real tweets.

For each model shape (tiny, bart-large-mnli's architecture with random weights) the serving stack runs twice on the
same model directory and the same records (New Year's resolution tweets, the 10 categories as labels):

- stock: the toolkit's default handler, one record per request (what SingleRecord batch transform does);
- ours:  model/code/inference.py, MultiRecord JSON Lines payloads of at most --max-payload-mb (as batch transform
         sends them with MaxPayloadInMB).

It prints records/second, the ratio, the peak resident memory of the server process tree (Java frontend + Python
worker), and the largest score difference between the two (float32: should be < 1e-5).

bart-large uses the tests' random weights with a byte-level BPE tokenizer trained on the data set's tweets
(--vocab-size; cached apart from the tests' model), so that a (tweet, hypothesis) pair has a realistic length (~40
tokens; the tests' 600-token tokenizer gives ~72, which understates what batching saves). The mean tokens per pair of
each shape is printed.

    make bench-handler                      # both shapes
    make bench-handler BENCH_ARGS=--quick   # fewer records, for a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stacks.serving_env import serving_environment  # noqa: E402
from zstc.local_serving import LocalServer  # noqa: E402
from zstc.tiny_model import SPECIAL_TOKENS, build_once, cache_root, cached_tiny_model  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "new_years_resolutions_2015.csv"
INSTANCE_TYPE = "ml.m5.xlarge"  # the stack's default: 4 vCPUs = 2 cores, like this benchmark machine
HYPOTHESIS_TEMPLATE = "This example is {}."  # the pipeline's and our handler's default
# The bart-large benchmark model's tokenizer: byte-level BPE trained on the data set's tweets. The tests' model has a
# ~600-token vocabulary trained on a few sentences, which splits a tweet + hypothesis into ~72 tokens (the real
# bart-large-mnli tokenizer: ~35-40); merges seen at least twice in ~5000 tweets give ~38 tokens per pair.
TWEET_VOCAB_SIZE = 16000
TWEET_MIN_FREQUENCY = 2
TWEET_MODEL_VERSION = "v1"


@dataclass
class Run:
    shape: str
    tokens_per_pair: float
    handler: str
    records: int
    seconds: float
    peak_rss_mb: float
    cpu_seconds: float
    answers: list[dict]

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def cpu_rate(self) -> float:
        """Records per CPU-second of the server: less sensitive than wall time to other load on the machine."""
        return self.records / self.cpu_seconds


def cpu_seconds(server: LocalServer) -> float:
    total = 0.0
    for proc in server.process_tree():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def read_rows() -> list[dict[str, str]]:
    if not DATA.is_file():
        sys.exit(f"Data set not found: {DATA} (the shared New Year's resolutions CSV).")
    with DATA.open(newline="", encoding="utf-8", errors="replace") as handle:
        return list(csv.DictReader(handle))


def load_records(limit: int) -> tuple[list[str], list[str]]:
    rows = read_rows()
    labels = sorted({row["Resolution_Category"] for row in rows})
    return [row["text"] for row in rows[:limit]], labels


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def tweet_tokenizer_model(shape: str, vocab_size: int = TWEET_VOCAB_SIZE) -> Path:
    """The model of ``shape`` (same seed-0 random weights) with a byte-level BPE tokenizer trained on the tweets.

    Built once per machine into ``<cache root>/<shape>-tweets<vocab_size>-<version>``, next to (never replacing)
    the tests' cached models: the weights are hard-linked (or copied) from ``cached_tiny_model(shape)``, only the
    tokenizer files differ. bart-large's embedding matrix keeps bart-large-mnli's 50265 rows, so any tokenizer of
    at most that many tokens fits; the row count does not change the cost of a forward pass.
    """
    from tokenizers import ByteLevelBPETokenizer
    from transformers import BartTokenizerFast

    base = cached_tiny_model(shape)

    def build(staging: Path) -> None:
        for weights in [base / "config.json", *sorted(base.glob("*.safetensors"))]:
            _link_or_copy(weights, staging / weights.name)
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(
            [row["text"] for row in read_rows()],
            vocab_size=vocab_size,
            min_frequency=TWEET_MIN_FREQUENCY,
            special_tokens=SPECIAL_TOKENS,
        )
        with tempfile.TemporaryDirectory() as raw:
            bpe.save_model(raw)
            tokenizer = BartTokenizerFast(
                vocab_file=str(Path(raw) / "vocab.json"),
                merges_file=str(Path(raw) / "merges.txt"),
                model_max_length=1024 if shape == "bart-large" else 128,
            )
            tokenizer.save_pretrained(str(staging))

    return build_once(cache_root() / f"{shape}-tweets{vocab_size}-{TWEET_MODEL_VERSION}", build)


def tokens_per_pair(model_dir: Path, texts: list[str], labels: list[str]) -> tuple[float, int]:
    """Mean tokens of a (text, hypothesis) pair as the zero-shot pipeline builds it, and the vocabulary size."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    hypotheses = [HYPOTHESIS_TEMPLATE.format(label) for label in labels]
    lengths = [len(tokenizer(text, hypothesis)["input_ids"]) for text in texts for hypothesis in hypotheses]
    return sum(lengths) / len(lengths), len(tokenizer)


class PeakMemory:
    """Samples the RSS of the server's process tree every 100 ms while running."""

    def __init__(self, server: LocalServer) -> None:
        self.server, self.peak, self._stop = server, server.rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, self.server.rss_bytes())

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def post(url: str, body: bytes, content_type: str) -> str:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=3600) as response:
        return response.read().decode("utf-8")


def payloads(records: list[dict], max_bytes: int) -> list[bytes]:
    """Split JSON Lines into payloads of at most max_bytes, as batch transform does with MaxPayloadInMB."""
    out, current, size = [], [], 0
    for record in records:
        line = json.dumps(record, ensure_ascii=False).encode("utf-8")
        if current and size + len(line) + 1 > max_bytes:
            out.append(b"\n".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line) + 1
    if current:
        out.append(b"\n".join(current))
    return out


def run(shape: str, tokens: float, model_dir: Path, handler: str, records: list[dict], args: argparse.Namespace) -> Run:
    env = serving_environment(instance_type=INSTANCE_TYPE, batch_size=args.batch_size, timeout_seconds=3600)
    if args.dtype:
        env["ZSTC_DTYPE"] = args.dtype
    ours = handler == "ours"
    with LocalServer(model_dir, use_our_handler=ours, env=env, startup_timeout=900) as server:
        warmup = {"inputs": "warm up", "parameters": records[0]["parameters"]}
        post(server.url, json.dumps(warmup).encode(), "application/json")
        answers: list[dict] = []
        seconds = cpu = float("inf")
        with PeakMemory(server) as memory:
            # Best of --repeat passes: the machine is shared, other load only ever slows a pass down.
            for _ in range(args.repeat):
                answers = []
                started, cpu_started = time.perf_counter(), cpu_seconds(server)
                if ours:
                    for body in payloads(records, int(args.max_payload_mb * 1024 * 1024)):
                        text = post(server.url, body, "application/jsonlines")
                        answers.extend(json.loads(line) for line in text.split("\n"))
                else:
                    for record in records:
                        answers.append(json.loads(post(server.url, json.dumps(record).encode(), "application/json")))
                elapsed, used = time.perf_counter() - started, cpu_seconds(server) - cpu_started
                if elapsed < seconds:
                    seconds, cpu = elapsed, used
    return Run(shape, tokens, handler, len(records), seconds, memory.peak / 1e6, cpu, answers)


def describe(run: Run) -> str:
    return (
        f"[{run.shape}] {run.handler}: {run.rate:.2f} rec/s ({run.cpu_rate:.2f} per server CPU-second), "
        f"peak RSS {run.peak_rss_mb:.0f} MB, load average {os.getloadavg()[0]:.1f}"
    )


def max_score_difference(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        scores = dict(zip(y["labels"], y["scores"], strict=True))
        worst = max(worst, *(abs(s - scores[label]) for label, s in zip(x["labels"], x["scores"], strict=True)))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few records per shape (smoke run, noisier figures)")
    parser.add_argument("--shapes", default="tiny,bart-large", help="comma-separated: tiny, bart-large")
    parser.add_argument("--tiny-records", type=int, default=None, help="records for the tiny shape (default 500)")
    parser.add_argument("--large-records", type=int, default=None, help="records for bart-large (default 16)")
    parser.add_argument("--batch-size", type=int, default=16, help="ZSTC_BATCH_SIZE of our handler")
    parser.add_argument("--dtype", default=None, help="ZSTC_DTYPE of our handler (default: float32 on CPU)")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per server; the best one counts")
    parser.add_argument("--ours-only", action="store_true", help="skip the stock handler (e.g. to compare dtypes)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=TWEET_VOCAB_SIZE,
        help="bart-large: BPE vocabulary trained on the tweets (0: the tests' 600-token tokenizer)",
    )
    parser.add_argument("--max-payload-mb", type=float, default=1.0, help="MultiRecord payload size (MaxPayloadInMB)")
    args = parser.parse_args()
    # Stop the servers cleanly (context managers) when the benchmark itself is terminated.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    counts = {
        "tiny": args.tiny_records or (100 if args.quick else 500),
        "bart-large": args.large_records or (4 if args.quick else 16),
    }

    print(
        f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; "
        f"server env as for {INSTANCE_TYPE}; batch size {args.batch_size}; dtype {args.dtype or 'auto'}"
    )
    rows = []
    for shape in [s.strip() for s in args.shapes.split(",") if s.strip()]:
        started = time.perf_counter()
        if shape == "bart-large" and args.vocab_size:
            model_dir = tweet_tokenizer_model(shape, args.vocab_size)
        else:
            model_dir = cached_tiny_model(shape)
        print(f"[{shape}] model ready in {time.perf_counter() - started:.0f} s: {model_dir}", flush=True)
        texts, labels = load_records(counts[shape])
        tokens, vocabulary = tokens_per_pair(model_dir, texts, labels)
        print(
            f"[{shape}] {tokens:.1f} tokens per (text, '{HYPOTHESIS_TEMPLATE}') pair on average "
            f"(tokenizer vocabulary {vocabulary})",
            flush=True,
        )
        records = [{"inputs": text, "parameters": {"candidate_labels": labels}} for text in texts]
        ours = run(shape, tokens, model_dir, "ours", records, args)
        print(describe(ours), flush=True)
        if args.ours_only:
            continue
        stock = run(shape, tokens, model_dir, "stock", records, args)
        print(describe(stock), flush=True)
        rows.append((shape, stock, ours, max_score_difference(ours.answers, stock.answers)))

    if not rows:
        return
    print()
    print(f"{len(labels)} labels per record; ours: MultiRecord payloads <= {args.max_payload_mb:g} MB")
    print(
        "| shape | records | tokens / pair | stock rec/s | ours rec/s | ratio | ratio per server CPU-s "
        "| stock peak RSS | ours peak RSS | max score diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for shape, stock, ours, diff in rows:
        print(
            f"| {shape} | {stock.records} | {stock.tokens_per_pair:.1f} | {stock.rate:.2f} | {ours.rate:.2f} | "
            f"{ours.rate / stock.rate:.1f}x | "
            f"{ours.cpu_rate / stock.cpu_rate:.1f}x | "
            f"{stock.peak_rss_mb:.0f} MB | {ours.peak_rss_mb:.0f} MB | {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
