"""The model catalogue and ``zstc models``: which NLI model to deploy, what a (text, label) pair costs, and pinning.

One place for each fact:

- ``zstc/data/models.json``: the recommended models, with architecture, languages, parameters and license as
  published (each with its source) and the benchmark ``shape`` whose pair rate applies;
- ``zstc/data/throughput.json``: measured pair rates per shape, hardware, dtype and handler (``make bench-handler
  BENCH_ARGS=--write`` updates it); the relative cost of a model is computed from it, never stored;
- ``model/code/supported_architectures.json``: the architectures the handler supports (the handler's list);
- the checks a revision must pass before it is deployed: the model importer's ``check_revision``
  (``functions/model_importer/service.py``, its rules in ``logic.py``), which ``zstc models pin`` runs on the user's
  machine, so a model the importer would refuse at deploy time is refused here first, with the same message.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from zstc.errors import InputError, ZstcError
from zstc_contract.rates import CATALOGUE_FILE, DEFAULT_SHAPE, THROUGHPUT_FILE

REPO: Final = Path(__file__).resolve().parents[1]
SUPPORTED_ARCHITECTURES_FILE: Final = REPO / "model" / "code" / "supported_architectures.json"
REFERENCE_SHAPE: Final = DEFAULT_SHAPE  # the default model's shape: relative costs are against it
FORWARD_HANDLER: Final = (
    "forward"  # throughput.json entries of in-process forward passes (bench-handler --forward-only)
)
DEFAULT_REVISION: Final = "main"
HF_ENDPOINT_VARIABLE: Final = "HF_ENDPOINT"  # the Hub's URL, as huggingface_hub reads it (a mirror, or the tests')


# --- the catalogue ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CatalogueModel:
    id: str
    model_type: str
    languages: str
    parameters: str
    license: str
    shape: str | None
    notes: str = ""
    default: bool = False
    sources: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Throughput:
    """One measured (or published) pair rate: see zstc/data/throughput.json's description."""

    shape: str
    hardware: str
    dtype: str
    handler: str
    pairs_per_second: float
    tokens_per_pair: float | None
    labels: int | None
    source: str
    machine: str
    date: str
    command: str
    cores: int | None = None
    records: int | None = None
    run: str | None = None  # entries written by one benchmark run share it: their ratios are the reliable ones
    pairs_per_cpu_second: float | None = None  # per CPU-second of the server (less sensitive to a shared machine)

    @property
    def ms_per_pair(self) -> float:
        return 1000.0 / self.pairs_per_second

    @property
    def records_per_second(self) -> float | None:
        return self.pairs_per_second / self.labels if self.labels else None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ZstcError(
            f"{path} is unreadable ({error}): restore it from the repository (git checkout {path.name})"
        ) from None
    if not isinstance(data, dict):
        raise ZstcError(f"{path} must hold a JSON object")
    return data


def catalogue(path: Path = CATALOGUE_FILE) -> list[CatalogueModel]:
    """The recommended models, default first as listed; raises if the file breaks its own rules."""
    entries = _read_json(path).get("models")
    if not isinstance(entries, list) or not entries:
        raise ZstcError(f"{path} has no 'models' list")
    known = set(CatalogueModel.__dataclass_fields__)
    models = []
    for entry in entries:
        unknown = set(entry) - known
        if unknown:
            raise ZstcError(f"{path}: model {entry.get('id')!r} has unknown keys {sorted(unknown)}")
        models.append(CatalogueModel(**entry))
    defaults = [m.id for m in models if m.default]
    if len(defaults) != 1:
        raise ZstcError(f"{path} must mark exactly one model as default, found {defaults or 'none'}")
    return models


def find_model(model_id: str, models: Iterable[CatalogueModel] | None = None) -> CatalogueModel | None:
    return next((m for m in (models if models is not None else catalogue()) if m.id == model_id), None)


def throughput(path: Path = THROUGHPUT_FILE) -> list[Throughput]:
    entries = _read_json(path).get("entries", [])
    known = set(Throughput.__dataclass_fields__)
    return [Throughput(**{k: v for k, v in entry.items() if k in known}) for entry in entries]


def pair_rate(
    shape: str,
    *,
    hardware: str = "cpu",
    dtype: str = "float32",
    handler: str = "zstc",
    run: str | None = None,
    entries: Sequence[Throughput] | None = None,
) -> Throughput | None:
    """The newest measured rate of ``shape`` (of benchmark run ``run`` when given)."""
    rows = [
        e
        for e in (entries if entries is not None else throughput())
        if e.shape == shape
        and e.hardware == hardware
        and e.dtype == dtype
        and e.handler == handler
        and e.source == "measured"
        and (run is None or e.run == run)
    ]
    return max(rows, key=lambda e: (e.date, e.run or ""), default=None)


def _rate(entry: Throughput, per_cpu_second: bool) -> float:
    return (entry.pairs_per_cpu_second or entry.pairs_per_second) if per_cpu_second else entry.pairs_per_second


def _ratio_to_reference(
    shape: str, *, hardware: str, dtype: str, handler: str, per_cpu_second: bool, rows: Sequence[Throughput]
) -> float | None:
    target = pair_rate(shape, hardware=hardware, dtype=dtype, handler=handler, entries=rows)
    if target is None:
        return None
    reference = None
    if target.run:
        reference = pair_rate(
            REFERENCE_SHAPE, hardware=hardware, dtype=dtype, handler=handler, run=target.run, entries=rows
        )
    reference = reference or pair_rate(REFERENCE_SHAPE, hardware=hardware, dtype=dtype, handler=handler, entries=rows)
    if reference is None:
        return None
    return _rate(reference, per_cpu_second) / _rate(target, per_cpu_second)


def relative_cost(
    shape: str | None,
    *,
    hardware: str = "cpu",
    dtype: str = "float32",
    handler: str | None = None,
    entries: Sequence[Throughput] | None = None,
) -> float | None:
    """Time per pair of ``shape`` over that of bart-large (the default model), from the measured table.

    By default the basis is the ``forward`` entries (``make bench-handler BENCH_ARGS="--forward-only --write"``:
    the model's forward passes in one process, one thread, the shapes interleaved, CPU time per pair), which a
    shared machine distorts least; without them, our handler's serving-stack pair rates (``handler="zstc"``).
    ``handler`` picks one basis explicitly (wall-time rates). Both rates come from the same benchmark run when the
    table has one with both; otherwise each shape's newest. None when ``shape`` was not measured.
    """
    if shape is None:
        return None
    rows = entries if entries is not None else throughput()
    if handler is not None:
        return _ratio_to_reference(
            shape, hardware=hardware, dtype=dtype, handler=handler, per_cpu_second=False, rows=rows
        )
    forward = _ratio_to_reference(
        shape, hardware=hardware, dtype=dtype, handler=FORWARD_HANDLER, per_cpu_second=True, rows=rows
    )
    if forward is not None:
        return forward
    return _ratio_to_reference(shape, hardware=hardware, dtype=dtype, handler="zstc", per_cpu_second=False, rows=rows)


def supported_model_types(path: Path = SUPPORTED_ARCHITECTURES_FILE) -> tuple[str, ...]:
    """The ``config.json`` ``model_type`` values the handler supports (``model/code/supported_architectures.json``)."""
    if not path.is_file():
        raise ZstcError(
            f"{path} not found: `zstc models pin` reads the handler's supported architectures from a checkout of "
            "the repository (run it from there, with the package installed by `make install`)"
        )
    types = _read_json(path).get("model_types")
    if not isinstance(types, list) or not types:
        raise ZstcError(f"{path} has no 'model_types' list")
    return tuple(sorted({str(t) for t in types}))


# --- tables -------------------------------------------------------------------------------------------------------


def _cost_text(cost: float | None) -> str:
    return f"{cost:.2f}×" if cost is not None else "not measured"


def catalogue_markdown(
    models: Sequence[CatalogueModel] | None = None, entries: Sequence[Throughput] | None = None
) -> str:
    """The README's catalogue table (a test keeps the README equal to this)."""
    models = models if models is not None else catalogue()
    rows = entries if entries is not None else throughput()
    lines = [
        "| model | architecture | languages | parameters | license | cost per pair vs default (CPU) |",
        "|---|---|---|---|---|---|",
    ]
    for m in models:
        name = f"`{m.id}` (default)" if m.default else f"`{m.id}`"
        cost = _cost_text(relative_cost(m.shape, entries=rows))
        lines.append(f"| {name} | {m.model_type} | {m.languages} | {m.parameters} | {m.license} | {cost} |")
    return "\n".join(lines)


def throughput_markdown(entries: Sequence[Throughput] | None = None) -> str:
    """The README's measured table: each shape's newest CPU float32 rates, stock handler and ours side by side in the
    real serving stack, the forward-pass cross-check, and the relative cost :func:`relative_cost` computes."""
    rows = entries if entries is not None else throughput()
    measured = [e for e in rows if e.source == "measured" and e.hardware == "cpu" and e.dtype == "float32"]
    shapes = sorted({e.shape for e in measured}, key=lambda s: (s != REFERENCE_SHAPE, s))
    lines = [
        "| shape | tokens / pair | stock rec/s | ours rec/s | ours ms / pair | forward CPU-ms / pair (1 thread) | "
        "cost per pair vs bart-large | machine | date |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for shape in shapes:
        ours = pair_rate(shape, entries=rows)
        forward = pair_rate(shape, handler=FORWARD_HANDLER, entries=rows)
        # The stock handler's rate of the same run as ours when there is one (side by side), else its newest.
        stock = (pair_rate(shape, handler="stock", run=ours.run, entries=rows) if ours and ours.run else None) or (
            pair_rate(shape, handler="stock", entries=rows)
        )
        newest = ours or forward
        if newest is None:
            continue
        tokens = f"{newest.tokens_per_pair:.1f}" if newest.tokens_per_pair else "–"
        lines.append(
            f"| {shape} | {tokens} | "
            f"{f'{stock.records_per_second:.2f}' if stock and stock.records_per_second else '–'} | "
            f"{f'{ours.records_per_second:.2f}' if ours and ours.records_per_second else '–'} | "
            f"{f'{ours.ms_per_pair:.0f}' if ours else '–'} | "
            f"{f'{1000 / _rate(forward, True):.0f}' if forward else '–'} | "
            f"{_cost_text(relative_cost(shape, entries=rows))} | {newest.machine.split(';')[0]} | "
            f"{newest.date} |"
        )
    return "\n".join(lines)


# --- pinning a revision -------------------------------------------------------------------------------------------


def importer() -> tuple[ModuleType, ModuleType]:
    """The model importer's rules (``logic``) and its Hub client (``service``), both standard library only,
    imported from the repository checkout."""
    try:
        from functions.model_importer import logic, service
    except ImportError as error:
        raise ZstcError(
            f"the model importer's code (functions/model_importer/) cannot be imported ({error}): `zstc models pin` "
            "runs the importer's own checks, from a checkout of the repository after `make install`"
        ) from error
    return logic, service


@dataclass(frozen=True)
class Pinned:
    model_id: str
    revision: str  # as asked (a branch, tag or commit)
    sha: str  # the commit it resolved to
    model_type: str
    labels: tuple[str, ...]
    files: tuple[str, ...]
    weights_bytes: int

    @property
    def context_arguments(self) -> str:
        return f"-c model_id={self.model_id} -c model_revision={self.sha}"


def _advice(logic: ModuleType, token_env: str | None) -> Any:
    holder = f"the token in ${token_env}" if token_env else "the token"
    return logic.Advice(
        holder=holder,
        authenticate="export a read token (huggingface.co → Settings → Access Tokens) and pass --token-env HF_TOKEN",
        private="if it is private, export a read token and pass --token-env HF_TOKEN",
        grant=f"or put a token with read access in ${token_env or 'HF_TOKEN'}",
        retry="retry later",
        unreachable=f"Check your internet connection and proxy (or {HF_ENDPOINT_VARIABLE})",
        revision="Pass --revision with a branch, tag or commit of the model (the model page: Files and versions)",
    )


def pin(
    model_id: str,
    revision: str = DEFAULT_REVISION,
    *,
    token_env: str | None = None,
    endpoint: str | None = None,
) -> Pinned:
    """Resolve ``revision`` of ``model_id`` to a commit on the Hub and run the importer's checks on it."""
    logic, service = importer()
    if not logic.MODEL_ID.match(model_id):
        raise InputError(f"Invalid model id {model_id!r}: expected owner/name, e.g. facebook/bart-large-mnli.")
    if not revision.strip():
        raise InputError("--revision is empty: pass a branch, tag or commit, e.g. --revision main.")
    token = None
    if token_env:
        token = os.environ.get(token_env, "").strip()
        if not token:
            raise InputError(
                f"Environment variable {token_env} is not set or empty: export your Hugging Face token in it "
                f"(export {token_env}=hf_…) or leave out --token-env for public models."
            )
    hub = service.HubClient(
        endpoint or os.environ.get(HF_ENDPOINT_VARIABLE) or logic.DEFAULT_HUB,
        token=token,
        advice=_advice(logic, token_env),
    )
    try:
        checked = service.check_revision(hub, model_id, revision, supported_model_types=supported_model_types())
    except logic.HubUnreachable as failure:
        raise ZstcError(f"{failure}.") from None
    except logic.ImportFailure as failure:
        raise InputError(f"{failure}.") from None
    if not logic.HEX40.match(checked.sha):
        raise ZstcError(f"The Hub answered revision {revision!r} of '{model_id}' with no commit id ({checked.sha!r}).")
    id2label = checked.config.get("id2label") or {}
    labels = tuple(str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k) if str(k).isdigit() else 0))
    return Pinned(
        model_id=model_id,
        revision=revision,
        sha=checked.sha,
        model_type=checked.model_type,
        labels=labels,
        files=tuple(f.path for f in checked.files),
        weights_bytes=checked.weights_bytes,
    )


_INDENT = re.compile(r"^\{\s*\n([ \t]+)\S")


def write_cdk_context(path: Path, model_id: str, revision: str) -> bool:
    """Set ``context.model_id`` and ``context.model_revision`` in ``path`` (cdk.json), nothing else.

    The file is rewritten with its own indentation and key order (JSON cannot keep more, e.g. comments, and cdk.json
    has none); written to a temporary file and renamed, so it is never half-written. True if anything changed.
    """
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except OSError as error:
        raise InputError(
            f"Cannot read {path} ({error.strerror}): pass --cdk-json PATH to the project's cdk.json."
        ) from None
    except ValueError as error:
        raise InputError(f"{path} is not valid JSON ({error}): fix it first, or pass --cdk-json PATH.") from None
    context = data.get("context") if isinstance(data, dict) else None
    if not isinstance(context, dict):
        raise InputError(f'{path} has no "context" object: is it the project\'s cdk.json?')
    if context.get("model_id") == model_id and context.get("model_revision") == revision:
        return False
    context["model_id"], context["model_revision"] = model_id, revision
    match = _INDENT.match(text)
    indent = match.group(1) if match else 2
    new_text = json.dumps(data, indent=indent, ensure_ascii=False) + ("\n" if text.endswith("\n") else "")
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(new_text)
    os.replace(handle.name, path)
    return True


# --- the command line: `zstc models` ------------------------------------------------------------------------------

app = typer.Typer(
    name="models",
    help="Recommended NLI models (architecture, languages, license, cost per pair) and pinning one to deploy.",
    invoke_without_command=True,
    no_args_is_help=False,
    rich_markup_mode="rich",
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


@app.callback()
def list_models(
    ctx: typer.Context,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the tables as Markdown (the README's).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the catalogue with computed costs as JSON.")] = False,
) -> None:
    """List the recommended NLI models (zstc/data/models.json) with the measured cost per pair."""
    if ctx.invoked_subcommand is not None:
        return
    models, rows = catalogue(), throughput()
    if as_json:
        out.print_json(
            data=[{**m.__dict__, "relative_cost_per_pair": relative_cost(m.shape, entries=rows)} for m in models]
        )
        return
    if markdown:
        out.print(catalogue_markdown(models, rows), markup=False, highlight=False)
        out.print()
        out.print(throughput_markdown(rows), markup=False, highlight=False)
        return
    table = Table(title="NLI models for zero-shot classification", title_justify="left")
    table.add_column("model", no_wrap=True)
    for column in ("architecture", "languages", "parameters", "license"):
        table.add_column(column)
    table.add_column("cost / pair", justify="right")
    for m in models:
        table.add_row(
            f"{m.id} [bold](default)[/]" if m.default else m.id,
            m.model_type,
            m.languages,
            m.parameters,
            m.license,
            _cost_text(relative_cost(m.shape, entries=rows)),
        )
    out.print(table)
    basis = pair_rate(REFERENCE_SHAPE, handler=FORWARD_HANDLER, entries=rows) or pair_rate(
        REFERENCE_SHAPE, entries=rows
    )
    if basis is not None:
        how = (
            "forward passes in one process, one thread, CPU time"
            if basis.handler == FORWARD_HANDLER
            else "our handler in the real serving stack"
        )
        out.print(
            f"Cost per (text, label) pair relative to {REFERENCE_SHAPE} ({how}; float32, random weights of each "
            f"architecture's published dimensions), measured by `{basis.command}` on {basis.machine.split(';')[0]} "
            f"({basis.date}). Pair rates per handler: zstc/data/throughput.json.",
            highlight=False,
        )
    out.print(
        "Facts as published, each with its source in zstc/data/models.json: check the model card. "
        "Deploy one: zstc models pin MODEL_ID",
        highlight=False,
    )


@app.command(name="pin")
def pin_command(
    model_id: Annotated[
        str, typer.Argument(help="Hugging Face model id, e.g. MoritzLaurer/deberta-v3-base-zeroshot-v2.0.")
    ],
    revision: Annotated[
        str, typer.Option("--revision", help="Branch, tag or commit to pin (default: main).")
    ] = DEFAULT_REVISION,
    token_env: Annotated[
        str | None,
        typer.Option(
            "--token-env", metavar="NAME", help="Environment variable holding a Hub token (gated or private models)."
        ),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Also set model_id and model_revision in cdk.json's context.")
    ] = False,
    cdk_json: Annotated[Path, typer.Option("--cdk-json", help="The cdk.json --write updates.")] = Path("cdk.json"),
) -> None:
    """Resolve MODEL_ID's revision to a commit and check it can be deployed; print the context to deploy it."""
    pinned = pin(model_id, revision, token_env=token_env)
    known = find_model(model_id)
    out.print(
        f"[green]✓[/] {pinned.model_id} @ {pinned.revision} = commit {pinned.sha}: {pinned.model_type} (supported), "
        f"labels {', '.join(pinned.labels) or 'none'}, {pinned.weights_bytes / 1e6:,.0f} MB of safetensors, "
        f"tokenizer and config present" + ("" if known else " (not in the catalogue: `zstc models` lists tested ones)"),
        highlight=False,
    )
    out.print("Deploy it with:", highlight=False)
    out.print(f"  cdk deploy {pinned.context_arguments}", markup=False, highlight=False)
    if write:
        changed = write_cdk_context(cdk_json, pinned.model_id, pinned.sha)
        out.print(
            f"{cdk_json}: model_id and model_revision {'updated' if changed else 'already set'}; "
            "`cdk deploy` uses them.",
            highlight=False,
        )
