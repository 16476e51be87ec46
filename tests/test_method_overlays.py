"""The per-task method overlays (configs/methods/<task>/<method>.yaml) carry the tuned winners."""

import json
from pathlib import Path

import pytest
import yaml

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]
TUNED = json.loads((ROOT / "benchmarks/results/quality_tuned.json").read_text())
NAMES = {"DWGF": "dwgf", "RED-diff-latent": "reddiff", "Latent DPS": "dps", "PSLD": "psld", "decoder inversion": "inversion",
         "ReSample": "resample", "Latent DAPS": "latent_daps", "FlowDPS": "flow_dps"}
# the generic solver's methods: their tuned setting and their steps (200 network calls per particle) are settings
GENERIC = {"ReSample": ("guidance", "guidance", 150), "Latent DAPS": ("lr", "lr", 100), "FlowDPS": ("step", "step_size", 200)}
CASES = [(method, task) for method, tasks in TUNED.items() for task in tasks]


def setting(method: str, init: dict) -> dict[str, float]:
    """The tuned hyperparameters of an overlay's ``init_args``, under the labels quality.py's grids use."""
    if method in ("DWGF", "RED-diff-latent"):
        (kl,) = init["regularizers"]  # the benchmark runs the KL term alone
        assert kl["class_path"] == "KLPrior" and kl["init_args"]["weighting"] == "DWGFWeighting"
        return {"w": kl["init_args"]["weight"]}
    if method in GENERIC:
        label, name, _ = GENERIC[method]
        return {label: init["settings"][name]}
    if method == "Latent DPS":
        return {"zeta": init["guidance"]}
    if method == "PSLD":
        return {"zeta": init["guidance"], "gamma": init["gluing"]}
    return {"lr": init["step_size"]["init_args"]["lr"]}


@pytest.mark.parametrize("method,task", CASES, ids=[f"{t}-{NAMES[m]}" for m, t in CASES])
def test_each_overlay_holds_the_tuned_winner(method, task):
    overlay = yaml.safe_load((ROOT / "configs/methods" / task / f"{NAMES[method]}.yaml").read_text())
    winner = {k: float(v) for k, v in (part.split("=") for part in TUNED[method][task]["winner"].split(","))}
    init = overlay["model"]["init_args"]
    assert setting(method, init) == winner
    if method in GENERIC:  # the comparison's budget, 200 network calls per particle
        assert init["settings"]["num_steps"] == GENERIC[method][2] and init["method"].startswith("dwgf.methods.")
        assert "init_args" not in init["settings"]  # a plain mapping of the method's settings, not a class
    else:
        assert init["num_steps"] == 200  # the comparison's budget
    assert init["num_particles"] == (1 if method == "RED-diff-latent" else 4)


def test_layered_config_resolves_to_the_tuned_guidance(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"),
              "--config", str(ROOT / "configs/methods/box_inpaint/dps.yaml"), "--print_config"])
    assert exc.value.code == 0
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert model["class_path"] == "dwgf.baselines.LatentDPS"
    assert model["init_args"]["guidance"] == float(TUNED["Latent DPS"]["box_inpaint"]["winner"].split("=")[1])
    assert model["init_args"]["prior"]["init_args"]["pretrained"] == "dwgf:mnist-ldm"  # the task's prior stays


def test_a_generic_solvers_overlay_resolves_to_its_tuned_settings(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint.yaml"),
              "--config", str(ROOT / "configs/methods/box_inpaint/resample.yaml"), "--print_config"])
    assert exc.value.code == 0
    init = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]
    assert init["method"] == "dwgf.methods.resample.resample"
    assert init["settings"]["guidance"] == float(TUNED["ReSample"]["box_inpaint"]["winner"].split("=")[1])
    assert init["settings"]["num_steps"] == 150 and init["settings"]["latent_iters"] == 50
    assert init["prior"]["init_args"]["pretrained"] == "dwgf:mnist-ldm"


@pytest.mark.parametrize("variant", sorted(p.name for p in (Path(__file__).resolve().parents[1] / "configs/mnist").glob("*_*.yaml")
                                            if p.stem.rsplit("_", 1)[-1] in ("smc", "posterior")))
def test_a_method_variant_of_a_task_measures_the_same_thing_as_the_task(variant):
    """``configs/mnist/<task>_smc.yaml`` and ``<task>_posterior.yaml`` change the method, never the measurement: their
    ``data`` section (operator, noise, batch) is the task config's, so their results compare with the task's."""
    folder = Path(__file__).resolve().parents[1] / "configs/mnist"
    task = variant.rsplit("_", 1)[0]
    own, base = (yaml.safe_load((folder / name).read_text()) for name in (variant, f"{task}.yaml"))
    assert own["data"] == base["data"], f"{variant}: its data section differs from {task}.yaml's"


def test_an_overlays_numbers_read_back_as_numbers_in_any_yaml_reader():
    """PyYAML (YAML 1.1) reads a plain ``3e-05`` as a string; the overlay writer must write numbers it reads as numbers."""
    from benchmarks.quality import _scalar

    for text, value in [("3e-05", 3e-05), ("0.0003", 3e-4), ("4", 4), ("10.0", 10.0)]:
        written = yaml.safe_dump({"lr": _scalar(text)})
        assert yaml.safe_load(written)["lr"] == value and type(yaml.safe_load(written)["lr"]) is type(value), written
    assert _scalar("true") is True and _scalar("hmc") == "hmc" and _scalar("[1, 2]") == [1, 2]
