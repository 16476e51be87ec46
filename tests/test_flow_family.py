"""Stable Diffusion 3 and FLUX.1 (rectified flow) against diffusers' own pipelines, on tiny random folders.

What protects a user with real weights: our prompt embeddings, our noise prediction (the velocity
converted at the right time) and our DDIM sampling equal what ``StableDiffusion3Pipeline`` /
``FluxPipeline`` compute with the same weights; the checks are shown to fail when the time map or
the velocity's sign is changed. Then the flow, the baselines and two processes on both families,
and the cheap flow decoder.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.priors import FluxPrior, StableDiffusion3Prior, load_prior, prior_class_of
from dwgf.sampling import ddim_sample, ddim_timesteps
from dwgf.testing import main as build_layouts
from dwgf.testing import make_images

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = ["sd3", "flux-dev", "flux-schnell"]
PROMPT, NEGATIVE = "a photo of a red cat", "blurry, low quality"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-flow-priors")
    assert build_layouts([str(root), "--layouts", *LAYOUTS, "taesd", "taesd3", "sd15"]) == 0
    return {name: root / name for name in [*LAYOUTS, "taesd", "taesd3", "sd15"]}


def pipeline(folder, name, **kwargs):
    from diffusers import FluxPipeline, StableDiffusion3Pipeline

    pipe = (StableDiffusion3Pipeline if name == "sd3" else FluxPipeline).from_pretrained(folder, **kwargs)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def guided_prior(folders, name, **kwargs):
    """SD3 with classifier-free guidance, FLUX.1-dev with its embedded guidance, schnell with true CFG."""
    if name == "sd3":
        return load_prior(str(folders[name]), prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=3.0, **kwargs)
    if name == "flux-dev":
        return load_prior(str(folders[name]), prompt=PROMPT, guidance_scale=2.5, **kwargs)
    return load_prior(str(folders[name]), prompt=PROMPT, negative_prompt=NEGATIVE, true_cfg_scale=2.0, **kwargs)


def pipeline_kwargs(name):
    if name == "sd3":
        return {"negative_prompt": NEGATIVE, "guidance_scale": 3.0, "max_sequence_length": 256}
    if name == "flux-dev":
        return {"guidance_scale": 2.5, "max_sequence_length": 512}
    return {"negative_prompt": NEGATIVE, "true_cfg_scale": 2.0, "max_sequence_length": 512}


def test_the_layout_builder_writes_each_layout_and_load_prior_picks_its_class(folders):
    want = {"sd3": StableDiffusion3Prior, "flux-dev": FluxPrior, "flux-schnell": FluxPrior}
    for name, cls in want.items():
        assert prior_class_of(folders[name]) == cls.__name__
        prior = load_prior(str(folders[name]))
        assert type(prior) is cls and prior.prediction_type == "flow"
        assert prior.latent_shape_at((32, 48)) == (16, 16, 24)
        with pytest.raises(DWGFError, match=r"takes sides that are multiples of 4 px \(e.g. 32 48\); got 30x48"):
            prior.latent_shape_at((30, 48))
        assert not any(type(m).__name__.startswith(("CLIP", "T5")) for m in prior.modules())  # text encoders released
    assert load_prior(str(folders["flux-dev"])).embedded_guidance == 3.5  # FluxPipeline's default
    assert load_prior(str(folders["flux-schnell"])).embedded_guidance is None
    with pytest.raises(DWGFError, match="guidance_scale.*no guidance embedding"):
        load_prior(str(folders["flux-schnell"]), guidance_scale=3.5)
    with pytest.raises(DWGFError, match="position grid"):
        load_prior(str(folders["sd3"])).latent_shape_at((256, 256))


@pytest.mark.parametrize("name", LAYOUTS)
def test_prompt_embeddings_equal_the_pipelines_encode_prompt(folders, name):
    """To float rounding: T5 in a pipeline and T5 alone round differently in the last bits (CLIP's parts are exact)."""
    same = lambda a, b: a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-4)  # noqa: E731
    prior = guided_prior(folders, name)
    pipe = pipeline(folders[name], name)
    if name == "sd3":
        out = pipe.encode_prompt(PROMPT, None, None, device="cpu", do_classifier_free_guidance=True, negative_prompt=NEGATIVE,
                                 max_sequence_length=256)
        embeds, negative, pooled, negative_pooled = out
        assert same(prior.negative_embeds, negative) and same(prior.negative_pooled, negative_pooled)
    else:
        embeds, pooled, text_ids = pipe.encode_prompt(PROMPT, None, device="cpu", max_sequence_length=512)
        if name == "flux-schnell":
            negative, negative_pooled, _ = pipe.encode_prompt(NEGATIVE, None, device="cpu", max_sequence_length=512)
            assert same(prior.negative_embeds, negative) and same(prior.negative_pooled, negative_pooled)
    assert same(prior.prompt_embeds[:1], embeds) and same(prior.prompt_pooled[:1], pooled)
    rows = prior.prompt_ids(["a dog", None, "a dog"])
    assert rows.tolist() == [1, 0, 1]
    dog = pipe.encode_prompt("a dog", *([None, None] if name == "sd3" else [None]), device="cpu", max_sequence_length=prior.max_sequence_length,
                             **({"do_classifier_free_guidance": False} if name == "sd3" else {}))
    assert same(prior.prompt_embeds[1:2], dog[0]) and same(prior.prompt_pooled[1:2], dog[2 if name == "sd3" else 1])


def test_sd3_without_t5_has_zeros_for_it_as_the_pipeline(tmp_path):
    from dwgf.testing import make_tiny_sd3_prior

    folder = make_tiny_sd3_prior(tmp_path / "sd3-no-t5", t5=False)
    prior = load_prior(str(folder), prompt=PROMPT)
    pipe = pipeline(folder, "sd3", text_encoder_3=None, tokenizer_3=None)
    embeds, _, pooled, _ = pipe.encode_prompt(PROMPT, None, None, device="cpu", do_classifier_free_guidance=False, max_sequence_length=256)
    assert torch.equal(prior.prompt_embeds, embeds) and torch.equal(prior.prompt_pooled, pooled)
    assert not prior.prompt_embeds[:, 16:].any()  # the T5 part (CLIP's 16 tokens come first)


def pipeline_steps(prior, name, folder, z_t, num_steps):
    """Runs the pipeline on dwgf's DDIM grid from the model latent of ``z_t``; returns ``(seen, final)``:
    each step's ``(velocity, timestep, sample)`` and the final latents, unpacked."""
    pipe = pipeline(folder, name)
    b, c, h, w = z_t.shape
    ts = ddim_timesteps(num_steps, prior.num_train_timesteps)
    start = prior.model_latent(z_t, ts[:1].repeat(b))
    latents = start if name == "sd3" else pipe._pack_latents(start, b, c, h, w)
    seen, step = [], pipe.scheduler.step

    def spy(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), float(timestep), sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = spy
    size = {"height": h * prior.latent_factor, "width": w * prior.latent_factor}
    out = pipe([PROMPT] * b, num_inference_steps=num_steps, sigmas=(ts.double() / prior.num_train_timesteps).tolist(), latents=latents,
               output_type="latent", **size, **pipeline_kwargs(name)).images
    if name != "sd3":
        out = pipe._unpack_latents(out, size["height"], size["width"], pipe.vae_scale_factor)
        seen = [(pipe._unpack_latents(v, **size, vae_scale_factor=pipe.vae_scale_factor), t,
                 pipe._unpack_latents(s, **size, vae_scale_factor=pipe.vae_scale_factor)) for v, t, s in seen]
    return seen, out


def predictions_match(prior, seen, num_steps) -> bool:
    """Whether ``prior.predict`` at each of the pipeline's steps gives ``eps = z_s + (1 - s) v`` and ``z0 = z_s - s v``."""
    ts = ddim_timesteps(num_steps, prior.num_train_timesteps)
    ok = True
    for (v, timestep, z_s), t in zip(seen, ts):
        s = timestep / prior.num_train_timesteps
        tt = t.repeat(z_s.shape[0])
        z_t = z_s / prior.model_latent(torch.ones_like(z_s), tt)
        eps, z0 = prior.predict(z_t, tt)
        ok &= torch.allclose(eps, z_s + (1 - s) * v, rtol=1e-4, atol=1e-4) and torch.allclose(z0, z_s - s * v, rtol=1e-4, atol=1e-4)
    return bool(ok)


@pytest.mark.parametrize("name", LAYOUTS)
def test_predictions_and_ddim_sampling_equal_the_pipelines_steps(folders, name):
    """At every step of the pipeline's scheduler (run on dwgf's grid), the velocity converted by the
    prior is our eps and z0 prediction, and dwgf's DDIM from the same start lands on the pipeline's latents."""
    prior = guided_prior(folders, name)
    z = torch.randn(2, 16, 16, 24, generator=torch.Generator().manual_seed(1))
    seen, theirs = pipeline_steps(prior, name, folders[name], z, 4)
    assert len(seen) == 4
    # the pipeline's timesteps are 1000 s(t) for dwgf's flow times t: the time map, shift included
    ts = ddim_timesteps(4, prior.num_train_timesteps)
    want = [float(prior.sigma(t.view(1), z)[0]) * 1000 for t in ts]
    assert [timestep for _, timestep, _ in seen] == pytest.approx(want, rel=1e-5, abs=1e-4)
    assert predictions_match(prior, seen, 4)
    ours = ddim_sample(prior, 2, num_steps=4, latents=z.clone(), size=(32, 48), output="latent")
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours - theirs).abs().max()
    assert not torch.allclose(ours, z, atol=1e-2)  # it did sample


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
def test_the_equivalence_checks_fail_if_the_time_map_or_the_velocitys_sign_changes(folders, name):
    prior = guided_prior(folders, name)
    z = torch.randn(1, 16, 16, 24, generator=torch.Generator().manual_seed(4))
    seen, _ = pipeline_steps(prior, name, folders[name], z, 4)
    assert predictions_match(prior, seen, 4)
    flipped = guided_prior(folders, name)
    inner = flipped.denoiser._call
    flipped.denoiser._call = lambda *args: -inner(*args)  # the velocity's sign
    assert not predictions_match(flipped, seen, 4)
    shifted = guided_prior(folders, name)  # the time map: no shift, or a different resolution rule
    shifted.schedule.shift, shifted.schedule.use_dynamic_shifting = 1.0, False
    shifted.schedule._cache.clear()
    assert not predictions_match(shifted, seen, 4)


def test_fluxs_schedule_depends_on_the_image_size_as_the_pipelines(folders):
    prior = load_prior(str(folders["flux-dev"]))
    t = torch.tensor([600])
    small, large = torch.zeros(1, 16, 16, 16), torch.zeros(1, 16, 128, 128)
    assert float(prior.abar(t, small)) > float(prior.abar(t, large))  # more tokens: more noise at the same time
    # SD3's is static: one table for every size
    sd3 = load_prior(str(folders["sd3"]))
    assert torch.equal(sd3.abar(t, small), sd3.abar(t, large))
    assert float(sd3.sigma(t)) == pytest.approx(3 * 0.6 / (1 + 2 * 0.6))


def run_cli(config, folder, images, out, *extra):
    from dwgf.cli import main

    main([str(a) for a in ["predict", "--config", config, "--model.prior.pretrained", folder, "--model.num_steps", 2,
                           "--model.num_particles", 2, "--data.fit", "keep", "--data.images", images, "--output", out,
                           "--trainer.logger", "false", "--trainer.accelerator", "cpu", *extra]])


@pytest.mark.parametrize("family,name,extra", [
    ("sd3", "sd3", ["--model.prior.prompt", PROMPT, "--model.prior.guidance_scale", 3]),
    ("flux", "flux-dev", ["--model.prior.prompt", PROMPT, "--model.prior.guidance_scale", 2.5]),
])
def test_a_tiny_layout_runs_end_to_end_and_two_processes_equal_one(folders, tmp_path, family, name, extra):
    from test_processes import DEVICES, env, fingerprint

    images = make_images(tmp_path / "images", count=3, sizes=((32, 32), (32, 48), (32, 32)))
    (images / "prompts.csv").write_text("name,prompt\nimg1,a wide pattern\n")
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--config", ROOT / f"configs/{family}/box_inpaint.yaml", "--model.prior.pretrained", folders[name], "--model.num_steps", 2,
              "--model.num_particles", 2, "--data.fit", "keep", "--data.images", images, "--trainer.logger", "false",
              "--trainer.accelerator", "cpu", *extra]
    from dwgf.cli import main

    main(["predict", *map(str, common), "--output", str(one)])
    assert sorted(p.name for p in one.iterdir() if p.is_dir()) == ["img0", "img1", "img2"]
    run = subprocess.run([sys.executable, "-m", "dwgf", "predict", *map(str, common), "--output", str(two), "--trainer.devices", "2",
                          "--trainer.strategy", "ddp"], env=env(threads=False), cwd=ROOT, timeout=600, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert fingerprint(two, skip=DEVICES) == fingerprint(one, skip=DEVICES)


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
@pytest.mark.parametrize("method", ["dps", "psld", "reddiff"])
def test_the_baselines_run_on_both_families(folders, tmp_path, name, method):
    images = make_images(tmp_path / "images", count=1, sizes=((32, 48),))
    family = "sd3" if name == "sd3" else "flux"
    out = tmp_path / "out"
    run_cli(ROOT / f"configs/{family}/box_inpaint.yaml", folders[name], images, out, "--config", ROOT / f"configs/methods/{method}.yaml",
            "--model.num_steps", 3, "--model.num_particles", 2)
    particles = sorted((out / "img0").glob("particle*.png")) or sorted((out / "img0").iterdir())
    assert particles and (out / "metrics.csv").is_file()
    import csv

    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["psnr"]) == float(rows[0]["psnr"])  # a number, not NaN


def test_the_flow_decoder_is_the_only_decoder_the_flow_calls(folders, tmp_path):
    """With flow_decoder, every decode of the flow (with its VJP) is the tiny one; the final images are the full decoder's."""
    from dwgf.flow import FlowConfig, ItemDraws, Problem, dwgf_flow, item_generators
    from dwgf.operators import BoxInpainting
    from dwgf.regularizers import EncoderConsistency, KLPrior
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps

    prior = load_prior(str(folders["sd15"]), flow_decoder=str(folders["taesd"]))
    calls = {"full": 0, "tiny": 0}
    hooks = [prior.vae.decoder.register_forward_hook(lambda *a: calls.__setitem__("full", calls["full"] + 1)),
             prior.flow_vae.decoder.register_forward_hook(lambda *a: calls.__setitem__("tiny", calls["tiny"] + 1))]
    op = BoxInpainting(size=(8, 8), position=(4, 4), sigma_y=0.0)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    y, params = op.measure(x, [0])
    draw = ItemDraws(item_generators([0], "cpu"), "cpu")
    config = FlowConfig(num_steps=3, regularizers=[KLPrior(), EncoderConsistency()], step_size=ConstantStepSize(0.5),
                        timesteps=DescendingTimesteps())
    particles, z, _ = dwgf_flow(prior, Problem(op, y, params, num_particles=2), config, draw)
    for h in hooks:
        h.remove()
    assert calls == {"full": 1, "tiny": 6}  # 3 iterations x (flow + encoder round trip); the final decode is the full one
    assert torch.allclose(particles.flatten(0, 1), prior.decode(z.flatten(0, 1)), atol=1e-6)
    assert not torch.allclose(particles.flatten(0, 1), prior.flow_decode(z.flatten(0, 1)), atol=1e-3)


def test_flow_decoder_errors_name_the_option(folders, tmp_path):
    with pytest.raises(DWGFError, match="flow_decoder.*16-channel latents.*4-channel"):
        load_prior(str(folders["sd15"]), flow_decoder=str(folders["taesd3"]))
    with pytest.raises(DWGFError, match="flow_decoder.*AutoencoderTiny"):
        load_prior(str(folders["sd15"]), flow_decoder=str(folders["sd15"] / "vae"))
    with pytest.raises(DWGFError, match="flow_decoder.*neither config.json"):
        load_prior(str(folders["sd15"]), flow_decoder=str(tmp_path))
    # a file, a missing folder or a broken config is an error about flow_decoder, never about pretrained
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.json").write_text("{not json")
    for bad, why in [(tmp_path / "notes.txt", "is a file; expected an AutoencoderTiny folder"), (tmp_path / "nope", "no such folder"),
                     (tmp_path / "broken", "config.json is not valid JSON")]:
        with pytest.raises(DWGFError, match=f"flow_decoder '.*{bad.name}'.*{why}") as err:
            load_prior(str(folders["sd15"]), flow_decoder=str(bad))
        assert "pretrained" not in str(err.value)
    assert (tmp_path / "notes.txt").read_text() == "mine" and (tmp_path / "broken" / "config.json").read_text() == "{not json"
    prior = load_prior(str(folders["sd3"]), flow_decoder=str(folders["taesd3"]))  # SD3's 16-channel latents, scaled and shifted
    z = torch.randn(1, 16, 16, 16)
    assert prior.flow_decode(z).shape == prior.decode(z).shape == (1, 3, 32, 32)


def test_a_flow_down_to_the_clean_data_is_a_clear_error(folders):
    """A rectified-flow prior's time 0 is abar = 1 exactly, where the diffusion terms divide by zero."""
    from dwgf.flow import FlowConfig, ItemDraws, Problem, dwgf_flow, item_generators
    from dwgf.operators import Denoising
    from dwgf.regularizers import KLPrior
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps

    prior = load_prior(str(folders["sd3"]))
    assert float(prior.abar(torch.tensor([0]))) == 1.0 and float(prior.abar(torch.tensor([1]))) < 1.0
    op = Denoising(sigma_y=0.1)
    y, params = op.measure(torch.zeros(1, 3, 32, 32), [0])
    with pytest.raises(DWGFError, match="DescendingTimesteps: time 0 is the clean data.*t_min >= 1"):
        dwgf_flow(prior, Problem(op, y, params, num_particles=1), FlowConfig(num_steps=2, regularizers=[KLPrior()], step_size=ConstantStepSize(0.1),
                  timesteps=DescendingTimesteps(t_max=5, t_min=0)), ItemDraws(item_generators([0], "cpu"), "cpu"))


def test_the_sd3_and_flux_configs_resolve_offline_and_keep_the_papers_settings_over_its_snr_range(capsys, monkeypatch):
    import yaml
    from diffusers import DDPMScheduler

    from dwgf.cli import main
    from dwgf.priors import FlowMatchingSchedule

    ddpm = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear").alphas_cumprod
    schedules = {"sd3": (FlowMatchingSchedule(shift=3.0), None, "StableDiffusion3Prior", "stabilityai/stable-diffusion-3.5-medium"),
                 "flux": (FlowMatchingSchedule(shift=3.0, use_dynamic_shifting=True), 4096, "FluxPrior", "black-forest-labs/FLUX.1-dev")}
    for family, (schedule, tokens, cls, hub) in schedules.items():
        for task in ["box_inpaint", "sr8"]:
            path = ROOT / f"configs/{family}/{task}.yaml"
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
            with pytest.raises(SystemExit) as exc:
                main(["predict", "--config", str(path), "--print_config"])
            assert exc.value.code == 0
            printed = yaml.safe_load(capsys.readouterr().out)
            assert printed["model"]["init_args"]["prior"]["init_args"]["pretrained"] == hub
            cfg = yaml.safe_load(path.read_text())
            model = cfg["model"]["init_args"]
            assert model["prior"]["class_path"] == f"dwgf.priors.{cls}" and model["prior"]["init_args"]["pretrained"] == hub
            assert (model["num_particles"], model["decoder_noise"], model["step_size"]["init_args"]["lr"]) == (4, 0.01, 1.0)
            assert [(r["class_path"].rsplit(".", 1)[1], r["init_args"]["weight"]) for r in model["regularizers"]] == [
                ("KLPrior", 0.15), ("EncoderConsistency", 0.1)]
            times = model["timesteps"]["init_args"]
            assert model["num_steps"] == times["t_max"] - times["t_min"] + 1  # one flow time per iteration
            abar = schedule.alphas_cumprod(tokens)
            # the SNR range of the paper's SD runs (timesteps 999 -> 2 of SD 1.5), at the native 1024 px
            assert abs(float(abar[times["t_max"]]) - float(ddpm[999])) < 2e-4 and abs(float(abar[times["t_min"]]) - float(ddpm[2])) < 2e-4
            assert cfg["data"]["init_args"]["operator"]["init_args"]["sigma_y"] == 0.001


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
def test_text_encoders_are_loaded_one_at_a_time_and_released(folders, monkeypatch, name):
    """T5-XXL is 19 GB in float32: no two text encoders are alive together, none after the prompts are encoded."""
    import gc
    import weakref

    import dwgf.priors.conditioning as fm

    alive, most = [], []
    real = fm._quiet_load

    def spy(*args, **kwargs):
        gc.collect()
        most.append(sum(ref() is not None for ref in alive))
        model = real(*args, **kwargs)
        alive.append(weakref.ref(model))
        return model

    monkeypatch.setattr(fm, "_quiet_load", spy)
    prior = load_prior(str(folders[name]), prompt=PROMPT)
    prior.prompt_ids(["a dog"])
    gc.collect()
    assert len(alive) == 2 * len(prior.conditioner.encoding.components) and max(most) == 0
    assert all(ref() is None for ref in alive)


@pytest.mark.parametrize("name", ["sd3", "flux-dev"])
@pytest.mark.parametrize("method", ["flow_dps", "latent_daps", "resample"])
def test_the_latent_solvers_run_on_both_families(folders, tmp_path, name, method):
    """ReSample, Latent DAPS and FlowDPS over the SD3 / FLUX box-inpainting configs resolve offline and run (a tiny layout)."""
    import csv

    from dwgf.cli import main
    from tests.test_latent_solvers import FAST

    images = make_images(tmp_path / "images", count=1, sizes=((32, 48),))
    family = "sd3" if name == "sd3" else "flux"
    out = tmp_path / "out"
    main([str(a) for a in ["predict", "--config", ROOT / f"configs/{family}/box_inpaint.yaml", "--config", ROOT / f"configs/methods/{method}.yaml",
                           "--model.prior.pretrained", folders[name], "--model.num_particles", 2, "--data.fit", "keep", "--data.images", images,
                           "--output", out, "--trainer.logger", "false", "--trainer.accelerator", "cpu", *FAST[method]]])
    assert sorted(p.name for p in (out / "img0").glob("particle_*.png")) == ["particle_0.png", "particle_1.png"]
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 1 and float(rows[0]["psnr_mean"]) == float(rows[0]["psnr_mean"])
    assert f"method: dwgf.methods.{method}.{method}" in (out / "config.yaml").read_text()
