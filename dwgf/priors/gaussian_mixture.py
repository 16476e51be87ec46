"""A latent prior with an exact score and an exact posterior: a Gaussian mixture behind a linear decoder.

Diffusing a mixture ``p_0 = sum_k w_k N(mu_k, diag(s_k))`` with the DDPM forward process
``z_t = sqrt(abar_t) z_0 + sqrt(1 - abar_t) e`` gives again a mixture,

    p_t = sum_k w_k N(sqrt(abar_t) mu_k, diag(abar_t s_k + 1 - abar_t)),

whose score is known in closed form, so the noise prediction ``eps(z_t, t) = -sqrt(1 - abar_t)
grad log p_t(z_t)`` is exact. With a linear decoder ``x = D z`` and a linear-Gaussian measurement
``y = A x + sigma_y n``, the posterior of ``z`` is again a Gaussian mixture with exact weights, means
and covariances (:meth:`GaussianMixture.condition`), so a solver's particles can be compared with
exact posterior samples: the only error left is the method's.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch

from dwgf.errors import argument_error
from dwgf.priors.base import LatentPrior


class GaussianMixture:
    """A mixture of ``K`` Gaussians in ``R^d`` with diagonal or full covariances, in float64.

    Args:
        weights: ``(K,)``, positive (normalised here).
        means: ``(K, d)``.
        covariances: ``(K, d)`` diagonal variances or ``(K, d, d)`` full covariance matrices.
    """

    def __init__(self, weights: torch.Tensor, means: torch.Tensor, covariances: torch.Tensor):
        self.weights = (weights / weights.sum()).to(torch.float64)
        self.means = means.to(torch.float64)
        self.covariances = covariances.to(torch.float64)
        self.diagonal = self.covariances.dim() == 2

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    def full_covariances(self) -> torch.Tensor:
        return torch.diag_embed(self.covariances) if self.diagonal else self.covariances

    def mean(self) -> torch.Tensor:
        """The mixture's mean ``sum_k w_k mu_k``."""
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        """The mixture's covariance: ``sum_k w_k (S_k + mu_k mu_k^T) - m m^T``."""
        m = self.mean()
        second = (self.weights[:, None, None] * (self.full_covariances() + self.means[:, :, None] * self.means[:, None, :])).sum(0)
        return second - torch.outer(m, m)

    def component_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; mu_k, S_k)`` for ``x`` ``(B, d)``: ``(B, K)``."""
        x = x.to(torch.float64)
        if self.diagonal:  # as matrix products: O(B K d), never a B x K x d tensor
            inv = 1 / self.covariances
            quad = (x * x) @ inv.T - 2 * x @ (self.means * inv).T + (self.means**2 * inv).sum(1)[None]
            logdet = self.covariances.log().sum(-1)
        else:
            diff = x[:, None, :] - self.means[None]  # B x K x d
            chol = torch.linalg.cholesky(self.covariances)  # K x d x d
            # per component (never a B x K x d x d tensor): L_k^{-1} (x - mu_k) for all B rows at once
            sol = torch.stack([torch.linalg.solve_triangular(chol[k], diff[:, k].T, upper=False).T for k in range(len(chol))], dim=1)
            quad = (sol**2).sum(-1)
            logdet = 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1)
        return self.weights.log()[None] - 0.5 * (quad + logdet[None] + self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` for ``x`` ``(B, d)``."""
        return torch.logsumexp(self.component_log_probs(x), dim=-1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """``p(component k | x)``: ``(B, K)``."""
        return torch.softmax(self.component_log_probs(x), dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        """``grad log p(x)`` in closed form: ``sum_k r_k(x) S_k^{-1} (mu_k - x)``, ``(B, d)`` float64."""
        x = x.to(torch.float64)
        r = self.responsibilities(x)
        if self.diagonal:  # sum_k r_k (mu_k - x) / s_k as matrix products
            inv = 1 / self.covariances
            return r @ (self.means * inv) - x * (r @ inv)
        diff = self.means[None] - x[:, None, :]
        pulls = torch.stack([torch.linalg.solve(self.covariances[k], diff[:, k].T).T for k in range(len(self.covariances))], dim=1)
        return (r[..., None] * pulls).sum(1)

    def diffused(self, abar: float) -> "GaussianMixture":
        """The law of ``sqrt(abar) z + sqrt(1 - abar) e`` for ``z`` from this mixture."""
        # on the CPU: the exact-posterior bed does its mixture algebra in float64 on the CPU (_eps moves results back)
        eye = torch.eye(self.dim, dtype=torch.float64)
        cov = abar * self.covariances + (1 - abar) * (1 if self.diagonal else eye)
        return GaussianMixture(self.weights, math.sqrt(abar) * self.means, cov)

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """``n`` exact samples ``(n, d)`` (float64), and nothing else drawn from ``generator``."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        e = torch.randn(n, self.dim, dtype=torch.float64, generator=generator, device=self.means.device)
        if self.diagonal:
            return self.means[k] + self.covariances[k].sqrt() * e
        chol = torch.linalg.cholesky(self.covariances)
        return self.means[k] + (chol[k] @ e[..., None])[..., 0]

    def condition(self, h: torch.Tensor, y: torch.Tensor, sigma: float) -> "GaussianMixture":
        """The posterior of ``z`` given ``y = H z + sigma n`` (``n`` standard normal), ``H`` ``(m, d)``.

        Per component: gain ``G_k = S_k H^T (H S_k H^T + sigma^2 I)^{-1}``, mean ``mu_k + G_k (y - H mu_k)``,
        covariance ``S_k - G_k H S_k``; weight ``w_k N(y; H mu_k, H S_k H^T + sigma^2 I)``, normalised.
        Written with the ``m x m`` innovation matrix, so it stays cheap when ``m`` is small and ``d`` large.
        """
        h, y = h.to(torch.float64), y.to(torch.float64).reshape(-1)
        s = self.full_covariances()  # K x d x d
        hs = h[None] @ s  # K x m x d
        innovation = hs @ h.T[None] + sigma**2 * torch.eye(h.shape[0], dtype=torch.float64, device=hs.device)[None]  # K x m x m
        gain = torch.linalg.solve(innovation, hs).transpose(1, 2)  # K x d x m
        resid = y[None] - self.means @ h.T  # K x m
        means = self.means + (gain @ resid[..., None])[..., 0]
        covs = s - gain @ hs
        covs = 0.5 * (covs + covs.transpose(1, 2))
        chol = torch.linalg.cholesky(innovation)
        sol = torch.linalg.solve_triangular(chol, resid[..., None], upper=False)[..., 0]
        log_ev = -0.5 * ((sol**2).sum(-1) + 2 * torch.diagonal(chol, dim1=-2, dim2=-1).log().sum(-1) + h.shape[0] * math.log(2 * math.pi))
        weights = torch.softmax(self.weights.log() + log_ev, dim=0)
        return GaussianMixture(weights, means, covs)


def grid_mixture(dim: int, spacing: float = 4.0, grid: Sequence[float] = (-2, -1, 0, 1, 2), generator: Optional[torch.Generator] = None,
                 variance: float = 1.0) -> GaussianMixture:
    """Cardoso et al.'s mixture: ``len(grid)^2`` components with means ``(s i, s j, s i, s j, ...)`` for
    ``i, j`` in ``grid`` (spacing ``s``: ``{-8, -4, 0, 4, 8}`` per pair of coordinates, repeated across
    the dimension), covariance ``variance * I`` and weights drawn uniformly from ``generator``, normalised."""
    # on the CPU: a mixture is float64 CPU algebra (see GaussianMixture.diffused)
    pairs = torch.tensor([(spacing * i, spacing * j) for i in grid for j in grid], dtype=torch.float64)
    means = pairs.repeat(1, (dim + 1) // 2)[:, :dim]
    weights = torch.rand(len(pairs), dtype=torch.float64, generator=generator, device=pairs.device)
    return GaussianMixture(weights, means, torch.full((len(pairs), dim), float(variance), dtype=torch.float64, device=pairs.device))


SCHEDULES = ("scaled_linear", "linear")


def ddpm_schedule(name: str = "scaled_linear") -> torch.Tensor:
    """``abar_t`` for ``t = 0 .. 999``: ``"scaled_linear"`` is the shipped prior's and Stable Diffusion's
    (betas ``0.00085 .. 0.012`` on a square-root scale, ``abar_999 = 0.0047``), ``"linear"`` DDPM's
    (Ho et al. 2020: betas ``1e-4 .. 0.02``, ``abar_999 = 4e-5``)."""
    if name == "scaled_linear":
        # on the CPU: schedules are float64 buffers, moved with their module
        betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    elif name == "linear":
        # on the CPU, as above
        betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    else:
        raise ValueError(f"unknown schedule {name!r}; expected one of {SCHEDULES}")
    return torch.cumprod(1 - betas, dim=0)


class GaussianMixturePrior(LatentPrior):
    """A Gaussian mixture in latent space with an exact noise prediction and a fixed linear decoder.

    ``eps(z_t, t) = -sqrt(1 - abar_t) grad log p_t(z_t)`` of the diffused mixture (see the module
    docstring), on a 1000-step DDPM schedule (by default the shipped prior's), so every solver and
    schedule runs on it unchanged. Solvers start from ``N(0, I)``, which is close to the diffused
    mixture at ``t = 999`` only when ``abar_999 |mu|^2`` is small: for means far from the origin in
    many dimensions choose ``schedule="linear"`` (benchmarks/posterior.py measures the difference). The decoder is ``x = D z`` on the
    flattened latent and image, the encoder its least-squares inverse; with a linear-Gaussian
    measurement, :meth:`posterior` gives the exact posterior of the latent.

    Images are the decoded latents, not confined to ``[-1, 1]``; use it with operators that do not
    assume that range (:class:`~dwgf.operators.MatrixOperator`). The noise prediction is computed in
    float64 on the CPU (``O(B K d)`` per call) and returned on the input's device and dtype.

    Example:
        >>> prior = GaussianMixturePrior(grid_mixture(8), schedule="linear")
        >>> prior.latent_shape, prior.eps(torch.zeros(2, 8, 1, 1), torch.tensor([500, 10])).shape
        ((8, 1, 1), torch.Size([2, 8, 1, 1]))

    Args:
        mixture: the latent mixture (dimension ``c * h * w``).
        latent_shape: ``(c, h, w)``; default ``(d, 1, 1)``.
        decoder: ``"identity"`` (default: images are the latents), ``"orthogonal"`` (a fixed random
            orthogonal ``d x d`` matrix, so the decoder's Jacobian is exercised), ``"upsample"``
            (each latent pixel repeated ``factor x factor`` times: images ``c x factor h x factor w``)
            or a matrix ``(C H W, d)`` with ``image_shape``.
        factor: the upsampling factor of ``decoder="upsample"``.
        image_shape: ``(C, H, W)`` of the images for a matrix ``decoder``.
        seed: the seed of the orthogonal matrix.
        schedule: ``"scaled_linear"`` (default: the shipped prior's) or ``"linear"`` (DDPM's); see
            :func:`ddpm_schedule`.
    """

    def __init__(self, mixture: GaussianMixture, latent_shape: Optional[Sequence[int]] = None, decoder: str | torch.Tensor = "identity",
                 factor: int = 2, image_shape: Optional[Sequence[int]] = None, seed: int = 0, schedule: str = "scaled_linear"):
        super().__init__()
        d = mixture.dim
        latent_shape = tuple(int(v) for v in (latent_shape or (d, 1, 1)))
        if math.prod(latent_shape) != d:
            raise argument_error(self, "latent_shape", f" {latent_shape} has {math.prod(latent_shape)} elements; the mixture has {d}")
        self.mixture = mixture
        self.latent_shape = latent_shape
        c, h, w = latent_shape
        if isinstance(decoder, torch.Tensor):
            if image_shape is None or decoder.shape != (math.prod(image_shape), d):
                raise argument_error(self, "decoder", f": a matrix decoder needs image_shape with C*H*W rows; got {tuple(decoder.shape)}")
            matrix, image = decoder.to(torch.float64), tuple(int(v) for v in image_shape)
        elif decoder == "identity":
            # on the CPU: the decoder matrices are buffers, moved with the module
            matrix, image = torch.eye(d, dtype=torch.float64), latent_shape
        elif decoder == "orthogonal":
            # on the CPU: the same orthogonal decoder for a seed on every machine
            gen = torch.Generator().manual_seed(seed)
            q, r = torch.linalg.qr(torch.randn(d, d, dtype=torch.float64, generator=gen, device=gen.device))
            matrix, image = q * torch.sign(torch.diagonal(r))[None], latent_shape
        elif decoder == "upsample":
            # on the CPU, as the identity above
            up = torch.nn.functional.interpolate(torch.eye(d, dtype=torch.float64).reshape(d, c, h, w), scale_factor=factor, mode="nearest")
            matrix, image = up.reshape(d, -1).T.contiguous(), (c, h * factor, w * factor)
        else:
            raise argument_error(self, "decoder", f" {decoder!r}: expected 'identity', 'orthogonal', 'upsample' or a matrix")
        if image[1] != image[2]:
            raise argument_error(self, "image_shape", f" {image}: images must be square (H == W)")
        self.image_channels, self.image_size = int(image[0]), int(image[1])
        self.register_buffer("decoder_matrix", matrix, persistent=False)
        self.register_buffer("encoder_matrix", torch.linalg.pinv(matrix), persistent=False)
        if schedule not in SCHEDULES:
            raise argument_error(self, "schedule", f" {schedule!r}: expected one of {', '.join(SCHEDULES)}")
        self._register_schedule(ddpm_schedule(schedule))
        self.freeze()

    # -- the maths -------------------------------------------------------------------------------
    def _eps(self, z_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = z_t.reshape(z_t.shape[0], -1).to(torch.float64).cpu()
        abar = self.alphas_cumprod.cpu()[t.long().cpu()]
        score = torch.empty_like(flat)
        for value in torch.unique(abar):  # rows at the same t share the diffused mixture (solvers use one t per step)
            rows = (abar == value).nonzero()[:, 0]
            score = score.index_copy(0, rows, self.mixture.diffused(float(value)).score(flat.index_select(0, rows)))
        eps = -(1 - abar).sqrt()[:, None] * score
        return eps.to(device=z_t.device, dtype=z_t.dtype).reshape(z_t.shape)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], -1) @ self.decoder_matrix.to(z.dtype).T
        return x.reshape(z.shape[0], self.image_channels, self.image_size, self.image_size)

    def _encode(self, x: torch.Tensor, noise: Optional[torch.Tensor]) -> torch.Tensor:
        z = x.reshape(x.shape[0], -1) @ self.encoder_matrix.to(x.dtype).T
        return z.reshape(x.shape[0], *self.latent_shape)

    def posterior(self, matrix: torch.Tensor, y: torch.Tensor, sigma_y: float) -> GaussianMixture:
        """The exact posterior of the latent given ``y = A decode(z) + sigma_y n`` (``A``: ``matrix``,
        acting on the flattened image)."""
        return self.mixture.condition(matrix.to(torch.float64) @ self.decoder_matrix.cpu(), y.reshape(-1).cpu(), float(sigma_y))

    def extra_repr(self) -> str:
        k = len(self.mixture.weights)
        return f"components={k}, latent={self.latent_shape}, image={self.image_channels}x{self.image_size}x{self.image_size}"
