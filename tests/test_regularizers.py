"""The interacting regularizers: closed forms against autograd, reductions to the paper's term, costs, invariances."""

import math

import pytest
import torch

from dwgf import DWGF
from dwgf.errors import DWGFError
from dwgf.flow import FlowState, Problem
from dwgf.operators import BoxInpainting
from dwgf.priors import GaussianMixture, GaussianMixturePrior, grid_mixture
from dwgf.regularizers import (
    ConstantWeighting,
    DWGFWeighting,
    EncoderFeatures,
    KDEKLPrior,
    KernelRepulsion,
    KLPrior,
    Pixels,
    ScoreWeighting,
)
from dwgf.optimizers import LangevinNoise
from dwgf.regularizers.kernels import kernel_pull, median_bandwidth, pairwise_sq
from tests.test_flow import _setup


def _state(z, abar, eps=None, eps_hat=None, x=None, iteration=0, num_iterations=1, step_size=None):
    a = abar.view(-1, *([1] * (z.dim() - 1)))
    eps = torch.randn_like(z) if eps is None else eps
    return FlowState(
        z=z, x=torch.zeros(1) if x is None else x, x_noise=torch.zeros(1), t=torch.zeros(len(abar), dtype=torch.long), abar=abar,
        eps=eps, z_t=a.sqrt() * z + (1 - a).sqrt() * eps, eps_hat=torch.randn_like(z) if eps_hat is None else eps_hat,
        iteration=iteration, num_iterations=num_iterations, step_size=step_size,
    )


# -- kernels -------------------------------------------------------------------------------------
def test_median_bandwidth_is_the_median_pair_over_two_log_n_plus_one():
    pts = torch.tensor([[[0.0], [1.0], [3.0]]], dtype=torch.float64)  # squared distances 1, 9, 4
    sq = pairwise_sq(pts)
    assert torch.equal(sq[0], torch.tensor([[0.0, 1, 9], [1, 0, 4], [9, 4, 0]], dtype=torch.float64))
    assert torch.allclose(median_bandwidth(sq), torch.tensor([4 / (2 * math.log(4))], dtype=torch.float64))
    assert torch.equal(median_bandwidth(pairwise_sq(torch.randn(2, 1, 5))), torch.ones(2))  # one particle: no pair


def test_kernel_pull_is_the_kde_score_less_the_own_centre_pull():
    torch.manual_seed(0)
    b, n, d = 2, 4, 6
    x, at = torch.randn(b, n, d, dtype=torch.float64), torch.randn(b, n, d, dtype=torch.float64)
    h = torch.tensor([0.7, 2.5], dtype=torch.float64)
    leaf = at.clone().requires_grad_(True)
    sq = (leaf.unsqueeze(2) - x.unsqueeze(1)).square().sum(-1)
    log_kde = torch.logsumexp(-sq / (2 * h.view(b, 1, 1)), -1)
    (score,) = torch.autograd.grad(log_kde.sum(), leaf)
    expected = score - (x - at) / h.view(b, 1, 1)
    assert torch.allclose(kernel_pull(x, h, at=at), expected, atol=1e-12)


# -- KDEKLPrior ----------------------------------------------------------------------------------
def test_kde_kl_prior_is_the_papers_term_at_bandwidth_one_minus_abar():
    torch.manual_seed(0)
    z = torch.randn(2, 5, 4, 3, 3, dtype=torch.float64)
    abar = torch.tensor([0.3, 0.8], dtype=torch.float64)
    state = _state(z, abar)
    paper = KLPrior(weight=0.2).force(state)
    # a fixed median term below 1 - abar: h_t = 1 - abar exactly
    assert torch.allclose(KDEKLPrior(weight=0.2, bandwidth=1e-6).force(state), paper, atol=1e-12)
    # the median heuristic gives another, larger bandwidth here, so another force
    assert not torch.allclose(KDEKLPrior(weight=0.2).force(state), paper, atol=1e-6)


def test_kde_kl_prior_with_one_particle_is_score_distillation():
    torch.manual_seed(1)
    z = torch.randn(3, 1, 2, 4, 4, dtype=torch.float64)
    abar = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
    state = _state(z, abar)
    sds = KLPrior(weight=0.3, particle_term=False).force(state)
    for reg in (KDEKLPrior(weight=0.3), KDEKLPrior(weight=0.3, bandwidth=50.0, entropy_weight=7.0)):
        assert torch.allclose(reg.force(state), sds, atol=1e-12)


def test_kde_kl_prior_interaction_acts_in_high_dimension():
    """d = 16,384: the paper's interaction is numerically zero, the adaptive one is not, and it repels."""
    torch.manual_seed(2)
    z = torch.randn(1, 4, 4, 64, 64, dtype=torch.float64)
    abar = torch.tensor([0.5], dtype=torch.float64)
    eps = torch.randn_like(z)
    state = _state(z, abar, eps=eps, eps_hat=eps)  # eps_hat = eps: only the interaction is left
    assert KLPrior(weight=1.0).force(state).abs().max() < 1e-12
    force = KDEKLPrior(weight=1.0, weighting=ConstantWeighting()).force(state)
    assert force.abs().max() > 1e-8
    # the force is a gradient to descend: a small step along -force moves the particles apart
    before = pairwise_sq(z).sum()
    assert pairwise_sq(z - 1e3 * force).sum() > before


def test_kde_kl_prior_bad_arguments():
    with pytest.raises(DWGFError, match="bandwidth"):
        KDEKLPrior(bandwidth="mean")
    with pytest.raises(DWGFError, match="scale"):
        KDEKLPrior(scale=0)
    assert "particle_term" not in repr(KDEKLPrior())


# -- KernelRepulsion -----------------------------------------------------------------------------
def _own_term_gradient(u, h, weight):
    """Autograd of particle i's own term E^i = weight (1/N) sum_j k(u^i, u^j) with respect to u^i, u^j held fixed."""
    b, n = u.shape[:2]
    out = torch.zeros_like(u)
    for i in range(n):
        leaf = u[:, i].clone().requires_grad_(True)
        sq = (leaf.unsqueeze(1) - u.detach()).flatten(2).square().sum(-1)  # (B, N)
        e = weight * torch.exp(-sq / (2 * h.view(b, 1))).mean(-1)
        (out[:, i],) = torch.autograd.grad(e.sum(), leaf)
    return out


def test_latent_repulsion_is_the_gradient_of_each_particles_kernel_term():
    torch.manual_seed(3)
    z = torch.randn(2, 4, 3, 2, 2, dtype=torch.float64)
    abar = torch.tensor([0.4, 0.9], dtype=torch.float64)
    force = KernelRepulsion(weight=0.5, space="latent").force(_state(z, abar))
    h = median_bandwidth(pairwise_sq(z))
    assert torch.allclose(force, _own_term_gradient(z, h, 0.5), atol=1e-12)
    fixed = KernelRepulsion(weight=0.5, space="latent", bandwidth=3.0, scale=2.0).force(_state(z, abar))
    assert torch.allclose(fixed, _own_term_gradient(z, torch.full((2,), 6.0, dtype=torch.float64), 0.5), atol=1e-12)
    # descending it moves the particles apart
    assert pairwise_sq(z - 0.1 * force / force.abs().max()).sum() > pairwise_sq(z).sum()


def test_image_repulsion_goes_through_the_feature_map(ldm_prior):
    torch.manual_seed(4)
    x = torch.randn(2, 3, ldm_prior.image_channels, ldm_prior.image_size, ldm_prior.image_size) * 0.5
    z = torch.zeros(2, 3, *ldm_prior.latent_shape)
    abar = torch.tensor([0.5, 0.5])
    pixels = KernelRepulsion(weight=1.0).force(_state(z, abar, x=x))
    h = median_bandwidth(pairwise_sq(x))
    assert torch.allclose(pixels, _own_term_gradient(x, h, 1.0), atol=1e-6)
    # encoder features: J_E^T applied to the feature-space force
    enc_reg = KernelRepulsion(weight=1.0, features=EncoderFeatures())
    enc_reg.start(ldm_prior, None, None)
    enc = enc_reg.force(_state(z, abar, x=x))
    leaf = x.flatten(0, 1).clone().requires_grad_(True)
    u = ldm_prior.encode(leaf).reshape(2, 3, -1)
    g_u = _own_term_gradient(u.detach(), median_bandwidth(pairwise_sq(u.detach())), 1.0)
    (expected,) = torch.autograd.grad(u, leaf, grad_outputs=g_u)
    assert enc.shape == x.shape and torch.allclose(enc, expected.view_as(x), atol=1e-6)
    assert enc.abs().max() > 0


def test_repulsion_follows_its_weighting_and_is_zero_for_one_particle():
    torch.manual_seed(5)
    z = torch.randn(2, 3, 4, dtype=torch.float64)
    abar = torch.tensor([0.25, 0.81], dtype=torch.float64)
    const = KernelRepulsion(space="latent").force(_state(z, abar))
    faded = KernelRepulsion(space="latent", weighting=DWGFWeighting()).force(_state(z, abar))
    assert torch.allclose(faded, const * ((1 - abar) / abar.sqrt()).view(2, 1, 1))
    one = KernelRepulsion(space="latent").force(_state(z[:, :1], abar))
    assert torch.equal(one, torch.zeros_like(one))


def test_repulsion_bad_arguments():
    with pytest.raises(DWGFError, match="space"):
        KernelRepulsion(space="pixels")
    with pytest.raises(DWGFError, match="features"):
        KernelRepulsion(space="latent", features=Pixels())
    with pytest.raises(DWGFError, match="bandwidth"):
        KernelRepulsion(bandwidth=-1.0)


# -- in the flow ---------------------------------------------------------------------------------
DIVERSE = [
    KDEKLPrior(weight=0.2, entropy_weight=0.1),
    KernelRepulsion(weight=0.05),
    KernelRepulsion(weight=0.05, space="latent"),
    LangevinNoise(scale=0.05),  # the spelling of earlier versions: DWGF hands it to the optimiser
]


def test_diverse_regularizers_add_no_network_call_and_no_decoder_pass(ldm_prior, monkeypatch):
    calls = {"eps": 0, "decode": 0, "encode": 0}
    for name in calls:
        original = getattr(ldm_prior, f"_{name}")

        def counted(*args, _o=original, _n=name):
            calls[_n] += 1
            return _o(*args)

        monkeypatch.setattr(ldm_prior, f"_{name}", counted)
    op, y, params = _setup(ldm_prior)
    DWGF(ldm_prior, num_steps=3, num_particles=3, regularizers=[KLPrior(), *DIVERSE]).set_operator(op).solve(y, params, [0, 1])
    assert calls == {"eps": 3, "decode": 3 + 1, "encode": 0}
    calls.update(eps=0, decode=0, encode=0)
    reg = KernelRepulsion(weight=0.05, features=EncoderFeatures())
    DWGF(ldm_prior, num_steps=3, num_particles=3, regularizers=[KLPrior(), reg]).set_operator(op).solve(y, params, [0, 1])
    assert calls == {"eps": 3, "decode": 3 + 1, "encode": 3}


def test_frozen_weights_get_no_grad_with_diverse_regularizers(ldm_prior):
    op, y, params = _setup(ldm_prior)
    solver = DWGF(ldm_prior, num_steps=2, num_particles=3,
                  regularizers=[*DIVERSE, KernelRepulsion(features=EncoderFeatures())]).set_operator(op)
    solver.solve(y, params, [0, 1])
    assert all(p.grad is None for p in solver.parameters())


def test_null_space_repulsion_acts_only_where_the_measurement_leaves_freedom(ldm_prior):
    from dwgf.operators import SuperResolution
    from dwgf.regularizers import NullSpace

    torch.manual_seed(6)
    op, y, params = _setup(ldm_prior)
    n = 3
    x = torch.randn(2, n, ldm_prior.image_channels, ldm_prior.image_size, ldm_prior.image_size) * 0.5
    z = torch.zeros(2, n, *ldm_prior.latent_shape)
    params_n = {k: v.repeat_interleave(n, 0) for k, v in params.items()}
    state = _state(z, torch.tensor([0.5, 0.5]), x=x)
    reg = KernelRepulsion(weight=1.0, features=NullSpace())
    reg.start(ldm_prior, Problem(op, y, params, num_particles=n), None)
    force = reg.force(state)
    mask = params_n["mask"].view_as(force[:, :, :1]).expand_as(force)
    assert force[mask > 0].abs().max() == 0 and force[mask == 0].abs().max() > 0
    # = pixel repulsion of the masked-out part
    free = x * (1 - mask)
    assert torch.allclose(force, _own_term_gradient(free, median_bandwidth(pairwise_sq(free)), 1.0) * (1 - mask), atol=1e-6)
    # box super-resolution: the force has zero block means (the measurement fixes them)
    sr = SuperResolution(factor=4, kernel="box")
    reg.start(ldm_prior, Problem(sr, sr.forward(x[:, 0], {}), {}, num_particles=n), None)
    f_sr = reg.force(state)
    assert sr.forward(f_sr.flatten(0, 1), {}).abs().max() < 1e-7 and f_sr.abs().max() > 0
    from dwgf.operators import PhaseRetrieval
    with pytest.raises(DWGFError, match="linear forward operator"):
        KernelRepulsion(features=NullSpace()).start(ldm_prior, Problem(PhaseRetrieval(), y, {}), None)
    assert isinstance(op, BoxInpainting)


# -- the prior term in log-density units ----------------------------------------------------------
def test_kl_prior_per_element_false_is_d_times_the_papers_force():
    z = torch.randn(2, 3, 4, 2, 2)
    state = _state(z, torch.tensor([0.3, 0.7]))
    paper = KLPrior(0.2).force(state)
    summed = KLPrior(0.2, per_element=False).force(state)
    assert torch.allclose(summed, paper * 16)


def test_score_weighting_with_query_noise_zero_is_the_smoothed_priors_score():
    """-force = sqrt(abar) * score_{p_t}(sqrt(abar) z): the score of the prior smoothed to variance (1 - abar) / abar."""
    prior = GaussianMixturePrior(grid_mixture(4), schedule="linear")
    z = torch.randn(2, 3, 4, 1, 1, dtype=torch.float64)
    t = torch.tensor([400, 100])
    abar = prior.abar(t).double()
    a = abar.view(2, 1, 1, 1, 1)
    eps_hat = prior.eps((a.sqrt() * z).flatten(0, 1), t.repeat_interleave(3)).view_as(z)
    state = _state(z, abar, eps=torch.zeros_like(z), eps_hat=eps_hat)
    force = KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False).force(state)
    for b in range(2):
        smoothed = GaussianMixture(prior.mixture.weights, prior.mixture.means, prior.mixture.covariances + (1 - abar[b]) / abar[b])
        assert torch.allclose(-force[b].reshape(3, 4), smoothed.score(z[b].reshape(3, 4)), atol=1e-8)


def test_kl_prior_curvature_bounds_the_smoothed_priors_hessian():
    prior = GaussianMixturePrior(grid_mixture(2, spacing=1.0), schedule="linear")
    reg = KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)
    for t in (50, 300, 700):
        abar = float(prior.abar(torch.tensor([t]))[0])
        smoothed = GaussianMixture(prior.mixture.weights, prior.mixture.means, prior.mixture.covariances + (1 - abar) / abar)
        pts = torch.randn(200, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(t)) * 3
        h = 1e-5
        worst = 0.0
        for i in range(2):  # the Hessian of -log p~ by central differences of the score
            e = torch.zeros(2, dtype=torch.float64)
            e[i] = h
            col = -(smoothed.score(pts + e) - smoothed.score(pts - e)) / (2 * h)
            worst = max(worst, float(col.norm(dim=1).max()))
        bound = float(reg.curvature(_state(torch.zeros(1, 1, 2, 1, 1), torch.tensor([abar]))))
        assert bound == pytest.approx(abar / (1 - abar))
        assert worst <= bound * (1 + 1e-6)


def test_kde_kl_prior_has_the_papers_per_element_curvature_bound():
    from dwgf.regularizers import KDEKLPrior

    state = _state(torch.zeros(2, 3, 4, 2, 2), torch.tensor([0.3, 0.9]))
    assert torch.allclose(KDEKLPrior(0.2).curvature(state), KLPrior(0.2).curvature(state))
    assert "per_element" not in repr(KDEKLPrior(0.2)) and "particle_term" not in repr(KDEKLPrior(0.2))
