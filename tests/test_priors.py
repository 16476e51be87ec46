"""Loading diffusers priors offline, and what a prior computes."""

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from dwgf.errors import DWGFError
from dwgf.priors import StableDiffusionPrior, UnconditionalLatentPrior, load_prior
from dwgf.testing import make_images, make_tiny_sd_prior, make_tiny_unconditional_prior

ROOT = Path(__file__).resolve().parents[1]


def test_sd_prior_loads_frozen_with_null_prompt(sd_prior):
    assert (sd_prior.image_size, sd_prior.image_channels, sd_prior.latent_shape) == (32, 3, (4, 16, 16))
    assert sd_prior.prompt_embeds.shape[0] == 1 and sd_prior.prompt_embeds.shape[-1] == 16
    assert not hasattr(sd_prior, "text_encoder")  # released after computing the embedding
    assert not any(p.requires_grad for p in sd_prior.parameters())
    sd_prior.train()
    assert not any(m.training for m in sd_prior.modules())
    assert sd_prior.alphas_cumprod.dtype == torch.float64 and sd_prior.num_train_timesteps == 1000


def test_encode_decode_eps_shapes(sd_prior):
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = sd_prior.encode(x)
    assert z.shape == (2, 4, 16, 16)
    sampled = sd_prior.encode(x, torch.randn(2, 4, 16, 16))
    assert not torch.allclose(sampled, z)  # the Gaussian encoder is sampled when noise is given
    assert sd_prior.decode(z).shape == (2, 3, 32, 32)
    assert sd_prior.eps(z, torch.tensor([10, 900])).shape == (2, 4, 16, 16)


def test_v_prediction_is_converted_to_epsilon(tmp_path):
    prior = StableDiffusionPrior(str(make_tiny_sd_prior(tmp_path / "v", prediction_type="v_prediction")))
    assert prior.prediction_type == "v_prediction"
    z_t, t = torch.randn(2, 4, 16, 16), torch.tensor([100, 700])
    v = prior._eps(z_t, t)
    abar = prior.abar(t).view(-1, 1, 1, 1)
    assert torch.allclose(prior.eps(z_t, t), abar.sqrt() * v + (1 - abar).sqrt() * z_t, atol=1e-6)


@pytest.mark.parametrize("vq", [False, True])
def test_unconditional_priors(tmp_path, vq):
    path = make_tiny_unconditional_prior(tmp_path / "p", vq=vq)
    prior = load_prior(str(path))
    assert isinstance(prior, UnconditionalLatentPrior) and prior.is_vq == vq
    x = torch.rand(2, 1, 32, 32) * 2 - 1
    z = prior.encode(x)
    assert z.shape == (2, 4, 16, 16) and prior.decode(z).shape == (2, 1, 32, 32)
    assert prior.eps(z, torch.tensor([5, 5])).shape == z.shape


def test_load_prior_picks_the_class(sd_path, ldm_path):
    assert type(load_prior(str(sd_path))) is StableDiffusionPrior
    assert type(load_prior(str(ldm_path))) is UnconditionalLatentPrior


def test_autoencoder_stays_float32_under_autocast(ldm_prior):
    z = torch.randn(1, 4, 16, 16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        x = ldm_prior.decode(z)
        eps = ldm_prior.eps(z, torch.tensor([10]))
    assert x.dtype == torch.float32 and eps.dtype == torch.float32
    assert torch.allclose(x, ldm_prior.decode(z))


def _one_line(err):
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_missing_folder(tmp_path):
    with pytest.raises(DWGFError) as err:
        StableDiffusionPrior(str(tmp_path / "nope"))
    assert _one_line(err).startswith("StableDiffusionPrior: pretrained ") and "no such folder" in str(err.value)


def test_hub_id_offline_is_one_clear_line():
    with pytest.raises(DWGFError) as err:
        StableDiffusionPrior("someone/not-cached-model")
    msg = _one_line(err)
    assert "someone/not-cached-model" in msg and "hub" in msg.lower()


@pytest.mark.parametrize("component", ["unet", "vae", "scheduler", "text_encoder", "tokenizer"])
def test_missing_component(sd_path, tmp_path, component):
    broken = tmp_path / "broken"
    shutil.copytree(sd_path, broken)
    shutil.rmtree(broken / component)
    with pytest.raises(DWGFError) as err:
        StableDiffusionPrior(str(broken))
    msg = _one_line(err)
    assert str(broken) in msg and component in msg


def test_missing_weights_file(ldm_path, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(ldm_path, broken)
    (broken / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(DWGFError) as err:
        UnconditionalLatentPrior(str(broken))
    assert "unet/" in _one_line(err) and "safetensors" in str(err.value)


def test_wrong_prior_class_for_folder(ldm_path, sd_path):
    with pytest.raises(DWGFError, match="UnconditionalLatentPrior"):
        StableDiffusionPrior(str(ldm_path))
    with pytest.raises(DWGFError, match="StableDiffusionPrior"):
        UnconditionalLatentPrior(str(sd_path))


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "weights.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(DWGFError, match="is a file"):
        StableDiffusionPrior(str(f))


def test_a_prior_from_modules_computes_what_the_loaded_one_does(sd_prior):
    """from_modules (networks in memory, as the benchmarks build SD's layout) shares the loaded prior's maths."""
    same = StableDiffusionPrior.from_modules(sd_prior.vae, sd_prior.unet, sd_prior.alphas_cumprod.clone(),
                                             prompt_embeds=sd_prior.prompt_embeds.clone())
    assert (same.image_size, same.image_channels, same.latent_shape) == (sd_prior.image_size, sd_prior.image_channels, sd_prior.latent_shape)
    assert not any(p.requires_grad for p in same.parameters())
    gen = torch.Generator().manual_seed(0)
    z = torch.randn(2, *sd_prior.latent_shape, generator=gen)
    t = torch.tensor([100, 700])
    assert torch.equal(same.eps(z, t), sd_prior.eps(z, t))
    assert torch.equal(same.decode(z), sd_prior.decode(z))
    x = torch.rand(1, 3, sd_prior.image_size, sd_prior.image_size) * 2 - 1
    assert torch.equal(same.encode(x), sd_prior.encode(x))


def test_weights_are_loaded_safely():
    """No pickle loading and no remote code anywhere in the package."""
    for path in (ROOT / "dwgf").rglob("*.py"):
        text = path.read_text()
        for line in text.splitlines():
            if "torch.load(" in line:
                assert "weights_only=True" in line, (path, line)
        assert "trust_remote_code=True" not in text, path
    text = (ROOT / "dwgf/priors/folders.py").read_text()  # every diffusers component is loaded there
    assert "use_safetensors=True" in text


def test_a_tokenizer_that_asks_for_remote_code_is_refused_without_a_prompt(tmp_path):
    """Under a terminal (where transformers would ask "Do you wish to run the custom code? [y/N]")."""
    import pty
    import select

    from dwgf.testing import make_tiny_sd_prior

    prior = make_tiny_sd_prior(tmp_path / "sd")
    config = prior / "tokenizer" / "tokenizer_config.json"
    cfg = json.loads(config.read_text())
    cfg.update(tokenizer_class="EvilTokenizer", auto_map={"AutoTokenizer": ["evil.EvilTokenizer", None]})
    config.write_text(json.dumps(cfg))
    marker = tmp_path / "EVIL_RAN"
    (prior / "tokenizer" / "evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\nfrom transformers import CLIPTokenizer\n"
                                                 "class EvilTokenizer(CLIPTokenizer):\n    pass\n")
    sd = ROOT / "configs/sd21/ffhq_box_inpaint.yaml"
    args = [sys.executable, "-m", "dwgf", "predict", "--config", str(sd), "--model.prior.pretrained", str(prior),
            "--data.images", str(make_images(tmp_path / "in", count=1)), "--output", str(tmp_path / "o")]
    pid, fd = pty.fork()
    if pid == 0:  # the child: dwgf under a pseudo-terminal
        os.chdir(ROOT)
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.execv(sys.executable, args)
    text, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline and b"[y/N]" not in text:
        ready, _, _ = select.select([fd], [], [], 1)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            text += chunk
    prompted = b"[y/N]" in text
    if prompted:
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert not prompted, text.decode(errors="replace")[-500:]
    assert os.waitstatus_to_exitcode(status) == 2
    last = text.decode(errors="replace").strip().splitlines()[-1]
    assert last.startswith(f"dwgf: error: --model.prior.pretrained {str(prior)!r}: could not load tokenizer/") and "custom code" in last
    assert not marker.exists()
