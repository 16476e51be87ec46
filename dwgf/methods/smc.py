"""Sequential Monte Carlo posterior sampling in the prior's latent space: twisted proposals, importance weights, resampling.

The algorithm is twisted diffusion sampling (TDS; Wu, Trippe, Naesseth, Blei and Cunningham 2023), in a latent
diffusion model, as MCGdiff and DDSMC do for linear problems (Cardoso et al. 2024). ``N`` particles per
measurement start from ``z_K ~ N(0, I)`` and go down the DDPM chain (DDIM with ``eta = 1``, the prior's
ancestral transition ``p(z' | z) = N(mu(z), s^2 I)``, on :func:`~dwgf.sampling.ddim_timesteps`).

At each step, for a particle ``z`` at time ``t``, the network gives ``z0_hat(z)``. The *twist* is the data
term at that Tweedie estimate, ``log ptilde_t(y | z) = -l(D(z0_hat); y, abar_t)``, with ``l`` the problem's
data term (a log-likelihood: :class:`~dwgf.likelihoods.GaussianLikelihood` or
:class:`~dwgf.likelihoods.PoissonLikelihood`; an annealed Gaussian term inflates its variance at high noise,
a softer twist). Its gradient ``g`` (one backward through the decoder and the network) drifts the
proposal:

    ``q(z' | z) = N(mu(z) + guidance * s^2 g, s^2 I)``,

and the particle's weight is multiplied by

    ``ptilde_t'(y | z') p(z' | z) / (ptilde_t(y | z) q(z' | z))``,

where ``log p / q = -guidance^2 s^2 |g|^2 / 2 - guidance * s * e . g`` for the proposal's noise ``e``. At the
end the twist is replaced by the exact data term at ``z_0`` (no annealing). The initial weights are
``ptilde_K(y | z_K)``. Whenever an item's effective sample size ``1 / sum w^2`` (weights normalised over its
``N`` particles) falls below ``ess_threshold * N``, its particles are resampled systematically, with one
uniform drawn from the item's own generator at every step whether it is used or not; at the end they
are always resampled, so the ``N`` particles returned are equally weighted. As ``N`` grows the particles
become samples of the posterior of the chain's prior (the weights correct whatever the twist gets wrong);
with ``weights = False`` the same proposal runs without weights or resampling (the guided chain alone).

**Resample-move** (``moves > 0``; Gilks and Berzuini 2001, as in Doucet and Johansen's SMC tutorial): after an
item is resampled, its copies of one ancestor are spread out again by ``moves`` unadjusted Langevin steps on the
step's target ``p_t(z) ptilde_t(y | z)``, whose score is ``-eps_hat / sqrt(1 - abar_t) + grad log ptilde``:
``z <- z + delta score + sqrt(2 delta) xi``, ``delta = move_size (1 - abar_t)``. The weights stay as they are (the
move leaves the target nearly invariant); the moved particles' twist, gradient and network outputs are computed
again, one more network forward and backward per move. The moves are unadjusted (the prior's density is not
available for a Metropolis test), so a large ``move_size`` biases the result: on the one-dimensional two-mode test
problem (100 steps, 4096 particles) ``move_size`` 0.05 with two moves keeps the posterior's mean, variance and
mode weight within Monte Carlo error over 6 runs (``tests/test_smc.py``), while 0.2 gave, in 3 runs, variances 7%
to 20% above the exact one (plain SMC on the same seeds: 10% below to 5% above).

**Adaptive tempering** (``tempering > 0``; Del Moral, Doucet and Jasra 2006, with the conditional ESS of Zhou,
Johansen and Aston 2016). Step ``k``'s target is ``p_t(z) ptilde_t(y | z)^lambda_k``: each item's exponent is raised
from the previous one as far as the conditional effective sample size of the step's incremental weights stays at or
above ``tempering * N`` (bisection), and at least to ``((k + 1) / K) ** tempering_power``, so that it is 1 at the last step and the final
weight by the exact data term is the untempered one. The weights are those of the tempered targets; the proposal takes as
its drift the tempered twist's gradient (``lambda`` times the twist's), so that the proposal matches the target;
moves (if any) follow the tempered target. The particles are then flatter-weighted early, when the
twist is least accurate, and the resamplings that collapse them come later, or not at all.

**Drift** (``drift``): TDS's gradient of the twist through the network (``"twist"``), or DWGF's data force at the
Tweedie estimate times ``sqrt(abar_t)`` (``"tweedie"``: no network backward). Any drift leaves the weights exact.

**Diagnostics.** Each state carries the particles' ``ancestors`` (which first particle each descends from) and a
``report`` for ``metrics.csv``: the number of distinct ancestors of each item's final particles and the smallest
effective sample size of the run (the final weighting included), which ``dwgf predict`` writes as ``ancestors`` and
``min_ess`` and warns about when the particles descend from at most two ancestors.

Every draw and every weight is per item: an item's particles do not depend on its batch.

**Anneal the twist.** With the exact likelihood as the twist (``GaussianLikelihood(anneal=0)``) a sharp
measurement makes a handful of particles carry all the weight at some step, and the sampler does not improve
with ``N``: on ``benchmarks/posterior.py``'s bed at ``d = 80``, one measurement, its sliced distance stays at
1.0 to 2.5 from 8 to 1024 particles. ``anneal = 1`` (the twist's variance ``sigma^2 + (1 - abar_t)``, the
spread of ``z_0`` around its Tweedie estimate for a unit-variance prior) keeps the weights usable and brings
it to 0.23 to 0.49 (``benchmarks/results/smc_study.md``); the shipped configs use it. With few particles and
many measured pixels (MNIST inpainting, ``N = 8``) the weights still collapse the particles onto one or two
ancestors: see ``docs/results/sampling.md``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal, Optional

import torch

from dwgf.draws import ItemDraws, item_generators
from dwgf.precision import float32_but_the_unet, unet_precision
from dwgf.priors.base import LatentPrior
from dwgf.problem import Problem, SamplerState, first_failures
from dwgf.sampling import ddim_timesteps
from dwgf.settings import Settings, at_least_zero, check_ddim_steps, positive, within


@dataclass(frozen=True, kw_only=True)
class SMCConfig(Settings):
    """The SMC sampler's settings.

    Attributes:
        num_steps: DDPM steps ``K`` (one network forward and backward each). Default 200.
        guidance: the drift's scale (1: TDS's proposal, ``s^2 grad log ptilde``; 0: the prior's transition).
            Default 1.
        ess_threshold: resample an item when its effective sample size falls below this share of ``N``.
            Default 0.5.
        weights: ``False``: the same proposal with no weights and no resampling. Default ``True``.
        moves: Langevin moves on the step's target after each resampling, per resampled item (resample-move:
            the copies of one ancestor spread out again). Each move costs one more network forward and backward.
            Default 0 (none).
        move_size: a move's step ``delta = move_size * (1 - abar_t)`` (a share of the noise level's variance).
            Default 0.1.
        tempering: adaptive tempering's threshold, a share of ``N``: each step's target takes the twist to a power
            ``lambda`` in ``[0, 1]``, raised at each step as far as the conditional effective sample size of the step's
            weights stays at or above ``tempering * N`` (and at least to ``((k + 1) / K) ** tempering_power`` at step
            ``k``, so that it is 1 at the last). Default 0: no tempering (``lambda = 1`` throughout).
        tempering_power: the power of that floor: 1 (default) raises it linearly; a larger power leaves the early
            steps flatter and puts more of the likelihood's weight on the last ones.
        drift: the proposal's drift. ``"twist"`` (default): the twist's gradient in ``z``, through the network and the
            decoder (TDS's). ``"tweedie"``: DWGF's data force, the gradient of the twist's data term in the clean latent at
            the Tweedie estimate ``z0_hat`` (through the decoder alone, as the flow takes it), times ``sqrt(abar_t)`` (the
            network's Jacobian ``dz0_hat / dz`` replaced by its value for a standard normal latent, whose Tweedie estimate
            is ``sqrt(abar_t) z``); no network backward,
            so a step costs one network forward. The weights are exact for either drift.
    """

    num_steps: int = 200
    guidance: float = 1.0
    ess_threshold: float = 0.5
    weights: bool = True
    moves: int = 0
    move_size: float = 0.1
    tempering: float = 0.0
    tempering_power: float = 1.0
    drift: Literal["twist", "tweedie"] = "twist"

    def check(self) -> None:
        positive(self, "num_steps")
        at_least_zero(self, "guidance", "moves")
        within(self, "ess_threshold", 0, 1)
        within(self, "move_size", 0, 1, open_low=True)
        within(self, "tempering", 0, 1)
        within(self, "tempering_power", 0, 100, open_low=True)
        if self.tempering and not self.weights:
            raise self.error("tempering", ": tempering sets the weights' exponent, and weights=False has none: set tempering to 0")
        if self.moves and not self.weights:
            raise self.error("moves", ": moves follow a resampling, and weights=False never resamples: set moves to 0")

    def check_prior(self, prior) -> None:
        check_ddim_steps(self, prior)


@dataclass
class SMCState(SamplerState):
    """A step of the SMC sampler: :class:`~dwgf.problem.SamplerState` plus each item's effective sample size
    after the step's weighting (``ess``, ``(B,)``, in particles), whether it was resampled (``resampled``), which of
    the ``N`` first particles each particle descends from (``ancestors``, ``B x N``) and the twist's exponent
    (``tempering``, ``(B,)``; 1 without tempering). Its ``report`` (for ``metrics.csv``, on the last iteration's state only):
    ``ancestors``, the number of distinct ancestors of each item's final particles, and ``min_ess``, the smallest
    effective sample size of the run, the final weighting by the exact data term included."""

    ess: Optional[torch.Tensor] = None
    resampled: Optional[torch.Tensor] = None
    ancestors: Optional[torch.Tensor] = None
    tempering: Optional[torch.Tensor] = None


def smc(prior: LatentPrior, problem: Problem, draw: Optional[ItemDraws] = None, *,
        callback: Optional[Callable[[SMCState], None]] = None, **settings) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior samples ``B x N x C x H x W`` by SMC (equally weighted) and ``failed_at`` ``(B,)``.
    ``settings``: :class:`SMCConfig`'s fields. See the module docstring for the algorithm."""
    config = SMCConfig(**settings)
    config.check_prior(prior)
    if torch.is_inference_mode_enabled():
        raise RuntimeError("smc needs autograd: run it outside torch.inference_mode (Trainer(inference_mode=False))")
    device = problem.y.device
    draw = draw if draw is not None else ItemDraws(item_generators(range(problem.batch), "cpu"), device)
    with float32_but_the_unet(device.type) as unet_dtype:
        return _smc(prior, problem, draw, callback, config, unet_dtype)


smc.settings_class = SMCConfig  # type: ignore[attr-defined] - the solver checks --model.settings before a run


def _smc(prior: LatentPrior, problem: Problem, draw: ItemDraws, callback: Optional[Callable[[SMCState], None]], config: SMCConfig,
         unet_dtype: Optional[torch.dtype]) -> tuple[torch.Tensor, torch.Tensor]:
    b, n = problem.batch, problem.num_particles
    device = problem.y.device
    shape = prior.latent_shape_at(problem.size)
    ts = ddim_timesteps(config.num_steps, prior.num_train_timesteps).to(device)
    z = draw((n, *shape)).flatten(0, 1)  # B*N, item-major
    log_w = torch.zeros(b, n, device=device, dtype=torch.float64)
    previous_twist = previous_ratio = None
    failed_at = torch.full((b,), -1, dtype=torch.long, device=device)
    ancestors = torch.arange(n, device=device).view(1, n).expand(b, n).clone()
    min_ess = torch.full((b,), float(n), dtype=torch.float64, device=device)
    lam = previous_lam = torch.ones(b, dtype=torch.float64, device=device)  # the twist's exponent (tempering)
    state = None
    try:
        for i, t in enumerate(ts):
            tt = t.repeat(b * n)
            abar = prior.abar(tt, z)
            twist, grad, eps, z0 = _twist(prior, problem, z, tt, abar, unet_dtype, config.drift)
            if config.weights and config.tempering:  # the exponent raised as far as the conditional ESS allows
                lam = _tempering(log_w, twist.double().view(b, n), None if previous_twist is None else previous_twist.view(b, n),
                                 None if previous_ratio is None else previous_ratio.view(b, n), previous_lam,
                                 ((i + 1) / len(ts)) ** config.tempering_power, config.tempering * n)
                log_w = log_w + lam.view(b, 1) * twist.double().view(b, n)
                if previous_twist is not None:
                    log_w = log_w - previous_lam.view(b, 1) * previous_twist.view(b, n) + previous_ratio.view(b, n)
            elif config.weights:  # the incremental weight of the step that made z (the first: the initial twist)
                log_w = log_w + twist.double().view(b, n)
                if previous_twist is not None:
                    log_w = log_w - previous_twist.view(b, n) + previous_ratio.view(b, n)
            u = torch.special.ndtr(draw((1,)).view(b)).double()  # one uniform per item per step, used or not
            ess = _ess(log_w)
            min_ess = torch.minimum(min_ess, ess)
            resample = (ess < config.ess_threshold * n) if config.weights else torch.zeros(b, dtype=torch.bool, device=device)
            if bool(resample.any()):
                index = _systematic(log_w, u, resample)
                z, twist, grad, eps, z0 = (v.view(b, n, *v.shape[1:]).gather(1, _expand(index, v.view(b, n, *v.shape[1:])))
                                            .flatten(0, 1) for v in (z, twist, grad, eps, z0))
                ancestors = ancestors.gather(1, index)
                log_w = torch.where(resample.view(b, 1), torch.zeros_like(log_w), log_w)
            for _ in range(config.moves):  # resample-move: Langevin on the step's target, resampled items only
                xi = draw((n, *shape)).flatten(0, 1)  # drawn at every step, used or not: an item's draws are its own
                if bool(resample.any()):
                    z, twist, grad, eps, z0 = _move(prior, problem, (z, twist, grad, eps, z0), xi, tt, abar,
                                                    resample.repeat_interleave(n), config.move_size, unet_dtype,
                                                    lam.repeat_interleave(n) if config.tempering else None, config.drift)
            # the proposal: the prior's ancestral step, drifted by the twist's gradient
            abar_prev = prior.abar(ts[i + 1].repeat(b * n), z) if i + 1 < len(ts) else torch.ones_like(abar)
            a, a_prev = abar.view(-1, *([1] * (z.dim() - 1))), abar_prev.view(-1, *([1] * (z.dim() - 1)))
            s = torch.where(a < 1, (1 - a_prev) / (1 - a) * (1 - a / a_prev), 0.0).clamp_min(0).sqrt()
            mean = a_prev.sqrt() * z0 + (1 - a_prev - s**2).clamp_min(0).sqrt() * eps
            e = draw((n, *shape)).flatten(0, 1)
            if config.tempering:  # the tempered target's drift: lambda times the twist's gradient
                grad = lam.to(grad.dtype).repeat_interleave(n).view(-1, *([1] * (grad.dim() - 1))) * grad
            drift = config.guidance * s**2 * grad
            with torch.no_grad():
                z = (mean + drift + s * e).detach()
            previous_twist = twist.double()
            previous_lam = lam
            previous_ratio = (-(config.guidance**2) * (s**2 * grad.square()).flatten(1).sum(1) / 2
                              - config.guidance * (s * e * grad).flatten(1).sum(1)).double()
            failed_at = first_failures(failed_at, z.view(b, n, -1), i)
            draw.next_iteration(more=i + 1 < len(ts))
            state = SMCState(z.view(b, n, *shape), tt.view(b, n)[:, 0], i, len(ts), ess=ess.float(), resampled=resample,
                             ancestors=ancestors, tempering=lam.float())  # the report: once, after the final weighting
            if callback is not None and i + 1 < len(ts):  # the last step's state waits for the final weighting
                callback(state)
        with torch.no_grad():
            x = prior.decode(z)
            if config.weights:  # the exact data term at z_0 replaces the last twist
                exact = -problem.likelihood.loss(problem.operator, x, problem.y_n, problem.params_n).double()
                if config.tempering:
                    log_w = log_w + exact.view(b, n) - previous_lam.view(b, 1) * previous_twist.view(b, n) + previous_ratio.view(b, n)
                else:
                    log_w = log_w + exact.view(b, n) - previous_twist.view(b, n) + previous_ratio.view(b, n)
                min_ess = torch.minimum(min_ess, _ess(log_w))
                u = torch.special.ndtr(draw((1,)).view(b)).double()
                index = _systematic(log_w, u, torch.ones(b, dtype=torch.bool, device=device))
                x = x.view(b, n, *x.shape[1:]).gather(1, _expand(index, x.view(b, n, *x.shape[1:])))
                ancestors = ancestors.gather(1, index)
                if state is not None:
                    state.ancestors, state.report = ancestors, _report(ancestors, min_ess)
        if callback is not None and state is not None:
            callback(state)
    finally:
        draw.close()
    return x.reshape(b, n, *x.shape[-3:]), failed_at


def _report(ancestors: torch.Tensor, min_ess: torch.Tensor) -> dict[str, torch.Tensor]:
    """``metrics.csv``'s figures of a resampling method: distinct ancestors per item and the smallest ESS."""
    ordered = ancestors.sort(1).values
    distinct = 1 + (ordered[:, 1:] != ordered[:, :-1]).sum(1)
    return {"ancestors": distinct, "min_ess": min_ess.clone()}


def _tempering(log_w: torch.Tensor, twist: torch.Tensor, previous_twist: Optional[torch.Tensor], previous_ratio: Optional[torch.Tensor],
               previous_lam: torch.Tensor, floor: float, target: float) -> torch.Tensor:
    """Each item's exponent ``lambda`` of this step's twist (``(B,)``): the largest in ``[max(previous, floor), 1]`` whose
    conditional effective sample size ``N (sum W v)^2 / sum W v^2`` (``W``: the normalised weights so far, ``v``: the
    step's incremental weights at that exponent; Zhou, Johansen and Aston 2016) is at least ``target``; the lowest
    allowed when even that falls short. Bisection, 40 halvings."""
    b, n = twist.shape
    log_prev = torch.log_softmax(log_w, dim=1)
    base = torch.zeros_like(twist) if previous_twist is None else previous_ratio - previous_lam.view(b, 1) * previous_twist

    def cess(lam: torch.Tensor) -> torch.Tensor:
        log_v = base + lam.view(b, 1) * twist
        return n * torch.exp(2 * torch.logsumexp(log_prev + log_v, 1) - torch.logsumexp(log_prev + 2 * log_v, 1))

    if previous_twist is None:
        low = torch.full_like(previous_lam, min(1.0, floor))
    else:
        low = previous_lam.clamp(min=floor, max=1.0)
    one = torch.ones_like(low)
    ok_one = cess(one) >= target
    ok_low = cess(low) >= target
    lo, hi = low.clone(), one.clone()
    for _ in range(40):
        mid = (lo + hi) / 2
        good = cess(mid) >= target
        lo, hi = torch.where(good, mid, lo), torch.where(good, hi, mid)
    return torch.where(ok_one, one, torch.where(ok_low, lo, low))


def _twist(prior: LatentPrior, problem: Problem, z: torch.Tensor, t: torch.Tensor, abar: torch.Tensor,
           unet_dtype: Optional[torch.dtype], drift: str = "twist") -> tuple[torch.Tensor, ...]:
    """``(log ptilde, its gradient in z, eps_hat, z0_hat)`` at particles ``z`` (``B*N`` rows): one network
    forward and backward, one decoder forward and backward. ``drift="tweedie"``: the gradient is the data term's in
    ``z0_hat`` times ``sqrt(abar)`` (:class:`SMCConfig`'s ``drift``): no network backward."""
    if drift == "tweedie":
        with torch.no_grad(), unet_precision(z.device.type, unet_dtype):
            eps, z0 = prior.predict(z.detach(), t, problem.prompt_n)
        with torch.enable_grad():
            leaf = z0.detach().float().requires_grad_(True)
            twist = -problem.likelihood.loss(problem.operator, prior.flow_decode(leaf), problem.y_n, problem.params_n, abar)
            (grad,) = torch.autograd.grad(twist.sum(), leaf)
        scale = abar.to(grad.dtype).sqrt().view(-1, *([1] * (grad.dim() - 1)))
        return twist.detach(), (grad * scale).detach(), eps.detach().to(z.dtype), leaf.detach()
    with torch.enable_grad():
        leaf = z.detach().requires_grad_(True)
        with unet_precision(z.device.type, unet_dtype):
            eps, z0 = prior.predict(leaf, t, problem.prompt_n)
        x0 = prior.flow_decode(z0)
        twist = -problem.likelihood.loss(problem.operator, x0, problem.y_n, problem.params_n, abar)
        (grad,) = torch.autograd.grad(twist.sum(), leaf)
    return twist.detach(), grad.detach(), eps.detach(), z0.detach()


def _move(prior: LatentPrior, problem: Problem, state: tuple[torch.Tensor, ...], xi: torch.Tensor, t: torch.Tensor,
          abar: torch.Tensor, rows: torch.Tensor, move_size: float, unet_dtype: Optional[torch.dtype],
          lam: Optional[torch.Tensor] = None, drift: str = "twist") -> tuple[torch.Tensor, ...]:
    """One unadjusted Langevin move of the particles in ``rows`` on the step's target ``p_t(z) ptilde_t(y | z)``
    (``ptilde^lambda`` with tempering, ``lam``: per row):
    ``z + delta (-eps_hat / sqrt(1 - abar) + grad log ptilde) + sqrt(2 delta) xi``, ``delta = move_size (1 - abar)``;
    then the twist, its gradient and the network's outputs at the moved particles. Other rows keep theirs."""
    z, twist, grad, eps, z0 = state
    a = abar.view(-1, *([1] * (z.dim() - 1)))
    delta = move_size * (1 - a)
    force = grad if lam is None else lam.to(grad.dtype).view(-1, *([1] * (z.dim() - 1))) * grad
    with torch.no_grad():
        moved = z + delta * force - move_size * (1 - a).sqrt() * eps + (2 * delta).sqrt() * xi  # delta eps / sqrt(1 - a), no 0 / 0
        moved = torch.where(rows.view(-1, *([1] * (z.dim() - 1))), moved, z).detach()
    new = _twist(prior, problem, moved, t, abar, unet_dtype, drift)
    return (moved, *(torch.where(rows.view(-1, *([1] * (v.dim() - 1))), v_new, v) for v, v_new in zip((twist, grad, eps, z0), new)))


def _ess(log_w: torch.Tensor) -> torch.Tensor:
    """Each item's effective sample size ``1 / sum w^2`` of its normalised weights, ``(B,)``."""
    w = torch.softmax(log_w, dim=1)
    return 1.0 / w.square().sum(1)


def _systematic(log_w: torch.Tensor, u: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """Systematic resampling of each item's ``N`` particles, ``(B, N)`` indices: particle ``k`` of the new set is
    the first whose cumulative weight exceeds (strictly) ``(u + k) / N``; items not in ``which`` keep theirs (``0 .. N-1``)."""
    b, n = log_w.shape
    w = torch.softmax(log_w, dim=1)
    cumulative = w.cumsum(1)
    cumulative[:, -1] = 1.0  # rounding never leaves a position past the last particle
    positions = (u.view(b, 1) + torch.arange(n, device=log_w.device, dtype=log_w.dtype).view(1, n)) / n
    index = torch.searchsorted(cumulative, positions, right=True).clamp_max(n - 1)
    keep = torch.arange(n, device=log_w.device).view(1, n).expand(b, n)
    return torch.where(which.view(b, 1), index, keep)


def _expand(index: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return index.view(*index.shape, *([1] * (like.dim() - 2))).expand_as(like)

