"""The model catalogue (zstc/data/models.json), the measured table it is costed from, and `zstc models`."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stacks.config import Settings
from zstc import models
from zstc.cli import app
from zstc.models import Throughput
from zstc_contract import rates

REPO = Path(__file__).resolve().parents[3]
REQUIRED = {
    "facebook/bart-large-mnli",
    "MoritzLaurer/deberta-v3-large-zeroshot-v2.0",
    "MoritzLaurer/deberta-v3-base-zeroshot-v2.0",
    "MoritzLaurer/mDeBERTa-v3-base-xnli-multilingual-nli-2mil7",
    "MoritzLaurer/bge-m3-zeroshot-v2.0",
    "joeddav/xlm-roberta-large-xnli",
    "valhalla/distilbart-mnli-12-1",
    "cross-encoder/nli-deberta-v3-base",
}


def benchmark_shapes() -> dict:
    spec = importlib.util.spec_from_file_location("model_shapes", REPO / "benchmarks" / "model_shapes.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("model_shapes", module)  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.SHAPES


def entry(shape: str, pps: float, *, handler: str = "zstc", run: str | None = None, date: str = "2026-12-01"):
    return Throughput(
        shape=shape,
        hardware="cpu",
        dtype="float32",
        handler=handler,
        pairs_per_second=pps,
        tokens_per_pair=40.0,
        labels=10,
        source="measured",
        machine="test machine; details",
        date=date,
        command="make bench-handler",
        cores=2,
        run=run,
    )


# --- the catalogue's content ----------------------------------------------------------------------------------------


def test_the_catalogue_lists_the_recommended_models_with_the_deployed_default():
    catalogue = models.catalogue()

    assert {m.id for m in catalogue} >= REQUIRED
    (default,) = [m for m in catalogue if m.default]
    cdk_context = json.loads((REPO / "cdk.json").read_text())["context"]
    assert default.id == Settings().model_id == cdk_context["model_id"]


def test_every_catalogued_architecture_is_one_the_handler_supports():
    supported = set(models.supported_model_types())

    assert {m.model_type for m in models.catalogue()} <= supported


def test_every_published_fact_names_its_source():
    for model in models.catalogue():
        for fact in ("model_type", "languages", "parameters", "license"):
            assert getattr(model, fact), (model.id, fact)
            assert model.sources.get(fact), f"{model.id}: no source for {fact}"


def test_every_model_shape_is_a_benchmark_shape():
    shapes = benchmark_shapes()

    for model in models.catalogue():
        assert model.shape in shapes, model.id
        assert shapes[model.shape].model_type == model.model_type, model.id


def test_the_catalogue_pins_no_revision():
    # Revisions come from `zstc models pin` (the Hub, checked); the only pinned one is the default's, in stacks/config.
    # (Source URLs may name the commit a fact was read at: that is a citation, not a deployable revision.)
    for model in json.loads(models.CATALOGUE_FILE.read_text())["models"]:
        facts = {k: v for k, v in model.items() if k != "sources"}
        assert not any("revision" in key for key in facts), model["id"]
        assert not re.search(r"\b[0-9a-f]{40}\b", json.dumps(facts)), model["id"]


def test_a_catalogue_with_two_defaults_is_refused(tmp_path):
    data = json.loads(models.CATALOGUE_FILE.read_text())
    data["models"][1]["default"] = True
    path = tmp_path / "models.json"
    path.write_text(json.dumps(data))

    with pytest.raises(models.ZstcError, match="exactly one model as default"):
        models.catalogue(path)


# --- relative cost from the measured table --------------------------------------------------------------------------


def test_relative_cost_is_the_ratio_of_pair_rates_to_bart_large():
    rows = [entry("bart-large", 6.0), entry("deberta-v3-base", 18.0)]

    assert models.relative_cost("deberta-v3-base", entries=rows) == pytest.approx(1 / 3)
    assert models.relative_cost("bart-large", entries=rows) == pytest.approx(1.0)


def test_relative_cost_prefers_the_reference_of_the_same_run():
    rows = [
        entry("bart-large", 10.0, run="old", date="2026-11-01"),
        entry("bart-large", 4.0, run="new", date="2026-12-01"),
        entry("xlm-roberta-large", 5.0, run="old", date="2026-11-01"),
    ]

    assert models.relative_cost("xlm-roberta-large", entries=rows) == pytest.approx(2.0)


def test_the_forward_cpu_time_basis_wins_over_the_serving_stack_rates():
    # The serving-stack rates of a shared machine are distorted by other load; in-process CPU time is not
    rows = [
        entry("bart-large", 5.0),
        entry("deberta-v3-base", 2.0),  # the serving stack says 2.5x bart-large's time per pair ...
        replace(entry("bart-large", 2.0, handler="forward", run="f"), pairs_per_cpu_second=3.0),
        replace(entry("deberta-v3-base", 5.0, handler="forward", run="f"), pairs_per_cpu_second=9.0),
    ]

    assert models.relative_cost("deberta-v3-base", entries=rows) == pytest.approx(3.0 / 9.0)  # ... CPU time: 1/3
    assert models.relative_cost("deberta-v3-base", handler="zstc", entries=rows) == pytest.approx(2.5)


def test_a_shape_without_a_forward_figure_falls_back_to_the_serving_stack():
    rows = [
        entry("bart-large", 6.0),
        entry("xlm-roberta-large", 4.0),
        replace(entry("bart-large", 2.0, handler="forward"), pairs_per_cpu_second=3.0),
    ]

    assert models.relative_cost("xlm-roberta-large", entries=rows) == pytest.approx(1.5)


def test_unmeasured_shapes_stock_rows_and_other_hardware_give_no_cost():
    rows = [entry("bart-large", 6.0), entry("deberta-v3-large", 3.0, handler="stock")]

    assert models.relative_cost("deberta-v3-large", entries=rows) is None
    assert models.relative_cost(None, entries=rows) is None
    assert models.relative_cost("bart-large", hardware="gpu", entries=rows) is None


def test_the_existing_throughput_entries_keep_their_fields():
    # Other readers (cost estimates, batch sizing) read these names: they may grow, never change
    data = json.loads(rates.THROUGHPUT_FILE.read_text())
    required = {"shape", "hardware", "dtype", "handler", "pairs_per_second", "tokens_per_pair", "labels", "source"}
    for row in data["entries"]:
        assert required | {"machine", "date"} <= set(row), row
        if row["source"] == "measured":  # a measurement says where, when and how to repeat it
            assert {"cores", "command"} <= set(row) and row["command"], row


# --- the README shows the data --------------------------------------------------------------------------------------


def readme_block(name: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- {name}:start[^>]*-->\n(.*?)\n<!-- {name}:end -->", text, re.S)
    assert match, f"README.md has no {name} block"
    return match.group(1)


def test_the_readme_catalogue_table_is_the_data():
    assert readme_block("models-table") == models.catalogue_markdown()


def test_the_readme_measured_table_is_the_data():
    assert readme_block("throughput-table") == models.throughput_markdown()


# --- the command ----------------------------------------------------------------------------------------------------


def test_zstc_models_lists_every_model_with_its_cost():
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "250"})

    assert result.exit_code == 0, result.output
    for model_id in REQUIRED:
        assert model_id in result.output
    assert "1.00×" in result.output  # the default, against itself


def test_zstc_models_json_carries_the_computed_cost():
    result = CliRunner().invoke(app, ["models", "--json"])

    rows = {row["id"]: row for row in json.loads(result.output)}
    assert rows["facebook/bart-large-mnli"]["relative_cost_per_pair"] == pytest.approx(1.0)
    assert set(rows) == {m.id for m in models.catalogue()}


def test_zstc_models_markdown_prints_the_readme_tables():
    result = CliRunner().invoke(app, ["models", "--markdown"])

    assert models.catalogue_markdown() in result.output
    assert models.throughput_markdown() in result.output


# --- cdk.json ---------------------------------------------------------------------------------------------------------


def test_writing_the_same_values_leaves_cdk_json_byte_identical(tmp_path):
    cdk_json = tmp_path / "cdk.json"
    shutil.copy(REPO / "cdk.json", cdk_json)
    original = cdk_json.read_bytes()
    context = json.loads(original)["context"]

    assert models.write_cdk_context(cdk_json, "acme/other", "a" * 40) is True
    assert models.write_cdk_context(cdk_json, context["model_id"], context["model_revision"]) is True

    assert cdk_json.read_bytes() == original  # indentation, key order and the trailing newline kept
    assert models.write_cdk_context(cdk_json, context["model_id"], context["model_revision"]) is False


@pytest.mark.parametrize(("content", "message"), [("{", "not valid JSON"), ('{"app": "x"}', 'no "context" object')])
def test_a_broken_cdk_json_is_refused_naming_it(tmp_path, content, message):
    cdk_json = tmp_path / "cdk.json"
    cdk_json.write_text(content)

    with pytest.raises(models.InputError, match=message):
        models.write_cdk_context(cdk_json, "acme/m", "a" * 40)
    assert cdk_json.read_text() == content


# --- packaging --------------------------------------------------------------------------------------------------------


def test_the_wheel_ships_the_catalogue_and_the_throughput_table(tmp_path):
    # Built from a copy: an in-tree build would leave build/ and *.egg-info in the shared checkout
    source = tmp_path / "source"
    shutil.copytree(REPO / "zstc", source / "zstc", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", source)
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q", "-w", tmp_path],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    assert {"zstc/data/models.json", "zstc/data/throughput.json"} <= set(names)
