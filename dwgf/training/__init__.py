"""Training small latent diffusion priors with ``dwgf fit`` (the MNIST prior that ships with dwgf)."""

from dwgf.training.autoencoder import AutoencoderTraining
from dwgf.training.diffusion import LatentDiffusionTraining
from dwgf.training.mnist import MNISTDataModule, mnist_split

__all__ = ["AutoencoderTraining", "LatentDiffusionTraining", "MNISTDataModule", "mnist_split"]
