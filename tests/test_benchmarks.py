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
    monkeypatch.setattr(quality, "CHARTS", tmp_path)  # never the committed figures
    quality.main(["table"])
    assert (tmp_path / "quality.md").read_text() == (ROOT / "benchmarks/results/quality.md").read_text()
    assert (tmp_path / "budget_box_inpaint.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # the budget chart, drawn too


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


def test_the_bed_never_chooses_a_setting_that_diverged():
    from benchmarks.posterior import best

    assert best({"a": 2.0, "b": float("nan"), "c": 1.5}) == "c"
    assert best({"b": float("nan"), "a": 9.0}) == "a"
    assert best({"b": float("nan")}) == "b"


def test_the_bed_reads_plain_dwgf_settings_from_posterior_json():
    from benchmarks.diverse import plain_settings

    settings = plain_settings()
    assert {(d, dy) for d in (8, 80, 800) for dy in (1, 2)} <= set(settings)
    assert all(w > 0 and lr > 0 for w, lr in settings.values())


def test_flow_speed_family_section_keeps_other_rows_and_the_rest_of_the_file(tmp_path, monkeypatch):
    import argparse

    import torch

    from benchmarks import flow_speed

    assert flow_speed.family_spec("sdxl:1024:1") == ("sdxl", 1024, [1])
    assert flow_speed.family_spec("sd3:512:1,2") == ("sd3", 512, [1, 2]) and flow_speed.family_spec("flux:1024:1")[0] == "flux"
    for bad in ("sd4:512:1", "sdxl:1001:1", "sdxl"):
        with pytest.raises(argparse.ArgumentTypeError):
            flow_speed.family_spec(bad)
    out = tmp_path / "flow_speed.md"
    out.write_text("# DWGF flow speed\n\nearlier tables\n")
    old = tmp_path / "old.md"  # a file with the section under its former title: renamed, its rows kept
    old.write_text(f"# t\n\n{flow_speed.OLD_FAMILY_TITLES[0]}\n\n| prior | x |\n|---|\n| SDXL layout 1024px, guidance 3 | 1 |\n")
    monkeypatch.setattr(sys, "argv", ["flow_speed.py", "--family", "sd3:512:1"])
    flow_speed.write_family_section(argparse.Namespace(output=str(old)), torch.device("cpu"), [])
    renamed = old.read_text()
    assert flow_speed.OLD_FAMILY_TITLES[0] not in renamed and renamed.count(flow_speed.FAMILY_TITLE) == 1
    assert "| SDXL layout 1024px, guidance 3 | 1 |" in renamed
    args = argparse.Namespace(output=str(out))

    def row(label, ms):
        return dict(prior=label, bn=1, b=1, n=1, encoder=False, iteration=ms / 1e3, floor=ms / 1e3, parts={"unet": ms / 2e3},
                    ratio=1.0, quartiles=(1.0, 1.0), pairs=2, images_per_min=1.0, usual_k=998, peak=1.0, peak_total=2.0)

    monkeypatch.setattr(sys, "argv", ["flow_speed.py", "--family", "sd15:512:1"])
    first = [row("SD 1.5 layout 512px, guidance 1", 100), row("SDXL layout 512px, guidance 1", 300)]
    flow_speed.write_family_section(args, torch.device("cpu"), first)
    monkeypatch.setattr(sys, "argv", ["flow_speed.py", "--family", "sd15:512:1", "--guidance", "1"])
    flow_speed.write_family_section(args, torch.device("cpu"), [row("SD 1.5 layout 512px, guidance 1", 200)])
    text = out.read_text()
    assert text.startswith("# DWGF flow speed\n\nearlier tables\n") and text.count(flow_speed.FAMILY_TITLE) == 1
    rows = [line for line in text.splitlines() if line.startswith("| SD")]
    assert rows[0].startswith("| SDXL layout 512px, guidance 1 | 1 (1x1) | no | 300.0")  # kept from the first run
    assert rows[1].startswith("| SD 1.5 layout 512px, guidance 1 | 1 (1x1) | no | 200.0") and len(rows) == 2  # replaced
    assert text.count("`python benchmarks/flow_speed.py --family sd15:512:1") == 2  # both commands stay


def test_posterior_md_is_written_from_json_with_the_samplers_rows_in_their_cells(tmp_path):
    """posterior.md is rendered from posterior.json and sampler_rows.json (no script edits another's Markdown): the
    sampler's row goes last in its cell, its settings in their own table; rendering twice gives the same file; the
    committed table is what its JSON renders."""
    from benchmarks.harness import RESULTS, save_json
    from benchmarks.posterior import METHODS, write_markdown

    methods = [m for m in METHODS if m != "DWGF N=1"]
    row = lambda d, dy, m, sw: {"d": d, "dy": dy, "method": m, "sw": sw, "coverage": "1", "mean_error": "0", "seconds": "-"}  # noqa: E731
    save_json(tmp_path / "posterior.json", {
        "command": "cmd", "date": "today", "seconds": 1, "threads": 2, "problems": 3, "samples": 10, "steps": 5, "schedule": "linear",
        "checks": [{"d": 8, "schedule": "linear", "abar_999": "0", "sw": "1", "floor": "1", "coverage": "1"}],
        "rows": [row(8, 1, "exact", "0.1"), row(8, 1, "PSLD", "0.7"), row(8, 2, "exact", "0.2"), row(8, 2, "PSLD", "0.9")],
        "settings": [{"d": 8, "dy": 1, **{m: "w" for m in methods}}], "plots": ["a.png"]})
    out = tmp_path / "posterior.md"
    write_markdown(out)
    assert "DWGF sampler" not in out.read_text()
    sampler_row = {**row(8, 1, "DWGF sampler", "0.4"), "setting": "anneal=10.0"}
    save_json(tmp_path / "sampler_rows.json", {"command": "rows", "date": "today", "rows": [sampler_row]})
    write_markdown(out)
    text = out.read_text()
    lines = [line for line in text.splitlines() if line.startswith("| 8 | ")]
    assert [line.split(" | ")[2] for line in lines[1:6]] == ["exact", "PSLD", "DWGF sampler", "exact", "PSLD"]
    assert text.count("DWGF sampler's settings") == 1 and "| 8 | 1 | anneal=10.0 |" in text
    assert text.index("anneal=10.0") < text.index("Plots (d_y = 1")
    write_markdown(out)
    assert out.read_text() == text
    committed = (RESULTS / "posterior.md").read_text()
    import shutil

    (tmp_path / "c").mkdir()
    for name in ("posterior.json", "sampler_rows.json"):
        shutil.copy(RESULTS / name, tmp_path / "c" / name)
    write_markdown(tmp_path / "c" / "posterior.md")
    assert (tmp_path / "c" / "posterior.md").read_text() == committed


def test_what_one_benchmark_reads_of_another_is_json(tmp_path, monkeypatch):
    """The readers of other scripts' results (diverse.py's plain settings, sampler.py's plain rows, posterior.md's
    rendering) open no Markdown file."""
    from pathlib import Path

    from benchmarks.diverse import plain_settings
    from benchmarks.harness import RESULTS
    from benchmarks.posterior import write_markdown
    from benchmarks.sampler import plain_rows

    read = []
    original = Path.read_text

    def spy(self, *args, **kwargs):
        read.append(self.name)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", spy)
    assert plain_settings() and plain_rows()
    import shutil

    for name in ("posterior.json", "sampler_rows.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    write_markdown(tmp_path / "posterior.md")
    assert read and not [name for name in read if name.endswith(".md")], read


def test_sampler_reads_plain_dwgfs_rows_of_the_diverse_table():
    from benchmarks.sampler import plain_rows

    rows = {r["task"]: r for r in plain_rows()}
    assert set(rows) >= {"box_inpaint", "sr4"}
    assert all(float(rows[t]["crps"]) > 0 and 0 < float(rows[t]["cov90"]) < 1 for t in ("box_inpaint", "sr4"))


def test_flow_speed_grid_writes_the_table_and_the_picture(tmp_path, monkeypatch, sd_path):
    """``--grid`` on a tiny layout (the published ones are for a GPU): a row per N and flow decoder, seconds per image
    at the config's iterations, peak memory, and a PNG of one against the other."""
    import argparse

    import torch
    from PIL import Image

    from benchmarks import flow_speed
    from dwgf.priors import StableDiffusionPrior
    from dwgf.testing import make_tiny_flow_decoder

    assert flow_speed.grid_spec("sdxl:1024") == ("sdxl", 1024)
    for bad in ("sdxl", "sd9:512", "sd15:500"):
        with pytest.raises(argparse.ArgumentTypeError):
            flow_speed.grid_spec(bad)
    assert flow_speed.config_iterations("configs/sd21/ffhq_box_inpaint.yaml") == 998
    tiny = make_tiny_flow_decoder(tmp_path / "taesd")
    from diffusers import AutoencoderTiny

    monkeypatch.setattr(flow_speed, "taesd_layout", lambda channels: AutoencoderTiny.from_pretrained(tiny))
    monkeypatch.setitem(flow_speed.GRID_FAMILIES, "tiny", ("tiny SD", lambda res: StableDiffusionPrior(str(sd_path)),
                                                          "configs/sd15/box_inpaint.yaml"))
    rows = flow_speed.measure_grid([("tiny", 32)], [1, 2], True, torch.device("cpu"), None, torch.float32, 2, 1, None, "cpu")
    assert [(r["n"], r["tiny"]) for r in rows] == [(1, False), (2, False), (1, True), (2, True)]
    assert all(r["per_image"] == pytest.approx(r["iteration"] * 998) and r["peak"] >= 0 for r in rows)
    args = argparse.Namespace(output=str(tmp_path / "grid.md"), plot=str(tmp_path / "grid.png"), precision="32", torch_dtype="float32",
                              decoder_chunk=None, generator="cpu")
    monkeypatch.setattr(sys, "argv", ["flow_speed.py", "--grid", "tiny:32"])
    flow_speed.write_grid(args, torch.device("cpu"), rows + [dict(family="tiny SD", res=64, n=8, tiny=False, k=998, weights=0.1, oom=True)])
    text = (tmp_path / "grid.md").read_text()
    assert text.count("| tiny SD | 32 |") == 4 and "| tiny SD | 64 | 8 | - | out of memory |" in text
    assert "`python benchmarks/flow_speed.py --grid tiny:32`" in text
    assert Image.open(tmp_path / "grid.png").size == (900, 600)


def test_posterior_methods_are_added_to_the_json_in_their_cells_and_the_rest_is_kept(tmp_path, monkeypatch):
    """``posterior.py --methods SMC`` tunes and runs only SMC and puts its rows after each cell's rows (replacing
    an earlier SMC row), its setting in the cell's settings, every other row kept."""
    import argparse
    import shutil

    import benchmarks.posterior as bp
    from benchmarks.harness import RESULTS, load_json

    for name in ("posterior.json", "sampler_rows.json"):
        shutil.copy(RESULTS / name, tmp_path / name)
    monkeypatch.setattr(bp, "tune", lambda d, dy, problems, count, methods: {"SMC": f"N=8,g={d}"})
    monkeypatch.setattr(bp, "run", lambda d, dy, problems, count, chosen, plot, methods: {
        "exact": [{"sw": 0.0, "coverage": 1.0, "mean_error": 0.0, "seconds": 0.0}],
        "SMC": [{"sw": 0.5, "coverage": 0.9, "mean_error": 0.1, "seconds": 1.0}]})
    args = argparse.Namespace(output=str(tmp_path / "posterior.md"), methods=["SMC"], dims=[8], dys=[1, 2], tune_problems=1,
                              tune_samples=10, problems=1, samples=10)
    before = load_json(tmp_path / "posterior.json")
    bp.add_methods(args, "cmd")
    bp.add_methods(args, "cmd")  # a second run replaces its rows
    after = load_json(tmp_path / "posterior.json")
    assert [r for r in after["rows"] if r["method"] != "SMC"] == [r for r in before["rows"] if r["method"] != "SMC"]
    smc = [(r["d"], r["dy"], r["sw"]) for r in after["rows"] if r["method"] == "SMC" and r["d"] == 8 and r["dy"] in (1, 2)]
    assert smc == [(8, 1, "0.500"), (8, 2, "0.500")]  # one row per cell, replaced
    methods_of_cell = [r["method"] for r in after["rows"] if (r["d"], r["dy"]) == (8, 1)]
    assert methods_of_cell[-1] == "SMC"
    assert {c["SMC"] for c in after["settings"] if c["d"] == 8 and c["dy"] in (1, 2)} == {"N=8,g=8"}
    text = (tmp_path / "posterior.md").read_text()
    assert "| 8 | 1 | SMC | 0.500 |" in text and "| SMC |" in text.split("Tuned settings")[1]


def test_smc_study_keeps_earlier_rows_and_replaces_the_ones_it_repeats(tmp_path, monkeypatch):
    """``smc.py study --anneal 1`` adds its rows to ``smc_study.json``: rows of the first run (no ``anneal``: 0) stay,
    a row with the same (d, d_y, anneal, N, guidance, weights, moves) is replaced, and the table shows the anneal and
    moves columns; ``--moves 2`` adds resample-move rows (weights only) beside them."""
    import argparse
    import json

    import torch

    import benchmarks.smc as bs

    monkeypatch.setattr(bs, "RESULTS", tmp_path)
    earlier = {"d": 8, "dy": 1, "n": 8, "guidance": 1.0, "weights": True, "sw": "9.000", "coverage": "0.500", "mean_error": "1.000",
               "seconds": "1.000", "ess": "0.500", "floor": "0.100"}
    (tmp_path / "smc_study.json").write_text(json.dumps({"rows": [earlier]}))
    monkeypatch.setattr(bs, "samples_of", lambda solver, prob, count, seed: (torch.zeros(count, 8, dtype=torch.float64), 0.5))
    monkeypatch.setattr(bs, "evaluate", lambda s, prob, ex, dirs: {"sw": 0.25, "coverage": 1.0, "mean_error": 0.0})
    built = []
    monkeypatch.setattr(bs, "smc_solver", lambda prior, n, g, w, ess, anneal, moves, size, tempering=0.0:
                        built.append((w, moves, size) if not tempering else (w, moves, size, tempering))
                        or ess.extend([0.5, 0.25]) or None)
    args = argparse.Namespace(dims=[8], dys=[1], ns=[8], guidance=[1.0], anneal=[1.0], problems=2, samples=10, moves=[0],
                              move_sizes=[0.05], tempering=[0.0])
    bs.study(args, "python benchmarks/smc.py study --anneal 1")
    bs.study(args, "python benchmarks/smc.py study --anneal 1")  # a second run replaces its own rows
    rows = json.loads((tmp_path / "smc_study.json").read_text())["rows"]
    assert [(r["anneal"], r["weights"], r["sw"]) for r in rows] == [(0.0, True, "9.000"), (1.0, True, "0.250 ± 0.000"),
                                                                    (1.0, False, "0.250 ± 0.000")]
    assert rows[1]["min_ess"] == "0.250" and rows[2]["min_ess"] == "-"
    text = (tmp_path / "smc_study.md").read_text()
    assert "| 8 | 1 | 0 | 8 | 1 | yes | - | - | 9.000 |" in text and "| 8 | 1 | 1 | 8 | 1 | yes | - | - | 0.250 ± 0.000 |" in text
    built.clear()
    bs.study(argparse.Namespace(**{**vars(args), "moves": [2], "move_sizes": [0.05, 0.2]}), "python benchmarks/smc.py study --moves 2")
    assert sorted(set(built)) == [(True, 2, 0.05), (True, 2, 0.2)]
    rows = json.loads((tmp_path / "smc_study.json").read_text())["rows"]
    assert [(r["weights"], r["moves"], r["move_size"]) for r in rows] == [(True, 0, 0.0), (True, 0, 0.0), (True, 2, 0.05), (True, 2, 0.2),
                                                                          (False, 0, 0.0)]
    assert "| 8 | 1 | 1 | 8 | 1 | yes | 2 x 0.2 | - | 0.250 ± 0.000 |" in (tmp_path / "smc_study.md").read_text()
    built.clear()  # adaptive tempering: weighted rows of their own, beside the untempered ones
    bs.study(argparse.Namespace(**{**vars(args), "tempering": [0.0, 0.5]}), "python benchmarks/smc.py study --tempering 0 0.5")
    assert built.count((True, 0, 0.0, 0.5)) == 2 and built.count((False, 0, 0.0)) == 2
    assert "| 8 | 1 | 1 | 8 | 1 | yes | - | 0.5 | 0.250 ± 0.000 |" in (tmp_path / "smc_study.md").read_text()


@pytest.mark.parametrize("label", ["box_inpaint PSLD", "sr4 SMC tempered", "box_inpaint SMC tempered + moves", "tune"])
def test_every_coverage_run_is_a_valid_predict_config(label, capsys):
    """benchmarks/coverage.py's runs (and its SMC tuning grid) parse into the settings they name."""
    import yaml

    from benchmarks import coverage
    from dwgf.cli import main

    cases = ([coverage._args(label)] if label != "tune" else
             [[a for c in coverage._smc("box_inpaint", {**coverage.SMC_TEMPERED, **v})[0] for a in ("--config", str(c))]
              + coverage._smc("box_inpaint", {**coverage.SMC_TEMPERED, **v})[1] for v in coverage.TUNE_GRID.values()])
    for args in cases:
        with pytest.raises(SystemExit) as stop:
            main(["predict", *args, "--print_config"])
        assert stop.value.code in (0, None)
        init = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
        if "SMC" in label or label == "tune":
            assert init["method"] == "dwgf.methods.smc.smc" and init["settings"]["num_steps"] == 200
        else:
            assert init["num_particles"] == 8
