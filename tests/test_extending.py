"""CONTRIBUTING.md's worked examples: a user's own operator, regularizer and schedule, through dwgf predict."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples/extending"


@pytest.fixture
def user_module(monkeypatch):
    monkeypatch.syspath_prepend(str(EXAMPLE))  # as PYTHONPATH=examples/extending does
    import my_extensions

    return my_extensions


def test_contributing_shows_the_example_code_as_it_is():
    guide = (ROOT / "CONTRIBUTING.md").read_text()
    source = (EXAMPLE / "my_extensions.py").read_text()
    for part in ("operator", "regularizer", "schedule"):
        snippet = re.search(rf"# --8<-- \[start:{part}\]\n(.*?)# --8<-- \[end:{part}\]", source, re.S).group(1)
        assert snippet.strip() in guide, f"CONTRIBUTING.md's {part} example differs from examples/extending/my_extensions.py"


def test_user_extensions_run_through_dwgf_predict(user_module, ldm_path, tmp_path):
    images = tmp_path / "digits"
    images.mkdir()
    for name in ("digit0_mnist_0475.png", "digit1_mnist_0975.png"):
        (images / name).write_bytes((ROOT / "examples/mnist" / name).read_bytes())
    config = yaml.safe_load((EXAMPLE / "scanlines.yaml").read_text())
    config["model"]["init_args"]["prior"]["init_args"]["pretrained"] = str(ldm_path)  # a tiny prior for the test
    config["model"]["init_args"]["num_steps"] = 4
    config["model"]["init_args"]["step_size"]["init_args"]["every"] = 2
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "o"
    main(["predict", "--config", str(path), "--data.images", str(images), "--output", str(out)])
    for name in ("digit0_mnist_0475", "digit1_mnist_0975"):
        assert json.loads((out / name / ".dwgf-item.json").read_text())["state"] == "complete"
        meas = np.asarray(Image.open(out / name / "measurement.png"), dtype=float)
        # the scanline operator was used: every 3rd row is lost (0 in [-1, 1], mid-gray in the PNG)
        dropped = np.where(np.abs(meas - 127.5).max(1) < 2)[0]
        assert len(dropped) in (10, 11) and len(set(dropped % 3)) == 1, dropped
    resolved = (out / "config.yaml").read_text()
    assert "my_extensions.ScanlineDropout" in resolved and "my_extensions.TotalVariation" in resolved and "my_extensions.StepDecay" in resolved


def test_example_classes_do_what_they_say(user_module):
    op = user_module.ScanlineDropout(period=3)
    p = op.sample_params((1, 6, 4), torch.Generator().manual_seed(0))
    rows = p["mask"][0, :, 0]
    assert rows.sum() == 4 and torch.equal(rows, rows.roll(3))
    x, y = torch.randn(1, 1, 6, 4), torch.randn(1, 1, 6, 4)
    pb = {k: v[None] for k, v in p.items()}
    assert torch.allclose((op(x, pb) * y).sum(), (x * op.adjoint(y, pb)).sum())  # the derived adjoint
    sched = user_module.StepDecay(lr=0.4, factor=0.5, every=2)
    assert [sched(k, 6) for k in range(6)] == [0.4, 0.4, 0.2, 0.2, 0.1, 0.1]
    with pytest.raises(Exception, match="period must be >= 2"):
        user_module.ScanlineDropout(period=1)
