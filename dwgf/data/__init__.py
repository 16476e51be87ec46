"""Data: image folders to batches of measurements with per-item parameters and seeds."""

from dwgf.data.datamodule import MeasurementDataModule, item_seeds
from dwgf.data.images import list_images, load_image

__all__ = ["MeasurementDataModule", "item_seeds", "list_images", "load_image"]
