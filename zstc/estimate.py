"""``zstc estimate``: what a file will cost on the batch path, before it is submitted.

The estimate multiplies four figures, each with its origin stated in the output:

- **counted here**: records, (text, label) pairs and words of the file, read exactly as ``zstc submit`` sends it
  (the same reader, :func:`zstc.inputs.prepare`);
- **estimated**: tokens per pair, from the words with a tokens-per-word ratio measured once on the New Year's
  resolution tweets with the benchmark's tokenizer (:data:`TOKEN_RATIO`: no tokenizer is downloaded);
- **measured / published / estimated**: the handler's pair rate on each instance type, from
  ``zstc/data/throughput.json`` (``make bench-handler`` writes the measured rows), scaled to the file's tokens per
  pair; CPU rates are scaled by physical cores from the machine they were measured on;
- **published, not verified here**: on-demand prices and the job start-up overhead, ``zstc/data/prices.json``.

The same estimate is printed by ``zstc submit`` before uploading (:func:`confirm_before_upload`), which asks for
confirmation above :data:`CONFIRM_ABOVE_USD` unless ``--yes`` is given. :func:`cost_table_markdown` renders the
README's "Costs" table from the same data (a test keeps the README equal to it).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from zstc import inputs
from zstc.errors import InputError, ZstcError
from zstc.models import REPO, find_model
from zstc_contract.rates import ACCELERATORS, DATA_DIR, DEFAULT_SHAPE, THROUGHPUT_FILE, Rate, select_rate

PRICES_FILE: Final = DATA_DIR / "prices.json"
CDK_JSON: Final = REPO / "cdk.json"
DEFAULT_TEMPLATE: Final = "This example is {}."  # the handler's default hypothesis
DEFAULT_PRICE_REGION: Final = "us-east-1"
TABLE_LABELS: Final = 10  # the README table's records have 10 labels (as the benchmark's tweets)
# `zstc submit` asks before uploading a file whose highest estimate among the configured types is above this.
CONFIRM_ABOVE_USD: Final = float(os.environ.get("ZSTC_CONFIRM_ABOVE_USD", "10"))

# Tokens per (text, hypothesis) pair ≈ SPECIAL + PER_WORD × whitespace words of the text and the hypothesis.
TOKENS_PER_WORD: Final = 1.82
SPECIAL_TOKENS_PER_PAIR: Final = 4
TOKEN_RATIO: Final[dict[str, Any]] = {
    "tokens_per_word": TOKENS_PER_WORD,
    "special_tokens_per_pair": SPECIAL_TOKENS_PER_PAIR,
    "method": "whitespace-separated words of the text plus the hypothesis ('This example is {label}.'), times "
    "tokens_per_word, plus the pair's special tokens (BART: <s> text </s></s> hypothesis </s>)",
    "measured_on": "/work/shared/data/new_years_resolutions_2015.csv: all 5,011 tweets × the 10 categories = 50,110 "
    "pairs; 18.70 words and 37.98 tokens per pair (4 + 1.82 × 18.70)",
    "tokenizer": "the benchmark's bart-large byte-level BPE trained on those tweets (benchmarks/model_shapes.py, "
    "16,000-token target vocabulary, 9,417 tokens learned)",
    "date": "2026-12-01",
    "caveat": "a real model's tokenizer (50,265 tokens for bart-large) splits fewer words; other languages and "
    "scripts (e.g. Japanese without spaces) are not covered by this ratio",
}


def _app_modules() -> None:
    """Check that the CDK app's ``stacks`` package is importable: its configuration rules (stacks/config.py) and
    instance sizes (stacks/serving_env.py) are the one place for those facts. They live in the repository checkout,
    which ``make install`` puts on the virtualenv's path."""
    try:
        importlib.import_module("stacks.config")
    except ModuleNotFoundError as error:
        raise ZstcError(
            f"The CDK app's configuration (stacks/config.py) cannot be imported ({error.name} is missing): zstc "
            "estimate reads it from a checkout of the repository; run it there, after `make install`"
        ) from error


# --- counting ---------------------------------------------------------------------------------------------------


@dataclass
class FileCounts:
    """What the file asks for, counted on the records exactly as they are sent."""

    records: int = 0
    records_with_problems: int = 0  # answered with an error line, no pairs
    pairs: int = 0
    words: int = 0

    @property
    def tokens(self) -> float:
        """Estimated tokens over all pairs (see :data:`TOKEN_RATIO`)."""
        return self.pairs * SPECIAL_TOKENS_PER_PAIR + self.words * TOKENS_PER_WORD

    @property
    def tokens_per_pair(self) -> float | None:
        return self.tokens / self.pairs if self.pairs else None


def _words(text: str) -> int:
    return len(text.split())


def count_prepared(prepared: inputs.PreparedInput) -> FileCounts:
    """Records, pairs and words of a prepared file (its converted lines: the same ones ``zstc submit`` uploads)."""
    counts = FileCounts()
    for record in prepared.iter_records():
        counts.records += 1
        if record.problem is not None:
            counts.records_with_problems += 1
            continue
        try:
            payload = json.loads(record.payload)
        except ValueError:
            counts.records_with_problems += 1
            continue
        parameters = payload.get("parameters") or {}
        labels = parameters.get("candidate_labels") or []
        if isinstance(labels, str):
            labels = [labels]
        template = parameters.get("hypothesis_template") or DEFAULT_TEMPLATE
        text = str(payload.get("inputs", ""))
        counts.pairs += len(labels)
        counts.words += len(labels) * _words(text) + sum(_words(template.replace("{}", str(label))) for label in labels)
    return counts


# --- throughput and prices ------------------------------------------------------------------------------------------


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ZstcError(f"{path} is unreadable ({error}): restore it from the repository") from None
    if not isinstance(data, dict):
        raise ZstcError(f"{path} must hold a JSON object")
    return data


def _cores(instance_type: str) -> int:
    _app_modules()
    from stacks.serving_env import vcpus

    return max(1, vcpus(instance_type) // 2)


def instance_rate(instance_type: str, shape: str, entries: Sequence[dict[str, Any]]) -> Rate | None:
    """The best-founded pair rate of ``shape`` on ``instance_type`` (the one lookup: zstc_contract.rates)."""
    _app_modules()
    from stacks.config import is_gpu

    return select_rate(instance_type, shape, entries, physical_cores=_cores, is_gpu=is_gpu)


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    region: str  # the region whose price this is
    note: str = ""


def instance_price(instance_type: str, region: str, prices: dict[str, Any]) -> Price | None:
    regions = prices.get("regions", {})
    entry = regions.get(region, {}).get(instance_type)
    if entry is not None:
        return Price(float(entry["usd_per_hour"]), region)
    fallback = regions.get(DEFAULT_PRICE_REGION, {}).get(instance_type)
    if fallback is not None:
        return Price(
            float(fallback["usd_per_hour"]),
            DEFAULT_PRICE_REGION,
            f"no price recorded for {region}: {DEFAULT_PRICE_REGION}'s",
        )
    return None


# --- the estimate -----------------------------------------------------------------------------------------------


@dataclass
class TypeEstimate:
    instance_type: str
    rate: Rate | None
    price: Price | None
    instance_count: int
    startup_minutes: float
    pairs_per_second: float | None = None  # at the file's tokens per pair
    compute_hours: float | None = None  # one file is one object: one instance classifies it
    billed_instance_hours: float | None = None
    dollars: float | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Estimate:
    file: str
    model: str
    shape: str
    region: str
    counts: FileCounts
    types: list[TypeEstimate]
    notes: list[str] = field(default_factory=list)

    def highest_dollars(self) -> float | None:
        known = [t.dollars for t in self.types if t.dollars is not None]
        return max(known) if known else None

    def to_json(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "shape": self.shape,
            "region": self.region,
            "records": self.counts.records,
            "records_with_problems": self.counts.records_with_problems,
            "pairs": self.counts.pairs,
            "words": self.counts.words,
            "tokens_estimated": round(self.counts.tokens),
            "token_method": TOKEN_RATIO,
            "instance_types": [
                {
                    **{k: v for k, v in asdict(t).items() if k not in ("rate", "price")},
                    "rate": asdict(t.rate) if t.rate else None,
                    "price": asdict(t.price) if t.price else None,
                }
                for t in self.types
            ],
            "notes": self.notes,
        }


def shape_of(model_id: str) -> tuple[str, str | None]:
    """(benchmark shape, note) of a model: from the catalogue (zstc/data/models.json), else bart-large's."""
    try:
        model = find_model(model_id)
    except ZstcError as error:
        return DEFAULT_SHAPE, f"model catalogue unreadable ({error}): bart-large's throughput used"
    if model is None or not model.shape:
        return DEFAULT_SHAPE, f"{model_id} is not in the model catalogue: bart-large's throughput used"
    return model.shape, None


def estimate(
    counts: FileCounts,
    *,
    file: str,
    model: str,
    instance_types: Sequence[str],
    region: str,
    instance_count: int = 1,
    entries: Sequence[dict[str, Any]] | None = None,
    prices: dict[str, Any] | None = None,
) -> Estimate:
    entries = list(entries if entries is not None else _read(THROUGHPUT_FILE).get("entries", []))
    prices = prices if prices is not None else _read(PRICES_FILE)
    shape, shape_note = shape_of(model)
    startup = float(prices.get("job_startup", {}).get("minutes", 0))
    result = Estimate(file=file, model=model, shape=shape, region=region, counts=counts, types=[])
    if shape_note:
        result.notes.append(shape_note)
    tokens_per_pair = counts.tokens_per_pair
    for instance_type in instance_types:
        row = TypeEstimate(
            instance_type=instance_type,
            rate=instance_rate(instance_type, shape, entries),
            price=instance_price(instance_type, region, prices),
            instance_count=instance_count,
            startup_minutes=startup,
        )
        if row.rate is None:
            row.notes.append(f"no throughput figure for {shape} on {instance_type}: not measured")
        else:
            scale = row.rate.tokens_per_pair / tokens_per_pair if tokens_per_pair else 1.0
            row.pairs_per_second = row.rate.pairs_per_second * scale
            row.compute_hours = counts.pairs / row.pairs_per_second / 3600
            # Every instance of the job is billed from start-up to the end; one file runs on one of them.
            row.billed_instance_hours = (row.compute_hours + startup / 60) * instance_count
        if row.price is None:
            row.notes.append(f"no price recorded for {instance_type}")
        elif row.price.note:
            row.notes.append(row.price.note)
        if row.billed_instance_hours is not None and row.price is not None:
            row.dollars = row.billed_instance_hours * row.price.usd_per_hour
        result.types.append(row)
    if instance_count > 1:
        result.notes.append(
            f"batch_instance_count={instance_count}: a single file is one object, classified by one instance while "
            "all are billed"
        )
    return result


# --- configuration ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Configured:
    instance_types: tuple[str, ...]
    instance_count: int
    model: str
    region: str
    source: str


def configured(context_file: Path = CDK_JSON) -> Configured:
    """The batch instance types, count, model and region of the app's configuration (``cdk.json``'s context)."""
    _app_modules()
    from stacks.config import ConfigError, Settings

    context: dict[str, Any] = {}
    source = "defaults (no cdk.json)"
    if context_file.is_file():
        context = dict(_read(context_file).get("context", {}))
        source = str(context_file)
    try:
        settings = Settings.from_context(context)
    except ConfigError as error:
        raise InputError(f"{context_file}: {error}") from None
    return Configured(
        instance_types=settings.batch_instance_types,
        instance_count=settings.batch_instance_count,
        model=settings.model_id,
        region=settings.region or DEFAULT_PRICE_REGION,
        source=source,
    )


# --- output -------------------------------------------------------------------------------------------------------


def _money(value: float | None) -> str:
    if value is None:
        return "unknown"
    return f"${value:,.2f}" if value >= 0.01 else "< $0.01"


def _hours(value: float | None) -> str:
    if value is None:
        return "?"
    return f"{value:,.2f} h" if value >= 0.01 else f"{value * 3600:,.0f} s"


def show(result: Estimate, console: Console) -> None:
    c = result.counts
    tokens = f"{c.tokens_per_pair:.1f}" if c.tokens_per_pair else "–"
    console.print(
        f"[bold]{result.file}[/]: {c.records:,} records ({c.records_with_problems:,} with problems: no pairs), "
        f"{c.pairs:,} (text, label) pairs, ~{c.tokens:,.0f} tokens ({tokens} per pair) — counted here; tokens "
        f"estimated ({TOKENS_PER_WORD} per word + {SPECIAL_TOKENS_PER_PAIR} per pair)",
        highlight=False,
    )
    table = Table(
        title=f"Estimate for {result.model} (shape {result.shape}), prices of {result.region}", title_justify="left"
    )
    for column in ("instance type", "pairs/s", "rate", "compute", "billed", "$/hour", "dollars"):
        table.add_column(column, justify="left" if column in ("instance type", "rate") else "right")
    for t in result.types:
        table.add_row(
            t.instance_type,
            f"{t.pairs_per_second:,.1f}" if t.pairs_per_second else "–",
            t.rate.source if t.rate else "not measured",
            _hours(t.compute_hours),
            _hours(t.billed_instance_hours),
            f"${t.price.usd_per_hour:.4g}" if t.price else "unknown",
            _money(t.dollars),
        )
    console.print(table)
    for t in result.types:
        if t.rate:
            console.print(f"  {t.instance_type} rate: {t.rate.basis}", highlight=False, markup=False)
        for note in t.notes:
            console.print(f"  {t.instance_type}: {note}", highlight=False, markup=False)
    if result.types:
        t = result.types[0]
        console.print(
            f"  billed = (compute + {t.startup_minutes:.0f} min start-up, estimated) × {t.instance_count} instance(s)",
            highlight=False,
            markup=False,
        )
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False, markup=False)
    console.print(
        "  Counted here: records, pairs, words. Measured here: only rows marked 'measured' (throughput.json, with "
        "machine and date). Published, not verified here: prices (zstc/data/prices.json). Estimated: tokens, "
        "start-up time, core scaling. The first type is used when its quota allows; later ones only on fallback.",
        highlight=False,
        markup=False,
    )


# --- confirmation before `zstc submit` uploads ---------------------------------------------------------------------


def confirm_estimate(
    result: Estimate,
    *,
    yes: bool,
    console: Console,
    threshold_usd: float | None = None,
    ask: Callable[[str], bool] | None = None,
) -> None:
    """Print the estimate; above ``threshold_usd`` (default :data:`CONFIRM_ABOVE_USD`) ask to continue (``yes``
    skips the question). Raises to stop."""
    show(result, console)
    threshold_usd = CONFIRM_ABOVE_USD if threshold_usd is None else threshold_usd
    highest = result.highest_dollars()
    if highest is None or highest <= threshold_usd or yes:
        return
    question = f"The estimate reaches {_money(highest)} (above ${threshold_usd:,.2f}). Upload and start the job?"
    if ask is None and not sys.stdin.isatty():
        raise ZstcError(
            f"the estimate reaches {_money(highest)} (above ${threshold_usd:,.2f}) and there is no terminal to "
            "confirm it: pass --yes to submit anyway"
        )
    confirmed = (ask or (lambda q: typer.confirm(q, default=False, err=True)))(question)
    if not confirmed:
        raise ZstcError("not submitted (the estimate was not confirmed); pass --yes to skip the question", exit_code=1)


def confirm_before_upload(
    *, yes: bool, console: Console, threshold_usd: float | None = None, ask: Callable[[str], bool] | None = None
) -> Callable[[inputs.PreparedInput, Any], None]:
    """The ``before_upload`` check of ``zstc submit``: the estimate for the configured types, confirmed if costly.

    The instance types, count and model are those of ``cdk.json`` (the deployment's configuration in this checkout);
    the prices those of the stack's region.
    """

    def check(prepared: inputs.PreparedInput, stack: Any) -> None:
        try:
            config = configured()
        except ZstcError as error:  # no checkout (or a broken cdk.json): submit without an estimate, saying why
            console.print(f"No cost estimate: {error}", highlight=False, markup=False)
            return
        region = getattr(stack, "region", None) or config.region
        result = estimate(
            count_prepared(prepared),
            file=prepared.path.name,
            model=config.model,
            instance_types=config.instance_types,
            region=region,
            instance_count=config.instance_count,
        )
        result.notes.append(f"instance types and model as configured in {config.source}")
        confirm_estimate(result, yes=yes, console=console, threshold_usd=threshold_usd, ask=ask)

    return check


# --- the README's cost table --------------------------------------------------------------------------------------


def cost_rows(
    *, entries: Sequence[dict[str, Any]] | None = None, prices: dict[str, Any] | None = None
) -> list[dict[str, Any]]:
    """Per instance type (priced in us-east-1) and model shape with a figure: records/hour and $/million records at
    :data:`TABLE_LABELS` labels, with the sources."""
    entries = list(entries if entries is not None else _read(THROUGHPUT_FILE).get("entries", []))
    prices = prices if prices is not None else _read(PRICES_FILE)
    from zstc.models import catalogue

    shapes: dict[str, list[str]] = {}
    for model in catalogue():
        if model.shape:
            shapes.setdefault(model.shape, []).append(model.id)
    rows = []
    for instance_type in prices.get("regions", {}).get(DEFAULT_PRICE_REGION, {}):
        price = instance_price(instance_type, DEFAULT_PRICE_REGION, prices)
        for shape, models in shapes.items():
            rate = instance_rate(instance_type, shape, entries)
            if rate is None and shape != DEFAULT_SHAPE:
                continue
            records_per_hour = rate.pairs_per_second / TABLE_LABELS * 3600 if rate else None
            dollars = price.usd_per_hour / records_per_hour * 1e6 if (price and records_per_hour) else None
            rows.append(
                {
                    "instance_type": instance_type,
                    "shape": shape,
                    "models": models,
                    "records_per_hour": records_per_hour,
                    "usd_per_million": dollars,
                    "usd_per_hour": price.usd_per_hour if price else None,
                    "rate_source": ("measured here" if rate.source == "measured" else rate.source)
                    if rate
                    else "not measured",
                    "rate_basis": rate.basis if rate else "",
                }
            )
    return rows


def _usd(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def cost_table_markdown(rows: Sequence[dict[str, Any]] | None = None) -> str:
    """The README's cost table and the recommendation that follows from it (same data as ``zstc estimate``)."""
    rows = list(rows if rows is not None else cost_rows())
    lines = [
        f"| instance type | model (shape) | records / hour at {TABLE_LABELS} labels | $ / million records at "
        f"{TABLE_LABELS} labels | throughput is | $ / hour (us-east-1) |",
        "|---|---|---:|---:|---|---:|",
    ]
    for r in rows:
        rph = f"{r['records_per_hour']:,.0f}" if r["records_per_hour"] else "not measured"
        models = ", ".join(r["models"][:2]) + (" …" if len(r["models"]) > 2 else "")
        lines.append(
            f"| `{r['instance_type']}` | {models} ({r['shape']}) | {rph} | {_usd(r['usd_per_million'])} | "
            f"{r['rate_source']} | {r['usd_per_hour']} (published, not verified) |"
        )
    known = [r for r in rows if r["usd_per_million"]]
    cpu = [r for r in known if r["instance_type"].split(".")[1] not in ACCELERATORS]
    default_cpu = [r for r in cpu if r["shape"] == DEFAULT_SHAPE]
    default_gpu = [r for r in known if r["shape"] == DEFAULT_SHAPE and r not in cpu]
    if default_cpu and default_gpu:
        best_cpu = min(default_cpu, key=lambda r: r["usd_per_million"])
        best_gpu = min(default_gpu, key=lambda r: r["usd_per_million"])
        ratio = best_cpu["usd_per_million"] / best_gpu["usd_per_million"]
        text = (
            f"**Recommendation**: `-c batch_instance_types={best_gpu['instance_type']},{best_cpu['instance_type']}`. "
            f"For the default model ({DEFAULT_SHAPE}), `{best_gpu['instance_type']}` costs about {ratio:.0f}× less per "
            f"record than the best CPU type (`{best_cpu['instance_type']}`, {best_cpu['rate_source']}), but its "
            f"figure is {best_gpu['rate_source']}, not measured, and new accounts often have a quota of 0 for GPU "
            "transform instances: with the CPU type second, a refused GPU job runs on CPU instead of failing. Keep the "
            "default (`ml.m5.xlarge` only) when a GPU quota increase is not an option."
        )
        cheapest = min(cpu, key=lambda r: r["usd_per_million"])
        if cheapest["shape"] != DEFAULT_SHAPE:
            text += (
                f" On CPU the model matters too: {cheapest['models'][0]} ({cheapest['shape']}) costs "
                f"${_usd(cheapest['usd_per_million'])} per million records on `{cheapest['instance_type']}` "
                f"({cheapest['rate_source']}), {best_cpu['usd_per_million'] / cheapest['usd_per_million']:.1f}× less "
                f'than {DEFAULT_SHAPE}; its accuracy differs (see "Choosing a model").'
            )
        lines += ["", text]
    return "\n".join(lines)


# --- the command ----------------------------------------------------------------------------------------------------


def estimate_command(
    file: Annotated[Path, typer.Argument(help="A .jsonl file (one request per line) or a .csv file.")],
    labels: Annotated[
        str | None, typer.Option("--labels", "-l", help='Candidate labels, comma-separated: "Health,Career".')
    ] = None,
    text_column: Annotated[str, typer.Option(help="CSV column holding the text.")] = "text",
    label_column: Annotated[
        str | None, typer.Option(help="CSV column holding each row's candidate labels, comma-separated.")
    ] = None,
    template: Annotated[str | None, typer.Option(help="Hypothesis template with {} for the label.")] = None,
    encoding: Annotated[str, typer.Option(help="Text encoding of the file.")] = "utf-8",
    file_format: Annotated[str | None, typer.Option("--format", help="jsonl or csv (default: from the name).")] = None,
    instance_types: Annotated[
        str | None,
        typer.Option(help="Instance types, most preferred first (default: batch_instance_types of cdk.json)."),
    ] = None,
    model: Annotated[str | None, typer.Option(help="Model id (default: model_id of cdk.json).")] = None,
    region: Annotated[
        str | None, typer.Option(help="Region whose prices apply (default: cdk.json's, us-east-1).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the estimate as JSON.")] = False,
) -> None:
    """Estimate instance-hours and dollars of a file on the batch path, before submitting it (no AWS call)."""
    if file_format not in (None, "jsonl", "csv"):
        raise InputError(f"--format {file_format!r} is not supported: use jsonl or csv.")
    options = inputs.Options(
        text_column=text_column,
        labels=inputs.parse_labels(labels),
        label_column=label_column,
        template=template,
        encoding=encoding,
        format=file_format,  # type: ignore[arg-type]
    )
    config = configured()
    types = config.instance_types
    if instance_types:
        _app_modules()
        from stacks.config import ConfigError, Settings

        try:
            types = Settings.from_context({"batch_instance_types": instance_types}).batch_instance_types
        except ConfigError as error:
            raise InputError(str(error).replace("-c batch_instance_types", "--instance-types")) from None
    prepared = inputs.prepare(file, options)
    try:
        result = estimate(
            count_prepared(prepared),
            file=file.name,
            model=model or config.model,
            instance_types=types,
            region=region or config.region,
            instance_count=config.instance_count,
        )
    finally:
        prepared.close()
    given = {"instance types": bool(instance_types), "model": bool(model), "region": bool(region)}
    from_config = [name for name, was_given in given.items() if not was_given] + ["instance count"]
    result.notes.append(f"{', '.join(from_config)} as configured in {config.source}")
    if as_json:
        Console(soft_wrap=True).print_json(data=result.to_json())
        return
    show(result, Console(soft_wrap=True))


if __name__ == "__main__":  # `python -m zstc.estimate` prints the README's cost table
    print(cost_table_markdown())
