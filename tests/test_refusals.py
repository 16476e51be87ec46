"""A refused run leaves nothing: whatever refuses it (an option's value, the accelerator, the inputs, the output folder,
a calibration file), the output folder is as it was (absent stays absent; a user's folder byte for byte, no lock file,
no TensorBoard folder) and stderr is the one error line (Lightning's start-up lines are not printed before it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dwgf.cli import main
from tests.runs import LDM_CONFIG


def _snapshot(folder: Path) -> dict[str, bytes] | None:
    """Every file under ``folder`` (relative path -> bytes), folders as ``b"<dir>"``; ``None`` if it does not exist."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): (b"<dir>" if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def _user_folder(out: Path) -> None:
    """An output folder holding a user's own files, among them one named like a run file dwgf writes."""
    (out / "notes").mkdir(parents=True)
    (out / "notes" / "todo.txt").write_text("mine\n")
    (out / "metrics.csv").write_text("my own table\n")


CASES = {
    "num_particles 0": (["--model.num_particles", "0"], None, "--model.num_particles must be >= 1, got 0"),
    "accelerator gpu without one": (["--trainer.accelerator", "gpu"], None, "--trainer.accelerator gpu: no GPU is available here"),
    "a file as --data.images": (["--data.images", "FILE"], None, "not a folder"),
    "a bad setting": (["--model.decoder_noise", "-1"], None, "--model.decoder_noise must be >= 0, got -1.0"),
    "a calibration file that is not one": (["--model.calibration", "BADCAL"], None, "not a dwgf calibration file"),
    "a missing calibration file": (["--model.calibration", "NOCAL"], None, "no such file"),
    "an output folder with the user's files": ([], _user_folder, "metrics.csv exists and was not written by dwgf"),
    "the user's folder and a bad setting": (["--model.num_steps", "0"], _user_folder, "--model.num_steps must be >= 1, got 0"),
    "a nested output folder that does not exist": (["--model.num_particles", "0", "--output", "NESTED"], None, "--model.num_particles"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_refused_run_leaves_the_output_folder_as_it_was_and_prints_one_line(name, ldm_path, image_dir, tmp_path, capsys):
    args, prepare, message = CASES[name]
    out = tmp_path / "out"
    if prepare is not None:
        prepare(out)
    (tmp_path / "bad.json").write_text("{}")
    replace = {"FILE": str(next(image_dir.iterdir())), "BADCAL": str(tmp_path / "bad.json"), "NOCAL": str(tmp_path / "none.json"),
               "NESTED": str(tmp_path / "a" / "b" / "out")}
    args = [replace.get(a, a) for a in args]
    before = _snapshot(out)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(LDM_CONFIG), "--model.prior.pretrained", str(ldm_path), "--data.images", str(image_dir),
              "--output", str(out), *args])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dwgf: error: ") and message in err, err
    assert _snapshot(out) == before
    assert not (tmp_path / "a").exists()
