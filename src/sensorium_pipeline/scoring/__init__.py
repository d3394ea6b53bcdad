"""Prediction and scoring: sliding-window predictions, the ensemble, the competition's metrics, evaluation and the submission."""
