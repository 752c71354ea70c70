"""A fake Hugging Face Hub on 127.0.0.1, for the model importer's tests and ``zstc models pin``'s.

The fake Hub answers like the real one for the calls the importer makes:

- ``GET /api/models/{id}/revision/{rev}?blobs=true``: ``{"id", "sha", "gated", "siblings": [{"rfilename", "size",
  "blobId", "lfs": {"sha256", "size", "pointerSize"}}]}``; a branch or tag (``refs``) resolves to its commit; unknown
  model: 401 ``X-Error-Code: RepoNotFound``; unknown revision: 404 ``RevisionNotFound``.
- ``GET /{id}/resolve/{rev}/{path}``: 302 to a "CDN" on another host name (``localhost`` instead of ``127.0.0.1``),
  which, like a signed URL, refuses requests carrying an ``Authorization`` header; gated models need a token
  (401/403 ``GatedRepo``). The CDN honours ``Range`` and can corrupt a file or drop a connection once.
- ``PUT /cfn-response/...``: records CloudFormation responses.

The fixtures ``hub_server`` / ``hub`` live in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_ID = "acme/tiny-nli"
REVISION = "1" * 40
VALID_TOKEN = "hf_valid_token"

LFS_SUFFIXES = (".safetensors", ".bin", ".h5", ".msgpack", ".ot", ".onnx")


def git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class FakeRepo:
    files: dict[str, bytes]
    gated: bool = False


@dataclass
class FakeHub:
    """State of the fake Hub: repos by (model id, revision), and knobs for failures."""

    base_url: str = ""
    repos: dict[tuple[str, str], FakeRepo] = field(default_factory=dict)
    refs: dict[tuple[str, str], str] = field(default_factory=dict)  # (model id, branch or tag) -> commit
    corrupt: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead of the real ones
    drop_once: set[str] = field(default_factory=set)  # paths whose first download breaks halfway
    requests: list[dict[str, Any]] = field(default_factory=list)
    responses: list[dict[str, Any]] = field(default_factory=list)  # CloudFormation responses received

    def add(
        self,
        model_id: str,
        revision: str,
        files: Mapping[str, bytes],
        *,
        gated: bool = False,
        refs: tuple[str, ...] = (),
    ) -> None:
        """Publish ``files`` as commit ``revision`` of ``model_id``; ``refs`` (e.g. ``("main",)``) point at it."""
        self.repos[(model_id, revision)] = FakeRepo(dict(files), gated)
        for ref in refs:
            self.refs[(model_id, ref)] = revision

    def reset(self) -> None:
        for state in (self.repos, self.refs, self.corrupt, self.drop_once, self.requests, self.responses):
            state.clear()

    def downloads(self, path: str | None = None) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["kind"] == "cdn" and (path is None or r["file"] == path)]

    def metadata(self, model_id: str, revision: str) -> dict[str, Any]:
        repo = self.repos[(model_id, revision)]
        siblings = []
        for path, content in sorted(repo.files.items()):
            if path.endswith(LFS_SUFFIXES):
                pointer = (
                    f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(content).hexdigest()}\n"
                )
                siblings.append(
                    {
                        "rfilename": path,
                        "size": len(content),
                        "blobId": git_blob_id(pointer.encode()),
                        "lfs": {
                            "sha256": hashlib.sha256(content).hexdigest(),
                            "size": len(content),
                            "pointerSize": len(pointer),
                        },
                    }
                )
            else:
                siblings.append({"rfilename": path, "size": len(content), "blobId": git_blob_id(content)})
        return {
            "_id": "0" * 24,
            "id": model_id,
            "modelId": model_id,
            "sha": revision,
            "private": False,
            "gated": "manual" if repo.gated else False,
            "disabled": False,
            "pipeline_tag": "zero-shot-classification",
            "siblings": siblings,
        }


def _make_handler(hub: FakeHub) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def _error(self, status: int, code: str | None, message: str = "error") -> None:
            body = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
                self.send_header("X-Error-Message", message)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, payload: Any) -> None:
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _repo(self, model_id: str, revision: str) -> FakeRepo | None:
            if not any(m == model_id for m, _ in hub.repos):
                self._error(401, "RepoNotFound", "Repository not found")
                return None
            repo = hub.repos.get((model_id, hub.refs.get((model_id, revision), revision)))
            if repo is None:
                self._error(404, "RevisionNotFound", "Invalid rev id")
            return repo

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            auth = self.headers.get("Authorization")
            if path.startswith("/api/models/") and "/revision/" in path:
                model_id, revision = path[len("/api/models/") :].split("/revision/", 1)
                revision = urllib.parse.unquote(revision)
                hub.requests.append({"kind": "api", "model": model_id, "auth": auth})
                repo = self._repo(model_id, revision)
                if repo is not None:
                    self._json(hub.metadata(model_id, hub.refs.get((model_id, revision), revision)))
                return
            if "/resolve/" in path:
                model_id, rest = path.lstrip("/").split("/resolve/", 1)
                revision, file_path = rest.split("/", 1)
                hub.requests.append({"kind": "resolve", "model": model_id, "file": file_path, "auth": auth})
                repo = self._repo(model_id, revision)
                if repo is None:
                    return
                if repo.gated and auth != f"Bearer {VALID_TOKEN}":
                    status = 403 if auth else 401
                    self._error(status, "GatedRepo", "Access to model is restricted")
                    return
                if file_path not in repo.files:
                    self._error(404, "EntryNotFound", "Entry not found")
                    return
                port = self.server.server_address[1]
                self.send_response(302)
                self.send_header("Location", f"http://localhost:{port}/cdn/{model_id}/{revision}/{file_path}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if path.startswith("/cdn/"):
                self._cdn(path[len("/cdn/") :], auth)
                return
            self._error(404, None, "no route")

        def _cdn(self, rest: str, auth: str | None) -> None:
            parts = rest.split("/")
            # model ids have one or two segments; the revision is the 40-hex segment
            rev_index = next(i for i, p in enumerate(parts) if len(p) == 40)
            model_id, revision, file_path = (
                "/".join(parts[:rev_index]),
                parts[rev_index],
                "/".join(parts[rev_index + 1 :]),
            )
            record = {
                "kind": "cdn",
                "model": model_id,
                "file": file_path,
                "auth": auth,
                "range": self.headers.get("Range"),
            }
            hub.requests.append(record)
            if auth:
                self._error(400, None, "Only one auth mechanism allowed")
                return
            content = hub.corrupt.get(file_path, hub.repos[(model_id, revision)].files[file_path])
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].removeprefix("bytes=").split("-")[0])
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
            else:
                self.send_response(200)
            body = content[start:]
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if file_path in hub.drop_once:
                hub.drop_once.discard(file_path)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

        def do_PUT(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            hub.responses.append(
                {"path": self.path, "content_type": self.headers.get("Content-Type"), "body": json.loads(body)}
            )
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


def model_files(model_dir: Path, *, extras: bool = True) -> dict[str, bytes]:
    """The files of a local model directory as a Hub repo, plus what real repos carry that we must leave out."""
    files = {p.name: p.read_bytes() for p in sorted(model_dir.iterdir()) if p.is_file()}
    if extras:
        files.update(
            {
                ".gitattributes": b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n",
                "README.md": b"---\nlicense: mit\n---\n# tiny\n",
                "pytorch_model.bin": b"PICKLE" * 1000,
                "tf_model.h5": b"HDF5" * 1000,
                "flax_model.msgpack": b"MSGPACK" * 1000,
                "rust_model.ot": b"OT" * 1000,
                "onnx/model.onnx": b"ONNX" * 1000,
                "onnx/config.json": b"{}",
            }
        )
    return files


@contextmanager
def running_hub() -> Iterator[FakeHub]:
    """A fake Hub served on 127.0.0.1 (an ephemeral port) for the duration of the block."""
    hub = FakeHub()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(hub))
    server.daemon_threads = True
    hub.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
