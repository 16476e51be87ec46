"""Forward operators ``A``: the degradations dwgf inverts, each with its noise model.

Add your own by subclassing :class:`ForwardOperator` in any module and naming it by
``class_path`` under ``data.operator`` in a config.
"""

from dwgf.operators.base import ForwardOperator, GaussianNoise, NoiseModel, Params, repeat_params
from dwgf.operators.blur import Blur, GaussianBlur, MotionBlur, gaussian_kernel, motion_kernel
from dwgf.operators.denoising import Denoising
from dwgf.operators.inpainting import BoxInpainting, RandomInpainting
from dwgf.operators.matrix import MatrixOperator
from dwgf.operators.noise import PoissonCounts, PoissonNoise, poisson_counts
from dwgf.operators.nonlinear import JPEG, FunctionOperator, PhaseRetrieval, Saturation
from dwgf.operators.super_resolution import SuperResolution

__all__ = [
    "ForwardOperator",
    "Params",
    "repeat_params",
    "BoxInpainting",
    "RandomInpainting",
    "SuperResolution",
    "Blur",
    "GaussianBlur",
    "MotionBlur",
    "Denoising",
    "MatrixOperator",
    "Saturation",
    "PhaseRetrieval",
    "FunctionOperator",
    "JPEG",
    "PoissonNoise",
    "NoiseModel",
    "GaussianNoise",
    "PoissonCounts",
    "poisson_counts",
    "gaussian_kernel",
    "motion_kernel",
]
