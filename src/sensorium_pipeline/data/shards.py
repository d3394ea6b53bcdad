"""Whole shards of a Zarr v3 array, encoded here and written as plain files.

Writing one trial through ``zarr.Array.__setitem__`` costs more in zarr's machinery (async
tasks, per-chunk codec pipelines, index encoding) than compressing the data itself. The
converter writes whole shards only (one shard per trial and array, one writer per shard),
so it can produce the bytes directly, exactly as the Zarr v3 sharding spec lays them out:
the inner chunks one after another, each ``bytes`` (little endian) then Blosc if the array
is compressed, followed by
the shard index (``(offset, nbytes)`` as little-endian uint64 per inner chunk in C order)
and its CRC32C. The array itself (``zarr.json``) is still created by zarr, and conversion
reads a sample back through zarr, so any disagreement with zarr's reader fails loudly.

Supported arrays: sharding codec with ``index_location`` end, index codecs ``bytes`` +
``crc32c``, inner codecs ``bytes`` (+ ``blosc``), chunks that split only axis 1 of a shard.
"""

from __future__ import annotations

from pathlib import Path

import google_crc32c
import numpy as np
import zarr
from numcodecs import Blosc
from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ShardingCodec

_SHUFFLES = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}


class ShardWriter:
    """Encode and write whole shards of one sharded array (thread-safe: no shared state is written)."""

    def __init__(self, array: zarr.Array, folder: str | Path) -> None:
        """``folder`` is the array's directory in a local store (``<group>/<name>``)."""
        metadata = array.metadata
        sharding = metadata.codecs[0] if len(metadata.codecs) == 1 else None
        if not isinstance(sharding, ShardingCodec) or sharding.index_location.value != "end":
            raise ValueError(f"{array.path}: expected one sharding codec with the index at the end")
        inner = sharding.codecs
        compressed = len(inner) == 2 and isinstance(inner[1], BloscCodec)
        if not isinstance(inner[0], BytesCodec) or not (compressed or len(inner) == 1):
            raise ValueError(f"{array.path}: expected inner codecs bytes (+ blosc), got {inner}")
        index = sharding.index_codecs
        if len(index) != 2 or not isinstance(index[0], BytesCodec) or not isinstance(index[1], Crc32cCodec):
            raise ValueError(f"{array.path}: expected index codecs bytes + crc32c, got {index}")
        self.folder = Path(folder)
        self.dtype = np.dtype(array.dtype).newbyteorder("<")
        self.shard_shape = tuple(array.shards)
        self.chunk_shape = tuple(array.chunks)
        if self.chunk_shape[0] != 1 or self.chunk_shape[2:] != self.shard_shape[2:] or self.shard_shape[0] != 1:
            raise ValueError(f"{array.path}: chunks {self.chunk_shape} must split only axis 1 of shards {self.shard_shape}")
        self.chunks_per_shard = self.shard_shape[1] // self.chunk_shape[1]
        self.frames = self.chunk_shape[1]
        self.fill_value = np.array(array.fill_value, dtype=self.dtype)
        self._codec: Blosc | None = None
        if compressed:
            blosc = inner[1]
            self._codec = Blosc(
                cname=blosc.cname.value,
                clevel=blosc.clevel,
                shuffle=_SHUFFLES[blosc.shuffle.value],
                blocksize=blosc.blocksize,
                typesize=self.dtype.itemsize,
            )
        self._keys = metadata.encode_chunk_key
        self._ndim = len(self.shard_shape)

    def encode_chunk(self, block: np.ndarray) -> bytes | memoryview:
        """Encode one inner chunk from ``block`` ``(frames, *rest)``; frames beyond the block
        (the end of the array) are filled with the fill value, as zarr expects full chunks.
        An uncompressed chunk is a view of the block's bytes (no copy)."""
        if block.shape[1:] != self.chunk_shape[2:] or len(block) > self.frames:
            raise ValueError(f"block {block.shape} does not fit a chunk {self.chunk_shape[1:]}")
        if len(block) < self.frames:
            full = np.empty(self.chunk_shape[1:], dtype=self.dtype)
            full[: len(block)] = block
            full[len(block) :] = self.fill_value
            block = full
        block = np.ascontiguousarray(block, dtype=self.dtype)
        if self._codec is None:
            return memoryview(block).cast("B")
        return self._codec.encode(block)

    def write(self, row: int, chunks: list[bytes | memoryview]) -> int:
        """Write shard ``row`` from its encoded inner chunks (in order); return the bytes written."""
        if len(chunks) != self.chunks_per_shard:
            raise ValueError(f"{len(chunks)} chunks given, a shard holds {self.chunks_per_shard}")
        index = np.empty((self.chunks_per_shard, 2), dtype="<u8")
        offset = 0
        for i, chunk in enumerate(chunks):
            size = memoryview(chunk).nbytes
            index[i] = (offset, size)
            offset += size
        index_bytes = index.tobytes()
        checksum = np.uint32(google_crc32c.value(index_bytes)).astype("<u4").tobytes()
        path = self.folder / self._keys((row,) + (0,) * (self._ndim - 1))
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(path, "wb", buffering=0) as stream:  # large writes: no buffer copy
                for part in (*chunks, index_bytes, checksum):
                    view = memoryview(part)
                    while view:
                        view = view[stream.write(view) :]
        except OSError as exc:
            if exc.filename is None:  # a failed write() names no file: say which one (a full disk)
                raise OSError(exc.errno, exc.strerror, str(path)) from exc
            raise
        return offset + len(index_bytes) + len(checksum)
