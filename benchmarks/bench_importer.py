"""Model importer throughput and peak memory on a bart-large-mnli-sized model (1.6 GB safetensors).

A local HTTP server plays the Hub (files read from disk, the Hub's metadata shape) and a stub S3 client counts the
parts it receives, so the figures are the importer's own cost: HTTP reading, SHA-256 verification, tar, gzip level 1
and part buffering. Prints MiB/s and the process's peak RSS (which must stay far below the model's size).

    .venv/bin/python benchmarks/bench_importer.py [--shape bart-large|tiny]
"""

from __future__ import annotations

import argparse
import hashlib
import http.server
import resource
import shutil
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from functions.model_importer.logic import ImportRequest  # noqa: E402
from functions.model_importer.service import HubClient, import_model  # noqa: E402
from zstc.models import supported_model_types  # noqa: E402
from zstc_local.tiny_model import cached_tiny_model  # noqa: E402

MODEL_ID = "bench/nli"
REVISION = "b" * 40


def file_metadata(model_dir: Path) -> dict:
    siblings = []
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        size = path.stat().st_size
        if path.suffix == ".safetensors":
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda f=f: f.read(8 << 20), b""):
                    digest.update(block)
            siblings.append(
                {
                    "rfilename": path.name,
                    "size": size,
                    "blobId": "0" * 40,
                    "lfs": {"sha256": digest.hexdigest(), "size": size, "pointerSize": 134},
                }
            )
        else:
            content = path.read_bytes()
            blob = hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()
            siblings.append({"rfilename": path.name, "size": size, "blobId": blob})
    return {"id": MODEL_ID, "sha": REVISION, "siblings": siblings}


def serve(model_dir: Path, metadata: dict) -> http.server.ThreadingHTTPServer:
    import json

    body = json.dumps(metadata).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            if self.path.startswith("/api/"):
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            path = model_dir / self.path.rsplit("/", 1)[-1]
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.end_headers()
            with path.open("rb") as f:
                shutil.copyfileobj(f, self.wfile, 1 << 20)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class CountingS3:
    """Accepts parts and forgets them."""

    def __init__(self) -> None:
        self.bytes = 0
        self.parts = 0

    def list_objects_v2(self, **_):
        return {}

    def create_multipart_upload(self, **_):
        return {"UploadId": "bench"}

    def upload_part(self, *, Body, PartNumber, **_):
        self.bytes += len(Body)
        self.parts += 1
        return {"ETag": f'"{PartNumber}"'}

    def complete_multipart_upload(self, **_):
        return {}

    def abort_multipart_upload(self, **_):
        return {}

    def put_object(self, **_):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", default="bart-large", choices=["bart-large", "tiny"])
    args = parser.parse_args()
    model_dir = cached_tiny_model(args.shape)
    metadata = file_metadata(model_dir)
    server = serve(model_dir, metadata)
    code = {"inference.py": (ROOT / "model" / "code" / "inference.py").read_bytes()}
    request = ImportRequest(
        model_id=MODEL_ID,
        revision=REVISION,
        bucket="b",
        prefix="models/",
        code_files=code,
        supported_model_types=supported_model_types(),
    )
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    s3 = CountingS3()
    started = time.perf_counter()
    result = import_model(HubClient(f"http://127.0.0.1:{server.server_address[1]}"), s3, request)
    elapsed = time.perf_counter() - started
    server.shutdown()
    total = sum(s["lfs"]["size"] if s.get("lfs") else s["size"] for s in metadata["siblings"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"model shape            {args.shape}")
    print(f"model files            {total / 2**20:.1f} MiB")
    print(f"artifact (gzip -1)     {result.size / 2**20:.1f} MiB in {s3.parts} parts")
    print(f"wall time              {elapsed:.1f} s ({total / 2**20 / elapsed:.0f} MiB/s, includes the local server)")
    print(f"peak RSS               {peak:.0f} MiB (before the import: {rss_before:.0f} MiB)")


if __name__ == "__main__":
    main()
