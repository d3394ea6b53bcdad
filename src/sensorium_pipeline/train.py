"""Train one model config on one fold of every mouse, resumably.

``train`` is a plain function of its inputs: Poisson loss, AdamW (optional linear warm-up,
then cosine or reduce-on-plateau), early stopping on the validation single-trial
correlation. After every epoch the whole training state (weights, optimiser, scheduler,
random states, best weights, early-stopping counters, metrics so far) is written
atomically to ``checkpoint_dir/last.pt``; a rerun after an interruption resumes from it and
ends exactly where an uninterrupted run would (same seed, same device, deterministic ops).
"""

from __future__ import annotations

import copy
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
from .data import MouseData, WindowSampler, iter_trials, load_labelled
from .errors import ConfigError, PathError
from .folds import assign_folds, split_rows
from .metrics import corr
from .models import ModelConfig, MouseMeta, build_model, save_trained
from .models.config import reject_unknown

SCHEDULERS = ("plateau", "cosine", "constant")
DEVICES = ("auto", "cpu", "cuda")
CHECKPOINT_NAME = "last.pt"
METRIC_COLUMNS = ("epoch", "train_loss", "val_correlation", "lr", "seconds")


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
        }
        for name, minimum in ints.items():
            _check_int(name, getattr(self, name), minimum)
        for name in ("loss_skip_frames", "val_max_trials"):
            if getattr(self, name) is not None:
                _check_int(name, getattr(self, name), 0 if name == "loss_skip_frames" else 1)
        for name in ("lr", "weight_decay", "plateau_factor", "min_lr", "grad_clip", "readout_l1"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"training.{name}: expected a number >= 0, got {value!r}")
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


def resolve_device(device: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("training.device: 'cuda' was asked for but no CUDA device is available")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def poisson_loss(prediction: torch.Tensor, target: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Mean Poisson negative log-likelihood (up to a constant) of non-negative targets."""
    return (prediction - target * torch.log(prediction + eps)).mean()


@torch.no_grad()
def validation_correlation(
    model: torch.nn.Module,
    data: Mapping[str, MouseData],
    rows: Mapping[str, np.ndarray],
    *,
    skip_first: int,
    batch_size: int,
    device: torch.device,
) -> float:
    """Single-trial correlation on whole validation trials: per neuron over the trials' frames
    (from ``skip_first``), mean over neurons, then mean over mice."""
    model.eval()
    scores = []
    for mouse in sorted(rows):
        mouse_data = data[mouse]
        targets, predictions = [], []
        for chunk, batch in iter_trials(mouse_data, rows[mouse], batch_size):
            batch = batch.to(device)
            out = model(batch.video, batch.behavior, batch.pupil_center, mouse).float().cpu().numpy()
            start = skip_first if out.shape[1] > skip_first else 0
            predictions.extend(out[:, start:])
            targets.extend(batch.responses.cpu().numpy()[:, start:])
        if targets:
            scores.append(float(np.mean(corr(np.concatenate(targets), np.concatenate(predictions)))))
    return float(np.mean(scores)) if scores else float("nan")


def _validation_subset(rows: np.ndarray, limit: int | None) -> np.ndarray:
    if limit is None or len(rows) <= limit:
        return rows
    return rows[np.linspace(0, len(rows) - 1, limit).round().astype(np.int64)]


def _mean_response(data: MouseData, rows: np.ndarray) -> np.ndarray:
    total = np.zeros(data.n_neurons, dtype=np.float64)
    count = 0
    for r in rows:
        n = int(data.n_frames[r])
        total += data.responses[r, :n].sum(axis=0, dtype=np.float64)
        count += n
    return total / max(count, 1)


def _seeds(seed: int, fold: int) -> tuple[int, int]:
    """Independent seeds of the weights and of the window sampler of one fold."""
    a, b = np.random.SeedSequence([seed, fold]).generate_state(2)
    return int(a), int(b)


def _write_metrics(path: Path, history: Sequence[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(METRIC_COLUMNS), lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: row[k] for k in METRIC_COLUMNS})
    write_text_atomic(path, buffer.getvalue())


def _signature(model_config: ModelConfig, train_config: TrainConfig, fold: int, n_folds: int, mice: list[str]) -> dict:
    """What a checkpoint must match to be resumed (threads and device may change)."""
    training = {k: v for k, v in train_config.to_dict().items() if k not in ("threads", "device")}
    return {"model": model_config.to_dict(), "training": training, "fold": fold, "n_folds": n_folds, "mice": mice}


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
    on_epoch_end: Callable[[int, dict], Any] | None = None,
) -> dict:
    """Train ``model_config`` on fold ``fold`` of ``n_folds`` of all stores; returns a summary.

    Fold ``k`` validates on the labelled trials of fold ``k`` (grouped by stimulus, see
    :mod:`folds`) of every mouse and trains on the rest. ``on_epoch_end(epoch, metrics)`` is
    called after each epoch's checkpoint is written (tests interrupt training with it).
    """
    cfg = train_config
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    out_model, out_metrics_csv, checkpoint_dir = Path(out_model), Path(out_metrics_csv), Path(checkpoint_dir)

    data = load_labelled(store_dirs)
    mice = sorted(data)
    train_rows: dict[str, np.ndarray] = {}
    val_rows: dict[str, np.ndarray] = {}
    for mouse in mice:
        table = pd.DataFrame({"tier": data[mouse].tiers, "stimulus_group": data[mouse].stimulus_groups})
        folds = assign_folds(table, n_folds, cfg.seed)
        train_rows[mouse], val = split_rows(folds, fold)
        val_rows[mouse] = _validation_subset(val, cfg.val_max_trials)
        log(f"{mouse}: {len(train_rows[mouse])} training trials, {len(val_rows[mouse])} validation trials (fold {fold})")
    metas = [
        MouseMeta(
            name=m,
            unit_ids=data[m].unit_ids,
            coordinates=data[m].coordinates,
            mean_response=_mean_response(data[m], train_rows[m]),
        )
        for m in mice
    ]

    model_seed, sampler_seed = _seeds(cfg.seed, fold)
    torch.manual_seed(model_seed)
    model = build_model(model_config, metas).to(device)
    skip = model.context_frames if cfg.loss_skip_frames is None else cfg.loss_skip_frames
    if skip >= cfg.window_frames:
        raise ConfigError(f"training.window_frames: {cfg.window_frames} must exceed the {skip} frames left out of the loss")
    sampler = WindowSampler(data, train_rows, cfg.window_frames, cfg.batch_size, sampler_seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler: Any = None
    if cfg.scheduler == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr
        )
    elif cfg.scheduler == "cosine":
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(cfg.max_epochs - cfg.warmup_epochs, 1), eta_min=cfg.min_lr
        )

    signature = _signature(model_config, cfg, fold, n_folds, mice)
    state: dict[str, Any] = {"epoch": 0, "best_score": -np.inf, "best_epoch": -1, "bad_epochs": 0, "done": False}
    history: list[dict] = []
    best_state = copy.deepcopy(model.state_dict())
    checkpoint = checkpoint_dir / CHECKPOINT_NAME
    if checkpoint.exists():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("signature") != signature:
            raise PathError(checkpoint, "holds a checkpoint of another model/training config or fold; "
                            "delete it or use another checkpoint folder")
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(saved["scheduler"])
        sampler.set_state(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        best_state, state, history = saved["best_state"], saved["state"], saved["history"]
        log(f"resumed from {checkpoint} after epoch {state['epoch']} (best {state['best_score']:.4f})")

    warmup_steps = cfg.warmup_epochs * cfg.batches_per_epoch
    while not state["done"] and state["epoch"] < cfg.max_epochs:
        epoch = state["epoch"]
        started = time.perf_counter()
        model.train()
        losses = []
        for step in range(cfg.batches_per_epoch):
            global_step = epoch * cfg.batches_per_epoch + step
            if global_step < warmup_steps:
                for group in optimizer.param_groups:
                    group["lr"] = cfg.lr * (global_step + 1) / warmup_steps
            batch = sampler.sample().to(device)
            output = model(batch.video, batch.behavior, batch.pupil_center, batch.mouse)
            loss = poisson_loss(output[:, skip:], batch.responses[:, skip:])
            if cfg.readout_l1 > 0:
                loss = loss + cfg.readout_l1 * model.readout_l1(batch.mouse)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            optimizer.step()
            losses.append(float(loss.detach()))
        score = validation_correlation(
            model, data, val_rows, skip_first=cfg.val_skip_first, batch_size=cfg.val_batch_size, device=device
        )
        lr = optimizer.param_groups[0]["lr"]
        if epoch + 1 >= cfg.warmup_epochs and scheduler is not None:
            scheduler.step(score) if cfg.scheduler == "plateau" else scheduler.step()
        if score > state["best_score"]:
            state.update(best_score=score, best_epoch=epoch, bad_epochs=0)
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch + 1
        state["done"] = state["bad_epochs"] >= cfg.patience
        row = {
            "epoch": epoch,
            "train_loss": float(np.mean(losses)),
            "val_correlation": score,
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 3),
        }
        history.append(row)
        with atomic_path(checkpoint) as tmp:
            torch.save(
                {
                    "signature": signature,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "sampler": sampler.state(),
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
            f"epoch {epoch}: loss {row['train_loss']:.4f}  val corr {score:.4f}  lr {lr:.2e}  "
            f"{row['seconds']:.1f}s" + ("  (stopping early)" if state["done"] else "")
        )
        if on_epoch_end is not None:
            on_epoch_end(epoch, row)

    if not history:
        raise ConfigError("training.max_epochs: no epoch was trained")
    _write_metrics(out_metrics_csv, history)
    model.load_state_dict(best_state)
    summary = {
        "fold": fold,
        "n_folds": n_folds,
        "best_epoch": int(state["best_epoch"]),
        "best_val_correlation": float(state["best_score"]),
        "epochs": int(state["epoch"]),
        "device": device.type,
    }
    save_trained(
        out_model,
        model,
        model_config,
        metas,
        {"training": cfg.to_dict(), **summary},
    )
    return summary
