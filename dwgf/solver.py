"""Solvers as LightningModules: the frozen prior plus a method (:mod:`dwgf.methods`), run as the predict step."""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Literal, Optional, Sequence, Union

import torch
from lightning.pytorch import LightningModule

from dwgf.errors import DWGFError, argument_error
from dwgf.stopping import check_stop
from dwgf.flow import FlowConfig, FlowSteps
from dwgf.methods.gradient_flow import dwgf
from dwgf.problem import FlowState, Problem, SamplerState
from dwgf.draws import GENERATOR_PLACES, ItemDraws, generator_device, item_generators
from dwgf.likelihoods.base import DataTerm, MeanSquaredError
from dwgf.operators.base import ForwardOperator, Params
from dwgf.optimizers.base import Adam, FlowOptimizer
from dwgf.optimizers.noise import LangevinNoise
from dwgf.priors.base import LatentPrior
from dwgf.regularizers.base import Regularizer
from dwgf.schedules.step_size import StepSizeSchedule
from dwgf.schedules.timesteps import TimestepSchedule
from dwgf.settings import Settings

NUM_PARTICLES = 4  # N, the particles per measurement, unless a solver is given its own


def crop_each(images: torch.Tensor, sizes: Sequence[tuple[int, int]], full: Sequence[int]) -> list[torch.Tensor]:
    """Each item's top-left part: item ``i`` of ``images`` (``B x ... x h x w``, the picture of a
    ``full = (H, W)`` image at any scale, e.g. a low-resolution measurement) cropped to the same fraction
    ``sizes[i] / full`` of it. A list, since the items differ in size."""
    out = []
    for item, (h, w) in zip(images, sizes):
        rh, rw = item.shape[-2] * h, item.shape[-1] * w
        out.append(item[..., : -(-rh // full[0]), : -(-rw // full[1])])
    return out


def tf32_on(device: torch.device, enabled: bool) -> Optional[tuple[bool, bool]]:
    """Sets TensorFloat-32 for float32 matmuls and convolutions to ``enabled`` when ``device`` is CUDA;
    returns the settings before (to restore), or ``None`` when nothing was changed (not CUDA)."""
    if torch.device(device).type != "cuda":
        return None
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(enabled)
    return before


class InverseSolver(LightningModule):
    """Runs a method (:mod:`dwgf.methods`) on the frozen prior as the predict step: seeds, noise, failures and outputs in one place.

    For a batch it builds the :class:`~dwgf.problem.Problem` (the operator given with
    :meth:`set_operator`, the measurements, the data term, ``N``, the size and the prompts) and each
    item's noise from its seed (:class:`~dwgf.draws.ItemDraws`), calls ``method(prior, problem, draw,
    callback=..., **settings)``, and turns its ``(particles, failed_at)`` into the writer's output.
    The built-in methods have their own classes with their options (:class:`DWGF`,
    :class:`~dwgf.baselines.LatentDPS`, :class:`~dwgf.baselines.PSLD`,
    :class:`~dwgf.baselines.DecoderInversion`); a method of your own needs none::

        model:
          class_path: dwgf.solver.InverseSolver
          init_args: {method: my_module.my_method, settings: {num_steps: 100}}

    The CLI gives the operator configured under ``data.operator`` when it assembles the run, so that
    data and solver share one operator.

    ``predict_step`` returns, for a batch, a dict with ``names``, ``indices``, ``particles``
    (``B x N x C x H x W`` in ``[-1, 1]``), ``measurement`` (the measurement as an image),
    ``image`` (the ground truth, or ``None``), ``seconds`` (the batch's solve time divided by its items: the items of a batch
    are solved together) and ``failed``: items that
    could not be read, or whose particles became non-finite (dicts with ``name``, ``index``,
    ``file``, ``error``); those are left out of the other fields.

    Args:
        prior: the frozen latent diffusion prior.
        method: the method, a function ``(prior, problem, draw, *, callback, **settings) ->
            (particles, failed_at)`` (``--model.method my_module.my_method``). The built-in classes set their own.
        settings: the method's keyword settings (``--model.settings``). Default none.
        num_particles: ``N``, posterior samples per measurement.
        likelihood: the data term (``--model.likelihood``): ``MeanSquaredError`` (``None``, the
            default: the paper's ``1/2 mean (y - A x)^2``), ``GaussianLikelihood`` or
            ``PoissonLikelihood`` (:mod:`dwgf.likelihoods`). Every method reads it from the problem.
        generator: where each item's random generator lives (``--model.generator``): ``"cpu"``
            (default: a seed gives the same particles on every device; on a GPU the draws are made
            ahead on a side thread and copied, :class:`~dwgf.draws.ItemDraws`) or ``"device"`` (the
            GPU's own generators: no host work, other particles than the CPU's).
        tf32: on CUDA, float32 matrix products and convolutions use TensorFloat-32 during the run
            (``torch.backends.cuda.matmul.allow_tf32``, ``torch.backends.cudnn.allow_tf32``;
            ``--model.tf32 false`` turns it off). Default ``True``. No effect on the CPU.
        calibration: a ``calibration.json`` made by ``dwgf calibrate`` for this configuration
            (``--model.calibration``): each item also gets ``lower.png`` and ``upper.png``, the calibrated
            per-pixel interval, and ``metrics.csv`` its width and coverage (:mod:`dwgf.calibration`).
            Default ``None``.
    """

    def __init__(self, prior: LatentPrior, method: Optional[Callable[..., tuple[torch.Tensor, torch.Tensor]]] = None,
                 settings: Optional[dict[str, Any]] = None, num_particles: int = NUM_PARTICLES, likelihood: Optional[DataTerm] = None,
                 generator: Literal["cpu", "device"] = "cpu", tf32: bool = True, calibration: Optional[str] = None):
        super().__init__()
        if num_particles < 1:
            raise argument_error(self, "num_particles", f" must be >= 1, got {num_particles}")
        if generator not in GENERATOR_PLACES:
            raise argument_error(self, "generator", f" must be {' or '.join(map(repr, GENERATOR_PLACES))}, got {generator!r}")
        if method is not None and not callable(method):
            raise argument_error(self, "method", f" must be a function (prior, problem, draw, *, callback, **settings), got {method!r}")
        self.method = method
        self.method_settings = dict(settings or {})
        self.config = self.method_config(prior)
        self.generator = str(generator)
        self.tf32 = bool(tf32)
        self.prior = prior
        self.prior.freeze()
        self.num_particles = int(num_particles)
        self.likelihood = likelihood if likelihood is not None else MeanSquaredError()
        self.calibration_file = None if calibration is None else str(calibration)
        self.calibration = None
        if calibration is not None:
            from dwgf.calibration import Calibration

            self.calibration = Calibration.load(calibration, owner=self)
        self.operator: Optional[ForwardOperator] = None
        self.failed_iterations: Optional[torch.Tensor] = None
        self._batch_idx = 0
        # more processes than batches is normal: an idle process gets an empty batch and waits
        self.allow_zero_length_dataloader_with_multiple_devices = True

    def method_config(self, prior: LatentPrior) -> Optional[Settings]:
        """The method's settings (``--model.settings``) as its settings class (:class:`~dwgf.settings.Settings`), checked
        now: an unknown or bad setting is one line naming it. ``None`` when the method names no settings class."""
        settings_class = getattr(self.method, "settings_class", None)
        if settings_class is None:
            return None
        known = [f.name for f in dataclasses.fields(settings_class)]
        unknown = [k for k in self.method_settings if k not in known]
        if unknown:
            raise argument_error(self, "settings", f": unknown setting {unknown[0]!r} of {getattr(self.method, '__name__', 'the method')} "
                                 f"(its settings: {', '.join(known)})")
        if issubclass(settings_class, Settings):
            return settings_class.of(self, self.method_settings, option=lambda name: f"settings.{name}", prior=prior)
        try:  # a plain dataclass of a user's: its own checks, its errors as one line about --model.settings
            settings_class(**self.method_settings)
        except DWGFError as err:
            raise argument_error(self, "settings", f": {str(err).split(': ', 1)[-1]}") from None
        return None

    def settings(self) -> dict[str, Any]:
        """The method's keyword settings for this run: its settings class's fields (every one, defaults included), or
        ``--model.settings`` as given for a method without one."""
        return self.config.as_dict() if self.config is not None else dict(self.method_settings)

    def item_noise(self, seeds: torch.Tensor | list[int], device: torch.device) -> ItemDraws:
        """Each item's random draws for a solve on ``device``, from generators seeded with ``seeds`` (see ``generator``)."""
        return ItemDraws(item_generators(seeds, generator_device(self.generator, device)), device)

    def on_predict_start(self) -> None:
        self._tf32_before = tf32_on(self.device, self.tf32)

    def on_predict_end(self) -> None:
        before = getattr(self, "_tf32_before", None)
        if before is not None:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before

    def set_operator(self, operator: ForwardOperator) -> "InverseSolver":
        self.check_operator(operator)
        self.operator = operator
        return self

    def report_iteration(self, k: int, num_iterations: int) -> None:
        """Tells the trainer's callbacks that iteration ``k`` (0-based) of ``num_iterations`` is done.

        Solvers call it once per iteration of :meth:`solve`; callbacks that define
        ``on_solver_iteration(trainer, pl_module, k, num_iterations)`` (the progress bar) receive it.
        Without a trainer (the Python API) it does nothing.
        """
        check_stop()  # a SIGTERM or SIGINT stops the run here, after the iteration (see dwgf.stopping)
        trainer = self._trainer
        if trainer is None:
            return
        for callback in trainer.callbacks:
            hook = getattr(callback, "on_solver_iteration", None)
            if hook is not None:
                hook(trainer, self, k, num_iterations)

    def log_flow(self, state: SamplerState, images_every: int = 0) -> None:
        """Logs one flow iteration of the current batch to the trainer's logger (if any).

        Scalars, under ``predict/batch_<i>/``, at step ``k``: ``t``, and for a flow's state
        (:class:`~dwgf.problem.FlowState`) ``data_term`` (mean over items and particles),
        ``<Regularizer>_force`` (the norm of each regularizer's force on one particle, averaged over
        items and particles) and ``step_size``; for a weighted sampler's state
        (:class:`~dwgf.methods.SMCState`) ``ess``. Every ``images_every`` iterations (and at the last),
        with a TensorBoard logger, the particle mean of the batch's first 8 items as ``predict/batch_<i>/particle_mean``.
        Only the first process logs.
        """
        if self._trainer is None or self.logger is None:
            return
        k, tag = state.iteration, f"predict/batch_{self._batch_idx:04d}"
        # the tensor-valued scalars go to the host together: one device sync per iteration, not one each
        values = {"t": state.t.float().mean()}
        data_loss, forces, step_size, ess = (getattr(state, name, None) for name in ("data_loss", "forces", "step_size", "ess"))
        if data_loss is not None:
            values["data_term"] = data_loss.detach().float().mean()
        if ess is not None:  # a weighted sampler's effective sample size, averaged over items
            values["ess"] = ess.detach().float().mean()
        for name, force in (forces or {}).items():  # the norm of the force on one particle, averaged
            values[f"{name}_force"] = force.detach().float().flatten(2).norm(dim=-1).mean()
        host = torch.stack([v.to(state.t.device) for v in values.values()]).tolist()
        metrics = {f"{tag}/{name}": v for name, v in zip(values, host)}
        if step_size is not None:
            metrics[f"{tag}/step_size"] = step_size
        self.logger.log_metrics(metrics, step=k)
        last = k + 1 == state.num_iterations
        if images_every and isinstance(state, FlowState) and ((k + 1) % images_every == 0 or last) and self.trainer.is_global_zero:
            experiment = getattr(self.logger, "experiment", None)
            if hasattr(experiment, "add_images"):
                mean = state.x[:8].mean(1).clamp(-1, 1).add(1).div(2)
                experiment.add_images(f"{tag}/particle_mean", mean.float().cpu(), global_step=k)

    def check_operator(self, operator: ForwardOperator) -> None:
        """Raises :class:`DWGFError` if this method cannot serve ``operator`` (checked at start-up): asks the data term
        (:meth:`~dwgf.likelihoods.DataTerm.check_operator`) and the method's settings (:meth:`~dwgf.settings.Settings.check_operator`)."""
        self.likelihood.check_operator(operator)
        if self.config is not None:
            self.config.check_operator(operator)

    def problem(self, y: torch.Tensor, params: Params, size: Optional[Sequence[int]] = None,
                prompts: Optional[Sequence[Optional[str]]] = None) -> Problem:
        """The :class:`~dwgf.problem.Problem` of a batch of measurements ``y`` (see :meth:`solve`)."""
        return Problem(self.operator, y, params, self.likelihood, self.num_particles, None if size is None else tuple(size),
                       self.prompt_rows(prompts, y.device))

    def solve(self, y: torch.Tensor, params: Params, seeds: torch.Tensor | list[int], size: Optional[Sequence[int]] = None,
              prompts: Optional[Sequence[Optional[str]]] = None) -> torch.Tensor:
        """Posterior samples ``B x N x C x H x W`` for measurements ``y`` with per-item ``seeds``; sets
        ``self.failed_iterations`` (``(B,)``, ``-1``: fine).

        ``size``: ``(H, W)`` of the images (every item of a batch has the same; ``None``: the
        prior's native size). ``prompts``: one text prompt per item for a text-conditioned prior
        (``None`` entries, or ``None``: the prior's own prompt).
        """
        if self.method is None:
            raise DWGFError(f"{type(self).__name__} has no method: give method: my_module.my_method (a function "
                            "(prior, problem, draw, *, callback, **settings) -> (particles, failed_at))")
        self.item_report = None
        particles, self.failed_iterations = self.method(self.prior, self.problem(y, params, size, prompts), self.item_noise(seeds, y.device),
                                                        callback=self.on_iteration, **self.settings())
        return particles

    def on_iteration(self, state: SamplerState) -> None:
        """Called after every iteration of the method: progress, the stop check (:meth:`report_iteration`) and logging
        (:meth:`log_flow`); keeps the state's per-item ``report`` (``item_report``: the last iteration's is written)."""
        if state.report is not None:
            self.item_report = state.report
        self.report_iteration(state.iteration, state.num_iterations)
        self.log_flow(state, self._images_every(state.num_iterations))

    def _images_every(self, num_iterations: int) -> int:
        return 0

    def prompt_rows(self, prompts: Optional[Sequence[Optional[str]]], device: torch.device) -> Optional[torch.Tensor]:
        """The prior's prompt-table rows for per-item ``prompts`` (``None`` when there are none)."""
        if prompts is None or all(p is None for p in prompts):
            return None
        rows = self.prior.prompt_ids(list(prompts))
        return None if rows is None else rows.to(device)

    def setup(self, stage: str) -> None:
        """Encodes the run's per-item prompts (if any) once, before the first batch, so that the
        text encoders are loaded once and released before the flow starts."""
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        prompts = datamodule.prompts() if datamodule is not None and hasattr(datamodule, "prompts") else []
        if prompts:
            self.prior.prompt_ids(prompts)

    def predict_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        if self.operator is None:
            raise DWGFError("the solver has no forward operator: call set_operator(operator) first")
        check_stop()  # a SIGTERM or SIGINT received since the last batch stops the run before this one
        failed = list(batch.get("failed", []))
        out: dict[str, Any] = {"names": [], "indices": [], "particles": None, "measurement": None, "image": None, "seconds": 0.0, "failed": failed}
        if len(batch["name"]) == 0:
            return out
        start = time.perf_counter()
        self._batch_idx = batch_idx
        self.failed_iterations = None
        size = batch.get("size")
        size = None if size is None else tuple(int(v) for v in size[0])
        particles = self.solve(batch["measurement"], batch["params"], batch["seed"], size=size, prompts=batch.get("prompt"))
        if particles.is_cuda:
            torch.cuda.synchronize(particles.device)
        seconds = (time.perf_counter() - start) / particles.shape[0]
        ok = torch.isfinite(particles).flatten(1).all(1)
        iterations = self.failed_iterations
        if iterations is not None:
            ok &= iterations.to(ok.device) < 0
        ok = ok.tolist()
        for i, good in enumerate(ok):
            if not good:
                k = int(iterations[i]) if iterations is not None and int(iterations[i]) >= 0 else None
                where = f"at iteration {k}" if k is not None else "at the end of the solve"
                failed.append({"name": batch["name"][i], "index": int(batch["index"][i]), "file": batch["file"][i],
                               "error": f"the particles became NaN or Inf {where}; nothing was written for this item"})
        keep = [i for i, good in enumerate(ok) if good]
        if keep:
            idx = torch.tensor(keep, device=particles.device)
            measurement = self.operator.to_image(batch["measurement"], batch["params"])
            image = batch.get("image")
            particles = particles.index_select(0, idx).clamp(-1, 1)
            measurement = measurement.index_select(0, idx.to(measurement.device))
            image = None if image is None else image.index_select(0, idx.to(image.device))
            crop = batch.get("crop")
            if crop is not None and size is not None and any(tuple(int(v) for v in crop[i]) != size for i in keep):
                # items padded up to a size the prior takes are written at their own size (the top-left part)
                own = [tuple(int(v) for v in crop[i]) for i in keep]
                particles, measurement = crop_each(particles, own, size), crop_each(measurement, own, size)
                image = None if image is None else crop_each(image, own, size)
            unobserved = self.operator.unobserved(batch["params"])
            if unobserved is not None:  # the pixels the measurement is silent about, 1 x H x W per item
                unobserved = unobserved.expand(len(ok), 1, *unobserved.shape[-2:]).index_select(0, idx.to(unobserved.device))
                if crop is not None and size is not None and any(tuple(int(v) for v in crop[i]) != size for i in keep):
                    unobserved = crop_each(unobserved, own, size)
            report = getattr(self, "item_report", None)
            out.update(
                unobserved=unobserved,
                report=None if not report else {k: [float(v) for v in r.detach().cpu()[keep]] for k, r in report.items()},
                names=[batch["name"][i] for i in keep],
                indices=[int(batch["index"][i]) for i in keep],
                files=[batch["file"][i] for i in keep],
                particles=particles,
                measurement=measurement,
                image=image,
                seconds=seconds,
            )
        return out

    def configure_optimizers(self) -> None:  # the prior is frozen; solvers only predict
        return None


class DWGF(InverseSolver):
    """Diffusion-regularized Wasserstein Gradient Flow (Wang & Akyildiz 2025): :func:`dwgf.methods.dwgf` in ``dwgf predict``.

    ``N`` particles per measurement start from ``N(0, I)`` in latent space and follow the
    optimiser (Adam by default) on the data term plus the regularizers for ``num_steps`` iterations
    while the diffusion time walks from high to low noise (the paper's flow, arXiv 2509.19276; one
    iteration is :func:`dwgf.flow.flow_gradient`). The defaults are the paper's settings for Stable
    Diffusion 2.1-base: 998 iterations, 4 particles, Adam lr 1.0, the averaged squared error,
    ``KLPrior(weight=0.15)`` and ``EncoderConsistency(weight=0.1)``, decoder noise 0.01.

    The sampler (``configs/mnist/*_posterior.yaml``) swaps three parts: a likelihood in
    log-density units (:class:`~dwgf.likelihoods.GaussianLikelihood`), a Langevin optimiser
    (:class:`~dwgf.optimizers.Langevin`) and a prior score in the same units
    (``KLPrior(per_element=False, weighting=ScoreWeighting)``).

    Args:
        prior: the frozen latent prior.
        num_steps: ``K``, flow iterations (``--model.num_steps``). Default 998.
        num_particles: ``N`` (``--model.num_particles``). Default 4.
        regularizers: forces added to the data term. Default ``[KLPrior(), EncoderConsistency()]``.
            A :class:`~dwgf.optimizers.LangevinNoise` listed here (the spelling of earlier versions)
            is handed to the optimiser as its ``noise``: the same particles as before.
        step_size: the optimiser's step size per iteration. Default ``ConstantStepSize(lr=1.0)``.
        timesteps: diffusion time per iteration. Default ``DescendingTimesteps()`` (999 -> 2).
        betas: Adam's betas, when ``optimizer`` is not given. Default ``(0.9, 0.999)``.
        decoder_noise: ``sigma_dec`` added to decoded images in the data and encoder terms.
        compile: ``torch.compile`` the UNet and the decoder (``--model.compile true``); the first
            iterations compile (slow), later ones run faster. Default ``False``.
        log_images_every: with a TensorBoard logger (the default of ``dwgf predict``), log the
            particle mean every this many iterations. ``None`` (default): every ``K/10``
            iterations for a run of at most 2 batches, not at all for larger runs; ``0``: never.
            Scalars (data term, force sizes, step size, ``t``) are logged at every iteration.
        optimizer: how the particles move (``--model.optimizer``): ``Adam`` (``None``, the
            default: ``Adam(betas)``, the paper's), ``GradientDescent`` or ``Langevin``
            (:mod:`dwgf.optimizers`).
        likelihood: the data term (``--model.likelihood``): ``MeanSquaredError`` (``None``, the
            default: the paper's ``1/2 mean (y - A x)^2``), ``GaussianLikelihood`` or
            ``PoissonLikelihood`` (:mod:`dwgf.likelihoods`).
        query_noise: the network is asked at ``sqrt(abar) z + query_noise sqrt(1 - abar) eps``
            (``--model.query_noise``). Default 1 (the paper's); 0 for a Langevin sampler
            (:func:`dwgf.flow.dwgf_flow`).
        float32_autoencoder: under ``bf16-mixed`` / ``16-mixed``, keep the decoder's forward and
            vector-Jacobian product and the encoder term in float32 (``--model.float32_autoencoder
            true``). Default ``False``: they run in the low precision with the network (most of an
            iteration's time and memory on a GPU); the latent gradient, the data term and Adam stay
            float32 either way. No effect in ``32-true``.
        decoder_chunk: particles the decoder differentiates at once (``--model.decoder_chunk``); a
            smaller chunk bounds the memory at one more decoder forward per iteration
            (:class:`dwgf.flow.DecoderPass`). ``None`` (default): all at once on the CPU; on a GPU as
            many as fit in its free memory.
        generator: see :class:`InverseSolver`.
        tf32: see :class:`InverseSolver`.
        calibration: see :class:`InverseSolver`.
    """

    def __init__(
        self,
        prior: LatentPrior,
        num_steps: int = FlowConfig.num_steps,
        num_particles: int = NUM_PARTICLES,
        regularizers: Optional[list[Union[Regularizer, LangevinNoise]]] = None,
        step_size: Optional[StepSizeSchedule] = None,
        timesteps: Optional[TimestepSchedule] = None,
        betas: tuple[float, float] = Adam.DEFAULT_BETAS,
        decoder_noise: float = FlowConfig.decoder_noise,
        compile: bool = False,
        log_images_every: Optional[int] = None,
        optimizer: Optional[FlowOptimizer] = None,
        likelihood: Optional[DataTerm] = None,
        query_noise: float = FlowConfig.query_noise,
        float32_autoencoder: bool = FlowConfig.float32_autoencoder,
        decoder_chunk: Optional[int] = FlowConfig.decoder_chunk,
        generator: Literal["cpu", "device"] = "cpu",
        tf32: bool = True,
        calibration: Optional[str] = None,
    ):
        super().__init__(prior, dwgf, num_particles=num_particles, likelihood=likelihood, generator=generator, tf32=tf32,
                         calibration=calibration)
        options = dict(num_steps=num_steps, step_size=step_size, timesteps=timesteps, optimizer=self._optimizer(optimizer, betas),
                       decoder_noise=decoder_noise, query_noise=query_noise, float32_autoencoder=float32_autoencoder,
                       decoder_chunk=decoder_chunk, regularizers=regularizers)
        self.config = self.flow_options(options, prior)
        if log_images_every is not None and log_images_every < 0:
            raise argument_error(self, "log_images_every", f" must be >= 0 (0: never), got {log_images_every}")
        self.log_images_every = log_images_every
        self.compile_networks = bool(compile)
        if self.compile_networks:
            self.prior.compile_networks()

    def flow_options(self, options: dict[str, Any], prior: LatentPrior, settings_class: type[FlowSteps] = FlowConfig) -> FlowSteps:
        """The options as the flow's settings (``settings_class``, :class:`~dwgf.flow.FlowConfig` by default; ``None``: the
        setting's default, but for ``decoder_chunk``, whose ``None`` is a value), errors named by option. Injected noise
        listed among the regularizers (earlier versions' spelling) moves to the optimiser."""
        options = {k: v for k, v in options.items() if v is not None or k == "decoder_chunk"}
        if options.get("regularizers") is not None:
            options["regularizers"] = self._noise_to_optimizer(list(options["regularizers"]), options["optimizer"])
        return settings_class.of(self, options, prior=prior)

    def _optimizer(self, optimizer: Optional[FlowOptimizer], betas: tuple[float, float]) -> FlowOptimizer:
        """``optimizer``, or Adam with ``betas`` (an option of the default optimizer only)."""
        if optimizer is not None:
            if tuple(betas) != Adam.DEFAULT_BETAS:
                raise argument_error(self, "betas", " apply to the default optimizer only; with <optimizer> give them to Adam: "
                                     "optimizer: {class_path: Adam, init_args: {betas: [...]}}", also=("optimizer",))
            return optimizer
        try:
            return Adam(betas)
        except DWGFError as err:
            raise argument_error(self, "betas", getattr(err, "detail", f": {err}")) from None

    def _noise_to_optimizer(self, regularizers: list, optimizer: FlowOptimizer) -> list:
        noises = [r for r in regularizers if isinstance(r, LangevinNoise)]
        if not noises:
            return regularizers
        if len(noises) > 1:
            raise argument_error(self, "regularizers", f" list {len(noises)} LangevinNoise; give one, as the optimizer's noise")
        if getattr(optimizer, "needs_curvature", False):
            raise argument_error(self, "regularizers", f": LangevinNoise adds noise after Adam's or GradientDescent's step; the "
                                 f"<optimizer> {type(optimizer).__name__} has its own noise: drop LangevinNoise", also=("optimizer",))
        if getattr(optimizer, "noise", None) is not None:
            raise argument_error(self, "regularizers", ": LangevinNoise is given twice, here and as the <optimizer>'s noise; keep one",
                                 also=("optimizer",))
        optimizer.noise = noises[0]
        return [r for r in regularizers if not isinstance(r, LangevinNoise)]

    def _images_every(self, num_iterations: int) -> int:
        if self.log_images_every is not None:
            return int(self.log_images_every)
        trainer = self._trainer
        batches = sum(trainer.num_predict_batches) if trainer is not None and trainer.num_predict_batches else 0
        return max(1, num_iterations // 10) if 0 < batches <= 2 else 0
