"""Bounded-memory helpers of the simulator: fixed-shape arrays spooled to disk, and solutions streamed.

A full-size mouse (700 trials x 8,000 neurons x 300+ frames) has gigabytes of responses, so
nothing that grows with the number of trials stays in memory:

* :class:`RecordFile` keeps arrays of one shape in numbered slots of a plain file, written and
  read with ``pwrite``/``pread``. Not a memory map on purpose: the pages of a written map
  count in the process's resident memory until the kernel drops them, the pages of a plain
  file only in the OS cache.
* :class:`SolutionsStream` writes the solutions table a few rows at a time, as row groups of
  one Parquet file (each built by :func:`sensorium_pipeline.scoring.solutions.solutions_table`).
* :class:`OrderedWorker` runs the writes of one trial on a background thread while the next
  trial is computed.
"""

from __future__ import annotations

import contextlib
import functools
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Self

import numpy as np
import pyarrow.parquet as pq

from ..scoring.solutions import SCHEMA, solutions_table

#: Raw bytes of the solution rows buffered before they are written as one row group.
ROW_GROUP_BYTES = 64 * 2**20
#: Brotli (the solutions' codec) at a fast level: the default level costs seconds per
#: full-size row (8,000 x 300 float32 twice) for a file no smaller.
BROTLI_LEVEL = 1
#: Columns worth a dictionary; the float matrices are all distinct values.
_DICTIONARY_COLUMNS = ["mouse", "tier", "stimulus_id", "stimulus_type", "neuron_ids"]


class RecordFile:
    """Arrays of one shape and dtype in numbered slots of a file (``write(slot, a)``, ``read(slot)``)."""

    def __init__(self, path: str | Path, shape: tuple[int, ...], dtype: str | np.dtype) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self._row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
        self.record_bytes = self.shape[0] * self._row_bytes if self.shape else self.dtype.itemsize
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)

    def write(self, slot: int, array: np.ndarray) -> None:
        """Store ``array`` (cast to the file's dtype, as an assignment into an array would) at ``slot``."""
        data = array
        if not (
            isinstance(array, np.ndarray)
            and array.dtype == self.dtype
            and array.shape == self.shape
            and array.flags.c_contiguous
        ):
            data = np.empty(self.shape, dtype=self.dtype)
            data[...] = array
        view = memoryview(data).cast("B")
        offset = slot * self.record_bytes
        while view:
            written = os.pwrite(self._handle(), view, offset)
            view, offset = view[written:], offset + written

    def read(self, slot: int) -> np.ndarray:
        """The array stored at ``slot``."""
        out = np.empty(self.shape, dtype=self.dtype)
        self._read_into(out, slot * self.record_bytes)
        return out

    def read_rows(self, start: int, stop: int, n_slots: int) -> np.ndarray:
        """Rows ``start:stop`` (first axis) of the records in slots ``0..n_slots-1``, stacked."""
        stop = min(stop, self.shape[0])
        out = np.empty((n_slots, max(stop - start, 0), *self.shape[1:]), dtype=self.dtype)
        for slot in range(n_slots):
            self._read_into(out[slot], slot * self.record_bytes + start * self._row_bytes)
        return out

    def _read_into(self, out: np.ndarray, offset: int) -> None:
        view = memoryview(out).cast("B")
        while view:
            got = os.preadv(self._handle(), [view], offset)
            if got == 0:
                raise EOFError(f"{self.path}: nothing stored at byte {offset}")
            view, offset = view[got:], offset + got

    def _handle(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path} is closed")
        return self._fd

    def close(self) -> None:
        """Close and delete the file (its disk space is free at once)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SolutionsStream:
    """Write solution rows (the dicts of ``write_solutions``, ``rates`` given) as they come, in that order.

    Rows are buffered up to :data:`ROW_GROUP_BYTES` of responses and rates, then written as
    one row group; ``close`` writes the rest and the footer. The file holds exactly the table
    ``write_solutions`` would write for the same rows.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._writer: pq.ParquetWriter | None = pq.ParquetWriter(
            self.path,
            SCHEMA,
            compression="brotli",
            compression_level=BROTLI_LEVEL,
            use_dictionary=_DICTIONARY_COLUMNS,
        )
        self._rows: list[dict] = []
        self._bytes = 0
        self.n_rows = 0

    def add(self, row: dict) -> None:
        self._rows.append(row)
        self._bytes += row["responses"].nbytes + row["rates"].nbytes
        self.n_rows += 1
        if self._bytes >= ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._rows:
            return
        if self._writer is None:
            raise ValueError(f"{self.path} is closed")
        rows, self._rows, self._bytes = self._rows, [], 0
        table = solutions_table(rows)
        self._writer.write_table(table, row_group_size=len(rows))

    def close(self) -> None:
        """Write the buffered rows and the footer (an empty stream still writes a valid file)."""
        if self._writer is not None:
            try:
                self._flush()
            finally:
                writer, self._writer = self._writer, None
                writer.close()

    def abort(self) -> None:
        """Close without flushing (the caller removes the file)."""
        if self._writer is not None:
            writer, self._writer = self._writer, None
            self._rows = []
            with contextlib.suppress(Exception):  # the file is being discarded anyway
                writer.close()


class OrderedWorker:
    """Run tasks one after another on a background thread, in the order they were submitted.

    The simulator computes a trial while the previous one is written (zip members, spools,
    solution rows): numpy, BLAS, zlib and Arrow release the GIL, so the two overlap on a
    second core. ``submit`` blocks while ``depth`` tasks wait, which bounds the memory held
    by queued trials. The first error of a task is raised again by the next ``submit`` or
    ``drain``, and the tasks after it are skipped. Use as a context manager: leaving it joins
    the thread, skipping whatever is still queued when leaving on an error.
    """

    def __init__(self, name: str, depth: int = 2) -> None:
        self._queue: queue.Queue[Callable[[], object] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._skip = False
        #: Set when the worker is left on an error: a long task may poll it to stop early.
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            task = self._queue.get()
            try:
                if task is None:
                    return
                if self._error is None and not self._skip:
                    task()
            except BaseException as exc:  # noqa: BLE001 - handed to the submitting thread
                self._error = exc
            finally:
                self._queue.task_done()

    def submit(self, task: Callable[..., object], *args: object, **kwargs: object) -> None:
        self._raise()
        self._queue.put(functools.partial(task, *args, **kwargs))

    def drain(self) -> None:
        """Wait until every submitted task has run; raise the first error of one."""
        self._queue.join()
        self._raise()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    def close(self, skip: bool = False) -> None:
        if self._thread.is_alive():
            self._skip = skip
            if skip:
                self.stopping.set()
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(skip=exc_type is not None)
        if exc_type is None:
            self._raise()
