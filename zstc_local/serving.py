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
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler
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
MMS_SOCKET = Path("/tmp/.mms.sock.9000")  # noqa: S108 - Multi Model Server's fixed worker socket (first worker)
# Ends the server's process group once its owner is gone: stdin is a pipe from the owner, so EOF means the owner
# exited (normally, by a signal, or SIGKILL). It ignores SIGINT/SIGTERM sent to the owner's group.
WATCHDOG = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
group = int(sys.argv[1])
sys.stdin.buffer.read()
for sig, wait in ((signal.SIGTERM, 20.0), (signal.SIGKILL, 0.0)):
    try:
        os.killpg(group, sig)
    except (ProcessLookupError, PermissionError):
        break
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except (ProcessLookupError, PermissionError):
            sys.exit(0)
        time.sleep(0.2)
"""


def free_port(exclude: frozenset[int] = frozenset()) -> int:
    """A TCP port that is free now, at most 32767 (Multi Model Server's limit), not in ``exclude``."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        if port <= MAX_MMS_PORT and port not in exclude:
            return port
    # The kernel's ephemeral range is above 32767 on this machine: probe the low range ourselves.
    for port in range(20000, MAX_MMS_PORT):
        if port in exclude:
            continue
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

    ``runtime_api=True`` puts a small front on ``port`` that also answers the SageMaker runtime API's
    ``POST /endpoints/{name}/invocations`` (what ``boto3.client("sagemaker-runtime", endpoint_url=url)`` calls), with
    its headers and its ``ModelError`` shape for a 4xx/5xx from the model; Multi Model Server then listens on a
    private port. ``endpoint_name`` restricts the names answered (default: any). Multi Model Server's logs go to
    ``log_dir`` (kept after stop) or, by default, to the server's temporary folder (removed at stop). A watchdog
    process ends the whole server if this process dies without calling ``stop()`` (even by SIGKILL).
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
        runtime_api: bool = False,
        endpoint_name: str | None = None,
        log_dir: Path | str | None = None,
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
        self.runtime_api = runtime_api
        self.endpoint_name = endpoint_name
        self.log_dir = Path(log_dir).resolve() if log_dir is not None else None
        self._keep_logs = log_dir is not None
        self.model_port: int | None = None  # where Multi Model Server listens (the front's port when runtime_api)
        self.front: RuntimeFront | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.base_dir: Path | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._lock_fd: int | None = None
        self._log_file: IO[bytes] | None = None

    # -- public API -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.process is None or self.port is None:
            raise RuntimeError("The server is not running: call start() or use it as a context manager.")
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_url(self) -> str:
        """Multi Model Server itself (the same as ``url`` unless the runtime API front is on)."""
        if self.process is None or self.model_port is None:
            raise RuntimeError("The server is not running: call start() or use it as a context manager.")
        return f"http://127.0.0.1:{self.model_port}"

    @property
    def log_path(self) -> Path:
        if self.log_dir is None:
            raise RuntimeError("The server was never started.")
        return self.log_dir / "server.log"

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
            if self.front is not None:
                self.front.model_url = self.model_url
                self.front.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the whole process tree (SIGTERM, then SIGKILL after 20 s) and release the lock."""
        try:
            if self.front is not None:
                self.front.stop()
                self.front = None
            if self.process is not None:
                self._terminate_tree()
        finally:
            self.process = None
            if self._watchdog is not None:
                with contextlib.suppress(OSError):
                    assert self._watchdog.stdin is not None
                    self._watchdog.stdin.close()  # nothing left to end: the watchdog exits
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self._watchdog.wait(timeout=10)
                self._watchdog = None
            if self._log_file is not None:
                self._log_file.close()
                self._log_file = None
            _remove_stale_socket()
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
                "SAGEMAKER_BIND_TO_PORT": str(self.model_port),
                # Multi Model Server's log4j configuration writes to $LOG_LOCATION / $METRICS_LOCATION (else ./logs)
                "LOG_LOCATION": str(self.log_dir),
                "METRICS_LOCATION": str(self.log_dir),
                "PATH": venv_bin + os.pathsep + env.get("PATH", ""),
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def _launch(self) -> None:
        if self.port is None:
            self.port = free_port()
        self.model_port = self.port
        if self.runtime_api:
            # bound now (requests wait in its backlog until the model is loaded), served once healthy
            try:
                self.front = RuntimeFront(port=self.port, model_url="", endpoint_name=self.endpoint_name)
            except OSError as error:
                raise ValueError(f"port {self.port} is in use ({error.strerror}): pick another with --port.") from None
            self.model_port = free_port(exclude=frozenset({self.port}))
        self.base_dir = Path(tempfile.mkdtemp(prefix="zstc-serving-"))
        if not self._keep_logs:
            self.log_dir = self.base_dir / "logs"
        assert self.log_dir is not None
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_model_dir(self.base_dir)
        self._log_file = open(self.log_dir / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-c", SERVE_COMMAND],
            cwd=self.base_dir,  # Multi Model Server writes logs/ into its working directory
            env=self._server_env(self.base_dir),
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends Java and the workers too
        )
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", WATCHDOG, str(self.process.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to our terminal's process group must not reach it
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
                with urllib.request.urlopen(f"{self.model_url}/ping", timeout=5) as response:  # noqa: S310 - local URL
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
        if self.log_dir is None:
            return ""
        texts = []
        for path in self.log_dir.glob("*.log"):
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


def _remove_stale_socket() -> None:
    """Remove Multi Model Server's worker socket when no process listens on it any more (we hold the lock)."""
    if not MMS_SOCKET.exists():
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1)
        try:
            probe.connect(str(MMS_SOCKET))
        except OSError:
            with contextlib.suppress(OSError):
                MMS_SOCKET.unlink()


# --- the SageMaker runtime API in front of Multi Model Server ------------------------------------------------------

ENDPOINT_PATH = re.compile(r"^/endpoints/(?P<name>[^/?]+)/invocations/?$")
VARIANT = "AllTraffic"  # the production variant name the stack's endpoint config uses
MODEL_TIMEOUT_SECONDS = 60.0  # SageMaker's per-request limit for real-time endpoints
CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"


class RuntimeFront:
    """Answers on ``port`` what a SageMaker endpoint answers, forwarding to Multi Model Server at ``model_url``.

    ``POST /endpoints/{name}/invocations``: InvokeEndpoint (rest-json): the model's body and Content-Type, plus
    ``x-Amzn-Invoked-Production-Variant``; a 4xx/5xx from the model becomes HTTP 424 ``ModelError`` with
    ``OriginalStatusCode`` / ``OriginalMessage`` (what boto3 raises as ``ModelError``); an unknown endpoint name
    (when ``endpoint_name`` is set) a 400 ``ValidationError``; a body over 6 MB a 413 ``ValidationError``.
    ``GET /ping`` and ``POST /invocations`` pass through unchanged (the container contract).
    """

    def __init__(self, *, port: int, model_url: str, endpoint_name: str | None) -> None:
        from http.server import ThreadingHTTPServer

        self.port, self.model_url, self.endpoint_name = port, model_url, endpoint_name
        front = self

        class Handler(_FrontHandler):
            owner = front

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    def start(self) -> RuntimeFront:
        self._thread = threading.Thread(target=self._server.serve_forever, name="zstc-runtime-front", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)


def _error_body(error_type: str, message: str, **fields: object) -> bytes:
    return json.dumps({"ErrorCode": error_type, "Message": message, **fields}).encode()


class _FrontHandler(BaseHTTPRequestHandler):
    owner: RuntimeFront
    protocol_version = "HTTP/1.1"
    server_version = "zstc-runtime-front"

    def log_message(self, format: str, *args: object) -> None:
        return None  # Multi Model Server's access log already records each request

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("x-amzn-RequestId", str(uuid.uuid4()))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, error_type: str, message: str, **fields: object) -> None:
        self._send(
            status,
            _error_body(error_type, message, **fields),
            {"Content-Type": "application/json", "x-amzn-ErrorType": f"{error_type}:"},
        )

    def _forward(self, method: str, path: str, body: bytes | None) -> tuple[int, bytes, dict[str, str]]:
        headers = {
            name: value
            for name, value in self.headers.items()
            if name.lower() in ("content-type", "accept", CUSTOM_ATTRIBUTES.lower())
        }
        request = urllib.request.Request(  # noqa: S310 - the local model server's http URL
            self.owner.model_url + path, data=body, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=MODEL_TIMEOUT_SECONDS) as response:  # noqa: S310 - local
                return response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as error:
            return error.code, error.read(), dict(error.headers.items())

    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/ping":
            self._error(404, "UnknownOperationException", f"GET {self.path} is not an operation of this endpoint.")
            return
        status, body, headers = self._forward("GET", "/ping", None)
        self._send(status, body, {"Content-Type": headers.get("Content-Type", "application/json")})

    def do_POST(self) -> None:
        from zstc.client import PROVISIONED_PAYLOAD_LIMIT

        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = self.path.split("?")[0]
        if path == "/invocations":  # the container contract, unchanged
            status, answer, headers = self._forward("POST", "/invocations", body)
            self._send(status, answer, {"Content-Type": headers.get("Content-Type", "application/json")})
            return
        match = ENDPOINT_PATH.match(path)
        if match is None:
            self._error(404, "UnknownOperationException", f"POST {self.path} is not an operation of this endpoint.")
            return
        name = urllib.parse.unquote(match["name"])
        if self.owner.endpoint_name is not None and name != self.owner.endpoint_name:
            self._error(400, "ValidationError", f"Endpoint {name} of account 000000000000 not found.")
            return
        if len(body) > PROVISIONED_PAYLOAD_LIMIT:
            self._error(
                413,
                "ValidationError",
                f"Received payload of {len(body)} bytes, over the limit of {PROVISIONED_PAYLOAD_LIMIT} bytes.",
            )
            return
        try:
            status, answer, headers = self._forward("POST", "/invocations", body)
        except OSError as error:
            self._error(500, "InternalFailure", f"The model server did not answer: {error}")
            return
        if status >= 400:
            kind = "client" if status < 500 else "server"
            original = answer.decode("utf-8", errors="replace")
            self._send(
                424,
                _error_body(
                    f"{kind.upper()}_ERROR_FROM_MODEL",
                    f'Received {kind} error ({status}) from primary with message "{original}". '
                    "See the model server's logs (named in `zstc serve`'s start-up lines) for more information.",
                    OriginalStatusCode=status,
                    OriginalMessage=original,
                    LogStreamArn="",
                ),
                {"Content-Type": "application/json", "x-amzn-ErrorType": "ModelError:"},
            )
            return
        reply = {
            "Content-Type": headers.get("Content-Type", "application/json"),
            "x-Amzn-Invoked-Production-Variant": VARIANT,
        }
        if CUSTOM_ATTRIBUTES in headers:
            reply[CUSTOM_ATTRIBUTES] = headers[CUSTOM_ATTRIBUTES]
        self._send(200, answer, reply)
