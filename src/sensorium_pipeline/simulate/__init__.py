"""A simulated mouse with known ground truth, written in the official SENSORIUM 2023 layout.

The default data of the demo, the fixture of end-to-end tests, and a benchmark: the
solutions carry the noise-free rates, so a model's score can be read against the noise
ceiling. ``simulate_mouse(SimulationConfig.from_dict({...}), archive, solutions)``.
"""

from .config import BONUS_FAMILIES, SimulationConfig, TierSize
from .generate import Plan, Stimulus, build_population, make_plan, simulate_mouse

__all__ = [
    "BONUS_FAMILIES",
    "Plan",
    "SimulationConfig",
    "Stimulus",
    "TierSize",
    "build_population",
    "make_plan",
    "simulate_mouse",
]
