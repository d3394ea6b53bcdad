"""Perceptual video hash: near-copies of a clip stay close, different clips are far apart."""

from __future__ import annotations

import numpy as np
import pytest

from sensorium_pipeline.data.phash import hamming, video_phash
from sensorium_pipeline.simulate.stimuli import FAMILIES, NATURAL, make_stimulus
from sensorium_pipeline.training.folds import phash_groups

FAMILY_NAMES = (NATURAL, *FAMILIES)
#: The documented default of `training.phash_distance` (config/README.md).
PHASH_DISTANCE = 8


def _clip(family: str, index: int, frames: int = 120) -> np.ndarray:
    return make_stimulus(family, np.random.default_rng([11, FAMILY_NAMES.index(family), index]), frames)


def _near_copy(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Noise, a contrast and brightness change, 8-bit re-quantisation: a re-encoded copy."""
    noisy = (video + rng.normal(0.0, 10.0, video.shape)) * 0.8 + 20.0
    return np.clip(np.round(noisy), 0, 255).astype(np.float32)


@pytest.fixture(scope="module")
def clips() -> dict[tuple[str, int], np.ndarray]:
    return {(family, i): _clip(family, i) for family in FAMILY_NAMES for i in range(3)}


def test_near_copies_are_close_and_different_clips_far(clips):
    rng = np.random.default_rng(0)
    originals = np.array([video_phash(v) for v in clips.values()])
    copies = np.array([video_phash(_near_copy(v, rng)) for v in clips.values()])
    assert hamming(originals, copies).max() <= 8
    distances = hamming(originals[:, None], originals[None, :])
    off_diagonal = distances[~np.eye(len(originals), dtype=bool)]
    assert off_diagonal.min() >= 16 and 26 <= np.median(off_diagonal) <= 38  # about half the bits


def test_padding_and_layout_do_not_change_the_hash(clips):
    video = clips[(NATURAL, 0)].astype(np.float32)
    padded = np.concatenate([video, np.full((30, *video.shape[1:]), np.nan, np.float32)])
    assert video_phash(padded) == video_phash(video)
    assert video_phash(np.moveaxis(padded, 0, -1), time_axis=-1) == video_phash(video)  # archive layout
    assert video_phash(np.full((5, 36, 64), np.nan)) == 0
    assert video_phash(video.astype(np.float64)) == video_phash(video)


def test_groups_are_connected_components():
    base = np.array([0, 0b111, 0b1111111 << 20, -1], dtype=np.int64)
    # 0 and 0b111 differ in 3 bits; 0b1 bridges nothing new; -1 (all ones) is far from the rest.
    hashes = np.array([base[0], base[2], base[1], base[3], 0b1], dtype=np.int64)
    assert phash_groups(hashes, 3).tolist() == [0, 1, 0, 2, 0]
    assert phash_groups(hashes, 0).tolist() == [0, 1, 2, 3, 4]
    assert phash_groups(hashes, 64).tolist() == [0, 0, 0, 0, 0]
    chain = np.array([0, 0b11, 0b1111, 0b111111], dtype=np.int64)  # each 2 bits from the next
    assert phash_groups(chain, 2).tolist() == [0, 0, 0, 0]
    assert phash_groups(chain, 2, block=1).tolist() == [0, 0, 0, 0]
    assert phash_groups(np.array([], dtype=np.int64), 4).tolist() == []
    with pytest.raises(ValueError, match="max_distance"):
        phash_groups(chain, 65)


def test_repeats_of_simulated_stimuli_group_together(clips):
    rng = np.random.default_rng(1)
    keys = list(clips)
    order = rng.permutation(2 * len(keys))
    videos = [clips[k] for k in keys] + [_near_copy(clips[k], rng) for k in keys]
    hashes = np.array([video_phash(videos[i]) for i in order])
    groups = phash_groups(hashes, PHASH_DISTANCE)
    clip_of = np.array([i % len(keys) for i in order])
    for clip in range(len(keys)):
        assert len(set(groups[clip_of == clip])) == 1
    assert len(set(groups)) == len(keys)
