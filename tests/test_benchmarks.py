"""The benchmark harness: importable from anywhere without side effects, structured cache keys, and
every committed result table with the command that produced it."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.py") if p.stem != "__init__")


def test_every_benchmark_imports_from_any_folder_without_side_effects(tmp_path):
    code = "; ".join(f"import benchmarks.{name}" for name in SCRIPTS) + "; import sys; print(sys.argv)"
    out = subprocess.run([sys.executable, "-c", code, "x"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "['-c', 'x']"  # sys.argv untouched
    assert list(tmp_path.iterdir()) == []  # nothing written where it ran


def test_a_script_runs_from_another_folder(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks/mnist_tasks.py"), "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and "--split" in out.stdout, out.stderr[-2000:]


def test_the_run_cache_keys_are_structured(tmp_path):
    from benchmarks.harness import RunCache, RunKey

    cache = RunCache(tmp_path / "runs.json")
    a, b = RunKey("tune", "tune20", "PSLD", "sr4", "zeta=0.3,gamma=0.1"), RunKey("sweep", "report100", "DWGF", "sr4", "w=0.1", "K=500")
    cache.put(a, {"psnr_mean": 1.0})
    cache.put(b, {"psnr_mean": 2.0})
    assert cache.get(a) == {"psnr_mean": 1.0} and cache.get(b) == {"psnr_mean": 2.0}
    assert cache.get(RunKey("tune", "tune20", "PSLD", "sr4", "zeta=0.3")) is None
    stored = json.loads((tmp_path / "runs.json").read_text())["runs"]
    assert {"kind": "sweep", "split": "report100", "method": "DWGF", "task": "sr4", "label": "w=0.1", "knob": "K=500"} in [e["key"] for e in stored]
    assert a.folder() != b.folder() and a.folder().parent == b.folder().parent


def test_the_comparison_table_is_rebuilt_from_the_cache(tmp_path, monkeypatch):
    """quality.py table from the committed cache gives the committed table, without any run's image folders."""
    from benchmarks import quality
    from benchmarks.harness import RunCache

    shutil.copy(ROOT / "benchmarks/results/quality_runs.json", tmp_path / "quality_runs.json")
    monkeypatch.setattr(quality, "RESULTS", tmp_path)
    monkeypatch.setattr(quality, "CACHE", RunCache(tmp_path / "quality_runs.json"))
    monkeypatch.setattr("benchmarks.harness.OUTPUTS", tmp_path / "no-outputs")
    quality.main(["table"])
    assert (tmp_path / "quality.md").read_text() == (ROOT / "benchmarks/results/quality.md").read_text()


@pytest.mark.parametrize("table", sorted(p.name for p in (ROOT / "benchmarks/results").glob("*.md")))
def test_every_result_table_gives_its_command(table):
    text = (ROOT / "benchmarks/results" / table).read_text()
    assert re.search(r"`python benchmarks/\w+\.py[^`]*`", text), f"{table} does not say which command produced it"


@pytest.mark.parametrize("variant", ["KDE", "repulsion", "null-space repulsion", "Langevin", "KDE + Langevin"])
def test_every_diverse_variant_is_a_valid_predict_config(variant, capsys):
    """The command-line overrides of benchmarks/diverse.py's variants parse into the regularizers they name."""
    import yaml

    from benchmarks import diverse
    from benchmarks.harness import task_config
    from dwgf.cli import main

    for label in diverse.VARIANTS[variant]:
        with pytest.raises(SystemExit) as stop:
            main(["predict", "--config", str(task_config("box_inpaint")), *diverse.args_for(variant, label, "box_inpaint"),
                  "--print_config"])
        assert stop.value.code in (0, None)
        regs = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["regularizers"]
        names = [r["class_path"].split(".")[-1] for r in regs]
        assert names == {"KDE": ["KDEKLPrior"], "repulsion": ["KLPrior", "KernelRepulsion"], "null-space repulsion": ["KLPrior", "KernelRepulsion"],
                         "Langevin": ["KLPrior", "LangevinNoise"], "KDE + Langevin": ["KDEKLPrior", "LangevinNoise"]}[variant]
        assert regs[0]["init_args"]["weight"] == 0.25  # the task config's KL weight is kept


def test_diverse_choice_follows_the_issues_order():
    """Lowest CRPS among settings within 0.1 dB of plain DWGF's particle mean; else the best particle mean."""
    from benchmarks.diverse import choose

    plain = {"psnr_mean": 25.0}
    results = {"a": {"psnr_mean": 25.2, "crps": 0.02}, "b": {"psnr_mean": 24.95, "crps": 0.01}, "c": {"psnr_mean": 24.0, "crps": 0.001}}
    assert choose(results, plain) == "b"
    assert choose({"c": results["c"], "d": {"psnr_mean": 24.5, "crps": 0.5}}, plain) == "d"


def test_the_bed_reads_plain_dwgf_settings_from_posterior_md():
    from benchmarks.diverse import plain_settings

    settings = plain_settings()
    assert {(d, dy) for d in (8, 80, 800) for dy in (1, 2)} <= set(settings)
    assert all(w > 0 and lr > 0 for w, lr in settings.values())
