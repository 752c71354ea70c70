"""Run the model-side handler in this process, exactly as the serving stack does, without a model server.

The toolkit's own ``HuggingFaceHandlerService`` loads ``code/inference.py`` from the model directory and calls it the
way Multi Model Server would; we only provide a minimal request context. Used by ``zstc classify --local`` and
``zstc eval --local``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from zstc.errors import InputError

REPO_CODE_DIR = Path(__file__).resolve().parents[1] / "model" / "code"
TINY = "tiny"


def resolve_model(model: str) -> Path:
    """``tiny`` builds (once, cached) the tiny random-weight model; anything else is a local model directory."""
    if model == TINY:
        from zstc_local.tiny_model import cached_tiny_model

        return Path(cached_tiny_model())
    path = Path(model).expanduser()
    if not path.is_dir():
        raise InputError(f"Model directory {path} does not exist. Pass a directory with config.json, or 'tiny'.")
    if not (path / "config.json").exists():
        raise InputError(
            f"{path} has no config.json: pass a Hugging Face model directory (save_pretrained output), or 'tiny'."
        )
    return path


def with_handler_code(model_dir: Path, workdir: Path) -> Path:
    """A model directory that has ``code/``: the given one if it has, else a view of it with our handler added."""
    if (model_dir / "code" / "inference.py").exists():
        return model_dir
    if not (REPO_CODE_DIR / "inference.py").exists():
        raise InputError(f"{model_dir} has no code/inference.py and this installation has no model/code/ to add.")
    view = workdir / "model"
    view.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        (view / item.name).symlink_to(item.resolve())
    (view / "code").symlink_to(REPO_CODE_DIR)
    return view


class _Request:
    def __init__(self, properties: dict[str, str]) -> None:
        self._properties = properties

    def get_request_properties(self) -> dict[str, str]:
        return self._properties


class _Metrics:
    def add_time(self, *args: Any, **kwargs: Any) -> None:
        return None


class _Context:
    def __init__(self, model_dir: Path, properties: dict[str, str] | None = None) -> None:
        self.system_properties = {"model_dir": str(model_dir), "batch_size": 1, "gpu_id": 0}
        self.request_processor = [_Request(properties or {})]
        self.metrics = _Metrics()
        self.response_content_type: str | None = None

    def set_response_content_type(self, index: int, value: str) -> None:
        self.response_content_type = value


class InProcessHandler:
    """``invoke(body, content_type)`` -> response bytes, as ``POST /invocations`` would answer."""

    def __init__(self, model_dir: Path) -> None:
        from sagemaker_huggingface_inference_toolkit.handler_service import HuggingFaceHandlerService

        self._tmp = tempfile.TemporaryDirectory(prefix="zstc-model-")
        self.model_dir = with_handler_code(model_dir, Path(self._tmp.name))
        code_dir = str(self.model_dir / "code")
        # the toolkit imports the module named "inference" from <model_dir>/code (adding it to sys.path: removed after)
        sys.modules.pop("inference", None)
        self.service = HuggingFaceHandlerService()
        added_task = "HF_TASK" not in os.environ  # what the container's environment has, while the model loads
        if added_task:
            os.environ["HF_TASK"] = "zero-shot-classification"
        try:
            self.service.initialize(_Context(self.model_dir))
        finally:
            if added_task:
                os.environ.pop("HF_TASK", None)
            if code_dir in sys.path:
                sys.path.remove(code_dir)

    def invoke(self, body: bytes, content_type: str = "application/json", accept: str = "application/json") -> bytes:
        context = _Context(self.model_dir, {"Content-Type": content_type, "Accept": accept})
        response = self.service.handle([{"body": body}], context)[0]
        return response if isinstance(response, bytes) else str(response).encode("utf-8")

    def close(self) -> None:
        self._tmp.cleanup()

    def __enter__(self) -> InProcessHandler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
