"""``pip install .`` gives a working ``zstc``: the client (zstc, zstc_contract) imports only the standard library, its
declared dependencies and itself; the offline emulation and the checkout's other packages only lazily, inside the
commands that run from a checkout."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
CLIENT_PACKAGES = ("zstc", "zstc_contract")
CHECKOUT_ONLY = {"zstc_local", "stacks", "functions", "torch", "transformers", "aws_cdk", "moto"}
# Where the client may import the checkout's packages: the commands that run from a checkout.
LOCAL_COMMANDS = {
    ("zstc/cli.py", "serve"): {"zstc_local"},
    ("zstc/cli.py", "demo"): {"zstc_local"},
    ("zstc/client.py", "local"): {"zstc_local"},  # Classifier.local
    # zstc estimate (and submit's estimate) read the app's configuration rules and instance sizes from the checkout
    ("zstc/estimate.py", "_cores"): {"stacks"},
    ("zstc/estimate.py", "instance_rate"): {"stacks"},
    ("zstc/estimate.py", "configured"): {"stacks"},
    ("zstc/estimate.py", "estimate_command"): {"stacks"},
    # zstc models pin resolves a revision with the model importer's own Hub client
    ("zstc/models.py", "importer"): {"functions"},
}


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _distribution(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _import_names(requirements: list[str]) -> set[str]:
    """Top-level import names the installed distributions of ``requirements`` provide."""
    wanted = {_distribution(r) for r in requirements}
    return {
        name
        for name, dists in packages_distributions().items()
        if any(d.lower().replace("_", "-") in wanted for d in dists)
    }


def _imports(path: Path) -> list[tuple[str, str | None]]:
    """(top-level module, enclosing function or None) of every absolute import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, str | None]] = []

    def visit(node: ast.AST, function: str | None, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for part in child.body:
                    visit(part, function, True)
                for part in child.orelse:
                    visit(part, function, type_checking)
                continue
            inner = child.name if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) else function
            if not type_checking and isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], function) for alias in child.names)
            elif not type_checking and isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], function))
            visit(child, inner, type_checking)

    visit(tree, None, False)
    return found


def _client_files() -> list[Path]:
    return sorted(p for package in CLIENT_PACKAGES for p in (REPO / package).rglob("*.py"))


def test_the_client_imports_at_module_level_only_the_stdlib_its_declared_dependencies_and_itself() -> None:
    declared = _import_names(_pyproject()["project"]["dependencies"])
    allowed = set(sys.stdlib_module_names) | set(CLIENT_PACKAGES) | declared
    wrong = [
        f"{path.relative_to(REPO)}: import {module}"
        for path in _client_files()
        for module, function in _imports(path)
        if function is None and module not in allowed
    ]
    assert declared >= {"boto3", "botocore", "typer", "rich", "click"}
    assert wrong == []


def test_the_checkout_packages_are_imported_only_inside_the_local_commands() -> None:
    wrong = [
        f"{path.relative_to(REPO)}: {function}() imports {module}"
        for path in _client_files()
        for module, function in _imports(path)
        if module in CHECKOUT_ONLY
        and (function is None or module not in LOCAL_COMMANDS.get((str(path.relative_to(REPO)), function), set()))
    ]
    assert wrong == []


def test_lazy_imports_outside_the_checkout_are_declared_extras() -> None:
    project = _pyproject()["project"]
    everything = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    allowed = set(sys.stdlib_module_names) | set(CLIENT_PACKAGES) | _import_names(everything) | CHECKOUT_ONLY
    wrong = [f"{p.relative_to(REPO)}: import {m}" for p in _client_files() for m, _ in _imports(p) if m not in allowed]
    assert wrong == []


def test_the_packaged_modules_are_the_client_only() -> None:
    find = _pyproject()["tool"]["setuptools"]["packages"]["find"]
    assert find["include"] == ["zstc", "zstc.*", "zstc_contract", "zstc_contract.*"]
    assert _pyproject()["project"]["scripts"] == {"zstc": "zstc.cli:main"}


@pytest.mark.parametrize("module", ["zstc.cli", "zstc"])
def test_importing_the_command_line_loads_no_part_of_the_emulation(module: str) -> None:
    probe = f"import sys, json, {module}; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}})))"
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                                           text=True, cwd=REPO).stdout))  # fmt: skip
    assert module.split(".")[0] in loaded
    assert loaded.isdisjoint(CHECKOUT_ONLY | {"aws_lambda_powertools", "pandas"}), loaded & CHECKOUT_ONLY


@pytest.mark.parametrize(
    ("args", "hidden", "says"),
    [
        (["demo"], "zstc_local.demo", "zstc demo runs the offline emulation"),
        (["serve"], "zstc_local.serving", "zstc serve runs the offline emulation"),
    ],
)
def test_a_local_command_without_the_emulation_says_where_it_runs(args, hidden, says, monkeypatch, capsys) -> None:
    from zstc.cli import main

    monkeypatch.setitem(sys.modules, hidden, None)  # as if the package were not installed (pip install .)
    monkeypatch.setattr(sys, "argv", ["zstc", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    message = " ".join(capsys.readouterr().err.split())
    assert exit_.value.code == 1
    assert says in message and "from a checkout of the repository, after `make install`" in message
