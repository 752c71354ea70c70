"""Stock handler vs ours, in the real serving stack (toolkit + Multi Model Server), on real tweets, per model shape.

For each model shape (benchmarks/model_shapes.py: random weights with the published dimensions of bart-large-mnli,
distilbart-mnli-12-1, deberta-v3-base, deberta-v3-large and xlm-roberta-large, each with a tokenizer of its family
trained on the data set's tweets; ``tiny``: the tests' tiny BART) the serving stack runs twice on the same model
directory and the same records (New Year's resolution tweets, the 10 categories as labels):

- stock: the toolkit's default handler, one record per request (what SingleRecord batch transform does);
- ours:  model/code/inference.py, MultiRecord JSON Lines payloads of at most --max-payload-mb (as batch transform
         sends them with MaxPayloadInMB).

It prints records/second, milliseconds per (text, label) pair, the ratio ours/stock, the cost per pair of each
shape relative to bart-large (the default model's shape, measured in the same run), the peak resident memory of
the server process tree (Java frontend + Python worker) and the largest score difference between the two handlers
(float32: should be < 1e-5). A handler that cannot serve a shape is reported as such, and the run goes on.

``--write`` records the measured pair rates in zstc/data/throughput.json (one entry per shape, hardware, dtype and
handler; entries of other hardware, dtypes or sources are kept), which `zstc models`, the README's tables, batch
sizing and cost estimates read. Without it nothing is written.

    make bench-handler                                  # every real shape, both handlers
    make bench-handler BENCH_ARGS="--write"             # ... and record the figures
    make bench-handler BENCH_ARGS="--quick --shapes tiny,bart-large"   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import signal
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

sys.path.insert(0, str(ROOT / "benchmarks"))

from model_shapes import REFERENCE, SHAPES, TWEET_VOCAB_SIZE, parameter_count, read_rows, shape_model  # noqa: E402

from stacks.serving_env import serving_environment  # noqa: E402
from zstc_contract.rates import THROUGHPUT_FILE  # noqa: E402
from zstc_local.serving import LocalServer  # noqa: E402
from zstc_local.tiny_model import cached_tiny_model  # noqa: E402

INSTANCE_TYPE = "ml.m5.xlarge"  # the stack's default: 4 vCPUs = 2 cores, like this benchmark machine
HYPOTHESIS_TEMPLATE = "This example is {}."  # the pipeline's and our handler's default
HANDLER_NAMES = {"ours": "zstc", "stock": "stock"}  # our names -> throughput.json's "handler" values
# --forward-only's entries: the model's forward passes alone, in-process (the basis of relative costs, see zstc.models)
FORWARD_HANDLER = "forward"


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

    labels: int = 0

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def pairs_per_second(self) -> float:
        return self.records * self.labels / self.seconds

    @property
    def ms_per_pair(self) -> float:
        return 1000.0 / self.pairs_per_second

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


def load_records(limit: int) -> tuple[list[str], list[str]]:
    rows = read_rows()
    labels = sorted({row["Resolution_Category"] for row in rows})
    return [row["text"] for row in rows[:limit]], labels


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
    out: list[bytes] = []
    current: list[bytes] = []
    size = 0
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
            repeat = args.repeat if ours or args.stock_repeat is None else args.stock_repeat
            for _ in range(max(repeat, 1)):
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
    labels = len(records[0]["parameters"]["candidate_labels"])
    return Run(shape, tokens, handler, len(records), seconds, memory.peak / 1e6, cpu, answers, labels)


def describe(run: Run) -> str:
    return (
        f"[{run.shape}] {run.handler}: {run.rate:.2f} rec/s, {run.ms_per_pair:.0f} ms per pair "
        f"({run.cpu_rate:.2f} rec per server CPU-second), peak RSS {run.peak_rss_mb:.0f} MB, "
        f"load average {os.getloadavg()[0]:.1f}"
    )


def max_score_difference(a: list[dict], b: list[dict]) -> float:
    worst = 0.0
    for x, y in zip(a, b, strict=True):
        scores = dict(zip(y["labels"], y["scores"], strict=True))
        worst = max(worst, *(abs(s - scores[label]) for label, s in zip(x["labels"], x["scores"], strict=True)))
    return worst


def cpu_description() -> str:
    """E.g. '2-core x86_64 (AVX2/FMA, no AVX-512)': what decides CPU matrix speed here."""
    flags: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    features = [name for flag, name in (("avx2", "AVX2"), ("fma", "FMA")) if flag in flags]
    extras = [
        name for flag, name in (("avx512f", "AVX-512"), ("avx512_vnni", "VNNI"), ("amx_bf16", "AMX")) if flag in flags
    ]
    described = "/".join(features) or "no AVX2"
    described += ", " + ("/".join(extras) if extras else "no AVX-512")
    return f"{cores()}-core {platform.machine()} ({described})"


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def throughput_entry(run: Run, args: argparse.Namespace, run_id: str, today: str) -> dict:
    command = "make bench-handler" + (f" BENCH_ARGS={shlex.quote(' '.join(sys.argv[1:]))}" if sys.argv[1:] else "")
    return {
        "shape": run.shape,
        "hardware": "cpu",
        "cores": cores(),
        "dtype": args.dtype or "float32",
        "handler": HANDLER_NAMES[run.handler],
        "pairs_per_second": round(run.pairs_per_second, 3),
        # Pairs per CPU-second of the server's processes: less sensitive than wall time to other load on a shared
        # machine (the wall-time figure above is what a dedicated instance of these cores would see).
        "pairs_per_cpu_second": round(run.records * run.labels / run.cpu_seconds, 3),
        "tokens_per_pair": round(run.tokens_per_pair, 1),
        "labels": run.labels,
        "source": "measured",
        "machine": f"{cpu_description()}, shared; real serving stack (toolkit + Multi Model Server)",
        "date": today,
        "command": command,
        "records": run.records,
        "run": run_id,
    }


def run_stamp() -> tuple[str, str]:
    """The run id shared by the entries one run writes, and today's date (UTC)."""
    now = datetime.datetime.now(datetime.UTC)
    return now.strftime("%Y-%m-%dT%H:%MZ"), now.date().isoformat()


def write_throughput(runs: list[Run], args: argparse.Namespace) -> None:
    """Record the serving-stack runs (see :func:`write_entries`)."""
    run_id, today = run_stamp()
    write_entries([throughput_entry(run, args, run_id, today) for run in runs])


def ordered(entries: list[dict]) -> list[dict]:
    """Entries of no benchmark run (published, estimated, older) first, then our handler's, the stock handler's and
    the forward passes', each in shape order: readers that take the first bart-large row of a hardware get ours."""
    rank = {HANDLER_NAMES["ours"]: 0, HANDLER_NAMES["stock"]: 1, FORWARD_HANDLER: 2}
    shapes = {name: index for index, name in enumerate(SHAPES)}
    return sorted(
        entries,
        key=lambda e: (e.get("run") is not None, rank.get(e.get("handler", ""), 3), shapes.get(e.get("shape", ""), 99)),
    )


def write_entries(new: list[dict]) -> None:
    """Replace the measured entries of the same shape, hardware, dtype and handler; keep every other entry."""
    data = json.loads(THROUGHPUT_FILE.read_text(encoding="utf-8"))
    keys = {(e["shape"], e["hardware"], e["dtype"], e["handler"]) for e in new}
    kept = [
        e
        for e in data["entries"]
        if e.get("source") != "measured" or (e["shape"], e["hardware"], e["dtype"], e["handler"]) not in keys
    ]
    data["entries"] = ordered(kept + new)
    temporary = THROUGHPUT_FILE.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(temporary, THROUGHPUT_FILE)
    print(f"wrote {len(new)} entries (run {new[0]['run'] if new else '-'}) to {THROUGHPUT_FILE}")


def model_dir_of(shape: str, vocab_size: int) -> Path:
    if shape == "tiny":
        return cached_tiny_model("tiny")
    if shape == "bart-large" and not vocab_size:
        return cached_tiny_model("bart-large")  # the tests' 600-token tokenizer (~72 tokens per pair)
    return shape_model(shape, vocab_size or TWEET_VOCAB_SIZE)


def try_run(shape: str, tokens: float, model_dir: Path, handler: str, records: list[dict], args) -> Run | str:
    """The run, or why the handler could not serve this shape (the benchmark goes on with the others)."""
    try:
        result = run(shape, tokens, model_dir, handler, records, args)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as error:
        detail = error.read().decode("utf-8", "replace")[:300] if isinstance(error, urllib.error.HTTPError) else ""
        reason = f"{type(error).__name__}: {error} {detail}".strip()
        print(f"[{shape}] {handler}: could not be measured ({reason})", flush=True)
        return reason
    print(describe(result), flush=True)
    return result


def forward_costs(shapes: list[str], texts: list[str], labels: list[str], args: argparse.Namespace) -> None:
    """A cross-check of the relative costs that a shared machine distorts less: every shape's model in this process,
    forward passes only (sorted pairs, padded batches of --batch-size, as our handler runs them), the shapes
    interleaved round by round so that a change of load hits all of them alike; the best round of each counts."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    env = serving_environment(instance_type=INSTANCE_TYPE, batch_size=args.batch_size, timeout_seconds=3600)
    # One thread: its CPU time is the work done, whatever else runs on the machine (several threads spin-wait,
    # which counts as CPU time when they are descheduled).
    torch.set_num_threads(args.forward_threads or int(env["OMP_NUM_THREADS"]))
    loaded = {}
    for shape in shapes:
        model_dir = model_dir_of(shape, args.vocab_size)
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        model = AutoModelForSequenceClassification.from_pretrained(str(model_dir)).eval()
        pairs = [(t, HYPOTHESIS_TEMPLATE.format(label)) for t in texts for label in labels]
        pairs.sort(key=lambda pair: len(tokenizer(*pair)["input_ids"]))
        batches = [
            tokenizer(
                [a for a, _ in pairs[i : i + args.batch_size]],
                [b for _, b in pairs[i : i + args.batch_size]],
                padding=True,
                truncation="only_first",
                return_tensors="pt",
            )
            for i in range(0, len(pairs), args.batch_size)
        ]
        mean_tokens = sum(int(b["attention_mask"].sum()) for b in batches) / len(pairs)
        loaded[shape] = (model, batches, len(pairs), mean_tokens)
    best = dict.fromkeys(shapes, float("inf"))
    best_cpu = dict.fromkeys(shapes, float("inf"))
    for round_ in range(args.forward_rounds):
        for shape in shapes:
            model, batches, count, _ = loaded[shape]
            started, cpu_started = time.perf_counter(), time.process_time()
            with torch.inference_mode():
                for batch in batches:
                    model(**batch)
            best[shape] = min(best[shape], (time.perf_counter() - started) * 1000 / count)
            best_cpu[shape] = min(best_cpu[shape], (time.process_time() - cpu_started) * 1000 / count)
        print(
            f"round {round_ + 1} (load {os.getloadavg()[0]:.1f}): "
            + ", ".join(f"{s} {best[s]:.0f} ms / {best_cpu[s]:.0f} CPU-ms per pair" for s in shapes),
            flush=True,
        )
    if args.write:
        run_id, today = run_stamp()
        threads = torch.get_num_threads()
        write_entries(
            [
                {
                    "shape": shape,
                    "hardware": "cpu",
                    "cores": threads,
                    "dtype": "float32",
                    "handler": FORWARD_HANDLER,
                    "pairs_per_second": round(1000 / best[shape], 3),
                    "pairs_per_cpu_second": round(1000 / best_cpu[shape], 3),
                    "tokens_per_pair": round(loaded[shape][3], 1),
                    "labels": len(labels),
                    "source": "measured",
                    "machine": f"{cpu_description()}, shared; in-process forward passes, {threads} torch thread(s), "
                    f"shapes interleaved, best of {args.forward_rounds} rounds",
                    "date": today,
                    "command": "make bench-handler BENCH_ARGS=" + shlex.quote(" ".join(sys.argv[1:])),
                    "records": len(texts),
                    "run": run_id,
                }
                for shape in shapes
            ]
        )
    reference, reference_cpu = best.get(REFERENCE), best_cpu.get(REFERENCE)
    print(f"threads {torch.get_num_threads()}; {len(texts)} records x {len(labels)} labels; {cpu_description()}")
    print("| shape | forward ms / pair | CPU-ms / pair | cost / pair vs bart-large (wall) | (CPU time) |")
    print("|---|---|---|---|---|")
    for shape in shapes:
        print(
            f"| {shape} | {best[shape]:.0f} | {best_cpu[shape]:.0f} | "
            f"{ratio(best[shape], reference) if reference else '–'} | "
            f"{ratio(best_cpu[shape], reference_cpu) if reference_cpu else '–'} |"
        )


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.3g}x" if a and b else "–"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real = list(SHAPES)
    parser.add_argument("--quick", action="store_true", help="few records per shape (smoke run, noisier figures)")
    parser.add_argument(
        "--shapes", default=",".join(real), help=f"comma-separated, of: tiny, {', '.join(real)} (default: all but tiny)"
    )
    parser.add_argument("--tiny-records", type=int, default=None, help="records for the tiny shape (default 500)")
    parser.add_argument(
        "--records", "--large-records", type=int, default=None, help="records per real shape (default 12, quick 4)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="ZSTC_BATCH_SIZE of our handler")
    parser.add_argument("--dtype", default=None, help="ZSTC_DTYPE of our handler (default: float32 on CPU)")
    parser.add_argument("--repeat", type=int, default=2, help="timed passes per server; the best one counts")
    parser.add_argument(
        "--stock-repeat", type=int, default=None, help="timed passes of the (slow) stock handler (default: --repeat)"
    )
    parser.add_argument("--ours-only", action="store_true", help="skip the stock handler (e.g. to compare dtypes)")
    parser.add_argument(
        "--vocab-size",
        type=int,
        default=TWEET_VOCAB_SIZE,
        help="tokenizers trained on the tweets with this vocabulary (0: bart-large with the tests' 600-token one)",
    )
    parser.add_argument("--max-payload-mb", type=float, default=1.0, help="MultiRecord payload size (MaxPayloadInMB)")
    parser.add_argument("--write", action="store_true", help=f"record the pair rates in {THROUGHPUT_FILE.name}")
    parser.add_argument(
        "--forward-only",
        action="store_true",
        help="no server: forward passes of every shape in-process, interleaved (a cross-check of relative costs)",
    )
    parser.add_argument("--forward-rounds", type=int, default=3, help="rounds of --forward-only")
    parser.add_argument(
        "--forward-threads", type=int, default=1, help="torch threads of --forward-only (0: the server's setting)"
    )
    args = parser.parse_args()
    shapes = [s.strip() for s in args.shapes.split(",") if s.strip()]
    unknown = [s for s in shapes if s != "tiny" and s not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {', '.join(unknown)}: use tiny or {', '.join(real)}")
    if args.write and (args.vocab_size != TWEET_VOCAB_SIZE or args.max_payload_mb != 1.0):
        parser.error("--write records the standard set-up only (default --vocab-size and --max-payload-mb)")
    # Stop the servers cleanly (context managers) when the benchmark itself is terminated.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    print(
        f"machine: {cpu_description()}, load average {os.getloadavg()[0]:.1f}; server env as for {INSTANCE_TYPE}; "
        f"batch size {args.batch_size}; dtype {args.dtype or 'auto'}"
    )
    if args.forward_only:
        texts, labels = load_records(args.records or (4 if args.quick else 12))
        forward_costs([s for s in shapes if s != "tiny"], texts, labels, args)
        return
    rows = []
    for shape in shapes:
        started = time.perf_counter()
        model_dir = model_dir_of(shape, args.vocab_size)
        count = (
            (args.tiny_records or (100 if args.quick else 500))
            if shape == "tiny"
            else (args.records or (4 if args.quick else 12))
        )
        texts, labels = load_records(count)
        tokens, vocabulary = tokens_per_pair(model_dir, texts, labels)
        print(
            f"[{shape}] model ready in {time.perf_counter() - started:.0f} s ({parameter_count(model_dir) / 1e6:.0f}M "
            f"parameters): {model_dir}; {tokens:.1f} tokens per (text, '{HYPOTHESIS_TEMPLATE}') pair on average "
            f"(tokenizer vocabulary {vocabulary})",
            flush=True,
        )
        records = [{"inputs": text, "parameters": {"candidate_labels": labels}} for text in texts]
        ours = try_run(shape, tokens, model_dir, "ours", records, args)
        stock = "skipped (--ours-only)" if args.ours_only else try_run(shape, tokens, model_dir, "stock", records, args)
        rows.append((shape, len(records), tokens, stock, ours))

    measured = {shape: (stock, ours) for shape, _, _, stock, ours in rows}
    reference = measured.get(REFERENCE, (None, None))

    def cost(run: Run | str, index: int) -> str:
        base = reference[index]
        if not isinstance(run, Run) or not isinstance(base, Run):
            return "–"
        return ratio(base.pairs_per_second, run.pairs_per_second)

    def show(result: Run | str, value: str) -> str:
        return format(getattr(result, value.split(":")[0]), value.split(":")[1]) if isinstance(result, Run) else "–"

    print()
    print(f"{len(labels)} labels per record; ours: MultiRecord payloads <= {args.max_payload_mb:g} MB")
    print(f"machine: {cpu_description()}, {datetime.datetime.now(datetime.UTC):%Y-%m-%d}")
    print(
        "| shape | records | tokens / pair | stock rec/s | ours rec/s | ours / stock | stock ms / pair "
        "| ours ms / pair | cost / pair vs bart-large (stock) | cost / pair vs bart-large (ours) "
        "| stock peak RSS MB | ours peak RSS MB | max score diff |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for shape, count, tokens, stock, ours in rows:
        both = isinstance(stock, Run) and isinstance(ours, Run)
        diff = f"{max_score_difference(ours.answers, stock.answers):.1e}" if both else "–"  # type: ignore[union-attr]
        speedup = ratio(ours.rate, stock.rate) if both else "–"  # type: ignore[union-attr]
        cells = [
            shape,
            str(count),
            f"{tokens:.1f}",
            show(stock, "rate:.2f"),
            show(ours, "rate:.2f"),
            speedup,
            show(stock, "ms_per_pair:.0f"),
            show(ours, "ms_per_pair:.0f"),
            cost(stock, 0),
            cost(ours, 1),
            show(stock, "peak_rss_mb:.0f"),
            show(ours, "peak_rss_mb:.0f"),
            diff,
        ]
        print("| " + " | ".join(cells) + " |")
    for shape, _, _, stock, ours in rows:
        for name, result in (("stock", stock), ("ours", ours)):
            if isinstance(result, str):
                print(f"not measured: {shape} {name}: {result}")

    if args.write:
        # Ours first: readers that take the first bart-large row of a hardware find our handler's.
        runs = [r for _, _, _, stock, ours in rows for r in (ours, stock) if isinstance(r, Run) and r.shape != "tiny"]
        if runs:
            write_throughput(runs, args)
        else:
            print("nothing measured: throughput.json left as it is")


if __name__ == "__main__":
    main()
