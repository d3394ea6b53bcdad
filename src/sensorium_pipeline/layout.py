"""Names fixed by the SENSORIUM 2023 data format (docs/data-format.md).

Only constants live here; reading and writing the formats is the job of ``archive``,
``store`` and ``submission``.
"""

from __future__ import annotations

FPS = 30
VIDEO_HEIGHT = 36
VIDEO_WIDTH = 64

#: Per-trial modalities, in the order the archive's ``data/`` folder lists them.
MODALITIES: tuple[str, ...] = ("videos", "responses", "behavior", "pupil_center")

#: Per-frame statistics shipped in ``meta/statistics/<modality>/all/``.
STATISTICS: tuple[str, ...] = ("mean", "std", "min", "max", "median")

TRAIN = "train"
ORACLE = "oracle"
LIVE_MAIN = "live_test_main"
FINAL_MAIN = "final_test_main"
LIVE_BONUS = "live_test_bonus"
FINAL_BONUS = "final_test_bonus"
NO_FILES = "none"

#: Tiers that carry files, in the order the competition lists them.
TIERS: tuple[str, ...] = (TRAIN, ORACLE, LIVE_MAIN, LIVE_BONUS, FINAL_MAIN, FINAL_BONUS)
#: Every value ``meta/trials/tiers.npy`` may hold.
TIER_VALUES: tuple[str, ...] = (*TIERS, NO_FILES)
#: Tiers whose responses are released for training.
LABELLED_TIERS: tuple[str, ...] = (TRAIN, ORACLE)
#: Tiers a submission predicts.
TEST_TIERS: tuple[str, ...] = (LIVE_MAIN, FINAL_MAIN, LIVE_BONUS, FINAL_BONUS)
MAIN_TIERS: tuple[str, ...] = (LIVE_MAIN, FINAL_MAIN)
BONUS_TIERS: tuple[str, ...] = (LIVE_BONUS, FINAL_BONUS)
#: The tiers a submission is scored on (predicted and evaluated by default).
SCORED_TIERS: tuple[str, ...] = (ORACLE, LIVE_MAIN, LIVE_BONUS, FINAL_MAIN, FINAL_BONUS)
#: What a model's input values are (``model.inputs``): the official normalisation, or the
#: archive's raw values (grey levels 0-255, raw behaviour and pupil centre), as the 1st-place
#: reference was fed.
INPUTS: tuple[str, ...] = ("official", "raw")

#: Natural-video trials have this many valid frames; the scorer cuts every trial here.
MAX_FRAMES = 300


def data_member(root: str, modality: str, trial_id: int) -> str:
    """Archive member path of one trial's array, e.g. ``<root>/data/videos/7.npy``."""
    return f"{root}/data/{modality}/{trial_id}.npy"


def statistic_member(root: str, modality: str, stat: str) -> str:
    """Archive member path of a per-frame statistic."""
    return f"{root}/meta/statistics/{modality}/all/{stat}.npy"


TIERS_MEMBER = "meta/trials/tiers.npy"
UNIT_IDS_MEMBER = "meta/neurons/unit_ids.npy"
COORDINATES_MEMBER = "meta/neurons/cell_motor_coordinates.npy"
