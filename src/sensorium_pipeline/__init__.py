"""sensorium-pipeline: a reproducible, cached pipeline for the SENSORIUM 2023 competition.

Every stage of the Snakemake workflow is a plain function of this package, so it can be
used from a notebook without Snakemake: see the module of each stage.
"""

__version__ = "0.1.0"
