"""The Python API as the documentation shows it (docs/api/index.md): the example block runs as written."""

import contextlib
import io
import re
from pathlib import Path

import torch

import dwgf

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    text = (ROOT / "docs" / "api" / "index.md").read_text()
    marker = text.index("<!-- python-api: executed by tests/test_api.py -->")
    return re.search(r"```python\n(.*?)```", text[marker:], re.S).group(1)


def test_readme_python_api_example_runs_and_beats_the_masked_image(monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code = readme_example()
    assert "dwgf.DWGF(" in code and "op.measure(" in code and "solver.solve(" in code
    out, scope = io.StringIO(), {}
    with contextlib.redirect_stdout(out):
        exec(compile(code, "docs/api/index.md", "exec"), scope)  # noqa: S102 - our own documentation
    assert scope["particles"].shape == (1, 4, 1, 32, 32)
    masked, ours = map(float, re.fullmatch(r"PSNR: masked image ([\d.]+) dB, DWGF mean ([\d.]+) dB\n", out.getvalue()).groups())
    assert ours > masked + 5, out.getvalue()


def test_measure_matches_the_data_module_and_is_per_item():
    op = dwgf.BoxInpainting(size=[12, 12], sigma_y=0.01)
    x = torch.rand(3, 1, 32, 32) * 2 - 1
    y, params = op.measure(x, seeds=[5, 6, 7])
    y1, p1 = op.measure(x[1:2], seeds=[6])
    assert torch.equal(y[1:2], y1) and torch.equal(params["mask"][1:2], p1["mask"])  # independent of the batch
    observed = params["mask"].bool()
    assert (y - x)[observed].abs().max() < 0.06 and not torch.equal(params["mask"][0], params["mask"][1])


def test_top_level_names_cover_a_notebook_session():
    for name in ("DWGF", "LatentDPS", "PSLD", "DecoderInversion", "UnconditionalLatentPrior", "StableDiffusionPrior",
                 "BoxInpainting", "SuperResolution", "GaussianBlur", "KLPrior", "EncoderConsistency", "ConstantStepSize",
                 "DescendingTimesteps", "load_image", "dwgf_flow"):
        assert hasattr(dwgf, name), name
    assert set(dwgf.__all__) <= set(dir(dwgf))
