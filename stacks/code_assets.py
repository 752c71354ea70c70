"""The code the stack ships to Lambda, as Python packages: each function's package and the batch contract layer.

Function code lives in ``functions/<name>/`` (a package: ``handler`` → ``service`` → ``logic``) and is shipped as that
package, so the handler is ``<name>.handler.handler`` and the modules import each other relatively, exactly as the
tests and the offline emulation import ``functions.<name>``. The batch contract (``zstc_contract/``, standard library
only) is shipped as a layer, mounted on ``/opt/python``. Assets are copied locally at synthesis (no Docker): the same
files give the same asset hash.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Final

import jsii
from aws_cdk import BundlingOptions, DockerImage, ILocalBundling, RemovalPolicy
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

ROOT: Final = Path(__file__).resolve().parents[1]
FUNCTIONS_DIR: Final = ROOT / "functions"
CONTRACT_DIR: Final = ROOT / "zstc_contract"
ASSET_EXCLUDE: Final = ["__pycache__", "*.pyc", ".pytest_cache"]
LAMBDA_RUNTIME: Final = lambda_.Runtime.PYTHON_3_13


@jsii.implements(ILocalBundling)
class _CopyPackage:
    """Local bundling: the package directory, copied to ``<output>/<destination>`` (no Docker, no network)."""

    def __init__(self, source: Path, destination: str) -> None:
        self._source = source
        self._destination = destination

    def try_bundle(self, output_dir: str, *_args: Any, **_options: Any) -> bool:
        shutil.copytree(
            self._source, Path(output_dir) / self._destination, ignore=shutil.ignore_patterns(*ASSET_EXCLUDE)
        )
        return True


def package_code(source: Path, destination: str) -> lambda_.Code:
    """Lambda code holding ``source`` (a package directory) at ``destination`` inside the archive."""
    return lambda_.Code.from_asset(
        str(source),
        exclude=ASSET_EXCLUDE,
        bundling=BundlingOptions(
            # Never pulled: the local bundling above always succeeds (CDK requires an image nonetheless).
            image=DockerImage.from_registry("public.ecr.aws/sam/build-python3.13"),
            local=_CopyPackage(source, destination),
        ),
    )


def function_code(name: str) -> lambda_.Code:
    """The package ``functions/<name>/``, shipped as the package ``<name>``."""
    source = FUNCTIONS_DIR / name
    if not (source / "__init__.py").is_file():
        raise ValueError(f"{source} is not a function package (no __init__.py)")
    return package_code(source, name)


def function_handler(name: str) -> str:
    """Handler string of the function package ``name``: its ``handler`` module's ``handler`` function."""
    return f"{name}.handler.handler"


def contract_layer(scope: Construct, id_: str) -> lambda_.LayerVersion:
    """The batch contract package as a layer (``/opt/python/zstc_contract``)."""
    return lambda_.LayerVersion(
        scope,
        id_,
        code=package_code(CONTRACT_DIR, "python/zstc_contract"),
        compatible_runtimes=[LAMBDA_RUNTIME],
        description="Batch path: the contract shared by the trigger and the job-outcome function (zstc_contract)",
        removal_policy=RemovalPolicy.DESTROY,
    )
