"""The training stage: folds, window sampling, the loop with its checkpoints, CutMix, EMA and distillation."""
