"""Shared fixtures: tiny random priors written with ``save_pretrained``; nothing is downloaded."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import pytest  # noqa: E402

from dwgf.testing import make_images, make_tiny_sd_prior, make_tiny_unconditional_prior  # noqa: E402

# Tests run with torch's own default thread count, the one a `dwgf` process started by a user has, so
# that runs in this process and in subprocesses (tests/test_processes.py) give the same bits.


@pytest.fixture(scope="session")
def sd_path(tmp_path_factory):
    """A tiny Stable-Diffusion-layout folder (RGB 32x32, latents 4x16x16)."""
    return make_tiny_sd_prior(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def ldm_path(tmp_path_factory):
    """A tiny unconditional AutoencoderKL + UNet2DModel folder (grayscale 32x32)."""
    return make_tiny_unconditional_prior(tmp_path_factory.mktemp("tiny-ldm"))


@pytest.fixture(scope="session")
def sd_prior(sd_path):
    from dwgf.priors import StableDiffusionPrior

    return StableDiffusionPrior(str(sd_path))


@pytest.fixture(scope="session")
def ldm_prior(ldm_path):
    from dwgf.priors import UnconditionalLatentPrior

    return UnconditionalLatentPrior(str(ldm_path))


@pytest.fixture(scope="session")
def image_dir(tmp_path_factory):
    """Three RGB images of different sizes and aspect ratios."""
    return make_images(tmp_path_factory.mktemp("images"), count=3)


@pytest.fixture(scope="module")
def five_images(tmp_path_factory):
    """Five grayscale images of two sizes (the reliability tests' inputs)."""
    return make_images(tmp_path_factory.mktemp("five"), count=5, sizes=((32, 32), (40, 36)), mode="L")
