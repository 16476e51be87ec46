"""The Gaussian-mixture prior: exact score, DDIM reproduces the mixture, exact posterior against importance sampling."""

import math

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.operators import MatrixOperator
from dwgf.priors import GaussianMixture, GaussianMixturePrior, grid_mixture
from dwgf.sampling import ddim_sample


def _mixture(d=2, seed=0, diagonal=True):
    gen = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-2.0, 1.0], [2.0, 0.5], [0.0, -2.5]], dtype=torch.float64).repeat(1, d // 2)
    if diagonal:
        cov = 0.2 + torch.rand(3, d, dtype=torch.float64, generator=gen)
    else:
        a = torch.randn(3, d, d, dtype=torch.float64, generator=gen)
        cov = a @ a.transpose(1, 2) / d + 0.1 * torch.eye(d, dtype=torch.float64)
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), means, cov)


@pytest.mark.parametrize("diagonal", [True, False])
def test_the_closed_form_noise_prediction_is_the_diffused_score(diagonal):
    prior = GaussianMixturePrior(_mixture(4, diagonal=diagonal), latent_shape=(4, 1, 1))
    gen = torch.Generator().manual_seed(1)
    t = torch.tensor([0, 10, 200, 500, 999, 500])
    z = torch.randn(6, 4, 1, 1, dtype=torch.float64, generator=gen) * 2
    eps = prior.eps(z, t)
    for i, ti in enumerate(t.tolist()):
        abar = float(prior.alphas_cumprod[ti])
        x = z[i].reshape(1, -1).clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(prior.mixture.diffused(abar).log_prob(x).sum(), x)
        assert torch.allclose(eps[i].reshape(-1).double(), -math.sqrt(1 - abar) * grad[0], rtol=1e-5, atol=1e-6), ti


def test_ddim_sampling_reproduces_the_mixture_mean_and_covariance():
    mix = _mixture(2)
    prior = GaussianMixturePrior(mix)
    samples = ddim_sample(prior, 4000, num_steps=250, eta=1.0, generator=torch.Generator().manual_seed(0)).reshape(4000, -1).double()
    exact_mean, exact_cov = mix.mean(), mix.covariance()
    se = (torch.diagonal(exact_cov) / 4000).sqrt()
    assert ((samples.mean(0) - exact_mean).abs() < 4 * se + 0.03).all(), (samples.mean(0), exact_mean)
    assert torch.allclose(torch.cov(samples.T), exact_cov, rtol=0.1, atol=0.1), (torch.cov(samples.T), exact_cov)


@pytest.mark.parametrize("diagonal", [True, False])
def test_the_exact_posterior_agrees_with_importance_sampling(diagonal):
    mix = _mixture(2, diagonal=diagonal)
    h = torch.tensor([[1.0, 0.7]], dtype=torch.float64)
    y, sigma = torch.tensor([0.8], dtype=torch.float64), 0.5
    post = mix.condition(h, y, sigma)
    gen = torch.Generator().manual_seed(2)
    z = mix.sample(400_000, gen)
    logw = -0.5 * ((z @ h.T - y) ** 2).sum(-1) / sigma**2
    w = torch.softmax(logw, 0)
    is_mean = (w[:, None] * z).sum(0)
    is_cov = (w[:, None, None] * (z - is_mean)[:, :, None] * (z - is_mean)[:, None, :]).sum(0)
    assert torch.allclose(post.mean(), is_mean, atol=0.02), (post.mean(), is_mean)
    assert torch.allclose(post.covariance(), is_cov, atol=0.03), (post.covariance(), is_cov)
    is_weights = (w[:, None] * mix.responsibilities(z)).sum(0)  # posterior mass per component
    assert torch.allclose(post.weights, is_weights, atol=0.01), (post.weights, is_weights)
    exact = post.sample(200_000, torch.Generator().manual_seed(3))  # its samples have its moments
    assert torch.allclose(exact.mean(0), post.mean(), atol=0.01)


@pytest.mark.parametrize("decoder", ["identity", "orthogonal", "upsample"])
def test_linear_decoders_and_the_posterior_through_them(decoder):
    mix = grid_mixture(8, generator=torch.Generator().manual_seed(0))
    prior = GaussianMixturePrior(mix, latent_shape=(2, 2, 2), decoder=decoder)
    z = torch.randn(3, 2, 2, 2, generator=torch.Generator().manual_seed(1))
    x = prior.decode(z)
    assert x.shape == ((3, 2, 4, 4) if decoder == "upsample" else (3, 2, 2, 2)) == (3, prior.image_channels, prior.image_size, prior.image_size)
    assert torch.allclose(prior.encode(x), z, atol=1e-5)  # the encoder inverts the decoder
    n = prior.image_channels * prior.image_size**2
    a = torch.randn(2, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    op = MatrixOperator(a, image_shape=[prior.image_channels, prior.image_size, prior.image_size], sigma_y=0.5)
    y = op(x[:1].double(), {})
    post = prior.posterior(a, y, 0.5)
    direct = mix.condition(a @ prior.decoder_matrix, y.reshape(-1), 0.5)  # H = A D
    assert torch.allclose(post.means, direct.means) and torch.allclose(post.weights, direct.weights)
    # the posterior mean makes the measurement more likely than the prior mean does
    fit = lambda m: ((a @ (prior.decoder_matrix @ m) - y.reshape(-1)) ** 2).sum()  # noqa: E731
    assert fit(post.mean()) < fit(mix.mean())


def test_grid_mixture_is_cardoso_et_al_s():
    mix = grid_mixture(5, generator=torch.Generator().manual_seed(0))
    assert mix.means.shape == (25, 5) and torch.equal(mix.covariances, torch.ones(25, 5, dtype=torch.float64))
    assert set(mix.means[:, 0].tolist()) == {-8.0, -4.0, 0.0, 4.0, 8.0}
    assert torch.equal(mix.means[:, 2], mix.means[:, 0]) and torch.equal(mix.means[:, 3], mix.means[:, 1])
    assert math.isclose(float(mix.weights.sum()), 1.0)


def test_bad_arguments_name_the_argument():
    with pytest.raises(DWGFError, match=r"^GaussianMixturePrior: latent_shape \(2, 2, 2\) has 8 elements; the mixture has 4"):
        GaussianMixturePrior(_mixture(4), latent_shape=(2, 2, 2))
    with pytest.raises(DWGFError, match="^GaussianMixturePrior: decoder 'wavelet'"):
        GaussianMixturePrior(_mixture(4), decoder="wavelet")


def test_the_fast_noise_prediction_in_high_dimension_equals_the_mixture_score():
    """The matrix-product path (rows at several t, d = 300) against the diffused mixture's own score."""
    mix = grid_mixture(300, generator=torch.Generator().manual_seed(0))
    mix = GaussianMixture(mix.weights, mix.means, 0.5 + torch.rand(25, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(1)))
    prior = GaussianMixturePrior(mix, schedule="linear")
    z = torch.randn(6, 300, 1, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3
    t = torch.tensor([999, 700, 300, 300, 20, 0])
    eps = prior.eps(z, t).reshape(6, -1).double()
    for i, ti in enumerate(t.tolist()):
        a = float(prior.alphas_cumprod[ti])
        expected = -math.sqrt(1 - a) * mix.diffused(a).score(z[i].reshape(1, -1))[0]
        assert torch.allclose(eps[i], expected, rtol=1e-5, atol=1e-5), ti


def test_schedules():
    from dwgf.priors import ddpm_schedule

    assert ddpm_schedule("scaled_linear")[-1].item() == pytest.approx(0.00466, abs=1e-5)
    assert ddpm_schedule("linear")[-1].item() == pytest.approx(4.04e-5, rel=1e-2)
    with pytest.raises(DWGFError, match="^GaussianMixturePrior: schedule 'cosine': expected one of scaled_linear, linear"):
        GaussianMixturePrior(_mixture(2), schedule="cosine")
