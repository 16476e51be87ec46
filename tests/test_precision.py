"""Mixed precision on CPU: the quickstart under ``bf16-mixed`` / ``16-mixed`` against float32.

Under mixed precision the UNet and the flow's decoder pass (decoder forward, VJP, encoder term) run in
the low precision; the final images, the noise schedule, the data term and Adam stay in float32
(tests/test_flow.py, tests/test_priors.py and tests/test_decoder_pass.py check where autocast is on).
These tests check the consequence users care about: the reconstructions' PSNR barely moves.
On CPU, Lightning runs ``16-mixed`` as ``bf16-mixed`` (it warns: float16 autocast is a GPU feature).
"""

import csv
from pathlib import Path

import pytest

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]


def quickstart_psnr(out: Path, precision: str, *extra: str, digits: int = 8) -> float:
    main(["predict", "--config", "configs/quickstart.yaml", "--output", str(out), "--trainer.precision", precision,
          "--trainer.logger", "false", *extra])
    with open(out / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == digits
    return sum(float(r["psnr_mean"]) for r in rows) / len(rows)


def masked_psnr(out: Path) -> float:
    """The PSNR of the measurement itself (the image with its box), averaged over the run's items."""
    import numpy as np
    from PIL import Image

    values = []
    for truth in out.glob("*/ground_truth.png"):
        a = np.asarray(Image.open(truth), dtype=np.float64) / 255
        b = np.asarray(Image.open(truth.with_name("measurement.png")), dtype=np.float64) / 255
        values.append(10 * np.log10(1 / np.mean((a - b) ** 2)))
    return float(np.mean(values))


def check_within(tmp_path, precisions, extra, tolerance=0.5, digits=8):
    psnr = {p: quickstart_psnr(tmp_path / p, p, *extra, digits=digits) for p in ("32-true", *precisions)}
    # the reconstructions are good (well above the masked image; not two equally bad runs) and the low precision stays close
    assert psnr["32-true"] > masked_psnr(tmp_path / "32-true") + 3, psnr
    for p in precisions:
        assert abs(psnr[p] - psnr["32-true"]) <= tolerance, psnr


@pytest.mark.filterwarnings("ignore:.*16-mixed.*:UserWarning")
def test_mixed_precision_keeps_the_quickstart_psnr_short_run(tmp_path, monkeypatch):
    """The quickstart's 8 digits at 40 iterations (a fifth of its budget), float32 vs bf16-mixed."""
    monkeypatch.chdir(ROOT)
    check_within(tmp_path, ["bf16-mixed"], ["--model.num_steps", "40"])


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*16-mixed.*:UserWarning")
def test_mixed_precision_keeps_the_quickstart_psnr(tmp_path, monkeypatch):
    """The quickstart as shipped (200 iterations) under float32, bf16-mixed and 16-mixed."""
    monkeypatch.chdir(ROOT)
    check_within(tmp_path, ["bf16-mixed", "16-mixed"], [])
