"""A 64-bit perceptual hash of a video, so that folds can group near-duplicate videos
(:func:`folds.phash_groups`).

Exact repeats share bytes (``stimulus_group`` in the store), but the same clip may also come
back re-encoded, rescaled in contrast or with noise; a train trial and a test trial showing
such near-copies must not land on both sides of a fold.

The hash is a spatio-temporal DCT hash with random-hyperplane bits (SimHash): the valid
frames are averaged into ``TIME_BINS`` segments and downsampled to ``SIDE x SIDE`` pixels by
area averaging; a 3-D DCT-II keeps the ``TIME_BINS x LOW x LOW`` lowest frequencies, the
constant term (mean grey level) is dropped, and bit ``k`` is the sign of the projection of
these coefficients on a fixed random direction ``k``. The Hamming distance of two hashes
then estimates the angle between their coefficient vectors: noise and re-encoding barely
turn the vector (few bits), a change of contrast or brightness does not turn it at all,
and unrelated clips are near-orthogonal (about 32 bits). Median-thresholding the 64 lowest
coefficients, as the classic image pHash does, proved fragile on gratings, whose low
frequencies are all near zero. Measured on the simulator's stimulus families: noisy,
contrast-changed, 8-bit re-quantised copies differ in at most 8 bits, different clips in 16+.
Hashes are stored as ``int64`` (the ``uint64`` bit pattern, first bit the most significant).
"""

from __future__ import annotations

from functools import cache

import numpy as np

BITS = 64
#: Temporal segments the valid frames are averaged into before the DCT.
TIME_BINS = 8
#: Side of the square image every segment is resampled to (as in the classic image pHash).
SIDE = 32
#: Spatial DCT frequencies kept per axis.
LOW = 16
#: Seed of the fixed random hyperplanes (changing it changes every hash: bump the converter version).
SEED = 20230


@cache
def _dct_matrix(n: int) -> np.ndarray:
    """Orthonormal DCT-II matrix ``(n, n)``: ``coefficients = M @ signal``."""
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    matrix = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    matrix[0] /= np.sqrt(2.0)
    return matrix


@cache
def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """``(n_out, n_in)`` matrix averaging ``n_in`` samples into ``n_out`` equal intervals (area resampling)."""
    edges = np.linspace(0.0, n_in, n_out + 1)
    lo, hi = edges[:-1, None], edges[1:, None]
    x = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, x + 1) - np.maximum(lo, x), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


@cache
def _hyperplanes() -> np.ndarray:
    """``(BITS, TIME_BINS * LOW * LOW)`` fixed random directions, one per bit."""
    return np.random.default_rng(SEED).standard_normal((BITS, TIME_BINS * LOW * LOW))


def video_phash(video: np.ndarray, *, time_axis: int = 0, valid_frames: int | None = None) -> int:
    """The 64-bit hash of one video ``(T, H, W)`` (or time on ``time_axis``), as a signed int64.

    Only the first ``valid_frames`` frames count; by default those before the first frame
    that is NaN throughout (the archive's end padding). A video without a valid frame hashes to 0.
    """
    video = np.asarray(video)
    if video.ndim != 3:
        raise ValueError(f"expected a video (T, H, W), got shape {video.shape}")
    frames = np.moveaxis(video, time_axis, -1)  # (H, W, T): a view for either layout
    height, width, total = frames.shape
    flat = frames.reshape(height * width, total)
    if valid_frames is None:
        padding = np.flatnonzero(np.all(np.isnan(flat), axis=0))
        valid_frames = int(padding[0]) if padding.size else total
    n = min(int(valid_frames), total)
    if n <= 0:
        return 0
    # Temporal segments first: one pass over the valid frames, summed in float64 for stable bits.
    if n >= TIME_BINS:
        bounds = (np.arange(TIME_BINS) * n) // TIME_BINS
        counts = np.diff(np.append(bounds, n))
        sums = np.add.reduceat(flat[:, :n], bounds, axis=1, dtype=np.float64)
        segments = sums / counts
    else:
        segments = flat[:, :n].astype(np.float64) @ _area_matrix(n, TIME_BINS).T
    segments = np.ascontiguousarray(np.nan_to_num(segments, nan=0.0).T).reshape(TIME_BINS, height, width)
    # Resample and transform each axis in turn (matrix products, not one big einsum loop).
    rows = (_dct_matrix(SIDE)[:LOW] @ _area_matrix(height, SIDE)) @ segments  # (TIME_BINS, LOW, W)
    both = rows @ (_dct_matrix(SIDE)[:LOW] @ _area_matrix(width, SIDE)).T  # (TIME_BINS, LOW, LOW)
    coefficients = (_dct_matrix(TIME_BINS) @ both.reshape(TIME_BINS, -1)).ravel()
    coefficients[0] = 0.0  # the mean grey level says nothing about the clip
    bits = _hyperplanes() @ coefficients > 0
    value = int(np.packbits(bits.astype(np.uint8)).view(">u8")[0])
    return int(np.array(value, dtype=np.uint64).view(np.int64))


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bits that differ between hashes (int64 bit patterns), elementwise with broadcasting."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return np.bitwise_count(x.view(np.uint64)).astype(np.int64)
