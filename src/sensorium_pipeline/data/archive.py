"""The official SENSORIUM 2023 archive: one zip per mouse (docs/data-format.md). This module alone
knows its layout: it writes it (for the simulator) and reads and validates it (for the
converter).

Layout inside ``<mouse>.zip``, all arrays ``.npy`` with time LAST::

    <root>/data/<modality>/<trial_id>.npy        videos (36, 64, T_pad), responses (N, T_pad),
                                                 behavior (2, T_pad), pupil_center (2, T_pad)
    <root>/meta/trials/tiers.npy                 (n_ids,) unicode tier per trial id
    <root>/meta/neurons/unit_ids.npy             (N,) int, increasing
    <root>/meta/neurons/cell_motor_coordinates.npy  (N, 3)
    <root>/meta/statistics/<modality>/all/<stat>.npy  per-frame, shaped like one trial

Members are read straight from the zip (no extraction). ``open_archive`` checks the whole
structure from the small meta files and the ``.npy`` headers, so a broken download stops in
seconds, before any conversion, with a message naming the archive and the member. Values
are checked when they are read: the CRC and length of every member, and (in
:meth:`Archive.read_trial`) that NaN only pads whole frames at the end of a trial.
"""

from __future__ import annotations

import io
import math
import mmap
import struct
import threading
import zipfile
import zlib
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import numpy as np

try:  # the same CRC-32 as zlib's, an order of magnitude faster (SIMD)
    from isal.isal_zlib import crc32
except ImportError:  # pragma: no cover - isal is a pinned dependency; zlib gives the same values
    from zlib import crc32

from ..atomic import atomic_path
from ..errors import ArchiveError
from ..layout import (
    COORDINATES_MEMBER,
    MODALITIES,
    NO_FILES,
    STATISTICS,
    TIER_VALUES,
    TIERS_MEMBER,
    UNIT_IDS_MEMBER,
    VIDEO_HEIGHT,
    VIDEO_WIDTH,
    data_member,
    statistic_member,
)

#: Data dtypes the competition shipped (docs/data-format.md: both are accepted).
DATA_DTYPES: tuple[str, ...] = ("float32", "float64")
#: Fixed timestamp of every member, so the same content always gives the same zip bytes.
ZIP_DATE_TIME = (1980, 1, 1, 0, 0, 0)
#: Members outside the root folder that some zips carry and that mean nothing.
_IGNORED_PREFIXES = ("__MACOSX/",)
_IGNORED_NAMES = ("config.json", ".DS_Store")
#: Errors zipfile and zlib raise for a damaged zip or member (bad CRC, bad local header, bad
#: stream, a field out of range, an encrypted or unknown compression method).
_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError, struct.error
)  # fmt: skip
#: A zip member's local header: signature, then (at offset 26) the name and extra field lengths.
_LOCAL_HEADER = struct.Struct("<4s22xHH")
#: Bytes enough for any ``.npy`` header (version 1 headers are at most 64 KiB).
_NPY_HEADER_MAX = 65536 + 16
#: Largest uncompressed member read at all (the zip's directory says it before anything is
#: inflated). A real mouse's largest member, one trial's responses, is about 30 MB in float64.
MAX_MEMBER_BYTES = 2**30
#: Largest meta file (tiers, unit ids, coordinates), read whole; real ones are below 1 MB.
MAX_META_BYTES = 64 * 2**20
#: Dimensions of a ``.npy`` array at most (the format's arrays have 1 to 3).
_MAX_NDIM = 8


# --------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------


class ArchiveWriter:
    """Write an archive in the official layout, atomically.

    Use as a context manager: members go into a temporary sibling of ``path``, which is
    renamed onto ``path`` only when the ``with`` block exits cleanly; on an exception
    nothing is left. Every member has a fixed timestamp, so equal content writes equal bytes.
    """

    def __init__(
        self,
        path: str | Path,
        root: str,
        *,
        compression: int = zipfile.ZIP_STORED,
        compresslevel: int | None = None,
    ) -> None:
        if not root or "/" in root or root.startswith("."):
            raise ValueError(f"archive root folder {root!r} must be a plain folder name")
        if compression not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ValueError(f"compression {compression!r}: expected zipfile.ZIP_STORED or ZIP_DEFLATED")
        self.path = Path(path)
        self.root = root
        self._compression = compression
        self._compresslevel = compresslevel
        self._stack: ExitStack | None = None
        self._zip: zipfile.ZipFile | None = None
        self._names: set[str] = set()

    def __enter__(self) -> ArchiveWriter:
        with ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(self.path))
            self._zip = stack.enter_context(zipfile.ZipFile(tmp, "w", allowZip64=True))
            self._stack = stack.pop_all()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        stack, self._stack, self._zip = self._stack, None, None
        assert stack is not None
        return stack.__exit__(exc_type, exc, tb)  # closes the zip, then renames or removes it

    def add_trial(
        self,
        trial_id: int,
        *,
        videos: np.ndarray,
        responses: np.ndarray,
        behavior: np.ndarray,
        pupil_center: np.ndarray,
    ) -> None:
        """Write one trial's four arrays (time last, as given) under ``<root>/data/``."""
        if isinstance(trial_id, bool) or not isinstance(trial_id, (int, np.integer)) or trial_id < 0:
            raise ValueError(f"trial id {trial_id!r}: expected a non-negative integer")
        arrays = {"videos": videos, "responses": responses, "behavior": behavior, "pupil_center": pupil_center}
        for modality in MODALITIES:
            self._write(data_member(self.root, modality, int(trial_id)), arrays[modality])

    def add_array(self, member: str, array: np.ndarray) -> None:
        """Write ``<root>/<member>``, e.g. ``meta/trials/tiers.npy``."""
        if not member.endswith(".npy") or member.startswith("/") or ".." in member.split("/"):
            raise ValueError(f"member {member!r}: expected a relative path ending in .npy")
        self._write(f"{self.root}/{member}", array)

    def _write(self, name: str, array: np.ndarray) -> None:
        if self._zip is None:
            raise RuntimeError("ArchiveWriter must be used as a context manager")
        if name in self._names:
            raise ValueError(f"{self.path}: member {name} written twice")
        self._names.add(name)
        info = zipfile.ZipInfo(name, date_time=ZIP_DATE_TIME)
        info.compress_type = self._compression
        info.external_attr = 0o644 << 16
        if hasattr(info, "compress_level"):  # Python >= 3.13
            info.compress_level = self._compresslevel
        else:
            info._compresslevel = self._compresslevel
        with self._zip.open(info, "w", force_zip64=True) as stream:
            np.lib.format.write_array(stream, np.asarray(array), allow_pickle=False)


# --------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NpyHeader:
    """What a ``.npy`` member's header promises."""

    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int  # bytes of magic + header before the data

    @property
    def size(self) -> int:
        """Elements (exact: Python integers cannot overflow)."""
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize


@dataclass(frozen=True)
class Trial:
    """One trial's arrays (time last, source dtype) and its number of valid frames."""

    trial_id: int
    arrays: dict[str, np.ndarray]
    valid_frames: int


def open_archive(path: str | Path) -> Archive:
    """Open and validate an archive (structure and ``.npy`` headers; values are read lazily).

    Raises :class:`ArchiveError` naming the archive and the member on any problem.
    """
    return Archive(path)


class Archive:
    """Read access to one validated archive; a context manager that closes its zip handles.

    :meth:`read`, :meth:`read_trial` and :meth:`statistic` may be called from several
    threads at once: each thread reads through its own ``ZipFile`` handle.
    """

    path: Path
    root: str  #: the single root folder (= the mouse's name)
    tiers: np.ndarray  #: (n_ids,) unicode, one tier per trial id, ``none`` for ids without files
    unit_ids: np.ndarray  #: (N,) int64, increasing
    coordinates: np.ndarray  #: (N, 3) as stored
    n_neurons: int
    t_pad: int  #: frames of every data array (the longest trial)
    dtype: np.dtype  #: dtype of every data array (float32 or float64)

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._handles: list[zipfile.ZipFile] = []
        self._map: mmap.mmap | None = None
        if not self.path.is_file():
            raise ArchiveError(self.path, "no such archive file")
        try:
            handle = self._handle()
            self._index(handle.infolist())
            self._validate()
        except BaseException:
            self.close()
            raise

    # -- context management ----------------------------------------------------------

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close every thread's zip handle (the memory map goes when no array uses it)."""
        with self._lock:
            handles, self._handles = self._handles, []
            self._map = None
        for handle in handles:
            handle.close()
        self._local = threading.local()

    def _handle(self) -> zipfile.ZipFile:
        handle = getattr(self._local, "zip", None)
        if handle is None:
            try:
                handle = zipfile.ZipFile(self.path)
            except _ZIP_ERRORS as exc:
                raise ArchiveError(
                    self.path, f"not a readable zip file (truncated or corrupted download?): {exc}"
                ) from exc
            with self._lock:
                self._handles.append(handle)
            self._local.zip = handle
        return handle

    # -- public facts ----------------------------------------------------------------

    @property
    def trial_ids(self) -> np.ndarray:
        """Ids of the trials that have files, sorted (int64)."""
        return self._trial_ids.copy()

    @property
    def n_trials(self) -> int:
        return len(self._trial_ids)

    def member(self, name: str) -> str:
        """Full member path of ``name`` relative to the root folder."""
        return f"{self.root}/{name}"

    def read(self, modality: str, trial_id: int) -> np.ndarray:
        """One trial's array of ``modality``, time last, in the archive's dtype (read-only)."""
        if modality not in MODALITIES:
            raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
        if int(trial_id) not in self._id_set:
            raise ArchiveError(self.path, f"trial {trial_id} has no files (tier {self._tier_of(trial_id)!r})")
        return self._read_npy(data_member(self.root, modality, int(trial_id)))

    def read_trial(self, trial_id: int) -> Trial:
        """All four arrays of a trial, with its valid frames (frames before the NaN padding).

        NaN must only pad whole frames at the end of a trial; withheld test responses are
        all zeros and count as valid throughout. A NaN anywhere else is an error, because
        the official loader would silently cut the trial there.
        """
        arrays = {m: self.read(m, trial_id) for m in MODALITIES}
        valid = min(self._valid_frames(data_member(self.root, m, int(trial_id)), arrays[m]) for m in MODALITIES)
        if valid == 0:
            folder = f"{self.root}/data/*/{int(trial_id)}.npy"
            raise ArchiveError(self.path, f"members {folder}: trial {trial_id} has no valid frame (all NaN)")
        return Trial(trial_id=int(trial_id), arrays=arrays, valid_frames=valid)

    def evict(self, trial_id: int) -> None:
        """Let the pages of a trial's members leave this process's memory (they stay in the
        operating system's file cache; an array still in use reads them again on access), so
        that a pass over the whole archive keeps a bounded resident size."""
        data = self._map
        if data is None:
            return
        for modality in MODALITIES:
            name = data_member(self.root, modality, int(trial_id))
            info = self._members.get(name)
            if info is None or info.compress_type != zipfile.ZIP_STORED:
                continue
            start = info.header_offset - info.header_offset % mmap.PAGESIZE
            end = min(len(data), self._data_offset(name, info, data) + info.compress_size)
            data.madvise(mmap.MADV_DONTNEED, start, end - start)

    def statistic(self, modality: str, stat: str) -> np.ndarray:
        """Per-frame statistic over train trials, time last, in the archive's dtype (read-only)."""
        if modality not in MODALITIES or stat not in STATISTICS:
            raise ValueError(f"unknown statistic {modality}/{stat}; expected {MODALITIES} x {STATISTICS}")
        return self._read_npy(statistic_member(self.root, modality, stat))

    def summary(self) -> dict[str, object]:
        """Plain facts for logs and conversion summaries."""
        return {
            "archive": str(self.path),
            "root": self.root,
            "n_trials": self.n_trials,
            "tiers": self.tier_counts(),
            "t_pad": self.t_pad,
            "n_neurons": self.n_neurons,
            "source_dtype": self.dtype.name,
        }

    def tier_counts(self) -> dict[str, int]:
        """Trials with files per tier."""
        values, counts = np.unique(self.tiers[self._trial_ids], return_counts=True)
        return {str(v): int(c) for v, c in zip(values, counts, strict=True)}

    def _tier_of(self, trial_id: int) -> str:
        return str(self.tiers[trial_id]) if 0 <= int(trial_id) < len(self.tiers) else "unknown id"

    # -- low-level reading -----------------------------------------------------------

    def _error(self, name: str, problem: str) -> ArchiveError:
        return ArchiveError(self.path, f"member {name}: {problem}")

    def _header(self, name: str, stream: zipfile.ZipExtFile | None = None) -> NpyHeader:
        """Parse a member's ``.npy`` header (from ``stream`` if given, left at the data)."""
        info = self._members.get(name)
        if info is None:
            raise ArchiveError(self.path, f"member {name} is missing")
        if stream is None:
            try:
                with self._handle().open(info) as fresh:
                    return self._header(name, fresh)
            except ArchiveError:
                raise
            except _ZIP_ERRORS as exc:
                raise self._error(name, f"cannot be read ({exc})") from exc
        try:
            version = np.lib.format.read_magic(stream)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
            elif version == (2, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
        except (ValueError, EOFError, TypeError, SyntaxError) as exc:
            raise self._error(name, f"not a valid .npy file ({exc})") from exc
        if len(shape) > _MAX_NDIM or any(not isinstance(s, int) or s < 0 for s in shape):
            raise self._error(name, f"not a valid .npy file (shape {shape} is not up to {_MAX_NDIM} sizes >= 0)")
        header = NpyHeader(tuple(int(s) for s in shape), np.dtype(dtype), bool(fortran), stream.tell())
        if header.dtype.hasobject:
            raise self._error(name, f"dtype {header.dtype} holds Python objects (pickles are not read)")
        if header.dtype.itemsize == 0 or header.dtype.subdtype is not None:
            raise self._error(name, f"dtype {header.dtype} is not a plain array type")
        if header.nbytes > MAX_MEMBER_BYTES:
            raise self._error(
                name, f"header declares {header.nbytes} bytes (shape {header.shape} {header.dtype}), "
                f"more than the {MAX_MEMBER_BYTES} bytes any member of the format needs",
            )  # fmt: skip
        if info.file_size != header.offset + header.nbytes:
            relation = "shorter" if info.file_size < header.offset + header.nbytes else "longer"
            raise self._error(
                name,
                f"data is {relation} than its header says ({info.file_size - header.offset} bytes "
                f"for shape {header.shape} {header.dtype}, expected {header.nbytes})",
            )
        return header

    def _read_npy(self, name: str) -> np.ndarray:
        info = self._members.get(name)
        if info is None:
            raise ArchiveError(self.path, f"member {name} is missing")
        if info.compress_type == zipfile.ZIP_STORED and not info.flag_bits & 0x1:
            if info.compress_size != info.file_size:
                raise self._error(name, f"corrupted (stored member of {info.file_size} bytes takes {info.compress_size})")
            return self._read_stored(name, info)
        try:
            with self._handle().open(info) as stream:
                header = self._header(name, stream)
                data = stream.read(header.nbytes)
                if len(data) != header.nbytes:
                    short = f"{len(data)} of {header.nbytes} bytes"
                    raise self._error(name, f"data is shorter than its header says ({short})")
                if stream.read(1):  # also drives the stream to its end, where zipfile checks the CRC
                    raise self._error(name, "data is longer than its header says")
        except ArchiveError:
            raise
        except _ZIP_ERRORS as exc:
            raise self._error(name, f"corrupted ({type(exc).__name__}: {exc})") from exc
        order = "F" if header.fortran_order else "C"
        return np.frombuffer(data, dtype=header.dtype).reshape(header.shape, order=order)  # no copy: read-only

    def _mapped(self) -> mmap.mmap:
        """The archive file mapped read-only (one map shared by every thread)."""
        with self._lock:
            if self._map is None:
                try:
                    with open(self.path, "rb") as stream:
                        self._map = mmap.mmap(stream.fileno(), 0, access=mmap.ACCESS_READ)
                except (OSError, ValueError) as exc:
                    raise ArchiveError(self.path, f"cannot be mapped for reading: {exc}") from exc
            return self._map

    def _read_stored(self, name: str, info: zipfile.ZipInfo) -> np.ndarray:
        """An uncompressed member as an array over the memory-mapped file (no copy), CRC checked.

        The official archives store their ``.npy`` members uncompressed, so the bytes in the
        file are the array: mapping them skips zipfile's chunked reads and buffer copies,
        which cost as much again as the CRC itself. The checks are zipfile's own: the local
        header's signature and name, the length, the CRC.
        """
        data = self._mapped()
        offset = self._data_offset(name, info, data)
        view = memoryview(data)[offset : offset + info.compress_size]
        if len(view) != info.compress_size:
            raise self._error(name, f"corrupted (truncated: {len(view)} of {info.compress_size} bytes present)")
        if crc32(view) != info.CRC:
            raise self._error(name, f"corrupted (BadZipFile: Bad CRC-32 for file {info.filename!r})")
        header = self._header(name, io.BytesIO(view[:_NPY_HEADER_MAX]))  # also checks the length
        array = np.frombuffer(view, dtype=header.dtype, count=header.size, offset=header.offset)
        return array.reshape(header.shape, order="F" if header.fortran_order else "C")  # read-only, over the map

    def _data_offset(self, name: str, info: zipfile.ZipInfo, data: mmap.mmap) -> int:
        """Where a member's bytes start in the file, after its local header (checked as zipfile does)."""
        start = info.header_offset
        local = data[start : start + _LOCAL_HEADER.size]
        if len(local) != _LOCAL_HEADER.size:
            raise self._error(name, "corrupted (the local header lies beyond the end of the file: truncated?)")
        signature, name_length, extra_length = _LOCAL_HEADER.unpack(local)
        name_start = start + _LOCAL_HEADER.size
        if signature != b"PK\x03\x04" or data[name_start : name_start + name_length] != info.orig_filename.encode(
            "utf-8" if info.flag_bits & 0x800 else "cp437"
        ):
            raise self._error(name, "corrupted (BadZipFile: bad local file header)")
        return name_start + name_length + extra_length

    def _valid_frames(self, name: str, array: np.ndarray) -> int:
        """Frames before the trailing NaN padding; any other non-finite value is an error.

        A frame's sum is finite only when every value in it is (or, rarely, when finite
        values overflow), so one summing pass finds the candidate frames and only those are
        inspected element by element. Errors name the first bad value's row (the neuron, or
        the ``(y, x)`` pixel of a video) and frame.
        """
        frames = array.shape[-1]
        flat = array.reshape(-1, frames)
        with np.errstate(invalid="ignore", over="ignore"):
            candidates = np.flatnonzero(~np.isfinite(flat.sum(axis=0)))
        if candidates.size == 0:
            return frames
        every = np.isnan(flat[:, candidates]).all(axis=0)
        padded = candidates[every]
        first = int(padded[0]) if padded.size else frames
        if padded.size != frames - first:
            first = frames  # the padding does not run to the end: the NaN frame is reported below
        inside = candidates[candidates < first]
        bad = ~np.isfinite(flat[:, inside])
        if bad.any():
            column, element = np.unravel_index(int(np.argmax(bad.T.ravel())), bad.T.shape)
            frame = int(inside[column])
            value = float(flat[element, frame])
            where = np.unravel_index(int(element), array.shape[:-1])
            row = int(where[0]) if len(where) == 1 else tuple(int(i) for i in where)
            kind = "NaN" if np.isnan(value) else ("+inf" if value > 0 else "-inf")
            raise self._error(
                name, f"{kind} inside the valid frames (row {row}, frame {frame}; only whole frames "
                "of NaN at the end of a trial may pad it)",
            )  # fmt: skip
        return first

    # -- structure -------------------------------------------------------------------

    def _index(self, infos: list[zipfile.ZipInfo]) -> None:
        """Find the single root folder and the data members of each modality."""
        members: dict[str, zipfile.ZipInfo] = {}
        roots: set[str] = set()
        counts = Counter(info.filename for info in infos)
        twice = sorted(name for name, count in counts.items() if count > 1)
        if twice:
            raise ArchiveError(
                self.path, f"member {twice[0]} appears {counts[twice[0]]} times ({len(twice)} names appear "
                "more than once; a zip must name each member once)",
            )  # fmt: skip
        for info in infos:
            name = info.filename
            if not name:
                raise ArchiveError(self.path, "a member has an empty name")
            if info.is_dir() or name.startswith(_IGNORED_PREFIXES) or name.rsplit("/", 1)[-1] in _IGNORED_NAMES:
                continue
            if "/" not in name:
                raise ArchiveError(self.path, f"member {name}: expected every file inside one root folder")
            if info.file_size > MAX_MEMBER_BYTES:
                raise ArchiveError(
                    self.path, f"member {name}: the zip declares {info.file_size} bytes uncompressed, more "
                    f"than the {MAX_MEMBER_BYTES} bytes any member of the format needs (refused unread)",
                )  # fmt: skip
            roots.add(name.split("/", 1)[0])
            members[name] = info
        if len(roots) != 1:
            found = sorted(roots) if roots else "none"
            raise ArchiveError(self.path, f"expected exactly one root folder, found {found}")
        self.root = roots.pop()
        self._members = members
        self._data: dict[str, dict[int, str]] = {m: {} for m in MODALITIES}
        prefixes = {f"{self.root}/data/{m}/": m for m in MODALITIES}
        for name in members:
            folder, _, base = name.rpartition("/")
            modality = prefixes.get(folder + "/")
            if modality is None:
                continue
            stem = base[: -len(".npy")] if base.endswith(".npy") else ""
            if not (stem.isascii() and stem.isdigit()) or (len(stem) > 1 and stem.startswith("0")):
                raise self._error(name, "expected data files named <trial id>.npy (0, 1, 2, ...)")
            self._data[modality][int(stem)] = name

    def _read_meta(self, member: str) -> tuple[str, np.ndarray]:
        name = self.member(member)
        info = self._members.get(name)
        if info is None:
            raise ArchiveError(self.path, f"member {name} is missing")
        if info.file_size > MAX_META_BYTES:
            raise self._error(
                name, f"the zip declares {info.file_size} bytes uncompressed, more than the {MAX_META_BYTES} "
                "bytes a meta file may take (refused unread)",
            )  # fmt: skip
        return name, self._read_npy(name)

    def _validate(self) -> None:
        """Check the structure from the meta files and the ``.npy`` headers (cheap)."""
        name, tiers = self._read_meta(TIERS_MEMBER)
        if tiers.dtype.kind == "S":
            try:
                tiers = np.char.decode(tiers, "ascii")
            except UnicodeDecodeError as exc:
                raise self._error(name, f"tier names are not ASCII text ({exc})") from exc
        if tiers.ndim != 1 or tiers.dtype.kind != "U":
            raise self._error(name, f"expected a 1-D array of strings, got shape {tiers.shape} dtype {tiers.dtype}")
        unknown = sorted(set(np.unique(tiers).tolist()) - set(TIER_VALUES))
        if unknown:
            first = int(np.flatnonzero(np.isin(tiers, unknown))[0])
            raise self._error(
                name, f"unknown tier value(s) {unknown} (first at trial id {first}); expected {list(TIER_VALUES)}"
            )
        self.tiers = tiers

        name, unit_ids = self._read_meta(UNIT_IDS_MEMBER)
        if unit_ids.ndim != 1 or unit_ids.dtype.kind not in "iu" or unit_ids.size == 0:
            raise self._error(
                name, f"expected a non-empty 1-D integer array, got shape {unit_ids.shape} dtype {unit_ids.dtype}"
            )
        if np.any(np.diff(unit_ids.astype(np.int64)) <= 0):
            raise self._error(name, "unit ids must be strictly increasing")
        self.unit_ids = unit_ids.astype(np.int64)
        self.n_neurons = len(unit_ids)

        name, coordinates = self._read_meta(COORDINATES_MEMBER)
        if coordinates.shape != (self.n_neurons, 3) or coordinates.dtype.kind not in "iuf":
            raise self._error(
                name,
                f"expected numbers of shape ({self.n_neurons}, 3) (one row per unit id), "
                f"got shape {coordinates.shape} dtype {coordinates.dtype}",
            )
        self.coordinates = coordinates

        self._check_trial_ids()
        self._check_data_headers()
        self._check_statistics()

    def _check_trial_ids(self) -> None:
        expected = set(np.flatnonzero(self.tiers != NO_FILES).tolist())
        for modality in MODALITIES:
            ids = set(self._data[modality])
            if ids == expected:
                continue
            folder = f"{self.root}/data/{modality}/"
            beyond = sorted(i for i in ids if i >= len(self.tiers))
            if beyond:
                raise self._error(
                    folder + f"{beyond[0]}.npy",
                    f"trial id {beyond[0]} is beyond the {len(self.tiers)} ids of {TIERS_MEMBER}",
                )
            extra = sorted(ids - expected)
            if extra:
                raise self._error(
                    folder + f"{extra[0]}.npy",
                    f"trial {extra[0]} has tier 'none' in {TIERS_MEMBER} but has files ({len(extra)} such ids)",
                )
            missing = sorted(expected - ids)
            others = [m for m in MODALITIES if missing[0] in self._data[m]]
            also = f" (present in {', '.join(others)})" if others else ""
            raise self._error(
                folder + f"{missing[0]}.npy",
                f"is missing{also}; trial {missing[0]} has tier {str(self.tiers[missing[0]])!r} "
                f"({len(missing)} ids of {modality} missing)",
            )
        self._trial_ids = np.array(sorted(expected), dtype=np.int64)
        self._id_set = expected
        if not expected:
            raise ArchiveError(self.path, f"no trials: every tier in {self.member(TIERS_MEMBER)} is 'none'")

    def _expected_shapes(self, t_pad: int) -> dict[str, tuple[int, ...]]:
        return {
            "videos": (VIDEO_HEIGHT, VIDEO_WIDTH, t_pad),
            "responses": (self.n_neurons, t_pad),
            "behavior": (2, t_pad),
            "pupil_center": (2, t_pad),
        }

    def _check_data_headers(self) -> None:
        """Every data member's shape and dtype; T_pad and the dtype are the ones most members have."""
        headers = {
            (modality, trial_id): self._header(data_member(self.root, modality, trial_id))
            for trial_id in self._trial_ids.tolist()
            for modality in MODALITIES
        }
        videos = [h for (m, _), h in headers.items() if m == "videos" and len(h.shape) == 3]
        frames = Counter(h.shape[2] for h in videos)
        self.t_pad = frames.most_common(1)[0][0] if frames else 0
        self.dtype = Counter(h.dtype for h in headers.values()).most_common(1)[0][0]
        shapes = self._expected_shapes(self.t_pad)
        for (modality, trial_id), header in headers.items():
            name = data_member(self.root, modality, trial_id)
            if header.shape != shapes[modality]:
                raise self._error(name, f"shape {header.shape} differs from {shapes[modality]}")
            if header.dtype.kind != "f" or header.dtype.name not in DATA_DTYPES:
                raise self._error(name, f"dtype {header.dtype} is not one of {list(DATA_DTYPES)}")
            if header.dtype != self.dtype:
                raise self._error(name, f"dtype {header.dtype} differs from {self.dtype} of the other data files")
        if self.t_pad == 0:
            first = data_member(self.root, "videos", int(self._trial_ids[0]))
            raise self._error(first, "no frames (expected videos of shape (36, 64, T) with T >= 1)")

    def _check_statistics(self) -> None:
        shapes = self._expected_shapes(self.t_pad)
        for modality in MODALITIES:
            for stat in STATISTICS:
                name = statistic_member(self.root, modality, stat)
                header = self._header(name)
                if header.shape != shapes[modality]:
                    expected = f"{shapes[modality]} (per frame, time last)"
                    raise self._error(name, f"shape {header.shape} differs from {expected}")
                if header.dtype.kind != "f":
                    raise self._error(name, f"dtype {header.dtype} is not a float type")
