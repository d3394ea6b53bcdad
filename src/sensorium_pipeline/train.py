"""Train one model config on one fold of the given mice, resumably, the winners' way.

``train`` is a plain function of its inputs: Poisson loss, AdamW with a linear warm-up per step
then a per-step cosine decay (or reduce-on-plateau, or constant), an EMA of the weights
(validated and saved instead of the raw weights when on), CutMix on the video windows, bf16
autocast on CUDA, gradient accumulation (``batch_size`` windows per micro-batch,
``grad_accumulation`` micro-batches per optimiser step, each micro-batch of one mouse), early
stopping on the validation single-trial correlation, and optionally distillation from a
first-stage teacher (:mod:`distill`).

After every epoch the whole training state (weights, EMA, optimiser, scheduler, random
states, best weights, early-stopping counters, metrics so far) is written atomically to
``checkpoint_dir/last.pt``; a rerun after an interruption resumes from it and ends exactly
where an uninterrupted run would (same seed, same device, deterministic ops). The metrics go
to a CSV, one row per epoch (:data:`METRIC_COLUMNS`), and one plain log line per epoch.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from .atomic import atomic_path, write_text_atomic
from .cutmix import cutmix
from .devices import DEVICES, resolve_device
from .data import MODES, WindowSampler, WindowSource, load_sources
from .distill import DistillConfig, Teacher, distillation_loss, other_mice
from .ema import ModelEma
from .errors import ConfigError, PathError, StoreError
from .folds import GROUPINGS, pooled_folds, split_rows
from .metrics import corr
from .models import ModelConfig, MouseMeta, build_model, save_trained
from .models.config import reject_unknown
from .phash import phash_groups
from .predict import predict_windows
from .learning_check import learning_warning
from .store import open_mouse

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
    #: Where the training data lives (:func:`data.load_sources`): auto, ram, device (GPU), lazy.
    data_mode: str = "auto"
    #: DataLoader worker processes cutting windows (0 = in the training process).
    loader_workers: int = 0
    #: Model frames between validation windows; ``None`` = half of ``window_frames``.
    val_stride: int | None = None

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
        for name in ("mixed_precision", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"training.{name}: expected true or false, got {getattr(self, name)!r}")
        if not self.lr > 0:
            raise ConfigError(f"training.lr: expected a positive number, got {self.lr!r}")
        if self.scheduler not in SCHEDULERS:
            raise ConfigError(f"training.scheduler: {self.scheduler!r} is not one of {list(SCHEDULERS)}")
        if self.device not in DEVICES:
            raise ConfigError(f"training.device: {self.device!r} is not one of {list(DEVICES)}")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        return cls(**reject_unknown(cls, data, "training"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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


def poisson_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to a constant) of non-negative targets."""
    return (prediction - target * torch.log(prediction + eps)).mean()


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
) -> float:
    """Single-trial correlation on whole validation trials, predicted with the sliding windows
    of prediction (:func:`predict.predict_windows`): per neuron over the trials' frames (from
    ``skip_first``), mean over neurons, then mean over mice."""
    scores = []
    for mouse in sorted(rows):
        source, chosen = data[mouse], np.asarray(rows[mouse])
        if not len(chosen):
            continue
        predicted = predict_windows(
            model, source, chosen, window_frames=window_frames, stride=stride, batch_size=batch_size,
            device=device, autocast=autocast,
        )
        targets, predictions = [], []
        for i, row in enumerate(chosen):
            n = int(source.n_frames[row])
            start = skip_first if n > skip_first else 0
            recorded = source.window([row], [0], n).responses[0].cpu().numpy()
            targets.append(recorded[start:])
            predictions.append(predicted[i, start:n])
        scores.append(float(np.mean(corr(np.concatenate(targets), np.concatenate(predictions)))))
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


def near_duplicate_groups(
    store_dirs: Sequence[str | Path], data: Mapping[str, WindowSource], max_distance: int, log: Callable[[str], Any]
) -> dict[str, np.ndarray] | None:
    """Perceptual-hash groups of the labelled trials of every mouse, made over the pooled hashes
    (so a video shown to two mice is one group); ``None`` (exact repeats only) when a store
    holds no hashes (converted by an older version)."""
    hashes: dict[str, np.ndarray] = {}
    for path in store_dirs:
        store = open_mouse(path)
        try:
            values = np.asarray(store.video_phash(), dtype=np.int64)
        except StoreError as exc:
            log(f"{path}: no perceptual video hashes ({exc}); folds group exact repeats only")
            return None
        by_id = dict(zip(store.trials["trial_id"].tolist(), values.tolist(), strict=True))
        hashes[store.mouse] = np.array([by_id[t] for t in data[store.mouse].trial_ids.tolist()], dtype=np.int64)
    names = sorted(hashes)
    groups = np.asarray(phash_groups(np.concatenate([hashes[m] for m in names]), max_distance))
    out, start = {}, 0
    for m in names:
        out[m] = groups[start : start + len(hashes[m])]
        start += len(hashes[m])
    return out


def fold_rows(
    store_dirs: Sequence[str | Path],
    data: Mapping[str, WindowSource],
    n_folds: int,
    seed: int,
    fold: int,
    grouping: str,
    phash_distance: int,
    log: Callable[[str], Any] = print,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``(train_rows, validation_rows)`` of every mouse for ``fold``; trials grouped by
    ``grouping``: ``stimulus`` (exact repeats) or ``phash`` (exact repeats and perceptual-hash
    neighbours within ``phash_distance`` bits, across mice)."""
    if grouping not in GROUPINGS:
        raise ConfigError(f"training.fold_grouping: {grouping!r} is not one of {list(GROUPINGS)}")
    tables = {m: pd.DataFrame({"tier": d.tiers, "stimulus_group": d.stimulus_groups}) for m, d in data.items()}
    near = near_duplicate_groups(store_dirs, data, phash_distance, log) if grouping == "phash" else None
    folds = pooled_folds(tables, n_folds, seed, near)
    return {m: split_rows(folds[m], fold) for m in sorted(data)}


def _autocast(device: torch.device, enabled: bool):
    """bf16 autocast on CUDA only; a no-op context elsewhere."""
    return torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def train(
    store_dirs: Sequence[str | Path],
    model_config: ModelConfig,
    train_config: TrainConfig,
    fold: int,
    n_folds: int,
    out_model: str | Path,
    out_metrics_csv: str | Path,
    checkpoint_dir: str | Path,
    log: Callable[[str], Any] = print,
    *,
    fold_grouping: str = "phash",
    phash_distance: int = 8,
    teachers: Sequence[str | Path] = (),
    distillation: DistillConfig | None = None,
    on_epoch_end: Callable[[int, dict], Any] | None = None,
) -> dict:
    """Train ``model_config`` on fold ``fold`` of ``n_folds`` of the mice of ``store_dirs``;
    returns a summary.

    Fold ``k`` validates on the labelled trials of fold ``k`` (grouped by ``fold_grouping``,
    see :func:`fold_rows`) of every mouse and trains on the rest. ``teachers`` (first-stage
    model files of the same fold) switch distillation on. ``on_epoch_end(epoch, metrics)`` is
    called after each epoch's checkpoint is written (tests interrupt training with it).
    """
    cfg = train_config
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    out_model, out_metrics_csv, checkpoint_dir = Path(out_model), Path(out_metrics_csv), Path(checkpoint_dir)

    data = load_sources(store_dirs, mode=cfg.data_mode, device=device, log=log)
    mice = sorted(data)
    train_rows: dict[str, np.ndarray] = {}
    val_rows: dict[str, np.ndarray] = {}
    for mouse, (train_r, val_r) in fold_rows(
        store_dirs, data, n_folds, cfg.seed, fold, fold_grouping, phash_distance, log
    ).items():
        train_rows[mouse], val_rows[mouse] = train_r, _validation_subset(val_r, cfg.val_max_trials)
        log(f"{mouse}: {len(train_r)} training trials, {len(val_rows[mouse])} validation trials (fold {fold})")
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
    model = build_model(model_config, metas).to(device)
    ema = ModelEma(model, cfg.ema_decay) if cfg.ema_decay > 0 else None
    skip = cfg.loss_skip_frames
    if skip is None:  # the model contract: skip the context unless the window is within the reach
        reach = model.context_frames + getattr(model, "lookahead_frames", 0)
        skip = model.context_frames if reach < cfg.window_frames else 0
    if skip >= cfg.window_frames:
        raise ConfigError(f"training.window_frames: {cfg.window_frames} must exceed the {skip} frames left out of the loss")
    sampler = WindowSampler(
        data, train_rows, cfg.window_frames, cfg.batch_size, sampler_seed,
        frame_step=getattr(model, "frame_step", 1), mouse_weights=cfg.mouse_sampling,
    )
    augment_rng = np.random.default_rng(augment_seed)
    teacher = Teacher(teachers, device) if teachers else None
    distill = distillation or DistillConfig()
    if teacher is not None:
        log(f"distilling from {teacher.paths} (weight {distill.weight}) into the readouts of {teacher.mice}")
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    plateau = None
    if cfg.scheduler == "plateau":
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )

    extra = {"fold_grouping": fold_grouping, "phash_distance": phash_distance if fold_grouping == "phash" else None,
             "teachers": [str(p) for p in teachers], "distillation": distill.to_dict() if teacher else None}
    signature = _signature(model_config, cfg, fold, n_folds, mice, extra)
    state: dict[str, Any] = {"epoch": 0, "best_score": -np.inf, "best_epoch": -1, "bad_epochs": 0, "done": False}
    history: list[dict] = []
    evaluated = ema.module if ema is not None else model
    best_state = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
    checkpoint = checkpoint_dir / CHECKPOINT_NAME
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("signature") != signature:
            raise PathError(checkpoint, "holds a checkpoint of another model/training config or fold; "
                            "delete it or use another checkpoint folder")
        model.load_state_dict(saved["model"])
        if ema is not None:
            ema.load_state_dict(saved["ema"])
        optimizer.load_state_dict(saved["optimizer"])
        if plateau is not None:
            plateau.load_state_dict(saved["scheduler"])
        sampler.set_state(saved["sampler"])
        augment_rng.bit_generator.state = saved["augment_rng"]
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        best_state, state, history = saved["best_state"], saved["state"], saved["history"]
        log(f"resumed from {checkpoint} after epoch {state['epoch']} (best {state['best_score']:.4f})")

    while not state["done"] and state["epoch"] < cfg.max_epochs:
        epoch = state["epoch"]
        started = time.perf_counter()
        model.train()
        losses = []
        # the epoch's windows are drawn up front (the same for any number of loader workers)
        batches = iter(sampler.batches(cfg.batches_per_epoch * cfg.grad_accumulation, device=device,
                                       workers=cfg.loader_workers))
        for step in range(cfg.batches_per_epoch):
            global_step = epoch * cfg.batches_per_epoch + step
            lr = lr_at(cfg, global_step)
            if lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = lr
            optimizer.zero_grad(set_to_none=True)
            total = 0.0
            for _ in range(cfg.grad_accumulation):
                batch = cutmix(next(batches), augment_rng, cfg.cutmix_alpha, cfg.cutmix_prob)
                with _autocast(device, cfg.mixed_precision):
                    output = model(batch.video, batch.behavior, batch.pupil_center, batch.mouse).float()
                    loss = poisson_loss(output[:, skip:], batch.responses[:, skip:])
                    if teacher is not None:
                        others = other_mice(teacher, mice, batch.mouse, distill, augment_rng)
                        if others:
                            distilled = distillation_loss(model, teacher, batch, others, poisson_loss, skip)
                            loss = (1.0 - distill.weight) * loss + distill.weight * distilled
                    if cfg.readout_l1 > 0:
                        loss = loss + cfg.readout_l1 * model.readout_l1(batch.mouse)
                (loss / cfg.grad_accumulation).backward()
                total += float(loss.detach()) / cfg.grad_accumulation
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(model)
            losses.append(total)
        score = validation_correlation(
            evaluated, data, val_rows, skip_first=cfg.val_skip_first, window_frames=cfg.window_frames,
            stride=cfg.val_stride or max(1, cfg.window_frames // 2), batch_size=cfg.val_batch_size, device=device,
            autocast=cfg.mixed_precision,
        )
        lr = optimizer.param_groups[0]["lr"]
        if plateau is not None and epoch + 1 >= cfg.warmup_epochs:
            plateau.step(score)
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            best_state = {k: v.detach().cpu().clone() for k, v in evaluated.state_dict().items()}
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        state["done"] = state["bad_epochs"] >= cfg.patience
        row = {
            "epoch": epoch,
            "step": (epoch + 1) * cfg.batches_per_epoch,
            "lr": float(lr),
            "train_loss": float(np.mean(losses)),
            "val_correlation": score,
            "seconds": round(time.perf_counter() - started, 3),
        }
        history.append(row)
        with atomic_path(checkpoint) as tmp:
            torch.save(
                {
                    "signature": signature,
                    "model": model.state_dict(),
                    "ema": None if ema is None else ema.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if plateau is None else plateau.state_dict(),
                    "sampler": sampler.state(),
                    "augment_rng": augment_rng.bit_generator.state,
                    "torch_rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                    "best_state": best_state,
                    "state": state,
                    "history": history,
                },
                tmp,
            )
        _write_metrics(out_metrics_csv, history)
        log(
            f"epoch {epoch + 1}/{cfg.max_epochs} step {row['step']}: loss {row['train_loss']:.4f} "
            f"val corr {score:.4f} (best {state['best_score']:.4f}) lr {lr:.2e} {row['seconds']:.1f}s"
            + (" - stopping early" if state["done"] else "")
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    if not history:
        raise ConfigError("training.max_epochs: no epoch was trained")
    _write_metrics(out_metrics_csv, history)
    run = Path(out_model).parent  # results/models/<config>/fold<k>/model.pt
    warning = learning_warning(history, f"{run.parent.name}/{run.name}", mice)
    if warning is not None:
        log(f"WARNING: {warning}")
    evaluated.load_state_dict(best_state)
    summary = {
        "fold": fold,
        "n_folds": n_folds,
        "best_epoch": int(state["best_epoch"]),
        "best_val_correlation": float(state["best_score"]),
        "epochs": int(state["epoch"]),
        "device": device.type,
        "stage": 2 if teacher is not None else 1,
    }
    save_trained(
        out_model,
        evaluated,
        model_config,
        metas,
        {"training": cfg.to_dict(), "fold_grouping": fold_grouping, **summary},
    )
    return summary
