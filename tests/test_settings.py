"""Every setting of every method has one home, its settings dataclass (:mod:`dwgf.settings`), and a bad value of any of
them is one line on stderr, exit 2, with nothing written, through the command line.

The cases are made from the settings classes themselves (every method of :mod:`dwgf.methods` that names one): a value
of the wrong type for every setting, and, for every setting with a range, a value out of it (found by trying a few
candidates on the dataclass). A new setting is covered without a new test.
"""

from __future__ import annotations

import typing
from dataclasses import MISSING, fields

import pytest
import yaml

from dwgf import methods
from dwgf.cli import main
from dwgf.errors import DWGFError
from dwgf.settings import Settings

from tests.runs import ROOT

def _methods() -> dict:
    """Every method function of ``dwgf/methods/`` that names a settings class: those exported by ``dwgf.methods`` and
    those found in its modules (:func:`tests.test_methods.method_functions`), so a new module is covered as it comes."""
    from tests.test_methods import method_functions

    found = {name: fn for name in methods.__all__ if callable(fn := getattr(methods, name)) and hasattr(fn, "settings_class")}
    found.update({name: fn for name, fn in method_functions().items() if hasattr(fn, "settings_class")})
    return found


METHODS = _methods()


def _wrong_type(hint) -> object:
    """A value of the wrong type for annotation ``hint`` (a string for anything but a string)."""
    return "abc"


def _out_of_range(cls: type[Settings], name: str) -> object:
    """A value of the right type that the settings class refuses, or ``None`` if it takes every one tried."""
    hint = typing.get_type_hints(cls)[name]
    base = typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Union else hint
    if base not in (int, float):
        return None
    for candidate in (-1, 0, 2, 10**9):
        try:
            cls(**{name: base(candidate)})
        except DWGFError:
            return base(candidate)
    return None


CASES = [(method, f.name, _wrong_type(f.type)) for method, fn in METHODS.items() for f in fields(fn.settings_class)]
CASES += [(method, f.name, bad) for method, fn in METHODS.items() for f in fields(fn.settings_class)
          if (bad := _out_of_range(fn.settings_class, f.name)) is not None]


def test_every_method_with_settings_is_covered():
    assert set(METHODS) == {"dwgf", "latent_dps", "psld", "red_diff", "decoder_inversion", "smc", "resample", "latent_daps", "flow_dps"}
    assert len([c for c in CASES if c[2] != "abc"]) >= 12  # the ranges: num_steps, guidance, eta, ess_threshold, ...


def _config(tmp_path, ldm_path, method: str) -> str:
    config = {"model": {"class_path": "dwgf.solver.InverseSolver", "init_args": {
        "prior": {"class_path": "UnconditionalLatentPrior", "init_args": {"pretrained": str(ldm_path)}},
        "method": f"{METHODS[method].__module__}.{method}", "num_particles": 2, "settings": {"num_steps": 2}}},
        "data": {"class_path": "MeasurementDataModule", "init_args": {"operator": {"class_path": "BoxInpainting"}}}}
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


@pytest.mark.parametrize("method,name,value", CASES, ids=[f"{m}-{n}-{v}" for m, n, v in CASES])
def test_a_bad_setting_is_one_line_exit_2_and_nothing_written(method, name, value, ldm_path, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", _config(tmp_path, ldm_path, method), "--data.images", str(image_dir), "--output", str(out),
              f"--model.settings.{name}", str(value).lower() if isinstance(value, bool) else str(value)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"dwgf: error: --model.settings.{name} "), err
    assert not out.exists()


@pytest.mark.parametrize("args,message", [
    (["--model.num_steps", "0"], "--model.num_steps must be >= 1, got 0"),
    (["--model.decoder_noise", "-0.5"], "--model.decoder_noise must be >= 0, got -0.5"),
    (["--model.query_noise", "2"], r"--model.query_noise must be in [0, 1], got 2.0"),
    (["--model.decoder_chunk", "0"], "--model.decoder_chunk must be >= 1, got 0"),
])
def test_a_solver_class_names_its_own_option(args, message, ldm_path, image_dir, tmp_path, capsys):
    """DWGF's options are FlowConfig's settings: the check is the dataclass's, the message names DWGF's option."""
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(ROOT / "tests/conf/ldm_sr.yaml"), "--model.prior.pretrained", str(ldm_path),
              "--data.images", str(image_dir), "--output", str(out), *args])
    assert exc.value.code == 2
    assert capsys.readouterr().err == f"dwgf: error: {message}\n"
    assert not out.exists()


def _printed_settings(capsys, *args) -> dict:
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--config", str(ROOT / "configs/mnist/box_inpaint_smc.yaml"), *args, "--print_config"])
    assert exc.value.code == 0
    return yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["settings"]


def test_one_setting_on_the_command_line_keeps_the_configs_others_and_a_whole_dict_replaces_them(capsys):
    assert _printed_settings(capsys, "--model.settings.moves", "2") == {"num_steps": 200, "guidance": 1.0, "ess_threshold": 0.5, "moves": 2}
    assert _printed_settings(capsys, "--model.settings", "{moves: 2}") == {"moves": 2}


def test_the_solver_classes_take_their_defaults_from_the_settings_classes():
    """No default is written twice: each option of a built-in solver that is a setting defaults to the dataclass's."""
    import inspect

    from dwgf.baselines import PSLD, DecoderInversion, LatentDPS
    from dwgf.solver import DWGF

    for solver, config in ((DWGF, methods.dwgf.settings_class), (LatentDPS, methods.DPSConfig), (PSLD, methods.PSLDConfig),
                           (DecoderInversion, methods.InversionConfig)):
        options = inspect.signature(solver).parameters
        for f in fields(config):
            if f.name in options and f.default is not MISSING:
                assert options[f.name].default == f.default, (solver.__name__, f.name)


def test_a_users_method_may_name_a_plain_dataclass(ldm_prior):
    """A method of a user's whose settings are a plain dataclass: unknown settings and its own DWGFError are one line
    about ``settings``; good settings pass through as given."""
    from dataclasses import dataclass

    from dwgf.solver import InverseSolver

    @dataclass
    class Mine:
        steps: int = 3

        def __post_init__(self):
            if self.steps < 1:
                raise DWGFError(f"Mine: steps must be >= 1, got {self.steps}")

    def my_method(prior, problem, draw=None, *, callback=None, **settings):
        raise AssertionError("not run here")

    my_method.settings_class = Mine
    with pytest.raises(DWGFError, match=r"^InverseSolver: settings: unknown setting 'stepz' of my_method \(its settings: steps\)$"):
        InverseSolver(ldm_prior, method=my_method, settings={"stepz": 2})
    with pytest.raises(DWGFError, match=r"^InverseSolver: settings: steps must be >= 1, got 0$"):
        InverseSolver(ldm_prior, method=my_method, settings={"steps": 0})
    assert InverseSolver(ldm_prior, method=my_method, settings={"steps": 5}).settings() == {"steps": 5}
