"""Train one model config on one fold of the given mice, resumably, as the references train.

``train`` is a plain function of its inputs: Poisson loss on targets clipped at 0 (official
normalised responses, or raw ones as the 1st-place entry: ``targets``), AdamW with a linear
warm-up per step then a per-step cosine decay (or reduce-on-plateau, or constant), an EMA of the
weights (validated and saved instead of the raw weights when on), CutMix per window, bf16
autocast on CUDA, gradient accumulation, early stopping on the validation single-trial
correlation (optionally several times, restoring the best weights: the starter kit), and
optionally distillation from a first-stage teacher (:mod:`distill`). ``batching`` groups a
step's windows: one mouse per batch, mixed mice through one core pass (the 1st-place entry), or
one batch of every mouse per optimiser step (the starter kit), each with its reference's loss
reduction.

After every epoch the whole training state (weights, EMA, optimiser, scheduler, random
states, best weights, early-stopping counters, metrics so far) is written atomically to
``checkpoint_dir/last.pt``; a rerun after an interruption resumes from it and ends exactly
where an uninterrupted run would (same seed, same device, deterministic ops). A ``last.pt``
that cannot be read is moved aside and the fold starts afresh. The metrics go to a CSV, one row
per epoch (:data:`METRIC_COLUMNS`), and one plain log line per epoch.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import pickle
import time
import zipfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from ..atomic import atomic_path, write_text_atomic
from ..data.normalizer import TARGETS
from ..data.sources import Batch, WindowSource
from ..devices import DEVICES, resolve_device
from ..errors import ConfigError, PathError
from ..layout import LABELLED_TIERS, TEST_TIERS, TIERS, VIDEO_HEIGHT, VIDEO_WIDTH
from ..models import ModelConfig, MouseMeta, build_model, save_trained
from ..models.config import reject_unknown
from ..scoring.metrics import corr
from ..scoring.predict import predict_windows
from .cutmix import CutMixPlan
from .distill import DistillConfig, Teacher, other_mice
from .ema import ModelEma
from .folds import fold_rows
from .learning_check import learning_warning
from .losses import POISSON_EPS, poisson_nll
from .placement import MODES, load_sources, released_tiers
from .sampler import BATCHINGS, Windows, WindowSampler

logger = logging.getLogger(__name__)

SCHEDULERS = ("plateau", "cosine", "constant")
MOUSE_SAMPLING = ("uniform", "trials")
CHECKPOINT_NAME = "last.pt"
METRIC_COLUMNS = ("epoch", "step", "lr", "train_loss", "val_correlation", "seconds")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, sampling and early stopping: the ``training:`` section of a model config."""

    seed: int = 0
    threads: int = 2
    device: str = "auto"
    max_epochs: int = 200
    batches_per_epoch: int = 500
    batch_size: int = 8
    window_frames: int = 80
    lr: float = 0.005
    weight_decay: float = 0.0
    warmup_epochs: int = 0
    scheduler: str = "plateau"
    plateau_factor: float = 0.3
    plateau_patience: int = 3
    min_lr: float = 1e-5
    #: Early stopping: epochs without a better validation correlation before training stops.
    patience: int = 8
    grad_clip: float = 0.0
    #: L1 penalty on the readout weights (per neuron, averaged), as the official ``gamma_readout``.
    readout_l1: float = 0.0
    #: First frames of each window left out of the loss; ``None`` = the model's temporal context.
    loss_skip_frames: int | None = None
    #: First frames of each validation trial left out of the correlation (the scorer skips 50).
    val_skip_first: int = 50
    #: At most this many validation trials per mouse (evenly spaced, fixed), ``None`` = all.
    val_max_trials: int | None = None
    val_batch_size: int = 8
    #: Optimiser steps of ``grad_accumulation`` micro-batches each; the effective batch is
    #: ``batch_size * grad_accumulation`` windows (small GPUs: smaller batch, more accumulation).
    grad_accumulation: int = 1
    #: EMA decay of the weights (the winners: 0.999); 0 = off.
    ema_decay: float = 0.0
    #: CutMix probability per micro-batch (the winners: 0.5) and its Beta(alpha, alpha).
    cutmix_prob: float = 0.0
    cutmix_alpha: float = 1.0
    #: bf16 autocast on CUDA (never on CPU, where it is slow).
    mixed_precision: bool = True
    #: Deterministic algorithms (bit-identical resume; may cost speed on GPU).
    deterministic: bool = True
    #: How a batch's mouse is chosen: ``uniform`` (the winners) or by ``trials`` (training trials).
    mouse_sampling: str = "uniform"
    #: Where the training data lives (:func:`placement.load_sources`): auto, ram, device (GPU), lazy.
    data_mode: str = "auto"
    #: DataLoader worker processes cutting windows (0 = in the training process).
    loader_workers: int = 0
    #: Model frames between validation windows; ``None`` = half of ``window_frames``.
    val_stride: int | None = None
    #: What the model is trained to predict (:data:`normalizer.TARGETS`): ``normalized`` (responses x
    #: the official per-frame precision) or ``raw`` (the recorded responses clipped at 0, as the
    #: 1st-place entry trained; its predictions are multiplied by the precision when written).
    targets: str = "normalized"
    #: How the windows of a step are grouped (:data:`sampler.BATCHINGS`): ``per_mouse`` (one mouse
    #: per batch, mean Poisson loss), ``mixed`` (each window's mouse drawn on its own, one core
    #: pass, the reference's loss: summed over neurons and frames, averaged over windows) or
    #: ``cycle`` (one batch of every mouse per optimiser step, gradients summed, the starter
    #: kit's loss: sqrt(training trials / batch) x summed Poisson loss + the model's regulariser).
    batching: str = "per_mouse"
    #: When early-stopping patience runs out: how many times it may (training goes on, at the
    #: plateau-lowered rate, until the last; the starter kit: 4) ...
    lr_decay_steps: int = 1
    #: ... and whether the best weights are restored each time it does (the starter kit: true).
    restore_best: bool = False
    #: A validation score counts as better only above the best + this (absolute; also the
    #: plateau scheduler's threshold); ``None`` = any increase, plateau at PyTorch's default.
    improvement_threshold: float | None = None
    #: The package's earlier EMA (decay warm-up, buffers copied) instead of the reference's.
    ema_warmup: bool = False
    #: Training targets above this many times the neuron's mean response (over its training
    #: trials) are lowered to it, so that a few bursts do not steer whole steps; ``None`` keeps
    #: them. Validation and prediction never see it.
    target_clip: float | None = None
    #: Learning rate of the Gaussian readouts' position networks, relative to ``lr``.
    position_lr_scale: float = 1.0

    def __post_init__(self) -> None:
        ints = {
            "seed": 0,
            "threads": 1,
            "max_epochs": 1,
            "batches_per_epoch": 1,
            "batch_size": 1,
            "window_frames": 1,
            "warmup_epochs": 0,
            "plateau_patience": 0,
            "patience": 1,
            "val_skip_first": 0,
            "val_batch_size": 1,
            "grad_accumulation": 1,
            "loader_workers": 0,
            "lr_decay_steps": 1,
        }
        for name, minimum in ints.items():
            _check_int(name, getattr(self, name), minimum)
        for name, minimum in (("loss_skip_frames", 0), ("val_max_trials", 1), ("val_stride", 1)):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), minimum)
        if self.mouse_sampling not in MOUSE_SAMPLING:
            raise ConfigError(f"training.mouse_sampling: {self.mouse_sampling!r} is not one of {list(MOUSE_SAMPLING)}")
        if self.data_mode not in MODES:
            raise ConfigError(f"training.data_mode: {self.data_mode!r} is not one of {list(MODES)}")
        numbers = ("lr", "weight_decay", "plateau_factor", "min_lr", "grad_clip", "readout_l1")
        for name in (*numbers, "cutmix_alpha", "ema_decay", "cutmix_prob"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"training.{name}: expected a number >= 0, got {value!r}")
        if not 0 <= self.ema_decay < 1:
            raise ConfigError(f"training.ema_decay: expected a number in [0, 1), got {self.ema_decay!r}")
        if not 0 <= self.cutmix_prob <= 1:
            raise ConfigError(f"training.cutmix_prob: expected a number in [0, 1], got {self.cutmix_prob!r}")
        if self.cutmix_prob > 0 and not self.cutmix_alpha > 0:
            raise ConfigError(f"training.cutmix_alpha: expected a positive number, got {self.cutmix_alpha!r}")
        if self.targets not in TARGETS:
            raise ConfigError(f"training.targets: {self.targets!r} is not one of {list(TARGETS)}")
        if self.batching not in BATCHINGS:
            raise ConfigError(f"training.batching: {self.batching!r} is not one of {list(BATCHINGS)}")
        _check_positive("position_lr_scale", self.position_lr_scale)
        if self.target_clip is not None:
            _check_positive("target_clip", self.target_clip, " or null")
        threshold = self.improvement_threshold
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, int | float)
                                      or threshold < 0):
            raise ConfigError(f"training.improvement_threshold: expected a number >= 0 or null, got {threshold!r}")
        for name in ("mixed_precision", "deterministic", "restore_best", "ema_warmup"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"training.{name}: expected true or false, got {getattr(self, name)!r}")
        _check_positive("lr", self.lr)
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"training.scheduler: {self.scheduler!r} is not one of {list(SCHEDULERS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"training.device: {self.device!r} is not one of {list(DEVICES)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return cls(**reject_unknown(cls, data, "training"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_positive(name: str, value: Any, alternative: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ConfigError(f"training.{name}: expected a positive number{alternative}, got {value!r}")


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"training.{name}: expected an integer >= {minimum}, got {value!r}")


def load_model_file(
    path: str | Path, *, seed: int | None = None, threads: int | None = None, device: str | None = None
) -> tuple[ModelConfig, TrainConfig]:
    """Read ``config/models/<name>.yaml`` (sections ``model:`` and ``training:``); the keyword
    arguments, when given, override the file (the workflow sets them from its own config)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read the model config: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping with sections 'model' and 'training'")
    unknown = sorted(set(data) - {"model", "training"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}; expected 'model' and 'training'")
    try:
        model = ModelConfig.from_dict(data.get("model") or {})
        training = dict(data.get("training") or {})
        for key, value in (("seed", seed), ("threads", threads), ("device", device)):
            if value is not None:
                training[key] = value
        return model, TrainConfig.from_dict(training)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


def poisson_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = POISSON_EPS) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to a constant) of non-negative targets."""
    return poisson_nll(prediction, target, eps).mean()


def poisson_sum(prediction: torch.Tensor, target: torch.Tensor, eps: float = POISSON_EPS) -> torch.Tensor:
    """The same, summed over every element (``PoissonNLLLoss(log_input=False)``, reduction sum)."""
    return poisson_nll(prediction, target, eps).sum()


@torch.no_grad()
def validation_correlation(
    model: torch.nn.Module,
    data: Mapping[str, WindowSource],
    rows: Mapping[str, np.ndarray],
    *,
    skip_first: int,
    window_frames: int,
    stride: int,
    batch_size: int,
    device: torch.device,
    autocast: bool = False,
    targets: str = "normalized",
) -> float:
    """Single-trial correlation on whole validation trials, predicted with the sliding windows
    of prediction (:func:`predict.predict_windows`): per neuron over the trials' frames (from
    ``skip_first``), mean over neurons, then mean over mice. With ``targets="raw"`` both the
    responses and the predictions are multiplied by the per-frame precision first, so the score
    is the one the scorer gives the written predictions."""
    scores = []
    for mouse in sorted(rows):
        source, chosen = data[mouse], np.asarray(rows[mouse])
        if not len(chosen):
            continue
        predicted = predict_windows(
            model, source, chosen, window_frames=window_frames, stride=stride, batch_size=batch_size,
            device=device, autocast=autocast,
        )
        observed, predictions = [], []
        for i, row in enumerate(chosen):
            n = int(source.n_frames[row])
            start = skip_first if n > skip_first else 0
            recorded = source.window([row], [0], n).responses[0].cpu().numpy()
            values = predicted[i, :n]
            if targets == "raw":
                recorded, values = recorded * source.precision[:n], values * source.precision[:n]
            observed.append(recorded[start:])
            predictions.append(values[start:])
        scores.append(float(np.mean(corr(np.concatenate(observed), np.concatenate(predictions)))))
    return float(np.mean(scores)) if scores else float("nan")


def _validation_subset(rows: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).round().astype(np.int64)]


def _seeds(seed: int, fold: int) -> tuple[int, int, int]:
    """Independent seeds of the weights, the window sampler and the augmentations of one fold."""
    a, b, c = np.random.SeedSequence([seed, fold]).generate_state(3)
    return int(a), int(b), int(c)


def lr_at(cfg: TrainConfig, step: int) -> float | None:
    """Learning rate of optimiser step ``step`` (0-based): linear warm-up to ``lr`` over
    ``warmup_epochs``, then cosine down to ``min_lr`` at the last step of ``max_epochs`` (or
    constant); ``None`` after the warm-up of ``plateau`` (reduce-on-plateau owns it then)."""
    warmup = cfg.warmup_epochs * cfg.batches_per_epoch
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    if cfg.scheduler == "plateau":
        return None
    if cfg.scheduler == "constant":
        return cfg.lr
    total = max(cfg.max_epochs * cfg.batches_per_epoch - warmup - 1, 1)
    progress = min((step - warmup) / total, 1.0)
    return float(cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + np.cos(np.pi * progress)))


def _write_metrics(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    write_text_atomic(path, buffer.getvalue())


def _signature(
    model_config: ModelConfig, train_config: TrainConfig, fold: int, n_folds: int, mice: list[str], extra: dict
) -> dict:
    """What a checkpoint must match to be resumed (threads and device may change)."""
    training = {k: v for k, v in train_config.to_dict().items() if k not in ("threads", "device", "data_mode", "loader_workers")}
    return {"model": model_config.to_dict(), "training": training, "fold": fold, "n_folds": n_folds, "mice": mice,
            **extra}


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only; a no-op context elsewhere."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


#: What a checkpoint must hold to be resumed.
CHECKPOINT_KEYS = frozenset(
    {"signature", "model", "ema", "optimizer", "scheduler", "sampler", "augment_rng", "torch_rng", "best_state",
     "state", "history"}
)


#: What ``torch.load`` raises for a damaged file (truncated, bit-flipped, not a checkpoint).
_DAMAGED = (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, KeyError,
            AttributeError, TypeError, IndexError, OverflowError)


def read_checkpoint(path: Path) -> dict | None:
    """The checkpoint at ``path``, or ``None`` when there is none. A file that cannot be read as
    one (truncated, overwritten, not a checkpoint) is moved aside to ``<name>.corrupt-<time>``
    with one log line saying so, and ``None`` is returned: the fold starts afresh."""
    if not path.exists():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(saved, dict):
            raise ValueError(f"holds a {type(saved).__name__}, not a checkpoint")
        missing = sorted(CHECKPOINT_KEYS - set(saved))
        if missing:
            raise ValueError(f"lacks {missing}")
        return saved
    except PermissionError as exc:  # not damage: the file is fine, the job may not read it
        raise PathError(path, f"cannot be read ({exc.strerror})") from exc
    except _DAMAGED as exc:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = path.with_name(f"{path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            aside, n = path.with_name(f"{path.name}.corrupt-{stamp}-{n}"), n + 1
        os.replace(path, aside)
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        logger.warning(f"{path}: corrupt checkpoint ({type(exc).__name__}: {reason}); moved to {aside}; the fold starts afresh")
        return None


def _loss_inputs(
    groups: Sequence[tuple[Windows, Batch]], plans: Sequence[CutMixPlan]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """The groups' windows concatenated (video, behaviour, pupil centre) and the CutMix of the
    stacked input that keeps only the own windows of every group, boxes pasted."""
    sizes = [len(batch) for _, batch in groups]

    def mix(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, sizes)
        return torch.cat([plan.inputs(part) for plan, part in zip(plans, parts, strict=True)])

    cat = lambda name: torch.cat([getattr(b, name) for _, b in groups])  # noqa: E731
    return cat("video"), cat("behavior"), cat("pupil_center"), mix


def _penalty(model: torch.nn.Module, cfg: TrainConfig, mouse: str) -> torch.Tensor | float:
    """The model's regulariser for a batch of ``mouse`` (when it has one) plus the readout L1."""
    total: torch.Tensor | float = 0.0
    regularizer = getattr(model, "regularizer", None)
    if callable(regularizer):
        total = total + regularizer(mouse)
    if cfg.readout_l1 > 0:
        total = total + cfg.readout_l1 * model.readout_l1(mouse)
    return total


@dataclass
class _StepContext:
    """What one training micro-batch needs besides its windows."""

    model: torch.nn.Module
    cfg: TrainConfig
    skip: int
    frame_size: tuple[int, int]
    rng: np.random.Generator
    mice: list[str]
    trials: dict[str, int]
    teacher: Teacher | None
    distill: DistillConfig
    #: Per mouse, each neuron's largest training target (``training.target_clip``), or none.
    ceilings: dict[str, torch.Tensor] = field(default_factory=dict)


def _plans(ctx: _StepContext, groups: Sequence[tuple[Windows, Batch]]) -> list[CutMixPlan]:
    return [CutMixPlan.draw(w.partners, len(b), *ctx.frame_size, ctx.cfg.cutmix_alpha, ctx.rng) for w, b in groups]


def _targets(plan: CutMixPlan, batch: Batch, skip: int, ceiling: torch.Tensor | None) -> torch.Tensor:
    """Own windows' targets, clipped at 0 (negatives never reach the Poisson loss) and at the
    mouse's ``ceiling`` per neuron (``training.target_clip``), CutMixed."""
    responses = batch.responses.float().clamp_min(0.0)
    if ceiling is not None:
        responses = torch.minimum(responses, ceiling)
    return plan.targets(responses)[:, skip:]


def _shared_pass_loss(ctx: _StepContext, groups: Sequence[tuple[Windows, Batch]]) -> torch.Tensor:
    """Loss of one micro-batch through one core pass (``per_mouse`` and ``mixed`` batching)."""
    model, cfg, skip = ctx.model, ctx.cfg, ctx.skip
    plans = _plans(ctx, groups)
    video, behavior, pupil, mix = _loss_inputs(groups, plans)
    features = model.encode(video, behavior, pupil, mix)
    own = [plan.n_own for plan in plans]
    shift_pupil = torch.cat([plan.targets(b.pupil_center) for plan, (_, b) in zip(plans, groups, strict=True)])
    feats, pupils = torch.split(features, own), torch.split(shift_pupil, own)
    targets = [_targets(plan, b, skip, ctx.ceilings.get(w.mouse)) for plan, (w, b) in zip(plans, groups, strict=True)]
    names = [w.mouse for w, _ in groups]
    total_windows = sum(own)
    distilled = []
    if ctx.teacher is not None:
        distilled = other_mice(ctx.teacher, ctx.mice, names[0] if cfg.batching == "per_mouse" else None,
                               ctx.distill, ctx.rng)
    if cfg.batching == "per_mouse":
        (mouse,) = names
        out = model.decode(features, mouse, shift_pupil).float()
        loss = poisson_loss(out[:, skip:], targets[0])
        if distilled:
            teacher = ctx.teacher.predict(video, behavior, pupil, distilled, mix, shift_pupil)
            parts = [poisson_loss(model.decode(features, m, shift_pupil).float()[:, skip:], teacher[m][:, skip:])
                     for m in distilled]
            w = ctx.distill.weight
            loss = (1.0 - w) * loss + w * torch.stack(parts).mean()
        return loss + _penalty(model, cfg, mouse)
    # mixed: every target's Poisson loss summed over neurons and frames, weighted per window
    own_sum = sum(poisson_sum(model.decode(f, m, p).float()[:, skip:], t)
                  for f, m, p, t in zip(feats, names, pupils, targets, strict=True))
    loss = own_sum / total_windows
    if distilled:
        teacher = ctx.teacher.predict(video, behavior, pupil, distilled, mix, shift_pupil)
        owner = np.repeat(np.array(names, dtype=object), own)
        distilled_sum, pairs = 0.0, 0
        for m in distilled:
            keep = torch.from_numpy(owner != m).to(features.device)
            count = int(keep.sum())
            if count:
                out = model.decode(features[keep], m, shift_pupil[keep]).float()
                distilled_sum = distilled_sum + poisson_sum(out[:, skip:], teacher[m][keep][:, skip:])
                pairs += count
        if pairs:
            w = ctx.distill.weight
            loss = (1.0 - w) * own_sum / total_windows + w * distilled_sum / pairs
    penalty = sum(len(t) / total_windows * _penalty(model, cfg, m) for m, t in zip(names, targets, strict=True))
    return loss + penalty


def _micro_batch(ctx: _StepContext, groups: Sequence[tuple[Windows, Batch]], device: torch.device) -> float:
    """Forward and backward of one micro-batch; returns its loss."""
    cfg = ctx.cfg
    if cfg.batching != "cycle":
        with _autocast(device, cfg.mixed_precision):
            loss = _shared_pass_loss(ctx, groups)
        (loss / cfg.grad_accumulation).backward()
        return float(loss.detach())
    # cycle: one forward and backward per mouse, gradients summed (the starter kit)
    total = 0.0
    for windows, batch in groups:
        (plan,) = _plans(ctx, [(windows, batch)])
        with _autocast(device, cfg.mixed_precision):
            video, behavior, pupil, mix = _loss_inputs([(windows, batch)], [plan])
            features = ctx.model.encode(video, behavior, pupil, mix)
            out = ctx.model.decode(features, windows.mouse, plan.targets(batch.pupil_center)).float()
            scale = float(np.sqrt(ctx.trials[windows.mouse] / plan.n_own))
            loss = scale * poisson_sum(out[:, ctx.skip :], _targets(plan, batch, ctx.skip, ctx.ceilings.get(windows.mouse)))
            loss = loss + _penalty(ctx.model, cfg, windows.mouse)
        (loss / cfg.grad_accumulation).backward()
        total += float(loss.detach())
    return total


@dataclass
class _Run:
    """One fold's training objects and the counters a checkpoint carries between runs."""

    model: torch.nn.Module
    ema: ModelEma | None
    optimizer: torch.optim.Optimizer
    plateau: torch.optim.lr_scheduler.ReduceLROnPlateau | None
    sampler: WindowSampler
    augment_rng: np.random.Generator
    device: torch.device
    signature: dict
    best_state: dict[str, torch.Tensor]
    state: dict[str, Any] = field(
        default_factory=lambda: {"epoch": 0, "best_score": -np.inf, "best_epoch": -1, "bad_epochs": 0, "decays": 0,
                                 "done": False}
    )
    history: list[dict] = field(default_factory=list)

    @property
    def evaluated(self) -> torch.nn.Module:
        """The weights validated and saved: the EMA's when on, else the model's."""
        return self.ema.module if self.ema is not None else self.model


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _save_checkpoint(path: Path, run: _Run) -> None:
    """The whole training state, atomically: a rerun resumes from exactly here."""
    device = run.device
    with atomic_path(path) as tmp:
        torch.save(
            {
                "signature": run.signature,
                "model": run.model.state_dict(),
                "ema": None if run.ema is None else run.ema.state_dict(),
                "optimizer": run.optimizer.state_dict(),
                "scheduler": None if run.plateau is None else run.plateau.state_dict(),
                "sampler": run.sampler.state(),
                "augment_rng": run.augment_rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                "best_state": run.best_state,
                "state": run.state,
                "history": run.history,
            },
            tmp,
        )


def _restore_checkpoint(run: _Run, saved: Mapping[str, Any], path: Path) -> None:
    """Put a checkpoint written by :func:`_save_checkpoint` back into ``run``; one of another
    config or fold is refused."""
    if saved.get("signature") != run.signature:
        raise PathError(path, "holds a checkpoint of another model/training config or fold; "
                        "delete it or use another checkpoint folder")
    run.model.load_state_dict(saved["model"])
    if run.ema is not None:
        run.ema.load_state_dict(saved["ema"])
    run.optimizer.load_state_dict(saved["optimizer"])
    if run.plateau is not None:
        run.plateau.load_state_dict(saved["scheduler"])
    run.sampler.set_state(saved["sampler"])
    run.augment_rng.bit_generator.state = saved["augment_rng"]
    torch.set_rng_state(saved["torch_rng"])
    if run.device.type == "cuda" and saved.get("cuda_rng") is not None:
        torch.cuda.set_rng_state(saved["cuda_rng"], run.device)
    run.best_state, run.state, run.history = saved["best_state"], saved["state"], saved["history"]


def _train_epoch(run: _Run, ctx: _StepContext, cfg: TrainConfig, epoch: int) -> list[float]:
    """The optimiser steps of one epoch; returns each step's loss."""
    model, optimizer, device = run.model, run.optimizer, run.device
    model.train()
    losses = []
    # the epoch's windows are drawn up front (the same for any number of loader workers)
    steps = iter(run.sampler.steps(cfg.batches_per_epoch * cfg.grad_accumulation, device=device,
                                   workers=cfg.loader_workers))
    for step in range(cfg.batches_per_epoch):
        lr = lr_at(cfg, epoch * cfg.batches_per_epoch + step)
        if lr is not None:
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for _ in range(cfg.grad_accumulation):
            total += _micro_batch(ctx, next(steps), device) / cfg.grad_accumulation
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        if run.ema is not None:
            run.ema.update(model)
        losses.append(total)
    return losses


def _validate(run: _Run, data: Mapping[str, WindowSource], rows: Mapping[str, np.ndarray], cfg: TrainConfig) -> float:
    """The validation single-trial correlation of the evaluated weights."""
    return validation_correlation(
        run.evaluated, data, rows, skip_first=cfg.val_skip_first, window_frames=cfg.window_frames,
        stride=cfg.val_stride or max(1, cfg.window_frames // 2), batch_size=cfg.val_batch_size, device=run.device,
        autocast=cfg.mixed_precision, targets=cfg.targets,
    )


def _early_stopping(run: _Run, cfg: TrainConfig, epoch: int, score: float) -> str:
    """Record ``score``: keep the best weights, count the epochs without progress, and when the
    patience runs out either stop or (``lr_decay_steps``) go on, restoring the best weights if
    asked. Returns what the epoch's log line adds (empty when nothing happened)."""
    state = run.state
    threshold = cfg.improvement_threshold or 0.0
    if score > state["best_score"] + threshold:
        state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
        run.best_state = _weights(run.evaluated)
    else:
        state["bad_epochs"] += 1
    if state["bad_epochs"] < cfg.patience:
        return ""
    state["decays"] = state.get("decays", 0) + 1
    if state["decays"] >= cfg.lr_decay_steps:
        state["done"] = True
        return " - stopping early"
    state["bad_epochs"] = 0
    if not cfg.restore_best:
        return f" - patience ran out ({state['decays']}/{cfg.lr_decay_steps})"
    run.model.load_state_dict(run.best_state)
    if run.ema is not None:
        run.ema.module.load_state_dict(run.best_state)
    return f" - patience ran out ({state['decays']}/{cfg.lr_decay_steps}), best weights restored"


def _optimizer(
    model: torch.nn.Module, cfg: TrainConfig
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.ReduceLROnPlateau | None]:
    """AdamW, and the reduce-on-plateau scheduler when ``scheduler`` is ``plateau`` (the other
    schedules are set per step by :func:`lr_at`). The Gaussian readouts' position networks
    form their own group, at ``position_lr_scale`` times the rate."""
    named = list(model.named_parameters())
    positions = [p for name, p in named if ".positions." in name]
    groups = [{"params": [p for name, p in named if ".positions." not in name], "lr_scale": 1.0}]
    if positions:
        groups.append({"params": positions, "lr_scale": cfg.position_lr_scale})
    groups = [{**g, "lr": cfg.lr * g["lr_scale"]} for g in groups]
    optimizer = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.scheduler != "plateau":
        return optimizer, None
    threshold = {} if cfg.improvement_threshold is None else {
        "threshold": cfg.improvement_threshold, "threshold_mode": "abs"}
    plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr,
        **threshold,
    )
    return optimizer, plateau


def _loss_skip(model: torch.nn.Module, cfg: TrainConfig) -> int:
    """First frames of each window left out of the loss."""
    skip = cfg.loss_skip_frames
    if skip is None:  # the model contract: skip the context unless the window is within the reach
        reach = model.context_frames + getattr(model, "lookahead_frames", 0)
        skip = model.context_frames if reach < cfg.window_frames else 0
    if skip >= cfg.window_frames:
        raise ConfigError(f"training.window_frames: {cfg.window_frames} must exceed the {skip} frames left out of the loss")
    return skip


def train(
    store_dirs: Sequence[str | Path],
    model_config: ModelConfig,
    train_config: TrainConfig,
    fold: int,
    n_folds: int,
    out_model: str | Path,
    out_metrics_csv: str | Path,
    checkpoint_dir: str | Path,
    *,
    fold_grouping: str = "phash",
    phash_distance: int = 8,
    teachers: Sequence[str | Path] = (),
    distillation: DistillConfig | None = None,
    labelled_tiers: Sequence[str] = LABELLED_TIERS,
    prepare_model: Callable[[torch.nn.Module], None] | None = None,
) -> dict:
    """Train ``model_config`` on fold ``fold`` of ``n_folds`` of the mice of ``store_dirs``;
    returns a summary.

    Fold ``k`` validates on the trials of fold ``k`` (grouped by ``fold_grouping``, see
    :func:`folds.fold_rows`) of every mouse and trains on the rest, over the ``labelled_tiers``
    whose responses each archive releases (withheld, all-zero tiers are left out). ``teachers``
    (first-stage model files of the same fold) switch distillation on. Each epoch's log line is
    written after its checkpoint. ``prepare_model`` (diagnostics, e.g. readout positions pinned
    to known receptive fields) is called on the freshly built model, before the optimiser is
    made and before a checkpoint is restored; a resumed run must pass the same one.
    """
    cfg = train_config
    unknown = sorted(set(labelled_tiers) - set(TIERS))
    if unknown or not labelled_tiers:
        raise ConfigError(f"training.labelled_tiers: {list(labelled_tiers)} must be some of {list(TIERS)}")
    labelled_tiers = [t for t in TIERS if t in set(labelled_tiers)]
    if teachers and cfg.batching == "cycle":
        raise ConfigError("training.batching: cycle does not distil; use per_mouse or mixed for a distillation stage")
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    out_model, out_metrics_csv, checkpoint_dir = Path(out_model), Path(out_metrics_csv), Path(checkpoint_dir)

    inputs = getattr(model_config, "inputs", "official")
    tested = [t for t in labelled_tiers if t in TEST_TIERS]
    if tested:
        logger.info(f"training on the test tiers {tested} where an archive releases them: their local scores are not held out")
    data = load_sources(
        store_dirs, lambda store: released_tiers(store, labelled_tiers), mode=cfg.data_mode, device=device,
        inputs=inputs, targets=cfg.targets,
    )
    mice = sorted(data)
    train_rows: dict[str, np.ndarray] = {}
    val_rows: dict[str, np.ndarray] = {}
    for mouse, (train_r, val_r) in fold_rows(
        store_dirs, data, n_folds, cfg.seed, fold, fold_grouping, phash_distance, tiers=labelled_tiers
    ).items():
        train_rows[mouse], val_rows[mouse] = train_r, _validation_subset(val_r, cfg.val_max_trials)
        logger.info(f"{mouse}: {len(train_r)} training trials, {len(val_rows[mouse])} validation trials (fold {fold})")
    metas = [
        MouseMeta(
            name=m,
            unit_ids=data[m].unit_ids,
            coordinates=data[m].coordinates,
            mean_response=data[m].mean_response(train_rows[m]),
        )
        for m in mice
    ]

    model_seed, sampler_seed, augment_seed = _seeds(cfg.seed, fold)
    torch.manual_seed(model_seed)
    model = build_model(model_config, metas)
    if prepare_model is not None:
        prepare_model(model)
    model = model.to(device)
    ema = ModelEma(model, cfg.ema_decay, warmup=cfg.ema_warmup) if cfg.ema_decay > 0 else None
    skip = _loss_skip(model, cfg)
    sampler = WindowSampler(
        data, train_rows, cfg.window_frames, cfg.batch_size, sampler_seed,
        frame_step=getattr(model, "frame_step", 1), mouse_weights=cfg.mouse_sampling, batching=cfg.batching,
        cutmix_prob=cfg.cutmix_prob,
    )
    augment_rng = np.random.default_rng(augment_seed)
    teacher = Teacher(teachers, device) if teachers else None
    distill = distillation or DistillConfig()
    if teacher is not None:
        if teacher.target_kind != cfg.targets:
            raise ConfigError(f"distillation: the teachers {teacher.paths} were trained on {teacher.target_kind} "
                              f"targets, this stage trains on {cfg.targets} (training.targets must match)")
        logger.info(f"distilling from {teacher.paths} (weight {distill.weight}) into the readouts of {teacher.mice}")
    optimizer, plateau = _optimizer(model, cfg)
    ctx = _StepContext(
        model=model, cfg=cfg, skip=skip,
        frame_size=model.inputs.output_size(VIDEO_HEIGHT, VIDEO_WIDTH), rng=augment_rng, mice=mice,
        trials={m: len(r) for m, r in train_rows.items()}, teacher=teacher, distill=distill,
        ceilings={} if cfg.target_clip is None else {
            m.name: torch.as_tensor(cfg.target_clip * m.mean_response, dtype=torch.float32, device=device)
            for m in metas},
    )

    extra = {"fold_grouping": fold_grouping, "phash_distance": phash_distance if fold_grouping == "phash" else None,
             "teachers": [str(p) for p in teachers], "distillation": distill.to_dict() if teacher else None,
             "labelled_tiers": labelled_tiers}
    run = _Run(
        model=model, ema=ema, optimizer=optimizer, plateau=plateau, sampler=sampler, augment_rng=augment_rng,
        device=device, signature=_signature(model_config, cfg, fold, n_folds, mice, extra),
        best_state=_weights(ema.module if ema is not None else model),
    )
    checkpoint = checkpoint_dir / CHECKPOINT_NAME
    saved = read_checkpoint(checkpoint)
    if saved is not None:
        _restore_checkpoint(run, saved, checkpoint)
        logger.info(f"resumed from {checkpoint} after epoch {run.state['epoch']} (best {run.state['best_score']:.4f})")

    while not run.state["done"] and run.state["epoch"] < cfg.max_epochs:
        epoch = run.state["epoch"]
        started = time.perf_counter()
        losses = _train_epoch(run, ctx, cfg, epoch)
        score = _validate(run, data, val_rows, cfg)
        lr = optimizer.param_groups[0]["lr"]
        if plateau is not None and epoch + 1 >= cfg.warmup_epochs:
            plateau.step(score)
        note = _early_stopping(run, cfg, epoch, score)
        run.state["epoch"] = epoch + 1
        row = {
            "epoch": epoch,
            "step": (epoch + 1) * cfg.batches_per_epoch,
            "lr": float(lr),
            "train_loss": float(np.mean(losses)),
            "val_correlation": score,
            "seconds": round(time.perf_counter() - started, 3),
        }
        run.history.append(row)
        _save_checkpoint(checkpoint, run)
        _write_metrics(out_metrics_csv, run.history)
        logger.info(
            f"epoch {epoch + 1}/{cfg.max_epochs} step {row['step']}: loss {row['train_loss']:.4f} "
            f"val corr {score:.4f} (best {run.state['best_score']:.4f}) lr {lr:.2e} {row['seconds']:.1f}s" + note
        )

    if not run.history:
        raise ConfigError("training.max_epochs: no epoch was trained")
    _write_metrics(out_metrics_csv, run.history)
    run_dir = Path(out_model).parent  # results/models/<config>/fold<k>/model.pt
    warning = learning_warning(run.history, f"{run_dir.parent.name}/{run_dir.name}", mice)
    if warning is not None:
        logger.warning("%s", warning)
    evaluated = run.evaluated
    evaluated.load_state_dict(run.best_state)
    summary = {
        "fold": fold,
        "n_folds": n_folds,
        "best_epoch": int(run.state["best_epoch"]),
        "best_val_correlation": float(run.state["best_score"]),
        "epochs": int(run.state["epoch"]),
        "device": device.type,
        "stage": 2 if teacher is not None else 1,
    }
    save_trained(
        out_model,
        evaluated,
        model_config,
        metas,
        {"training": cfg.to_dict(), "fold_grouping": fold_grouping, "labelled_tiers": labelled_tiers, **summary},
    )
    return summary
