"""Helpers of tests/test_slurm.py: a local SLURM cluster and a profile fitted to its node."""
