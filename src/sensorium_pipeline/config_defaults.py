"""The workflow config's defaults that the library owns, read from where they are defined.

A key of ``config.yaml`` that a library function or dataclass takes has its default there
(the signature or the dataclass field), and nowhere else: the schema
(``workflow/schemas/config.schema.yaml``) gives only its type, ``common.smk`` fills it in
from :func:`workflow_defaults` before validating, and the command line
(``__main__``) reads the same source. Keys only the DAG knows (``training.n_folds``,
``training.scope``, ``ensemble.*``, ...) keep their default in the schema.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, MutableMapping
from typing import Any


def parameter_defaults(function: Callable[..., Any], *names: str) -> dict[str, Any]:
    """The defaults of ``function``'s parameters ``names`` (each must have one)."""
    parameters = inspect.signature(function).parameters
    out = {}
    for name in names:
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            raise TypeError(f"{function.__qualname__}: parameter {name!r} has no default")
        out[name] = list(default) if isinstance(default, tuple) else default
    return out


def field_defaults(cls: type, *names: str) -> dict[str, Any]:
    """The defaults of dataclass ``cls``'s fields ``names`` (all fields when none are named)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for name in names or tuple(fields):
        default = fields[name].default
        if default is dataclasses.MISSING:
            raise TypeError(f"{cls.__qualname__}: field {name!r} has no default")
        out[name] = list(default) if isinstance(default, tuple) else default
    return out


def workflow_defaults() -> dict[str, dict[str, Any]]:
    """``{section: {key: default}}`` of the config keys the library owns."""
    from .data.download import download
    from .data.store_writer import StoreOptions
    from .scoring.evaluate import evaluate_mouse
    from .scoring.metrics import EvaluationWindow
    from .scoring.predict import predict_mouse
    from .training.distill import DistillConfig
    from .training.train import TrainConfig, train

    training = {
        **field_defaults(TrainConfig, "seed", "threads", "device"),
        **parameter_defaults(train, "fold_grouping", "phash_distance", "labelled_tiers"),
        "distillation": field_defaults(DistillConfig),
    }
    return {
        "download": parameter_defaults(download, "retries", "timeout_s"),
        "conversion": field_defaults(StoreOptions),
        "training": training,
        "prediction": parameter_defaults(predict_mouse, "tiers", "window_frames", "stride"),
        "evaluation": {**field_defaults(EvaluationWindow), **parameter_defaults(evaluate_mouse, "tiers")},
    }


def fill_defaults(config: MutableMapping[str, Any], defaults: dict[str, Any] | None = None) -> None:
    """Set every key of :func:`workflow_defaults` that ``config`` lacks (sections included)."""
    for key, value in (workflow_defaults() if defaults is None else defaults).items():
        if isinstance(value, dict):
            section = config.setdefault(key, {})
            if isinstance(section, MutableMapping):  # anything else: the schema names the error
                fill_defaults(section, value)
        else:
            config.setdefault(key, value)
