"""``download`` against a local HTTP server on 127.0.0.1: good, corrupted, interrupted archives."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from pathlib import Path

import pytest

from siamese_audio.errors import DatasetLayoutError
from siamese_audio.manifests.download import download
from siamese_audio.manifests.dummies import make_esc50


def esc50_zip(tmp_path: Path) -> bytes:
    root = make_esc50(tmp_path / "src" / "ESC-50-master", classes=("dog", "rain"), clips_per_class=2, seconds=0.5)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root.parent).as_posix())
    return buf.getvalue()


class Server:
    """Serves one archive with HTTP Range support; can cut a transfer short."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.cut_after: int | None = None
        self.ranges: list[str | None] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                outer.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                body = outer.payload[start:]
                self.send_response(206 if rng else 200)
                self.send_header("Content-Length", str(len(body)))
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(outer.payload) - 1}/{len(outer.payload)}")
                self.end_headers()
                if outer.cut_after is not None:
                    self.wfile.write(body[: outer.cut_after])
                    self.wfile.flush()
                    outer.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ESC-50-master.zip"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_good_archive_is_verified_and_extracted_to_the_release_layout(tmp_path):
    payload = esc50_zip(tmp_path)
    digest = hashlib.sha256(payload).hexdigest()
    with Server(payload) as server:
        result = download("esc50", tmp_path / "dl", url=server.url, sha256=digest, progress=False)
    assert result.extracted and result.sha256 == digest
    assert (result.root / "meta" / "esc50.csv").is_file() and len(list((result.root / "audio").glob("*.wav"))) == 4
    again = download("esc50", tmp_path / "dl", url="http://127.0.0.1:9/unused.zip", progress=False)
    assert "nothing to do" in again.actions[0]


def test_corrupted_archive_is_refused_and_nothing_is_extracted(tmp_path):
    payload = bytearray(esc50_zip(tmp_path))
    payload[len(payload) // 3] ^= 0xFF
    with Server(bytes(payload)) as server:
        with pytest.raises(DatasetLayoutError, match="corrupt archive.*nothing was extracted"):
            download("esc50", tmp_path / "dl", url=server.url, progress=False)
    assert not (tmp_path / "dl" / "ESC-50").exists()
    assert not any(p.name.endswith(".extracting") for p in (tmp_path / "dl").iterdir())


def test_checksum_mismatch_is_refused(tmp_path):
    with Server(esc50_zip(tmp_path)) as server:
        with pytest.raises(DatasetLayoutError, match="checksum mismatch: expected sha256 0000"):
            download("esc50", tmp_path / "dl", url=server.url, sha256="0" * 64, progress=False)
    assert not (tmp_path / "dl" / "ESC-50").exists()


def test_interrupted_transfer_resumes_with_a_range_request(tmp_path):
    payload = esc50_zip(tmp_path)
    with Server(payload) as server:
        server.cut_after = len(payload) // 2
        with pytest.raises(DatasetLayoutError, match="transfer broke after .* run the command again to resume"):
            download("esc50", tmp_path / "dl", url=server.url, progress=False)
        part = tmp_path / "dl" / "ESC-50.zip.part"
        assert part.stat().st_size == len(payload) // 2
        result = download("esc50", tmp_path / "dl", url=server.url, progress=False)
    assert server.ranges == [None, f"bytes={len(payload) // 2}-"]
    assert result.resumed_from == len(payload) // 2 and result.extracted
    assert result.sha256 == hashlib.sha256(payload).hexdigest()


def test_archive_without_the_release_layout_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("something-master/README.md", "hello")
    with Server(buf.getvalue()) as server:
        with pytest.raises(DatasetLayoutError, match=r"Missing \['audio', 'meta/esc50.csv'\]"):
            download("esc50", tmp_path / "dl", url=server.url, progress=False)
    assert not (tmp_path / "dl" / "ESC-50").exists()


def test_unreachable_server_is_a_clear_error(tmp_path):
    with pytest.raises(DatasetLayoutError, match="cannot connect"):
        download("esc50", tmp_path / "dl", url="http://127.0.0.1:9/x.zip", progress=False)
