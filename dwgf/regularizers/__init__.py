"""Regularizers: latent- and image-space forces added to the data term by the flow.

Add your own by subclassing :class:`Regularizer` in any module and listing it by ``class_path``
under ``model.regularizers``.
"""

from dwgf.regularizers.base import Regularizer
from dwgf.regularizers.encoder_consistency import EncoderConsistency
from dwgf.regularizers.kl_prior import KLPrior, particle_score
from dwgf.regularizers.weighting import ConstantWeighting, DWGFWeighting, SqrtInverseSNRWeighting, TimeWeighting

__all__ = [
    "Regularizer",
    "KLPrior",
    "EncoderConsistency",
    "particle_score",
    "TimeWeighting",
    "DWGFWeighting",
    "ConstantWeighting",
    "SqrtInverseSNRWeighting",
]
