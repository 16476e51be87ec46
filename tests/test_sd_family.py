"""The Stable Diffusion family against diffusers' own pipelines, on tiny random folders of each layout.

What protects a user with real weights: our prompt embeddings, our guided noise prediction and our
DDIM sampling equal what ``StableDiffusionPipeline`` / ``StableDiffusionXLPipeline`` compute with the
same weights (SD 1.x epsilon, SD 2.x v-prediction, SDXL with two text encoders).
"""

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.priors import StableDiffusionPrior, StableDiffusionXLPrior, UnconditionalLatentPrior, load_prior, prior_class_of
from dwgf.sampling import ddim_sample
from dwgf.testing import main as build_layouts

LAYOUTS = ["sd15", "sd21-v", "sdxl"]
PROMPT, NEGATIVE = "a photo of a red cat", "blurry, low quality"


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-priors")
    assert build_layouts([str(root), "--layouts", *LAYOUTS, "ldm"]) == 0
    return {name: root / name for name in [*LAYOUTS, "ldm"]}


def pipeline(folder, name):
    from diffusers import DDIMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline

    cls = StableDiffusionXLPipeline if name == "sdxl" else StableDiffusionPipeline
    pipe = cls.from_pretrained(folder)
    pipe.set_progress_bar_config(disable=True)
    # dwgf's DDIM: leading timesteps ending at 0, last step to abar = 1 (see dwgf.sampling.ddim_sample)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config, steps_offset=0, set_alpha_to_one=True, timestep_spacing="leading")
    return pipe


def test_the_layout_builder_writes_each_layout_and_load_prior_picks_its_class(folders):
    want = {"sd15": StableDiffusionPrior, "sd21-v": StableDiffusionPrior, "sdxl": StableDiffusionXLPrior, "ldm": UnconditionalLatentPrior}
    for name, cls in want.items():
        assert prior_class_of(folders[name]) == cls.__name__
        prior = load_prior(str(folders[name]))
        assert type(prior) is cls
    assert load_prior(str(folders["sd21-v"])).prediction_type == "v_prediction"
    assert load_prior(str(folders["sd15"])).prediction_type == "epsilon"
    # building again leaves a non-empty folder alone
    before = sorted(p.name for p in folders["sd15"].iterdir())
    assert build_layouts([str(folders["sd15"].parent), "--layouts", "sd15"]) == 0
    assert sorted(p.name for p in folders["sd15"].iterdir()) == before


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("negative", [None, NEGATIVE])
def test_prompt_embeddings_equal_the_pipelines_encode_prompt(folders, name, negative):
    prior = load_prior(str(folders[name]), prompt=PROMPT, negative_prompt=negative, guidance_scale=3.0)
    pipe = pipeline(folders[name], name)
    out = pipe.encode_prompt(PROMPT, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=True, negative_prompt=negative)
    assert torch.equal(prior.prompt_embeds[:1], out[0])
    assert torch.equal(prior.negative_embeds, out[1])
    if name == "sdxl":
        assert torch.equal(prior.prompt_pooled[:1], out[2])
        assert torch.equal(prior.negative_pooled, out[3])
        if negative is None:  # force_zeros_for_empty_prompt, as SDXL base
            assert not prior.negative_embeds.any() and not prior.negative_pooled.any()
        for h, w in [(32, 32), (32, 48), (48, 24)]:
            z = torch.zeros(2, 4, h // 2, w // 2)
            ids = pipe._get_add_time_ids((h, w), (0, 0), (h, w), dtype=out[0].dtype,
                                         text_encoder_projection_dim=pipe.text_encoder_2.config.projection_dim)
            assert torch.equal(prior.time_ids(z), ids.repeat(2, 1))
    # per-item prompts get rows of their own, equal to what the pipeline encodes for them
    rows = prior.prompt_ids(["a dog", None, PROMPT, "a dog"])
    assert rows.tolist() == [1, 0, 0, 1]
    dog = pipe.encode_prompt("a dog", device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False)
    assert torch.equal(prior.prompt_embeds[1:2], dog[0])
    if name == "sdxl":
        assert torch.equal(prior.prompt_pooled[1:2], dog[2])


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_eps_equals_the_pipelines_noise_prediction(folders, name, guidance):
    """The pipeline's (guided) model output at its first step, converted to epsilon, is our eps there."""
    prior = load_prior(str(folders[name]), prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=guidance)
    pipe = pipeline(folders[name], name)
    seen = []
    step = pipe.scheduler.step

    def spy(model_output, timestep, sample, *args, **kwargs):
        seen.append((model_output.clone(), int(timestep), sample.clone()))
        return step(model_output, timestep, sample, *args, **kwargs)

    pipe.scheduler.step = spy
    z = torch.randn(1, 4, 16, 24, generator=torch.Generator().manual_seed(1))
    pipe(PROMPT, negative_prompt=NEGATIVE, guidance_scale=guidance, num_inference_steps=4, latents=z, height=32, width=48,
         output_type="latent", eta=0.0)
    assert len(seen) == 4
    for out, t, sample in seen[:2]:
        tt = torch.tensor([t])
        if prior.prediction_type == "v_prediction":
            a = prior.abar(tt).view(-1, 1, 1, 1)
            out = a.sqrt() * out + (1 - a).sqrt() * sample
        assert torch.allclose(prior.eps(sample, tt), out, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", LAYOUTS)
@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_ddim_sampling_equals_the_pipelines_output_latents(folders, name, guidance):
    prior = load_prior(str(folders[name]), prompt=PROMPT, negative_prompt=NEGATIVE, guidance_scale=guidance)
    pipe = pipeline(folders[name], name)
    z = torch.randn(2, 4, 16, 24, generator=torch.Generator().manual_seed(2))
    theirs = pipe([PROMPT] * 2, negative_prompt=[NEGATIVE] * 2, guidance_scale=guidance, num_inference_steps=10, latents=z.clone(),
                  height=32, width=48, output_type="latent", eta=0.0).images
    ours = ddim_sample(prior, 2, num_steps=10, latents=z.clone(), size=(32, 48), output="latent")
    assert ours.shape == theirs.shape == (2, 4, 16, 24)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-4), (ours - theirs).abs().max()
    assert not torch.allclose(ours, z, atol=1e-2)  # it did sample


def test_per_item_prompts_in_one_call_equal_each_prompts_own_prior(folders):
    """Rows with different prompts in one network call get what a prior of each prompt computes."""
    mixed = load_prior(str(folders["sdxl"]), guidance_scale=2.0)
    cat = load_prior(str(folders["sdxl"]), prompt="a cat", guidance_scale=2.0)
    z, t = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(3)), torch.tensor([900, 500, 100])
    rows = mixed.prompt_ids(["a cat", None, "a cat"])
    got = mixed.eps(z, t, rows)
    assert torch.allclose(got[[0, 2]], cat.eps(z[[0, 2]], t[[0, 2]]), atol=1e-5)
    assert torch.allclose(got[[1]], mixed.eps(z[[1]], t[[1]]), atol=1e-5)


def test_guidance_is_one_batched_call_of_two_rows_and_text_encoders_are_released(folders):
    prior = load_prior(str(folders["sd15"]), prompt=PROMPT, guidance_scale=3.0)
    assert not any("CLIP" in type(m).__name__ for m in prior.modules())  # released after encoding
    calls = []
    hook = prior.unet.register_forward_hook(lambda mod, args, kwargs_out: calls.append(args[0].shape[0]))
    try:
        prior.eps(torch.randn(3, 4, 16, 16), torch.tensor([10, 20, 30]))
    finally:
        hook.remove()
    assert calls == [6]
    plain = load_prior(str(folders["sd15"]))
    assert not plain.guided and not hasattr(plain, "negative_embeds")


def test_non_square_sizes_and_their_errors(folders):
    prior = load_prior(str(folders["sd15"]))
    assert prior.size_multiple == 4 and prior.latent_factor == 2
    assert prior.latent_shape_at((32, 48)) == (4, 16, 24) and prior.latent_shape_at(None) == (4, 16, 16)
    assert prior.image_shape_of(torch.zeros(1, 4, 16, 24)) == (3, 32, 48)
    with pytest.raises(DWGFError, match=r"takes sides that are multiples of 4 px \(e.g. 32 48\); got 30x48 \(height x width\)"):
        prior.latent_shape_at((30, 48))
    x = torch.rand(1, 3, 32, 48) * 2 - 1
    assert prior.decode(prior.encode(x)).shape == (1, 3, 32, 48)


def test_wrong_class_for_the_folder_and_bad_options_are_one_line_errors(folders):
    with pytest.raises(DWGFError, match=r"SDXL UNet .* use StableDiffusionXLPrior"):
        StableDiffusionPrior(str(folders["sdxl"]))
    with pytest.raises(DWGFError, match="not an SDXL UNet"):
        StableDiffusionXLPrior(str(folders["sd15"]))
    for bad in (-1.0, float("nan"), "3"):
        with pytest.raises(DWGFError, match="guidance_scale must be a finite number >= 0"):
            StableDiffusionPrior(str(folders["sd15"]), guidance_scale=bad)
    with pytest.raises(DWGFError, match="prompt must be text"):
        StableDiffusionPrior(str(folders["sd15"]), prompt=3)
    with pytest.raises(DWGFError, match="UnconditionalLatentPrior takes no text prompt"):
        load_prior(str(folders["ldm"])).prompt_ids(["a cat"])
    assert load_prior(str(folders["ldm"])).prompt_ids([None, ""]) is None
