"""The flow's decoder pass: chunks of particles (memory bounded independently of N) and mixed precision."""

from types import SimpleNamespace

import pytest
import torch

from dwgf import DWGF, ItemDraws, flow_gradient, item_generators
from dwgf.flow import DecoderPass, FlowConfig, Problem, decoder_chunk_of
from dwgf.operators import BoxInpainting
from dwgf.precision import autoencoder_dtype
from dwgf.priors.base import LatentPrior
from dwgf.regularizers import EncoderConsistency, KLPrior


def _problem(prior, batch=2, seed=0):
    op = BoxInpainting(size=[12, 12], sigma_y=0.01)
    x = torch.rand(batch, prior.image_channels, prior.image_size, prior.image_size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    y, params = op.measure(x, seeds=list(range(batch)))
    return op, y, params


def _gradient(prior, n=3, chunk=None, autoencoder=None, regularizers=None):
    op, y, params = _problem(prior)
    z = torch.randn(2, n, *prior.latent_shape, generator=torch.Generator().manual_seed(1))
    regs = [KLPrior(), EncoderConsistency()] if regularizers is None else regularizers
    config = FlowConfig(regularizers=regs, decoder_chunk=chunk)
    problem, draw = Problem(op, y, params, num_particles=n), ItemDraws(item_generators([1, 2], "cpu"), "cpu")
    config.start(prior, problem, draw)
    return flow_gradient(prior, problem, config, z, torch.tensor([600, 600]), draw, unet_dtype=autoencoder)


@pytest.mark.parametrize("chunk", [1, 2, 3, 4, 6])
def test_chunks_change_only_float_rounding(sd_prior, chunk):
    """Six particles (2 items x 3) decoded and pulled back 1 to 6 at a time: the same images and latent
    gradient as all six at once, to float32 rounding. (The decoder itself is not batch-size invariant
    on the CPU: one latent decoded alone differs from it decoded among six by ~1e-6; even chunks here
    were bit-identical, odd ones not.)"""
    g_all, s_all = _gradient(sd_prior)
    g, s = _gradient(sd_prior, chunk=chunk)
    assert torch.allclose(s.x, s_all.x, rtol=0, atol=1e-5)
    assert torch.allclose(g, g_all, rtol=1e-4, atol=1e-6 * float(g_all.abs().max()))
    assert not torch.equal(g, torch.zeros_like(g))


def test_chunked_flow_gives_the_same_particles(ldm_prior):
    op, y, params = _problem(ldm_prior)
    runs = [DWGF(ldm_prior, num_steps=3, num_particles=3, decoder_chunk=c).set_operator(op).solve(y, params, [0, 1]) for c in (None, 2)]
    assert torch.allclose(runs[0], runs[1], rtol=0, atol=1e-5)


def test_a_chunk_decodes_twice_and_differentiates_each_chunk(sd_prior, monkeypatch):
    """The price of chunking, and only when chunking: one more decoder forward per iteration."""
    calls = {"decode": 0}
    original = sd_prior._decode

    def counted(z):
        calls["decode"] += 1
        return original(z)

    monkeypatch.setattr(sd_prior, "_decode", counted)
    z = torch.randn(6, *sd_prior.latent_shape)
    DecoderPass(sd_prior, z).pull_back(torch.ones(6, 3, 32, 32))
    assert calls["decode"] == 1
    calls["decode"] = 0
    DecoderPass(sd_prior, z, chunk=4).pull_back(torch.ones(6, 3, 32, 32))
    assert calls["decode"] == 2 + 2  # two chunks (4 + 2) without graph, then again with one


def test_decoder_chunk_choice(sd_prior):
    z = torch.zeros(6, *sd_prior.latent_shape)
    assert decoder_chunk_of(sd_prior, z) == 6  # the CPU: everything at once
    assert decoder_chunk_of(sd_prior, z, 4) == 4
    assert decoder_chunk_of(sd_prior, z, 100) == 6
    assert decoder_chunk_of(sd_prior, z, 0) == 1
    with pytest.raises(Exception, match="decoder_chunk must be >= 1"):
        DWGF(sd_prior, decoder_chunk=0)


def test_mixed_precision_runs_the_decoder_pass_low_and_returns_float32(sd_prior, monkeypatch):
    """Under bf16 autocast the decoder's forward (and so its VJP) and the encoder term run in bfloat16
    by default, the network too; the latent gradient is float32 and close to float32's. With
    ``float32_autoencoder`` the autoencoder stays float32."""
    seen = []
    original = sd_prior.vae.decode

    def spy(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16)
        return original(*args, **kwargs)

    monkeypatch.setattr(sd_prior.vae, "decode", spy)
    reference, _ = _gradient(sd_prior)
    assert seen == [False, False]  # the flow's decode and the encoder term's
    seen.clear()
    low, state = _gradient(sd_prior, autoencoder=torch.bfloat16)
    assert seen == [True, True]
    assert low.dtype == torch.float32 and state.x.dtype == torch.float32
    cosine = torch.nn.functional.cosine_similarity(low.flatten(), reference.flatten(), dim=0)
    assert 0.99 < cosine < 1, float(cosine)  # close, and not the float32 gradient itself

    op, y, params = _problem(sd_prior)
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        DWGF(sd_prior, num_steps=1, num_particles=2).set_operator(op).solve(y, params, [0, 1])
    assert seen == [True, True, False]  # the iteration's two decodes low; the final images float32
    seen.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        DWGF(sd_prior, num_steps=1, num_particles=2, float32_autoencoder=True).set_operator(op).solve(y, params, [0, 1])
    assert seen == [False, False, False]


def test_autoencoder_dtype_rules(sd_prior):
    assert autoencoder_dtype(None, sd_prior) is None  # 32-true
    assert autoencoder_dtype(torch.bfloat16, sd_prior) == torch.bfloat16
    assert autoencoder_dtype(torch.bfloat16, sd_prior, float32_autoencoder=True) is None
    # float16 follows the autoencoder's force_upcast (diffusers' default True; SDXL's VAE overflows in float16)
    assert autoencoder_dtype(torch.float16, sd_prior) is None
    fixed = SimpleNamespace(_modules={"vae": SimpleNamespace(config=SimpleNamespace(force_upcast=False))})  # an fp16-safe VAE
    fixed.autoencoder_takes = lambda dtype: LatentPrior.autoencoder_takes(fixed, dtype)
    assert autoencoder_dtype(torch.float16, fixed) == torch.float16
    assert autoencoder_dtype(torch.bfloat16, fixed) == torch.bfloat16
