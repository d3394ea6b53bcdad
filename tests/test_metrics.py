"""The competition's metrics on small hand-checkable examples (docs/metrics.md)."""

from __future__ import annotations

import numpy as np
import pytest

from sensorium_pipeline.errors import ConfigError
from sensorium_pipeline.scoring import metrics
from sensorium_pipeline.scoring.metrics import (
    EvaluationWindow,
    corr,
    correlation_to_average,
    fev_feve,
    single_trial_correlation,
)


def test_window_cuts_frames_50_to_298_of_a_300_frame_trial():
    window = EvaluationWindow()
    assert window.length(300) == 249
    assert EvaluationWindow(skip_last=0).length(300) == 250
    frames = np.arange(324)[:, None]
    cut = window.cut(frames, 300)
    assert cut[0, 0] == 50 and cut[-1, 0] == 298 and len(cut) == 249
    assert window.length(400) == 249  # max_frames caps long trials
    assert window.length(240) == 189  # a short bonus trial
    assert window.length(30) == 0
    assert len(window.cut(np.zeros((30, 2)))) == 0
    with pytest.raises(ValueError, match="fewer"):
        window.cut(np.zeros((10, 2)), 20)


def test_window_from_dict_rejects_unknown_and_invalid_keys():
    assert EvaluationWindow.from_dict({"skip_last": 0}) == EvaluationWindow(50, 300, 0)
    assert EvaluationWindow.from_dict(None).to_dict() == {"skip_first": 50, "max_frames": 300, "skip_last": 1}
    with pytest.raises(ConfigError, match="skip_frist"):
        EvaluationWindow.from_dict({"skip_frist": 3})
    with pytest.raises(ConfigError, match="max_frames"):
        EvaluationWindow.from_dict({"max_frames": 0})


def test_corr_perfect_negated_constant_and_scale_free():
    rng = np.random.default_rng(0)
    y = rng.normal(size=(50, 4))
    np.testing.assert_allclose(corr(y, y), 1.0, atol=1e-6)
    np.testing.assert_allclose(corr(y, -y), -1.0, atol=1e-6)
    np.testing.assert_allclose(corr(y, 3 * y + 7), 1.0, atol=1e-6)
    constant = np.ones_like(y)
    np.testing.assert_array_equal(corr(y, constant), 0.0)
    # NaN inputs become 0, as the scorer's nan_to_num does
    bad = y.copy()
    bad[3, 2] = np.nan
    out = corr(y, bad)
    assert out[2] == 0.0 and np.all(np.isfinite(out))
    assert corr(np.zeros((0, 3)), np.zeros((0, 3))).tolist() == [0.0, 0.0, 0.0]


def test_corr_uses_population_std_plus_eps():
    a = np.array([1.0, 2.0, 3.0, 4.0])
    b = np.array([1.0, 3.0, 2.0, 5.0])
    za = (a - a.mean()) / (a.std(ddof=0) + 1e-8)
    zb = (b - b.mean()) / (b.std(ddof=0) + 1e-8)
    assert corr(a, b) == pytest.approx(np.mean(za * zb), abs=1e-12)
    assert corr(a, b) == pytest.approx(np.corrcoef(a, b)[0, 1], abs=1e-7)
    # the eps matters for tiny signals: std 1e-8 halves each z-score, so a quarter
    tiny = a * 1e-8 / a.std()
    assert corr(tiny, tiny) == pytest.approx(0.25, rel=1e-6)
    # axis=1 works along rows
    np.testing.assert_allclose(corr(np.stack([a, b]), np.stack([a, b]), axis=1), 1.0, atol=1e-6)


def test_single_trial_correlation_concatenates_trials():
    rng = np.random.default_rng(1)
    targets = [rng.normal(size=(t, 3)) for t in (5, 7, 4)]
    preds = [t + rng.normal(scale=0.5, size=t.shape) for t in targets]
    expected = corr(np.concatenate(targets), np.concatenate(preds))
    np.testing.assert_allclose(single_trial_correlation(targets, preds), expected)
    np.testing.assert_allclose(single_trial_correlation(targets, targets), 1.0, atol=1e-6)
    with pytest.raises(ValueError, match="differ"):
        single_trial_correlation(targets, [p[:-1] for p in preds])


def test_single_trial_correlation_in_neuron_blocks_is_exact(monkeypatch):
    rng = np.random.default_rng(2)
    targets = [rng.normal(size=(6, 5)) for _ in range(3)]
    preds = [rng.normal(size=(6, 5)) for _ in range(3)]
    ids = ["a", "a", "b"]
    whole = single_trial_correlation(targets, preds), correlation_to_average(targets, preds, ids)
    whole_feve = fev_feve(targets, preds, ids).feve
    monkeypatch.setattr(metrics, "NEURON_BLOCK", 2)
    np.testing.assert_allclose(single_trial_correlation(targets, preds), whole[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(correlation_to_average(targets, preds, ids), whole[1], rtol=0, atol=1e-14)
    np.testing.assert_allclose(fev_feve(targets, preds, ids).feve, whole_feve, rtol=0, atol=1e-14)


def test_correlation_to_average_averages_repeats_frame_by_frame():
    # stimulus s1 shown twice, s2 once; neuron 0 only
    t = [np.array([[1.0], [3.0]]), np.array([[3.0], [5.0]]), np.array([[0.0], [4.0], [2.0]])]
    p = [np.array([[0.0], [1.0]]), np.array([[2.0], [1.0]]), np.array([[1.0], [0.0], [0.0]])]
    out = correlation_to_average(t, p, ["s1", "s1", "s2"])
    mean_t = np.array([2.0, 4.0, 0.0, 4.0, 2.0])
    mean_p = np.array([1.0, 1.0, 1.0, 0.0, 0.0])
    assert out[0] == pytest.approx(corr(mean_t, mean_p), abs=1e-12)
    # predicting the repeat mean exactly is a perfect correlation to average, not single-trial
    means = [np.array([[2.0], [4.0]])] * 2 + [t[2]]
    assert correlation_to_average(t, means, ["s1", "s1", "s2"])[0] == pytest.approx(1.0, abs=1e-6)
    assert single_trial_correlation(t, means)[0] < 1 - 1e-3
    with pytest.raises(ValueError, match="different lengths"):
        correlation_to_average(t, p, ["s1", "s1", "s1"])


def test_fev_feve_hand_computed():
    # one neuron, two stimuli x two repeats x two frames
    y = {("a", 0): [1.0, 2.0], ("a", 1): [3.0, 2.0], ("b", 0): [5.0, 7.0], ("b", 1): [5.0, 9.0]}
    p = {("a", 0): [2.0, 2.0], ("a", 1): [2.0, 2.0], ("b", 0): [5.0, 8.0], ("b", 1): [4.0, 8.0]}
    keys = list(y)
    targets = [np.array(y[k])[:, None] for k in keys]
    preds = [np.array(p[k])[:, None] for k in keys]
    result = fev_feve(targets, preds, [k[0] for k in keys], threshold=0.15)
    noise = np.mean([np.mean([np.var([1, 3], ddof=1), np.var([2, 2], ddof=1)]),
                     np.mean([np.var([5, 5], ddof=1), np.var([7, 9], ddof=1)])])  # fmt: skip
    samples = np.concatenate([y[k] for k in keys])
    total = np.var(samples, ddof=1)
    mse = np.mean((samples - np.concatenate([p[k] for k in keys])) ** 2)
    assert noise == pytest.approx(1.0)
    assert result.fev[0] == pytest.approx((total - noise) / total)
    assert result.feve[0] == pytest.approx(1 - (mse - noise) / (total - noise))
    assert result.n_stimuli == 2 and result.n_selected == 1
    assert result.mean_feve == pytest.approx(result.feve[0])


def test_fev_feve_of_truth_is_one_and_of_noise_is_zero():
    rng = np.random.default_rng(3)
    n_stim, n_rep, t, n = 8, 10, 40, 6
    signal = rng.normal(scale=2.0, size=(n_stim, t, n))
    signal[..., -1] = 0.0  # last neuron: pure noise, no explainable variance
    targets, truth, ids = [], [], []
    for s in range(n_stim):
        for _ in range(n_rep):
            targets.append(signal[s] + rng.normal(size=(t, n)))
            truth.append(signal[s])
            ids.append(f"s{s}")
    result = fev_feve(targets, truth, ids)
    np.testing.assert_allclose(result.feve[:-1], 1.0, atol=0.05)
    assert abs(result.fev[-1]) < 0.03
    assert not result.selected[-1] and result.n_selected == n - 1
    np.testing.assert_allclose(result.fev[:-1], 4 / 5, atol=0.08)  # signal var 4, noise var 1
    # the frame-by-frame repeat mean: MSE = (R-1)/R noise, so FEVE slightly above 1
    means = [np.mean([targets[i] for i in range(len(ids)) if ids[i] == s], axis=0) for s in ids]
    above = fev_feve(targets, means, ids).feve[:-1]
    assert np.all(above > 1.0) and np.all(above < 1.05)
    # a constant prediction explains nothing
    assert np.all(fev_feve(targets, [np.zeros_like(x) for x in targets], ids).feve[:-1] < 0)


def test_fev_feve_needs_repeats():
    targets = [np.ones((4, 2)), np.zeros((4, 2))]
    result = fev_feve(targets, targets, ["a", "b"])
    assert result.n_stimuli == 0 and result.n_selected == 0
    assert np.isnan(result.mean_feve) and np.all(np.isnan(result.fev))
