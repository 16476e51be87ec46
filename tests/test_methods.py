"""The methods (dwgf.methods) and their solvers: DWGF, Latent DPS, PSLD, decoder inversion, RED-diff, a user's own."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dwgf.baselines import PSLD, DecoderInversion, LatentDPS
from dwgf.cli import main
from dwgf.errors import DWGFError
from dwgf.flow import ItemDraws, Problem, item_generators
from dwgf.likelihoods import GaussianLikelihood, MeanSquaredError
from dwgf.operators import BoxInpainting, GaussianBlur, RandomInpainting, SuperResolution
from dwgf.operators.base import ForwardOperator
from dwgf.optimizers import Langevin
from dwgf.priors import GaussianMixturePrior, grid_mixture
from dwgf.regularizers import KLPrior, ScoreWeighting
from dwgf.sampling import ddim_sample
from dwgf.schedules import ConstantStepSize
from dwgf.solver import DWGF

MSE = MeanSquaredError()  # the paper's data term: the data fit lives in the data terms

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"
METHODS = ROOT / "configs/methods"


def params_for(op, b, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ps = [op.sample_params((1, size, size), g) for _ in range(b)]
    return {k: torch.stack([p[k] for p in ps]) for k in ps[0]} if ps[0] else {}


def measurement(op, prior, b=2, seed=0):
    x = torch.rand(b, 1, 32, 32, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    params = params_for(op, b, seed=seed)
    return op(x, params), params


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_dps_without_guidance_is_ddim_sampling(ldm_prior, eta):
    """guidance = 0: the same seed and timesteps give exactly the prior's DDIM samples."""
    op = SuperResolution(2)
    y, params = measurement(op, ldm_prior)
    dps = LatentDPS(ldm_prior, num_steps=5, num_particles=3, guidance=0.0, eta=eta).set_operator(op)
    out = dps.solve(y, params, [11, 12])
    for b, seed in enumerate([11, 12]):
        ref = ddim_sample(ldm_prior, 3, num_steps=5, eta=eta, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(out[b], ref, rtol=0, atol=1e-5)  # batch composition: float rounding only


def test_dps_guidance_moves_towards_the_measurement(ldm_prior):
    op = RandomInpainting(0.5)
    y, params = measurement(op, ldm_prior)
    free = LatentDPS(ldm_prior, num_steps=6, num_particles=2, guidance=0.0).set_operator(op).solve(y, params, [1, 2])
    guided = LatentDPS(ldm_prior, num_steps=6, num_particles=2, guidance=2.0).set_operator(op).solve(y, params, [1, 2])
    y2 = y.repeat_interleave(2, 0)
    p2 = {k: v.repeat_interleave(2, 0) for k, v in params.items()}
    assert MSE.distance(op, guided.flatten(0, 1), y2, p2).mean() < MSE.distance(op, free.flatten(0, 1), y2, p2).mean()


def test_residual_norm_counts_measured_entries_only():
    op = BoxInpainting(size=[2, 2], position=[0, 0])
    params = params_for(op, 2, size=4)
    x = torch.zeros(2, 1, 4, 4)
    y = torch.zeros(2, 1, 4, 4)
    x[0, 0, 0, 0] = 100.0  # inside the box: not measured
    x[1, 0, 3, 3] = 3.0
    torch.testing.assert_close(MSE.distance(op, x, y, params), torch.tensor([0.0, 3.0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("op", [BoxInpainting(size=[8, 8]), RandomInpainting(0.7), SuperResolution(4)], ids=repr)
def test_project_makes_the_image_consistent(op):
    params = params_for(op, 2)
    x, target = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    y = op(target, params)
    torch.testing.assert_close(op(op.project(x, y, params), params), y, atol=1e-5, rtol=0)


def test_project_is_psld_formula_for_blur():
    op = GaussianBlur(9, 2.0)
    p = params_for(op, 1)
    x, y = torch.randn(1, 1, 32, 32), torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(op.project(x, y, p), op.adjoint(y, p) + x - op.adjoint(op(x, p), p), atol=1e-5, rtol=0)


def test_psld_refuses_a_nonlinear_operator(ldm_prior):
    class Square(ForwardOperator):
        def forward(self, x, params):
            return x * x

    with pytest.raises(DWGFError, match="PSLD needs a linear operator.*Square"):
        PSLD(ldm_prior).set_operator(Square())
    LatentDPS(ldm_prior).set_operator(Square())  # DPS only needs A's gradient


def test_psld_gluing_changes_the_samples(ldm_prior):
    op = BoxInpainting(size=[10, 10])
    y, params = measurement(op, ldm_prior)
    a = PSLD(ldm_prior, num_steps=3, num_particles=1, gluing=0.0).set_operator(op).solve(y, params, [1, 2])
    b = LatentDPS(ldm_prior, num_steps=3, num_particles=1).set_operator(op).solve(y, params, [1, 2])
    c = PSLD(ldm_prior, num_steps=3, num_particles=1, gluing=1.0).set_operator(op).solve(y, params, [1, 2])
    torch.testing.assert_close(a, b, rtol=0, atol=0)  # gluing 0 is Latent DPS
    assert (a - c).abs().max() > 1e-4


def test_decoder_inversion_is_dwgf_without_regularizers(ldm_prior):
    op = SuperResolution(2)
    y, params = measurement(op, ldm_prior)
    a = DecoderInversion(ldm_prior, num_steps=4, num_particles=2).set_operator(op).solve(y, params, [3, 4])
    b = DWGF(ldm_prior, num_steps=4, num_particles=2, regularizers=[]).set_operator(op).solve(y, params, [3, 4])
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_frozen_weights_get_no_grad(ldm_prior):
    op = BoxInpainting(size=[10, 10])
    y, params = measurement(op, ldm_prior)
    PSLD(ldm_prior, num_steps=2, num_particles=1).set_operator(op).solve(y, params, [1, 2])
    assert all(p.grad is None for p in ldm_prior.parameters())


def test_bad_hyperparameters_fail_clearly(ldm_prior):
    with pytest.raises(DWGFError, match="^LatentDPS: guidance must be >= 0"):
        LatentDPS(ldm_prior, guidance=-1)
    with pytest.raises(DWGFError, match="^LatentDPS: eta must be in"):
        LatentDPS(ldm_prior, eta=2)
    with pytest.raises(DWGFError, match="^LatentDPS: num_steps must be <= the prior's 1000"):
        LatentDPS(ldm_prior, num_steps=5000)
    with pytest.raises(DWGFError, match="^PSLD: gluing must be >= 0"):
        PSLD(ldm_prior, gluing=-0.1)


def pixels(path):
    return np.asarray(Image.open(path), dtype=np.int16)


@pytest.mark.parametrize("method", ["dps", "psld", "reddiff", "inversion"])
def test_each_method_runs_through_the_cli(method, ldm_path, image_dir, tmp_path):
    out = tmp_path / method
    main(["predict", "--config", str(LDM_CONFIG), "--config", str(METHODS / f"{method}.yaml"), "--model.prior.pretrained", str(ldm_path),
          "--model.num_steps", "3", "--data.images", str(image_dir), "--output", str(out)])
    config = (out / "config.yaml").read_text()
    particles = 1 if method == "reddiff" else 4
    for item in ("img0", "img1", "img2"):
        assert sorted(p.name for p in (out / item).glob("particle_*.png")) == [f"particle_{k}.png" for k in range(particles)]
        assert (out / item / "mean.png").is_file()
    assert len((out / "metrics.csv").read_text().splitlines()) == 4
    model = config.split("\nmodel:\n")[1].split("\ndata:")[0]
    expected = {"dps": "baselines.LatentDPS", "psld": "baselines.PSLD", "reddiff": "solver.DWGF", "inversion": "baselines.DecoderInversion"}
    assert model.splitlines()[0] == f"  class_path: dwgf.{expected[method]}"
    assert ("guidance: 1.0" in model) == (method in ("dps", "psld"))  # the task config's DWGF arguments are dropped


def test_reddiff_config_is_dwgf_with_one_particle(ldm_path, image_dir, tmp_path):
    """The RED-diff config and DWGF with N = 1 and no encoder term give identical particles."""
    common = ["--model.prior.pretrained", str(ldm_path), "--model.num_steps", "4", "--data.images", str(image_dir)]
    main(["predict", "--config", str(LDM_CONFIG), "--config", str(METHODS / "reddiff.yaml"), *common, "--output", str(tmp_path / "r")])
    main(["predict", "--config", str(LDM_CONFIG), *common, "--output", str(tmp_path / "d"), "--model.num_particles", "1",
          "--model.regularizers", "[{class_path: KLPrior, init_args: {weight: 0.25, weighting: DWGFWeighting}}]"])
    for item in ("img0", "img1", "img2"):
        assert (pixels(tmp_path / "r" / item / "particle_0.png") == pixels(tmp_path / "d" / item / "particle_0.png")).all()
    # and N = 1 is score distillation: the particle term and independent SDS coincide
    op = SuperResolution(2)
    from dwgf.priors import UnconditionalLatentPrior

    prior = UnconditionalLatentPrior(str(ldm_path))
    y, params = measurement(op, prior)
    a = DWGF(prior, num_steps=4, num_particles=1, regularizers=[KLPrior(0.25)]).set_operator(op).solve(y, params, [1, 2])
    b = DWGF(prior, num_steps=4, num_particles=1, regularizers=[KLPrior(0.25, particle_term=False)]).set_operator(op).solve(y, params, [1, 2])
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


METHOD_FUNCTIONS = {  # each method's function and the module that runs it in dwgf predict, with the same settings
    "dwgf": ("dwgf", lambda p: DWGF(p, num_steps=4, num_particles=2), {"num_steps": 4}),
    "latent_dps": ("latent_dps", lambda p: LatentDPS(p, num_steps=4, num_particles=2, guidance=0.1), {"num_steps": 4, "guidance": 0.1}),
    "psld": ("psld", lambda p: PSLD(p, num_steps=4, num_particles=2, guidance=0.1, gluing=0.1),
             {"num_steps": 4, "guidance": 0.1, "gluing": 0.1}),
    "decoder_inversion": ("decoder_inversion", lambda p: DecoderInversion(p, num_steps=4, num_particles=2), {"num_steps": 4}),
}


@pytest.mark.parametrize("name", sorted(METHOD_FUNCTIONS))
def test_each_method_is_a_plain_function_that_its_module_runs(ldm_prior, name):
    """The maths runs without Lightning: the function gives the module's samples, reports every step and
    returns where items failed (nowhere here)."""
    from dwgf import methods

    function, module, settings = METHOD_FUNCTIONS[name]
    op = BoxInpainting(size=[8, 8], sigma_y=0.01)
    y, params = measurement(op, ldm_prior)
    states = []
    direct, failed_at = getattr(methods, function)(ldm_prior, Problem(op, y, params, num_particles=2),
                                                   ItemDraws(item_generators([3, 4], "cpu"), "cpu"), callback=states.append, **settings)
    solver = module(ldm_prior).set_operator(op)
    assert torch.equal(direct, solver.solve(y, params, [3, 4]))
    assert torch.equal(failed_at, torch.tensor([-1, -1])) and torch.equal(solver.failed_iterations, failed_at)
    assert [s.iteration for s in states] == [0, 1, 2, 3] and all(s.num_iterations == 4 for s in states)
    assert states[0].z.shape == (2, 2, *ldm_prior.latent_shape) and states[0].t.shape == (2,)
    if name in ("latent_dps", "psld"):
        assert states[0].t[0] > states[-1].t[0] == 0  # from high noise down to t = 0


def test_the_generic_solver_runs_any_method_function(ldm_prior):
    """InverseSolver(method=..., settings=...) is a method's whole LightningModule: RED-diff's function
    gives the reddiff config's DWGF."""
    from dwgf.methods import red_diff
    from dwgf.regularizers import DWGFWeighting
    from dwgf.solver import InverseSolver

    op = BoxInpainting(size=[8, 8], sigma_y=0.01)
    y, params = measurement(op, ldm_prior)
    generic = InverseSolver(ldm_prior, method=red_diff, settings={"num_steps": 4}, num_particles=1).set_operator(op)
    dwgf = DWGF(ldm_prior, num_steps=4, num_particles=1, regularizers=[KLPrior(0.25, weighting=DWGFWeighting())]).set_operator(op)
    assert torch.equal(generic.solve(y, params, [3, 4]), dwgf.solve(y, params, [3, 4]))
    with pytest.raises(DWGFError, match="has no method"):
        InverseSolver(ldm_prior).set_operator(op).solve(y, params, [3, 4])
    with pytest.raises(DWGFError, match="method must be a function"):
        InverseSolver(ldm_prior, method="red_diff")


def test_psld_function_refuses_a_nonlinear_operator(ldm_prior):
    from dwgf.methods import psld
    from dwgf.operators import PhaseRetrieval

    op = PhaseRetrieval()
    y, params = op.measure(torch.zeros(1, 1, 32, 32))
    with pytest.raises(DWGFError, match="PSLD needs a linear operator"):
        psld(ldm_prior, Problem(op, y, params))


def test_the_baselines_honour_the_likelihood(ldm_prior):
    """--model.likelihood reaches every method: a Gaussian data term (whitened distance) moves DPS's samples,
    and at sigma 1 it is the default's residual norm, so the samples are the default's."""
    from dwgf.likelihoods import GaussianLikelihood

    op = BoxInpainting(size=[8, 8], sigma_y=0.01)
    y, params = measurement(op, ldm_prior)
    runs = {}
    for name, likelihood in (("default", None), ("gaussian", GaussianLikelihood()), ("unit", GaussianLikelihood(sigma=1.0))):
        solver = LatentDPS(ldm_prior, num_steps=3, num_particles=2, guidance=0.1, likelihood=likelihood).set_operator(op)
        runs[name] = solver.solve(y, params, [3, 4])
    assert not torch.allclose(runs["default"], runs["gaussian"], atol=1e-4)
    torch.testing.assert_close(runs["default"], runs["unit"], atol=1e-5, rtol=1e-5)
    inversion = DecoderInversion(ldm_prior, num_steps=3, num_particles=2, likelihood=GaussianLikelihood()).set_operator(op)
    assert not torch.allclose(inversion.solve(y, params, [3, 4]), DecoderInversion(ldm_prior, num_steps=3, num_particles=2)
                              .set_operator(op).solve(y, params, [3, 4]), atol=1e-4)


# -- configs and the command line ----------------------------------------------------------------
def _digits(tmp_path, count):
    import shutil

    folder = tmp_path / "digits"
    folder.mkdir()
    for png in sorted((ROOT / "examples" / "mnist").glob("*.png"))[:count]:
        shutil.copy(png, folder / png.name)
    return str(folder)


@pytest.mark.parametrize("task", ["box_inpaint", "sr4", "gaussian_deblur"])
def test_sampler_configs_run_end_to_end(task, tmp_path):
    from dwgf.cli import main

    out = tmp_path / "out"
    main(["predict", "--config", str(ROOT / "configs" / "mnist" / f"{task}_posterior.yaml"), "--data.images", _digits(tmp_path, 2),
          "--model.num_steps", "2", "--output", str(out), "--trainer.logger", "false"])
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3
    assert all((out / name / "mean.png").is_file() for name in [r.split(",")[0] for r in rows[1:]])


# -- one item alone = the same item in a batch, for every method ------------------------------------
def _box(prior):
    op = BoxInpainting(size=[10, 10], sigma_y=0.01)
    x = torch.rand(3, prior.image_channels, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(3)) * 2 - 1
    y, params = op.measure(x, seeds=[0, 1, 2])
    return op, y, params


def _sampler_problem(prior):
    from tests.test_optimizers import _matrix_problem

    _, op, y = _matrix_problem()
    return op, torch.stack([y, 2 * y, -y]).float().view(3, -1, 1, 1), {}


def _generic(method, **settings):
    from dwgf.solver import InverseSolver

    return lambda prior: InverseSolver(prior, method=method, settings=settings, num_particles=3)


def _latent_map(**settings):
    import sys

    sys.path.insert(0, str(ROOT / "examples/extending"))
    try:
        import my_extensions
    finally:
        sys.path.remove(str(ROOT / "examples/extending"))
    return _generic(my_extensions.latent_map, **settings)


def _diverse(prior):
    from dwgf.optimizers import LangevinNoise
    from dwgf.regularizers import KDEKLPrior, KernelRepulsion

    return DWGF(prior, num_steps=4, num_particles=3, regularizers=[KDEKLPrior(weight=0.2, entropy_weight=0.1), KernelRepulsion(weight=0.05),
                KernelRepulsion(weight=0.05, space="latent"), LangevinNoise(scale=0.05)])


def _sampler(prior):
    return DWGF(prior, num_steps=20, num_particles=3, decoder_noise=0.0, query_noise=0.0, optimizer=Langevin(),
                regularizers=[KLPrior(1.0, weighting=ScoreWeighting(), particle_term=False, per_element=False)],
                likelihood=GaussianLikelihood(anneal=1.0), step_size=ConstantStepSize(1.0))


def method_functions() -> dict[str, object]:
    """Every method function in ``dwgf/methods/`` (a module's public function whose first parameters are
    ``prior, problem, draw`` and that takes ``callback`` by keyword): found, not listed, so a new module is covered."""
    import importlib
    import inspect
    import pkgutil

    import dwgf.methods

    found = {}
    for info in pkgutil.iter_modules(dwgf.methods.__path__):
        module = importlib.import_module(f"dwgf.methods.{info.name}")
        for name, fn in vars(module).items():
            if inspect.isfunction(fn) and fn.__module__ == module.__name__ and not name.startswith("_"):
                params = list(inspect.signature(fn).parameters.values())
                if [p.name for p in params[:3]] == ["prior", "problem", "draw"] and "callback" in inspect.signature(fn).parameters:
                    found[name] = fn
    return found


def test_every_method_function_keeps_the_contract(ldm_prior):
    """(prior, problem, draw, *, callback, **settings) -> (particles, failed_at): at most 6 parameters besides the
    keyword settings, a keyword-only callback called once per iteration, B x N images and (B,) failures."""
    import inspect

    from dwgf.flow import ItemDraws, Problem, item_generators

    functions = method_functions()
    assert {"dwgf", "latent_dps", "psld", "red_diff", "decoder_inversion"} <= set(functions)
    op, y, params = _box(ldm_prior)
    for name, fn in functions.items():
        sig = inspect.signature(fn)
        named = [p for p in sig.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
        assert len(named) <= 6 and sig.parameters["callback"].kind is inspect.Parameter.KEYWORD_ONLY, name
        assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()), name
        seen = []
        particles, failed_at = fn(ldm_prior, Problem(op, y[:2], {k: v[:2] for k, v in params.items()}, num_particles=2),
                                  ItemDraws(item_generators([1, 2], "cpu"), "cpu"), callback=seen.append, num_steps=3)
        assert particles.shape == (2, 2, *y.shape[1:]) and torch.equal(failed_at, torch.tensor([-1, -1])), name
        assert [st.iteration for st in seen] == [0, 1, 2] and seen[0].z.shape[:2] == (2, 2), name


BATCH_CASES = {  # method -> (its solver for a prior, the prior fixture, the problem)
    **{name: (lambda p, fn=fn: _generic(fn, num_steps=4)(p), "ldm_prior", _box) for name, fn in method_functions().items()},
    "dwgf-sd": (lambda p: DWGF(p, num_steps=4, num_particles=3), "sd_prior", _box),
    "dwgf-diverse": (_diverse, "ldm_prior", _box),
    "dwgf-sampler": (_sampler, "gaussian_mixture", _sampler_problem),
    "latent_map": (lambda p: _latent_map(num_steps=3)(p), "ldm_prior", _box),
    "smc-moves": (lambda p: _generic(method_functions()["smc"], num_steps=4, moves=2)(p), "ldm_prior", _box),
    # ReSample with hard data consistency at every step of its last two thirds (pixel and latent), each item stopping on its own
    "resample": (lambda p: _generic(method_functions()["resample"], num_steps=6, every=1, pixel_iters=20, latent_iters=20,
                                    tolerance=0.05)(p), "ldm_prior", _box),
}


@pytest.fixture
def gaussian_mixture():
    return GaussianMixturePrior(grid_mixture(6), schedule="linear")


@pytest.mark.parametrize("name", sorted(BATCH_CASES))
def test_an_item_alone_equals_the_same_item_in_a_batch(name, request):
    """Every draw and every norm is per item: the item at position 1 of a batch of 3 gets the particles it
    gets alone (to float rounding: the networks' batched arithmetic), and its seed, not its position, decides them."""
    make, fixture, problem = BATCH_CASES[name]
    prior = request.getfixturevalue(fixture)
    op, y, params = problem(prior)
    solver = make(prior).set_operator(op)
    batch = solver.solve(y, params, [11, 22, 33])
    alone = solver.solve(y[1:2], {k: v[1:2] for k, v in params.items()}, [22])
    assert batch.shape[:2] == (3, 3) and torch.isfinite(batch).all()
    torch.testing.assert_close(alone[0], batch[1], rtol=0, atol=1e-4)
    other = solver.solve(y[1:2], {k: v[1:2] for k, v in params.items()}, [99])
    assert (other[0] - batch[1]).abs().max() > 1e-3  # another seed: other particles


@pytest.mark.parametrize("name,settings,message", [
    ("latent_dps", {"guidance": -1.0}, r"InverseSolver: settings.guidance must be >= 0, got -1.0"),
    ("psld", {"num_stepz": 3}, "unknown setting 'num_stepz' of psld"),
    ("dwgf", {"regularizers": [{"class_path": "dwgf.regularizers.KLPrior"}]}, r"settings.regularizers must be a Regularizer .*got a dict"),
])
def test_methods_that_name_their_settings_class_are_checked_when_the_solver_is_built(name, settings, message):
    from dwgf.errors import DWGFError
    from dwgf.solver import InverseSolver

    prior = GaussianMixturePrior(grid_mixture(2), latent_shape=(2, 1, 1), schedule="linear")
    with pytest.raises(DWGFError, match=message):
        InverseSolver(prior, method=method_functions()[name], settings=settings)
