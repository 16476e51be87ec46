"""Coverage where it matters: every calibration mode on the pixels the measurement is silent about, per digit.

    python benchmarks/coverage.py run [--only "box_inpaint DWGF" ...]    # calibrate + predict, cached outputs
    python benchmarks/coverage.py table                                   # benchmarks/results/coverage_mnist.md
    python benchmarks/coverage.py pictures                                # docs/results/reliability_<task>_<method>.png
    python benchmarks/coverage.py tune [--tasks box_inpaint sr4]           # SMC's tempering threshold on tune10

For each task and method (:data:`RUNS`, N = 8 particles): ``dwgf calibrate --region unobserved --level 0.9`` on the
run's calibration digits (:data:`SPLITS`: ``tune50`` or ``tune20``; it also writes ``reliability.png``), then ``dwgf
predict --model.calibration`` with that file on its report digits (``report50``: 5 per class, or ``report20``: 2 per
class; none of them seen in any tuning). Every other mode (:data:`MODES`) is then
calibrated on the same tune digits' outputs with :func:`dwgf.calibration.calibrate` (what ``dwgf calibrate`` runs) and
evaluated on the report digits' particle PNGs with :func:`dwgf.calibration.pixel_scales`, the scales ``dwgf predict``
applies: the figures are those ``--model.calibration`` would write for each mode, with no rerun of the method. The
table checks that for the mode the predict run used: its ``metrics.csv`` and this script's evaluation must agree.

Per mode, over the report digits: the calibrated coverage of the *unobserved* pixels (mean, 10th percentile, minimum),
the share of digits with at least 0.9 of them covered, their mean interval width, the coverage of the *strokes inside
the unobserved region* (truth > 0.1), and the pooled coverage of every pixel. The row *particles* is the particles'
own central 90% interval (no calibration), computed like every row from the 8-bit PNGs (particles and truth): where
the particles and the truth round to the same level (the background) it counts as covered, which metrics.csv's
``coverage90_unobserved`` (on the unrounded particles and truth) does not; the check line gives that column.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import sys

if __package__ in (None, ""):  # run as ``python benchmarks/coverage.py``: the repository becomes importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pathlib import Path

import numpy as np
import torch

from benchmarks.harness import OUTPUTS, RESULTS, ROOT, digits_folder, load_json, prior_id, save_json

LEVEL = 0.9
STROKE = 0.1  # a stroke pixel: truth above this (in [0, 1])
RESULTS_JSON = RESULTS / "coverage_runs.json"
TABLE = RESULTS / "coverage_mnist.md"
SMC_TEMPERED = {"num_steps": 200, "guidance": 1.0, "ess_threshold": 0.5, "tempering": 0.5}


def _smc(task: str, settings: dict | None = None) -> tuple[list[Path], list[str]]:
    return [ROOT / "configs/mnist" / f"{task}_smc.yaml"], ([] if settings is None else ["--model.settings", json.dumps(settings)])


# label -> (task, method, configs and overrides)
RUNS = {
    "box_inpaint DWGF": ("box_inpaint", "DWGF", lambda: ([ROOT / "configs/mnist/box_inpaint.yaml"], [])),
    "sr4 DWGF": ("sr4", "DWGF", lambda: ([ROOT / "configs/mnist/sr4.yaml"], [])),
    "gaussian_deblur DWGF": ("gaussian_deblur", "DWGF", lambda: ([ROOT / "configs/mnist/gaussian_deblur.yaml"], [])),
    "box_inpaint SMC": ("box_inpaint", "SMC", lambda: _smc("box_inpaint")),
    "sr4 SMC": ("sr4", "SMC", lambda: _smc("sr4")),
    "box_inpaint PSLD": ("box_inpaint", "PSLD", lambda: ([ROOT / "configs/mnist/box_inpaint.yaml", ROOT / "configs/methods/box_inpaint/psld.yaml"],
                                                         ["--model.num_particles", "8"])),
    "sr4 PSLD": ("sr4", "PSLD", lambda: ([ROOT / "configs/mnist/sr4.yaml", ROOT / "configs/methods/sr4/psld.yaml"], ["--model.num_particles", "8"])),
    "box_inpaint SMC tempered": ("box_inpaint", "SMC tempered", lambda: _smc("box_inpaint", SMC_TEMPERED)),
    "sr4 SMC tempered": ("sr4", "SMC tempered", lambda: _smc("sr4", SMC_TEMPERED)),
    "box_inpaint SMC tempered + moves": ("box_inpaint", "SMC tempered + moves",
                                         lambda: _smc("box_inpaint", {**SMC_TEMPERED, "moves": 2, "move_size": 0.05})),
    "box_inpaint SMC tempered + tweedie drift": ("box_inpaint", "SMC tempered + tweedie drift",
                                                 lambda: _smc("box_inpaint", {**SMC_TEMPERED, "drift": "tweedie"})),
}

# mode label -> dwgf calibrate's options (the predict run uses the first)
MODES = {
    "--region unobserved": {"mode": "pooled", "region": "unobserved"},
    "pooled (every pixel)": {"mode": "pooled", "region": "all"},
    "--region unobserved --per-image 0.1": {"mode": "per-image", "region": "unobserved", "delta": 0.1},
    "--region unobserved --strata mean": {"mode": "strata", "region": "unobserved", "strata": "mean"},
    "--region unobserved --strata std": {"mode": "strata", "region": "unobserved", "strata": "std"},
    "--region unobserved --strata mean --bins 8": {"mode": "strata", "region": "unobserved", "strata": "mean", "bins": 8},
}


# the digits of each run: (calibration, report); DWGF on box inpainting on 50 + 50, Gaussian deblurring on 10 + 10, the
# others on 20 + 20 (2 per class): the CPU time of the session that measured them allowed no more
SPLITS = {"box_inpaint DWGF": ("tune50", "report50"), "gaussian_deblur DWGF": ("tune10", "report10")}
DEFAULT_SPLITS = ("tune20", "report20")


def splits(label: str) -> tuple[str, str]:
    return SPLITS.get(label, DEFAULT_SPLITS)


def _folder(label: str, split: str) -> Path:
    """The run's output folder for its calibration (``"tune"``) or report (``"report"``) digits."""
    name = splits(label)[0 if split == "tune" else 1]
    return OUTPUTS / "coverage" / f"{label.replace(' ', '_').replace('+', 'and')}__{name}"


def _args(label: str) -> list[str]:
    configs, overrides = RUNS[label][2]()
    return [*(a for c in configs for a in ("--config", str(c))), *overrides, "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false"]


UNCALIBRATED = ("SMC tempered",)  # variants measured before calibration only (their particles' own intervals): no tune run


def run(label: str) -> None:
    """dwgf calibrate on the run's calibration digits (``--region unobserved``), then dwgf predict with its file on its
    report digits (for the :data:`UNCALIBRATED` variants, dwgf predict on the report digits alone)."""
    import time

    from dwgf.cli import main as dwgf_main

    cal, rep = _folder(label, "tune"), _folder(label, "report")
    start = time.perf_counter()
    calibrated = not RUNS[label][1].startswith(UNCALIBRATED)
    if calibrated:
        dwgf_main(["calibrate", *_args(label), "--data.images", str(digits_folder(splits(label)[0])), "--output", str(cal), "--overwrite", "true",
                   "--level", str(LEVEL), "--region", "unobserved"])
    middle = time.perf_counter()
    dwgf_main(["predict", *_args(label), "--data.images", str(digits_folder(splits(label)[1])), "--output", str(rep), "--overwrite", "true",
               *(["--model.calibration", str(cal / "calibration.json")] if calibrated else [])])
    done = time.perf_counter()
    results = load_json(RESULTS_JSON)
    results[label] = {"date": str(datetime.date.today()), "prior": prior_id(), "threads": torch.get_num_threads(),
                      "seconds_calibrate": middle - start, "seconds_report": done - middle, "figures": evaluate(label)}
    save_json(RESULTS_JSON, results)
    print(f"RUN {label}: {json.dumps(results[label]['figures'].get('--region unobserved', results[label]['figures']['check']))}", flush=True)


def _p10(values: list[float]) -> float:
    return float(np.percentile(values, 10))


def evaluate(label: str) -> dict:
    """Every mode's figures on the report digits (module docstring), and the particles' own, from the cached outputs."""
    from dwgf.calibration import RELIABILITY_LEVELS, _bounds, calibrate, pixel_scales, read_images

    report = read_images(_folder(label, "report"))
    tune = read_images(_folder(label, "tune")) if (_folder(label, "tune") / "metrics.csv").is_file() else None
    rows = list(csv.DictReader(open(_folder(label, "report") / "metrics.csv")))
    figures: dict[str, dict] = {}
    index = list(RELIABILITY_LEVELS).index(0.9)
    own = [float(img.own[index, 1]) for img in report]
    figures["particles (own 90% interval, 8-bit PNGs)"] = {"coverage": float(np.mean(own)), "p10": _p10(own), "min": float(np.min(own)),
                                              "share_09": float(np.mean([c >= 0.9 for c in own])),
                                              "width": float(np.mean([float(img.own[index, 3]) for img in report])),
                                              "strokes": _own_strokes(label), "pooled": float(np.mean([float(img.own[index, 0]) for img in report]))}
    for mode, options in MODES.items() if tune is not None else ():
        fields = calibrate(tune, LEVEL, options["mode"], options["region"], options.get("delta"), options.get("strata"), options.get("bins", 4))
        cover, widths, strokes_in, strokes_n, pooled = [], [], 0.0, 0.0, []
        for img in report:
            q = pixel_scales(fields, img.mean, img.std, img.unobserved)
            inside = img.score <= q
            lo, hi = _bounds(img.mean, img.std, q)
            region = img.unobserved
            cover.append(float(inside[region].double().mean()))
            widths.append(float((hi - lo).clamp_min(0)[region].mean()))
            stroke = region & (img.truth > STROKE)
            strokes_in += float(inside[stroke].double().sum())
            strokes_n += float(stroke.sum())
            pooled.append(float(inside.double().mean()))
        figures[mode] = {"coverage": float(np.mean(cover)), "p10": _p10(cover), "min": float(np.min(cover)),
                         "share_09": float(np.mean([c >= 0.9 - 1e-12 for c in cover])), "width": float(np.mean(widths)),
                         "strokes": strokes_in / strokes_n if strokes_n else float("nan"), "pooled": float(np.mean(pooled)),
                         "scales": fields["scales"]}
    csv_cov = [float(r["calibrated_coverage_unobserved"]) for r in rows if r["calibrated_coverage_unobserved"]]
    figures["check"] = {"metrics_csv_unobserved_coverage": float(np.mean(csv_cov)) if csv_cov else None,
                        "psnr_mean": float(np.mean([float(r["psnr_mean"]) for r in rows])),
                        "coverage90_unobserved": float(np.mean([float(r["coverage90_unobserved"]) for r in rows])),
                        "spread": float(np.mean([float(r["spread"]) for r in rows])),
                        "ancestors": float(np.mean([float(r["ancestors"]) for r in rows])) if rows[0]["ancestors"] else None,
                        "min_ess": float(np.mean([float(r["min_ess"]) for r in rows])) if rows[0]["min_ess"] else None,
                        "collapsed": int(sum(float(r["ancestors"]) <= 2 for r in rows)) if rows[0]["ancestors"] else None,
                        "digits": len(rows)}
    return figures


def _own_strokes(label: str) -> float:
    """The particles' own 90% interval's coverage of the strokes in the unobserved region (pooled over digits)."""
    from dwgf.calibration import _read_unit

    inside, total = 0.0, 0.0
    folder = _folder(label, "report")
    for row in csv.DictReader(open(folder / "metrics.csv")):
        item = folder / row["name"]
        p = torch.stack([_read_unit(f) for f in sorted(item.glob("particle_*.png"))])
        truth = _read_unit(item / "ground_truth.png")
        region = _read_unit(item / "unobserved.png") > 0.5 if (item / "unobserved.png").is_file() else torch.ones_like(truth, dtype=torch.bool)
        lo, hi = torch.quantile(p, torch.tensor([0.05, 0.95], dtype=torch.float64), dim=0)
        stroke = region & (truth > STROKE)
        inside += float(((truth >= lo) & (truth <= hi))[stroke].double().sum())
        total += float(stroke.sum())
    return inside / total if total else float("nan")


# SMC variants tried on tune10 (``tune``): adaptive tempering's threshold, and DWGF's data force as the drift
TUNE_GRID = {"tempering=0": {"tempering": 0.0}, "tempering=0.3": {"tempering": 0.3}, "tempering=0.5": {"tempering": 0.5},
             "tempering=0.8": {"tempering": 0.8}, "tempering=0.5,drift=tweedie": {"tempering": 0.5, "drift": "tweedie"},
             "drift=tweedie": {"tempering": 0.0, "drift": "tweedie"}}
TUNE_JSON = RESULTS / "coverage_tempering_tune.json"


def tune(tasks: list[str]) -> None:
    """SMC (its task config) with each variant of :data:`TUNE_GRID` on the ``tune10`` digits: the particle-mean PSNR,
    CRPS, coverage90 of the unobserved pixels, spread and distinct ancestors (``coverage_tempering_tune.json``)."""
    from benchmarks.harness import run as predict

    found = load_json(TUNE_JSON)
    for task in tasks:
        for name, variant in TUNE_GRID.items():
            label = f"{task} {name}"
            if label in found:
                continue
            configs, overrides = _smc(task, {**SMC_TEMPERED, **variant})
            out = OUTPUTS / "coverage" / f"tune10__{task}__{name.replace('=', '_').replace(',', '__')}"
            result = predict(configs, "tune10", out, [*overrides, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"])
            rows = list(csv.DictReader(open(out / "metrics.csv")))
            found[label] = {"psnr_mean": result["psnr_mean"], "spread": result["spread"], "crps": result["crps"],
                            "coverage90_unobserved": float(np.mean([float(r["coverage90_unobserved"]) for r in rows])),
                            "ancestors": float(np.mean([float(r["ancestors"]) for r in rows])),
                            "seconds": result["seconds"], "date": str(datetime.date.today()), "threads": torch.get_num_threads()}
            save_json(TUNE_JSON, found)
            print(f"TUNE {label}: {found[label]}", flush=True)


def table() -> None:
    results = load_json(RESULTS_JSON)
    lines = ["# Coverage where the measurement is silent (MNIST, N = 8, level 0.9)", "",
             "Produced by `python benchmarks/coverage.py run` and `python benchmarks/coverage.py table` "
             "(`benchmarks/coverage.py`'s docstring says how). Each section says its digits: calibrated on `tune50` (5 per class) "
             "or `tune20` (2 per class), measured on `report50` or `report20` (no tuning has seen them). *unobserved*: "
             "the pixels the measurement is silent "
             "about (box inpainting: the 12x12 box; SR x4 and deblurring: every pixel); coverage of them per digit: mean, "
             "10th percentile, minimum; *>= 0.9*: the share of digits with at least 0.9 of them covered; *width*: the "
             "intervals' mean width on them ([0, 1] units); *strokes*: coverage of the pixels with truth > 0.1 inside the "
             "unobserved region (pooled over digits); *pooled*: coverage of every pixel (mean over digits).", "",
             "The acceptance figures of each run (the sections below give every mode): *region*: `--region unobserved`'s "
             "coverage of the unobserved pixels and its width there, beside the pooled mode's width on them; *per image*: "
             "the share of digits with at least 0.9 of their unobserved pixels covered under `--per-image 0.1`; *strata*: "
             "`--strata mean`'s coverage of the strokes in the unobserved region, and its mean width there over "
             "`--region unobserved`'s; *particles: cov90*: metrics.csv's coverage90_unobserved (mean over digits; the "
             "particles as computed, before 8-bit rounding).", "",
             "<!-- --8<-- [start:summary] -->",
             "| run | region: coverage | region: width | pooled mode: width | per image: >= 0.9 | strata: strokes | strata: width ratio "
             "| particles: cov90 | PSNR |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, entry in results.items():
        f = entry["figures"]
        if "--region unobserved" not in f:
            lines.append(f"| {label} (not calibrated) | | | | | | | {f['check']['coverage90_unobserved']:.3f} | {f['check']['psnr_mean']:.2f} |")
            continue
        region, pooled, per, strata = (f[k] for k in ("--region unobserved", "pooled (every pixel)", "--region unobserved --per-image 0.1",
                                                     "--region unobserved --strata mean"))
        lines.append(f"| {label} | {region['coverage']:.3f} | {region['width']:.3f} | {pooled['width']:.3f} | {per['share_09']:.0%} | "
                     f"{strata['strokes']:.3f} | {strata['width'] / region['width']:.2f} | "
                     f"{f['check']['coverage90_unobserved']:.3f} | {f['check']['psnr_mean']:.2f} |")
    lines += ["<!-- --8<-- [end:summary] -->", ""]
    for label, entry in results.items():
        f = entry["figures"]
        check = f["check"]
        extra = ""
        if check.get("ancestors") is not None:
            extra = (f"; distinct ancestors {check['ancestors']:.2f} of 8 (mean), smallest ESS {check['min_ess']:.2f} (mean), "
                     f"{check['collapsed']} of {check['digits']} digits on at most 2 ancestors")
        lines += [f"## {label}", "",
                  f"Calibrated on `{splits(label)[0]}`, measured on `{splits(label)[1]}`. "
                  f"{entry['date']}, {entry['threads']} threads; particle-mean PSNR {check['psnr_mean']:.2f} dB, spread "
                  f"{check['spread']:.4f}{extra}. " + (
                      f"metrics.csv's calibrated_coverage_unobserved (the `--region unobserved` file the predict run used): "
                      f"{check['metrics_csv_unobserved_coverage']:.4f}, this script's evaluation of it: "
                      f"{f['--region unobserved']['coverage']:.4f}. Calibrate {entry['seconds_calibrate']:.0f} s, report "
                      f"{entry['seconds_report']:.0f} s." if "--region unobserved" in f else
                      f"Not calibrated (its particles' own intervals only); report {entry['seconds_report']:.0f} s."), "",
                  "| mode | unobserved coverage | p10 | min | >= 0.9 | width | strokes | pooled |", "|---|---|---|---|---|---|---|---|"]
        for mode, m in f.items():
            if mode == "check":
                continue
            lines.append(f"| {mode} | {m['coverage']:.3f} | {m['p10']:.3f} | {m['min']:.3f} | {m['share_09']:.0%} | {m['width']:.3f} | "
                         f"{m['strokes']:.3f} | {m['pooled']:.3f} |")
        lines.append("")
    TABLE.write_text("\n".join(lines))
    print(TABLE.read_text())


def pictures() -> None:
    import shutil

    for label in RUNS:
        src = _folder(label, "tune") / "reliability.png"
        if src.is_file():
            task, method = RUNS[label][0], RUNS[label][1]
            dst = ROOT / "docs/results" / f"reliability_{task}_{method.replace(' ', '_').replace('+', 'and')}.png"
            shutil.copy(src, dst)
            print(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["run", "table", "pictures", "evaluate", "tune"])
    parser.add_argument("--only", nargs="+", default=list(RUNS), choices=list(RUNS))
    parser.add_argument("--tasks", nargs="+", default=["box_inpaint", "sr4"])
    args = parser.parse_args()
    if args.command == "tune":
        return tune(args.tasks)
    if args.command == "run":
        for label in args.only:
            run(label)
    elif args.command == "evaluate":  # the figures again from the cached outputs (after a change to the modes)
        results = load_json(RESULTS_JSON)
        for label in args.only:
            if label in results:
                results[label]["figures"] = evaluate(label)
        save_json(RESULTS_JSON, results)
    elif args.command == "table":
        table()
    else:
        pictures()


if __name__ == "__main__":
    main()
