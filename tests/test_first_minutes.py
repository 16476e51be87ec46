"""No silent surprises for a new user: each case that used to pass without a word now says so."""

import re
from pathlib import Path

import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from dwgf.cli import main
from dwgf.testing import make_images
from dwgf.rendering import wrap_name

ROOT = Path(__file__).resolve().parents[1]
LDM_CONFIG = ROOT / "tests/conf/ldm_sr.yaml"


def base(ldm_path, out):
    return ["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--output", str(out)]


def test_measured_inpainting_without_masks_is_an_error_naming_the_option(ldm_path, tmp_path, capsys):
    meas = tmp_path / "meas"
    meas.mkdir()
    Image.new("L", (32, 32), 0).save(meas / "photo.png")
    with pytest.raises(SystemExit) as exc:
        main([*base(ldm_path, tmp_path / "o"), "--data.measurements", str(meas), "--data.operator", "BoxInpainting",
              "--data.operator.size", "[8, 8]"])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "dwgf: error: --data.measurements with BoxInpainting need masks (a folder: one mask per measurement, same file name, "
        "white = observed, black = missing): without them the missing region is unknown")
    assert not (tmp_path / "o" / "photo").exists()


def test_inputs_far_from_the_prior_get_one_warning_line(ldm_path, tmp_path, capsys):
    images = make_images(tmp_path / "in", count=2, sizes=((32, 32),), mode="L")
    rgb = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(images / "photo.png")  # a colour photograph, 8x the prior's 32 px
    Image.fromarray(rgb[:40, :40]).save(images / "patch.png")  # colour, near the prior's size

    def to_terminal(message, category, filename, lineno, file=None, line=None):  # as Python shows a warning, not as pytest records it
        sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = to_terminal
        main([*base(ldm_path, tmp_path / "o"), "--data.images", str(images)])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "far from what the prior models" in ln]
    assert lines == [f"dwgf: warning: --data.images {str(images)!r}: 2 of 4 images are far from what the prior models: 2 colour images converted "
                     "to grayscale for the grayscale prior; 1 image at least 4x the prior's 32x32 resolution shrunk to it; "
                     "expect poor results (is this the right prior?)"]


def test_a_resumed_run_says_what_it_skipped_and_leaves_no_empty_log(ldm_path, tmp_path, capfd):
    images = make_images(tmp_path / "in", count=3, sizes=((32, 32),), mode="L")
    out = tmp_path / "o"
    main([*base(ldm_path, out), "--data.images", str(images)])
    capfd.readouterr()
    main([*base(ldm_path, out), "--data.images", str(images)])
    err = capfd.readouterr().err
    assert "predict: 3 of 3 items already complete, skipped" in err.splitlines()
    assert "Total length of `DataLoader`" not in err and "0 items" not in err
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["version_0"]
    (images / "img3.png").write_bytes((images / "img0.png").read_bytes())  # one new item: 3 of 4 skipped, one version logged
    main([*base(ldm_path, out), "--data.images", str(images)])
    assert "predict: 3 of 4 items already complete, skipped" in capfd.readouterr().err.splitlines()
    assert sorted(p.name for p in (out / "tensorboard").iterdir()) == ["version_0", "version_1"]


def test_no_reference_to_a_document_the_repository_lacks():
    texts = [*ROOT.glob("dwgf/**/*.py"), *ROOT.glob("configs/**/*.yaml"), *ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    for path in texts:
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", path.read_text(encoding="utf-8")):
            assert (ROOT / name).is_file() or (path.parent / name).is_file(), f"{path} cites {name}, which is not in the repository"


def test_contact_sheet_names_break_between_words():
    assert wrap_name("digit0_mnist_0475", 14) == ["digit0_mnist_", "0475"]
    assert wrap_name("IMG 2024 01 01 holiday", 14) == ["IMG 2024 01", "01 holiday"]
    assert all(len(line) <= 14 for line in wrap_name("averyveryverylongnamewithoutbreaks", 14))
