"""``--model.prior.torch_dtype``: weights loaded in bfloat16 / float16 for every family; float32 in and out."""

import pytest
import torch

from dwgf import DWGF
from dwgf.cli import main
from dwgf.operators import BoxInpainting
from dwgf.priors import load_prior
from dwgf.testing import make_tiny_flux_prior, make_tiny_sd3_prior, make_tiny_sdxl_prior

MAKERS = {"sdxl": make_tiny_sdxl_prior, "sd3": make_tiny_sd3_prior, "flux": make_tiny_flux_prior}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, sd_path, ldm_path):
    found = {"sd": sd_path, "ldm": ldm_path}
    for name, maker in MAKERS.items():
        found[name] = maker(tmp_path_factory.mktemp(name))
    return found


@pytest.mark.parametrize("family, dtype", [("sd", "bfloat16"), ("sd", "float16"), ("sdxl", "bfloat16"), ("sd3", "float16"),
                                           ("flux", "bfloat16"), ("ldm", "float16")])
def test_every_family_loads_and_solves_in_a_low_precision(folders, family, dtype):
    prior = load_prior(str(folders[family]), torch_dtype=dtype)
    wanted = getattr(torch, dtype)
    network = prior.denoiser.network
    assert {p.dtype for p in network.parameters()} == {wanted}
    assert {p.dtype for p in prior.vae.parameters()} == {wanted}
    assert prior.denoiser_dtype == wanted and prior.autoencoder_dtype == wanted
    op = BoxInpainting(size=[8, 8])
    y, params = op.measure(torch.zeros(1, prior.image_channels, prior.image_size, prior.image_size), seeds=[0])
    reference = DWGF(load_prior(str(folders[family])), num_steps=2, num_particles=2).set_operator(op).solve(y, params, [0])
    out = DWGF(prior, num_steps=2, num_particles=2).set_operator(op).solve(y, params, [0])
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    # the same particles up to the low precision's rounding, amplified by two steps of a random network
    assert (out - reference).abs().mean() < 0.1


def test_a_bad_torch_dtype_is_one_line(tmp_path, capsys, monkeypatch):
    from pathlib import Path

    monkeypatch.chdir(Path(__file__).resolve().parents[1])
    with pytest.raises(SystemExit) as exit_:
        main(["predict", "--config", "configs/quickstart.yaml", "--output", str(tmp_path / "out"), "--model.prior.torch_dtype", "int8"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "torch_dtype" in err and "bfloat16" in err, err
