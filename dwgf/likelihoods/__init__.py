"""Data terms: how far the decoded particles are from the measurement, as a loss whose gradient the flow follows.

:class:`MeanSquaredError` is the paper's averaged squared error (the default); :class:`GaussianLikelihood`
and :class:`PoissonLikelihood` are negative log-likelihoods ``-log p(y | x)`` of the operator's noise,
in the units of a log density, for the samplers (:class:`~dwgf.optimizers.Langevin`).

Add your own by subclassing :class:`DataTerm` in any module and naming it by ``class_path`` under
``model.likelihood``.
"""

from dwgf.likelihoods.base import DataTerm, MeanSquaredError
from dwgf.likelihoods.gaussian import QUANTISATION_SIGMA, GaussianLikelihood
from dwgf.likelihoods.poisson import PoissonLikelihood, poisson_measurement

__all__ = ["DataTerm", "MeanSquaredError", "GaussianLikelihood", "PoissonLikelihood", "QUANTISATION_SIGMA", "poisson_measurement"]
