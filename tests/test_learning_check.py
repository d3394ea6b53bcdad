"""The early warning of a model that does not learn."""

from __future__ import annotations

from sensorium_pipeline.training.learning_check import learning_warning, metrics_warnings


def _history(scores):
    return [{"epoch": i, "step": 10 * (i + 1), "val_correlation": s} for i, s in enumerate(scores)]


def test_a_flat_near_zero_correlation_is_named_with_config_and_mice():
    warning = learning_warning(_history([0.01, 0.02, 0.03]), "demo_cpu/fold0", ["mouse-a", "mouse-b"])
    assert warning is not None
    assert "'demo_cpu/fold0'" in warning and "mouse-a, mouse-b" in warning and "at most 0.030" in warning


def test_no_warning_before_the_first_epochs_or_once_it_learns():
    assert learning_warning(_history([0.0]), "c", ["m"]) is None  # too early to say
    assert learning_warning(_history([0.01, 0.2]), "c", ["m"]) is None
    assert learning_warning(_history([float("nan"), float("nan")]), "c", ["m"]) is not None
    assert learning_warning(_history([0.04, 0.04]), "c", ["m"], threshold=0.03) is None


def test_the_report_finds_the_run_that_does_not_learn(tmp_path):
    import pandas as pd

    from sensorium_pipeline.report.plots import add_warnings, save_png, training_curves

    metrics = pd.DataFrame(
        {
            "model": ["good"] * 3 + ["flat"] * 3,
            "fold": [0] * 6,
            "epoch": [0, 1, 2] * 2,
            "step": [10, 20, 30] * 2,
            "train_loss": [1.0, 0.9, 0.8] * 2,
            "val_correlation": [0.1, 0.2, 0.3, 0.0, 0.01, 0.02],
        }
    )
    warnings = metrics_warnings(metrics, ["mouse-a"])
    assert len(warnings) == 1 and "'flat/fold0' on mouse-a" in warnings[0]
    figure = add_warnings(training_curves(metrics), warnings)
    assert "flat/fold0" in figure._suptitle.get_text()
    assert save_png(figure, tmp_path / "curves.png").stat().st_size > 0
