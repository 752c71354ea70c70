"""Run the real Hugging Face serving stack (inference toolkit on Multi Model Server) locally, without Docker.

What runs is what the SageMaker container runs: ``sagemaker_huggingface_inference_toolkit.serving`` writes
``/etc/sagemaker-mms.properties`` from the ``SAGEMAKER_*`` environment, starts the Java frontend, which starts Python
workers that load ``<base>/model`` with our ``code/inference.py``. Only one Multi Model Server can run on a machine
(fixed socket ``/tmp/.mms.sock.9000``, fixed properties file), so a server holds an exclusive ``fcntl`` lock on
``/tmp/zstc-mms.lock`` from start to stop: parallel tests and engineers queue instead of clashing.

Usage::

    with LocalServer(cached_tiny_model()) as server:
        requests.post(f"{server.url}/invocations", json={...})
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO

import psutil

LOCK_FILE = Path("/tmp/zstc-mms.lock")  # noqa: S108 - shared by every local server on the machine, by design
MMS_PID_FILE = Path(tempfile.gettempdir()) / ".model_server.pid"
MAX_MMS_PORT = 32767  # Multi Model Server rejects higher ports
HANDLER_CODE_DIR = Path(__file__).resolve().parent.parent / "model" / "code"
WORKER_READY = "WorkerLifeCycle - Model model loaded"
WORKER_DIED = "Backend worker process died"
SERVE_COMMAND = "from sagemaker_huggingface_inference_toolkit import serving; serving.main()"


def free_port() -> int:
    """A TCP port that is free now, at most 32767 (Multi Model Server's limit)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port <= MAX_MMS_PORT:
            return port
    # The kernel's ephemeral range is above 32767 on this machine: probe the low range ourselves.
    for port in range(20000, MAX_MMS_PORT):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("No free TCP port at or below 32767 for Multi Model Server.")


class LocalServer:
    """The toolkit's serving entry point on 127.0.0.1, serving ``model_dir``.

    By default our handler (``model/code/``) is copied into the served model directory unless ``model_dir`` already
    has a ``code/`` folder; ``use_our_handler=False`` serves with the toolkit's stock handler (for comparisons).
    ``env`` adds or overrides environment variables of the server (e.g. ``ZSTC_BATCH_SIZE``,
    ``SAGEMAKER_MODEL_SERVER_WORKERS``). ``startup_timeout`` bounds the wait for ``/ping``; on failure the server log
    is part of the error.
    """

    def __init__(
        self,
        model_dir: Path | str,
        *,
        port: int | None = None,
        use_our_handler: bool = True,
        env: Mapping[str, str] | None = None,
        startup_timeout: float = 300.0,
        lock_timeout: float = 1800.0,
    ) -> None:
        self.model_dir = Path(model_dir).resolve()
        if not (self.model_dir / "config.json").is_file():
            raise FileNotFoundError(f"{self.model_dir} is not a model directory (no config.json).")
        if port is not None and not 0 < port <= MAX_MMS_PORT:
            raise ValueError(f"port {port} is out of range: Multi Model Server needs 1..{MAX_MMS_PORT}.")
        self.port = port
        self.use_our_handler = use_our_handler
        self.extra_env = dict(env or {})
        self.startup_timeout = startup_timeout
        self.lock_timeout = lock_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self.base_dir: Path | None = None
        self._lock_fd: int | None = None
        self._log_file: IO[bytes] | None = None

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.process is None or self.port is None:
            raise RuntimeError("The server is not running: call start() or use it as a context manager.")
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        if self.base_dir is None:
            raise RuntimeError("The server was never started.")
        return self.base_dir / "server.log"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""

    def process_tree(self) -> list[psutil.Process]:
        """The server's processes (entry point, Java frontend, Python workers) that are alive now.

        The ``multi-model-server`` launcher exits after starting Java, so Java is re-parented to init: the
        processes are found by process group (the server runs in its own), not by parentage.
        """
        if self.process is None:
            return []
        group = self.process.pid
        members = []
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
                if os.getpgid(proc.pid) == group:
                    members.append(proc)
        return members

    def rss_bytes(self) -> int:
        """Resident memory of the whole server process tree, in bytes."""
        total = 0
        for proc in self.process_tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def start(self) -> LocalServer:
        if self.process is not None:
            raise RuntimeError("The server is already running.")
        self._acquire_lock()
        try:
            self._launch()
            self._wait_until_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the whole process tree (SIGTERM, then SIGKILL after 20 s) and release the lock."""
        try:
            if self.process is not None:
                self._terminate_tree()
        finally:
            self.process = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            if self.base_dir is not None:
                shutil.rmtree(self.base_dir, ignore_errors=True)
                self.base_dir = None
            self._release_lock()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------------------------
    def _acquire_lock(self) -> None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise TimeoutError(
                        f"Another Multi Model Server held {LOCK_FILE} for {self.lock_timeout:.0f} s; "
                        "stop it or wait (only one can run per machine)."
                    ) from None
                time.sleep(0.5)
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def _prepare_model_dir(self, base_dir: Path) -> None:
        served = base_dir / "model"
        served.mkdir()
        # Link the model files (the bart-large shape is 1.6 GB), copy our handler code.
        for entry in self.model_dir.iterdir():
            if entry.name == "code" and not self.use_our_handler:
                continue
            (served / entry.name).symlink_to(entry)
        if self.use_our_handler and not (self.model_dir / "code").exists():
            shutil.copytree(HANDLER_CODE_DIR, served / "code", ignore=shutil.ignore_patterns("__pycache__"))

    def _server_env(self, base_dir: Path) -> dict[str, str]:
        env = dict(os.environ)
        venv_bin = str(Path(sys.prefix) / "bin")
        env.update(
            {
                "SAGEMAKER_BASE_DIR": str(base_dir),
                "HF_TASK": "zero-shot-classification",
                "SAGEMAKER_BIND_TO_PORT": str(self.port),
                "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _launch(self) -> None:
        if self.port is None:
            self.port = free_port()
        self.base_dir = Path(tempfile.mkdtemp(prefix="zstc-serving-"))
        self._prepare_model_dir(self.base_dir)
        self._log_file = open(self.base_dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_COMMAND],
            cwd=self.base_dir,  # Multi Model Server writes logs/ into its working directory
            env=self._server_env(self.base_dir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends Java and the workers too
        )

    def _wait_until_healthy(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"The serving stack exited with code {self.process.returncode} before answering /ping.\n"
                    f"--- server log ---\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as response:  # noqa: S310 - local URL
                    if response.status == 200 and self._model_loaded():
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(
            f"The serving stack did not answer /ping within {self.startup_timeout:.0f} s.\n"
            f"--- server log ---\n{self._log_tail()}"
        )

    def _model_loaded(self) -> bool:
        # /ping answers as soon as the frontend is up; the model is ready once a worker has loaded it.
        logs = self.log_text() + self._mms_logs()
        if WORKER_DIED in logs:
            raise RuntimeError(
                f"A model server worker failed to load the model.\n--- server log ---\n{self._log_tail()}"
            )
        return WORKER_READY in logs

    def _mms_logs(self) -> str:
        if self.base_dir is None:
            return ""
        texts = []
        for path in (self.base_dir / "logs").glob("*.log"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace"))
        return "\n".join(texts)

    def _log_tail(self, chars: int = 8000) -> str:
        return (self.log_text() + self._mms_logs())[-chars:]

    def _terminate_tree(self) -> None:
        assert self.process is not None
        tree = self.process_tree()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        for proc in tree:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _gone, alive = psutil.wait_procs(tree, timeout=20)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        # Multi Model Server refuses to start while its pid file names a live process; ours is gone now.
        with contextlib.suppress(OSError, ValueError):
            pid = int(MMS_PID_FILE.read_text().split()[0])
            if not psutil.pid_exists(pid):
                MMS_PID_FILE.unlink()
