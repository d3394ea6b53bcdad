"""Downloads against a real local HTTP server: resume, retries, checksums, local sources.

The server (a ``ThreadingHTTPServer`` on 127.0.0.1) serves a few MB of random bytes,
supports ``Range`` and can be told to drop the connection, stall, ignore ``Range`` or
answer an error status, so every retry path runs over real sockets.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from factories import captured_logs

from sensorium_pipeline.data import download as download_module
from sensorium_pipeline.data.download import download, read_checksum, write_checksum
from sensorium_pipeline.errors import DownloadError

DATA = random.Random(2023).randbytes(3 * (1 << 20) + 12345)
DIGEST = hashlib.sha256(DATA).hexdigest()
FAST = {"backoff_s": 0.01, "timeout_s": 5}


@dataclass
class Behaviour:
    """What the test server does; tests set it before downloading."""

    data: bytes = DATA
    drop_after: list[int] = field(default_factory=list)  # request i sends only drop_after[i] body bytes
    stall_s: float = 0.0  # the first request stalls this long after half its body
    ignore_range: bool = False  # always answer 200 with the whole body
    status: int | None = None  # answer every request with this error status
    requests: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        state: Behaviour = self.server.behaviour
        with state.lock:
            index = len(state.requests)
            state.requests.append(
                {"path": self.path, "range": self.headers.get("Range"), "user_agent": self.headers.get("User-Agent")}
            )
        if state.status is not None:
            self.send_error(state.status)
            return
        data, start = state.data, 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and not state.ignore_range:
            start = int(wanted[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if index < len(state.drop_after):
            self.wfile.write(body[: state.drop_after[index]])
            self.close_connection = True  # the client sees fewer bytes than Content-Length
            return
        if state.stall_s and index == 0:
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            time.sleep(state.stall_s)
            return
        self.wfile.write(body)

    def log_message(self, format, *args):  # keep pytest's output clean
        pass


@pytest.fixture
def server():
    """``(url, behaviour)`` of a fresh local server; the URL's file name is ``archive.zip``."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.behaviour = Behaviour()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data/archive.zip", httpd.behaviour
    httpd.shutdown()
    httpd.server_close()


def _part(dest):
    return dest.with_name(dest.name + ".part")


# --- HTTP -------------------------------------------------------------------------------------


def test_plain_download_returns_the_sha256_and_leaves_no_part(server, tmp_path):
    url, state = server
    dest = tmp_path / "archives" / "a.zip"
    assert download(url, dest, **FAST) == DIGEST
    assert dest.read_bytes() == DATA
    assert not _part(dest).exists()
    assert len(state.requests) == 1 and state.requests[0]["range"] is None
    assert state.requests[0]["user_agent"].startswith("sensorium-pipeline/")


def test_dropped_connection_is_retried_and_resumed(server, tmp_path):
    url, state = server
    state.drop_after = [1_000_003]
    dest = tmp_path / "a.zip"
    with captured_logs() as lines:
        assert download(url, dest, sha256=DIGEST, retries=1, **FAST) == DIGEST
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in state.requests] == [None, "bytes=1000003-"]
    assert any("attempt 1 failed" in line and "short read" in line for line in lines)


def test_retries_count_failures_in_a_row_without_progress(server, tmp_path):
    url, state = server
    state.drop_after = [500_000, 500_000, 500_000]  # each attempt adds bytes: never gives up
    dest = tmp_path / "a.zip"
    assert download(url, dest, retries=1, **FAST) == DIGEST
    assert [r["range"] for r in state.requests] == [None, "bytes=500000-", "bytes=1000000-", "bytes=1500000-"]
    assert dest.read_bytes() == DATA


def test_giving_up_names_the_attempts_in_a_row_and_in_all(server, tmp_path):
    url, state = server
    state.drop_after = [1000, 1000, 0]
    with pytest.raises(DownloadError, match=r"failed after 2 attempts in a row \(3 in all"):
        download(url, tmp_path / "a.zip", retries=1, **FAST)


def test_no_retries_means_one_attempt(server, tmp_path):
    url, state = server
    state.drop_after = [1000]
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError, match="failed after 1 attempt;"):
        download(url, dest, retries=0, **FAST)
    assert not dest.exists()
    assert _part(dest).read_bytes() == DATA[:1000]  # kept for the next run


def test_stalled_connection_times_out_and_resumes(server, tmp_path):
    url, state = server
    state.stall_s = 1.0
    dest = tmp_path / "a.zip"
    with captured_logs() as lines:
        assert download(url, dest, retries=2, backoff_s=0.01, timeout_s=0.3) == DIGEST
    assert len(state.requests) == 2 and state.requests[1]["range"].startswith("bytes=")
    assert any("timed out" in line for line in lines)


def test_leftover_part_from_an_earlier_run_is_resumed(server, tmp_path):
    url, state = server
    dest = tmp_path / "a.zip"
    _part(dest).write_bytes(DATA[:777_777])
    assert download(url, dest, sha256=DIGEST, **FAST) == DIGEST
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in state.requests] == ["bytes=777777-"]


def test_complete_part_answered_with_416_is_complete(server, tmp_path):
    url, state = server
    dest = tmp_path / "a.zip"
    _part(dest).write_bytes(DATA)
    assert download(url, dest, **FAST) == DIGEST
    assert dest.read_bytes() == DATA
    assert [r["range"] for r in state.requests] == [f"bytes={len(DATA)}-"]


def test_part_larger_than_the_source_starts_over(server, tmp_path):
    url, state = server
    dest = tmp_path / "a.zip"
    _part(dest).write_bytes(DATA + b"junk")
    assert download(url, dest, **FAST) == DIGEST
    assert [r["range"] for r in state.requests] == [f"bytes={len(DATA) + 4}-", None]


@pytest.mark.parametrize("drop", [False, True])
def test_server_ignoring_range_still_yields_the_file(server, tmp_path, drop):
    url, state = server
    state.ignore_range = True
    state.drop_after = [1_234_567] if drop else []
    dest = tmp_path / "a.zip"
    if not drop:
        _part(dest).write_bytes(DATA[:500_000])
    assert download(url, dest, sha256=DIGEST, retries=2, **FAST) == DIGEST
    assert dest.read_bytes() == DATA
    assert state.requests[-1]["range"] is not None  # asked to resume, got everything again


def test_wrong_checksum_raises_and_leaves_nothing(server, tmp_path):
    url, _ = server
    dest = tmp_path / "a.zip"
    wrong = "0" * 64
    with pytest.raises(DownloadError) as caught:
        download(url, dest, sha256=wrong, **FAST)
    message = str(caught.value)
    assert url in message and wrong in message and DIGEST in message
    assert not dest.exists() and not _part(dest).exists()


def test_checksum_is_case_insensitive_and_replaces_an_existing_dest(server, tmp_path):
    url, _ = server
    dest = tmp_path / "a.zip"
    dest.write_bytes(b"an older download")
    assert download(url, dest, sha256=DIGEST.upper(), **FAST) == DIGEST
    assert dest.read_bytes() == DATA


def test_malformed_expected_checksum_is_rejected_before_any_request(server, tmp_path):
    url, state = server
    with pytest.raises(DownloadError, match="64 hexadecimal"):
        download(url, tmp_path / "a.zip", sha256="abc", **FAST)
    assert state.requests == []


def test_404_fails_at_once(server, tmp_path):
    url, state = server
    state.status = 404
    with pytest.raises(DownloadError) as caught:
        download(url, tmp_path / "a.zip", retries=3, **FAST)
    assert url in str(caught.value) and "404" in str(caught.value)
    assert len(state.requests) == 1


@pytest.mark.parametrize("status", [500, 429])
def test_server_errors_are_retried_then_fail_naming_the_attempts(server, tmp_path, status):
    url, state = server
    state.status = status
    dest = tmp_path / "a.zip"
    with pytest.raises(DownloadError) as caught:
        download(url, dest, retries=2, **FAST)
    message = str(caught.value)
    assert len(state.requests) == 3
    assert url in message and str(status) in message and "failed after 3 attempts;" in message
    assert not dest.exists()


def test_unreachable_server_is_retried_then_fails(tmp_path):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/archive.zip"
    with pytest.raises(DownloadError, match="failed after 2 attempts;") as caught:
        download(url, tmp_path / "a.zip", retries=1, **FAST)
    assert url in str(caught.value)


# --- local sources ----------------------------------------------------------------------------


@pytest.fixture
def local_source(tmp_path):
    source = tmp_path / "source dir" / "archive.zip"  # a space: file:// URLs are percent-encoded
    source.parent.mkdir()
    source.write_bytes(DATA)
    return source


def test_file_url_and_plain_paths(local_source, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, url in enumerate([local_source.as_uri(), str(local_source), "source dir/archive.zip"]):
        dest = tmp_path / f"out{i}.zip"
        assert download(url, dest, sha256=DIGEST, **FAST) == DIGEST, url
        assert dest.read_bytes() == DATA


def test_local_part_is_resumed_or_restarted(local_source, tmp_path):
    dest = tmp_path / "a.zip"
    _part(dest).write_bytes(DATA[:100_000])
    with captured_logs() as lines:
        assert download(local_source.as_uri(), dest, **FAST) == DIGEST
    assert "resuming" in lines[0] and "100,000" in lines[0]
    _part(dest).write_bytes(DATA + b"extra")
    assert download(str(local_source), dest, **FAST) == DIGEST
    assert dest.read_bytes() == DATA


@pytest.mark.parametrize("as_url", [True, False])
def test_missing_local_source_names_the_path(tmp_path, as_url):
    missing = tmp_path / "nowhere.zip"
    url = missing.as_uri() if as_url else str(missing)
    with pytest.raises(DownloadError, match="does not exist") as caught:
        download(url, tmp_path / "a.zip", **FAST)
    assert str(caught.value).startswith(str(missing))


def test_unsupported_scheme_is_rejected(tmp_path):
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        download("ftp://example.org/a.zip", tmp_path / "a.zip")


# --- progress and checksum files --------------------------------------------------------------


def test_progress_lines_are_plain_text(server, tmp_path, monkeypatch):
    url, state = server
    state.drop_after = [700_000]
    monkeypatch.setattr(download_module, "PROGRESS_INTERVAL_S", 0.0)
    monkeypatch.setattr(download_module, "CHUNK_BYTES", 256 * 1024)
    with captured_logs() as lines:
        download(url, tmp_path / "a.zip", **FAST)
    assert len(lines) > 5
    assert all(not re.search(r"[\x00-\x1f\x7f]", line) for line in lines)
    assert any(f"of {len(DATA):,} bytes" in line and "MB/s" in line for line in lines)
    assert lines[-1].startswith("a.zip: complete") and f"{len(DATA):,} bytes" in lines[-1]


def test_progress_is_throttled(local_source, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "CHUNK_BYTES", 64 * 1024)
    with captured_logs() as lines:
        download(str(local_source), tmp_path / "a.zip", **FAST)
    assert len(lines) == 1 and "complete" in lines[0]


def test_checksum_file_round_trip(tmp_path):
    path = tmp_path / "archives" / "a.zip.sha256"
    path.parent.mkdir()
    write_checksum(path, DIGEST.upper())
    assert path.read_text() == f"{DIGEST}  a.zip\n"  # what `sha256sum -c` reads
    assert read_checksum(path) == DIGEST
    assert [p.name for p in path.parent.iterdir()] == ["a.zip.sha256"]  # no temporary left


@pytest.mark.parametrize("text", ["", "\n", "abc  a.zip\n", "g" * 64 + "  a.zip\n", "0" * 63 + "  a.zip\n"])
def test_malformed_checksum_file_is_rejected(tmp_path, text):
    path = tmp_path / "a.zip.sha256"
    path.write_text(text)
    with pytest.raises(DownloadError, match="sha256sum format") as caught:
        read_checksum(path)
    assert str(caught.value).startswith(str(path))


def test_missing_checksum_file_and_bad_digest(tmp_path):
    with pytest.raises(DownloadError, match="does not exist"):
        read_checksum(tmp_path / "none.sha256")
    with pytest.raises(DownloadError, match="not a sha256"):
        write_checksum(tmp_path / "a.zip.sha256", "xyz")
