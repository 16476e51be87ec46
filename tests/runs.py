"""Helpers the CLI-level tests share: a tiny-prior dwgf predict run, one-line errors, an item's files and state."""

import json
import textwrap
from pathlib import Path

import pytest

from dwgf.cli import main
from dwgf.outputs import ITEM_MANIFEST

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"


NAMES = [f"img{i}" for i in range(5)]


def predict(ldm_path, images, out, *extra):
    main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(images),
          "--output", str(out), *map(str, extra)])


def item_files(out: Path, name: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / name).iterdir()) if p.name != "summary.png" and p.name != "metrics.json"}


def state(out: Path, name: str) -> str:

    return json.loads((out / name / ITEM_MANIFEST).read_text())["state"]


def mtimes(out: Path, name: str) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (out / name).iterdir()}


NAN_REGULARIZER = textwrap.dedent(
    """
    import torch
    from dwgf.regularizers import Regularizer

    class PoisonItem(Regularizer):
        space = "latent"

        def __init__(self, item: int = 1, at: int = 2):
            self.item, self.at = item, at

        def force(self, state):
            f = torch.zeros_like(state.z)
            if state.iteration == self.at and self.item < f.shape[0]:
                f[self.item] = float("nan")
            return f
    """
)


def one_line_error(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1]


def base(ldm_path, out):
    return ["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--output", str(out)]
