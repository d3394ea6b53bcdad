"""Fetch one archive: resumable, retried, checksummed, and renamed into place only when complete.

The real archives are ~9 GB zips on gin.g-node.org; a dropped connection or a killed job
must not cost the bytes that already arrived. So the download streams into ``<dest>.part``,
hashing as it goes, and every retry (or a rerun after a kill) resumes that file: over HTTP
with ``Range: bytes=<size>-``, for local sources by seeking. ``<dest>`` itself only ever
holds a complete, verified file.

Sources: ``https://``, ``http://`` (stdlib :mod:`urllib`, no extra dependency), ``file://``
URLs and plain local paths (the demo's simulated archives arrive through ``file://``).

Retries: network errors, timeouts, dropped connections and short reads are retried with
exponential backoff, resuming each time; the retry count restarts whenever an attempt
brings new bytes, so a long download over a flaky link that keeps making progress is not
given up on. HTTP 408, 429 and 5xx are retried; any other 4xx fails at once (asking again
will not fix a wrong URL).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import logging
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .. import __version__
from ..atomic import write_text_atomic
from ..errors import DownloadError

logger = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20  # read, write and hash in 1 MiB pieces
BACKOFF_S = 2.0  # first retry delay; doubles with each failure in a row
BACKOFF_MAX_S = 120.0  # no single wait is longer (also caps a server's Retry-After)
PROGRESS_INTERVAL_S = 10.0  # at most one progress line this often (plus a final one)
PART_SUFFIX = ".part"
CHECKSUM_SUFFIX = ".sha256"
USER_AGENT = (
    f"sensorium-pipeline/{__version__} "
    f"(SENSORIUM 2023 data download; Python-urllib/{sys.version_info.major}.{sys.version_info.minor})"
)
RETRY_STATUSES = frozenset({408, 429})  # 4xx that are worth asking again; every 5xx is too

_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_CONTENT_RANGE = re.compile(r"bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)")



# --- checksum files --------------------------------------------------------------------------


def write_checksum(path: str | Path, digest: str, *, name: str | None = None) -> None:
    """Write ``<digest>  <name>`` (the ``sha256sum`` format) to ``path`` atomically.

    ``name`` defaults to ``path``'s file name without ``.sha256``, so that
    ``sha256sum -c archive.zip.sha256`` checks ``archive.zip`` from the same folder.
    """
    path = Path(path)
    if not isinstance(digest, str) or not _SHA256.fullmatch(digest):
        raise DownloadError(path, f"not a sha256 digest (64 hexadecimal digits): {digest!r}")
    if name is None:
        name = path.name[: -len(CHECKSUM_SUFFIX)] if path.name.endswith(CHECKSUM_SUFFIX) else path.name
    write_text_atomic(path, f"{digest.lower()}  {name}\n")


def read_checksum(path: str | Path) -> str:
    """The lower-case hex digest recorded in a ``sha256sum``-format file at ``path``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DownloadError(path, "checksum file does not exist") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DownloadError(path, f"cannot read the checksum file ({error})") from error
    fields = text.split()
    if not fields or not _SHA256.fullmatch(fields[0]):
        first_line = text.splitlines()[0] if text.strip() else ""
        raise DownloadError(
            path, f"expected '<64 hexadecimal digits>  <file name>' (sha256sum format), got {first_line[:100]!r}"
        )
    return fields[0].lower()


# --- the download ---------------------------------------------------------------------------


def download(
    url: str,
    dest: str | Path,
    *,
    sha256: str | None = None,
    retries: int = 4,
    timeout_s: float = 60,
    backoff_s: float = BACKOFF_S,
) -> str:
    """Fetch ``url`` to ``dest`` and return the hex sha256 of what arrived.

    ``url`` is an ``http(s)://`` or ``file://`` URL or a local path. A ``<dest>.part`` left
    by an interrupted run is resumed. With ``sha256`` (case-insensitive) the result is
    verified; on a mismatch the partial file is deleted (a rerun starts afresh) and
    :class:`DownloadError` is raised. An existing ``dest`` is replaced, and only by a
    complete, verified file. ``retries``: how often a failed attempt is retried (with
    ``backoff_s`` doubling each time) before giving up; the count restarts whenever an
    attempt brings new bytes. ``timeout_s``: socket timeout per request;
    progress goes to this module's logger as plain-text lines (bytes, total, MB/s) at most every
    :data:`PROGRESS_INTERVAL_S` seconds, plus notes on resumes and retries.
    """
    expected = _expected_digest(url, sha256)
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    source = _source(url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _Partial(dest.with_name(dest.name + PART_SUFFIX))
    if part.size:
        logger.info(f"{dest.name}: resuming {part.path.name} at byte {part.size:,}")
    meter = _Meter(dest.name)

    failures = attempts = 0
    while True:
        attempts += 1
        before = part.size
        try:
            _transfer(source, part, timeout_s, meter)
            break
        except _Transient as error:
            failures = 1 if part.size > before else failures + 1
            if failures > retries:
                tried = _attempts(failures)
                if attempts != failures:
                    tried += f" in a row ({attempts} in all; the count restarts whenever bytes arrive)"
                kept = f"; {part.size:,} bytes kept in {part.path} for a rerun to resume" if part.size else ""
                raise DownloadError(url, f"failed after {tried}; last error: {error}{kept}") from error
            delay = min(backoff_s * 2 ** (failures - 1), BACKOFF_MAX_S)
            if error.retry_after_s is not None:
                delay = min(max(delay, error.retry_after_s), BACKOFF_MAX_S)
            logger.info(
                f"{dest.name}: attempt {attempts} failed ({error}); "
                f"retry {failures} of {retries} in {delay:.1f} s from byte {part.size:,}"
            )
            time.sleep(delay)

    digest = part.finish()
    meter.final(part.size)
    if expected is not None and digest != expected:
        part.discard()
        raise DownloadError(
            url,
            f"sha256 mismatch: expected {expected}, got {digest}; deleted {part.path.name} so that a rerun "
            "downloads it afresh (if the source changed on purpose, update the expected sha256)",
        )
    os.replace(part.path, dest)
    return digest


def _attempts(n: int) -> str:
    return f"{n} attempt" if n == 1 else f"{n} attempts"


def _expected_digest(url: str, sha256: str | None) -> str | None:
    if sha256 is None or sha256 == "":
        return None
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256.strip()):
        raise DownloadError(url, f"the expected sha256 {sha256!r} is not 64 hexadecimal digits (check the config)")
    return sha256.strip().lower()


class _Transient(Exception):
    """A failure worth retrying (network error, timeout, short read, HTTP 408/429/5xx)."""

    def __init__(self, problem: str, retry_after_s: float | None = None) -> None:
        super().__init__(problem)
        self.retry_after_s = retry_after_s


# --- the partial file -----------------------------------------------------------------------


class _Partial:
    """``<dest>.part`` and the sha256 of its bytes, kept in step as chunks are appended."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rehash()

    def _rehash(self) -> None:
        """Hash what is already on disk: a resumed download's digest covers all its bytes."""
        self.hasher = hashlib.sha256()
        self.size = 0
        try:
            with open(self.path, "rb") as stream:
                while chunk := stream.read(CHUNK_BYTES):
                    self.hasher.update(chunk)
                    self.size += len(chunk)
        except FileNotFoundError:
            pass
        except OSError as error:
            raise DownloadError(self.path, f"cannot read the partial download ({error})") from error

    def check(self) -> None:
        """Re-hash if the file on disk is not what we think (e.g. a write failed half-way)."""
        try:
            on_disk = self.path.stat().st_size
        except FileNotFoundError:
            on_disk = 0
        if on_disk != self.size:
            self._rehash()

    def reset(self) -> None:
        """Start over from byte 0."""
        self.path.unlink(missing_ok=True)
        self.hasher = hashlib.sha256()
        self.size = 0

    def append(self, stream: BinaryIO, chunk: bytes) -> None:
        try:
            stream.write(chunk)
        except OSError as error:
            raise DownloadError(self.path, f"cannot write the download ({error})") from error
        self.hasher.update(chunk)
        self.size += len(chunk)

    def finish(self) -> str:
        """Flush the complete file to disk (it is about to be renamed) and return its digest."""
        try:
            with open(self.path, "ab") as stream:
                os.fsync(stream.fileno())
        except OSError as error:
            raise DownloadError(self.path, f"cannot write the download ({error})") from error
        return self.hasher.hexdigest()

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


# --- progress ---------------------------------------------------------------------------------


class _Meter:
    """Plain-text progress lines, throttled so a SLURM log stays readable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.started = self.last = time.monotonic()
        self.transferred = 0  # bytes received by this call (not the resumed ones): the speed
        self.total: int | None = None

    def add(self, n_bytes: int, size: int) -> None:
        self.transferred += n_bytes
        now = time.monotonic()
        if now - self.last >= PROGRESS_INTERVAL_S:
            self.last = now
            logger.info(f"{self.name}: {self._amount(size)}, {self._speed(now):.1f} MB/s")

    def final(self, size: int) -> None:
        elapsed = time.monotonic() - self.started
        logger.info(
            f"{self.name}: complete, {size:,} bytes; {self.transferred:,} received in {elapsed:.1f} s, "
            f"{self._speed(time.monotonic()):.1f} MB/s"
        )

    def _amount(self, size: int) -> str:
        if self.total:
            return f"{size:,} of {self.total:,} bytes ({100 * size / self.total:.1f}%)"
        return f"{size:,} bytes (total unknown)"

    def _speed(self, now: float) -> float:
        return self.transferred / max(now - self.started, 1e-9) / 1e6


# --- sources ----------------------------------------------------------------------------------


@dataclass
class _Opened:
    """One request's answer: a stream from byte ``start``, or a verdict on the partial file."""

    stream: BinaryIO | None = None
    start: int = 0
    end: int | None = None  # size the file will have when this stream is read to its end
    total: int | None = None  # size of the whole source, when known
    complete: bool = False  # the partial file already holds the whole source
    restart: str | None = None  # why the partial file cannot be resumed


class _Local:
    """A local file (plain path or ``file://`` URL): resumed by seeking."""

    def __init__(self, url: str, path: Path) -> None:
        self.url = url
        self.path = path

    def open(self, offset: int, timeout_s: float) -> _Opened:
        try:
            size = self.path.stat().st_size
            if offset > size:
                return _Opened(restart=f"the partial file ({offset:,} bytes) is larger than the source ({size:,})")
            if offset == size and offset:
                return _Opened(complete=True, total=size)
            stream = open(self.path, "rb")
        except FileNotFoundError:
            via = f" (from {self.url})" if self.url != str(self.path) else ""
            raise DownloadError(self.path, f"source file does not exist{via}") from None
        except IsADirectoryError:
            raise DownloadError(self.path, "source is a directory, not a file") from None
        except OSError as error:
            raise _Transient(f"cannot read {self.path}: {error}") from error
        stream.seek(offset)
        return _Opened(stream, start=offset, end=size, total=size)


class _Http:
    """An ``http(s)://`` URL: resumed with a ``Range`` request."""

    def __init__(self, url: str) -> None:
        self.url = url

    def open(self, offset: int, timeout_s: float) -> _Opened:
        request = urllib.request.Request(self.url, headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"})
        if offset:
            request.add_header("Range", f"bytes={offset}-")
        try:
            response = urllib.request.urlopen(request, timeout=timeout_s)
        except urllib.error.HTTPError as error:
            try:
                return self._refused(error, offset)
            finally:
                with contextlib.suppress(Exception):  # its body is of no use; free the connection
                    error.close()
        except (urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise _Transient(_describe(error, timeout_s)) from error
        if response.status == 206:
            first, last, total = _content_range(response.headers.get("Content-Range"))
            if first != offset or last is None:
                response.close()
                header = response.headers.get("Content-Range")
                return _Opened(restart=f"asked for bytes {offset:,}- but got Content-Range {header!r}")
            return _Opened(response, start=offset, end=last + 1, total=total)
        if response.status == 200:
            length = _content_length(response)
            return _Opened(response, start=0, end=length, total=length)
        response.close()
        raise DownloadError(self.url, f"unexpected HTTP {response.status} {response.reason}")

    def _refused(self, error: urllib.error.HTTPError, offset: int) -> _Opened:
        status = f"HTTP {error.code} {error.reason}"
        if error.code == 416 and offset:
            _, _, total = _content_range(error.headers.get("Content-Range"))
            if total == offset:
                return _Opened(complete=True, total=total)
            size = "unknown" if total is None else f"{total:,} bytes"
            return _Opened(restart=f"{status} for a {offset:,}-byte partial file (source size {size})")
        if error.code in RETRY_STATUSES or error.code >= 500:
            raise _Transient(status, _retry_after(error.headers.get("Retry-After")))
        raise DownloadError(self.url, f"{status}; not retried (check the URL and its access rights)")


def local_path(url: str) -> Path | None:
    """The file behind a ``file://`` URL (of this host) or a plain path; None for any other URL.

    The workflow uses it too: a local source is an input of the download rule.
    """
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file" and parts.netloc in ("", "localhost"):
        return Path(urllib.request.url2pathname(parts.path))
    if scheme == "" or len(scheme) == 1:  # a plain path (or a Windows drive letter)
        return Path(url)
    return None


def _source(url: str) -> _Local | _Http:
    if not isinstance(url, str) or not url:
        raise DownloadError(str(url), "no URL or path given")
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _Http(url)
    path = local_path(url)
    if path is not None:
        return _Local(url, path)
    if scheme == "file":
        raise DownloadError(url, f"file:// URL of another host {parts.netloc!r}; use file:///absolute/path")
    raise DownloadError(url, f"unsupported URL scheme {parts.scheme!r}; expected https://, http://, file:// or a path")


def _transfer(source: _Local | _Http, part: _Partial, timeout_s: float, meter: _Meter) -> None:
    """One attempt: append the rest of the source to the partial file, or raise :class:`_Transient`."""
    part.check()
    opened = source.open(part.size, timeout_s)
    if opened.restart:
        logger.info(f"{meter.name}: starting over, {opened.restart}")
        part.reset()
        opened = source.open(0, timeout_s)
        if opened.restart:  # even a fresh request was answered oddly
            raise _Transient(opened.restart)
    if opened.complete:
        return
    assert opened.stream is not None
    with opened.stream as stream:
        if opened.start != part.size:  # a server that ignored our Range request sends it all again
            logger.info(f"{meter.name}: the server sent the whole file instead of resuming at byte {part.size:,}")
            part.reset()
        meter.total = opened.total
        with open(part.path, "ab") as out:
            while True:
                try:
                    chunk = stream.read(CHUNK_BYTES)
                except (http.client.HTTPException, OSError, ValueError) as error:
                    problem = _describe(error, timeout_s)
                    raise _Transient(f"connection lost after byte {part.size:,}: {problem}") from error
                if not chunk:
                    break
                part.append(out, chunk)
                meter.add(len(chunk), part.size)
    if opened.end is not None and part.size < opened.end:
        raise _Transient(f"short read: the stream ended at byte {part.size:,} of {opened.end:,}")
    if opened.end is not None and part.size > opened.end:
        part.reset()
        raise _Transient(f"received more bytes ({part.size:,}) than announced ({opened.end:,}); starting over")


# --- HTTP helpers -----------------------------------------------------------------------------


def _content_range(header: str | None) -> tuple[int | None, int | None, int | None]:
    """``(first, last, total)`` of ``bytes first-last/total`` or ``bytes */total``; None where absent."""
    match = _CONTENT_RANGE.fullmatch((header or "").strip())
    if not match:
        return None, None, None
    first, last, total = (None if group in (None, "*") else int(group) for group in match.groups())
    return first, last, total


def _content_length(response: http.client.HTTPResponse) -> int | None:
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, TypeError, ValueError):
        return None


def _retry_after(header: str | None) -> float | None:
    try:
        return max(float(header), 0.0) if header else None
    except ValueError:  # an HTTP date: rare enough to fall back to our own backoff
        return None


def _describe(error: BaseException, timeout_s: float) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    if isinstance(reason, TimeoutError):
        return f"timed out (no data for {timeout_s:g} s)"
    text = str(reason) or type(reason).__name__
    return text if isinstance(reason, str) else f"{type(reason).__name__}: {text}"
