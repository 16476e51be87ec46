"""The data terms (dwgf.likelihoods): each against its formula, its gradient and its minimum."""

import math

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.likelihoods import QUANTISATION_SIGMA, GaussianLikelihood, MeanSquaredError, PoissonLikelihood, poisson_measurement
from dwgf.operators import BoxInpainting, MatrixOperator, RandomInpainting


# -- data terms ----------------------------------------------------------------------------------
def test_mean_squared_error_is_the_papers_averaged_squared_error_over_measured_entries():
    op = RandomInpainting(missing=0.5, sigma_y=0.05)
    x, y = torch.randn(3, 1, 8, 8, dtype=torch.float64), torch.randn(3, 1, 8, 8, dtype=torch.float64)
    params = {"mask": (torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0)) > 0.5).double()}
    mask = params["mask"]
    loss0 = 0.5 * ((x * mask - y) ** 2 * mask).flatten(1).sum(1) / mask.flatten(1).sum(1)
    g0 = (x * mask - y) * mask / mask.flatten(1).sum(1).view(-1, 1, 1, 1)  # d/dx of the sum over items
    g, loss = MeanSquaredError().grad(op, x, y, params)
    assert torch.allclose(loss, loss0, rtol=1e-12) and torch.allclose(g, g0, rtol=1e-12)
    r = ((x * mask - y) * mask).flatten(1).norm(dim=1)
    assert torch.allclose(MeanSquaredError().distance(op, x, y, params), r, rtol=1e-12)  # the DPS residual norm
    g2, loss2 = MeanSquaredError(weight=3.0).grad(op, x, y, params)
    assert torch.allclose(g2, 3 * g0) and torch.allclose(loss2, 3 * loss0)


def test_gaussian_likelihood_is_the_summed_log_density_over_measured_entries():
    op = BoxInpainting(size=[3, 3], position=[2, 2], sigma_y=0.1)
    params = {k: v[None] for k, v in op.sample_params((1, 8, 8), torch.Generator()).items()}
    x, y = torch.randn(1, 1, 8, 8, dtype=torch.float64), torch.randn(1, 1, 8, 8, dtype=torch.float64)
    mask = params["mask"].double()
    expected = ((y - x) ** 2 * mask).sum() / (2 * 0.1**2)
    lik = GaussianLikelihood()
    assert torch.allclose(lik.loss(op, x, y, params), expected.view(1))
    # the gradient against central finite differences
    g, _ = lik.grad(op, x, y, params)
    v = torch.randn_like(x)
    h = 1e-6
    fd = (lik.loss(op, x + h * v, y, params) - lik.loss(op, x - h * v, y, params)) / (2 * h)
    assert torch.allclose((g * v).sum(), fd.sum(), rtol=1e-6)
    # an explicit sigma wins over the operator's
    assert torch.allclose(GaussianLikelihood(sigma=0.2).loss(op, x, y, params), expected.view(1) / 4)


def test_gaussian_likelihood_floors_sigma_for_noiseless_measurements():
    op = BoxInpainting(size=[3, 3], position=[2, 2], sigma_y=0.0)
    assert GaussianLikelihood().noise_sigma(op) == pytest.approx(QUANTISATION_SIGMA) == pytest.approx(2 / 255 / math.sqrt(12))
    assert GaussianLikelihood(sigma_min=0.05).noise_sigma(op) == 0.05
    assert GaussianLikelihood(sigma_min=0.05).noise_sigma(BoxInpainting(size=[3, 3], sigma_y=0.2)) == 0.2
    params = {k: v[None] for k, v in op.sample_params((1, 8, 8), torch.Generator()).items()}
    g, loss = GaussianLikelihood().grad(op, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8), params)
    assert torch.isfinite(g).all() and torch.isfinite(loss).all()
    with pytest.raises(DWGFError, match="sigma_min must be > 0"):
        GaussianLikelihood(sigma_min=0)
    with pytest.raises(DWGFError, match="anneal must be >= 0"):
        GaussianLikelihood(anneal=-1)


def test_annealed_gaussian_likelihood_is_softer_at_high_noise_and_exact_at_the_end():
    op = MatrixOperator(torch.eye(4), image_shape=[4, 1, 1], sigma_y=0.1)
    lik = GaussianLikelihood(anneal=2.0)
    abar = torch.tensor([1.0, 0.5, 0.01])
    assert torch.allclose(lik.variance(op, abar), 0.01 + 2.0 * (1 - abar))
    assert torch.allclose(lik.relative_curvature(op, abar), 0.01 / (0.01 + 2.0 * (1 - abar)))
    x, y = torch.zeros(3, 4, 1, 1), torch.ones(3, 4, 1, 1)
    assert torch.allclose(lik.loss(op, x, y, {}, abar), 4 / (2 * (0.01 + 2.0 * (1 - abar))))
    assert GaussianLikelihood().relative_curvature(op, abar) is None


def test_poisson_likelihood_gradient_and_minimum():
    op = MatrixOperator(torch.eye(5), image_shape=[5, 1, 1])
    lik = PoissonLikelihood(rate=50.0)
    clean = torch.tensor([-0.8, -0.2, 0.0, 0.4, 0.9]).view(1, 5, 1, 1)
    y = poisson_measurement(clean, 50.0, torch.Generator().manual_seed(0))
    x = torch.zeros(1, 5, 1, 1, dtype=torch.float64)
    g, _ = lik.grad(op, x, y.double(), {})
    v, h = torch.randn_like(x), 1e-6
    fd = (lik.loss(op, x + h * v, y.double(), {}) - lik.loss(op, x - h * v, y.double(), {})) / (2 * h)
    assert torch.allclose((g * v).sum(), fd.sum(), rtol=1e-5)
    # the negative log-likelihood is smallest where A x reproduces the counts (lambda = k)
    best = y.double().clamp(-1 + 1e-3, 1)
    assert lik.loss(op, best, y.double(), {}) < lik.loss(op, best + 0.05, y.double(), {})
    assert lik.loss(op, best, y.double(), {}) < lik.loss(op, best - 0.05, y.double(), {})
    with pytest.raises(DWGFError, match="rate must be > 0"):
        PoissonLikelihood(rate=0)
