"""dwgf: imaging inverse problems with a frozen latent diffusion prior, by DWGF.

DWGF (Diffusion-regularized Wasserstein Gradient Flow, Wang & Akyildiz 2025) moves N latent
particles per measurement along a Wasserstein gradient flow of a data term plus a time-weighted KL
to the diffusion prior. See ``README.md`` and ``DESIGN.md``.
"""

from dwgf.baselines import PSLD, DecoderInversion, LatentDPS
from dwgf.data import MeasurementDataModule
from dwgf.errors import DWGFError
from dwgf.flow import FlowState, ItemNoise, dwgf_flow, flow_gradient, item_generators
from dwgf.solver import DWGF, InverseSolver

__version__ = "0.1.0"

__all__ = [
    "DWGF",
    "LatentDPS",
    "PSLD",
    "DecoderInversion",
    "InverseSolver",
    "MeasurementDataModule",
    "DWGFError",
    "FlowState",
    "ItemNoise",
    "dwgf_flow",
    "flow_gradient",
    "item_generators",
    "__version__",
]
