"""Regularizers: latent- and image-space forces added to the data term by the flow.

Diverse particles: :class:`KDEKLPrior` (the paper's particle term with an adaptive bandwidth),
:class:`KernelRepulsion` (SVGD/RLSD-style repulsion, in latent or image space). Injected noise
after each step is the optimiser's (:class:`dwgf.optimizers.LangevinNoise`; a config that lists it under
``model.regularizers`` by its short name ``LangevinNoise`` still loads: :class:`dwgf.solver.DWGF` hands it to the optimiser).

Add your own by subclassing :class:`Regularizer` in any module and listing it by ``class_path``
under ``model.regularizers``.
"""

from dwgf.regularizers.base import Regularizer
from dwgf.regularizers.encoder_consistency import EncoderConsistency
from dwgf.regularizers.kde_kl_prior import KDEKLPrior
from dwgf.regularizers.kernels import EncoderFeatures, FeatureMap, NullSpace, Pixels
from dwgf.regularizers.kl_prior import KLPrior, particle_score
from dwgf.regularizers.repulsion import KernelRepulsion
from dwgf.regularizers.weighting import ConstantWeighting, DWGFWeighting, ScoreWeighting, SqrtInverseSNRWeighting, TimeWeighting

__all__ = [
    "Regularizer",
    "KLPrior",
    "EncoderConsistency",
    "KDEKLPrior",
    "KernelRepulsion",
    "FeatureMap",
    "Pixels",
    "EncoderFeatures",
    "NullSpace",
    "particle_score",
    "TimeWeighting",
    "DWGFWeighting",
    "ConstantWeighting",
    "SqrtInverseSNRWeighting",
    "ScoreWeighting",
]
