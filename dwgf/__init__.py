"""dwgf: imaging inverse problems with a frozen latent diffusion prior, by DWGF.

DWGF (Diffusion-regularized Wasserstein Gradient Flow, Wang & Akyildiz 2025) moves N latent
particles per measurement along a Wasserstein gradient flow of a data term plus a time-weighted KL
to the diffusion prior. See ``README.md``, the documentation site (``docs/``) and the paper, "A Gradient Flow Approach to Solving Inverse
Problems with Latent Diffusion Models", arXiv 2509.19276.

The Python API, without the CLI or config files::

    import dwgf
    prior = dwgf.UnconditionalLatentPrior("dwgf:mnist-ldm")
    x = dwgf.load_image("examples/mnist/digit0_mnist_0475.png", prior.image_channels, (32, 32))[None]
    op = dwgf.BoxInpainting(size=[12, 12], sigma_y=0.01)
    y, params = op.measure(x, seeds=[0])
    solver = dwgf.DWGF(prior, num_steps=200, num_particles=4, regularizers=[dwgf.KLPrior(0.25)],
                       step_size=dwgf.ConstantStepSize(0.3)).set_operator(op)
    particles = solver.solve(y, params, seeds=[0])   # 1 x 4 x 1 x 32 x 32, in [-1, 1]
"""

from dwgf.baselines import PSLD, DecoderInversion, LatentDPS
from dwgf.data import MeasurementDataModule, load_image
from dwgf.errors import DWGFError
from dwgf.flow import FlowConfig, FlowState, ItemDraws, Problem, dwgf_flow, flow_gradient, item_generators
from dwgf.operators import (
    Blur,
    BoxInpainting,
    Denoising,
    ForwardOperator,
    GaussianBlur,
    MotionBlur,
    RandomInpainting,
    SuperResolution,
)
from dwgf.priors import LatentPrior, StableDiffusionPrior, UnconditionalLatentPrior, load_prior
from dwgf.regularizers import DWGFWeighting, EncoderConsistency, KLPrior, Regularizer
from dwgf.schedules import (
    ConstantStepSize,
    CosineStepSize,
    DescendingTimesteps,
    RandomTimesteps,
    StepSizeSchedule,
    TimestepSchedule,
)
from dwgf.solver import DWGF, InverseSolver

__version__ = "0.1.0"

__all__ = [
    "DWGF",
    "LatentDPS",
    "PSLD",
    "DecoderInversion",
    "InverseSolver",
    "LatentPrior",
    "UnconditionalLatentPrior",
    "StableDiffusionPrior",
    "load_prior",
    "ForwardOperator",
    "BoxInpainting",
    "RandomInpainting",
    "SuperResolution",
    "Blur",
    "GaussianBlur",
    "MotionBlur",
    "Denoising",
    "Regularizer",
    "KLPrior",
    "EncoderConsistency",
    "DWGFWeighting",
    "StepSizeSchedule",
    "ConstantStepSize",
    "CosineStepSize",
    "TimestepSchedule",
    "DescendingTimesteps",
    "RandomTimesteps",
    "MeasurementDataModule",
    "load_image",
    "DWGFError",
    "FlowState",
    "ItemDraws",
    "dwgf_flow",
    "FlowConfig",
    "Problem",
    "flow_gradient",
    "item_generators",
    "__version__",
]
