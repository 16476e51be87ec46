"""The nonlinear MNIST tasks run through ``dwgf predict`` as their configs are shipped (a few iterations)."""

import csv
import shutil
from pathlib import Path

import pytest

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]
ITEM_FILES = {"particle_0.png", "particle_1.png", "mean.png", "std.png", "measurement.png", "ground_truth.png", "summary.png", "metrics.json"}


@pytest.fixture(scope="module")
def two_digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    for path in sorted((ROOT / "examples" / "mnist").glob("*.png"))[:2]:
        shutil.copy(path, folder / path.name)
    return folder


def _predict(config: list[str], images: Path, out: Path, *extra: str) -> list[dict]:
    main(["predict", *(a for c in config for a in ("--config", c)), "--data.images", str(images), "--output", str(out),
          "--model.num_steps", "3", "--model.num_particles", "2", "--trainer.logger", "false", *extra])
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("task", ["jpeg", "saturation", "phase_retrieval"])
def test_a_nonlinear_config_writes_the_usual_files(task, two_digits, tmp_path, monkeypatch):
    from dwgf.operators import PhaseRetrieval

    aligned = []  # phase retrieval's metrics are taken up to its symmetries: the writer calls the operator's align
    original = PhaseRetrieval.align
    monkeypatch.setattr(PhaseRetrieval, "align", lambda self, e, t: aligned.append(e.shape) or original(self, e, t))
    rows = _predict([str(ROOT / "configs" / "mnist" / f"{task}.yaml")], two_digits, tmp_path / "out")
    assert aligned == ([(2, 1, 32, 32)] * 2 if task == "phase_retrieval" else [])
    assert [r["name"] for r in rows] == sorted(p.stem for p in two_digits.glob("*.png"))
    for row in rows:
        assert ITEM_FILES <= {p.name for p in (tmp_path / "out" / row["name"]).iterdir()}
        assert float(row["psnr_mean"]) > 5


def test_poisson_noise_and_its_likelihood_run_from_a_config(two_digits, tmp_path):
    overlay = tmp_path / "poisson.yaml"
    overlay.write_text(
        "model:\n  init_args:\n    likelihood: {class_path: dwgf.likelihoods.PoissonLikelihood}\n"
        "data:\n  init_args:\n    operator:\n      class_path: dwgf.operators.PoissonNoise\n      init_args:\n"
        "        operator: {class_path: dwgf.operators.GaussianBlur, init_args: {kernel_size: 5, sigma: 1.0}}\n        rate: 40\n")
    rows = _predict([str(ROOT / "configs" / "mnist" / "gaussian_deblur.yaml"), str(overlay)], two_digits, tmp_path / "out")
    assert len(rows) == 2 and all(float(r["psnr_mean"]) > 5 for r in rows)
    config = (tmp_path / "out" / "config.yaml").read_text()
    assert "PoissonNoise" in config and "rate: 40" in config
